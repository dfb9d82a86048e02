"""Validation measures for cells and the post-processing the training run chooses with them."""

from __future__ import annotations

import numpy as np

from biounet.core.samples import IGNORE, Sample
from biounet.evaluation.validation import cell_scores, choose_instance_params
from biounet.inference.instances import InstanceParams


def _sample_with_fragments() -> tuple[np.ndarray, Sample]:
    """Two annotated 12x12 cells; the "network" finds them exactly plus three 2-px specks of foreground."""
    instances = np.zeros((48, 48), np.int32)
    instances[5:17, 5:17], instances[25:37, 25:37] = 1, 2
    classes = (instances > 0).astype(np.int64)
    foreground = classes.astype(bool).copy()
    for y, x in ((2, 40), (40, 3), (20, 44)):
        foreground[y, x:x + 2] = True
    probs = np.stack([~foreground, foreground]).astype(np.float32)
    return probs, Sample("cells", np.zeros((48, 48, 1), np.float32), classes, instances)


def test_seg_ignores_fragments_the_object_f1_counts_them():
    probs, sample = _sample_with_fragments()
    scores = cell_scores([probs], [sample], target="paper", params=InstanceParams(min_size_px=0))
    assert scores["seg"] == 1.0 and scores["object_f1"] == 2 * 2 / (2 * 2 + 3)
    cleaned = cell_scores([probs], [sample], target="paper", params=InstanceParams(min_size_px=16))
    assert cleaned["seg"] == 1.0 and cleaned["object_f1"] == 1.0


def test_post_processing_choice_removes_fragments_that_seg_alone_would_keep():
    probs, sample = _sample_with_fragments()
    params, seg = choose_instance_params([probs], [sample], target="paper")
    assert params.min_size_px >= 16 and seg == 1.0


def test_cells_on_unannotated_pixels_are_neither_right_nor_wrong():
    probs, sample = _sample_with_fragments()
    classes = sample.classes.copy()
    classes[:, 38:] = IGNORE  # two of the specks lie there
    classes[38:, :10] = IGNORE  # and the third
    partial = Sample("cells", sample.image, classes, sample.instances)
    scores = cell_scores([probs], [partial], target="paper", params=InstanceParams(min_size_px=0))
    assert scores["object_f1"] == 1.0
