"""Validation measures for cells and the post-processing the training run chooses with them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage

from biounet.core.samples import IGNORE, Sample
from biounet.evaluation.validation import bias_param_grid, cell_scores, choose_instance_params, split_param_grid
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


def _touching_nuclei() -> tuple[np.ndarray, Sample]:
    """Two pairs of overlapping discs (annotated as four nuclei) whose predicted interiors join through a neck, and
    an isolated disc; a perfect boundary band around the union."""
    rows, cols = np.indices((64, 96))
    instances = np.zeros((64, 96), np.int32)
    for index, (row, col) in enumerate(((20, 20), (20, 36), (44, 56), (44, 72), (16, 80)), start=1):
        instances[((rows - row) ** 2 + (cols - col) ** 2 <= 81) & (instances == 0)] = index
    union = instances > 0
    interior = ndimage.binary_erosion(union, iterations=2)
    probs = np.stack([~union, interior, union & ~interior]).astype(np.float32)
    classes = np.where(interior, 1, np.where(union, 2, 0)).astype(np.int64)
    return probs, Sample("nuclei", np.zeros((64, 96, 1), np.float32), classes, instances)


def test_choice_cuts_seeds_where_touching_nuclei_merge_and_only_then():
    probs, sample = _touching_nuclei()
    params, _ = choose_instance_params([probs], [sample], target="boundary")
    assert params.split_prominence > 0
    uncut = cell_scores([probs], [sample], target="boundary", params=InstanceParams(min_size_px=16))
    cut = cell_scores([probs], [sample], target="boundary", params=params)
    assert cut["object_f1"] == 1.0 > uncut["object_f1"]
    apart, separate = _sample_with_fragments()  # nothing merged: no cut is chosen
    no_cut = np.stack([apart[0], apart[1], np.zeros_like(apart[1])])
    assert choose_instance_params([no_cut], [separate], target="boundary")[0].split_prominence == 0.0
    assert split_param_grid(params, "paper") == [] and split_param_grid(params, "boundary", dims=3) == []


def _nuclei_with_halos() -> tuple[np.ndarray, Sample]:
    """Three separate discs of radius 9 predicted as a class-balanced network draws them: each with a 2-px halo
    outside its outline where the boundary class (0.40) edges out the background (0.35)."""
    rows, cols = np.indices((48, 96))
    instances = np.zeros((48, 96), np.int32)
    radius = np.full((48, 96), np.inf)
    for index, col in enumerate((16, 48, 80), start=1):
        here = np.hypot(rows - 24, cols - col)
        instances[here <= 9] = index
        radius = np.minimum(radius, here)
    interior = np.where(radius <= 7, 0.9, np.where(radius <= 11, 0.25, 0.0))
    boundary = np.where(radius <= 7, 0.05, np.where(radius <= 9, 0.7, np.where(radius <= 11, 0.4, 0.0)))
    probs = np.stack([1.0 - interior - boundary, interior, boundary]).astype(np.float32)
    classes = np.where(radius <= 7, 1, np.where(radius <= 9, 2, 0)).astype(np.int64)
    return probs, Sample("nuclei", np.zeros((48, 96, 1), np.float32), classes, instances)


def test_choice_takes_back_the_halo_of_wide_cells_and_keeps_the_arg_max_where_it_is_right():
    probs, sample = _nuclei_with_halos()
    params, _ = choose_instance_params([probs], [sample], target="boundary")
    assert params.background_bias > 1.0
    wide = cell_scores([probs], [sample], target="boundary", params=replace(params, background_bias=1.0))
    assert cell_scores([probs], [sample], target="boundary", params=params)["seg"] > wide["seg"]
    exact, touching = _touching_nuclei()  # a perfect band: nothing to take back, the arg-max stays
    assert choose_instance_params([exact], [touching], target="boundary")[0].background_bias == 1.0
    assert bias_param_grid(params, "paper") == [] and bias_param_grid(params, "stardist") == []
    assert {p.background_bias for p in bias_param_grid(params, "distance")} > {2.0}
