"""Overlap-tile for volumes (inference/volumes.py): seamless tiling, mirroring in z, in-place outputs, tile choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from biounet.core.model import ModelConfig, UNet, cicek_config, nearest_valid_shape, output_probabilities
from biounet.inference.tiling import mirror_indices, tile_starts
from biounet.inference.volumes import (
    VolumeGeometry,
    array_reader,
    choose_volume_tile,
    count_volume_tiles,
    estimate_volume_bytes,
    predict_volume,
    read_mirrored_box,
    volume_geometry,
    volume_tile_origins,
)


def _crop_to(skip: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    offsets = [(s - t) // 2 for s, t in zip(skip.shape[2:], like.shape[2:])]
    return skip[(..., *(slice(o, o + t) for o, t in zip(offsets, like.shape[2:])))]


class TinyUNet3d(nn.Module):
    """A depth-2 U-Net of valid Conv3d and MaxPool3d; with ``flat`` its top level is in-plane only (kernels
    (1, 3, 3), pooling (1, 2, 2)). Valid sizes: in-plane 44 + 4k (output 4 + 4k, align 4); z like in-plane without
    ``flat``, else 18 + 2k (output z - 16, align 2)."""

    def __init__(self, channels: int, classes: int, flat: bool) -> None:
        super().__init__()
        top, pool = ((1, 3, 3), (1, 2, 2)) if flat else ((3, 3, 3), (2, 2, 2))

        def double(cin: int, cout: int, kernel: tuple[int, int, int]) -> nn.Sequential:
            return nn.Sequential(nn.Conv3d(cin, cout, kernel), nn.ReLU(), nn.Conv3d(cout, cout, kernel), nn.ReLU())

        self.pool_top = pool
        self.down0, self.down1, self.bottom = double(channels, 4, top), double(4, 6, (3, 3, 3)), double(6, 8, (3, 3, 3))
        self.up1, self.dec1 = nn.ConvTranspose3d(8, 6, 2, stride=2), double(12, 6, (3, 3, 3))
        self.up0, self.dec0 = nn.ConvTranspose3d(6, 4, pool, stride=pool), double(8, 4, top)
        self.head = nn.Conv3d(4, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip0 = self.down0(x)
        skip1 = self.down1(nn.functional.max_pool3d(skip0, self.pool_top))
        x = self.bottom(nn.functional.max_pool3d(skip1, 2))
        x = self.up1(x)
        x = self.dec1(torch.cat([x, _crop_to(skip1, x)], 1))
        x = self.up0(x)
        return torch.softmax(self.head(self.dec0(torch.cat([x, _crop_to(skip0, x)], 1))), 1)


def tiny_geometry(in_shape: tuple[int, int, int], flat: bool) -> VolumeGeometry:
    margins = (8 if flat else 20, 20, 20)
    return VolumeGeometry(in_shape=in_shape, out_shape=tuple(s - 2 * m for s, m in zip(in_shape, margins)),
                          margins=margins, align=(2 if flat else 4, 4, 4))


def torch_predict(model: nn.Module):
    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(batch)).numpy()

    return predict


def whole_volume_pass(model: nn.Module, volume: np.ndarray, geometry: VolumeGeometry) -> np.ndarray:
    """Reference: one network pass over the whole mirror-padded volume, cropped to the volume."""
    index = []
    for length, out, step, size, margin in zip(volume.shape[:3], geometry.out_shape, geometry.step,
                                               geometry.in_shape, geometry.margins):
        extent = tile_starts(length, out, step)[-1] + size  # the last tile's far edge: a valid size
        index.append(mirror_indices(-margin, extent - margin, length))
    padded = volume[np.ix_(*index)].transpose(3, 0, 1, 2)[None]
    with torch.no_grad():
        probs = model(torch.from_numpy(np.ascontiguousarray(padded)))[0].numpy()
    return probs[:, : volume.shape[0], : volume.shape[1], : volume.shape[2]]


@pytest.fixture(scope="module")
def tiny_models():
    torch.manual_seed(0)
    return {flat: TinyUNet3d(2, 3, flat).eval() for flat in (False, True)}


@pytest.mark.numerics
@pytest.mark.parametrize(("flat", "shape", "tiles"), [
    (False, (13, 17, 21), [(48, 52, 48), (52, 48, 56)]),  # outputs 4..12: 2-4 tiles per axis
    (True, (11, 17, 21), [(20, 52, 48), (26, 48, 56)]),  # z outputs 4 and 10
])
def test_tiled_volume_equals_whole_volume_pass(tiny_models, rng, flat, shape, tiles):
    model = tiny_models[flat]
    volume = rng.random((*shape, 2)).astype(np.float32)
    results = []
    for in_shape in tiles:
        geometry = tiny_geometry(in_shape, flat)
        assert count_volume_tiles(shape, geometry) >= 8
        probs = np.full((3, *shape), np.nan, np.float32)
        predict_volume(array_reader(volume), shape, torch_predict(model), geometry, probabilities=probs, batch_size=3)
        np.testing.assert_allclose(probs, whole_volume_pass(model, volume, geometry), atol=1e-5)
        results.append(probs)
    np.testing.assert_allclose(results[0], results[1], atol=1e-5)


def crop_predict(geometry: VolumeGeometry):
    """A 'network' that only removes the margins: the tiled result must be the volume itself."""
    def predict(batch: np.ndarray) -> np.ndarray:
        return batch[(..., *(slice(m, m + o) for m, o in zip(geometry.margins, geometry.out_shape)))]

    return predict


@pytest.mark.parametrize("shape", [(5, 9, 14), (1, 1, 1), (30, 3, 40)])
def test_crop_model_reproduces_volume_and_labels(rng, shape):
    volume = rng.random((*shape, 3)).astype(np.float32)
    geometry = VolumeGeometry(in_shape=(8, 14, 12), out_shape=(4, 6, 8), margins=(2, 4, 2), align=(2, 2, 4))
    probs = np.zeros((3, *shape), np.float32)
    labels = np.full(shape, 9, np.uint8)
    done = []
    predict_volume(array_reader(volume), shape, crop_predict(geometry), geometry, probabilities=probs,
                   labels=labels, batch_size=4, progress=done.append, label_channels=2)
    np.testing.assert_array_equal(probs, volume.transpose(3, 0, 1, 2))
    np.testing.assert_array_equal(labels, np.argmax(volume[..., :2], axis=-1))
    assert sum(done) == count_volume_tiles(shape, geometry) == len(volume_tile_origins(shape, geometry))


def test_zarr_output_written_in_place(rng):
    zarr = pytest.importorskip("zarr")
    shape = (7, 12, 10)
    volume = rng.random((*shape, 2)).astype(np.float32)
    geometry = VolumeGeometry(in_shape=(6, 10, 10), out_shape=(2, 4, 4), margins=(2, 3, 3), align=(1, 2, 2))
    probs = zarr.zeros((2, *shape), chunks=(1, 4, 4, 4), dtype="f4")
    labels = zarr.zeros(shape, chunks=(4, 4, 4), dtype="u1")
    predict_volume(array_reader(volume), shape, crop_predict(geometry), geometry, probabilities=probs, labels=labels)
    np.testing.assert_array_equal(probs[:], volume.transpose(3, 0, 1, 2))
    np.testing.assert_array_equal(labels[:], np.argmax(volume, axis=-1))


@pytest.mark.parametrize("overhang", [1, 3, 5])
def test_mirroring_is_symmetric_padding_on_every_axis(rng, overhang):
    volume = rng.random((5, 6, 7, 2)).astype(np.float32)
    padded = np.pad(volume, [(overhang, overhang)] * 3 + [(0, 0)], mode="symmetric")
    size = [s + 2 * overhang for s in volume.shape[:3]]
    box = read_mirrored_box(array_reader(volume), volume.shape[:3], [-overhang] * 3, size)
    np.testing.assert_array_equal(box, padded)


def test_mirrored_box_reads_only_its_bounding_box(rng):
    volume = rng.random((20, 20, 20, 1)).astype(np.float32)
    reads = []

    def read(zs, ys, xs):
        reads.append((zs, ys, xs))
        return volume[zs, ys, xs]

    box = read_mirrored_box(read, (20, 20, 20), (-2, 5, 15), (6, 4, 8))
    assert reads == [(slice(0, 4), slice(5, 9), slice(15, 20))]
    np.testing.assert_array_equal(box[2:, :, :5], volume[:4, 5:9, 15:20])


def test_geometry_checks_and_step():
    geometry = VolumeGeometry(in_shape=(20, 44, 44), out_shape=(12, 20, 20), margins=(4, 12, 12), align=(8, 8, 8))
    assert geometry.step == (8, 16, 16)
    with pytest.raises(ValueError, match="must equal out_shape"):
        VolumeGeometry(in_shape=(20, 44, 45), out_shape=(12, 20, 20), margins=(4, 12, 12), align=(8, 8, 8))
    with pytest.raises(ValueError, match="must be >= align"):
        VolumeGeometry(in_shape=(12, 44, 44), out_shape=(4, 20, 20), margins=(4, 12, 12), align=(8, 8, 8))
    with pytest.raises(ValueError, match="three integers"):
        VolumeGeometry(in_shape=(44, 44), out_shape=(20, 20), margins=(12, 12), align=(8, 8))


def test_bad_arguments_are_named(rng):
    volume = rng.random((5, 6, 7, 1)).astype(np.float32)
    geometry = VolumeGeometry(in_shape=(4, 4, 4), out_shape=(2, 2, 2), margins=(1, 1, 1), align=(1, 1, 1))
    read = array_reader(volume)
    with pytest.raises(ValueError, match=r"volume must be \(Z, Y, X, C\)"):
        array_reader(volume[..., 0])
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        predict_volume(read, (5, 6, 7), crop_predict(geometry), geometry, batch_size=0)
    with pytest.raises(ValueError, match="predict returned shape"):
        predict_volume(read, (5, 6, 7), lambda batch: batch, geometry)
    with pytest.raises(ValueError, match=r"shape must be a volume's \(Z, Y, X\)"):
        predict_volume(read, (6, 7), crop_predict(geometry), geometry)
    with pytest.raises(ValueError, match=r"labels must be \(Z, Y, X\)"):
        predict_volume(read, (5, 6, 7), crop_predict(geometry), geometry, labels=np.zeros((5, 6, 8), np.uint8))
    with pytest.raises(ValueError, match=r"probabilities must be \(K, Z, Y, X\)"):
        predict_volume(read, (5, 6, 7), crop_predict(geometry), geometry, probabilities=np.zeros((5, 6, 7)))
    with pytest.raises(ValueError, match=r"read must return \(z, y, x, C\)"):
        predict_volume(lambda zs, ys, xs: volume[zs, ys, xs, 0], (5, 6, 7), crop_predict(geometry), geometry)


def test_estimate_counts_levels_by_their_pooling():
    # depth 2, base 2, flat top level: level voxels 4*8*8=256, 4*4*4=64, 2*2*2=8; widths 2, 4, 8
    config = ModelConfig(dims=3, base_channels=2, depth=2, flat_levels=1, num_classes=3)
    maps = 4 * (2 * 256 + 4 * 64 + 8 * 8)
    assert estimate_volume_bytes(config, (4, 8, 8)) == 4 * (maps + 4 * 256)
    assert estimate_volume_bytes(config, (4, 8, 8), batch_size=2, bytes_per_value=2) == 4 * (maps + 4 * 256)
    # Cicek et al.'s first convolution of a level has half its width: mean widths 24, 48, 96, 192 for base 16
    cicek = ModelConfig(dims=3, depth=3, base_channels=16, variant="cicek")
    plain = ModelConfig(dims=3, depth=3, base_channels=24)
    assert estimate_volume_bytes(cicek, (16, 16, 16)) == estimate_volume_bytes(plain, (16, 16, 16))


@pytest.fixture(scope="module")
def unet3d():
    torch.manual_seed(1)
    return UNet(ModelConfig(dims=3, depth=3, base_channels=2, flat_levels=1, in_channels=2, num_classes=3)).eval()


def unet_predict(model: UNet):
    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return output_probabilities(model(torch.from_numpy(batch)), model.config.num_classes).numpy()

    return predict


@pytest.mark.numerics
def test_unet3d_tiles_are_seamless(unet3d, rng):
    """The project's 3D U-Net (depth 3, one in-plane-only level: align (4, 8, 8)); outputs 12 and 20 px in-plane
    step by 8 and 16, so neighbouring tiles overlap; two tilings agree with one whole-volume pass."""
    shape = (15, 30, 26)
    volume = rng.random((*shape, 2)).astype(np.float32)
    results = []
    for in_shape in [(48, 108, 100), (52, 100, 116)]:
        geometry = volume_geometry(unet3d.config, in_shape)
        assert count_volume_tiles(shape, geometry) >= 8
        probs = np.full((3, *shape), np.nan, np.float32)
        labels = np.zeros(shape, np.uint8)
        predict_volume(array_reader(volume), shape, unet_predict(unet3d), geometry, probabilities=probs,
                       labels=labels, batch_size=2)
        reference = whole_volume_pass(lambda x: output_probabilities(unet3d(x), 3), volume, geometry)
        np.testing.assert_allclose(probs, reference, atol=1e-5)
        np.testing.assert_array_equal(labels, probs.argmax(0))
        results.append(probs)
    np.testing.assert_allclose(results[0], results[1], atol=1e-5)


def test_volume_geometry_from_config():
    geometry = volume_geometry(cicek_config(), (116, 132, 132))  # the paper's tile: 44x44x28 voxels out
    assert geometry == VolumeGeometry(in_shape=(116, 132, 132), out_shape=(28, 44, 44), margins=(44, 44, 44),
                                      align=(8, 8, 8))
    assert geometry.step == (24, 40, 40)
    with pytest.raises(ValueError, match="nearest valid"):
        volume_geometry(cicek_config(), (115, 132, 132))
    with pytest.raises(ValueError, match="3D network"):
        volume_geometry(ModelConfig(), (116, 132, 132))


def test_small_volume_gets_one_tile_of_the_size_it_needs():
    config = ModelConfig(dims=3, depth=2, base_channels=4, flat_levels=1)
    for shape in [(10, 20, 30), (1, 1, 1), (3, 70, 5)]:
        tile = choose_volume_tile(config, shape, 2**30)
        geometry = volume_geometry(config, tile)
        assert count_volume_tiles(shape, geometry) == 1
        needed = nearest_valid_shape([s + 2 * m for s, m in zip(shape, geometry.margins)], config)
        assert tile == needed  # no larger than the volume needs (for this network its outputs then span align)


def test_tile_choice_respects_the_budget_and_shrinks_with_it():
    config = cicek_config()
    shape = (100, 512, 512)
    tiles = {mib: choose_volume_tile(config, shape, mib * 2**20) for mib in (1024, 4096, 16384)}
    for mib, tile in tiles.items():
        assert estimate_volume_bytes(config, tile) <= mib * 2**20
        assert min(tile[1:]) >= tile[0]  # isotropic network: in-plane at least as large as z
    volumes = [np.prod(tiles[mib]) for mib in (1024, 4096, 16384)]
    assert volumes[0] < volumes[1] < volumes[2]
    counts = [count_volume_tiles(shape, volume_geometry(config, tiles[mib])) for mib in (1024, 4096, 16384)]
    assert counts[0] > counts[1] > counts[2]
    assert choose_volume_tile(config, shape, 4096 * 2**20, batch_size=2) != tiles[4096]
    with pytest.raises(ValueError, match="below the smallest tile"):
        choose_volume_tile(config, shape, 2**20)
    with pytest.raises(ValueError, match="3D network"):
        choose_volume_tile(ModelConfig(), shape, 2**30)
    with pytest.raises(ValueError, match="batch_size must be > 0"):
        choose_volume_tile(config, shape, 2**30, batch_size=0)


def test_tile_choice_is_the_cheapest_that_fits():
    """Brute force over every valid shape (y = x) that fits: none computes fewer input voxels in all."""
    config = ModelConfig(dims=3, depth=2, base_channels=4, flat_levels=1)
    shape, budget = (30, 90, 90), 40 * 2**20
    tile = choose_volume_tile(config, shape, budget)

    def cost(in_shape):
        return count_volume_tiles(shape, volume_geometry(config, in_shape)) * np.prod(in_shape)

    fitting = [(z, s, s) for z in range(20, 60, 2) for s in range(48, 140, 4)
               if estimate_volume_bytes(config, (z, s, s)) <= budget]
    assert len(fitting) > 10 and tile in fitting
    assert cost(tile) == min(cost(c) for c in fitting)


PEAK_SCRIPT = """
import json, re, sys
import torch
from biounet.core.model import ModelConfig, UNet, smallest_input_shape


def status_kib(key):
    return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))


torch.set_num_threads(2)
config, shape = ModelConfig(**json.loads(sys.argv[1])), tuple(json.loads(sys.argv[2]))
net = UNet(config).eval()
with torch.inference_mode():  # one small pass first, so that one-off allocations are not counted
    net(torch.zeros(1, config.in_channels, *smallest_input_shape(config)))
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset the peak resident set size (VmHWM), which exec keeps from the parent
    before = status_kib("VmRSS")
    net(torch.rand(1, config.in_channels, *shape))
print((status_kib("VmHWM") - before) * 1024)
"""


@pytest.mark.slow
@pytest.mark.parametrize(("config", "shape"), [
    ({"dims": 3, "depth": 3, "base_channels": 8}, (124, 124, 124)),  # measured 0.73 of the estimate
    ({"dims": 3, "depth": 3, "base_channels": 8, "flat_levels": 1}, (60, 140, 140)),  # 0.54
    ({"dims": 3, "depth": 2, "base_channels": 8, "flat_levels": 2}, (20, 140, 140)),  # 1.42: unfolded (1, 3, 3) convs
])
def test_memory_estimate_within_2x_of_measured_peak(config, shape):
    """Peak resident-memory growth of one CPU forward pass in a fresh process (Linux /proc: VmHWM after a reset)."""
    import json
    import subprocess
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("reads the peak resident set size from Linux's /proc")
    done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, json.dumps(config), json.dumps(shape)],
                          capture_output=True, text=True, check=True, timeout=120)
    measured = int(done.stdout.split()[-1])
    estimated = estimate_volume_bytes(ModelConfig(**config), shape)
    assert estimated / 2 <= measured <= 2 * estimated, (measured / 2**20, estimated / 2**20)
