from __future__ import annotations

import pytest
import torch

from biounet.core.model import (
    ModelConfig,
    UNet,
    center_crop,
    context_margin,
    count_parameters,
    nearest_valid_size,
    nearest_valid_sizes,
    output_size,
    smallest_input_size,
    valid_input_sizes,
)


@pytest.mark.slow
def test_parameter_count_paper():
    assert count_parameters(UNet(ModelConfig())) == 31_030_658  # PAPER.md section 1


@pytest.mark.slow
def test_parameter_count_release_variant():
    assert count_parameters(UNet(ModelConfig(variant="release"))) == 31_100_354


def test_output_size_matches_paper():
    assert output_size(572) == 388  # Fig. 1
    assert output_size(188) == 4
    assert output_size(444) == 260
    assert output_size(892) == 708


def test_valid_sizes_follow_16k_plus_60():
    sizes = valid_input_sizes(up_to=1000)
    assert sizes == [16 * k + 60 for k in range(8, (1000 - 60) // 16 + 1)]
    for n in range(100, 1000):
        valid = n in sizes
        if valid:
            output_size(n)
        else:
            with pytest.raises(ValueError, match="nearest valid sizes"):
                output_size(n)


def test_margin_and_nearest_sizes():
    assert context_margin() == 92
    assert smallest_input_size() == 188
    assert nearest_valid_sizes(570) == (556, 572)
    assert nearest_valid_sizes(572) == (572, 572)
    assert nearest_valid_size(512) == 508
    assert nearest_valid_sizes(10) == (188, 188)


def test_invalid_size_error_names_nearest():
    with pytest.raises(ValueError, match="556 or 572"):
        output_size(570)


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_forward_shapes_match_size_arithmetic(depth):
    model = UNet(ModelConfig(depth=depth, base_channels=2)).eval()
    size = smallest_input_size(depth) + 2 * 2**depth
    out = model(torch.zeros(1, 1, size, size + 2**depth))
    assert out.shape == (1, 2, output_size(size, depth), output_size(size + 2**depth, depth))
    assert (size - out.shape[-2]) // 2 == context_margin(depth)


@pytest.mark.slow
def test_paper_network_572_to_388():
    model = UNet(ModelConfig(base_channels=4)).eval()  # channel widths don't change the geometry
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 572, 572)).shape == (1, 2, 388, 388)


def test_same_padding_keeps_size_and_batch_norm():
    model = UNet(ModelConfig(depth=3, base_channels=4, padding="same", batch_norm=True, in_channels=3,
                             num_classes=4)).eval()
    assert model(torch.zeros(2, 3, 48, 64)).shape == (2, 4, 48, 64)
    assert model.margin == 0


def test_every_parameter_gets_a_gradient_and_no_nan():
    model = UNet(ModelConfig(depth=2, base_channels=4, variant="release"))
    out = model(torch.randn(2, 1, 60, 60))
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.slow
def test_he_normal_init():
    model = UNet(ModelConfig(base_channels=64))
    conv = model.encoder[1][0]  # 3x3 conv over 64 channels: fan-in 576
    assert conv.weight.std().item() == pytest.approx((2 / 576) ** 0.5, rel=0.02)
    assert torch.all(conv.bias == 0)


@pytest.mark.numerics
def test_dropout_only_in_training():
    model = UNet(ModelConfig(depth=2, base_channels=4))
    x = torch.randn(1, 1, 60, 60)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    assert not torch.equal(a, model(x))


def test_release_dropout_levels():
    assert UNet(ModelConfig(depth=4, base_channels=2)).dropout_levels == [4]
    assert UNet(ModelConfig(depth=4, base_channels=2, variant="release")).dropout_levels == [3, 4]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_classes": 1}, "num_classes"),
        ({"depth": 0}, "depth"),
        ({"padding": "full"}, "padding"),
        ({"variant": "caffe"}, "variant"),
        ({"in_channels": 0}, "in_channels"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kwargs)


def test_center_crop():
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    assert center_crop(x, (2, 2)).flatten().tolist() == [14.0, 15.0, 20.0, 21.0]
    with pytest.raises(ValueError, match="larger size"):
        center_crop(x, (8, 8))
