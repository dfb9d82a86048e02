"""The CUDA path: seamless tiling and bf16 autocast on a GPU. Skipped where CUDA is not available (CI)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biounet.model import ModelConfig, UNet
from biounet.predict import TorchPredictor, predict_image

pytestmark = [pytest.mark.gpu, pytest.mark.numerics,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _model() -> UNet:
    torch.manual_seed(0)
    return UNet(ModelConfig(depth=3, base_channels=8)).eval()


def test_cuda_tiling_equals_cpu_whole_image():
    image = np.random.default_rng(0).random((150, 170, 1)).astype(np.float32)
    model = _model()
    cpu = predict_image(TorchPredictor(model, device=torch.device("cpu"), precision="fp32"), image, tile=None)
    cuda = predict_image(TorchPredictor(model, device=torch.device("cuda"), precision="fp32"), image, tile=92)
    np.testing.assert_allclose(cuda, cpu, atol=1e-4)


def test_cuda_bf16_agrees_with_fp32():
    image = np.random.default_rng(1).random((200, 200, 1)).astype(np.float32)
    model = _model()
    fp32 = predict_image(TorchPredictor(model, device=torch.device("cuda"), precision="fp32"), image)
    bf16 = predict_image(TorchPredictor(model, device=torch.device("cuda"), precision="bf16"), image)
    assert np.abs(fp32 - bf16).max() < 0.05
