"""ONNX and TorchScript export: agreement with the torch model, the metadata contract, and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import assert_labels_agree_where_decided

from biounet.cli import main
from biounet.core.model import ModelConfig, UNet, smallest_tile
from biounet.data.checkpoint import model_payload, save_checkpoint
from biounet.inference.predict import TorchPredictor, load_predictor, predict_image
from biounet.integrations.export import (
    OnnxPredictor,
    export_metadata,
    export_model,
    read_metadata,
)

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

CONFIGS = {
    "depth2": ModelConfig(depth=2, base_channels=4),
    "depth3-rgb": ModelConfig(depth=3, base_channels=4, in_channels=3, num_classes=3, variant="release"),
    "same": ModelConfig(depth=2, base_channels=4, padding="same", batch_norm=True),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[UNet, Path, Path]]:
    """Per config: the model, its ONNX export and its TorchScript export."""
    out = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    result = {}
    for name, config in CONFIGS.items():
        model = UNet(config).eval()
        names = [f"c{k}" for k in range(config.num_classes)]
        onnx_path = export_model(model, out / f"{name}.onnx", export_format="onnx", normalization="minmax",
                                 class_names=names)
        ts_path = export_model(model, out / f"{name}.ts", export_format="torchscript", normalization="minmax",
                               class_names=names)
        result[name] = (model, onnx_path, ts_path)
    return result


@pytest.mark.numerics
@pytest.mark.parametrize("name", list(CONFIGS))
def test_onnx_predictor_matches_torch(exported, rng, name):
    model, onnx_path, _ = exported[name]
    image = rng.random((45, 71, model.config.in_channels)).astype(np.float32)  # odd sizes, several tiles
    torch_predictor, onnx_predictor = TorchPredictor(model), OnnxPredictor(onnx_path)
    align = 2**model.config.depth
    tile = 64 if model.config.padding == "same" else smallest_tile(torch_predictor) + 4 * align  # several tiles
    for size in (None, tile):
        expected = predict_image(torch_predictor, image, tile=size, batch_size=2)
        np.testing.assert_allclose(predict_image(onnx_predictor, image, tile=size, batch_size=2), expected,
                                   atol=1e-4)


@pytest.mark.numerics
def test_onnx_predictor_tta_matches_torch(exported, rng):
    model, onnx_path, _ = exported["depth2"]
    image = rng.random((30, 41)).astype(np.float32)
    expected = predict_image(TorchPredictor(model, tta=True), image)
    np.testing.assert_allclose(predict_image(OnnxPredictor(onnx_path, tta=True), image), expected, atol=1e-4)


@pytest.mark.numerics
@pytest.mark.parametrize("name", list(CONFIGS))
def test_torchscript_matches_torch_at_other_sizes(exported, rng, name):
    model, _, ts_path = exported[name]
    traced = torch.jit.load(str(ts_path))
    tile = 64 if model.config.padding == "same" else 124  # the trace's example tile is the smallest tile
    x = torch.from_numpy(rng.random((3, model.config.in_channels, tile, tile + 16)).astype(np.float32))
    with torch.no_grad():
        expected = model(x)
        # the trace may run other kernels (layout, fusion): fp32 rounding relative to the logits' scale, not to a
        # logit near 0 (seen: up to 9e-7 of max |logit|)
        torch.testing.assert_close(traced(x), expected, rtol=0.0, atol=1e-5 * expected.abs().max().item())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_metadata_round_trips(exported, name):
    model, onnx_path, ts_path = exported[name]
    names = [f"c{k}" for k in range(model.config.num_classes)]
    for path, fmt in ((onnx_path, "onnx"), (ts_path, "torchscript")):
        metadata = read_metadata(path)
        assert metadata == export_metadata(model, normalization="minmax", class_names=names, export_format=fmt)
        assert ModelConfig(**metadata["model_config"]) == model.config
        assert metadata["margin"] == model.margin
        assert metadata["align"] == 2**model.config.depth
        assert metadata["class_names"] == names
        assert metadata["smallest_tile"] == smallest_tile(TorchPredictor(model))


def test_metadata_of_paper_network():
    metadata = export_metadata(UNet(ModelConfig(base_channels=1)), normalization="percentile")
    assert (metadata["margin"], metadata["smallest_input_size"], metadata["smallest_tile"]) == (92, 188, 204)
    assert metadata["valid_tile_sizes"].startswith("in_tile = 188 + 16 * k for k >= 0")
    assert metadata["tile_examples"] == {"204": 20, "220": 36, "236": 52, "252": 68}  # in_tile - 2 * 92


def test_export_rejects_bad_arguments(tmp_path):
    model = UNet(ModelConfig(depth=2, base_channels=2))
    with pytest.raises(ValueError, match="format must be one of"):
        export_model(model, tmp_path / "m.onnx", export_format="tflite", normalization="minmax")
    with pytest.raises(ValueError, match="suffix .onnx"):
        export_model(model, tmp_path / "m.bin", export_format="onnx", normalization="minmax")
    with pytest.raises(ValueError, match="got 1 class names for a network with 2 classes"):
        export_model(model, tmp_path / "m.onnx", export_format="onnx", normalization="minmax", class_names=["a"])
    assert list(tmp_path.iterdir()) == []


def test_read_metadata_rejects_other_files(tmp_path, exported):
    garbage = tmp_path / "x.onnx"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="neither an ONNX nor a TorchScript model"):
        read_metadata(garbage)
    with pytest.raises(ValueError, match="precision 'bf16' is not supported for ONNX"):
        OnnxPredictor(exported["depth2"][1], precision="bf16")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    model = UNet(ModelConfig(depth=3, base_channels=4))
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    return save_checkpoint(path, model_payload(model, normalization="percentile", class_names=["bg", "cell"]))


@pytest.mark.numerics
def test_cli_export_then_predict_with_onnx(checkpoint, tmp_path, rng, capsys):
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", str(checkpoint), "--format", "onnx", "--out", str(onnx_path)]) == 0
    assert read_metadata(onnx_path)["class_names"] == ["bg", "cell"]
    assert isinstance(load_predictor(onnx_path, device="auto"), OnnxPredictor)
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, rng.integers(0, 256, (53, 67), dtype=np.uint8))
    for model, out in ((onnx_path, tmp_path / "onnx"), (checkpoint, tmp_path / "torch")):
        assert main(["predict", str(model), str(image), "--out", str(out), "--save-probabilities", "-q",
                     "--tile", "148", "--precision", "fp32"]) == 0
    probs = tifffile.imread(tmp_path / "onnx" / "img_prob.tif")
    assert probs.shape == (2, 53, 67)
    torch_probs = tifffile.imread(tmp_path / "torch" / "img_prob.tif")
    np.testing.assert_allclose(probs, torch_probs, atol=1e-4)
    assert_labels_agree_where_decided(tifffile.imread(tmp_path / "onnx" / "img.tif"),
                                      tifffile.imread(tmp_path / "torch" / "img.tif"), torch_probs, 1e-4)


def test_cli_export_torchscript(checkpoint, tmp_path):
    path = tmp_path / "m.ts"
    assert main(["export", str(checkpoint), "--format", "torchscript", "--out", str(path), "-q"]) == 0
    assert read_metadata(path)["format"] == "torchscript"


def test_cli_export_bad_format_exits_2(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(checkpoint), "--format", "tflite", "--out", str(tmp_path / "m.tflite")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "biounet export: error: argument --format: invalid choice: 'tflite'" in err
    assert "onnx" in err and "torchscript" in err


def test_cli_export_wrong_suffix_exits_2(checkpoint, tmp_path, capsys):
    assert main(["export", str(checkpoint), "--format", "onnx", "--out", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("biounet export: error:") and "suffix .onnx" in err
    assert list(tmp_path.iterdir()) == []


def test_cli_predict_with_garbage_onnx_exits_2(tmp_path, rng, capsys):
    model = tmp_path / "bad.onnx"
    model.write_bytes(b"\x00garbage")
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, rng.integers(0, 256, (20, 20), dtype=np.uint8))
    assert main(["predict", str(model), str(image), "--out", str(tmp_path / "out")]) == 2
    assert "neither an ONNX nor a TorchScript model" in capsys.readouterr().err
