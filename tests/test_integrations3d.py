"""The 3D U-Net (Cicek et al. 2016) through the integrations (issue 22): ONNX / TorchScript export with the z axis,
the bioimage.io package of a 3D model, and the napari widgets on 3D layers."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from biounet.cli import main
from biounet.core.model import ModelConfig, UNet, context_margins, output_shape
from biounet.data.checkpoint import load_checkpoint, model_payload, save_checkpoint
from biounet.inference.instances import instances_from_foreground
from biounet.inference.predict import TorchPredictor
from biounet.inference.predict_volume import segment_volume

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before napari creates its QApplication

# torch 2.13 deprecates torch.jit.load, which bioimageio.core and these tests use to run the TorchScript weights.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")

CONFIG = ModelConfig(dims=3, depth=2, base_channels=2, flat_levels=1, batch_norm=True, variant="cicek", num_classes=3)
# valid inputs: z 18 + 2 k, y/x 44 + 4 k; output = input - (16, 40, 40)
CLASS_NAMES = ["background", "interior", "boundary"]
VOXEL = (1.0, 0.5, 0.5)


def _random_batch_norm(model: UNet, seed: int) -> UNet:
    """Running statistics other than 0 and 1, so that an export that dropped or mis-folded them would show."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.copy_(0.1 * torch.randn(module.num_features, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(module.num_features, generator=generator))
    return model.eval()


@pytest.fixture(scope="module")
def model() -> UNet:
    torch.manual_seed(0)
    return _random_batch_norm(UNet(CONFIG), 0)


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory) -> Path:
    """A 3D checkpoint as ``biounet train`` on volumes writes it: the voxel size in its train_config."""
    path = tmp_path_factory.mktemp("ckpt3d") / "model.pt"
    return save_checkpoint(path, model_payload(model, normalization="percentile", class_names=CLASS_NAMES,
                                               train_config={"voxel_size": list(VOXEL), "dims": 3}))


def blobs_volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """uint8 ellipsoids (half as long in z) on noise: objects that span several planes."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    inside = np.zeros(shape, bool)
    for _ in range(5):
        centre = rng.uniform([2, 8, 8], [shape[0] - 2, shape[1] - 8, shape[2] - 8])
        inside |= ((z - centre[0]) * 2) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 < rng.uniform(5, 8) ** 2
    return np.clip(inside * 160 + rng.normal(40, 10, shape), 0, 255).astype(np.uint8)


# --- ONNX and TorchScript ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory) -> tuple[Path, Path]:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from biounet.integrations.export import export_model

    out = tmp_path_factory.mktemp("export3d")
    kwargs = {"normalization": "percentile", "class_names": CLASS_NAMES, "voxel_size_um": VOXEL}
    return (export_model(model, out / "m.onnx", export_format="onnx", **kwargs),
            export_model(model, out / "m.ts", export_format="torchscript", **kwargs))


def test_onnx_metadata_carries_the_z_axis(exported, model):
    from biounet.integrations.export import export_metadata, read_metadata

    for path, fmt in zip(exported, ("onnx", "torchscript")):
        metadata = read_metadata(path)
        assert metadata == export_metadata(model, normalization="percentile", class_names=CLASS_NAMES,
                                           export_format=fmt, voxel_size_um=VOXEL)
    assert ModelConfig(**metadata["model_config"]) == CONFIG
    assert (metadata["dims"], metadata["flat_levels"], metadata["voxel_size_um"]) == (3, 1, list(VOXEL))
    assert metadata["input"]["layout"] == metadata["output"]["layout"] == "NCZYX"
    assert metadata["align_shape"] == [2, 4, 4]  # one in-plane-only level: one pooling fewer in z
    assert metadata["smallest_input_shape"] == metadata["smallest_tile_shape"] == [18, 44, 44]
    assert metadata["margins"] == list(context_margins(CONFIG, (18, 44, 44))) == [8, 20, 20]
    for tile, out in metadata["tile_shape_examples"].items():
        assert tuple(out) == output_shape(tuple(int(s) for s in tile.split("x")), CONFIG)


@pytest.mark.numerics
def test_onnx_predictor_is_3d_and_matches_torch_on_a_volume(exported, model, rng):
    from biounet.integrations.export import OnnxPredictor

    onnx_predictor, torch_predictor = OnnxPredictor(exported[0]), TorchPredictor(model, fuse=False)
    assert (onnx_predictor.dims, onnx_predictor.model_config) == (3, CONFIG)
    assert onnx_predictor.voxel_size_um == VOXEL and onnx_predictor.pixel_size_um is None
    batch = rng.random((2, 1, 20, 48, 52), dtype=np.float32)  # a valid shape other than the traced one
    expected = torch_predictor(batch)
    assert expected.shape == (2, 3, 4, 8, 12)
    np.testing.assert_allclose(onnx_predictor(batch), expected, atol=1e-4)
    volume = rng.random((23, 57, 61), dtype=np.float32)  # odd sizes; 60-px in-plane tiles: 3 x 4 of them
    tiled = [segment_volume(p, volume, memory_budget=2**28, tile=60) for p in (onnx_predictor, torch_predictor)]
    assert tiled[0].in_shape == tiled[1].in_shape and tiled[0].in_shape[1:] == (60, 60)
    np.testing.assert_allclose(tiled[0].probabilities, tiled[1].probabilities, atol=1e-4)


@pytest.mark.numerics
def test_torchscript_3d_runs_other_sizes(exported, model, rng):
    traced = torch.jit.load(str(exported[1]))
    x = torch.from_numpy(rng.random((1, 1, 22, 52, 48), dtype=np.float32))
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(traced(x), expected, rtol=0.0, atol=1e-5 * expected.abs().max().item())


def test_export_refuses_a_voxel_size_for_2d_and_a_bad_one(tmp_path):
    from biounet.integrations.export import export_metadata

    with pytest.raises(ValueError, match="voxel size .* is for 3D U-Nets"):
        export_metadata(UNet(ModelConfig(depth=2, base_channels=2)), normalization="minmax", voxel_size_um=VOXEL)
    with pytest.raises(ValueError, match="three positive lengths"):
        export_metadata(UNet(CONFIG), normalization="minmax", voxel_size_um=(1.0, 0.5))
    assert "voxel_size_um" not in export_metadata(UNet(ModelConfig(depth=2, base_channels=2)), normalization="minmax")


@pytest.mark.numerics
def test_cli_export_then_predict_a_volume_with_onnx(checkpoint, tmp_path):
    """``biounet predict model.onnx volume.h5`` tiles in 3D and writes what the checkpoint writes."""
    h5py = pytest.importorskip("h5py")
    pytest.importorskip("onnxruntime")
    import tifffile

    from biounet.integrations.export import read_metadata

    onnx_path = tmp_path / "m.onnx"
    assert main(["export", str(checkpoint), "--format", "onnx", "--out", str(onnx_path), "-q"]) == 0
    assert read_metadata(onnx_path)["voxel_size_um"] == list(VOXEL)  # from the checkpoint's train_config
    volume = tmp_path / "vol.h5"
    with h5py.File(volume, "w") as handle:
        handle.create_dataset("raw", data=blobs_volume((21, 50, 47))).attrs["element_size_um"] = VOXEL
    for model, out in ((onnx_path, "onnx"), (checkpoint, "torch")):
        assert main(["predict", str(model), str(volume), "--out", str(tmp_path / out), "--save-probabilities",
                     "--tile", "60", "--precision", "fp32", "-q"]) == 0
    probs = [tifffile.imread(tmp_path / out / "vol_prob.tif") for out in ("onnx", "torch")]
    assert probs[0].shape == (21, 3, 50, 47)  # (Z, K, Y, X)
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-4)
    assert tifffile.imread(tmp_path / "onnx" / "vol.tif").shape == (21, 50, 47)


# --- bioimage.io ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def package(checkpoint, tmp_path_factory) -> Path:
    """A 3D model's package, written by ``biounet export --format bioimageio`` from its checkpoint."""
    pytest.importorskip("bioimageio.core")
    pytest.importorskip("onnx")
    out = tmp_path_factory.mktemp("bioimageio3d") / "package"
    assert main(["export", str(checkpoint), "--format", "bioimageio", "--out", str(out), "-q"]) == 0
    return out


def test_package_describes_the_z_axis(package):
    from bioimageio.spec import load_description

    from biounet.integrations.bioimageio import YAML_NAME

    descr = load_description(package / YAML_NAME)
    (inp,), (out,) = descr.inputs, descr.outputs
    assert [str(a.id) for a in inp.axes] == [str(a.id) for a in out.axes] == ["batch", "channel", "z", "y", "x"]
    assert [(a.size.min, a.size.step) for a in inp.axes[2:]] == [(18, 2), (44, 4), (44, 4)]
    assert [a.size.offset for a in out.axes[2:]] == [-16, -40, -40]
    assert [(str(a.unit), a.scale) for a in inp.axes[2:]] == [("micrometer", v) for v in VOXEL]
    assert [str(a) for a in inp.preprocessing[1].kwargs.axes] == ["z", "y", "x"]  # the volume as a whole
    test_input, test_output = np.load(package / "test_input.npy"), np.load(package / "test_output.npy")
    assert test_input.shape == (1, 1, 18, 48, 48) and test_output.shape == (1, 3, 2, 8, 8)
    assert "3d" in descr.tags and descr.config.biounet["flat_levels"] == 1


@pytest.mark.numerics
@pytest.mark.slow
def test_3d_package_passes_bioimageio_model_test(package):
    from bioimageio.core import test_model as bioimageio_test_model

    from biounet.integrations.bioimageio import YAML_NAME

    summary = bioimageio_test_model(package / YAML_NAME)  # all three weight formats on the test volume
    assert summary.status == "passed", summary.format()
    tested = {detail.loc[1] for detail in summary.details if len(detail.loc) > 1 and detail.loc[0] == "weights"}
    assert tested == {"pytorch_state_dict", "torchscript", "onnx"}


@pytest.mark.numerics
def test_3d_package_output_is_biounets_on_the_whole_volume_normalised(package, model):
    """The test output is the network on the volume normalised as a whole (1st..99.8th percentile of all voxels)."""
    raw = np.load(package / "test_input.npy").astype(np.float64)
    low, high = np.percentile(raw, (1.0, 99.8))
    expected = TorchPredictor(model, fuse=False)(((raw - low) / (high - low)).astype(np.float32))
    np.testing.assert_allclose(np.load(package / "test_output.npy"), expected, atol=1e-5)


# --- napari -----------------------------------------------------------------------------------------------------


def threshold_model_3d(path: Path, threshold: float = 0.5) -> Path:
    """A 3D U-Net (one in-plane-only level) whose class 1 is exactly where the normalised volume exceeds
    ``threshold``: the input passes through the top level's centre taps and the skip connection, all else is 0."""
    model = UNet(ModelConfig(dims=3, depth=2, base_channels=4, flat_levels=1, variant="cicek"))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for conv in (model.encoder[0][0], model.encoder[0][2], model.decoder[-1][2]):
            conv.weight[(0, 0, *(k // 2 for k in conv.kernel_size))] = 1.0
        skip = model.upsamplers[-1].out_channels  # decoder input: up-sampled channels, then the skip's
        conv = model.decoder[-1][0]
        conv.weight[(0, skip, *(k // 2 for k in conv.kernel_size))] = 1.0
        model.head.weight[1, 0, 0, 0, 0] = 50.0
        model.head.bias[1] = -50.0 * threshold
    return save_checkpoint(path, model_payload(model, normalization="percentile", target="paper"))


def _napari():
    pytest.importorskip("napari")
    pytest.importorskip("magicgui")
    from biounet.integrations import napari as plugin

    return plugin


def _wait(widget, timeout_s: float = 120.0) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout_s
    while widget.busy:
        QApplication.processEvents()
        if time.monotonic() > end:
            raise TimeoutError(f"worker still running after {timeout_s} s")
        time.sleep(0.01)
    QApplication.processEvents()


def test_segment_array_gives_3d_objects_of_a_3d_model(tmp_path):
    plugin = _napari()
    from biounet.inference.predict import load_predictor

    volume = blobs_volume((20, 64, 60))
    predictor = load_predictor(threshold_model_3d(tmp_path / "t3.pt"), device="cpu", precision="fp32")
    steps: list[tuple[int, int]] = []
    result = plugin.segment_array(predictor, volume, settings=plugin.SegmentSettings(tile=60, probabilities=True),
                                  progress=lambda done, total: steps.append((done, total)))
    low, high = np.percentile(volume.astype(np.float64), (1.0, 99.8))  # the volume normalised as a whole
    foreground = (volume - low) / (high - low) > 0.5
    np.testing.assert_array_equal(result.labels, instances_from_foreground(foreground))
    assert result.labels.shape == volume.shape and result.labels.dtype == np.int32
    objects = [np.unique(np.nonzero(result.labels == k)[0]).size for k in range(1, result.labels.max() + 1)]
    assert result.labels.max() >= 2 and min(objects) >= 3  # ids are 3D objects spanning several planes
    assert result.probabilities.shape == (20, 2, 64, 60)  # (Z, K, Y, X), as a stack of planes gives
    assert result.in_shape is not None and result.in_shape[1:] == (60, 60)
    assert steps[-1][0] == steps[-1][1] > 1


def test_segment_array_refuses_a_2d_layer_for_a_3d_model(model):
    plugin = _napari()
    with pytest.raises(ValueError, match="2D image.*3D U-Net"):
        plugin.segment_array(TorchPredictor(model), np.zeros((64, 64), np.float32))


def test_a_2d_model_still_segments_a_stack_plane_by_plane(rng):
    plugin = _napari()
    torch.manual_seed(0)
    predictor = TorchPredictor(UNet(ModelConfig(depth=2, base_channels=2)).eval())
    stack = rng.random((3, 50, 50), dtype=np.float32)
    settings = plugin.SegmentSettings(instances=False)
    result = plugin.segment_array(predictor, stack, settings=settings)
    assert result.labels.shape == (3, 50, 50) and result.in_shape is None
    for z in range(3):
        np.testing.assert_array_equal(result.labels[z], plugin.segment_array(predictor, stack[z],
                                                                             settings=settings).labels)


def test_segment_widget_adds_3d_layers_on_the_layers_scale(tmp_path):
    plugin = _napari()
    from napari.components import ViewerModel

    viewer = ViewerModel()
    volume = blobs_volume((18, 48, 48), seed=1)
    viewer.add_image(volume, name="stack", scale=(2.0, 0.5, 0.5))
    widget = plugin.SegmentWidget(viewer)
    widget.image_layer.value = viewer.layers["stack"]
    widget.model_file.value = threshold_model_3d(tmp_path / "t3.pt")
    widget.precision.value, widget.probabilities.value = "fp32", True
    assert widget.start() is not None
    _wait(widget)
    assert widget.status.value.startswith("done") and "3D tiles" in widget.status.value, widget.status.value
    labels = viewer.layers["stack instances"]
    assert labels.data.shape == volume.shape and labels.data.max() >= 1
    np.testing.assert_array_equal(labels.scale, (2.0, 0.5, 0.5))
    assert viewer.layers["stack p(class1)"].data.shape == volume.shape


def test_volume_settings_follow_the_layer():
    plugin = _napari()
    volume = SimpleNamespace(data=np.zeros((5, 8, 8)), scale=np.array([2.0, 0.5, 0.5]), rgb=False)
    assert plugin.volume_settings(volume) == {"dims": 3, "tile": 132, "voxel_size": (2.0, 0.5, 0.5)}
    assert plugin.volume_settings(SimpleNamespace(data=np.zeros((5, 8, 8)), scale=np.ones(3), rgb=False))[
        "voxel_size"] is None  # napari's default scale says nothing about the voxel size
    assert plugin.volume_settings(SimpleNamespace(data=np.zeros((8, 8, 3)), scale=np.ones(2), rgb=True)) == {}
    assert plugin.volume_settings(SimpleNamespace(data=np.zeros((8, 8)), scale=np.ones(2), rgb=False)) == {}


def test_train_on_pair_refuses_a_volume_for_2d_and_an_image_for_3d(tmp_path):
    plugin = _napari()
    volume, labels = np.zeros((4, 16, 16), np.float32), np.ones((4, 16, 16), np.uint16)
    with pytest.raises(ValueError, match="volume trains a 3D U-Net"):
        plugin.train_on_pair(volume, labels, tmp_path / "a")
    with pytest.raises(ValueError, match="3D U-Net trains on a"):
        plugin.train_on_pair(volume[0], labels[0], tmp_path / "b", settings=plugin.TrainSettings(dims=3))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_train_on_a_painted_volume_gives_a_3d_model(tmp_path):
    plugin = _napari()
    volume = blobs_volume((24, 64, 64), seed=2)
    labels = instances_from_foreground(volume > 120).astype(np.uint16)
    settings = plugin.TrainSettings(dims=3, time_budget_s=3.0, base_channels=2, tile=92, voxel_size=VOXEL)
    path = plugin.train_on_pair(volume, labels, tmp_path, settings=settings)
    payload = load_checkpoint(path)
    assert (payload["model_config"]["dims"], payload["model_config"]["variant"]) == (3, "cicek")
    assert payload["model_config"]["flat_levels"] == 1  # z twice as deep: one in-plane-only level
    assert tuple(payload["train_config"]["voxel_size"]) == VOXEL
