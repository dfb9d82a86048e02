"""Big volumes and a 3D U-Net (issue 22): boxes of a volume predicted as windows of the whole-volume overlap-tile run
(in process and on Dask), outputs staged on disk when they outgrow the memory budget, OME-Zarr with a z axis."""

from __future__ import annotations

import dataclasses
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

zarr = pytest.importorskip("zarr")

from biounet.core.model import ModelConfig, UNet
from biounet.data.checkpoint import model_payload, save_checkpoint
from biounet.data.images import ImageSource, label_dtype, open_image
from biounet.data.omezarr import LabelImageWriter, LabelLayout, NgffError, open_ngff
from biounet.data.volumes import volume_normalization
from biounet.inference import predict as predict_module
from biounet.inference.blockwise import (
    VolumeBlock,
    plan_volume_blocks,
    predict_volume_block,
    volume_block_shape,
)
from biounet.inference.instances import InstanceParams, instances_from_labels
from biounet.inference.predict import PredictOptions, load_predictor, predict_file
from biounet.inference.predict_omezarr import predict_to_omezarr
from biounet.inference.predict_volume import predict_volume_outputs
from biounet.inference.volumes import VolumeGeometry, array_reader, volume_geometry

CONFIG = ModelConfig(dims=3, depth=2, base_channels=4, flat_levels=1)  # in (24, 60, 60) -> out (8, 20, 20)
IN_SHAPE = (24, 60, 60)
VOXEL_UM = (2.0, 0.5, 0.5)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("model3d") / "unet3d.pt"
    save_checkpoint(path, model_payload(UNet(CONFIG), normalization="percentile"))
    return path


@pytest.fixture(scope="module")
def predictor(model_path):
    return load_predictor(model_path, device="cpu", precision="fp32")


def _volume(shape: tuple[int, int, int], seed: int = 3) -> np.ndarray:
    """Blobs on noise, uint16, odd sizes."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    blobs = sum(np.exp(-(((z - c[0]) * 2) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / 40.0)
                for c in rng.uniform(0, shape, (12, 3)))
    return np.round(blobs * 3000 + rng.normal(500, 80, shape)).clip(0).astype(np.uint16)


def _whole_volume(predictor, source: ImageSource, in_shape) -> tuple[np.ndarray, np.ndarray]:
    """The one-process overlap-tile outputs ((K, Z, Y, X), (Z, Y, X)) of a volume, normalised as a whole."""
    shape = (source.planes, source.height, source.width)
    norm = volume_normalization(source, predictor.normalization)
    probs = np.zeros((predictor.output_channels, *shape), np.float32)
    labels = np.zeros(shape, label_dtype(predictor.num_classes))
    volume = norm.apply(source.read_region())
    predict_volume_outputs(predictor, array_reader(volume), shape, volume_geometry(CONFIG, in_shape),
                           probabilities=probs, labels=labels)
    return probs, labels


def _array_source(raw: np.ndarray) -> ImageSource:
    return ImageSource(Path("<volume>"), raw, (*raw.shape, 1), raw.dtype, "ZYX", dims=3)


# --- boxes ---------------------------------------------------------------------------------------------------------


def test_volume_block_shape_is_a_multiple_of_the_tile_step():
    geometry = VolumeGeometry((24, 60, 60), (8, 20, 20), (8, 20, 20), (2, 4, 4))
    assert volume_block_shape(geometry) == (256, 260, 260)  # 32, 13, 13 steps
    assert volume_block_shape(geometry, 40) == (256, 40, 40)
    with pytest.raises(ValueError, match="multiple of the in-plane tile step 20 .* nearest: 40 or 60"):
        volume_block_shape(geometry, 50)


def test_plan_volume_blocks_covers_every_voxel_once():
    shape, block = (7, 9, 10), (3, 4, 5)
    count = np.zeros(shape, int)
    blocks = plan_volume_blocks(shape, block)
    for b in blocks:
        count[b.region] += 1
    assert (count == 1).all() and len(blocks) == 3 * 3 * 2 == len({b.name for b in blocks})
    assert [b.number for b in blocks] == list(range(len(blocks)))
    with pytest.raises(ValueError, match="block sizes >= 1"):
        plan_volume_blocks(shape, (0, 4, 4))


@pytest.mark.numerics
def test_boxes_equal_the_whole_volume_exactly(predictor):
    raw = _volume((16, 40, 50))  # 2 x 2 x 3 tiles of (8, 20, 20) outputs
    source = _array_source(raw)
    probs, labels = _whole_volume(predictor, source, IN_SHAPE)
    assert 0 < labels.mean() < 1  # both classes: the comparison means something
    geometry = volume_geometry(CONFIG, IN_SHAPE)
    norm = volume_normalization(source, predictor.normalization)
    got_probs, got_labels = np.full_like(probs, np.nan), np.full_like(labels, 255)
    blocks = plan_volume_blocks(raw.shape, (8, 20, 40))  # 2 x 2 x 2 boxes, two tiles wide in x, then one
    assert len(blocks) == 8
    for block in blocks:
        result = predict_volume_block(predictor, source, norm, block, geometry)
        got_probs[(slice(None), *block.region)] = result.probabilities
        got_labels[block.region] = result.labels
    np.testing.assert_array_equal(got_probs, probs)
    np.testing.assert_array_equal(got_labels, labels)


def test_a_box_off_the_tile_step_is_refused(predictor):
    source = _array_source(_volume((12, 30, 30)))
    block = VolumeBlock(0, (4, 8), (0, 20), (0, 20))  # z starts off the step 8
    with pytest.raises(ValueError, match="must start at multiples of the tile step"):
        predict_volume_block(predictor, source, volume_normalization(source), block, volume_geometry(CONFIG, IN_SHAPE))


@pytest.mark.numerics
def test_dask_boxes_equal_the_one_process_prediction(model_path, predictor, tmp_path):
    pytest.importorskip("distributed")
    from biounet.inference.blockwise import open_client, predict_blockwise

    raw = _volume((16, 40, 50), seed=4)
    image = tmp_path / "vol.zarr"
    zarr.open_array(str(image), mode="w", shape=raw.shape, chunks=(8, 32, 32), dtype=raw.dtype)[:] = raw
    options = PredictOptions(tile=60, save_probabilities=True, memory_budget=16 * 2**20)
    with open_client(workers=2, processes=False) as client:
        result = predict_blockwise(model_path, image, tmp_path / "out", client, options, device="cpu",
                                   precision="fp32", block_size=20)
    assert result.in_shape[1:] == (60, 60) and result.block_shape[1:] == (20, 20)
    assert (len(result.computed), result.skipped) == (6, [])  # 1 x 2 x 3 boxes
    probs, labels = _whole_volume(predictor, open_image(image), result.in_shape)
    got_probs = zarr.open_array(str(result.probabilities_path), mode="r")[:]
    got_labels = zarr.open_array(str(result.labels_path), mode="r")[:]
    assert got_probs.shape == (16, 2, 40, 50)  # (Z, K, Y, X), as <stem>_prob.tif
    np.testing.assert_allclose(got_probs, np.moveaxis(probs, 0, 1), atol=1e-5)
    decided = np.abs(probs[1] - probs[0]) > 1e-4
    np.testing.assert_array_equal(got_labels[decided], labels[decided])
    assert not (tmp_path / "out" / "vol.blocks").exists()


def test_dask_refuses_volume_instances(model_path, tmp_path):
    pytest.importorskip("distributed")
    from biounet.inference.blockwise import predict_blockwise

    image = tmp_path / "vol.zarr"
    zarr.open_array(str(image), mode="w", shape=(8, 30, 30), dtype=np.uint8)[:] = 1
    with pytest.raises(ValueError, match="blockwise instances of a volume"):
        predict_blockwise(model_path, image, tmp_path / "out", None, PredictOptions(), instances=InstanceParams())


# --- on-disk outputs -------------------------------------------------------------------------------------------------


def _tiff_volume(path: Path, raw: np.ndarray) -> Path:
    meta = {"axes": "ZYX", **{f"PhysicalSize{a}": s for a, s in zip("ZYX", VOXEL_UM)}}
    tifffile.imwrite(path, raw, ome=True, metadata=meta)
    return path


def _predict_measured(predictor, image: Path, out: Path, budget: int) -> tuple[int, int]:
    """Predict with ``budget`` and tiles of (40, 140, 140) (outputs (24, 100, 100)) whatever the budget; returns
    (tracemalloc peak bytes, calls of the plane-by-plane TIFF writer)."""
    calls = []
    writer = predict_module.write_ome_tiff_volume

    def counted(*args, **kwargs):
        calls.append(kwargs["shape"])
        return writer(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch, zarr.config.set({"async.concurrency": 1}):  # one chunk at a time
        patch.setattr(predict_module, "write_ome_tiff_volume", counted)
        patch.setattr(predict_module, "volume_tile_for", lambda *args: (40, 140, 140))
        tracemalloc.start()
        predict_file(predictor, image, out, PredictOptions(save_probabilities=True, memory_budget=budget))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, len(calls)


@pytest.mark.slow
@pytest.mark.numerics
def test_outputs_staged_on_disk_equal_those_in_memory_and_keep_memory_flat(predictor, tmp_path):
    predictor = dataclasses.replace(predictor, normalization="range")  # no statistics sampled: the outputs dominate
    raw = _volume((72, 100, 100), seed=6)[:48]  # two tiles in z (the whole run below: three)
    image = _tiff_volume(tmp_path / "vol.tif", raw)
    _, writes = _predict_measured(predictor, image, tmp_path / "memory", 2**30)
    assert writes == 0
    peak_whole, writes = _predict_measured(predictor, image, tmp_path / "disk", 4 * 2**20)
    assert writes == 2  # labels and probabilities, plane by plane
    for name in ("vol.tif", "vol_prob.tif"):
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "disk" / name),
                                      tifffile.imread(tmp_path / "memory" / name))
    back = open_image(tmp_path / "disk" / "vol_prob.tif")
    assert (back.dims, back.voxel_size_um, back.shape) == (3, VOXEL_UM, (48, 100, 100, 2))
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == ["vol.tif", "vol_prob.tif"]  # staging removed
    longer = _tiff_volume(tmp_path / "longer.tif", _volume((72, 100, 100), seed=6))
    peak_longer, _ = _predict_measured(predictor, longer, tmp_path / "longer", 4 * 2**20)
    added = 2 * 24 * 100 * 100 * 4  # the probabilities of 24 planes more, bytes (numpy's; torch's are not traced)
    assert peak_longer - peak_whole < added / 2, (peak_whole, peak_longer)  # the rest: the input TIFF, read whole


# --- OME-Zarr with a z axis ------------------------------------------------------------------------------------------


def _ngff_volume(path: Path, raw: np.ndarray, axes: str = "zyx") -> Path:
    """An NGFF 0.4 image with micrometre (z, y, x) scale, written directly (no ome-zarr needed)."""
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", shape=raw.shape, dtype=raw.dtype, chunks=raw.shape)[:] = raw
    kinds = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    scale = [VOXEL_UM["zyx".index(a)] if a in "zyx" else 1.0 for a in axes]
    group.attrs["multiscales"] = [{
        "version": "0.4", "name": "img",
        "axes": [{"name": a, "type": kinds[a], **({"unit": "micrometer"} if a in "zyx" else {})} for a in axes],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}]}]
    return path


def test_ngff_volume_view_reads_like_numpy(tmp_path, rng):
    raw = rng.integers(0, 200, (1, 2, 5, 6, 7)).astype(np.uint8)  # t, c, z, y, x
    image = open_ngff(_ngff_volume(tmp_path / "a.zarr", raw, "tczyx"))
    assert image.is_volume and image.voxel_size_um == VOXEL_UM
    stack = image.volume()
    expected = np.moveaxis(raw[0], 0, 1)  # (Z, C, Y, X)
    assert stack.shape == expected.shape
    np.testing.assert_array_equal(stack[1:4, :, 2:5, 0:3], expected[1:4, :, 2:5, 0:3])
    np.testing.assert_array_equal(stack[2, 1, :, :], expected[2, 1])
    flat = open_ngff(_ngff_volume(tmp_path / "b.zarr", raw[0, :, 0], "cyx"))
    with pytest.raises(NgffError, match="not one volume"):
        flat.volume()


@pytest.mark.numerics
def test_ngff_volume_gets_3d_labels_and_instances_with_the_z_scale(predictor, tmp_path):
    raw = _volume((20, 50, 50), seed=8)
    path = _ngff_volume(tmp_path / "img.zarr", raw)
    params = InstanceParams(min_size_px=0)
    result = predict_to_omezarr(predictor, path, options=PredictOptions(memory_budget=16 * 2**20),
                                instances=("paper", params))
    assert result.in_shape is not None and result.shape == raw.shape
    _, labels = _whole_volume(predictor, _array_source(raw), result.in_shape)
    got = zarr.open_array(str(path / "labels" / "biounet" / "0"), mode="r")[:]
    np.testing.assert_array_equal(got, labels)
    instances = zarr.open_array(str(path / "labels" / "biounet_instances" / "0"), mode="r")[:]
    expected = instances_from_labels(labels, target="paper", params=params)
    assert expected.max() > 1
    np.testing.assert_array_equal(instances, expected)  # 3D objects, not per plane
    attrs = json.loads((path / "labels" / "biounet" / ".zattrs").read_text())
    scale = attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale == list(VOXEL_UM) and [a["name"] for a in attrs["multiscales"][0]["axes"]] == ["z", "y", "x"]


def test_a_3d_model_refuses_an_ngff_plane_and_writes_a_tiff_volume_as_ngff(predictor, tmp_path):
    plane = _ngff_volume(tmp_path / "plane.zarr", np.ones((30, 30), np.uint8), "yx")
    with pytest.raises(ValueError, match="not one volume"):
        predict_to_omezarr(predictor, plane)
    image = _tiff_volume(tmp_path / "vol.tif", _volume((10, 30, 30)))
    result = predict_to_omezarr(predictor, image, tmp_path / "out.zarr", PredictOptions(memory_budget=16 * 2**20))
    written = open_ngff(result.labels_path)
    assert written.axes == ("z", "y", "x") and written.voxel_size_um == VOXEL_UM
    assert written.array.shape == (10, 30, 30)


def test_label_layout_and_writer_for_a_volume(tmp_path):
    layout = LabelLayout.for_volume((3, 4, 5), None)
    assert (layout.scale, layout.units) == ((1.0, 1.0, 1.0), (None, None, None))
    with LabelImageWriter(LabelLayout.for_volume((3, 4, 5), VOXEL_UM), np.uint8, out=tmp_path / "l.zarr") as writer:
        writer.volume()[1:3, :, 2:4] = 7
    array = zarr.open_array(str(tmp_path / "l.zarr" / "0"), mode="r")[:]
    assert array.sum() == 7 * 2 * 4 * 2 and (array[1:3, :, 2:4] == 7).all()
    with pytest.raises(ValueError, match="volume's"):
        LabelLayout.for_volume((4, 5), None)
