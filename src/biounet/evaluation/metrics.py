"""Evaluation measures of the paper's experiments: ISBI 2012 (pixel, Rand, warping error) and the Cell Tracking
Challenge (SEG), plus foreground IoU and Dice. Pure NumPy/SciPy/Numba functions; NumPy arrays in, floats out.

Probability maps are *membrane* probabilities (the network's class 1). Following the challenge scripts, which
binarise the *cell* probability map, a pixel is predicted cell at threshold ``t`` where
``1 - membrane_prob > t`` (computed in float64).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numba
import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from biounet.core.topology import warp_toward

__all__ = [
    "InfoScores",
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
    "object_scores",
    "pixel_error",
    "pool_object_scores",
    "rand_error",
    "rand_scores",
    "seg_score",
    "warping_error",
]

PIXEL_THRESHOLDS = np.arange(11) / 10  # 0.0, 0.1, ..., 1.0 (the challenge's 11 levels, without arange drift)
WARPING_THRESHOLDS = np.arange(10) / 10  # 0.0, 0.1, ..., 0.9, as in Fiji's evaluation script
_PAIR_TABLE_MAX = 1 << 22  # largest dense contingency table (cells) before switching to a sparse count


class PixelScores(NamedTuple):
    """Result of :func:`pixel_error`."""

    error: float  # 1 - f_score
    f_score: float  # maximal F-score of the cell (non-membrane) class over the thresholds
    threshold: float  # first threshold reaching f_score


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


class WarpingScores(NamedTuple):
    """Result of :func:`warping_error`: the scores at the threshold with the smallest error."""

    error: float  # (splits + mergers) / number of pixels
    splits: int  # number of split *pixels* (not events) left after warping
    mergers: int  # number of merger *pixels* (not events) left after warping
    threshold: float


class SegScores(NamedTuple):
    """Result of :func:`seg_score`."""

    mean_jaccard: float  # the SEG measure: mean of per_object
    per_object: npt.NDArray[np.float64]  # Jaccard index of each GT object, in ascending order of its label
    n_objects: int  # number of ground-truth objects


# ---------------------------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------------------------


def _check_2d(name: str, array: npt.NDArray[np.generic]) -> None:
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) array, got shape {array.shape}")


def _check_same_shape(name_a: str, a: npt.NDArray[np.generic], name_b: str, b: npt.NDArray[np.generic]) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {name_a} {a.shape} vs {name_b} {b.shape}; they must be equal")


def _check_mask(name: str, mask: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    array = np.asarray(mask)
    if array.dtype != np.bool_:
        raise TypeError(f"{name} must be a bool mask, got dtype {array.dtype}; build it with e.g. labels == 255")
    return array


def _check_labels(name: str, labels: npt.ArrayLike) -> npt.NDArray[np.integer]:
    array = np.asarray(labels)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(
            f"{name} must be an integer label image, got dtype {array.dtype}; label images are never float or "
            f"bool (for a mask use scipy.ndimage.label, for whole-number floats use .astype(np.int64))"
        )
    return array


def _check_membrane_prob(membrane_prob: npt.ArrayLike) -> npt.NDArray[np.float64]:
    array = np.asarray(membrane_prob)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
            or array.dtype == np.bool_):
        raise TypeError(f"membrane_prob must be a real-valued array, got dtype {array.dtype}")
    _check_2d("membrane_prob", array)
    prob = array.astype(np.float64)
    if np.isnan(prob).any():
        raise ValueError(f"membrane_prob contains {int(np.isnan(prob).sum())} NaN values; expected values in [0, 1]")
    if prob.size and (prob.min() < 0.0 or prob.max() > 1.0):
        raise ValueError(
            f"membrane_prob must lie in [0, 1] (a probability, not logits or 0-255 intensities), "
            f"got range [{prob.min()}, {prob.max()}]"
        )
    return prob


def _check_thresholds(thresholds: npt.ArrayLike) -> npt.NDArray[np.float64]:
    values = np.asarray(thresholds, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D sequence, got shape {values.shape}")
    if not np.isfinite(values).all() or values.min() < 0.0 or values.max() > 1.0:
        raise ValueError(f"thresholds must be finite values in [0, 1], got {values.tolist()}")
    return values


# ---------------------------------------------------------------------------------------------------------------
# Pixel error
# ---------------------------------------------------------------------------------------------------------------


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
    prob = _check_membrane_prob(membrane_prob)
    cells = _check_mask("true_cells", true_cells)
    _check_same_shape("membrane_prob", prob, "true_cells", cells)
    levels = _check_thresholds(thresholds)
    if valid is not None:
        keep = _check_mask("valid", valid)
        _check_same_shape("membrane_prob", prob, "valid", keep)
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


# ---------------------------------------------------------------------------------------------------------------
# Rand error
# ---------------------------------------------------------------------------------------------------------------


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
    pred = _check_labels("pred_labels", pred_labels)
    true = _check_labels("true_labels", true_labels)
    _check_same_shape("pred_labels", pred, "true_labels", true)
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
    prob = _check_membrane_prob(membrane_prob)
    truth = np.asarray(true_cells_or_labels)
    if truth.dtype == np.bool_:
        true_labels, _ = ndimage.label(truth)  # default structure: 4-connectivity in 2-D
    else:
        true_labels = _check_labels("true_cells_or_labels", truth)
    _check_same_shape("membrane_prob", prob, "true_cells_or_labels", true_labels)
    levels = _check_thresholds(thresholds)
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
    prob = _check_membrane_prob(membrane_prob)
    cells = _check_mask("true_cells", true_cells)
    _check_same_shape("membrane_prob", prob, "true_cells", cells)
    true_labels = ndimage.label(cells)[0]
    best: tuple[InfoScores, float] | None = None
    for level in _check_thresholds(thresholds):
        scores = info_scores(ndimage.label(1.0 - prob > level)[0], true_labels)
        if best is None or scores.score > best[0].score:
            best = (scores, float(level))
    assert best is not None  # internal invariant: thresholds is non-empty
    return best


# ---------------------------------------------------------------------------------------------------------------
# Warping error
# ---------------------------------------------------------------------------------------------------------------

@numba.njit(cache=True)
def _cut_pixels(warped: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """Cut vertices of the 4-connected foreground pixel graph: pixels whose removal disconnects their component.

    Iterative Tarjan depth-first search, O(H W): a non-root pixel ``u`` is a cut pixel if some child ``v`` has
    ``low[v] >= disc[u]``; a root is one if it has two or more children.
    """
    height, width = warped.shape
    n_pixels = height * width
    disc = np.full(n_pixels, -1, dtype=np.int64)
    low = np.zeros(n_pixels, dtype=np.int64)
    parent = np.full(n_pixels, -1, dtype=np.int64)
    next_step = np.zeros(n_pixels, dtype=np.uint8)  # which of the 4 neighbours to try next
    stack = np.empty(n_pixels, dtype=np.int64)
    is_cut = np.zeros(n_pixels, dtype=np.bool_)
    flat = warped.ravel()
    timer = 0
    for root in range(n_pixels):
        if flat[root] == 0 or disc[root] >= 0:
            continue
        disc[root] = low[root] = timer
        timer += 1
        stack[0] = root
        depth = 1
        root_children = 0
        while depth > 0:
            node = stack[depth - 1]
            if next_step[node] < 4:
                step = next_step[node]
                next_step[node] += 1
                row, col = node // width, node % width
                if step == 0:
                    row -= 1
                elif step == 1:
                    row += 1
                elif step == 2:
                    col -= 1
                else:
                    col += 1
                if row < 0 or row >= height or col < 0 or col >= width or flat[row * width + col] == 0:
                    continue
                neighbour = row * width + col
                if disc[neighbour] < 0:
                    parent[neighbour] = node
                    disc[neighbour] = low[neighbour] = timer
                    timer += 1
                    stack[depth] = neighbour
                    depth += 1
                    root_children += node == root
                elif neighbour != parent[node]:
                    low[node] = min(low[node], disc[neighbour])
            else:
                depth -= 1
                above = parent[node]
                if above >= 0:
                    low[above] = min(low[above], low[node])
                    if above != root and low[node] >= disc[above]:
                        is_cut[above] = True
        is_cut[root] = root_children >= 2
    return is_cut.reshape(height, width)


@numba.njit(cache=True)
def _count_splits_mergers(
    warped: npt.NDArray[np.uint8], components: npt.NDArray[np.int32], rows: npt.NDArray[np.int64],
    cols: npt.NDArray[np.int64],
) -> tuple[int, int]:
    """Classify the mismatches left after warping as in Fiji's ``WarpingError.classifyMismatches2d``.

    Fiji's "flip the pixel, relabel the image, count > 2 ids around it" test for a foreground pixel next to one
    object and background is answered by the cut-pixel test: the ids around it are then background plus one per
    component of its object without it, and that object falls apart iff the pixel is a cut vertex.
    """
    height, width = warped.shape
    is_cut = _cut_pixels(warped)
    ids = np.empty(8, dtype=np.int64)
    splits = 0
    mergers = 0
    for k in range(rows.size):
        row, col = rows[k], cols[k]
        n_ids = 0
        for d_row in range(-1, 2):
            for d_col in range(-1, 2):
                r, c = row + d_row, col + d_col
                if (d_row != 0 or d_col != 0) and 0 <= r < height and 0 <= c < width:
                    label = components[r, c]
                    seen = False
                    for m in range(n_ids):
                        seen = seen or ids[m] == label
                    if not seen:
                        ids[n_ids] = label
                        n_ids += 1
        if n_ids >= 3:  # two or more objects meet here
            if warped[row, col]:
                splits += 1
            else:
                mergers += 1
        elif n_ids == 2 and warped[row, col] and is_cut[row, col]:  # removal splits its object
            splits += 1
        # otherwise: object addition/deletion or hole addition/deletion, not counted in this variant
    return splits, mergers


def _splits_and_mergers(
    true_cells: npt.NDArray[np.bool_], target: npt.NDArray[np.bool_], priority: npt.NDArray[np.float64]
) -> tuple[int, int]:
    """Warp ``true_cells`` toward ``target`` by simple-point flips; count the split and merger pixels left."""
    warped, rows, cols = warp_toward(true_cells, target, priority)
    components, _ = ndimage.label(warped)  # 4-connectivity
    splits, mergers = _count_splits_mergers(warped.astype(np.uint8), components.astype(np.int32), rows, cols)
    return int(splits), int(mergers)


def warping_error(
    membrane_prob: npt.NDArray[np.floating],
    true_cells: npt.NDArray[np.bool_],
    *,
    thresholds: npt.ArrayLike = WARPING_THRESHOLDS,
) -> WarpingScores:
    """ISBI 2012 warping error, "minimum splits and mergers" variant of Jain et al. (2010), as in Fiji.

    Parameters
    ----------
    membrane_prob : (H, W) ndarray of float
        Membrane probability in [0, 1].
    true_cells : (H, W) ndarray of bool
        Ground truth, True on cell interior (foreground, 4-connected), False on membrane (8-connected).
    thresholds : sequence of float, optional
        Levels ``t`` in [0, 1]; the target is ``1 - membrane_prob > t``. Default 0.0, 0.1, ..., 0.9.
        Levels leaving no predicted cell pixel or no predicted membrane pixel are skipped.

    Returns
    -------
    WarpingScores
        ``(error, splits, mergers, threshold)`` at the first threshold reaching the minimal error; ``splits``
        and ``mergers`` count pixels (Fiji's ``clusterByError=false``), not events.

    Raises
    ------
    ValueError
        If the shapes differ, an input is not 2-D, ``membrane_prob`` has NaN or values outside [0, 1], the
        thresholds are invalid, or every threshold is skipped.
    TypeError
        If ``true_cells`` is not bool or ``membrane_prob`` is not real-valued.

    Notes
    -----
    At each level the ground truth is warped toward the target: mismatching pixels that are *simple* for
    (4, 8) topology (flipping them changes no connectivity, [3]) are flipped, pass after pass, until a pass
    flips none. Within a pass, pixels are visited in decreasing ``|1 - membrane_prob - t|`` (most confident
    prediction first), ties in column-major order, as in Fiji's ``simplePointWarp2d``; flips take effect
    immediately. Each remaining mismatch is classified from the 4-connected components of the warped ground
    truth among its in-image 8-neighbours (ids, with 0 = background):

    - >= 2 objects: merger if the pixel is background in the warped ground truth, else split;
    - one object and background, pixel foreground: split if, with the pixel removed, its foreground neighbours
      fall into >= 2 components of the whole image (it is a cut vertex of its 4-connected object; Fiji
      relabels the image to decide), else hole deletion;
    - all other cases (object addition/deletion, hole addition/deletion) are not counted.

    ``error = (split pixels + merger pixels) / (H W)``, minimised over the levels.

    References
    ----------
    .. [1] Jain et al. (2010). Boundary learning by optimization with topological constraints. CVPR.
           doi:10.1109/CVPR.2010.5539950
    .. [2] Arganda-Carreras et al. (2015). Front. Neuroanat. 9:142. doi:10.3389/fnana.2015.00142; reference
           implementation: Fiji Trainable Weka Segmentation, ``trainableSegmentation/metrics/WarpingError.java``
           (``getMinimumSplitsAndMergersErrorValue(0.0, 0.9, 0.1, false)``).
    .. [3] Bertrand, Malandain (1994). A new characterization of three-dimensional simple points. Pattern
           Recogn. Lett. 15(2):169-175. doi:10.1016/0167-8655(94)90046-9

    Examples
    --------
    >>> cells = np.ones((5, 5), dtype=bool)
    >>> cells[:, 2] = False                           # two cells, one membrane column
    >>> prob = np.zeros((5, 5))
    >>> prob[:, 2] = 1.0
    >>> prob[2, 2] = 0.0                              # one-pixel gap in the predicted membrane
    >>> warping_error(prob, cells)
    WarpingScores(error=0.04, splits=0, mergers=1, threshold=0.0)
    """
    prob = _check_membrane_prob(membrane_prob)
    cells = _check_mask("true_cells", true_cells)
    _check_2d("true_cells", cells)
    _check_same_shape("membrane_prob", prob, "true_cells", cells)
    levels = _check_thresholds(thresholds)
    cell_prob = 1.0 - prob
    best: WarpingScores | None = None
    for level in levels:
        target = cell_prob > level
        if target.all() or not target.any():
            continue  # all cell or all membrane: splits and mergers are undefined here, not zero
        splits, mergers = _splits_and_mergers(cells, target, np.abs(cell_prob - level))
        error = (splits + mergers) / cells.size
        if best is None or error < best.error:
            best = WarpingScores(error=error, splits=splits, mergers=mergers, threshold=float(level))
    if best is None:
        raise ValueError(
            f"every threshold {levels.tolist()} leaves no predicted cell pixel or no predicted membrane pixel "
            f"(1 - membrane_prob spans [{cell_prob.min()}, {cell_prob.max()}]); the warping error is undefined"
        )
    return best


# ---------------------------------------------------------------------------------------------------------------
# Overlap measures: IoU, Dice, Cell Tracking Challenge SEG
# ---------------------------------------------------------------------------------------------------------------


def _overlap_counts(pred_mask: npt.ArrayLike, true_mask: npt.ArrayLike) -> tuple[int, int, int]:
    pred = _check_mask("pred_mask", pred_mask)
    true = _check_mask("true_mask", true_mask)
    _check_same_shape("pred_mask", pred, "true_mask", true)
    return int(np.count_nonzero(pred & true)), int(np.count_nonzero(pred)), int(np.count_nonzero(true))


def iou(pred_mask: npt.NDArray[np.bool_], true_mask: npt.NDArray[np.bool_], *,
        valid: npt.NDArray[np.bool_] | None = None) -> float:
    """Foreground intersection over union (Jaccard index) ``|P & T| / |P | T|``; 1.0 when both masks are empty.

    Parameters
    ----------
    pred_mask, true_mask : ndarray of bool, same shape
        Predicted and true foreground.
    valid : ndarray of bool, same shape, optional
        Annotated pixels; the others are left out (partial ground truth).

    Returns
    -------
    float
        IoU in [0, 1].

    Raises
    ------
    ValueError
        If the shapes differ.
    TypeError
        If a mask is not bool.

    Examples
    --------
    >>> iou(np.array([True, True, False]), np.array([True, False, False]))
    0.5
    >>> iou(np.array([True, True, False]), np.array([True, False, False]), valid=np.array([True, False, True]))
    1.0
    """
    if valid is not None:
        keep = _check_mask("valid", valid)
        _check_same_shape("pred_mask", np.asarray(pred_mask), "valid", keep)
        pred_mask, true_mask = np.asarray(pred_mask)[keep], np.asarray(true_mask)[keep]
    both, n_pred, n_true = _overlap_counts(pred_mask, true_mask)
    union = n_pred + n_true - both
    return 1.0 if union == 0 else both / union


def dice(pred_mask: npt.NDArray[np.bool_], true_mask: npt.NDArray[np.bool_]) -> float:
    """Foreground Dice coefficient ``2 |P & T| / (|P| + |T|)``; 1.0 when both masks are empty.

    Parameters
    ----------
    pred_mask, true_mask : ndarray of bool, same shape
        Predicted and true foreground.

    Returns
    -------
    float
        Dice in [0, 1]; equals ``2 IoU / (1 + IoU)``.

    Raises
    ------
    ValueError
        If the shapes differ.
    TypeError
        If a mask is not bool.

    Examples
    --------
    >>> round(dice(np.array([True, True, False]), np.array([True, False, False])), 4)
    0.6667
    """
    both, n_pred, n_true = _overlap_counts(pred_mask, true_mask)
    total = n_pred + n_true
    return 1.0 if total == 0 else 2.0 * both / total


def seg_score(pred_instances: npt.NDArray[np.integer], true_instances: npt.NDArray[np.integer]) -> SegScores:
    """Cell Tracking Challenge SEG measure: mean Jaccard index of each ground-truth object with its match.

    Parameters
    ----------
    pred_instances : ndarray of int
        Predicted instance labels, any shape; 0 is background, each object has its own positive id.
    true_instances : ndarray of int, same shape
        Ground-truth instance labels, same encoding. May be partial: unannotated predicted objects are ignored.

    Returns
    -------
    SegScores
        ``(mean_jaccard, per_object, n_objects)``; ``per_object`` follows the ascending order of the
        ground-truth labels.

    Raises
    ------
    ValueError
        If the shapes differ, a label is negative, or the ground truth has no object.
    TypeError
        If a label image is not of integer dtype.

    Notes
    -----
    A ground-truth object ``R`` matches the predicted object ``S`` with ``|R & S| > 0.5 |R|`` (at most one can);
    its score is ``J = |R & S| / |R | S|``, or 0 when no object matches (also when one covers exactly half).
    ``|S|`` counts all of ``S``, including its pixels outside any annotated object.
    ``SEG = mean_R J(R)``.

    References
    ----------
    .. [1] Maska et al. (2014). A benchmark for comparison of cell tracking algorithms. Bioinformatics
           30(11):1609-1617. doi:10.1093/bioinformatics/btu080
    .. [2] Ulman et al. (2017). An objective comparison of cell-tracking algorithms. Nat. Methods 14:1141-1152.
           doi:10.1038/nmeth.4473

    Examples
    --------
    >>> seg_score(np.array([[1, 1, 0, 2]]), np.array([[5, 5, 5, 0]])).mean_jaccard  # 2 / 3 of R, 2 / 3 union
    0.6666666666666666
    """
    table = _instance_overlaps(pred_instances, true_instances)
    if table.n_true == 0:
        raise ValueError("SEG is undefined: true_instances has no object (only background label 0)")
    matched = 2 * table.overlap > table.true_size
    per_object = np.zeros(table.n_true, dtype=np.float64)
    per_object[table.true_index[matched]] = table.iou[matched]
    return SegScores(mean_jaccard=float(per_object.mean()), per_object=per_object, n_objects=table.n_true)


# ---------------------------------------------------------------------------------------------------------------
# Object-level scores: instances matched by IoU (StarDist / Cellpose "average precision")
# ---------------------------------------------------------------------------------------------------------------


OBJECT_IOU_THRESHOLDS = np.arange(50, 95, 5) / 100  # 0.5, 0.55, ..., 0.9 (nearest doubles, no arange drift)


class ObjectScores(NamedTuple):
    """Object-level scores at one IoU threshold (see :func:`object_scores`)."""

    threshold: float  # a predicted and a true object can match when their IoU >= threshold
    tp: int  # matched pairs
    fp: int  # predicted objects left unmatched
    fn: int  # true objects left unmatched
    precision: float  # tp / (tp + fp): divides by the number of PREDICTED objects
    recall: float  # tp / (tp + fn): divides by the number of TRUE objects
    f1: float  # 2 tp / (2 tp + fp + fn)
    average_precision: float  # tp / (tp + fp + fn), StarDist's "accuracy", Cellpose's "average precision"
    mean_matched_iou: float  # mean IoU of the tp matched pairs


class _InstanceOverlaps(NamedTuple):
    """Sparse contingency table of two instance label images: only pairs of objects that overlap."""

    n_true: int
    n_pred: int
    true_index: npt.NDArray[np.int64]  # per pair: index of the true object, 0..n_true-1 (ascending label)
    pred_index: npt.NDArray[np.int64]  # per pair: index of the predicted object, 0..n_pred-1
    iou: npt.NDArray[np.float64]  # per pair: |T & P| / |T | P|, > 0
    overlap: npt.NDArray[np.int64]  # per pair: |T & P|
    true_size: npt.NDArray[np.int64]  # per pair: |T|


def _check_object_thresholds(thresholds: npt.ArrayLike) -> npt.NDArray[np.float64]:
    values = np.asarray(thresholds, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D sequence, got shape {values.shape}")
    if not np.isfinite(values).all() or values.min() <= 0.0 or values.max() > 1.0:
        raise ValueError(
            f"IoU thresholds must be finite values in (0, 1], got {values.tolist()}; at 0 every pair of objects, "
            f"overlapping or not, would match"
        )
    return values


def _instance_overlaps(pred_instances: npt.ArrayLike, true_instances: npt.ArrayLike) -> _InstanceOverlaps:
    pred = _check_labels("pred_instances", pred_instances)
    true = _check_labels("true_instances", true_instances)
    _check_same_shape("pred_instances", pred, "true_instances", true)
    for name, labels in (("pred_instances", pred), ("true_instances", true)):
        if labels.size and labels.min() < 0:
            raise ValueError(f"{name} must have labels >= 0 (0 = background), got minimum {labels.min()}")
    true_ids, true_inverse = np.unique(true, return_inverse=True)
    pred_ids, pred_inverse = np.unique(pred, return_inverse=True)
    true_inverse, pred_inverse = true_inverse.reshape(-1), pred_inverse.reshape(-1)
    has_true_bg = int(true_ids.size > 0 and true_ids[0] == 0)
    has_pred_bg = int(pred_ids.size > 0 and pred_ids[0] == 0)
    true_sizes = np.bincount(true_inverse, minlength=true_ids.size).astype(np.int64)
    pred_sizes = np.bincount(pred_inverse, minlength=pred_ids.size).astype(np.int64)
    in_both = (true_inverse >= has_true_bg) & (pred_inverse >= has_pred_bg)
    keys = true_inverse[in_both].astype(np.int64) * pred_ids.size + pred_inverse[in_both]
    pair_keys, overlap = np.unique(keys, return_counts=True)  # sparse: O(pixels), not O(n_true * n_pred)
    true_of_pair, pred_of_pair = np.divmod(pair_keys, max(pred_ids.size, 1))
    union = true_sizes[true_of_pair] + pred_sizes[pred_of_pair] - overlap
    return _InstanceOverlaps(
        n_true=int(true_ids.size - has_true_bg),
        n_pred=int(pred_ids.size - has_pred_bg),
        true_index=(true_of_pair - has_true_bg).astype(np.int64),
        pred_index=(pred_of_pair - has_pred_bg).astype(np.int64),
        iou=overlap / union.astype(np.float64),
        overlap=overlap.astype(np.int64),
        true_size=true_sizes[true_of_pair],
    )


def _match_candidates(
    true_index: npt.NDArray[np.int64], pred_index: npt.NDArray[np.int64], iou: npt.NDArray[np.float64]
) -> tuple[int, float]:
    """``(matches, total IoU)`` of a maximum matching of candidate pairs, then the largest total IoU among those.

    Solved per connected component of the bipartite candidate graph: most components are a single pair (always
    for thresholds above 0.5, where an object can have at most one partner with IoU > 0.5), so the Hungarian
    algorithm only runs on the few small components with competing pairs, never on an n_true x n_pred matrix.
    """
    if iou.size == 0:
        return 0, 0.0
    true_nodes, true_compact = np.unique(true_index, return_inverse=True)
    pred_nodes, pred_compact = np.unique(pred_index, return_inverse=True)
    if true_nodes.size == iou.size and pred_nodes.size == iou.size:  # no object in two candidate pairs
        return int(iou.size), float(iou.sum())
    n_nodes = true_nodes.size + pred_nodes.size
    graph = coo_matrix((np.ones(iou.size), (true_compact, true_nodes.size + pred_compact)), shape=(n_nodes, n_nodes))
    _, node_component = connected_components(graph, directed=False)
    pair_component = node_component[true_compact]
    order = np.argsort(pair_component, kind="stable")
    matches, total_iou = 0, 0.0
    for pairs in np.split(order, np.flatnonzero(np.diff(pair_component[order])) + 1):
        if pairs.size == 1:
            matches, total_iou = matches + 1, total_iou + float(iou[pairs[0]])
            continue
        rows, row_of_pair = np.unique(true_compact[pairs], return_inverse=True)
        cols, col_of_pair = np.unique(pred_compact[pairs], return_inverse=True)
        pair_iou = np.zeros((rows.size, cols.size))
        pair_iou[row_of_pair, col_of_pair] = iou[pairs]
        # Each match gains 1, plus its IoU scaled so that all IoUs together add less than one match: the
        # number of matches comes first, the total IoU only breaks ties (StarDist's cost, Cellpose's too).
        gain = np.where(pair_iou > 0, 1.0 + pair_iou / (2 * min(rows.size, cols.size)), 0.0)
        chosen_rows, chosen_cols = linear_sum_assignment(gain, maximize=True)
        chosen_iou = pair_iou[chosen_rows, chosen_cols]
        matched = chosen_iou > 0  # a zero-gain assignment is no match
        matches += int(np.count_nonzero(matched))
        total_iou += float(chosen_iou[matched].sum())
    return matches, total_iou


def _object_scores_from_counts(threshold: float, tp: int, fp: int, fn: int, total_iou: float) -> ObjectScores:
    if tp + fp + fn == 0:  # no true and no predicted object: nothing to find, nothing found wrongly
        return ObjectScores(threshold, 0, 0, 0, 1.0, 1.0, 1.0, 1.0, 1.0)
    return ObjectScores(
        threshold=threshold,
        tp=tp,
        fp=fp,
        fn=fn,
        precision=tp / (tp + fp) if tp + fp else 0.0,
        recall=tp / (tp + fn) if tp + fn else 0.0,
        f1=2 * tp / (2 * tp + fp + fn),
        average_precision=tp / (tp + fp + fn),
        mean_matched_iou=total_iou / tp if tp else 0.0,
    )


def object_scores(
    pred_instances: npt.NDArray[np.integer],
    true_instances: npt.NDArray[np.integer],
    *,
    thresholds: npt.ArrayLike = OBJECT_IOU_THRESHOLDS,
) -> tuple[ObjectScores, ...]:
    """Object-level precision, recall, F1 and average precision of instance labels, at several IoU thresholds.

    Parameters
    ----------
    pred_instances : ndarray of int
        Predicted instance labels, any shape (2-D or 3-D); 0 is background, each object has its own positive id.
        Ids need not be consecutive.
    true_instances : ndarray of int, same shape
        Ground-truth instance labels, same encoding. Every true object counts: partial ground truth makes
        unannotated predicted cells false positives.
    thresholds : sequence of float, optional
        IoU thresholds in (0, 1]; default 0.5, 0.55, ..., 0.9.

    Returns
    -------
    tuple of ObjectScores
        One per threshold, in the order given.

    Raises
    ------
    ValueError
        If the shapes differ, a label is negative, or a threshold is outside (0, 1].
    TypeError
        If a label image is not of integer dtype (float and bool images are rejected, never rounded).

    Notes
    -----
    The IoU of true object ``T`` and predicted object ``P`` is ``|T & P| / |T | P|``; it is computed once, for
    the overlapping pairs only, and reused for every threshold. At threshold ``t`` a pair *can* match when
    ``IoU >= t`` (``>=``, as in StarDist's ``matching`` and Cellpose's ``average_precision``). Each object is in
    at most one match; the matching has the largest number of pairs (Hungarian algorithm,
    ``scipy.optimize.linear_sum_assignment``) and, among those, the largest total IoU. For ``t > 0.5`` the
    candidate pairs are already one-to-one, so every threshold in the default range gives the same counts as
    greedy matching; below 0.5 the maximum matching can find more pairs than greedy. With ``tp`` matches,
    ``fp = n_pred - tp`` and ``fn = n_true - tp``::

        precision = tp / (tp + fp)    recall = tp / (tp + fn)    F1 = 2 tp / (2 tp + fp + fn)
        average_precision = tp / (tp + fp + fn)

    Precision divides by the predicted objects, recall by the true ones. ``average_precision`` is StarDist's
    ``accuracy`` and the "average precision" of Cellpose [2]_, not the area under a precision-recall curve.
    Empty cases: with no true and no predicted object every score is 1.0 (``mean_matched_iou`` too); otherwise a
    ratio whose denominator is 0 (precision without predictions, recall without true objects) is 0.0, and so is
    ``mean_matched_iou`` when ``tp = 0``. For a dataset, pool the counts with :func:`pool_object_scores`.

    References
    ----------
    .. [1] Schmidt, Weigert, Broaddus, Myers (2018). Cell detection with star-convex polygons. MICCAI, LNCS
           11071:265-273. doi:10.1007/978-3-030-00934-2_30 (``stardist.matching.matching``)
    .. [2] Stringer, Wang, Michaelos, Pachitariu (2021). Cellpose: a generalist algorithm for cellular
           segmentation. Nat. Methods 18:100-106. doi:10.1038/s41592-020-01018-x (``cellpose.metrics``)

    Examples
    --------
    >>> true = np.array([[1, 1, 0, 2, 2, 0]])
    >>> pred = np.array([[7, 7, 0, 9, 0, 5]])    # object 2 half found (IoU 1/2), one spurious object
    >>> [(s.tp, s.fp, s.fn) for s in object_scores(pred, true, thresholds=(0.5, 0.6))]
    [(2, 1, 0), (1, 2, 1)]
    >>> scores = object_scores(pred, true, thresholds=(0.5,))[0]
    >>> scores.precision, scores.recall, scores.average_precision, scores.mean_matched_iou
    (0.6666666666666666, 1.0, 0.6666666666666666, 0.75)
    """
    overlaps = _instance_overlaps(pred_instances, true_instances)
    levels = _check_object_thresholds(thresholds)
    results = []
    for level in levels:
        candidate = overlaps.iou >= level
        tp, total_iou = _match_candidates(
            overlaps.true_index[candidate], overlaps.pred_index[candidate], overlaps.iou[candidate]
        )
        results.append(
            _object_scores_from_counts(float(level), tp, overlaps.n_pred - tp, overlaps.n_true - tp, total_iou)
        )
    return tuple(results)


def pool_object_scores(per_image: Sequence[Sequence[ObjectScores]]) -> tuple[ObjectScores, ...]:
    """Dataset-level object scores: tp, fp and fn summed over images, then the ratios (StarDist's convention).

    Parameters
    ----------
    per_image : sequence of sequences of ObjectScores
        :func:`object_scores` of each image, all with the same thresholds in the same order.

    Returns
    -------
    tuple of ObjectScores
        One per threshold. ``mean_matched_iou`` is the mean over all matched pairs of all images.

    Raises
    ------
    ValueError
        If ``per_image`` is empty, or the images' thresholds differ.

    Notes
    -----
    Pooling weighs every object equally; the mean of per-image scores weighs every image equally, so an image
    with few cells counts as much as one with hundreds. The scores follow :func:`object_scores`, with the
    counts summed: e.g. ``average_precision = sum tp / (sum tp + sum fp + sum fn)``.

    References
    ----------
    .. [1] Schmidt et al. (2018). MICCAI. doi:10.1007/978-3-030-00934-2_30 (``stardist.matching.matching_dataset``)

    Examples
    --------
    >>> found = object_scores(np.array([[1, 0]]), np.array([[1, 0]]), thresholds=(0.5,))   # 1 of 1 found
    >>> missed = object_scores(np.array([[0, 0, 0]]), np.array([[1, 2, 3]]), thresholds=(0.5,))  # 0 of 3
    >>> pool_object_scores([found, missed])[0].average_precision    # 1 / 4, not the mean (1 + 0) / 2
    0.25
    """
    if len(per_image) == 0:
        raise ValueError("per_image is empty: no images to pool")
    reference = [scores.threshold for scores in per_image[0]]
    for index, image_scores in enumerate(per_image):
        thresholds = [scores.threshold for scores in image_scores]
        if thresholds != reference:
            raise ValueError(
                f"per_image[{index}] has thresholds {thresholds}, per_image[0] has {reference}; compute every "
                f"image's object_scores with the same thresholds"
            )
    pooled = []
    for position, threshold in enumerate(reference):
        at_threshold = [image_scores[position] for image_scores in per_image]
        tp = sum(scores.tp for scores in at_threshold)
        fp = sum(scores.fp for scores in at_threshold)
        fn = sum(scores.fn for scores in at_threshold)
        total_iou = sum(scores.mean_matched_iou * scores.tp for scores in at_threshold)  # tp = 0 adds 0
        pooled.append(_object_scores_from_counts(threshold, tp, fp, fn, total_iou))
    return tuple(pooled)


def dataset_object_scores(
    pairs: Sequence[tuple[npt.NDArray[np.integer], npt.NDArray[np.integer]]],
    *,
    thresholds: npt.ArrayLike = OBJECT_IOU_THRESHOLDS,
) -> tuple[ObjectScores, ...]:
    """Pooled object scores of ``(pred_instances, true_instances)`` pairs: :func:`object_scores` of each image,
    then :func:`pool_object_scores`.

    Parameters
    ----------
    pairs : sequence of (ndarray of int, ndarray of int)
        Predicted and true instance labels of each image; shapes may differ between images.
    thresholds : sequence of float, optional
        IoU thresholds in (0, 1]; default 0.5, 0.55, ..., 0.9.

    Returns
    -------
    tuple of ObjectScores
        One per threshold, with tp, fp and fn summed over the images.

    Raises
    ------
    ValueError
        If ``pairs`` is empty, or as :func:`object_scores` for an image (the message names its index).
    TypeError
        As :func:`object_scores`.

    References
    ----------
    .. [1] Schmidt et al. (2018). MICCAI. doi:10.1007/978-3-030-00934-2_30

    Examples
    --------
    >>> pairs = [(np.array([[1, 0]]), np.array([[1, 0]])), (np.array([[0, 0, 0]]), np.array([[1, 2, 3]]))]
    >>> scores = dataset_object_scores(pairs, thresholds=(0.5,))[0]
    >>> scores.tp, scores.fn, scores.recall
    (1, 3, 0.25)
    """
    if len(pairs) == 0:
        raise ValueError("pairs is empty: no images to score")
    levels = _check_object_thresholds(thresholds)
    per_image = []
    for index, (pred, true) in enumerate(pairs):
        try:
            per_image.append(object_scores(pred, true, thresholds=levels))
        except (ValueError, TypeError) as err:
            raise type(err)(f"pairs[{index}]: {err}") from err
    return pool_object_scores(per_image)
