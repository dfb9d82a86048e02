"""Tests for the object-level scores of biounet.evaluation.metrics: hand-computed golden cases, matching invariants, errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from biounet.evaluation.metrics import (
    OBJECT_IOU_THRESHOLDS,
    ObjectErrors,
    ObjectScores,
    dataset_object_scores,
    object_errors,
    object_scores,
    pool_object_scores,
)


def _at(pred: np.ndarray, true: np.ndarray, threshold: float) -> ObjectScores:
    (scores,) = object_scores(pred, true, thresholds=(threshold,))
    return scores


def _counts(scores: ObjectScores) -> tuple[int, int, int]:
    return scores.tp, scores.fp, scores.fn


# ---------------------------------------------------------------------------------------------------------------
# Golden cases
# ---------------------------------------------------------------------------------------------------------------


def test_default_thresholds_are_the_stardist_range():
    assert OBJECT_IOU_THRESHOLDS.tolist() == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    assert [s.threshold for s in object_scores(np.ones((2, 2), int), np.ones((2, 2), int))] == (
        OBJECT_IOU_THRESHOLDS.tolist()
    )


def test_perfect_match_with_other_ids():
    true = np.array([[1, 1, 0, 2], [3, 3, 0, 2]], dtype=np.uint16)
    pred = np.array([[9, 9, 0, 4], [70, 70, 0, 4]], dtype=np.int32)  # same objects, other ids and dtype
    for scores in object_scores(pred, true):
        assert _counts(scores) == (3, 0, 0)
        assert (scores.precision, scores.recall, scores.f1, scores.average_precision) == (1.0, 1.0, 1.0, 1.0)
        assert scores.mean_matched_iou == 1.0


def test_one_true_object_split_in_two():
    true = np.array([[1] * 10])
    pred = np.array([[1] * 6 + [2] * 4])  # IoU 6/10 and 4/10
    scores = _at(pred, true, 0.5)
    # the 6-pixel part matches; the 4-pixel part is a false positive: P = 1/2, R = 1/1, AP = 1/2
    assert _counts(scores) == (1, 1, 0)
    assert (scores.precision, scores.recall, scores.average_precision) == (0.5, 1.0, 0.5)
    assert scores.f1 == pytest.approx(2 / 3)  # 2 tp / (2 tp + fp + fn) = 2 / 3
    assert scores.mean_matched_iou == pytest.approx(0.6)
    assert _counts(_at(pred, true, 0.65)) == (0, 2, 1)


def test_two_true_objects_merged_into_one():
    true = np.array([[1] * 6 + [2] * 4])
    pred = np.array([[1] * 10])  # IoU 6/10 with object 1, 4/10 with object 2
    scores = _at(pred, true, 0.5)
    # the merge finds object 1 and misses object 2: P = 1/1, R = 1/2 (the split case with P and R swapped)
    assert _counts(scores) == (1, 0, 1)
    assert (scores.precision, scores.recall, scores.average_precision) == (1.0, 0.5, 0.5)


def test_precision_divides_by_predicted_recall_by_true_objects():
    true = np.array([[1, 1, 0, 2, 2, 0, 3, 3]])
    pred = np.array([[5, 5, 0, 0, 0, 0, 0, 0]])  # 1 of 3 true objects found, no false positive
    scores = _at(pred, true, 0.5)
    assert (scores.precision, scores.recall) == (1.0, pytest.approx(1 / 3))
    swapped = _at(true, pred, 0.5)  # swapping the arguments swaps precision and recall
    assert (swapped.precision, swapped.recall) == (pytest.approx(1 / 3), 1.0)
    assert (swapped.fp, swapped.fn) == (scores.fn, scores.fp)


def test_one_missed_and_one_spurious_object():
    true = np.array([[1, 1, 0, 2, 2, 0, 0, 0]])
    pred = np.array([[4, 4, 0, 0, 0, 0, 8, 8]])  # object 1 found, object 2 missed, object 8 spurious
    scores = _at(pred, true, 0.5)
    assert _counts(scores) == (1, 1, 1)
    assert (scores.precision, scores.recall, scores.f1) == (0.5, 0.5, 0.5)
    assert scores.average_precision == pytest.approx(1 / 3)  # tp / (tp + fp + fn) = 1 / 3


def test_iou_equal_to_threshold_matches():
    # Convention (StarDist's and Cellpose's): a pair can match when IoU >= threshold.
    true = np.array([[1] * 20])
    pred = np.array([[1] * 11 + [0] * 9])  # IoU 11/20 = 0.55, exactly a default threshold
    by_threshold = {s.threshold: s.tp for s in object_scores(pred, true)}
    assert by_threshold[0.55] == 1
    assert by_threshold[0.6] == 0
    half = np.array([[1, 1, 0, 0]]), np.array([[1, 1, 1, 1]])  # IoU 2/4 = 0.5
    assert _at(*half, 0.5).tp == 1
    assert _at(*half, np.nextafter(0.5, 1.0)).tp == 0


def test_hungarian_finds_more_matches_than_greedy():
    # true A = pixels 0..9, B = 10..13; predicted Y = 0..2, X = 3..13.
    # IoU(A, X) = 7/14 = 0.5, IoU(B, X) = 4/11 = 0.364, IoU(A, Y) = 3/10 = 0.3, IoU(B, Y) = 0.
    # Greedy (highest IoU first) takes A-X and leaves B and Y unmatched: tp = 1. The maximum matching takes
    # A-Y and B-X: tp = 2.
    true = np.array([[1] * 10 + [2] * 4])
    pred = np.array([[2] * 3 + [1] * 11])
    scores = _at(pred, true, 0.25)
    assert _counts(scores) == (2, 0, 0)
    assert scores.mean_matched_iou == pytest.approx((3 / 10 + 4 / 11) / 2)
    assert _counts(_at(pred, true, 0.4)) == (1, 1, 1)  # only A-X is a candidate


def test_tie_in_count_broken_by_larger_total_iou():
    # true A = 0..3 (4 px); predicted P = 0..1, Q = 2..3: IoU(A, P) = IoU(A, Q) = 0.5; and true B = 4..7
    # with predicted R = 4..6 (IoU 3/4). One match for A either way; mean IoU = (0.5 + 0.75) / 2.
    true = np.array([[1, 1, 1, 1, 2, 2, 2, 2]])
    pred = np.array([[1, 1, 2, 2, 3, 3, 3, 0]])
    scores = _at(pred, true, 0.5)
    assert _counts(scores) == (2, 1, 0)
    assert scores.mean_matched_iou == pytest.approx(0.625)


def test_pooled_counts_differ_from_mean_of_per_image_scores():
    # image 1: 1 of 1 true objects found, AP 1; image 2: 0 of 3 found, AP 0.
    # mean of per-image AP = (1 + 0) / 2 = 0.5; pooled AP = 1 / (1 + 0 + 3) = 0.25.
    image_1 = (np.array([[1, 1, 0, 0]]), np.array([[2, 2, 0, 0]]))
    image_2 = (np.zeros((1, 6), dtype=int), np.array([[1, 1, 2, 2, 3, 3]]))
    per_image = [object_scores(*image_1, thresholds=(0.5,)), object_scores(*image_2, thresholds=(0.5,))]
    assert np.mean([scores[0].average_precision for scores in per_image]) == 0.5
    (pooled,) = pool_object_scores(per_image)
    assert _counts(pooled) == (1, 0, 3)
    assert (pooled.average_precision, pooled.precision, pooled.recall) == (0.25, 1.0, 0.25)
    assert pooled.f1 == pytest.approx(2 / 5)
    assert pooled.mean_matched_iou == 1.0
    assert dataset_object_scores([image_1, image_2], thresholds=(0.5,)) == (pooled,)


def test_pooled_mean_matched_iou_weighs_every_match():
    one = (np.array([[1, 1, 1, 0]]), np.array([[1, 1, 1, 1]]))  # one match, IoU 3/4
    two = (np.array([[1, 1, 0, 2, 2]]), np.array([[1, 1, 0, 2, 2]]))  # two matches, IoU 1
    (pooled,) = dataset_object_scores([one, two], thresholds=(0.5,))
    assert pooled.mean_matched_iou == pytest.approx((0.75 + 1 + 1) / 3)


# ---------------------------------------------------------------------------------------------------------------
# Empty cases
# ---------------------------------------------------------------------------------------------------------------


def test_no_true_and_no_predicted_object_is_perfect():
    empty = np.zeros((4, 4), dtype=np.uint8)
    for scores in object_scores(empty, empty):
        assert scores == ObjectScores(scores.threshold, 0, 0, 0, 1.0, 1.0, 1.0, 1.0, 1.0)


@pytest.mark.parametrize("side", ["pred", "true"])
def test_objects_on_one_side_only_score_zero(side):
    objects = np.array([[0, 1, 1, 0, 2]])
    empty = np.zeros_like(objects)
    pred, true = (objects, empty) if side == "pred" else (empty, objects)
    scores = _at(pred, true, 0.5)
    assert _counts(scores) == ((0, 2, 0) if side == "pred" else (0, 0, 2))
    assert (scores.precision, scores.recall, scores.f1, scores.average_precision) == (0.0, 0.0, 0.0, 0.0)
    assert scores.mean_matched_iou == 0.0


def test_pooling_an_empty_image_changes_nothing():
    image = (np.array([[1, 1, 0, 2]]), np.array([[1, 1, 0, 0]]))
    empty = (np.zeros((3, 3), int), np.zeros((3, 3), int))
    assert dataset_object_scores([image, empty]) == dataset_object_scores([image])


# ---------------------------------------------------------------------------------------------------------------
# Invariants
# ---------------------------------------------------------------------------------------------------------------


def _dense_reference(pred: np.ndarray, true: np.ndarray, threshold: float) -> tuple[int, int, float]:
    """Dense IoU matrix, Hungarian over all of it: (tp with StarDist's cost, tp and total IoU with ours)."""
    true_ids = [i for i in np.unique(true) if i]
    pred_ids = [j for j in np.unique(pred) if j]
    if not true_ids or not pred_ids:
        return 0, 0, 0.0
    ious = np.array([[np.sum((true == i) & (pred == j)) / np.sum((true == i) | (pred == j)) for j in pred_ids]
                     for i in true_ids])
    n_min = min(len(true_ids), len(pred_ids))
    rows, cols = linear_sum_assignment(-(ious >= threshold).astype(float) - ious / (2 * n_min))
    stardist_tp = int(np.count_nonzero(ious[rows, cols] >= threshold))
    candidate = np.where(ious >= threshold, ious, 0.0)
    rows, cols = linear_sum_assignment(np.where(candidate > 0, 1 + candidate / (2 * n_min), 0.0), maximize=True)
    chosen = candidate[rows, cols]
    return stardist_tp, int(np.count_nonzero(chosen)), float(chosen.sum())


def _random_rectangles(rng: np.random.Generator, count: int, size: int = 32) -> np.ndarray:
    labels = np.zeros((size, size), dtype=np.int64)
    for label in range(1, count + 1):  # later rectangles cover earlier ones
        row, col = rng.integers(0, size - 4, 2)
        height, width = rng.integers(3, 10, 2)
        labels[row:row + height, col:col + width] = label
    return labels


@pytest.mark.parametrize("seed", range(6))
def test_matches_dense_hungarian_reference(seed):
    rng = np.random.default_rng(seed)
    true, pred = _random_rectangles(rng, 15), _random_rectangles(rng, 15)  # many competing pairs below 0.3
    for scores in object_scores(pred, true, thresholds=(0.1, 0.2, 0.3, 0.5, 0.7)):
        stardist_tp, tp, total_iou = _dense_reference(pred, true, scores.threshold)
        assert scores.tp == stardist_tp == tp
        assert scores.mean_matched_iou * scores.tp == pytest.approx(total_iou)


def test_three_dimensional_labels():
    true = np.zeros((2, 3, 3), dtype=np.int64)
    true[:, :2, :2] = 1
    pred = true.copy()
    pred[1] = 0  # half of the 3-D object
    assert _counts(_at(pred, true, 0.5)) == (1, 0, 0)
    assert _counts(_at(pred, true, 0.55)) == (0, 1, 1)


def test_thousands_of_objects_are_fast():
    # 1600 squares of 8x8 px on a 10-px grid; each predicted square is shifted 3 px right, so it overlaps its own
    # true square (5 columns: IoU 40 / (64 + 64 - 40) = 40/88) and the next one (1 column: IoU 8/120). At 0.05
    # every row is one chain of 80 competing pairs, solved by the Hungarian algorithm; the maximum matching is
    # the 1600 own pairs.
    true = np.zeros((400, 410), dtype=np.int32)
    pred = np.zeros_like(true)
    for row in range(40):
        for col in range(40):
            true[row * 10:row * 10 + 8, col * 10:col * 10 + 8] = row * 40 + col + 1
            pred[row * 10:row * 10 + 8, col * 10 + 3:col * 10 + 11] = 3 * (row * 40 + col) + 7
    scores = object_scores(pred, true, thresholds=(0.05, 0.45, 0.5))
    assert [s.tp for s in scores] == [1600, 1600, 0]
    assert scores[0].mean_matched_iou == pytest.approx(40 / 88)


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------


def test_rejects_shape_mismatch():
    with pytest.raises(ValueError, match=r"shape mismatch: pred_instances \(2, 2\) vs true_instances \(2, 3\)"):
        object_scores(np.zeros((2, 2), int), np.zeros((2, 3), int))


def test_rejects_negative_labels():
    with pytest.raises(ValueError, match="true_instances must have labels >= 0.*minimum -1"):
        object_scores(np.zeros((2, 2), int), np.array([[0, -1], [1, 1]]))


@pytest.mark.parametrize("dtype", [np.float32, np.bool_])
def test_rejects_non_integer_labels(dtype):
    with pytest.raises(TypeError, match="pred_instances must be an integer label image"):
        object_scores(np.zeros((2, 2), dtype), np.zeros((2, 2), int))


@pytest.mark.parametrize("thresholds", [(0.0,), (0.5, 1.1), (-0.5,), (np.nan,), ()])
def test_rejects_thresholds_outside_zero_one(thresholds):
    with pytest.raises(ValueError, match="thresholds must be"):
        object_scores(np.zeros((2, 2), int), np.zeros((2, 2), int), thresholds=thresholds)


def test_threshold_one_needs_identical_objects():
    true = np.array([[1, 1, 0, 2, 2]])
    pred = np.array([[1, 1, 0, 2, 0]])
    assert _at(pred, true, 1.0).tp == 1


def test_pool_rejects_empty_and_mismatched_thresholds():
    image = (np.array([[1]]), np.array([[1]]))
    with pytest.raises(ValueError, match="per_image is empty"):
        pool_object_scores([])
    with pytest.raises(ValueError, match=r"per_image\[1\] has thresholds \[0.6\], per_image\[0\] has \[0.5\]"):
        pool_object_scores([object_scores(*image, thresholds=(0.5,)), object_scores(*image, thresholds=(0.6,))])
    with pytest.raises(ValueError, match="pairs is empty"):
        dataset_object_scores([])


def test_dataset_scores_name_the_bad_image():
    good = (np.array([[1]]), np.array([[1]]))
    with pytest.raises(ValueError, match=r"pairs\[1\]: shape mismatch"):
        dataset_object_scores([good, (np.zeros((1, 2), int), np.zeros((2, 1), int))])


# ---------------------------------------------------------------------------------------------------------------
# The error breakdown
# ---------------------------------------------------------------------------------------------------------------


def _disc_labels(centres, radius, shape=(64, 64)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, dtype=np.int32)
    for index, (cy, cx) in enumerate(centres, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = index
    return labels


def test_errors_name_each_kind_of_miss():
    true = _disc_labels([(12, 12), (12, 22), (23, 17), (40, 40), (12, 50)], 5)
    pred = np.zeros_like(true)
    pred[(true >= 1) & (true <= 3)] = 1  # three nuclei drawn as one object (IoU 1/3 with each): all merged
    column = np.arange(64)[None, :]
    pred[(true == 4) & (column < 38)] = 2  # nucleus 4 cut in three: split
    pred[(true == 4) & (column >= 38) & (column < 42)] = 3
    pred[(true == 4) & (column >= 42)] = 5
    pred[55:60, 5:10] = 4  # an object on background: spurious
    # nucleus 5 not predicted at all: missed
    errors = object_errors(pred, true)
    assert errors == ObjectErrors(merged=3, split=1, missed=1, spurious=1)
    (scores,) = object_scores(pred, true, thresholds=(0.5,))
    assert errors.merged + errors.split + errors.missed == scores.fn
    assert errors.spurious <= scores.fp


def test_errors_of_a_perfect_segmentation_are_zero():
    true = _disc_labels([(12, 12), (40, 40)], 6)
    assert object_errors(true * 3, true) == ObjectErrors(0, 0, 0, 0)


def test_a_matched_object_is_not_merged_even_when_its_prediction_holds_another():
    true = _disc_labels([(20, 20), (20, 31)], 8)
    true[true == 2] = 0
    true[18:23, 29:34] = 2  # a small nucleus beside a big one
    pred = (true > 0).astype(np.int32)  # one object over both: IoU with the big one still >= 0.5
    errors = object_errors(pred, true)
    assert (errors.merged, errors.missed, errors.split) == (1, 0, 0)  # only the small one is lost, in a merge
