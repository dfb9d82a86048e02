"""Instances from predictions: a perfect prediction (the training target itself) gives the cells back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from biounet.core.targets import training_targets
from biounet.evaluation import metrics
from biounet.inference.instances import (
    InstanceParams,
    cell_foreground,
    fill_gaps,
    instances_from_boundary,
    instances_from_foreground,
    instances_from_labels,
    instances_from_probabilities,
    split_seeds,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _disc(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2


def _isolated_and_touching():
    isolated = np.zeros((40, 60), np.int32)
    isolated[_disc(isolated.shape, (20, 15), 9)] = 1
    isolated[_disc(isolated.shape, (20, 45), 9)] = 2
    touching = np.zeros((20, 30), np.int32)
    touching[:, :15], touching[:, 15:] = 1, 2  # a contact that ends at the image border
    return isolated, touching


def _perfect_prediction(instances, target):
    num_classes = 3 if target == "boundary" else 2
    t = training_targets((instances > 0).astype(np.int64), instances, num_classes=num_classes, target=target)
    probs = np.stack([(t.classes == k).astype(np.float32) for k in range(num_classes)])
    return probs, t


@pytest.mark.parametrize("target", ["paper", "boundary", "distance"])
@pytest.mark.parametrize("case", [0, 1], ids=["isolated", "touching"])
def test_perfect_prediction_gives_the_cells_back(target, case):
    instances = _isolated_and_touching()[case]
    probs, t = _perfect_prediction(instances, target)
    if target == "paper":
        assert (probs.argmax(0) > 0).sum() < (instances > 0).sum() or case == 0  # the contact was cut...
    predicted = instances_from_probabilities(probs, target=target, params=InstanceParams(min_size_px=0),
                                             distance=t.distance)
    assert metrics.seg_score(predicted, instances).mean_jaccard == 1.0  # ...and given back
    assert metrics.iou(predicted > 0, instances > 0) == 1.0


def test_touching_rectangles_inside_the_image():
    # where a contact ends in background, the background pixel beside its end is filled too (documented)
    instances = np.zeros((12, 22), np.int32)
    instances[1:9, 1:11], instances[1:9, 11:21] = 1, 2
    probs, _ = _perfect_prediction(instances, "paper")
    predicted = instances_from_probabilities(probs, params=InstanceParams(min_size_px=0))
    assert predicted.max() == 2
    assert metrics.seg_score(predicted, instances).mean_jaccard == pytest.approx(80 / 82)  # 2 px at the ends
    boundary, _ = _perfect_prediction(instances, "boundary")
    predicted = instances_from_probabilities(boundary, target="boundary", params=InstanceParams(min_size_px=0))
    assert metrics.seg_score(predicted, instances).mean_jaccard == 1.0


def test_nothing_grows_into_true_background():
    foreground = np.zeros((10, 20), bool)
    foreground[2:8, 2:7] = True
    foreground[2:8, 10:15] = True  # 3 px of true background between them: no contact
    np.testing.assert_array_equal(instances_from_foreground(foreground, min_size_px=0) > 0, foreground)


def test_fill_gaps_returns_the_cut_contact():
    cut = np.array([[1, 1, 0, 0, 2, 2]] * 3, dtype=np.int32)
    np.testing.assert_array_equal(fill_gaps(cut), [[1, 1, 1, 2, 2, 2]] * 3)


def test_instances_drop_small_and_watershed_splits_touching_discs():
    foreground = _disc((40, 60), (20, 18), 10) | _disc((40, 60), (20, 35), 10)
    foreground[0, 0] = True  # a one-pixel speck
    assert instances_from_foreground(foreground).max() == 1
    assert instances_from_foreground(foreground, watershed=True).max() == 2
    with pytest.raises(TypeError, match="bool"):
        instances_from_foreground(foreground.astype(np.uint8))


def test_labels_with_a_boundary_class_are_split_by_it():
    labels = np.array([[1, 1, 2, 2, 1, 1]] * 4)
    assert instances_from_labels(labels, params=InstanceParams(min_size_px=0)).max() == 2
    assert instances_from_labels(labels, target="paper", params=InstanceParams(min_size_px=0)).max() == 1


@pytest.mark.shared_data
def test_dic_hela_gold_truth_survives_the_cut():
    tifffile = pytest.importorskip("tifffile")
    masks = sorted((SHARED / "DIC-C2DH-HeLa" / "01_GT" / "SEG").glob("man_seg*.tif"))
    if not masks:
        pytest.skip("../shared/data/DIC-C2DH-HeLa is not available")
    for path in masks[:3]:
        truth = tifffile.imread(path).astype(np.int32)
        probs, _ = _perfect_prediction(truth, "paper")
        predicted = instances_from_probabilities(probs, params=InstanceParams(min_size_px=0))
        assert metrics.seg_score(predicted, truth).mean_jaccard > 0.995


def _discs(centres: list[tuple[int, int]], radius: float, shape: tuple[int, int] = (48, 80)) -> np.ndarray:
    rows, cols = np.indices(shape)
    labels = np.zeros(shape, np.int32)
    for index, (row, col) in enumerate(centres, start=1):
        labels[(rows - row) ** 2 + (cols - col) ** 2 <= radius**2] = index
    return labels


def test_split_seeds_cuts_two_overlapping_discs_at_their_neck():
    pair = _discs([(24, 25), (24, 40)], 9.0) > 0            # one seed: two discs whose interiors overlap
    assert ndimage.label(pair)[1] == 1
    parts = split_seeds(pair.astype(np.int32), 0.2)
    assert parts.max() == 2
    assert parts[24, 25] != parts[24, 40] and parts[24, 25] > 0 and parts[24, 40] > 0
    assert np.array_equal(parts > 0, pair)                  # every seed pixel kept, none added
    assert np.array_equal(split_seeds(pair.astype(np.int32), 0.0), pair.astype(np.int32))


def test_split_seeds_keeps_discs_ellipses_and_separate_seeds_whole():
    rows, cols = np.indices((48, 80))
    ellipse = ((rows - 24) / 8.0) ** 2 + ((cols - 40) / 20.0) ** 2 <= 1    # 2.5:1, one ridge, one maximum
    assert split_seeds(ellipse.astype(np.int32), 0.2).max() == 1
    seeds = _discs([(12, 12), (12, 40), (36, 60)], 6.0)   # three seeds apart: three labels, one per seed
    parts = split_seeds(seeds, 0.3)
    for index in (1, 2, 3):
        assert np.unique(parts[seeds == index]).size == 1   # a part never spans two seeds, a seed stays whole
    assert np.unique(parts[parts > 0]).size == 3


def test_boundary_instances_split_nuclei_whose_interiors_touch():
    truth = _discs([(24, 25), (24, 40)], 9.0)
    interior = (truth > 0).astype(np.float32)               # the interiors join: one seed without the cut
    boundary = np.zeros_like(interior)
    assert instances_from_boundary(interior, boundary, min_size_px=0).max() == 1
    cut = instances_from_boundary(interior, boundary, min_size_px=0, split_prominence=0.2)
    assert cut.max() == 2
    assert metrics.seg_score(cut, truth).mean_jaccard > 0.9


def test_boundary_instances_flood_the_arg_max_band_to_the_nearest_seed():
    """Two seeds at columns 2 and 17 of a 20-px strip of boundary band: the band is split at its middle, whatever
    its boundary probability (higher near the right seed) says; a pixel where the background is the most probable
    class (0.45 against 0.30 and 0.25) is not foreground, though interior + boundary > 0.5."""
    interior = np.zeros((5, 20), np.float32)
    boundary = np.tile(np.linspace(0.55, 0.95, 20, dtype=np.float32), (5, 1))   # band: rising to the right
    interior[:, 1:4], interior[:, 16:19] = 0.9, 0.9
    boundary[:, 1:4], boundary[:, 16:19] = 0.05, 0.05
    boundary[0, 9], interior[0, 9] = 0.25, 0.30                                   # background 0.45: the top class
    labels = instances_from_boundary(interior, boundary, min_size_px=0)
    assert labels.max() == 2 and labels[0, 9] == 0
    assert (labels[1:, :10] == labels[2, 2]).all() and (labels[1:, 10:] == labels[2, 17]).all()


def _disc_with_halo() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A disc of radius 9 (the truth) predicted with a 2-px halo outside it where the boundary class (0.40) edges out
    the background (0.35): what a class-balanced network's probabilities look like at a cell's outline."""
    rows, cols = np.indices((40, 40))
    radius = np.hypot(rows - 20, cols - 20)
    truth = (radius <= 9).astype(np.int32)
    interior = np.where(radius <= 7, 0.9, np.where(radius <= 11, 0.25, 0.0)).astype(np.float32)
    boundary = np.where(radius <= 7, 0.05, np.where(radius <= 9, 0.7, np.where(radius <= 11, 0.4, 0.0)))
    return interior, boundary.astype(np.float32), truth


def test_a_background_bias_takes_back_the_halo_the_arg_max_draws():
    interior, boundary, truth = _disc_with_halo()
    wide = instances_from_boundary(interior, boundary, min_size_px=0)
    tight = instances_from_boundary(interior, boundary, min_size_px=0, background_bias=2.0)
    assert (wide > 0).sum() > 1.4 * (truth > 0).sum()  # the halo (0.40 > 0.35) is the arg-max's
    np.testing.assert_array_equal(tight > 0, truth > 0)  # 0.40 < 2 * 0.35: the outline is the truth's
    probs = np.stack([1.0 - interior - boundary, interior, boundary])
    np.testing.assert_array_equal(cell_foreground(probs, 2.0), truth > 0)
    np.testing.assert_array_equal(cell_foreground(probs), probs.argmax(0) > 0)


@pytest.mark.parametrize("bias", [0.0, -1.0, float("nan"), float("inf")])
def test_background_bias_must_be_a_positive_number(bias):
    with pytest.raises(ValueError, match="background_bias"):
        InstanceParams(background_bias=bias)


def test_split_prominence_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="split_prominence"):
        InstanceParams(split_prominence=1.0)
