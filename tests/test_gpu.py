"""The CUDA path: seamless tiling and bf16 autocast on a GPU. Skipped where CUDA is not available (CI)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biounet.core.model import ModelConfig, UNet
from biounet.inference.predict import TorchPredictor, predict_image

pytestmark = [pytest.mark.gpu, pytest.mark.numerics,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _model() -> UNet:
    torch.manual_seed(0)
    return UNet(ModelConfig(depth=3, base_channels=8)).eval()


def test_cuda_tiling_equals_cpu_whole_image(monkeypatch):
    # torch runs "fp32" convolutions on CUDA in TF32 by default (10 mantissa bits: probabilities ~1e-3 off fp32's,
    # emulated on a CPU); in fp32 proper only the summation orders of cuDNN's and oneDNN's algorithms differ
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    image = np.random.default_rng(0).random((150, 170, 1)).astype(np.float32)
    model = _model()
    cpu = predict_image(TorchPredictor(model, device=torch.device("cpu"), precision="fp32"), image, tile=None)
    cuda = predict_image(TorchPredictor(model, device=torch.device("cuda"), precision="fp32"), image, tile=132)
    np.testing.assert_allclose(cuda, cpu, atol=1e-4)


def test_cuda_bf16_agrees_with_fp32():
    image = np.random.default_rng(1).random((200, 200, 1)).astype(np.float32)
    model = _model()
    fp32 = predict_image(TorchPredictor(model, device=torch.device("cuda"), precision="fp32"), image)
    bf16 = predict_image(TorchPredictor(model, device=torch.device("cuda"), precision="bf16"), image)
    # bf16 rounds each operand by up to 2^-9; over this network's ~18 layers the probabilities move by ~1e-2
    # (1.4e-2 with the CPU's bf16 kernels); fp32 here is TF32 (~1e-3)
    assert np.abs(fp32 - bf16).max() < 0.05
