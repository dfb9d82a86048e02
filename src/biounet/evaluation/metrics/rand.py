"""Partition measures: the ISBI 2012 adapted Rand error (foreground-restricted Rand F-score, V_rand) and the
information-theoretic score V_info (Arganda-Carreras et al. 2015)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from biounet.evaluation.metrics.checks import (
    check_labels,
    check_mask,
    check_membrane_prob,
    check_same_shape,
    check_thresholds,
)
from biounet.evaluation.metrics.pixel import PIXEL_THRESHOLDS

_PAIR_TABLE_MAX = 1 << 22  # largest dense contingency table (cells) before switching to a sparse count


class RandScores(NamedTuple):
    """Foreground-restricted Rand scores (see :func:`rand_scores`)."""

    error: float  # 1 - F-score of split and merge (ISBI 2012 "Rand error")
    split: float  # sum n_ij^2 / sum (true sizes)^2, "recall": 1.0 means no false splits
    merge: float  # sum n_ij^2 / sum (pred sizes)^2, "precision": 1.0 means no false merges


class RandThresholdScores(NamedTuple):
    """Result of :func:`rand_error`: the scores at the threshold with the smallest error."""

    error: float
    split: float
    merge: float
    threshold: float


def _sum_squared_pair_counts(first: npt.NDArray[np.int64], second: npt.NDArray[np.int64], n_second: int) -> int:
    """``sum_ij n_ij^2`` of the contingency table of two compact id arrays (``second`` < ``n_second``)."""
    if first.size == 0:
        return 0
    keys = first.astype(np.int64) * n_second + second
    if (int(first.max()) + 1) * n_second <= _PAIR_TABLE_MAX:
        counts = np.bincount(keys)
    else:  # too many segment pairs for a dense table: count only the pairs that occur
        counts = np.unique(keys, return_counts=True)[1]
    counts = counts.astype(np.int64)
    return int(counts @ counts)


def _rand_from_ids(true_ids: npt.NDArray[np.int64], pred_ids: npt.NDArray[np.int64], n_pred: int) -> RandScores:
    """Rand scores of kept pixels: compact true ids, pred ids in [0, n_pred] with 0 = predicted membrane."""
    true_sizes = np.bincount(true_ids).astype(np.int64)
    membrane = pred_ids == 0
    n_singletons = int(np.count_nonzero(membrane))  # each predicted-membrane pixel is its own segment
    true_in_cells, pred_in_cells = true_ids[~membrane], pred_ids[~membrane]
    pred_sizes = np.bincount(pred_in_cells, minlength=n_pred + 1).astype(np.int64)
    joint = _sum_squared_pair_counts(true_in_cells, pred_in_cells, n_pred + 1) + n_singletons
    split = joint / float(true_sizes @ true_sizes)
    merge = joint / float(pred_sizes @ pred_sizes + n_singletons)
    return RandScores(error=1.0 - 2.0 * split * merge / (split + merge), split=split, merge=merge)


def _compact_ids(values: npt.NDArray[np.integer]) -> tuple[npt.NDArray[np.int64], int]:
    uniques, inverse = np.unique(values, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64), int(uniques.size)


def _counted_pixels(pred_labels: npt.ArrayLike, true_labels: npt.ArrayLike, ignore_true: Sequence[int],
                    measure: str) -> tuple[npt.NDArray[np.int64], int, npt.NDArray[np.integer]]:
    """The pixels a foreground-restricted measure counts: compact true ids, their number, and the predicted labels
    there; checked (integer labels of one shape, some pixel left after ``ignore_true``)."""
    pred = check_labels("pred_labels", pred_labels)
    true = check_labels("true_labels", true_labels)
    check_same_shape("pred_labels", pred, "true_labels", true)
    keep = ~np.isin(true, np.asarray(ignore_true))
    if not keep.any():
        raise ValueError(
            f"{measure} is undefined: no ground-truth pixel is left after ignoring labels {tuple(ignore_true)}")
    true_ids, n_true = _compact_ids(true[keep])
    return true_ids, n_true, pred[keep]


def rand_scores(
    pred_labels: npt.NDArray[np.integer],
    true_labels: npt.NDArray[np.integer],
    *,
    ignore_true: Sequence[int] = (0,),
) -> RandScores:
    """Foreground-restricted Rand scores in the squared-count form of Arganda-Carreras et al. (2015).

    Parameters
    ----------
    pred_labels : ndarray of int
        Predicted segments, any shape; label 0 is predicted membrane/boundary (see Notes), every other label
        is one segment.
    true_labels : ndarray of int, same shape
        Ground-truth segments; pixels whose label is in ``ignore_true`` are excluded.
    ignore_true : sequence of int, optional
        Ground-truth labels to exclude (default ``(0,)``: the membrane/background).

    Returns
    -------
    RandScores
        ``(error, split, merge)``; ``split`` divides by the TRUE segment sizes ("recall"), ``merge`` by the
        PREDICTED segment sizes ("precision").

    Raises
    ------
    ValueError
        If the shapes differ, or no ground-truth pixel is left after ``ignore_true`` (the Rand error is then
        undefined).
    TypeError
        If a label image is not of integer dtype (float and bool label images are rejected, never rounded).

    Notes
    -----
    Only pixels whose true label is not ignored count. With ``n_ij`` the number of those pixels in true segment
    ``i`` and predicted segment ``j``, ``a_i = sum_j n_ij`` and ``b_j = sum_i n_ij``::

        split = sum_ij n_ij^2 / sum_i a_i^2        merge = sum_ij n_ij^2 / sum_j b_j^2
        error = 1 - 2 split merge / (split + merge)

    A counted pixel with predicted label 0 is a singleton segment of its own (it adds 1 to ``sum n_ij^2`` and to
    ``sum b_j^2``), as in the challenge's definition (PAPER.md section 4). The SNEMI3D/CREMI Python scripts add
    ``count / N`` instead of ``count`` for these pixels, and ``skimage.metrics.adapted_rand_error`` counts pairs
    (``n^2 - n``), keeps predicted label 0 as one segment and calls ``split`` its "precision".

    References
    ----------
    .. [1] Arganda-Carreras et al. (2015). Crowdsourcing the creation of image segmentation algorithms for
           connectomics. Front. Neuroanat. 9:142. doi:10.3389/fnana.2015.00142

    Examples
    --------
    >>> true = np.array([[1, 1], [2, 2]])
    >>> rand_scores(np.array([[1, 3], [2, 2]]), true).split   # true cell 1 split in two: (1+1+4) / (4+4)
    0.75
    """
    true_ids, _, pred_kept = _counted_pixels(pred_labels, true_labels, ignore_true, "the Rand error")
    pred_ids = np.zeros(pred_kept.shape, dtype=np.int64)
    is_cell = pred_kept != 0
    cell_ids, n_pred = _compact_ids(pred_kept[is_cell])
    pred_ids[is_cell] = cell_ids + 1
    return _rand_from_ids(true_ids, pred_ids, n_pred)


def rand_error(
    membrane_prob: npt.NDArray[np.floating],
    true_cells_or_labels: npt.NDArray[np.bool_] | npt.NDArray[np.integer],
    *,
    thresholds: npt.ArrayLike = PIXEL_THRESHOLDS,
) -> RandThresholdScores:
    """ISBI 2012 Rand error: the smallest :func:`rand_scores` error over thresholds of a membrane map.

    Parameters
    ----------
    membrane_prob : (H, W) ndarray of float
        Membrane probability in [0, 1].
    true_cells_or_labels : (H, W) ndarray of bool or int
        Either a cell mask (True = cell interior; segments are its 4-connected components) or an instance label
        image (0 = membrane/background, excluded; other labels are segments, used as given).
    thresholds : sequence of float, optional
        Levels ``t`` in [0, 1]; predicted segments are the 4-connected components of ``1 - membrane_prob > t``.
        Default 0.0, 0.1, ..., 1.0.

    Returns
    -------
    RandThresholdScores
        ``(error, split, merge, threshold)`` at the first threshold reaching the minimal error.

    Raises
    ------
    ValueError
        If the shapes differ, an input is not 2-D, ``membrane_prob`` has NaN or values outside [0, 1], the
        thresholds are invalid, or the ground truth has no cell pixel (the Rand error is then undefined).
    TypeError
        If the ground truth is neither bool nor integer, or ``membrane_prob`` is not real-valued.

    Notes
    -----
    Predicted membrane pixels inside ground-truth cells are singletons; see :func:`rand_scores` for the formula.

    References
    ----------
    .. [1] Arganda-Carreras et al. (2015). Front. Neuroanat. 9:142. doi:10.3389/fnana.2015.00142

    Examples
    --------
    >>> cells = np.array([[True, False, True]])
    >>> rand_error(np.where(cells, 0.1, 0.9), cells).error
    0.0
    """
    prob = check_membrane_prob(membrane_prob)
    truth = np.asarray(true_cells_or_labels)
    if truth.dtype == np.bool_:
        true_labels, _ = ndimage.label(truth)  # default structure: 4-connectivity in 2-D
    else:
        true_labels = check_labels("true_cells_or_labels", truth)
    check_same_shape("membrane_prob", prob, "true_cells_or_labels", true_labels)
    levels = check_thresholds(thresholds)
    keep = true_labels != 0
    if not keep.any():
        raise ValueError("the Rand error is undefined: the ground truth has no cell (non-zero) pixel")
    true_ids, _ = _compact_ids(true_labels[keep])
    cell_prob = 1.0 - prob
    best: RandThresholdScores | None = None
    for level in levels:
        pred_labels, n_pred = ndimage.label(cell_prob > level)
        scores = _rand_from_ids(true_ids, pred_labels[keep].astype(np.int64), int(n_pred))
        if best is None or scores.error < best.error:
            best = RandThresholdScores(scores.error, scores.split, scores.merge, float(level))
    assert best is not None  # internal invariant: levels is non-empty
    return best


class InfoScores(NamedTuple):
    """Foreground-restricted information-theoretic scores (see :func:`info_scores`)."""

    score: float  # V_info: F-score of split and merge; 1.0 is a perfect segmentation
    split: float  # I(S;T) / H(S): 1.0 means no false splits (divides by the PREDICTED entropy)
    merge: float  # I(S;T) / H(T): 1.0 means no false merges (divides by the TRUE entropy)
    false_split: float  # H(S|T) in bits: what the prediction adds to the truth
    false_merge: float  # H(T|S) in bits: what the prediction misses of the truth


def _entropy(counts: npt.NDArray[np.int64], total: int) -> float:
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def info_scores(
    pred_labels: npt.NDArray[np.integer],
    true_labels: npt.NDArray[np.integer],
    *,
    ignore_true: Sequence[int] = (0,),
) -> InfoScores:
    """V_info of Arganda-Carreras et al. (2015): the information-theoretic F-score of a segmentation.

    Parameters
    ----------
    pred_labels, true_labels : ndarray of int, same shape
        Predicted segments (label 0: boundary, each such pixel a segment of its own, as in :func:`rand_scores`)
        and ground truth (pixels whose label is in ``ignore_true`` are excluded).

    Returns
    -------
    InfoScores
        With ``p_ij`` the joint distribution of predicted segment ``i`` (S) and true segment ``j`` (T) over the
        counted pixels: ``split = I(S;T) / H(S)``, ``merge = I(S;T) / H(T)``, ``score = 2 split merge /
        (split + merge)``; a side with zero entropy (one segment) scores 1. Entropies in bits, as
        ``skimage.metrics.variation_of_information`` gives ``(false_split, false_merge)``.

    Raises
    ------
    ValueError, TypeError
        As :func:`rand_scores`.

    References
    ----------
    .. [1] Arganda-Carreras et al. (2015). Front. Neuroanat. 9:142. doi:10.3389/fnana.2015.00142

    Examples
    --------
    >>> true = np.array([[1, 1], [2, 2]])
    >>> info_scores(np.array([[1, 1], [2, 2]]), true).score
    1.0
    >>> s = info_scores(np.array([[1, 1], [1, 1]]), true)   # the two cells merged: nothing is split
    >>> (s.split, s.merge)
    (1.0, 0.0)
    """
    true_ids, n_true, pred_kept = _counted_pixels(pred_labels, true_labels, ignore_true, "V_info")
    pred_ids, n_pred = _compact_ids(pred_kept)
    boundary = pred_kept == 0  # each predicted boundary pixel is a singleton: ids after the segments'
    pred_ids[boundary] = n_pred + np.arange(int(boundary.sum()))
    n_pred += int(boundary.sum())
    total = int(true_ids.size)
    joint = np.unique(true_ids * n_pred + pred_ids, return_counts=True)[1].astype(np.int64)
    h_true = _entropy(np.bincount(true_ids, minlength=n_true), total)
    h_pred = _entropy(np.bincount(pred_ids, minlength=n_pred), total)
    mutual = h_true + h_pred - _entropy(joint, total)
    split = mutual / h_pred if h_pred > 0 else 1.0
    merge = mutual / h_true if h_true > 0 else 1.0
    score = 2.0 * split * merge / (split + merge) if split + merge > 0 else 0.0
    return InfoScores(score=score, split=split, merge=merge, false_split=h_pred - mutual,
                      false_merge=h_true - mutual)


def info_score(
    membrane_prob: npt.NDArray[np.floating],
    true_cells: npt.NDArray[np.bool_],
    *,
    thresholds: npt.ArrayLike = PIXEL_THRESHOLDS,
) -> tuple[InfoScores, float]:
    """The best :func:`info_scores` of a membrane map over thresholds (segments: 4-connected components of
    ``1 - membrane_prob > t``, as :func:`rand_error` makes them) and its threshold."""
    prob = check_membrane_prob(membrane_prob)
    cells = check_mask("true_cells", true_cells)
    check_same_shape("membrane_prob", prob, "true_cells", cells)
    true_labels = ndimage.label(cells)[0]
    best: tuple[InfoScores, float] | None = None
    for level in check_thresholds(thresholds):
        scores = info_scores(ndimage.label(1.0 - prob > level)[0], true_labels)
        if best is None or scores.score > best[0].score:
            best = (scores, float(level))
    assert best is not None  # internal invariant: thresholds is non-empty
    return best


__all__ = ['InfoScores', 'RandScores', 'RandThresholdScores', 'info_score', 'info_scores', 'rand_error', 'rand_scores']
