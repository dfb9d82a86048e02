"""Tests for biounet.training.augment.sample_volume_window: exact crops, exact flips, a reference rotation, label
sets, alignment of image and labels, seeds, mirroring and the physical z scaling of the elastic field."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import ndimage

from biounet.training.augment import AugmentConfig, sample_volume_window

OFF = AugmentConfig.disabled()
IGNORE = -1
LABELS = {IGNORE, 0, 2, 5}


def only(**changes) -> AugmentConfig:
    return AugmentConfig(**{**OFF.__dict__, **changes})


@pytest.fixture
def volume() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    image = ndimage.gaussian_filter(rng.random((9, 23, 27, 2)), (1, 2, 2, 0)).astype(np.float32)  # odd sizes
    classes = rng.choice(np.array(sorted(LABELS)), size=(9, 23, 27))
    classes[2:5, 3:9, 4:12] = IGNORE  # an unannotated block
    weights = np.stack([classes * 1.5 + 3, classes % 3], axis=-1).astype(np.float32)  # a function of the label
    return image, classes, weights


def window(volume, **kwargs):
    image, classes, weights = volume
    return sample_volume_window(image, classes, weights, **kwargs)


# --- crops and exact transforms --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("center", "in_shape", "out_shape"),
    [
        ((4, 11, 13), (6, 14, 16), (2, 6, 8)),  # inside
        ((0, 1, 26), (6, 14, 16), (2, 6, 8)),  # at the corner: mirrored
        ((8, 22, 0), (14, 30, 34), (6, 10, 12)),  # the window is larger than the volume: mirrored twice
    ],
)
def test_disabled_is_mirrored_crop(volume, center, in_shape, out_shape):
    out = window(volume, in_shape=in_shape, out_shape=out_shape, center=center, config=OFF, rng=0)
    pad = 40
    image, classes, weights = (np.pad(a, [(pad, pad)] * 3 + [(0, 0)] * (a.ndim - 3), mode="symmetric") for a in volume)
    start = [c + pad - i // 2 for c, i in zip(center, in_shape)]
    crop = tuple(slice(s, s + i) for s, i in zip(start, in_shape))
    inner = tuple(slice(s + (i - o) // 2, s + (i + o) // 2) for s, i, o in zip(start, in_shape, out_shape))
    assert out.image.dtype == np.float32 and out.image.shape == (*in_shape, 2)
    np.testing.assert_array_equal(out.image, image[crop])
    np.testing.assert_array_equal(out.labels, classes[inner])
    np.testing.assert_array_equal(out.weights, weights[inner])
    assert out.labels.dtype == classes.dtype and out.weights.dtype == np.float32


def _flipped_crops(image, center, in_shape, transpose):
    """Every exact lookup ``image[center + T F p]`` over the flips F and (if allowed) the (y, x) transposition T."""
    offsets = np.meshgrid(*[np.arange(n) - n // 2 for n in in_shape], indexing="ij")
    for flips in itertools.product((1, -1), repeat=3):
        for swap in (False, True) if transpose else (False,):
            z, y, x = (f * o for f, o in zip(flips, offsets))
            y, x = (x, y) if swap else (y, x)
            yield (flips, swap), image[center[0] + z, center[1] + y, center[2] + x]


@pytest.mark.parametrize(("spacing", "transpose"), [(None, True), ((2.0, 1.0, 1.0), True), ((2.0, 1.0, 1.5), False)])
def test_flips_are_exact_and_transpose_only_square_pixels(volume, spacing, transpose):
    image = volume[0]
    center, in_shape = (4, 11, 13), (5, 12, 12)
    candidates = list(_flipped_crops(image, center, in_shape, transpose=True))
    seen = set()
    for seed in range(40):
        out = window(volume, in_shape=in_shape, out_shape=in_shape, center=center, config=only(flip=True),
                     rng=seed, spacing=spacing)
        matches = [key for key, crop in candidates if np.array_equal(out.image, crop)]
        assert len(matches) == 1  # an exact lookup: flips about the centre voxel move by whole voxels
        seen.add(matches[0])
    assert {key[0][0] for key in seen} == {1, -1}  # z is flipped too
    assert {key[1] for key in seen} == ({False, True} if transpose else {False})
    assert len(seen) >= 8


@pytest.mark.parametrize("spacing", [None, (3.0, 1.0, 2.0)])
def test_rotation_matches_reference(volume, spacing):
    image, classes, _ = volume
    center, in_shape, out_shape = (4, 11, 13), (6, 14, 16), (2, 6, 8)
    out = window(volume, in_shape=in_shape, out_shape=out_shape, center=center, config=only(rotation_deg=180.0),
                 rng=21, spacing=spacing)
    angle = math.radians(np.random.default_rng(21).uniform(-180.0, 180.0))  # the documented first draw
    _, sy, sx = spacing or (1.0, 1.0, 1.0)
    z, y, x = np.meshgrid(*[np.arange(n) - n // 2 for n in in_shape], indexing="ij")
    coords = [  # rotation of the physical offsets (y sy, x sx), back in voxels
        center[0] + z,
        center[1] + (math.cos(angle) * y * sy - math.sin(angle) * x * sx) / sy,
        center[2] + (math.sin(angle) * y * sy + math.cos(angle) * x * sx) / sx,
    ]
    for channel in range(2):
        expected = ndimage.map_coordinates(image[..., channel].astype(np.float64), coords, order=3, mode="reflect")
        np.testing.assert_allclose(out.image[..., channel], expected, atol=1e-5)
    inner = [c[2:4, 4:10, 4:12] for c in coords]
    np.testing.assert_array_equal(out.labels, ndimage.map_coordinates(classes, inner, order=0, mode="reflect"))


# --- full augmentation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("spacing", [None, (2.5, 1.0, 1.0)])
def test_labels_keep_their_values_and_ignore(volume, spacing):
    seen = set()
    for seed in range(4):
        out = window(volume, in_shape=(8, 20, 20), out_shape=(4, 8, 8), center=(3, 5, 8), config=AugmentConfig(),
                     rng=seed, spacing=spacing)
        assert set(np.unique(out.labels)) <= LABELS  # nearest neighbour: no blended label values
        # label and weights come from one source voxel: IGNORE stays IGNORE, with the ignored voxels' weights
        np.testing.assert_array_equal(out.weights, np.stack([out.labels * 1.5 + 3, out.labels % 3], axis=-1))
        assert out.image.shape == (8, 20, 20, 2) and np.all(np.isfinite(out.image))
        seen |= set(np.unique(out.labels).tolist())
    assert IGNORE in seen


@pytest.mark.parametrize("spacing", [None, (2.0, 1.0, 1.0)])
def test_image_and_labels_stay_aligned(spacing):
    rng = np.random.default_rng(7)
    field = ndimage.gaussian_filter(rng.random((16, 40, 40)), 3.0, mode="wrap")
    image = ((field - field.min()) / (field.max() - field.min())).astype(np.float32)[..., None]
    classes = (image[..., 0] > 0.5).astype(np.int64)
    config = AugmentConfig(gray_prob=0.0, shift_px=3.0)
    in_shape, out_shape = (10, 30, 30), (10, 30, 30)
    for seed in range(3):
        out = sample_volume_window(image, classes, in_shape=in_shape, out_shape=out_shape, center=(8, 20, 20),
                                   config=config, rng=seed, spacing=spacing)
        clear = np.abs(out.image[..., 0] - 0.5) > 0.15  # away from the label border (nearest vs cubic)
        assert clear.mean() > 0.2  # source gradient <= 0.14/voxel, nearest voxel <= 0.87 voxel away
        np.testing.assert_array_equal(out.labels[clear], (out.image[..., 0] > 0.5)[clear])
        assert 0.05 < out.labels.mean() < 0.95
        crop = image[3:13, 5:35, 5:35]
        assert not np.allclose(out.image, crop, atol=0.05)  # the check is not vacuous: the window was transformed


def test_seeded(volume):
    kwargs = {"in_shape": (6, 14, 16), "out_shape": (2, 6, 8), "center": (4, 11, 13), "config": AugmentConfig()}
    first, again = window(volume, rng=5, **kwargs), window(volume, rng=np.random.default_rng(5), **kwargs)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.image, window(volume, rng=6, **kwargs).image)


def test_spacing_scales_the_z_displacement():
    # channels are the z, y and x coordinates: a cubic spline reproduces them, so the output is the source map
    grid = np.meshgrid(*[np.arange(64.0)] * 3, indexing="ij")
    image = np.stack(grid, axis=-1).astype(np.float32)
    classes = np.zeros((64, 64, 64), np.int64)
    config, center, in_shape = only(elastic_sigma_px=2.0), (32, 32, 32), (8, 16, 16)
    base = np.stack(np.meshgrid(*[c + np.arange(n) - n // 2 for c, n in zip(center, in_shape)], indexing="ij"), -1)
    iso, aniso = (
        sample_volume_window(image, classes, in_shape=in_shape, out_shape=(2, 2, 2), center=center, config=config,
                             rng=4, spacing=spacing).image - base
        for spacing in (None, (2.0, 1.0, 1.0))
    )
    rng = np.random.default_rng(4)
    rng.random()  # the elastic_prob draw, then the (3, 3, 3, 3) nodes, z first
    nodes = rng.normal(0.0, 2.0, size=(3, 3, 3, 3))
    np.testing.assert_allclose(iso[0, 0, 0], nodes[:, 0, 0, 0], atol=1e-3)  # corner voxel = corner node
    np.testing.assert_allclose(iso[-1, -1, -1], nodes[:, -1, -1, -1], atol=1e-3)
    np.testing.assert_allclose(aniso[..., 0], iso[..., 0] / 2.0, atol=1e-3)  # z: half as many slices
    np.testing.assert_allclose(aniso[..., 1:], iso[..., 1:], atol=1e-3)  # in-plane: unchanged
    assert iso[..., 0].std() > 0.5


# --- errors ----------------------------------------------------------------------------------------------------


def test_input_errors(volume):
    image, classes, weights = volume
    kwargs = {"in_shape": (6, 14, 16), "out_shape": (2, 6, 8), "center": (4, 11, 13), "config": OFF}
    with pytest.raises(ValueError, match=r"image must be a real \(Z, Y, X, C\) array"):
        sample_volume_window(image[..., 0], classes, **kwargs)
    with pytest.raises(ValueError, match=r"classes \(9, 23, 26\) must have the image's \(Z, Y, X\) \(9, 23, 27\)"):
        sample_volume_window(image, classes[..., 1:], **kwargs)
    with pytest.raises(TypeError, match="classes must be an integer array, got dtype float64"):
        sample_volume_window(image, classes.astype(float), **kwargs)
    with pytest.raises(ValueError, match=r"weights \(8, 23, 27, 2\) must be \(Z, Y, X\) or \(Z, Y, X, E\)"):
        sample_volume_window(image, classes, weights[1:], **kwargs)
    with pytest.raises(ValueError, match=r"in_shape - out_shape must be even and >= 0 per axis"):
        sample_volume_window(image, classes, **{**kwargs, "out_shape": (3, 6, 8)})
    with pytest.raises(ValueError, match=r"in_shape must be a positive int or a triple of positive ints"):
        sample_volume_window(image, classes, **{**kwargs, "in_shape": (14, 16)})
    with pytest.raises(ValueError, match=r"center must lie in the volume \[0, 9\) x \[0, 23\) x \[0, 27\)"):
        sample_volume_window(image, classes, **{**kwargs, "center": (9, 0, 0)})
    with pytest.raises(ValueError, match="spacing must be three finite positive numbers"):
        sample_volume_window(image, classes, **kwargs, spacing=(0.0, 1.0, 1.0))
    with pytest.raises(TypeError, match="config must be an AugmentConfig"):
        sample_volume_window(image, classes, **{**kwargs, "config": None})


def test_scale_range_multiplies_the_whole_window_and_default_draws_nothing():
    import dataclasses

    from biounet.training.augment import _vary_gray

    image = np.random.default_rng(0).random((4, 6, 6, 1), dtype=np.float32)
    still = dataclasses.replace(AugmentConfig.disabled(), scale_range=(2.0, 2.0))
    np.testing.assert_allclose(_vary_gray(image, still, np.random.default_rng(1)), image * 2, rtol=1e-6)
    drawn, fresh = np.random.default_rng(1), np.random.default_rng(1)
    _vary_gray(image, AugmentConfig.disabled(), drawn)
    for _ in range(3):  # gamma, contrast, brightness: (1, 1) scale adds no draw, so 2D streams stay as they were
        fresh.uniform()
    assert drawn.random() == fresh.random()
