"""Tests for label_kind="auto": guess_label_kind on Cellpose-, napari- and mask-style labels, and the pairs loader."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile

from biounet.data.checkpoint import load_checkpoint
from biounet.data.datasets import (
    AUTO_MIN_FEW_CELLS_IDS,
    AUTO_MIN_INSTANCE_IDS,
    LabelKindGuess,
    guess_label_kind,
    load_dataset,
)

SIZE = 64


def _cellpose_style(rng: np.random.Generator, n_cells: int = 20) -> np.ndarray:
    """uint16 ids 1..n_cells: Voronoi cells of random seeds cut to a disk round each seed, so neighbours touch."""
    seeds = rng.uniform(0, SIZE, size=(n_cells, 2))
    rows, cols = np.mgrid[:SIZE, :SIZE]
    distance = np.hypot(rows[..., None] - seeds[:, 0], cols[..., None] - seeds[:, 1])
    nearest = distance.argmin(axis=-1)
    labels = (nearest + 1).astype(np.uint16)
    labels[distance.min(axis=-1) > 9] = 0  # some background between cells (each cell stays convex: one region)
    return labels


def _napari_style(rng: np.random.Generator) -> np.ndarray:
    """int32 ids that are neither consecutive nor starting at 1: 16 separate squares on a 4x4 grid."""
    labels = np.zeros((SIZE, SIZE), dtype=np.int32)
    ids = rng.choice(np.arange(2, 100_000), size=16, replace=False)
    for index, label in enumerate(ids):
        row, col = divmod(index, 4)
        labels[row * 16 + 2:row * 16 + 13, col * 16 + 3:col * 16 + 14] = label
    return labels


def _disks(value: int, dtype: type = np.uint8) -> np.ndarray:
    """Four disjoint disks of one value on background 0."""
    rows, cols = np.mgrid[:SIZE, :SIZE]
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    for row, col in ((16, 16), (16, 48), (48, 16), (48, 48)):
        mask |= np.hypot(rows - row, cols - col) < 10
    return (mask * value).astype(dtype)


def _few_cells(rng: np.random.Generator, n_cells: int = 6, size: int = 96) -> np.ndarray:
    """uint16 ids 1..n_cells, each one rectangle (one region) in its own cell of a 3x3 grid, at a random offset."""
    labels = np.zeros((size, size), np.uint16)
    step = size // 3
    for label, slot in enumerate(rng.permutation(9)[:n_cells], start=1):
        row, col = divmod(int(slot), 3)
        top, left = row * step + int(rng.integers(1, 8)), col * step + int(rng.integers(1, 8))
        labels[top:top + int(rng.integers(12, 22)), left:left + int(rng.integers(12, 22))] = label
    return labels


def _three_class_semantic() -> np.ndarray:
    """Background 0, cell interior 1, cell boundary 2: each class is several regions (four cells)."""
    interior = _disks(1) > 0
    rows, cols = np.mgrid[:SIZE, :SIZE]
    labels = interior.astype(np.uint8)
    for row, col in ((16, 16), (16, 48), (48, 16), (48, 48)):
        ring = (np.hypot(rows - row, cols - col) >= 8) & (np.hypot(rows - row, cols - col) < 10)
        labels[ring] = 2
    return labels


# ---------------------------------------------------------------------------------------------------------------
# guess_label_kind
# ---------------------------------------------------------------------------------------------------------------


def test_cellpose_style_touching_cells_are_instances():
    rng = np.random.default_rng(0)
    labels = [_cellpose_style(rng) for _ in range(3)]
    assert labels[0].dtype == np.uint16 and labels[0].max() == 20
    touching = (labels[0][:, 1:] != labels[0][:, :-1]) & (labels[0][:, 1:] > 0) & (labels[0][:, :-1] > 0)
    assert touching.any()  # the fixture really has cells that touch
    guess = guess_label_kind(labels)
    assert guess == LabelKindGuess("instances", "up to 20 ids per image, 100% of them one connected region each")


def test_napari_style_non_sequential_ids_are_instances():
    guess = guess_label_kind([_napari_style(np.random.default_rng(1))])
    assert guess.kind == "instances"
    assert "up to 16 ids" in guess.reason


@pytest.mark.parametrize("value", [1, 255])
def test_binary_masks_are_classes(value):
    guess = guess_label_kind([_disks(value), np.zeros((SIZE, SIZE), np.uint8)])
    assert guess == LabelKindGuess("classes", f"binary masks, values {[0, value]}")


def test_mixed_0_1_and_0_255_masks_are_classes():
    assert guess_label_kind([_disks(1), _disks(255)]).kind == "classes"


def test_single_cell_image_does_not_hide_instances():
    # One image with a single cell has values {0, 1}, like a mask; the dataset as a whole is instances.
    one_cell = np.zeros((SIZE, SIZE), np.uint16)
    one_cell[10:20, 10:20] = 1
    assert guess_label_kind([one_cell, _cellpose_style(np.random.default_rng(2))]).kind == "instances"


def test_nearly_every_id_one_region_is_instances():
    labels = _napari_style(np.random.default_rng(3)).copy()
    labels[0:2, 60:64] = labels[2, 3]  # one of 16 ids also has a stray second region: 15/16 = 94% < 95%
    with pytest.raises(ValueError, match="94% of them one connected region"):
        guess_label_kind([labels])
    clean = [_napari_style(np.random.default_rng(seed)) for seed in range(4)]
    assert guess_label_kind([labels, *clean]).kind == "instances"  # 79 of 80 ids: 99%


def test_three_class_semantic_mask_is_ambiguous_with_hint():
    with pytest.raises(ValueError, match="cannot tell class ids from instance ids") as error:
        guess_label_kind([_three_class_semantic()])
    message = str(error.value)
    assert "--label-kind classes" in message and "--label-kind instances" in message
    assert "values [0, 1, 2]" in message


def test_few_ids_each_one_region_are_ambiguous():
    # Three classes that are one region each, or three cells: the values alone cannot say which.
    labels = np.zeros((SIZE, SIZE), np.uint8)
    labels[5:20, 5:20], labels[30:40, 30:40], labels[50:60, 5:60] = 1, 2, 3
    with pytest.raises(ValueError, match=f"instances need >= {AUTO_MIN_INSTANCE_IDS} ids"):
        guess_label_kind([labels])


def test_many_ids_in_many_regions_are_ambiguous():
    labels = (np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 12).astype(np.uint8)  # 11 ids in stripes
    with pytest.raises(ValueError, match="up to 11 ids per image, 0% of them"):
        guess_label_kind([labels])


def test_two_values_other_than_1_or_255_are_ambiguous():
    with pytest.raises(ValueError, match=r"values \[0, 2\]"):
        guess_label_kind([_disks(2)])


def test_a_few_cells_in_each_of_a_few_images_are_instances():
    # A biologist's first annotations: 4 masks, ids 1..6, every id one region in every image.
    labels = [_few_cells(np.random.default_rng(seed)) for seed in range(4)]
    assert all(np.array_equal(np.unique(image), np.arange(7)) for image in labels)
    assert guess_label_kind(labels) == LabelKindGuess(
        "instances", "24 ids in 4 images, up to 6 per image, every one a single connected region: a few cells per image")


def test_a_few_cells_in_one_image_stay_ambiguous():
    with pytest.raises(ValueError, match=f"or >= {AUTO_MIN_INSTANCE_IDS} ids in all images"):
        guess_label_kind([_few_cells(np.random.default_rng(0))])  # 6 ids: 6 cells or 6 classes


def test_few_values_one_region_each_across_images_stay_ambiguous():
    # Nucleus, cytoplasm and membrane of one cell per image: 3 values, one region each, in every image.
    labels = [_few_cells(np.random.default_rng(seed), n_cells=AUTO_MIN_FEW_CELLS_IDS - 1) for seed in range(5)]
    with pytest.raises(ValueError, match="cannot tell class ids from instance ids") as error:
        guess_label_kind(labels)
    assert "\n" not in str(error.value)  # the one-line refusal


def test_a_few_cells_with_an_id_in_two_pieces_stay_ambiguous():
    labels = [_few_cells(np.random.default_rng(seed)) for seed in range(4)]
    labels[2][-3:, -3:] = labels[2].max()  # a second, stray region of one id: 23 of 24 single regions
    with pytest.raises(ValueError, match="96% of them one connected region"):
        guess_label_kind(labels)


def test_guess_errors():
    with pytest.raises(ValueError, match="labels_list is empty"):
        guess_label_kind([])
    with pytest.raises(TypeError, match=r"labels_list\[1\] must be an integer label image, got dtype float32"):
        guess_label_kind([_disks(1), _disks(1).astype(np.float32)])
    with pytest.raises(ValueError, match=r"labels_list\[0\] has the negative label -1"):
        guess_label_kind([np.array([[-1, 0], [1, 2]])])


# ---------------------------------------------------------------------------------------------------------------
# load_dataset(label_kind="auto")
# ---------------------------------------------------------------------------------------------------------------


def _write_pairs(root: Path, labels: list[np.ndarray]) -> None:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for index, label_image in enumerate(labels):
        image = rng.integers(0, 256, size=label_image.shape, dtype=np.uint8)
        tifffile.imwrite(root / "images" / f"{index}.tif", image, photometric="minisblack")
        tifffile.imwrite(root / "labels" / f"{index}.tif", label_image, photometric="minisblack")


def test_load_auto_reads_instances_and_logs_the_choice(tmp_path, caplog):
    labels = [_cellpose_style(np.random.default_rng(4)), _napari_style(np.random.default_rng(5))]
    _write_pairs(tmp_path, labels)
    with caplog.at_level(logging.INFO, logger="biounet.data.datasets"):
        samples = load_dataset(tmp_path, label_kind="auto")
    assert "label_kind='auto'" in caplog.text and "read as 'instances'" in caplog.text
    explicit = load_dataset(tmp_path, label_kind="instances")
    for sample, expected, label_image in zip(samples, explicit, labels):
        np.testing.assert_array_equal(sample.instances, label_image)
        np.testing.assert_array_equal(sample.instances, expected.instances)
        np.testing.assert_array_equal(sample.classes, expected.classes)


def test_load_auto_reads_255_masks_as_class_1(tmp_path, caplog):
    _write_pairs(tmp_path, [_disks(255), _disks(1)])
    with caplog.at_level(logging.INFO, logger="biounet.data.datasets"):
        samples = load_dataset(tmp_path, label_kind="auto")
    assert "read as 'classes'" in caplog.text
    for sample, expected in zip(samples, load_dataset(tmp_path, label_kind="classes")):
        np.testing.assert_array_equal(sample.classes, _disks(1))  # 255 is class 1, as with label_kind="classes"
        np.testing.assert_array_equal(sample.instances, expected.instances)
        assert sample.instances.max() == 4


def test_load_auto_ambiguous_names_the_folder_and_the_flag(tmp_path):
    _write_pairs(tmp_path, [_three_class_semantic()])
    with pytest.raises(ValueError, match=r"labels: cannot tell class ids.*--label-kind classes"):
        load_dataset(tmp_path, label_kind="auto")
    (sample,) = load_dataset(tmp_path, label_kind="classes")  # the explicit choice still works
    assert sample.classes.max() == 2


def test_load_auto_test_split_reads_no_labels(tmp_path):
    _write_pairs(tmp_path, [_three_class_semantic()])
    (sample,) = load_dataset(tmp_path, label_kind="auto", split="test")
    assert not sample.labeled


def test_load_auto_applies_to_pairs_only():
    with pytest.raises(ValueError, match="label_kind='auto' applies to the .'pairs',. layout"):
        load_dataset("synthetic:cells,n=1,size=64", label_kind="auto")


def test_load_rejects_unknown_label_kind(tmp_path):
    _write_pairs(tmp_path, [_disks(1)])
    with pytest.raises(ValueError, match=r"label_kind must be one of \('auto', 'classes', 'instances'\)"):
        load_dataset(tmp_path, label_kind="guess")


def test_a_few_cells_folder_trains_without_label_kind(tmp_path):
    from biounet.training.config import TrainConfig
    from biounet.training.train import fit

    _write_pairs(tmp_path / "data", [_few_cells(np.random.default_rng(seed)) for seed in range(4)])
    config = TrainConfig(data=str(tmp_path / "data"), base_channels=4, depth=2, tile=92, iterations=1,
                         validation_fraction=0.0, workers=0)
    assert config.label_kind == "auto"  # what biounet train uses without --label-kind
    result = fit(config, tmp_path / "run", device="cpu")
    assert result.steps == 1
    payload = load_checkpoint(tmp_path / "run" / "model.pt")
    assert payload["task"] == "cells"  # read as one id per cell, taught with the cell targets
