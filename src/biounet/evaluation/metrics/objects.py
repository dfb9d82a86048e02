"""Object measures: foreground IoU and Dice, SEG of the Cell Tracking Challenge, and object matching at IoU
thresholds (precision, recall, F1, accuracy TP/(TP+FP+FN), summed over images as StarDist's ``matching_dataset``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from biounet.evaluation.metrics.checks import check_labels, check_mask, check_same_shape


class SegScores(NamedTuple):
    """Result of :func:`seg_score`."""

    mean_jaccard: float  # the SEG measure: mean of per_object
    per_object: npt.NDArray[np.float64]  # Jaccard index of each GT object, in ascending order of its label
    n_objects: int  # number of ground-truth objects


def _overlap_counts(pred_mask: npt.ArrayLike, true_mask: npt.ArrayLike) -> tuple[int, int, int]:
    pred = check_mask("pred_mask", pred_mask)
    true = check_mask("true_mask", true_mask)
    check_same_shape("pred_mask", pred, "true_mask", true)
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
        keep = check_mask("valid", valid)
        check_same_shape("pred_mask", np.asarray(pred_mask), "valid", keep)
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


OBJECT_IOU_THRESHOLDS = np.arange(50, 100, 5) / 100  # 0.5, 0.55, ..., 0.95 (nearest doubles, no arange drift)
"""IoU thresholds of object matching: the DSB2018 score is the mean accuracy over all ten; StarDist reports 0.5..0.9."""


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
    pred_sizes: npt.NDArray[np.int64]  # per predicted object: |P|, n_pred values


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
    pred = check_labels("pred_instances", pred_instances)
    true = check_labels("true_instances", true_instances)
    check_same_shape("pred_instances", pred, "true_instances", true)
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
        pred_sizes=pred_sizes[has_pred_bg:],
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
        IoU thresholds in (0, 1]; default 0.5, 0.55, ..., 0.95.

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


class ObjectErrors(NamedTuple):
    """Why objects did not match at IoU 0.5 (see :func:`object_errors`): ``merged + split + missed`` true objects
    are the false negatives, ``spurious`` counts the false positives that lie mostly on background."""

    merged: int  # true objects mostly inside a predicted object that also holds most of another true object
    split: int  # true objects divided among two or more predicted objects, none a match
    missed: int  # the other unmatched true objects: left as background, or drawn too small or too large
    spurious: int  # unmatched predicted objects lying mostly on background


def object_errors(pred_instances: npt.NDArray[np.integer], true_instances: npt.NDArray[np.integer], *,
                  threshold: float = 0.5) -> ObjectErrors:
    """The error breakdown of an instance segmentation: merged, split, missed and spurious objects.

    A true object is unmatched when no predicted object reaches IoU ``threshold`` with it. It is *merged* when
    the predicted object holding at least half of it also holds at least half of another true object; *split*
    when two or more predicted objects each hold at least a fifth of it; otherwise *missed*. An unmatched
    predicted object is *spurious* when less than half of it overlaps true objects. Merges are what a
    watershed on a boundary or distance map makes of touching nuclei; splits what over-seeding makes.

    Examples
    --------
    >>> true = np.array([[1, 1, 0, 2, 2, 0, 3, 3, 3, 3, 3, 3, 0, 4, 4]])
    >>> pred = np.array([[5, 5, 5, 5, 5, 0, 6, 6, 7, 7, 8, 8, 0, 0, 0]])   # 1 + 2 merged, 3 split, 4 missed
    >>> object_errors(pred, true)
    ObjectErrors(merged=2, split=1, missed=1, spurious=0)
    >>> object_errors(np.array([[0, 8, 8]]), np.array([[0, 0, 0]])).spurious
    1
    """
    overlaps = _instance_overlaps(pred_instances, true_instances)
    level = float(_check_object_thresholds((threshold,))[0])
    candidate = overlaps.iou >= level
    matched_true = np.zeros(overlaps.n_true, dtype=bool)
    matched_pred = np.zeros(overlaps.n_pred, dtype=bool)
    matched_true[overlaps.true_index[candidate]] = True
    matched_pred[overlaps.pred_index[candidate]] = True
    share = overlaps.overlap / overlaps.true_size  # the part of the true object inside the predicted one
    holds = share >= 0.5
    holders, held = np.unique(overlaps.pred_index[holds], return_counts=True)
    merging = holds & np.isin(overlaps.pred_index, holders[held >= 2])
    merged = np.zeros(overlaps.n_true, dtype=bool)
    merged[overlaps.true_index[merging]] = True
    merged &= ~matched_true
    pieces = np.bincount(overlaps.true_index[share >= 0.2], minlength=overlaps.n_true)
    split = (pieces >= 2) & ~matched_true & ~merged
    on_truth = np.bincount(overlaps.pred_index, weights=overlaps.overlap, minlength=overlaps.n_pred)
    spurious = ~matched_pred & (on_truth < 0.5 * overlaps.pred_sizes)
    missed = int(np.count_nonzero(~matched_true)) - int(merged.sum()) - int(split.sum())
    return ObjectErrors(int(merged.sum()), int(split.sum()), missed, int(spurious.sum()))


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
        IoU thresholds in (0, 1]; default 0.5, 0.55, ..., 0.95.

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


__all__ = ['OBJECT_IOU_THRESHOLDS', 'ObjectErrors', 'ObjectScores', 'SegScores', 'dataset_object_scores', 'dice', 'iou', 'object_errors', 'object_scores', 'pool_object_scores', 'seg_score']
