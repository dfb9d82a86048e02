"""Pixel error of the ISBI 2012 challenge: 1 - the maximal F-score of pixel classification over thresholds."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from biounet.evaluation.metrics.checks import check_mask, check_membrane_prob, check_same_shape, check_thresholds

PIXEL_THRESHOLDS = np.arange(11) / 10  # 0.0, 0.1, ..., 1.0 (the challenge's 11 levels, without arange drift)


class PixelScores(NamedTuple):
    """Result of :func:`pixel_error`."""

    error: float  # 1 - f_score
    f_score: float  # maximal F-score of the cell (non-membrane) class over the thresholds
    threshold: float  # first threshold reaching f_score


def pixel_error(
    membrane_prob: npt.NDArray[np.floating],
    true_cells: npt.NDArray[np.bool_],
    *,
    thresholds: npt.ArrayLike = PIXEL_THRESHOLDS,
    valid: npt.NDArray[np.bool_] | None = None,
) -> PixelScores:
    """ISBI 2012 pixel error: 1 - the maximal pixel F-score of the cell class over thresholds.

    Parameters
    ----------
    membrane_prob : (H, W) ndarray of float
        Membrane probability in [0, 1] (a probability, not a logit), e.g. the softmax of the network's class 1.
    true_cells : (H, W) ndarray of bool
        Ground truth, True on cell interior (ISBI label 255), False on membrane (label 0).
    thresholds : sequence of float, optional
        Levels ``t`` in [0, 1]; a pixel is predicted cell where ``1 - membrane_prob > t``.
        Default 0.0, 0.1, ..., 1.0.
    valid : (H, W) ndarray of bool, optional
        Annotated pixels; the others are left out (partial ground truth).

    Returns
    -------
    PixelScores
        ``(error, f_score, threshold)``; ``threshold`` is the first level reaching the maximal F-score.

    Raises
    ------
    ValueError
        If the shapes differ, an input is not 2-D, ``membrane_prob`` has NaN or values outside [0, 1], or the
        thresholds are empty or outside [0, 1].
    TypeError
        If ``true_cells`` is not bool or ``membrane_prob`` is not real-valued.

    Notes
    -----
    Cell pixels are the positive class. With TP, FP, FN counted on predicted versus true cell pixels,
    ``F = 2 TP / (2 TP + FP + FN)`` (= 2PR / (P + R)); F = 1 when there is no true and no predicted cell pixel.
    ``error = 1 - max_t F(t)``.

    References
    ----------
    .. [1] Arganda-Carreras et al. (2015). Crowdsourcing the creation of image segmentation algorithms for
           connectomics. Front. Neuroanat. 9:142. doi:10.3389/fnana.2015.00142
    .. [2] Ronneberger, Fischer, Brox (2015). U-Net. MICCAI. arXiv:1505.04597 (Table 1)

    Examples
    --------
    >>> prob = np.array([[0.9, 0.2], [0.2, 0.2]])
    >>> pixel_error(prob, np.array([[False, True], [True, True]]))
    PixelScores(error=0.0, f_score=1.0, threshold=0.1)
    """
    prob = check_membrane_prob(membrane_prob)
    cells = check_mask("true_cells", true_cells)
    check_same_shape("membrane_prob", prob, "true_cells", cells)
    levels = check_thresholds(thresholds)
    if valid is not None:
        keep = check_mask("valid", valid)
        check_same_shape("membrane_prob", prob, "valid", keep)
        prob, cells = prob[keep], cells[keep]
    cell_prob = 1.0 - prob
    n_true = int(np.count_nonzero(cells))
    best_f, best_t = -1.0, float(levels[0])
    for level in levels:
        pred = cell_prob > level
        tp = int(np.count_nonzero(pred & cells))
        denominator = n_true + int(np.count_nonzero(pred))  # 2 TP + FP + FN
        f_score = 1.0 if denominator == 0 else 2.0 * tp / denominator
        if f_score > best_f:
            best_f, best_t = f_score, float(level)
    return PixelScores(error=1.0 - best_f, f_score=best_f, threshold=best_t)


__all__ = ['PIXEL_THRESHOLDS', 'PixelScores', 'pixel_error']
