"""Inference-time fusion (:mod:`biounet.inference.fusion`): the fused network computes what the module computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_labels_agree_where_decided

from biounet.core.device import cpu_has_native_bf16
from biounet.core.model import ModelConfig, UNet
from biounet.inference.fusion import FusedUNet, fold_batch_norm, fusion_available
from biounet.inference.predict import TorchPredictor

pytestmark = [pytest.mark.numerics,
              pytest.mark.skipif(not fusion_available(), reason="this torch build has no oneDNN fused convolution")]


def _with_statistics(model: UNet, seed: int = 0) -> UNet:
    """``model`` with batch-norm statistics and affine parameters away from the identity."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.rand(size, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(size, generator=generator) - 0.5)
    return model.eval()


def test_folded_batch_norm_is_the_convolution_then_the_norm():
    torch.manual_seed(0)
    conv, norm = torch.nn.Conv2d(3, 5, 3, bias=False), torch.nn.BatchNorm2d(5)
    _with_statistics(torch.nn.Sequential(conv, norm))  # type: ignore[arg-type]
    weight, bias = fold_batch_norm(conv, norm)
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(torch.conv2d(x, weight, bias), norm.eval()(conv(x)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("config", [
    ModelConfig(depth=2, base_channels=4),
    ModelConfig(depth=2, base_channels=4, batch_norm=True, in_channels=2, num_classes=3),
    ModelConfig(depth=3, base_channels=4, variant="release"),
    ModelConfig(depth=2, base_channels=4, padding="same", batch_norm=True),
    ModelConfig(depth=2, base_channels=4, distance_channels=1),
], ids=["paper", "batch-norm", "release", "same", "distance"])
def test_fused_network_equals_the_module(config):
    torch.manual_seed(0)
    model = _with_statistics(UNet(config))
    x = torch.randn(2, config.in_channels, 92, 92).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = model(x)
        # Folding rounds each weight and reorders the sums: fp32 errors relative to the scale of the terms summed,
        # not to a logit near 0 (seen: 6e-7 of max |logit| with every CPU kernel set, up to 1.5e-5 absolute)
        torch.testing.assert_close(FusedUNet(model)(x), expected, rtol=0.0, atol=1e-5 * expected.abs().max().item())


def test_predictor_fuses_and_follows_changed_weights():
    torch.manual_seed(0)
    model = UNet(ModelConfig(depth=2, base_channels=4, batch_norm=True))
    fused, plain = TorchPredictor(model, fuse=True), TorchPredictor(model, fuse=False)
    x = np.random.default_rng(0).random((1, 1, 92, 92), dtype=np.float32)
    np.testing.assert_allclose(fused(x), plain(x), atol=1e-5)
    assert fused._fused is not None  # the fused network ran
    _with_statistics(model, seed=1)  # new weights in place, as load_state_dict or a fine-tuning step writes them
    with torch.no_grad():
        model.head.bias.add_(torch.tensor([1.0, -1.0]))
    np.testing.assert_allclose(fused(x), plain(x), atol=1e-5)


def test_bf16_fused_agrees_with_autocast():
    # where the CPU has no bf16 oneDNN kernels (AVX2 only) the predictor falls back to autocast, never raises
    assert fusion_available(torch.bfloat16) or not fusion_available() or not cpu_has_native_bf16()
    torch.manual_seed(0)
    model = UNet(ModelConfig(depth=2, base_channels=8))
    x = np.random.default_rng(0).random((1, 1, 124, 124), dtype=np.float32)
    fused = TorchPredictor(model, precision="bf16", fuse=True)(x)
    autocast = TorchPredictor(model, precision="bf16", fuse=False)(x)
    # bf16 keeps 8 bits (rounding 2^-9 = 2e-3 per operand); over the ~10 layers each path's probabilities lie within
    # ~1e-2 of fp32's (seen: 4e-3 here, 1.4e-2 for depth 3), so the two within 2e-2 of each other ...
    assert np.abs(fused - autocast).max() < 0.02
    # ... and their classes agree wherever the top two are more than 2 x 0.02 apart
    assert_labels_agree_where_decided(fused.argmax(1)[0], autocast.argmax(1)[0], autocast[0], 0.02)


@pytest.mark.parametrize("channels_last", [True, False])
def test_fused_tta_and_layouts_equal_the_module(channels_last):
    torch.manual_seed(0)
    model = _with_statistics(UNet(ModelConfig(depth=2, base_channels=4, batch_norm=True)))
    x = np.random.default_rng(1).random((2, 1, 92, 92), dtype=np.float32)
    fused = TorchPredictor(model, tta=True, channels_last=channels_last, fuse=True)(x)
    plain = TorchPredictor(model, tta=True, channels_last=channels_last, fuse=False)(x)
    np.testing.assert_allclose(fused, plain, atol=1e-5)


def test_cli_predict_of_a_trained_model_equals_the_module(tmp_path):
    """train -> predict seam: the labels and probabilities `biounet predict` writes (fused network, tile chosen by
    the CLI) equal the unfused module's on the same checkpoint and image."""
    import tifffile

    from biounet.cli import main
    from biounet.data.checkpoint import load_checkpoint, load_model
    from biounet.data.images import write_tiff
    from biounet.data.synthetic import make_sample
    from biounet.inference.predict import PredictOptions, predict_file

    assert main(["train", "--data", "synthetic:cells,n=4,size=96x96", "--out", str(tmp_path / "run"),
                 "--iterations", "4", "--base-channels", "4", "--depth", "2", "--tile", "92", "--batch-norm",
                 "--precision", "fp32", "--val-every", "2", "--workers", "0", "-q"]) == 0
    write_tiff(tmp_path / "img.tif", make_sample("cells", size=(150, 170), rng=5).image[..., 0])
    model = tmp_path / "run" / "model.pt"
    assert main(["predict", str(model), str(tmp_path / "img.tif"), "--out", str(tmp_path / "cli"),
                 "--precision", "fp32", "--save-probabilities", "--no-rescale", "-q"]) == 0
    cli_labels = tifffile.imread(tmp_path / "cli" / "img.tif")
    cli_probs = tifffile.imread(tmp_path / "cli" / "img_prob.tif")
    tta = bool(load_checkpoint(model).get("tta", False))  # the run's validation images may have chosen it
    plain = TorchPredictor(load_model(model), precision="fp32", fuse=False, tta=tta)
    result = predict_file(plain, tmp_path / "img.tif", tmp_path / "plain",
                          PredictOptions(save_probabilities=True, rescale=False))
    plain_probs = tifffile.imread(result.probabilities_path)
    np.testing.assert_allclose(cli_probs, plain_probs, atol=1e-5)
    assert_labels_agree_where_decided(cli_labels, tifffile.imread(result.labels_path), plain_probs, 1e-5)
