"""Training targets on two touching rectangles, by hand: classes, weights and distance of each target."""

from __future__ import annotations

import numpy as np
import pytest

from biounet.core.targets import (
    BOUNDARY_CLASS,
    IGNORE,
    boundary_band,
    cell_distance,
    class_frequencies,
    task_of,
    training_targets,
)


def _rectangles() -> np.ndarray:
    instances = np.zeros((12, 22), np.int32)
    instances[1:9, 1:11], instances[1:9, 11:21] = 1, 2  # two 8x10 rectangles touching along a column
    return instances


def _classes(instances: np.ndarray) -> np.ndarray:
    return (instances > 0).astype(np.int64)


def test_paper_target_cuts_the_contact_and_weights_it():
    instances = _rectangles()
    t = training_targets(_classes(instances), instances, num_classes=2, class_balance=False)
    assert (t.classes[1:9, 10] == 0).all() and (t.classes[1:9, 11] == 0).all()  # the cut: columns 10 and 11
    assert (t.classes[1:9, 1:10] == 1).all() and (t.classes[1:9, 12:21] == 1).all()
    # a gap pixel: d1 = 1 (to column 9), d2 = 2 (to column 12): w = 1 + 10 exp(-9 / 50)
    assert t.weights[4, 10] == pytest.approx(1 + 10 * np.exp(-9 / 50), rel=1e-6)
    assert t.weights[4, 10] >= 9
    assert t.weights[4, 5] == pytest.approx(1.0)  # inside a cell: no border term
    assert t.distance is None


def test_switches_are_independent():
    instances = _rectangles()
    classes = _classes(instances)
    no_border = training_targets(classes, instances, num_classes=2, w0=0.0)
    balanced = training_targets(classes, instances, num_classes=2, w0=0.0, class_balance=True)
    np.testing.assert_array_equal(no_border.weights, balanced.weights)
    cells = no_border.classes == 1
    f_cell = cells.mean()  # w_c = 1 / (2 f_c): counted after the cut
    assert no_border.weights[4, 5] == pytest.approx(1 / (2 * f_cell))
    flat = training_targets(classes, instances, num_classes=2, class_balance=False)
    assert flat.weights[4, 5] == 1.0 and flat.weights[4, 10] > 9


def test_boundary_target_bands_contacts_and_outlines():
    instances = _rectangles()
    t = training_targets(_classes(instances), instances, num_classes=3, target="boundary", boundary_px=1,
                         class_balance=False)
    # band of 1 px inside every outline and on both sides of the contact (columns 10 and 11)
    assert (t.classes[1, 1:21] == BOUNDARY_CLASS).all() and (t.classes[1:9, 10:12] == BOUNDARY_CLASS).all()
    assert (t.classes[2:8, 2:10] == 1).all() and (t.classes[2:8, 12:20] == 1).all()
    assert (t.classes[0] == 0).all()
    # border term between the interiors (columns 2-9 and 12-19): at column 10, d1 = 1, d2 = 2
    assert t.weights[4, 10] == pytest.approx(1 + 10 * np.exp(-9 / 50), rel=1e-6)


def test_distance_target_by_hand():
    instances = np.zeros((7, 7), np.int32)
    instances[1:6, 1:6] = 1  # one 5x5 cell: distances 1, 2, 3 from the outline inwards
    t = training_targets(_classes(instances), instances, num_classes=2, target="distance")
    np.testing.assert_allclose(t.distance[3], [0, 1 / 3, 2 / 3, 1, 2 / 3, 1 / 3, 0], rtol=1e-6)
    np.testing.assert_array_equal(t.classes, _classes(instances))


def test_ignored_pixels_keep_ignore_and_weight_zero():
    instances = _rectangles()
    classes = _classes(instances)
    classes[0, :5] = IGNORE
    for target in ("paper", "boundary", "distance"):
        t = training_targets(classes, instances, num_classes=3 if target == "boundary" else 2, target=target)
        assert (t.classes[0, :5] == IGNORE).all() and (t.weights[0, :5] == 0).all()


def test_membranes_keep_their_classes():
    instances = _rectangles()
    membranes = (instances == 0).astype(np.int64)  # ISBI-like: class 1 between the cells
    assert task_of(membranes, instances) == "membranes"
    t = training_targets(membranes, instances, num_classes=2, target="boundary")
    np.testing.assert_array_equal(t.classes, membranes)


def test_helpers():
    assert boundary_band(np.array([[1, 1, 1, 1, 2, 2, 2, 2]]), boundary_px=1).tolist() == [[0, 0, 0, 1, 1, 0, 0, 0]]
    assert cell_distance(np.zeros((3, 3), np.int32)).max() == 0
    np.testing.assert_allclose(class_frequencies([np.array([[0, 1, IGNORE]])], 2), [0.5, 0.5])
    with pytest.raises(ValueError, match="target must be one of"):
        training_targets(np.zeros((2, 2), np.int64), np.zeros((2, 2), np.int32), num_classes=2, target="x")
