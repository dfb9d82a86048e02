"""Evaluation measures of the paper's experiments: ISBI 2012 (pixel, Rand, warping error) and the Cell Tracking
Challenge (SEG), plus foreground IoU and Dice. Pure NumPy/SciPy/Numba functions; NumPy arrays in, floats out.

Probability maps are *membrane* probabilities (the network's class 1). Following the challenge scripts, which
binarise the *cell* probability map, a pixel is predicted cell at threshold ``t`` where
``1 - membrane_prob > t`` (computed in float64).

One module per family: :mod:`.pixel`, :mod:`.rand` (adapted Rand error, V_rand, V_info), :mod:`.warping`,
:mod:`.objects` (IoU, Dice, SEG, object matching); :mod:`.checks` holds their input checks.
"""

from __future__ import annotations

from biounet.evaluation.metrics.objects import (
    OBJECT_IOU_THRESHOLDS,
    ObjectErrors,
    ObjectScores,
    SegScores,
    dataset_object_scores,
    dice,
    iou,
    object_errors,
    object_scores,
    pool_object_scores,
    seg_score,
)
from biounet.evaluation.metrics.pixel import PIXEL_THRESHOLDS, PixelScores, pixel_error
from biounet.evaluation.metrics.rand import (
    InfoScores,
    RandScores,
    RandThresholdScores,
    info_score,
    info_scores,
    rand_error,
    rand_scores,
)
from biounet.evaluation.metrics.warping import WARPING_THRESHOLDS, WarpingScores, warping_error

__all__ = [
    "OBJECT_IOU_THRESHOLDS",
    "PIXEL_THRESHOLDS",
    "WARPING_THRESHOLDS",
    "InfoScores",
    "ObjectErrors",
    "ObjectScores",
    "PixelScores",
    "RandScores",
    "RandThresholdScores",
    "SegScores",
    "WarpingScores",
    "dataset_object_scores",
    "dice",
    "info_score",
    "info_scores",
    "iou",
    "object_errors",
    "object_scores",
    "pixel_error",
    "pool_object_scores",
    "rand_error",
    "rand_scores",
    "seg_score",
    "warping_error",
]
