"""The affinities target (biounet.core.affinities, the mutex watershed's segments): targets against brute force, the
loss on what has a target only, known answers on synthetic affinities, and the train -> predict -> evaluate seam."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from biounet.core.affinities import OFFSETS, affinities, check_offsets
from biounet.inference.segments import SegmentParams, absorb_small, mutex_partition, segments_from_affinities
from biounet.training.loss import affinity_loss

pytest.importorskip("elf.segmentation", reason="the segments extra (python-elf) is not installed")


def _brute_force(ids: np.ndarray, offsets, annotated: np.ndarray) -> np.ndarray:
    height, width = ids.shape
    out = np.full((height, width, len(offsets)), -1.0, np.float32)
    for k, (dy, dx) in enumerate(offsets):
        for y in range(height):
            for x in range(width):
                v, u = y + dy, x + dx
                if 0 <= v < height and 0 <= u < width and annotated[y, x] and annotated[v, u]:
                    out[y, x, k] = float(ids[y, x] == ids[v, u] and ids[y, x] > 0)
    return out


def test_affinities_equal_brute_force(rng):
    ids = rng.integers(0, 4, size=(31, 40))
    annotated = rng.random(ids.shape) > 0.1
    np.testing.assert_array_equal(affinities(ids, OFFSETS, annotated=annotated), _brute_force(ids, OFFSETS, annotated))


def test_offsets_must_start_with_the_nearest_neighbours():
    with pytest.raises(ValueError, match="nearest neighbours"):
        check_offsets([(0, -1), (-1, 0)])
    with pytest.raises(ValueError, match="non-zero"):
        check_offsets([(-1, 0), (0, -1), (0, 0)])


def test_affinity_loss_sees_only_pairs_with_a_target_and_balances_each_offset():
    target = torch.tensor([1.0, 1.0, 1.0, 0.0, -1.0, -1.0]).reshape(1, 1, 6, 1)  # (N, H, W, K)
    logits = torch.zeros(1, 1, 1, 6, requires_grad=True)  # (N, K, H, W)
    loss = affinity_loss(logits, target)
    assert float(loss) == pytest.approx(np.log(2))
    loss.backward()
    grad = logits.grad.flatten()
    assert torch.all(grad[4:] == 0)  # no target, no gradient
    # the one negative weighs as much as the three positives together
    assert float(grad[3]) == pytest.approx(-3 * float(grad[0]))
    with pytest.raises(ValueError, match="do not match"):
        affinity_loss(torch.zeros(1, 2, 1, 6), target)


def _two_cells_with_a_gap(rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Affinities and a membrane map of two cells split by a vertical membrane with a 6-px gap in which the
    nearest-neighbour affinities say "same cell" (the network's mistake); the long-range ones are right."""
    ids = np.zeros((64, 80), int)
    ids[:, :38], ids[:, 41:] = 1, 2
    affs = np.moveaxis(affinities(ids), -1, 0)
    affs = np.where(affs < 0, 0.5, affs) * 0.9 + 0.05 + rng.uniform(-0.03, 0.03, affs.shape)
    gap = np.zeros_like(ids, bool)
    gap[28:34, 36:43] = True
    affs[:2, gap] = 0.9
    membrane = np.where(ids == 0, 0.95, 0.05)
    membrane[gap] = 0.3
    return affs.astype(np.float32), membrane.astype(np.float32), ids


def test_a_gap_in_a_membrane_does_not_merge_two_cells_whose_long_range_affinities_repel(rng):
    affs, membrane, _ = _two_cells_with_a_gap(rng)
    segments = segments_from_affinities(affs, membrane, SegmentParams(min_size_px=25))
    left, right = np.unique(segments[:, :30]), np.unique(segments[:, 49:])
    assert left.size == 1 and right.size == 1 and left[0] != right[0] and 0 not in (left[0], right[0])
    assert segments.max() == 2


def test_specks_are_absorbed_by_their_neighbours():
    partition = np.ones((20, 20), np.uint32)
    partition[:, 10:] = 2
    partition[5, 5], partition[15, 15] = 3, 4
    membrane = np.zeros((20, 20), np.float32)
    absorbed = absorb_small(partition, membrane, min_size_px=2)
    assert absorbed[5, 5] == absorbed[0, 0] and absorbed[15, 15] == absorbed[0, 19] and absorbed.max() == 2


def test_mutex_partition_names_a_bad_shape():
    with pytest.raises(ValueError, match="K = 10 offsets"):
        mutex_partition(np.zeros((3, 8, 8), np.float32))


@pytest.fixture(scope="module")
def affinity_model(tmp_path_factory) -> Path:
    """A small affinities network trained on synthetic membranes (60 steps)."""
    from biounet.training.config import TrainConfig
    from biounet.training.train import fit

    run = tmp_path_factory.mktemp("affinities") / "run"
    fit(TrainConfig(data="synthetic:membranes,n=6,size=128x128,seed=0", base_channels=8, depth=2, tile=124,
                    batch_size=2, iterations=60, val_every=60, workers=0, lr=3e-3, warmup_steps=5, batch_norm=True,
                    target="affinities"), run)
    return run / "model.pt"


def test_training_tiles_carry_the_affinities_of_their_augmented_cells():
    from biounet.data.synthetic import make_sample
    from biounet.training.config import TrainConfig
    from biounet.training.train import TileSampler, prepare_samples

    config = TrainConfig(data="x", base_channels=8, depth=2, tile=124, batch_size=2, target="affinities",
                         iterations=3)
    samples = [make_sample("membranes", size=(128, 128), rng=index) for index in range(2)]
    prepared = prepare_samples(samples, config, num_classes=2)
    _, labels, weights = TileSampler(prepared, config, length=3)[1]
    assert weights.shape[-1] == 1 + len(OFFSETS)
    for tile_labels, tile_weights in zip(labels.numpy(), weights.numpy()):
        is_cell = tile_labels == 0  # class 0 = cell in a membrane task
        up, left = tile_weights[..., 1], tile_weights[..., 2]  # offsets (-1, 0) and (0, -1)
        # "same cell" only between two cell pixels of the tile's own (augmented) labels
        assert np.all(is_cell[1:][up[1:] == 1] & is_cell[:-1][up[1:] == 1])
        assert np.all(is_cell[:, 1:][left[:, 1:] == 1] & is_cell[:, :-1][left[:, 1:] == 1])
        # and nearly everywhere exactly the 4-connected cells of those labels (the ids and the classes are
        # resampled apart; a diagonal membrane a warp thins to corners joins two cells' components)
        expected = affinities(ndimage.label(is_cell)[0], OFFSETS)[..., :2]
        known = (expected >= 0) & (tile_weights[..., 1:3] >= 0)
        assert np.mean((tile_weights[..., 1:3] == expected)[known]) > 0.999
        assert np.all(up[0] == -1) and np.all(left[:, 0] == -1)  # no partner in the tile, no target


def test_predict_writes_the_mutex_watershed_segments_and_they_do_not_depend_on_the_tile_size(
        affinity_model, tmp_path):
    import tifffile

    from biounet.cli import main
    from biounet.data.checkpoint import load_checkpoint
    from biounet.data.images import write_tiff
    from biounet.data.synthetic import make_sample
    from biounet.inference.predict import load_predictor, predict_image

    payload = load_checkpoint(affinity_model)
    assert payload["target"] == "affinities" and payload["model_config"]["affinity_channels"] == len(OFFSETS)
    params = SegmentParams(**payload["segment_params"])
    image = make_sample("membranes", size=(160, 200), rng=100).image[..., 0]
    write_tiff(tmp_path / "slice.tif", image)
    out = tmp_path / "out"
    assert main(["predict", str(affinity_model), str(tmp_path / "slice.tif"), "--out", str(out), "--instances",
                 "--save-probabilities", "-q"]) == 0
    probs = tifffile.imread(out / "slice_prob.tif")
    instances = tifffile.imread(out / "slice_instances.tif")
    assert probs.shape == (2 + len(OFFSETS), 160, 200)
    np.testing.assert_array_equal(instances, segments_from_affinities(probs[2:], probs[1], params))  # the seam
    np.testing.assert_array_equal(tifffile.imread(out / "slice.tif"), instances == 0)
    predictor = load_predictor(affinity_model, device="cpu", precision="fp32")
    maps = [predict_image(predictor, image, tile=tile) for tile in (124, None)]
    segments = [segments_from_affinities(m[2:], m[1], params) for m in maps]
    np.testing.assert_array_equal(segments[0], segments[1])
    assert payload["tta"] is False and load_predictor(affinity_model, device="cpu").tta is False
    with pytest.raises(ValueError, match="affinities turn with the image"):
        load_predictor(affinity_model, device="cpu", tta=True)


def test_affinities_on_cell_instances_is_a_one_line_error(tmp_path):
    from biounet.training.config import TrainConfig, resolve_target

    with pytest.raises(ValueError, match="--target affinities needs 2D membrane labels.*cells"):
        resolve_target(TrainConfig(data="x", target="affinities", iterations=1), "cells")
