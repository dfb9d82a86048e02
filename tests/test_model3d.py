"""The 3D U-Net (Cicek et al. 2016, arXiv:1606.06650) in core/model.py: widths, per-axis sizes, flat levels."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from biounet.core.model import (
    ModelConfig,
    UNet,
    align_shape,
    anisotropic_levels,
    center_crop,
    cicek_config,
    context_margins,
    count_parameters,
    nearest_valid_shape,
    output_shape,
    smallest_input_shape,
)


def _config(**changes) -> ModelConfig:
    return ModelConfig(**{**ModelConfig(dims=3, depth=2, base_channels=2).to_dict(), **changes})


def _simulated_output_z(z: int, config: ModelConfig) -> int | None:
    """Brute force along z: walk the levels with their z kernel (1 for flat levels) and z pooling."""
    flat = config.flat_levels
    for level in range(config.depth):
        z -= 0 if level < flat else 4
        if z <= 0 or (level >= flat and z % 2):
            return None
        z //= 1 if level < flat else 2
    z -= 4
    for level in reversed(range(config.depth)):
        if z <= 0:
            return None
        z = z if level < flat else 2 * z - 4
    return z if z > 0 else None


def test_cicek_parameter_count_as_in_caffe():
    with torch.device("meta"):  # 19 M parameters: shapes only
        net = UNet(cicek_config())
    assert count_parameters(net, include_norm=False) == 19_069_955  # Cicek et al. (2016), section 2
    norm_channels = 32 + 64 + 64 + 128 + 128 + 256 + 256 + 512 + 2 * 256 + 2 * 128 + 2 * 64
    assert count_parameters(net) == 19_069_955 + 2 * norm_channels  # a scale and a shift per channel
    convs = [m for m in net.modules() if isinstance(m, nn.Conv3d)]
    assert [(m.in_channels, m.out_channels) for m in convs] == [
        (3, 32), (32, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512),
        (768, 256), (256, 256), (384, 128), (128, 128), (192, 64), (64, 64), (64, 3)]
    assert all(m.kernel_size == (3, 3, 3) for m in convs[:-1]) and convs[-1].kernel_size == (1, 1, 1)
    ups = [m for m in net.modules() if isinstance(m, nn.ConvTranspose3d)]
    assert [(m.in_channels, m.out_channels, m.bias) for m in ups] == [(512, 512, None), (256, 256, None),
                                                                       (128, 128, None)]
    assert all(m.kernel_size == m.stride == (2, 2, 2) for m in ups)
    assert sum(isinstance(m, nn.BatchNorm3d) for m in net.modules()) == 14  # before each ReLU


def test_cicek_132_132_116_gives_44_44_28():
    config = cicek_config()
    assert output_shape((116, 132, 132), config) == (28, 44, 44)  # (z, y, x); the paper's 132x132x116 -> 44x44x28
    with torch.device("meta"):
        assert UNet(config).eval()(torch.zeros(1, 3, 116, 132, 132)).shape == (1, 3, 28, 44, 44)
    small = UNet(ModelConfig(**{**config.to_dict(), "base_channels": 1})).eval()  # same geometry, real numbers
    with torch.no_grad():
        assert small(torch.zeros(1, 3, 116, 132, 132)).shape == (1, 3, 28, 44, 44)
    assert context_margins(config, (116, 132, 132)) == (44, 44, 44)
    assert align_shape(config) == (8, 8, 8)


@pytest.mark.parametrize("flat_levels", [0, 1, 2])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_output_shape_agrees_with_forward(flat_levels, padding):
    config = _config(flat_levels=flat_levels, padding=padding, in_channels=2, num_classes=3)
    model = UNet(config).eval()
    assert align_shape(config) == (2 ** (2 - flat_levels), 4, 4)
    for request in [(1, 1, 1), (9, 61, 70), (3, 44, 65), (17, 64, 90)]:
        in_shape = nearest_valid_shape(request, config)
        assert all(size >= want for size, want in zip(in_shape, request))
        with torch.no_grad():
            out = model(torch.randn(1, 2, *in_shape))
        assert out.shape == (1, 3, *output_shape(in_shape, config)) == (1, 3, *model.output_shape(in_shape))
        assert context_margins(config, in_shape) == tuple((i - o) // 2 for i, o in zip(in_shape, out.shape[2:]))
    assert smallest_input_shape(config) == nearest_valid_shape((1, 1, 1), config)


@pytest.mark.parametrize("flat_levels", [0, 1, 2, 3])
def test_z_sizes_against_brute_force(flat_levels):
    config = _config(depth=3, flat_levels=flat_levels)
    in_plane = smallest_input_shape(config)[1:]
    valid_z = [z for z in range(1, 200) if _simulated_output_z(z, config) is not None]
    assert valid_z[0] == smallest_input_shape(config)[0]
    assert all(b - a == 2 ** (3 - flat_levels) for a, b in itertools.pairwise(valid_z))  # an arithmetic series
    for z in range(1, 150):
        expected = _simulated_output_z(z, config)
        if expected is None:
            with pytest.raises(ValueError, match="nearest valid sizes"):
                output_shape((z, *in_plane), config)
            assert nearest_valid_shape((z, *in_plane), config)[0] == min(v for v in valid_z if v >= z)
        else:
            assert output_shape((z, *in_plane), config)[0] == expected
    assert config.flat_levels < 3 or valid_z[:2] == [5, 6]  # all flat: z only meets the bottom's two convs


def test_invalid_shape_names_nearest_valid_sizes():
    with pytest.raises(ValueError, match=r"z 115 \(nearest valid sizes: 108 or 116\).*\(116, 132, 132\)"):
        output_shape((115, 132, 132), cicek_config())
    with pytest.raises(ValueError, match=r"x 130 \(nearest valid sizes: 124 or 132\)"):
        output_shape((116, 132, 130), cicek_config())
    with pytest.raises(ValueError, match="3 spatial sizes"):
        output_shape((132, 132), cicek_config())
    with pytest.raises(ValueError, match="2 spatial sizes"):
        output_shape((116, 132, 132), ModelConfig())


@pytest.mark.parametrize(
    "voxel, depth, expected",
    [
        ((0.284, 0.127, 0.127), 3, 1),  # 0.284 >= 2 * 0.127; then 0.284 < 2 * 0.254
        ((0.235, 0.15, 0.15), 3, 0),  # 0.235 < 0.30
        ((0.5, 0.5, 0.5), 4, 0),
        ((0.1, 0.5, 0.5), 4, 0),  # z finer than in-plane
        ((1.0, 0.1, 0.1), 3, 3),  # would be 3 (0.1 -> 0.2 -> 0.4; 1.0 < 1.6), capped at depth 3 anyway
        ((1.0, 0.1, 0.1), 2, 2),  # capped at depth
        ((2.0, 0.1, 0.1), 5, 4),  # 0.1, 0.2, 0.4, 0.8 all <= 1.0; then 2.0 < 3.2
        ((0.2, 0.1, 0.2), 3, 1),  # exactly 2x the finer in-plane size counts, as nnU-Net's "ratio < 2 pools"
    ],
)
def test_anisotropic_levels(voxel, depth, expected):
    assert anisotropic_levels(voxel, depth) == expected


@pytest.mark.parametrize("voxel, depth", [((1.0, 1.0), 3), ((0.0, 1.0, 1.0), 3), ((1.0, 1.0, 1.0), -1)])
def test_anisotropic_levels_rejects_bad_input(voxel, depth):
    with pytest.raises(ValueError, match="voxel_size_zyx|depth"):
        anisotropic_levels(voxel, depth)


def test_2d_networks_unchanged():
    with torch.device("meta"):
        assert count_parameters(UNet(ModelConfig())) == 31_030_658  # PAPER.md section 1
        assert count_parameters(UNet(ModelConfig(variant="release"))) == 31_100_354
    old_checkpoint = {k: v for k, v in ModelConfig().to_dict().items() if k not in ("dims", "flat_levels")}
    assert ModelConfig(**old_checkpoint) == ModelConfig() and ModelConfig(**old_checkpoint).dims == 2
    model = UNet(ModelConfig(depth=2, base_channels=2))
    assert all(not isinstance(m, (nn.Conv3d, nn.BatchNorm3d)) for m in model.modules())
    assert (model.output_size(68),) * 2 == output_shape((68, 68), model.config) == (28, 28)
    assert (model.margin,) * 2 == context_margins(model.config, (68, 68)) == (20, 20)
    assert output_shape((572, 572), ModelConfig()) == (388, 388)
    assert context_margins(ModelConfig(), (572, 572)) == (92, 92) and align_shape(ModelConfig()) == (16, 16)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"dims": 4}, "dims"),
        ({"dims": 2, "flat_levels": 1}, "flat_levels"),
        ({"flat_levels": 3}, "flat_levels"),
        ({"flat_levels": -1}, "flat_levels"),
        ({"dims": 2, "variant": "cicek"}, "cicek"),
    ],
)
def test_3d_config_validation(changes, match):
    with pytest.raises(ValueError, match=match):
        _config(**changes)


def test_3d_state_dict_round_trips_through_config_dict():
    config = _config(variant="cicek", batch_norm=True, flat_levels=1, in_channels=2)
    model = UNet(config)
    x = torch.randn(1, 2, *smallest_input_shape(config))
    model.train()
    model(x)  # move the batch-norm running statistics off their defaults
    rebuilt = UNet(ModelConfig(**config.to_dict()), initialize=False)
    rebuilt.load_state_dict(model.state_dict())  # strict: same names and shapes
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x), rtol=0, atol=0)


def test_cpu_default_candidate_trains():
    """Cicek widths, depth 3, base 16, batch norm, flat levels from a confocal voxel size: builds, runs, learns."""
    config = ModelConfig(in_channels=1, num_classes=2, depth=3, base_channels=16, batch_norm=True, variant="cicek",
                         dims=3, flat_levels=anisotropic_levels((0.284, 0.127, 0.127), 3))
    assert config.flat_levels == 1
    model = UNet(config)
    in_shape = smallest_input_shape(config)
    assert in_shape == (44, 92, 92) and output_shape(in_shape, config) == (4, 4, 4)
    out = model(torch.randn(1, 1, *in_shape))
    assert out.shape == (1, 2, 4, 4, 4) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.encoder[0][0].kernel_size == (1, 3, 3) and model.encoder[1][0].kernel_size == (3, 3, 3)
    assert model.upsamplers[-1].kernel_size == (1, 2, 2) and model.decoder[-1][0].kernel_size == (1, 3, 3)


def test_3d_he_normal_init():
    torch.manual_seed(0)
    model = UNet(ModelConfig(dims=3, depth=3, base_channels=16, variant="cicek", flat_levels=1))
    conv3d = model.encoder[2][0]  # 3x3x3 over 64 channels: fan-in 1728
    assert conv3d.weight.std().item() == pytest.approx((2 / 1728) ** 0.5, rel=0.02)
    flat = model.decoder[-1][0]  # 1x3x3 over 96 channels: fan-in 864
    assert flat.weight.std().item() == pytest.approx((2 / 864) ** 0.5, rel=0.02)
    up = model.upsamplers[0]  # 2x2x2 stride 2 over 256 channels: fan-in 256
    assert up.weight.std().item() == pytest.approx((2 / 256) ** 0.5, rel=0.02)
    assert torch.all(conv3d.bias == 0) and up.bias is None


def test_3d_dropout_only_in_training():
    model = UNet(_config())
    x = torch.randn(1, 1, *smallest_input_shape(model.config))
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    assert not torch.equal(a, model(x))


def test_center_crop_all_spatial_axes():
    x = torch.arange(2 * 5 * 6 * 7.0).reshape(1, 2, 5, 6, 7)
    torch.testing.assert_close(center_crop(x, (3, 2, 3)), x[..., 1:4, 2:4, 2:5])
    torch.testing.assert_close(center_crop(x, (2, 3)), x[..., 2:4, 2:5])  # the last two axes only
    with pytest.raises(ValueError, match="larger size"):
        center_crop(x, (6, 2, 2))


def test_count_parameters_without_norm():
    model = UNet(ModelConfig(depth=2, base_channels=4, batch_norm=True))
    norm_channels = sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert count_parameters(model) - count_parameters(model, include_norm=False) == 2 * norm_channels


def test_window_depth_is_checked_with_the_levels_the_voxel_size_decides():
    from biounet.training.config import TrainConfig, resolve_volume

    voxel = (0.2837, 0.1268, 0.1268)  # z about 2.2x coarser: one in-plane-only level, so z 60 is valid
    config = TrainConfig(data="d", dims=3, depth=3, variant="cicek", tile=164, tile_z=60, iterations=1)
    resolved, note = resolve_volume(config, [voxel])  # the voxel size from the volumes
    assert resolved.flat_levels == 1 and resolved.window_shape == (60, 164, 164) and "60 x 164 x 164" in note
    TrainConfig(data="d", dims=3, depth=3, variant="cicek", tile=164, tile_z=60, iterations=1, voxel_size=voxel)
    with pytest.raises(ValueError, match="nearest valid"):  # isotropic voxels: no in-plane-only level, z 60 invalid
        resolve_volume(config, [(0.1268, 0.1268, 0.1268)])
