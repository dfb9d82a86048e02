"""Tests for biounet.evaluation.metrics: hand-computed golden values, a cross-check with scikit-image, error messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import adapted_rand_error

from biounet.core.topology import simple_point_table as _simple_point_table
from biounet.evaluation.metrics import (
    dice,
    iou,
    pixel_error,
    rand_error,
    rand_scores,
    seg_score,
    warping_error,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ISBI_LABEL = SHARED_DATA / "isbi2012" / "train" / "label" / "0.png"


def _one_cell(height: int = 10, width: int = 10) -> np.ndarray:
    """One cell filling the image except a one-pixel membrane border."""
    cells = np.zeros((height, width), dtype=bool)
    cells[1:-1, 1:-1] = True
    return cells


# ---------------------------------------------------------------------------------------------------------------
# Rand scores
# ---------------------------------------------------------------------------------------------------------------


def test_rand_scores_oversegmentation_golden():
    true = np.array([[1, 1], [2, 2]])
    pred = np.array([[1, 3], [2, 2]])  # true cell 1 split in two
    s = rand_scores(pred, true)
    # sum n_ij^2 = 1+1+4 = 6; true sizes 2,2 -> 8; pred sizes 1,1,2 -> 6
    # split = 6/8, merge = 6/6, F = 2*0.75/1.75 = 6/7
    assert (s.split, s.merge, s.error) == pytest.approx((0.75, 1.0, 1 / 7))


def test_rand_scores_undersegmentation_golden():
    true = np.array([[1, 1], [2, 2]])
    pred = np.array([[4, 4], [4, 4]])  # both true cells merged
    s = rand_scores(pred, true)
    # sum n_ij^2 = 4+4 = 8; true sizes 2,2 -> 8; pred size 4 -> 16
    # split = 1, merge = 0.5, F = 2*0.5/1.5 = 2/3
    assert (s.split, s.merge, s.error) == pytest.approx((1.0, 0.5, 1 / 3))


def test_rand_scores_predicted_membrane_is_singletons_and_true_background_ignored():
    true = np.array([[1, 1, 1, 1], [0, 0, 0, 0]])
    pred = np.array([[2, 0, 2, 2], [2, 2, 0, 5]])  # row 1 is true background: ignored whatever pred says
    s = rand_scores(pred, true)
    # kept: true 1 x4; pred 2,0,2,2. n(1,2) = 3 -> 9, plus singleton 1 -> sum n^2 = 10
    # true sizes 4 -> 16; pred sizes 3 -> 9, plus singleton 1 -> 10
    # split = 10/16 = 0.625, merge = 1, F = 1.25/1.625 = 10/13
    assert (s.split, s.merge, s.error) == pytest.approx((0.625, 1.0, 3 / 13))


def test_rand_scores_two_membrane_pixels_are_two_segments():
    s = rand_scores(np.array([[0, 0, 3, 3]]), np.array([[1, 1, 1, 1]]))
    # singletons 1 + 1, n(1,3) = 2 -> 4: sum n^2 = 6; true 16; pred 4 + 1 + 1 = 6
    # split = 6/16 = 0.375, merge = 1, F = 0.75/1.375 = 6/11 (one segment {0} would give split 0.5)
    assert (s.split, s.merge, s.error) == pytest.approx((0.375, 1.0, 5 / 11))


def test_rand_scores_ignore_true_is_configurable():
    true = np.array([[1, 1, 7, 7]])
    pred = np.array([[1, 1, 1, 1]])
    assert rand_scores(pred, true, ignore_true=(7,)).error == pytest.approx(0.0)
    # with 7 kept: sum n^2 = 4+4 = 8, true 8, pred 16 -> merge 0.5
    assert rand_scores(pred, true).merge == pytest.approx(0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rand_scores_relation_to_skimage_adapted_rand_error(seed):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 6, size=(17, 23))  # 0 = ignored background in both implementations
    pred = rng.integers(1, 8, size=(17, 23))  # no predicted membrane, so no singletons
    ours = rand_scores(pred, true)
    _, sk_precision, sk_recall = adapted_rand_error(true, pred)
    keep = true != 0
    n = keep.sum()
    a2 = np.sum(np.bincount(true[keep]).astype(float) ** 2)  # sum of squared true sizes
    b2 = np.sum(np.bincount(pred[keep]).astype(float) ** 2)  # sum of squared pred sizes (kept pixels)
    # skimage counts pairs, sum(n^2) - N, and calls the true-size ratio "precision":
    #   sk_precision = (S - N) / (A - N)  ->  split = S / A = (N + sk_precision (A - N)) / A
    #   sk_recall    = (S - N) / (B - N)  ->  merge = S / B = (N + sk_recall (B - N)) / B
    assert ours.split == pytest.approx((n + sk_precision * (a2 - n)) / a2, rel=1e-12)
    assert ours.merge == pytest.approx((n + sk_recall * (b2 - n)) / b2, rel=1e-12)


def test_rand_scores_errors():
    with pytest.raises(ValueError, match="Rand error is undefined"):
        rand_scores(np.ones((3, 3), dtype=int), np.zeros((3, 3), dtype=int))
    with pytest.raises(TypeError, match="integer label image, got dtype float64"):
        rand_scores(np.ones((3, 3)), np.ones((3, 3), dtype=int))
    with pytest.raises(TypeError, match="true_labels must be an integer label image, got dtype bool"):
        rand_scores(np.ones((3, 3), dtype=int), np.ones((3, 3), dtype=bool))
    with pytest.raises(ValueError, match=r"shape mismatch: pred_labels \(3, 3\) vs true_labels \(3, 4\)"):
        rand_scores(np.ones((3, 3), dtype=int), np.ones((3, 4), dtype=int))


# ---------------------------------------------------------------------------------------------------------------
# Rand error over thresholds
# ---------------------------------------------------------------------------------------------------------------


def test_rand_error_picks_best_threshold():
    cells = np.array([[True, True, False, True, True]])
    prob = np.array([[0.1, 0.6, 0.9, 0.1, 0.1]])  # cell prob 0.9, 0.4, 0.1, 0.9, 0.9
    # t = 0.0: all one segment -> merge 0.5, error 1/3; t = 0.1: 0.1 is not > 0.1, segments match -> error 0
    assert rand_error(prob, cells) == pytest.approx((0.0, 1.0, 1.0, 0.1))


def test_rand_error_instance_labels_vs_mask():
    prob = np.zeros((1, 4))  # everything predicted cell: one segment for t < 1
    # instance labels: two touching cells 1, 2 -> sum n^2 = 8, true 8, pred 16 -> error 1/3
    # (t = 1.0, all singletons: sum n^2 = 4, true 8, pred 4 -> also 1/3; the first minimum wins)
    assert rand_error(prob, np.array([[1, 1, 2, 2]])) == pytest.approx((1 / 3, 1.0, 0.5, 0.0))
    # the same pixels as a mask form one 4-connected cell: perfect at t = 0
    assert rand_error(prob, np.ones((1, 4), dtype=bool)).error == pytest.approx(0.0)


def test_rand_error_segments_are_4_connected():
    cells = np.array([[True, False], [False, True]])  # two diagonal cells: 2 segments with 4-connectivity
    prob = np.where(cells, 0.0, 1.0)
    assert rand_error(prob, cells).error == pytest.approx(0.0)
    assert rand_error(prob, np.array([[1, 0], [0, 1]])).error == pytest.approx(1 / 3)  # one instance, 2 segments


def test_rand_error_errors():
    with pytest.raises(ValueError, match="Rand error is undefined"):
        rand_error(np.zeros((3, 3)), np.zeros((3, 3), dtype=bool))
    with pytest.raises(TypeError, match="integer label image, got dtype float64"):
        rand_error(np.zeros((3, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="shape mismatch"):
        rand_error(np.zeros((3, 3)), np.ones((3, 4), dtype=bool))
    with pytest.raises(ValueError, match="NaN"):
        rand_error(np.full((3, 3), np.nan), np.ones((3, 3), dtype=bool))


# ---------------------------------------------------------------------------------------------------------------
# Pixel error
# ---------------------------------------------------------------------------------------------------------------


def test_pixel_error_perfect_prediction_is_zero():
    cells = _one_cell()
    scores = pixel_error((~cells).astype(np.float32), cells)
    assert scores == pytest.approx((0.0, 1.0, 0.0))


def test_pixel_error_hand_case():
    cells = np.array([[True, False, True, True]])
    prob = np.array([[0.05, 0.35, 0.75, 0.95]])  # cell prob 0.95, 0.65, 0.25, 0.05
    # F = 2 TP / (|true| + |pred|), |true| = 3
    # t = 0.0:      pred all 4  -> TP 3 -> 6/7   (maximum)
    # t = 0.1, 0.2: pred 3      -> TP 2 -> 4/6
    # t = 0.3..0.6: pred 2      -> TP 1 -> 2/5
    # t = 0.7..0.9: pred 1      -> TP 1 -> 2/4
    # t = 1.0:      pred 0      -> 0
    assert pixel_error(prob, cells) == pytest.approx((1 / 7, 6 / 7, 0.0))
    assert pixel_error(prob, cells, thresholds=[0.5, 0.8]) == pytest.approx((0.5, 0.5, 0.8))


def test_pixel_error_cells_are_positive_class():
    cells = np.array([[True, True, True, False]])
    prob = np.array([[0.0, 0.0, 0.0, 0.0]])  # membrane pixel missed: F(cells) = 6/7, F(membrane) would be 0
    assert pixel_error(prob, cells, thresholds=[0.5]).f_score == pytest.approx(6 / 7)


def test_pixel_error_errors():
    cells = np.ones((4, 4), dtype=bool)
    with pytest.raises(ValueError, match=r"shape mismatch: membrane_prob \(4, 5\) vs true_cells \(4, 4\)"):
        pixel_error(np.zeros((4, 5)), cells)
    with_nan = np.zeros((4, 4))
    with_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="membrane_prob contains 1 NaN"):
        pixel_error(with_nan, cells)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*got range \[0.0, 255.0\]"):
        pixel_error(np.full((4, 4), 255.0) * np.eye(4), cells)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*got range \[-0.5, -0.5\]"):
        pixel_error(np.full((4, 4), -0.5), cells)
    with pytest.raises(TypeError, match="true_cells must be a bool mask, got dtype uint8"):
        pixel_error(np.zeros((4, 4)), np.full((4, 4), 255, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"thresholds must be finite values in \[0, 1\]"):
        pixel_error(np.zeros((4, 4)), cells, thresholds=[0.5, 1.5])
    with pytest.raises(ValueError, match="thresholds must be a non-empty 1-D sequence"):
        pixel_error(np.zeros((4, 4)), cells, thresholds=[])
    with pytest.raises(ValueError, match=r"membrane_prob must be a 2-D \(H, W\) array, got shape \(4,\)"):
        pixel_error(np.zeros(4), np.ones(4, dtype=bool))


# ---------------------------------------------------------------------------------------------------------------
# Warping error
# ---------------------------------------------------------------------------------------------------------------


def test_simple_point_table_hand_cases():
    table = _simple_point_table()
    # neighbour bits: 0 NW, 1 N, 2 NE, 3 W, 4 E, 5 SW, 6 S, 7 SE
    assert not table[0]  # isolated pixel: flipping deletes or creates an object
    assert not table[255]  # interior pixel: flipping creates or fills a hole
    assert table[1 << 3]  # end of a line (W only): simple
    assert not table[(1 << 3) | (1 << 4)]  # middle of a line (W and E): removal splits it
    assert not table[1 << 0]  # only a diagonal (NW) neighbour: not 4-connected to it
    assert table[(1 << 0) | (1 << 1) | (1 << 3)]  # convex corner (NW, N, W): simple
    assert table.shape == (256,) and not table.flags.writeable


def test_warping_error_perfect_prediction_is_zero():
    cells = np.ones((12, 12), dtype=bool)
    cells[:, 5] = False
    cells[6, :] = False  # four cells
    prob = (~cells).astype(np.float64)
    before = cells.copy()
    assert warping_error(prob, cells) == (0.0, 0, 0, 0.0)
    np.testing.assert_array_equal(cells, before)  # the input is not warped in place


@pytest.mark.parametrize("cross", [False, True])
def test_warping_error_membrane_shifted_by_one_pixel_is_zero(cross):
    cells = np.ones((12, 12), dtype=bool)
    cells[:, 4] = False
    prob = np.zeros((12, 12))
    prob[:, 5] = 1.0  # the membrane one pixel to the right: same topology
    if cross:
        cells[6, :] = False
        prob[7, :] = 1.0
    assert pixel_error(prob, cells).error > 0  # the pixels disagree ...
    assert warping_error(prob, cells) == (0.0, 0, 0, 0.0)  # ... the topology does not


def test_warping_error_merger_through_one_pixel_gap():
    cells = np.ones((6, 7), dtype=bool)
    cells[:, 3:5] = False  # two cells, a membrane two pixels thick
    prob = (~cells).astype(np.float64)
    prob[2, 3:5] = 0.0  # one-pixel-high gap across the membrane joins the cells
    # warping fills one gap pixel from the left cell; the other would merge the cells: 1 merger pixel / 42
    assert warping_error(prob, cells) == pytest.approx((1 / 42, 0, 1, 0.0))


@pytest.mark.parametrize(("width", "n_split"), [(1, 1), (2, 2)])
def test_warping_error_split_by_false_membrane(width, n_split):
    cells = _one_cell()  # one 8x8 cell in a 10x10 image
    prob = (~cells).astype(np.float64)
    prob[1:-1, 4 : 4 + width] = 1.0  # a false membrane line across the cell
    # warping shrinks the line to a 1-pixel bridge of `width` pixels, each a cut point: a split pixel / 100
    assert warping_error(prob, cells) == pytest.approx((n_split / 100, n_split, 0, 0.0))


def test_warping_error_cut_through_ring_is_not_a_split():
    cells = _one_cell(11, 11)
    cells[4:7, 4:7] = False  # a ring-shaped cell around a membrane hole
    prob = (~cells).astype(np.float64)
    prob[1:4, 5] = 1.0  # false membrane across the top of the ring, from the border to the hole
    # the last bridge pixel is not simple (its flip joins the hole to the outside background) and locally its
    # left and right neighbours look separated, but the ring stays one object without it: a hole deletion,
    # which this variant does not count (Fiji relabels the whole image to decide)
    assert warping_error(prob, cells) == (0.0, 0, 0, 0.0)


def test_warping_error_skips_thresholds_without_cell_pixels():
    cells = _one_cell()
    prob = np.where(cells, 0.5, 1.0)  # cell prob 0.5 inside the cell, 0 on the membrane
    prob[1:-1, 5] = 1.0  # false membrane: 1 split pixel at t = 0.0 .. 0.4
    # t = 0.5 .. 0.9 leave no cell pixel; counted, they would score 0 (only an object deletion remains)
    assert warping_error(prob, cells) == pytest.approx((0.01, 1, 0, 0.0))
    assert warping_error(prob, cells, thresholds=[0.3, 0.6]).threshold == 0.3


def test_warping_error_errors():
    cells = _one_cell()
    with pytest.raises(ValueError, match="every threshold .* leaves no predicted cell pixel"):
        warping_error(np.full((10, 10), 0.5), cells)  # all cell below 0.5, all membrane from 0.5
    with pytest.raises(ValueError, match=r"membrane_prob must be a 2-D \(H, W\) array, got shape \(2, 10, 10\)"):
        warping_error(np.zeros((2, 10, 10)), np.stack([cells, cells]))
    with pytest.raises(TypeError, match="true_cells must be a bool mask, got dtype int64"):
        warping_error(np.zeros((10, 10)), cells.astype(np.int64))
    with pytest.raises(ValueError, match="shape mismatch"):
        warping_error(np.zeros((10, 11)), cells)
    with pytest.raises(ValueError, match="NaN"):
        warping_error(np.full((10, 10), np.nan), cells)


# ---------------------------------------------------------------------------------------------------------------
# IoU, Dice, SEG
# ---------------------------------------------------------------------------------------------------------------


def test_iou_and_dice_hand_case():
    pred = np.array([[True, True, False], [False, False, False]])
    true = np.array([[True, False, False], [True, False, False]])
    # intersection 1, union 3, sizes 2 + 2
    assert iou(pred, true) == pytest.approx(1 / 3)
    assert dice(pred, true) == pytest.approx(2 * 1 / 4)


def test_iou_and_dice_empty_masks():
    empty = np.zeros((3, 3), dtype=bool)
    assert iou(empty, empty) == 1.0 and dice(empty, empty) == 1.0  # documented: both empty is agreement
    full = np.ones((3, 3), dtype=bool)
    assert iou(full, empty) == 0.0 and dice(empty, full) == 0.0


def test_iou_and_dice_errors():
    with pytest.raises(TypeError, match="pred_mask must be a bool mask, got dtype int64"):
        iou(np.ones((2, 2), dtype=np.int64), np.ones((2, 2), dtype=bool))
    with pytest.raises(ValueError, match=r"shape mismatch: pred_mask \(2, 2\) vs true_mask \(2, 3\)"):
        dice(np.ones((2, 2), dtype=bool), np.ones((2, 3), dtype=bool))


def test_seg_score_hand_case_with_partial_ground_truth():
    true = np.array([5, 5, 5, 5, 0, 0, 2, 2, 2, 2, 9, 9, 0, 0, 0]).reshape(3, 5)
    pred = np.array([7, 7, 7, 0, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 11]).reshape(3, 5)
    scores = seg_score(pred, true)
    # GT 2 (4 px): pred 8 and 9 cover exactly half each, not more -> 0
    # GT 5 (4 px): pred 7 covers 3 > 2; |7| = 5 including 2 px of unannotated background; J = 3 / (4+5-3) = 0.5
    # GT 9 (2 px): pred 10 covers both, |10| = 2 -> J = 1
    # pred 11 lies only on unannotated pixels (partial GT): ignored
    np.testing.assert_allclose(scores.per_object, [0.0, 0.5, 1.0])  # ascending GT label order 2, 5, 9
    assert scores.mean_jaccard == pytest.approx(0.5)
    assert scores.n_objects == 3


def test_seg_score_perfect_and_background_only_prediction():
    true = np.array([[1, 1, 0], [0, 2, 2]])
    assert seg_score(true * 3, true).mean_jaccard == pytest.approx(1.0)  # ids need not agree
    assert seg_score(np.zeros_like(true), true).mean_jaccard == 0.0


def test_seg_score_errors():
    with pytest.raises(ValueError, match="SEG is undefined: true_instances has no object"):
        seg_score(np.ones((3, 3), dtype=int), np.zeros((3, 3), dtype=int))
    with pytest.raises(TypeError, match="pred_instances must be an integer label image, got dtype float32"):
        seg_score(np.ones((3, 3), dtype=np.float32), np.ones((3, 3), dtype=int))
    with pytest.raises(ValueError, match="true_instances must have labels >= 0.*got minimum -1"):
        seg_score(np.ones((3, 3), dtype=int), -np.ones((3, 3), dtype=int))
    with pytest.raises(ValueError, match="shape mismatch"):
        seg_score(np.ones((3, 3), dtype=int), np.ones((3, 2), dtype=int))


# ---------------------------------------------------------------------------------------------------------------
# Real data (skipped where ../shared/data is absent)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_isbi_ground_truth_against_itself():
    if not ISBI_LABEL.exists():
        pytest.skip(f"ISBI 2012 labels not found at {ISBI_LABEL}")
    from skimage.io import imread

    labels = imread(ISBI_LABEL)
    cells = labels == 255  # 255 = cell interior, 0 = membrane
    perfect = (~cells).astype(np.float32)
    assert pixel_error(perfect, cells).error == 0.0
    assert rand_error(perfect, cells).error == pytest.approx(0.0)
    assert warping_error(perfect, cells).error == 0.0
    membrane = ~cells
    assert iou(membrane, membrane) == 1.0 and dice(membrane, membrane) == 1.0
    instances, _ = ndimage.label(cells)
    assert seg_score(instances, instances).mean_jaccard == pytest.approx(1.0)

    rng = np.random.default_rng(0)  # a plausible imperfect prediction: blurred, noisy membrane map
    blurred = np.clip(ndimage.gaussian_filter(perfect, 2.0) * 1.5 + rng.normal(0.0, 0.15, cells.shape), 0.0, 1.0)
    scores = warping_error(blurred, cells)  # runs in well under a second (timed outside the test suite)
    assert 0.0 < scores.error < 0.01
    assert scores.splits + scores.mergers == round(scores.error * cells.size)
