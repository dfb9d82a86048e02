"""Tests for biounet.core.weights: golden values, the fast border term against brute force, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from biounet.core.weights import (
    BORDER_TRUNCATION,
    border_weights,
    class_balance_weights,
    separation_borders,
    weight_map,
    weight_map_from_classes,
)


def two_rectangles() -> np.ndarray:
    """12 x 20 image: cell 1 in rows 2..9, cols 2..7; cell 2 in rows 2..9, cols 12..17; a 4 px gap (cols 8..11)."""
    cells = np.zeros((12, 20), np.int32)
    cells[2:10, 2:8] = 1
    cells[2:10, 12:18] = 2
    return cells


def random_cells(shape: tuple[int, int], count: int, rng: np.random.Generator, radius=(3.0, 8.0)) -> np.ndarray:
    cells = np.zeros(shape, np.int32)
    rows, cols = np.indices(shape)
    for cell in range(1, count + 1):
        center = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        r = rng.uniform(*radius)
        cells[(rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= r * r] = cell
    return cells


def brute_force_border(instances: np.ndarray, w0: float, sigma_px: float) -> np.ndarray:
    """Eq. 2's border term from one full-image distance transform per cell (the slow, obvious way)."""
    ids = [k for k in np.unique(instances) if k > 0]
    dists = np.stack([ndimage.distance_transform_edt(instances != k) for k in ids])
    d1, d2 = np.sort(dists, axis=0)[:2]
    term = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma_px**2))
    return np.where(instances == 0, term, 0.0)


# --- golden values ---------------------------------------------------------------------------------------------


def test_weight_map_golden_gap_pixel():
    cells = two_rectangles()
    w = weight_map(cells, w0=10.0, sigma_px=5.0)
    # 96 cell pixels of 240: f_cell = 0.4, f_bg = 0.6 -> w_c = 1 / (2 f) = 1.25 (cells), 5/6 (background)
    w_bg, w_cell = 1 / (2 * 0.6), 1 / (2 * 0.4)
    # gap pixel (5, 9): nearest cell 1 pixel at col 7 (d1 = 2), cell 2 at col 12 (d2 = 3): d1 + d2 = 5
    assert w[5, 9] == pytest.approx(w_bg + 10 * math.exp(-25 / 50), rel=1e-6)  # 0.8333 + 6.0653
    # outside pixel (5, 0): cell 1 at col 2 (d1 = 2), cell 2 at col 12 (d2 = 12): d1 + d2 = 14
    assert w[5, 0] == pytest.approx(w_bg + 10 * math.exp(-196 / 50), rel=1e-6)
    # diagonal pixel (0, 0): cell 1 corner (2, 2) at sqrt(8), cell 2 corner (2, 12) at sqrt(148)
    assert w[0, 0] == pytest.approx(w_bg + 10 * math.exp(-((8**0.5 + 148**0.5) ** 2) / 50), rel=1e-6)
    assert w[5, 5] == pytest.approx(w_cell)  # inside a cell: class weight only
    assert w.dtype == np.float32


def test_class_balance_weights_golden_and_mean_one():
    classes = np.array([[0, 0, 0, 1], [0, 0, 0, 2]])
    w = class_balance_weights(classes, num_classes=3)
    # f = (6, 1, 1) / 8, three classes present: w_c = 8 / (3 n_c)
    np.testing.assert_allclose(w, np.where(classes == 0, 8 / 18, 8 / 3), rtol=1e-6)
    assert w.mean() == pytest.approx(1.0)


def test_class_balance_weights_absent_class_and_ignore():
    classes = np.array([[0, 0, 255, 1]])
    w = class_balance_weights(classes, num_classes=4, ignore_index=255)  # classes 2, 3 absent
    # labelled pixels: two of class 0, one of class 1 -> K' = 2, w_0 = 3 / 4, w_1 = 3 / 2
    np.testing.assert_allclose(w, [[0.75, 0.75, 0.0, 1.5]])
    assert np.all(class_balance_weights(np.full((2, 2), 255), num_classes=2, ignore_index=255) == 0)


def test_class_balance_weights_dataset_frequencies():
    classes = np.array([[0, 1, 1, 1]])
    # data set counts 900 : 100 (only relative values matter) -> w_0 = 1 / (2 * 0.9), w_1 = 1 / (2 * 0.1)
    w = class_balance_weights(classes, num_classes=2, frequencies=[900, 100])
    np.testing.assert_allclose(w, [[1 / 1.8, 5.0, 5.0, 5.0]], rtol=1e-6)


# --- separation borders ----------------------------------------------------------------------------------------


def test_separation_borders_splits_touching_cells():
    cells = np.zeros((10, 16), np.int32)
    cells[2:8, 2:8] = 1
    cells[2:8, 8:14] = 2  # touches cell 1 along cols 7 | 8
    separated = separation_borders(cells)
    expected = cells.copy()
    expected[2:8, 7:9] = 0  # one column removed on each side of the contact
    np.testing.assert_array_equal(separated, expected)
    _, count = ndimage.label(separated > 0, structure=np.ones((3, 3)))
    assert count == 2  # separate even for 8-connectivity


def test_separation_borders_keeps_separate_cells_and_dtype():
    cells = two_rectangles().astype(np.uint16)
    separated = separation_borders(cells)
    np.testing.assert_array_equal(separated, cells)
    assert separated.dtype == np.uint16
    assert separated is not cells


def test_separation_borders_no_contact_left():
    cells = random_cells((48, 48), 25, np.random.default_rng(1))
    separated = separation_borders(cells)
    largest = ndimage.maximum_filter(separated, size=3)
    smallest = ndimage.minimum_filter(np.where(separated > 0, separated, 10**6), size=3)
    cell = separated > 0
    assert np.all(largest[cell] == separated[cell]) and np.all(smallest[cell] == separated[cell])
    assert set(np.unique(separated)) <= set(np.unique(cells))


# --- border term -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma_px", [2.0, 5.0])
def test_border_weights_equal_brute_force(sigma_px):
    cells = separation_borders(random_cells((64, 72), 10, np.random.default_rng(7)))
    fast = border_weights(cells, w0=10.0, sigma_px=sigma_px)
    exact = brute_force_border(cells, 10.0, sigma_px)
    kept = exact > 10.0 * BORDER_TRUNCATION
    np.testing.assert_allclose(fast[kept], exact[kept], rtol=1e-6)
    assert np.all(np.abs(fast - exact) <= 10.0 * BORDER_TRUNCATION)
    assert np.all(fast[cells > 0] == 0)


def test_border_weights_fewer_than_two_cells_is_zero():
    one = np.zeros((8, 8), np.int64)
    one[2:4, 2:4] = 5
    assert not border_weights(one).any()
    assert not border_weights(np.zeros((4, 4), np.int64)).any()
    assert not border_weights(two_rectangles(), w0=0.0).any()


def test_border_weights_arbitrary_ids():
    cells = two_rectangles().astype(np.int64)
    relabelled = np.where(cells == 2, 10**9, cells)  # big, non-consecutive id
    np.testing.assert_array_equal(border_weights(relabelled), border_weights(cells))


# --- weight maps -----------------------------------------------------------------------------------------------


def test_weight_map_ignore_mask():
    cells = two_rectangles()
    ignore = np.zeros(cells.shape, bool)
    ignore[:, :10] = True
    w = weight_map(cells, ignore_mask=ignore)
    assert np.all(w[ignore] == 0)
    # remaining pixels: 48 cell, 72 background -> f = 0.4 / 0.6 as before
    assert w[0, 19] == pytest.approx(1 / 1.2 + border_weights(cells)[0, 19], rel=1e-6)


def test_weight_map_from_classes_multiclass():
    cells = two_rectangles()
    classes = np.where(cells == 2, 2, cells).astype(np.int8)  # the cells are of two classes
    w = weight_map_from_classes(classes, cells, num_classes=3)
    border = border_weights(cells)
    np.testing.assert_allclose(w, class_balance_weights(classes, num_classes=3) + border, rtol=1e-6)
    assert w[5, 9] > w[5, 5]


# --- errors ----------------------------------------------------------------------------------------------------


def test_errors():
    cells = two_rectangles()
    with pytest.raises(TypeError, match="integer array, got dtype float64"):
        weight_map(cells.astype(float))
    with pytest.raises(ValueError, match=r"2-D \(H, W\), got shape \(1, 12, 20\)"):
        border_weights(cells[None])
    with pytest.raises(ValueError, match="sigma_px must be finite and > 0, got 0"):
        border_weights(cells, sigma_px=0)
    with pytest.raises(ValueError, match="w0 must be finite and >= 0, got -1"):
        border_weights(cells, w0=-1)
    with pytest.raises(ValueError, match="instances must be >= 0"):
        separation_borders(-cells)
    with pytest.raises(ValueError, match=r"classes must be in \[0, 2\)"):
        class_balance_weights(np.array([[0, 3]]), num_classes=2)
    with pytest.raises(ValueError, match="frequencies must have length num_classes=2"):
        class_balance_weights(np.array([[0, 1]]), num_classes=2, frequencies=[1.0])
    with pytest.raises(ValueError, match=r"frequencies are 0 for classes \[1\]"):
        class_balance_weights(np.array([[0, 1]]), num_classes=2, frequencies=[1.0, 0.0])
    with pytest.raises(ValueError, match="must be finite, >= 0"):
        class_balance_weights(np.array([[0, 1]]), num_classes=2, frequencies=[1.0, -1.0])
    with pytest.raises(TypeError, match="ignore_mask must be a boolean"):
        weight_map(cells, ignore_mask=np.zeros(cells.shape, int))
    with pytest.raises(ValueError, match="ignore_mask .* must have the same shape"):
        weight_map(cells, ignore_mask=np.zeros((3, 3), bool))
    with pytest.raises(ValueError, match="must have the same shape"):
        weight_map_from_classes(cells, cells[:5], num_classes=3)
