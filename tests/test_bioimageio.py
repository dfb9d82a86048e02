"""bioimage.io package export: bioimageio.core's own model test, and the package weights against biounet."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("bioimageio.core")
pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from bioimageio.core import test_model as bioimageio_test_model
from bioimageio.spec import load_description

from biounet.cli import main
from biounet.core.model import ModelConfig, UNet
from biounet.data.checkpoint import model_payload, save_checkpoint
from biounet.inference.predict import TorchPredictor
from biounet.integrations.bioimageio import YAML_NAME, export_package

# torch 2.13 deprecates torch.jit.load, which bioimageio.core and this test use to run the TorchScript weights.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")

CONFIG = ModelConfig(depth=2, base_channels=4)  # valid sizes 44 + 4 n, output = input - 40
CLASS_NAMES = ["background", "cell"]


@pytest.fixture(scope="module")
def model() -> UNet:
    torch.manual_seed(0)
    return UNet(CONFIG).eval()


@pytest.fixture(scope="module")
def package(model, tmp_path_factory) -> Path:
    """A package folder written by ``biounet export --format bioimageio`` from a checkpoint."""
    tmp = tmp_path_factory.mktemp("bioimageio")
    checkpoint = save_checkpoint(tmp / "model.pt", model_payload(model, normalization="percentile",
                                                                 class_names=CLASS_NAMES))
    assert main(["export", str(checkpoint), "--format", "bioimageio", "--out", str(tmp / "package"), "-q"]) == 0
    return tmp / "package"


@pytest.mark.numerics
def test_package_passes_bioimageio_model_test(package):
    summary = bioimageio_test_model(package / YAML_NAME)  # all three weight formats on the test tensors
    assert summary.status == "passed", summary.format()
    tested = {detail.loc[1] for detail in summary.details if len(detail.loc) > 1 and detail.loc[0] == "weights"}
    assert tested == {"pytorch_state_dict", "torchscript", "onnx"}


def test_package_describes_the_tiling_contract(package):
    descr = load_description(package / YAML_NAME)
    (inp,), (out,) = descr.inputs, descr.outputs
    y_in, y_out = inp.axes[2], out.axes[2]
    assert (y_in.size.min, y_in.size.step) == (44, 4)
    assert (str(y_out.size.tensor_id), str(y_out.size.axis_id), y_out.size.offset) == ("raw", "y", -40)
    assert [p.id for p in inp.preprocessing] == ["ensure_dtype", "scale_range", "ensure_dtype"]
    kwargs = inp.preprocessing[1].kwargs
    assert (kwargs.min_percentile, kwargs.max_percentile, [str(a) for a in kwargs.axes]) == (1.0, 99.8, ["y", "x"])
    assert out.axes[1].channel_names == CLASS_NAMES
    assert {p.name for p in package.iterdir()} == {
        YAML_NAME, "README.md", "cover.png", "test_input.npy", "test_output.npy", "weights.pt",
        "weights_torchscript.pt", "weights.onnx"}


@pytest.mark.numerics
def test_package_weights_match_biounet_predictor(package, model, rng):
    tile = rng.random((2, 1, 64, 64), dtype=np.float32)  # a valid size other than the test tensor's
    expected = TorchPredictor(model)(tile)
    assert expected.shape == (2, 2, 24, 24)
    traced = torch.jit.load(str(package / "weights_torchscript.pt"), map_location="cpu").eval()
    with torch.inference_mode():
        np.testing.assert_allclose(traced(torch.from_numpy(tile)).numpy(), expected, atol=1e-4)
    session = onnxruntime.InferenceSession(str(package / "weights.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"raw": tile})[0], expected, atol=1e-4)


@pytest.mark.numerics
@pytest.mark.parametrize("normalization", ["range", "minmax", "zscore"])
def test_preprocessing_reproduces_each_normalization(model, tmp_path, normalization):
    # The test output is biounet's normalisation + network; bioimageio.core must reproduce it with its own steps.
    path = export_package(model, tmp_path / "package.zip", normalization=normalization, class_names=CLASS_NAMES)
    summary = bioimageio_test_model(path, weight_format="onnx")
    assert summary.status == "passed", summary.format()


def test_export_refuses_a_non_empty_folder_and_same_padding(model, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="exists"):
        export_package(model, tmp_path / "taken", normalization="percentile")
    with pytest.raises(ValueError, match="valid-padded"):
        export_package(UNet(ModelConfig(depth=2, base_channels=4, padding="same")), tmp_path / "same",
                       normalization="percentile")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # nothing half-written


def test_missing_bioimageio_names_the_extra(model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bioimageio.spec", None)  # as if not installed
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'biounet\[bioimageio\]'"):
        export_package(model, tmp_path / "package", normalization="percentile")


def test_package_records_the_models_pixel_size(model, tmp_path):
    """A model that knows its training pixel size tells bioimage.io consumers: space axes in micrometres."""
    out = export_package(model, tmp_path / "sized", normalization="percentile", pixel_size_um=(0.19, 0.2))
    descr = load_description(out / YAML_NAME)
    for tensor in (descr.inputs[0], descr.outputs[0]):
        y, x = tensor.axes[2], tensor.axes[3]
        assert (str(y.unit), y.scale, str(x.unit), x.scale) == ("micrometer", 0.19, "micrometer", 0.2)
