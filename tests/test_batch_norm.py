"""Batch normalisation (``--batch-norm``): statistics recomputed for the current weights before validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biounet.core.model import ModelConfig, UNet
from biounet.training.train import recalibrate_batch_norm


@pytest.mark.numerics
def test_recalibrated_eval_mode_matches_the_training_forward_pass(rng):
    """With one image the size of the tile, every crop is the image itself: eval mode with the recomputed statistics
    gives the train-mode output (batch statistics, dropout off), where the stale statistics give something else."""
    torch.manual_seed(0)
    model = UNet(ModelConfig(depth=2, base_channels=4, batch_norm=True))
    image = rng.normal(3.0, 2.0, size=(92, 92, 1)).astype(np.float32)
    batch = torch.from_numpy(image.transpose(2, 0, 1)[None].copy())
    for layer in model.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.running_mean.fill_(5.0)
    model.eval()
    with torch.no_grad():
        stale = model(batch)
        for layer in model.modules():  # batch statistics; the network's own dropout stays off
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.train()
        reference = model(batch)
    model.train()
    recalibrate_batch_norm(model, [image], tile=92, device=torch.device("cpu"), precision="fp32",
                           rng=np.random.default_rng(0), count=3)
    assert model.training  # the mode it was in is restored
    model.eval()
    with torch.no_grad():
        calibrated = model(batch)
    # equal up to the running variance being the unbiased one (n / (n - 1) on the deepest 16x16 maps)
    error, stale_error = (calibrated - reference).abs(), (stale - reference).abs()
    assert error.max() < 0.05 and error.mean() < 0.005, (error.max(), error.mean())
    assert stale_error.mean() > 100 * error.mean()
    assert all(layer.momentum == 0.1 for layer in model.modules() if isinstance(layer, torch.nn.BatchNorm2d))


def test_recalibration_leaves_a_network_without_batch_norm_alone(rng):
    model = UNet(ModelConfig(depth=2, base_channels=4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recalibrate_batch_norm(model, [rng.random((50, 60, 1), dtype=np.float32)], tile=92, device=torch.device("cpu"),
                           precision="fp32", rng=np.random.default_rng(0))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.numerics
def test_a_batch_norm_network_tiles_seamlessly(rng):
    """In eval mode batch norm is a fixed affine map per channel, so overlap-tile prediction equals one pass."""
    from biounet.inference.predict import TorchPredictor, predict_image

    torch.manual_seed(1)
    model = UNet(ModelConfig(depth=2, base_channels=4, batch_norm=True))
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.5, 0.5)
                layer.running_var.uniform_(0.5, 2.0)
    predictor = TorchPredictor(model, precision="fp32")
    image = rng.random((150, 170, 1), dtype=np.float32)
    whole = predict_image(predictor, image, tile=212)  # one tile covers it
    tiled = predict_image(predictor, image, tile=60)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
