"""Analytic FLOP count: a hand-computed golden value and agreement with the layers a real forward pass runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from biounet.core.flops import conv_costs, conv_flops
from biounet.core.model import ModelConfig, UNet


def test_conv_flops_golden_depth1():
    # depth 1, base 2, 1 channel in, 2 classes, 20 px tile; 2 * c_in * c_out * k^2 * side^2 per layer:
    # encoder0: 1->2 at 18: 2*1*2*9*324 = 11664;  2->2 at 16: 2*2*2*9*256 = 18432;  pool -> 8
    # encoder1: 2->4 at 6:  2*2*4*9*36  = 5184;   4->4 at 4:  2*4*4*9*16  = 4608
    # up-conv 4->2, 2x2 stride 2, out 8: one tap per output pixel: 2*4*2*64 = 1024
    # decoder0: 4->2 at 6:  2*4*2*9*36  = 5184;   2->2 at 4:  2*2*2*9*16  = 1152
    # head 1x1 2->2 at 4: 2*2*2*16 = 128
    config = ModelConfig(depth=1, base_channels=2)
    assert conv_flops(config, 20) == 11664 + 18432 + 5184 + 4608 + 1024 + 5184 + 1152 + 128 == 47376
    assert [c.out_side for c in conv_costs(config, 20)] == [18, 16, 6, 4, 8, 6, 4, 4]


def _measured_flops(config: ModelConfig, in_tile: int) -> int:
    """2 * MACs from the output shapes of the convolutions a real forward pass runs."""
    model = UNet(config).eval()
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, (nn.Conv2d, nn.ConvTranspose2d))
        taps = module.kernel_size[0] * module.kernel_size[1]
        if isinstance(module, nn.ConvTranspose2d):
            taps //= module.stride[0] * module.stride[1]  # each output pixel sees one tap of the 2x2 kernel
        total += 2 * module.in_channels * module.out_channels * taps * output.shape[-2] * output.shape[-1]

    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            module.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, config.in_channels, in_tile, in_tile))
    return total


@pytest.mark.parametrize(
    ("config", "in_tile"),
    [
        (ModelConfig(depth=2, base_channels=4), 76),
        (ModelConfig(depth=3, base_channels=3, in_channels=3, num_classes=4, variant="release"), 124),
        (ModelConfig(depth=2, base_channels=4, padding="same", batch_norm=True), 32),
    ],
)
def test_conv_flops_matches_forward_pass(config, in_tile):
    assert conv_flops(config, in_tile) == _measured_flops(config, in_tile)


def test_conv_flops_rejects_invalid_tile():
    with pytest.raises(ValueError, match="nearest valid sizes: 188 or 204"):
        conv_flops(ModelConfig(), 190)
