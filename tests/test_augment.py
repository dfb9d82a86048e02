"""Tests for biounet.training.augment: identities, label sets, seeds, the displacement statistics, reference resampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from biounet.training.augment import (
    AugmentConfig,
    augment_sample,
    elastic_deform,
    elastic_displacement,
    sample_window,
)

OFF = AugmentConfig.disabled()


@pytest.fixture
def sample() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    image = ndimage.gaussian_filter(rng.random((37, 53)), 2).astype(np.float32)  # odd sizes on purpose
    labels = rng.choice(np.array([0, 3, 7, 255]), size=(37, 53))
    weights = (labels * 1.5 + 1).astype(np.float32)  # a function of the label: must stay consistent
    return image, labels, weights


# --- elastic displacement --------------------------------------------------------------------------------------


def test_displacement_passes_through_drawn_grid_values():
    field = elastic_displacement((9, 13), sigma_px=10.0, grid=3, rng=5)
    nodes = np.random.default_rng(5).normal(0.0, 10.0, size=(2, 3, 3))  # the documented draw
    # nodes at rows 0, 4, 8 and cols 0, 6, 12
    np.testing.assert_allclose(field.dy[::4, ::6], nodes[0], atol=1e-12)
    np.testing.assert_allclose(field.dx[::4, ::6], nodes[1], atol=1e-12)


def test_displacement_std_on_grid_matches_sigma():
    rng = np.random.default_rng(0)
    draws = [elastic_displacement((9, 13), sigma_px=10.0, grid=3, rng=rng) for _ in range(1000)]
    at_nodes = np.stack([np.stack([f.dy[::4, ::6], f.dx[::4, ::6]]) for f in draws])  # 18,000 values
    assert at_nodes.std() == pytest.approx(10.0, rel=0.03)
    assert abs(at_nodes.mean()) < 0.3
    between = np.stack([f.dy[2, 3] for f in draws])  # interpolated: smoother, smaller spread
    assert 0 < between.std() < 10.0


def test_displacement_is_smooth_and_seeded():
    first = elastic_displacement((64, 64), rng=1)
    np.testing.assert_array_equal(first.dy, elastic_displacement((64, 64), rng=1).dy)
    assert np.abs(np.diff(first.dy, axis=0)).max() < 3.0  # 3 nodes over 64 px: no jumps
    assert not np.array_equal(first.dy, elastic_displacement((64, 64), rng=2).dy)


# --- elastic deformation ---------------------------------------------------------------------------------------


def test_elastic_zero_sigma_is_identity(sample):
    image, labels, weights = sample
    out = elastic_deform(image, labels, weights, sigma_px=0.0, rng=0)
    np.testing.assert_array_equal(out.image, image)
    np.testing.assert_array_equal(out.labels, labels)
    np.testing.assert_array_equal(out.weights, weights)


def test_elastic_keeps_label_set_and_weight_consistency(sample):
    image, labels, weights = sample
    out = elastic_deform(image, labels, weights, sigma_px=10.0, rng=4)
    assert set(np.unique(out.labels)) <= {0, 3, 7, 255}
    assert out.labels.dtype == labels.dtype
    np.testing.assert_array_equal(out.weights, out.labels * 1.5 + 1)  # same source pixel for both
    assert not np.array_equal(out.labels, labels)


def test_elastic_matches_reference_map_coordinates(sample):
    image, labels, _ = sample
    field = elastic_displacement(labels.shape, sigma_px=10.0, rng=9)
    rows, cols = np.indices(labels.shape)
    coords = [rows + field.dy, cols + field.dx]  # reaches outside the image: mirrored
    out = elastic_deform(image, labels, sigma_px=10.0, rng=9)
    expected = ndimage.map_coordinates(image.astype(np.float64), coords, order=3, mode="reflect")
    np.testing.assert_allclose(out.image, expected, atol=1e-5)
    np.testing.assert_array_equal(out.labels, ndimage.map_coordinates(labels, coords, order=0, mode="reflect"))


def test_elastic_is_reproducible(sample):
    image, labels, weights = sample
    first = elastic_deform(image, labels, weights, rng=11)
    second = elastic_deform(image, labels, weights, rng=np.random.default_rng(11))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_elastic_multichannel_uses_one_field(sample):
    image, labels, _ = sample
    stacked = np.stack([image, image, 2 * image], axis=-1)
    out = elastic_deform(stacked, labels, rng=2)
    single = elastic_deform(image, labels, rng=2)
    assert out.image.shape == (37, 53, 3)
    np.testing.assert_allclose(out.image[..., 0], single.image, atol=1e-6)
    np.testing.assert_allclose(out.image[..., 2], 2 * single.image, atol=1e-5)


# --- windows and the full pipeline -----------------------------------------------------------------------------


def test_augment_sample_disabled_is_identity(sample):
    image, labels, weights = sample
    out = augment_sample(image, labels, weights, config=OFF, rng=0)
    np.testing.assert_array_equal(out.image, image)
    np.testing.assert_array_equal(out.labels, labels)
    np.testing.assert_array_equal(out.weights, weights)
    assert out.image.dtype == np.float32 and out.weights.dtype == np.float32


@pytest.mark.parametrize("center", [(18, 26), (2, 50), (36, 0)])
def test_sample_window_disabled_is_mirrored_crop(sample, center):
    image, labels, weights = sample
    out = sample_window(image, labels, weights, in_tile=(24, 30), out_tile=(16, 20), center=center, config=OFF)
    pad = 40
    padded = [np.pad(a, pad, mode="symmetric") for a in (image, labels, weights)]  # the tiling convention
    top, left = center[0] + pad - 12, center[1] + pad - 15
    np.testing.assert_array_equal(out.image, padded[0][top : top + 24, left : left + 30])
    np.testing.assert_array_equal(out.labels, padded[1][top + 4 : top + 20, left + 5 : left + 25])
    np.testing.assert_array_equal(out.weights, padded[2][top + 4 : top + 20, left + 5 : left + 25])


def test_sample_window_flip_only_gives_a_flipped_crop(sample):
    image, labels, _ = sample
    config = AugmentConfig(**{**OFF.__dict__, "flip": True})
    offsets = np.arange(16) - 8  # window index minus the centre index 16 // 2
    flips = [(fy, fx) for fy in (1, -1) for fx in (1, -1)]
    seen = set()
    for seed in range(12):
        out = sample_window(image, labels, in_tile=16, out_tile=16, center=(18, 26), config=config, rng=seed)
        matches = [
            (fy, fx)
            for fy, fx in flips
            if np.array_equal(out.image, image[np.ix_(18 + fy * offsets, 26 + fx * offsets)])
        ]
        assert len(matches) == 1  # an exact lookup: flips about the centre pixel move by whole pixels
        seen.add(matches[0])
    assert len(seen) > 1


def test_sample_window_rotation_matches_reference(sample):
    image, labels, _ = sample
    config = AugmentConfig(**{**OFF.__dict__, "rotation_deg": 180.0})
    out = sample_window(image, labels, in_tile=20, out_tile=12, center=(18, 26), config=config, rng=21)
    angle = math.radians(np.random.default_rng(21).uniform(-180.0, 180.0))  # the documented first draw
    rows, cols = np.indices((20, 20)) - 10
    coords = [
        18 + math.cos(angle) * rows - math.sin(angle) * cols,
        26 + math.sin(angle) * rows + math.cos(angle) * cols,
    ]
    expected = ndimage.map_coordinates(image.astype(np.float64), coords, order=3, mode="reflect")
    np.testing.assert_allclose(out.image, expected, atol=1e-5)
    inner = [c[4:16, 4:16] for c in coords]
    np.testing.assert_array_equal(out.labels, ndimage.map_coordinates(labels, inner, order=0, mode="reflect"))


def test_sample_window_full_augmentation_properties(sample):
    image, labels, weights = sample
    config = AugmentConfig(shift_px=5.0)
    out = sample_window(
        image, labels, weights, in_tile=(28, 36), out_tile=(12, 20), center=(18, 26), config=config, rng=8
    )
    assert out.image.shape == (28, 36) and out.labels.shape == out.weights.shape == (12, 20)
    assert set(np.unique(out.labels)) <= {0, 3, 7, 255}
    np.testing.assert_array_equal(out.weights, out.labels * 1.5 + 1)
    assert np.all(np.isfinite(out.image))
    again = sample_window(
        image, labels, weights, in_tile=(28, 36), out_tile=(12, 20), center=(18, 26), config=config, rng=8
    )
    np.testing.assert_array_equal(out.image, again.image)


def test_gray_value_variation_touches_only_the_image(sample):
    image, labels, weights = sample
    config = AugmentConfig(**{**OFF.__dict__, "contrast_range": (2.0, 2.0), "brightness_range": (0.5, 0.5)})
    out = augment_sample(image, labels, weights, config=config, rng=0)
    np.testing.assert_array_equal(out.labels, labels)
    np.testing.assert_array_equal(out.weights, weights)
    value_range = float(image.max() - image.min())
    expected = image.mean(dtype=np.float64) + 2.0 * (image - image.mean(dtype=np.float64)) + 0.5 * value_range
    np.testing.assert_allclose(out.image, expected, rtol=1e-5, atol=1e-5)
    gamma = AugmentConfig(**{**OFF.__dict__, "gamma_range": (2.0, 2.0)})
    low, high = image.min(), image.max()
    expected = low + (high - low) * ((image - low) / (high - low)) ** 2
    np.testing.assert_allclose(augment_sample(image, labels, config=gamma).image, expected, rtol=1e-5, atol=1e-6)


# --- errors ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rotation_deg", 200.0, r"rotation_deg must be in \[0, 180\], got 200.0"),
        ("shift_px", -1.0, "shift_px must be finite and >= 0, got -1.0"),
        ("elastic_sigma_px", -2.0, "elastic_sigma_px must be finite and >= 0, got -2.0"),
        ("elastic_grid", 1, "elastic_grid must be >= 2, got 1"),
        ("elastic_prob", 1.5, r"elastic_prob must be in \[0, 1\], got 1.5"),
        ("contrast_range", (1.2, 0.8), r"contrast_range must be a finite \(min, max\) pair"),
        ("gamma_range", (0.0, 1.0), r"gamma_range must lie in \(0.0, inf\)"),
        ("image_order", 2, "image_order must be 1 or 3, got 2"),
    ],
)
def test_config_validation(field, value, message):
    with pytest.raises(ValueError, match=message):
        AugmentConfig(**{field: value})


def test_input_errors(sample):
    image, labels, weights = sample
    window = {"in_tile": 20, "out_tile": 12, "center": (18, 26), "config": OFF}
    with pytest.raises(
        ValueError, match=r"in_tile - out_tile must be even and >= 0 per axis, got \(20, 20\) - \(13, 13\)"
    ):
        sample_window(image, labels, **{**window, "out_tile": 13})
    with pytest.raises(ValueError, match=r"center must lie in the image \[0, 37\) x \[0, 53\), got \(40, 0\)"):
        sample_window(image, labels, **{**window, "center": (40, 0)})
    with pytest.raises(TypeError, match="labels must be an integer array, got dtype float64"):
        augment_sample(image, labels.astype(float), config=OFF)
    with pytest.raises(ValueError, match=r"labels \(37, 52\) must have the image's \(H, W\) \(37, 53\)"):
        elastic_deform(image, labels[:, :-1])
    with pytest.raises(ValueError, match=r"weights \(36, 53\) must have the labels' shape"):
        augment_sample(image, labels, weights[1:], config=OFF)
    with pytest.raises(TypeError, match="config must be an AugmentConfig"):
        sample_window(image, labels, **{**window, "config": {"flip": False}})
    with pytest.raises(ValueError, match="grid must be >= 2, got 1"):
        elastic_displacement((8, 8), grid=1)
    with pytest.raises(ValueError, match="shape must be a positive int or a pair"):
        elastic_displacement((0, 8))
