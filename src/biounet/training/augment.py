"""Data augmentation of Ronneberger et al. (2015), section 3.1: elastic deformation, shift, rotation, flips and
gray-value variation, all driven by an explicit ``rng``.

Every geometric transform is folded into ONE map from output pixels to source coordinates, so the image (cubic),
the labels and the weight map (nearest) are each resampled once, with the same map. Coordinates outside the
source are mirrored symmetrically (edge pixel repeated), like ``np.pad(mode="symmetric")`` in the overlap-tile
strategy and ``mode="reflect"`` in :mod:`scipy.ndimage`. NumPy/SciPy only.

Reference: Ronneberger, Fischer, Brox (2015), U-Net, MICCAI, section 3.1 ("Data augmentation"); arXiv:1505.04597.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import ndimage

__all__ = [
    "AugmentConfig",
    "AugmentedSample",
    "Displacement",
    "augment_sample",
    "elastic_deform",
    "elastic_displacement",
    "sample_volume_window",
    "sample_window",
]

# Rows/columns of source kept around the needed region before the cubic spline prefilter. The prefilter's
# boundary error decays like 0.268**n (pole of the cubic B-spline), so 16 px keep it below 1e-9.
_SPLINE_PAD = 16


class Displacement(NamedTuple):
    """Per-pixel displacement field in pixels; the source of output pixel ``(i, j)`` is ``(i + dy, j + dx)``."""

    dy: npt.NDArray[np.float64]
    dx: npt.NDArray[np.float64]


class AugmentedSample(NamedTuple):
    """An augmented training sample; ``weights`` is None when no weight map was given. ``copies`` (from
    :func:`sample_window`) numbers the mirror copy of the source each label pixel was read from, 0 for the image
    itself: a cell touching the image border and its mirror image carry one id but are two copies."""

    image: npt.NDArray[np.float32]
    labels: npt.NDArray[np.integer]
    weights: npt.NDArray[np.float32] | None
    copies: npt.NDArray[np.int64] | None = None


def _check_range(name: str, values: tuple[float, float], *, low: float, low_open: bool = False) -> None:
    if len(values) != 2 or not all(math.isfinite(v) for v in values) or values[0] > values[1]:
        raise ValueError(f"{name} must be a finite (min, max) pair with min <= max, got {values}")
    if values[0] < low or (low_open and values[0] == low):
        raise ValueError(f"{name} must lie in {'(' if low_open else '['}{low}, inf), got {values}")


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings (paper §3.1: 3x3 grid, displacement std 10 px; other ranges are not stated).

    Parameters
    ----------
    flip : bool
        Mirror each axis with probability 0.5.
    rotation_deg : float
        Rotation angle drawn uniformly from ``[-rotation_deg, rotation_deg]`` degrees, in ``[0, 180]``.
    shift_px : float
        Shift drawn uniformly from ``[-shift_px, shift_px]`` pixels per axis. Default 0: random window centres
        (:func:`sample_window`) already shift the samples.
    elastic_sigma_px : float
        Standard deviation of the displacement vectors on the coarse grid, in pixels (paper: 10).
    elastic_grid : int
        Nodes per axis of the coarse displacement grid, >= 2 (paper: 3).
    elastic_prob : float
        Probability of applying the elastic deformation to a sample.
    contrast_range : (float, float)
        Factor ``c`` applied around the window mean: ``mean + c * (x - mean)``.
    brightness_range : (float, float)
        Offset added to the image, as a fraction of the window's intensity range ``max - min``.
    gamma_range : (float, float)
        Exponent ``g`` applied to the window rescaled to [0, 1]: ``min + (max - min) * t**g``.
    gray_prob : float
        Probability of applying the gray-value variation (gamma, then contrast, then brightness).
    image_order : {3, 1}
        Spline order for the image: 3 (cubic, default) or 1 (linear, about twice as fast). Labels and weights
        always use nearest neighbour.
    scale_range : (float, float)
        Factor ``s`` multiplying the whole window, drawn log-uniformly (after the other gray-value changes): the
        overall brightness that percentile normalisation leaves to the content (a stack with brighter cells
        normalises the rest darker). ``(1, 1)``, the default, draws nothing.
    """

    flip: bool = True
    rotation_deg: float = 180.0
    shift_px: float = 0.0
    elastic_sigma_px: float = 10.0
    elastic_grid: int = 3
    elastic_prob: float = 1.0
    contrast_range: tuple[float, float] = (0.8, 1.2)
    brightness_range: tuple[float, float] = (-0.1, 0.1)
    gamma_range: tuple[float, float] = (0.8, 1.25)
    gray_prob: float = 1.0
    image_order: int = 3
    scale_range: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rotation_deg <= 180.0:
            raise ValueError(f"rotation_deg must be in [0, 180], got {self.rotation_deg}")
        for name in ("shift_px", "elastic_sigma_px"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        if self.elastic_grid < 2:
            raise ValueError(f"elastic_grid must be >= 2, got {self.elastic_grid}")
        for name in ("elastic_prob", "gray_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        _check_range("contrast_range", self.contrast_range, low=0.0)
        _check_range("brightness_range", self.brightness_range, low=-math.inf)
        _check_range("gamma_range", self.gamma_range, low=0.0, low_open=True)
        _check_range("scale_range", self.scale_range, low=0.0, low_open=True)
        if self.image_order not in (1, 3):
            raise ValueError(f"image_order must be 1 or 3, got {self.image_order}")

    @classmethod
    def disabled(cls) -> AugmentConfig:
        """A config that changes nothing: :func:`sample_window` then only crops (validation tiles)."""
        return cls(
            flip=False,
            rotation_deg=0.0,
            shift_px=0.0,
            elastic_sigma_px=0.0,
            contrast_range=(1.0, 1.0),
            brightness_range=(0.0, 0.0),
            gamma_range=(1.0, 1.0),
        )


def _sizes(value: int | tuple[int, ...], name: str, ndim: int = 2) -> tuple[int, ...]:
    """``ndim`` positive ints from one int (repeated) or a sequence of them."""
    sizes = (value,) * ndim if isinstance(value, (int, np.integer)) else tuple(value)
    if len(sizes) != ndim or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in sizes):
        kind = {2: "pair", 3: "triple"}.get(ndim, f"{ndim}-tuple")
        raise ValueError(f"{name} must be a positive int or a {kind} of positive ints, got {value}")
    return tuple(int(v) for v in sizes)


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    return _sizes(value, name, 2)


def _grid_basis(length: int, grid: int) -> npt.NDArray[np.float64]:
    """(length, grid) weights of each grid node at each pixel: 1-D cubic spline interpolation, mirror ends.

    Node ``j`` sits at pixel ``j * (length - 1) / (grid - 1)``, so the first and last nodes are the first and
    last pixels, and the interpolant passes through the node values.
    """
    positions = np.arange(length) * (grid - 1) / max(length - 1, 1)
    basis = np.empty((length, grid))
    for node, unit in enumerate(np.eye(grid)):
        basis[:, node] = ndimage.map_coordinates(unit, positions[None], order=3, mode="mirror")
    return basis


def _random_displacement(shape: tuple[int, int], sigma_px: float, grid: int, rng: np.random.Generator) -> Displacement:
    nodes = rng.normal(0.0, sigma_px, size=(2, grid, grid))
    rows, cols = _grid_basis(shape[0], grid), np.ascontiguousarray(_grid_basis(shape[1], grid).T)
    # einsum, not matmul: a rank-3 product gains nothing from BLAS threads, which stall on a busy machine.
    return Displacement(*(np.einsum("ik,kj->ij", np.einsum("ik,kl->il", rows, node), cols) for node in nodes))


def elastic_displacement(
    shape: tuple[int, int], *, sigma_px: float = 10.0, grid: int = 3, rng: np.random.Generator | int | None = None
) -> Displacement:
    """Smooth random displacement field: Gaussian vectors on a coarse grid, bicubically interpolated.

    Parameters
    ----------
    shape : (int, int)
        Field size ``(H, W)`` in pixels.
    sigma_px : float, optional
        Standard deviation of each displacement component at the grid nodes, in pixels, >= 0 (paper: 10).
    grid : int, optional
        Nodes per axis, >= 2 (paper: 3). The nodes span the field: the corner nodes sit on the corner pixels.
    rng : numpy.random.Generator or int, optional
        Random source or seed, normalised with ``np.random.default_rng``.

    Returns
    -------
    Displacement
        ``(dy, dx)``, each an (H, W) float64 array in pixels.

    Raises
    ------
    ValueError
        If ``shape`` is not two positive ints, ``sigma_px < 0`` or ``grid < 2``.

    Notes
    -----
    Draws ``rng.normal(0, sigma_px, size=(2, grid, grid))`` (``dy`` nodes first) and interpolates each component
    with a tensor-product cubic spline (``scipy.ndimage`` order 3, mirrored ends). The spline interpolates, so
    the field equals the drawn values at the nodes, node ``(a, b)`` being pixel
    ``(a (H - 1) / (grid - 1), b (W - 1) / (grid - 1))``.

    References
    ----------
    .. [1] Ronneberger, Fischer, Brox (2015). U-Net. MICCAI, section 3.1. arXiv:1505.04597
    """
    shape = _pair(shape, "shape")
    if not (math.isfinite(sigma_px) and sigma_px >= 0):
        raise ValueError(f"sigma_px must be finite and >= 0, got {sigma_px}")
    if grid < 2:
        raise ValueError(f"grid must be >= 2, got {grid}")
    return _random_displacement(shape, sigma_px, grid, np.random.default_rng(rng))


def _reflect(index: npt.NDArray[np.intp], size: int) -> npt.NDArray[np.intp]:
    """Fold indices into ``[0, size)`` by symmetric mirroring (…, 1, 0 | 0, 1, …, n-1 | n-1, …)."""
    if index.size and index.min() >= 0 and index.max() < size:  # the common case: nothing to fold
        return index
    index = np.mod(index, 2 * size)
    return np.where(index >= size, 2 * size - 1 - index, index)


def _nearest_flat_index(coords: Sequence[np.ndarray], shape: tuple[int, ...]) -> npt.NDArray[np.intp]:
    """Flat (row-major) index of the nearest source pixel (or voxel), mirrored into the image; one coordinate
    array per axis of ``shape``."""
    flat = _reflect(np.floor(coords[0] + 0.5).astype(np.intp), shape[0])
    for axis in range(1, len(coords)):
        flat *= shape[axis]
        flat += _reflect(np.floor(coords[axis] + 0.5).astype(np.intp), shape[axis])
    return flat


def _mirror_copies(src_y: np.ndarray, src_x: np.ndarray, shape: tuple[int, ...]) -> npt.NDArray[np.int64]:
    """Which mirror copy of the source the nearest pixel lies in: 0 inside the image, a distinct number for each
    reflection across its borders (the copies :func:`_nearest_flat_index` folds back into the image).

    >>> _mirror_copies(np.array([[-1.0, 0.0, 2.0, 3.0]]), np.zeros((1, 4)), (3, 3)).tolist()
    [[-3, 0, 0, 3]]
    """
    rows = np.floor(src_y + 0.5).astype(np.int64) // shape[0]
    cols = np.floor(src_x + 0.5).astype(np.int64) // shape[1]
    return rows * 3 + cols  # copies of a tile reach at most one image size beyond each border


def _take(array: np.ndarray, flat_index: npt.NDArray[np.intp], ndim: int = 2) -> np.ndarray:
    """``array[rows, cols]`` (``ndim`` spatial axes) from a flat index; trailing (channel) axes are kept."""
    spatial = array.shape[:ndim]
    return np.take(array.reshape(math.prod(spatial), *array.shape[ndim:]), flat_index, axis=0)


def _sample_spline(
    image: np.ndarray, coords: np.ndarray, order: int, dtype: type[np.floating] = np.float64
) -> npt.NDArray[np.float32]:
    """Spline interpolation of order 1 or 3 at ``coords`` (n, *window) over the first n axes of ``image``;
    trailing axes are channels. The spline is computed in ``dtype``; ``coords`` is shifted in place."""
    # Crop (with mirroring) the source region the map reaches, so the spline prefilter costs O(tile), not
    # O(source image).
    ndim = coords.shape[0]
    pad = _SPLINE_PAD if order > 1 else 1
    starts = [math.floor(coords[axis].min()) - pad for axis in range(ndim)]
    stops = [math.ceil(coords[axis].max()) + pad + 1 for axis in range(ndim)]
    if all(a >= 0 and b <= size for a, b, size in zip(starts, stops, image.shape)):
        region = image[tuple(slice(a, b) for a, b in zip(starts, stops))].astype(dtype, copy=False)  # a slice: cheaper
    else:
        axes = [_reflect(np.arange(a, b), size) for a, b, size in zip(starts, stops, image.shape)]
        region = image[np.ix_(*axes)].astype(dtype, copy=False)
    for axis in range(ndim):
        coords[axis] -= starts[axis]
    channels = region[..., None] if region.ndim == ndim else region
    out = np.empty((*coords.shape[1:], channels.shape[-1]), np.float32)
    for channel in range(channels.shape[-1]):
        values = channels[..., channel]
        if order > 1:
            values = ndimage.spline_filter(values, order=order, mode="reflect", output=dtype)
        out[..., channel] = ndimage.map_coordinates(
            values, coords, order=order, mode="reflect", prefilter=False, output=np.float32
        )
    return out[..., 0] if image.ndim == ndim else out


def _vary_gray(image: npt.NDArray[np.float32], config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    gamma = rng.uniform(*config.gamma_range)
    contrast = rng.uniform(*config.contrast_range)
    brightness = rng.uniform(*config.brightness_range)
    low, high = float(image.min()), float(image.max())
    if high <= low:  # a constant window: only the offset can act, and its unit (the range) is 0
        return image
    values = image
    if gamma != 1.0:
        values = np.float32(low) + np.float32(high - low) * (
            (image - np.float32(low)) / np.float32(high - low)
        ) ** np.float32(gamma)
    mean = np.float32(values.mean(dtype=np.float64))
    offset = mean * (1 - contrast) + brightness * (high - low)
    varied = (values * np.float32(contrast) + np.float32(offset)).astype(np.float32, copy=False)
    if config.scale_range == (1.0, 1.0):  # no draw: the random stream of earlier configs stays as it was
        return varied
    scale = math.exp(rng.uniform(math.log(config.scale_range[0]), math.log(config.scale_range[1])))
    return varied * np.float32(scale)


def _check_sample(image: np.ndarray, labels: np.ndarray, weights: np.ndarray | None) -> None:
    for name, array in (("image", image), ("labels", labels), ("weights", weights)):
        if array is not None and not isinstance(array, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    if image.ndim not in (2, 3) or not (np.issubdtype(image.dtype, np.number) and np.isrealobj(image)):
        raise ValueError(f"image must be a real (H, W) or (H, W, C) array, got shape {image.shape} {image.dtype}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be an integer array, got dtype {labels.dtype}")
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D (H, W), got shape {labels.shape}")
    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels {labels.shape} must have the image's (H, W) {image.shape[:2]}")
    if weights is not None and (weights.shape[:2] != labels.shape or weights.ndim > 3):
        raise ValueError(f"weights {weights.shape} must have the labels' shape {labels.shape} (or (H, W, M): maps "
                         "warped like the labels)")
    if weights is not None and not np.issubdtype(weights.dtype, np.number):
        raise TypeError(f"weights must be a numeric array, got dtype {weights.dtype}")
    if labels.size == 0:
        raise ValueError(f"image must not be empty, got shape {image.shape}")


def _resample(
    image: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray | None,
    coords: np.ndarray,
    margin: tuple[int, int],
    out_shape: tuple[int, int],
    order: int,
) -> AugmentedSample:
    """Apply one coordinate map (2, h, w): the image on all of it, labels and weights on its centred sub-window.

    ``order`` 0 means the coordinates are whole numbers: the image is then looked up, bit-identical.
    ``coords`` is overwritten.
    """
    inner = (slice(margin[0], margin[0] + out_shape[0]), slice(margin[1], margin[1] + out_shape[1]))
    label_index = _nearest_flat_index([coords[0][inner], coords[1][inner]], labels.shape)
    labels_out = _take(labels, label_index)
    weights_out = None if weights is None else _take(weights, label_index).astype(np.float32)
    if order == 0:
        image_out = _take(image, _nearest_flat_index(coords, labels.shape)).astype(np.float32)
    else:
        image_out = _sample_spline(image, coords, order)
    return AugmentedSample(image_out, labels_out, weights_out)


def elastic_deform(
    image: npt.NDArray[np.number],
    labels: npt.NDArray[np.integer],
    weights: npt.NDArray[np.floating] | None = None,
    *,
    sigma_px: float = 10.0,
    grid: int = 3,
    rng: np.random.Generator | int | None = None,
) -> AugmentedSample:
    """Smooth random elastic warp of a whole sample; one displacement field for image, labels and weights.

    Parameters
    ----------
    image : (H, W) or (H, W, C) ndarray
        Raw image; every channel is warped with the same field.
    labels : (H, W) ndarray of int
        Class or instance labels (an ignore value is kept like any other label).
    weights : (H, W) ndarray of float, optional
        Pixel-wise loss weights.
    sigma_px, grid : optional
        Displacement std at the nodes and nodes per axis, see :func:`elastic_displacement`.
    rng : numpy.random.Generator or int, optional
        Random source or seed.

    Returns
    -------
    AugmentedSample
        ``image`` as float32, cubic spline interpolation; ``labels`` (same dtype) and ``weights`` (float32) by
        nearest neighbour, so each output pixel takes its label and weight from the same source pixel and no
        new label values appear. Outside the image, coordinates are mirrored (symmetric, edge repeated).

    Raises
    ------
    TypeError
        If an input is not an ndarray, ``labels`` not integer or ``weights`` not numeric.
    ValueError
        If the shapes disagree, ``sigma_px < 0`` or ``grid < 2``.

    Notes
    -----
    The output pixel ``x`` takes the source value at ``x + d(x)``, with ``d`` from :func:`elastic_displacement`.
    With ``sigma_px = 0`` the result equals the input exactly.

    References
    ----------
    .. [1] Ronneberger, Fischer, Brox (2015). U-Net. MICCAI, section 3.1. arXiv:1505.04597
    """
    _check_sample(image, labels, weights)
    field = elastic_displacement(labels.shape, sigma_px=sigma_px, grid=grid, rng=rng)
    coords = np.stack([field.dy, field.dx])
    coords[0] += np.arange(labels.shape[0])[:, None]
    coords[1] += np.arange(labels.shape[1])[None, :]
    return _resample(image, labels, weights, coords, (0, 0), labels.shape, order=0 if sigma_px == 0 else 3)


def _snap(value: float) -> float:
    nearest = round(value)
    return float(nearest) if abs(value - nearest) < 1e-12 else value


def sample_window(
    image: npt.NDArray[np.number],
    labels: npt.NDArray[np.integer],
    weights: npt.NDArray[np.floating] | None = None,
    *,
    in_tile: int | tuple[int, int],
    out_tile: int | tuple[int, int],
    center: tuple[float, float],
    config: AugmentConfig,
    rng: np.random.Generator | int | None = None,
    mirror_copies: bool = False,
) -> AugmentedSample:
    """Cut an augmented training tile: an image window with context and its centred label/weight window.

    Parameters
    ----------
    image : (H, W) or (H, W, C) ndarray
        Source image, any size; only the region the window reaches is read (and mirrored where needed).
    labels : (H, W) ndarray of int
        Source labels at the image's resolution.
    weights : (H, W) or (H, W, M) ndarray of float, optional
        Source weight map. With M channels, each is a map cut like the labels (e.g. the distance target).
    in_tile : int or (int, int)
        Image window (network input tile), e.g. 572.
    out_tile : int or (int, int)
        Label/weight window (network output tile), e.g. ``UNet.output_size(572) = 388``; centred in the image
        window, so ``in_tile - out_tile`` must be even and >= 0 per axis.
    center : (float, float)
        Source pixel ``(row, col)`` at the window centre, i.e. at window index ``(in_h // 2, in_w // 2)``; it
        must lie inside the source image. Rotation and flips turn about it.
    config : AugmentConfig
        What to apply; :meth:`AugmentConfig.disabled` gives a plain crop.
    rng : numpy.random.Generator or int, optional
        Random source or seed.
    mirror_copies : bool
        Also number, in ``copies``, the mirror copy of the source each label pixel comes from (star targets).

    Returns
    -------
    AugmentedSample
        ``image`` (in_h, in_w[, C]) float32, spline interpolation of order ``config.image_order`` (a plain,
        exact lookup when the map only moves by whole pixels); ``labels`` (out_h, out_w), same dtype, and
        ``weights`` (out_h, out_w) float32, both by nearest neighbour, so labels keep their value set and every
        pixel's weight comes from the same source pixel as its label. Gray-value variation touches the image
        only.

    Raises
    ------
    TypeError
        If an input is not an ndarray, ``labels`` not integer or ``weights`` not numeric.
    ValueError
        If the shapes disagree, ``in_tile - out_tile`` is odd or negative, or ``center`` is outside the image.

    Notes
    -----
    Output pixel ``p`` (relative to the window centre) is read at source coordinate
    ``center + shift + R(angle) F (p + d(p))``, with ``d`` the elastic field over the image window
    (:func:`elastic_displacement`), ``F`` the random flips and ``R`` the rotation. Source coordinates outside
    the image are mirrored symmetrically (``np.pad(mode="symmetric")``, ``scipy.ndimage`` ``mode="reflect"``),
    as in overlap-tile prediction. The draws are, in order: flips, angle, shift, elastic nodes, gray values.

    References
    ----------
    .. [1] Ronneberger, Fischer, Brox (2015). U-Net. MICCAI, sections 2 and 3.1. arXiv:1505.04597
    """
    if not isinstance(config, AugmentConfig):
        raise TypeError(f"config must be an AugmentConfig, got {type(config).__name__}")
    _check_sample(image, labels, weights)
    in_shape, out_shape = _pair(in_tile, "in_tile"), _pair(out_tile, "out_tile")
    margin = ((in_shape[0] - out_shape[0]) // 2, (in_shape[1] - out_shape[1]) // 2)
    if any(i < o or (i - o) % 2 for i, o in zip(in_shape, out_shape)):
        raise ValueError(f"in_tile - out_tile must be even and >= 0 per axis, got {in_shape} - {out_shape}")
    center_y, center_x = (float(c) for c in center)
    if not (0 <= center_y < labels.shape[0] and 0 <= center_x < labels.shape[1]):
        raise ValueError(f"center must lie in the image [0, {labels.shape[0]}) x [0, {labels.shape[1]}), got {center}")
    rng = np.random.default_rng(rng)

    flip_y, flip_x = rng.choice([-1.0, 1.0], size=2) if config.flip else (1.0, 1.0)
    angle = math.radians(rng.uniform(-config.rotation_deg, config.rotation_deg)) if config.rotation_deg else 0.0
    shift_y, shift_x = rng.uniform(-config.shift_px, config.shift_px, size=2) if config.shift_px else (0.0, 0.0)
    cos, sin = _snap(math.cos(angle)), _snap(math.sin(angle))
    # source = origin + matrix @ (p + d(p)); matrix = rotation @ flips
    matrix = np.array([[cos * flip_y, -sin * flip_x], [sin * flip_y, cos * flip_x]])
    origin = (center_y + shift_y, center_x + shift_x)
    rows = np.arange(in_shape[0], dtype=np.float64) - in_shape[0] // 2
    cols = np.arange(in_shape[1], dtype=np.float64) - in_shape[1] // 2
    coords = np.empty((2, *in_shape))
    for axis in range(2):  # the affine part, by broadcasting a column and a row
        np.add((origin[axis] + matrix[axis, 0] * rows)[:, None], (matrix[axis, 1] * cols)[None, :], out=coords[axis])
    elastic = config.elastic_sigma_px > 0 and rng.random() < config.elastic_prob
    if elastic:
        field = _random_displacement(in_shape, config.elastic_sigma_px, config.elastic_grid, rng)
        for axis in range(2):
            coords[axis] += matrix[axis, 0] * field.dy
            coords[axis] += matrix[axis, 1] * field.dx
    whole = not elastic and sin in (-1.0, 0.0, 1.0) and all(float(v).is_integer() for v in origin)
    inner = (slice(margin[0], margin[0] + out_shape[0]), slice(margin[1], margin[1] + out_shape[1]))
    copies = _mirror_copies(coords[0][inner], coords[1][inner], labels.shape) if mirror_copies else None
    sample = _resample(image, labels, weights, coords, margin, out_shape, 0 if whole else config.image_order)
    sample = sample._replace(copies=copies)
    if config.gray_prob and rng.random() < config.gray_prob:
        sample = sample._replace(image=_vary_gray(sample.image, config, rng))
    return sample


def augment_sample(
    image: npt.NDArray[np.number],
    labels: npt.NDArray[np.integer],
    weights: npt.NDArray[np.floating] | None = None,
    *,
    config: AugmentConfig,
    rng: np.random.Generator | int | None = None,
) -> AugmentedSample:
    """Augment a whole sample, keeping its size: :func:`sample_window` with the full image as the window.

    Parameters
    ----------
    image : (H, W) or (H, W, C) ndarray
        Raw image.
    labels : (H, W) ndarray of int
        Labels.
    weights : (H, W) ndarray of float, optional
        Pixel-wise loss weights.
    config : AugmentConfig
        What to apply.
    rng : numpy.random.Generator or int, optional
        Random source or seed.

    Returns
    -------
    AugmentedSample
        Image (float32), labels and weights, all (H, W); see :func:`sample_window`.

    Raises
    ------
    TypeError, ValueError
        As :func:`sample_window`.

    Examples
    --------
    >>> image = np.arange(12.0).reshape(3, 4)
    >>> out = augment_sample(image, np.ones((3, 4), int), config=AugmentConfig.disabled())
    >>> bool(np.array_equal(out.image, image)), out.weights is None
    (True, True)
    """
    _check_sample(image, labels, weights)
    height, width = labels.shape
    return sample_window(
        image,
        labels,
        weights,
        in_tile=(height, width),
        out_tile=(height, width),
        center=(height // 2, width // 2),
        config=config,
        rng=rng,
    )


# --- volumes (Cicek et al. 2016) -------------------------------------------------------------------------------


def _random_volume_displacement(
    shape: tuple[int, ...], sigma_px: float, grid: int, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """(3, Z, Y, X) float32 field: Gaussian vectors (std ``sigma_px``) on a ``grid``^3 lattice spanning the window,
    tricubically interpolated (a tensor product of :func:`_grid_basis`). Draws ``(3, grid, grid, grid)`` nodes,
    the z component first."""
    nodes = rng.normal(0.0, sigma_px, size=(3, grid, grid, grid)).astype(np.float32)
    depth, rows, cols = (_grid_basis(length, grid).astype(np.float32) for length in shape)
    field = np.empty((3, *shape), np.float32)
    for component, node in enumerate(nodes):  # contract x, then y, then z: the last step costs Z*Y*X*grid
        along_x = np.einsum("ijk,xk->ijx", node, cols)
        along_y = np.einsum("ijx,yj->iyx", along_x, rows)
        np.einsum("iyx,zi->zyx", along_y, depth, out=field[component])
    return field


def _check_volume(image: np.ndarray, classes: np.ndarray, weights: np.ndarray | None) -> None:
    for name, array in (("image", image), ("classes", classes), ("weights", weights)):
        if array is not None and not isinstance(array, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    if image.ndim != 4 or not (np.issubdtype(image.dtype, np.number) and np.isrealobj(image)):
        raise ValueError(f"image must be a real (Z, Y, X, C) array, got shape {image.shape} {image.dtype}")
    if not np.issubdtype(classes.dtype, np.integer):
        raise TypeError(f"classes must be an integer array, got dtype {classes.dtype}")
    if classes.shape != image.shape[:3]:
        raise ValueError(f"classes {classes.shape} must have the image's (Z, Y, X) {image.shape[:3]}")
    if weights is not None and (weights.shape[:3] != classes.shape or weights.ndim > 4):
        raise ValueError(f"weights {weights.shape} must be (Z, Y, X) or (Z, Y, X, E) with (Z, Y, X) = {classes.shape}")
    if weights is not None and not np.issubdtype(weights.dtype, np.number):
        raise TypeError(f"weights must be a numeric array, got dtype {weights.dtype}")
    if classes.size == 0:
        raise ValueError(f"image must not be empty, got shape {image.shape}")


def _volume_spacing(spacing: Sequence[float] | None) -> npt.NDArray[np.float64]:
    if spacing is None:
        return np.ones(3)
    values = np.asarray(spacing, dtype=np.float64)
    if values.shape != (3,) or not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError(f"spacing must be three finite positive numbers (z, y, x), got {spacing}")
    return values


def _volume_transform(
    config: AugmentConfig, spacing: npt.NDArray[np.float64], rng: np.random.Generator
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Draw flips (z, y, x), a transposition of (y, x) (only when the in-plane pixel is square), the in-plane angle
    and the shift. Returns the physical map ``rotation @ transposition @ flips`` (3, 3) and the shift in voxels."""
    flips = rng.choice([-1.0, 1.0], size=3) if config.flip else np.ones(3)
    transpose = config.flip and spacing[1] == spacing[2] and rng.random() < 0.5
    angle = math.radians(rng.uniform(-config.rotation_deg, config.rotation_deg)) if config.rotation_deg else 0.0
    shift = rng.uniform(-config.shift_px, config.shift_px, size=3) if config.shift_px else np.zeros(3)
    cos, sin = _snap(math.cos(angle)), _snap(math.sin(angle))
    rotation = np.array([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]])
    swap = np.eye(3)[[0, 2, 1]] if transpose else np.eye(3)
    return rotation @ swap @ np.diag(flips), shift / spacing


def _volume_coords(
    in_shape: tuple[int, ...], origin: npt.NDArray[np.float64], matrix: npt.NDArray[np.float64]
) -> npt.NDArray[np.float32]:
    """(3, *in_shape) float32 source coordinates ``origin + matrix @ p`` of the window voxels ``p`` (relative to
    the window centre ``in_shape // 2``), built by broadcasting one vector per axis."""
    steps = [np.arange(size, dtype=np.float64) - size // 2 for size in in_shape]
    coords = np.empty((3, *in_shape), np.float32)
    for axis in range(3):
        along_z = origin[axis] + matrix[axis, 0] * steps[0]
        plane = matrix[axis, 1] * steps[1][:, None] + matrix[axis, 2] * steps[2][None, :]
        np.add(along_z[:, None, None], plane[None], out=coords[axis])
    return coords


def _check_window(
    in_shape: tuple[int, ...], out_shape: tuple[int, ...], center: Sequence[float], shape: tuple[int, ...]
) -> None:
    if any(i < o or (i - o) % 2 for i, o in zip(in_shape, out_shape)):
        raise ValueError(f"in_shape - out_shape must be even and >= 0 per axis, got {in_shape} - {out_shape}")
    if len(center) != len(shape) or not all(0 <= float(c) < size for c, size in zip(center, shape)):
        bounds = " x ".join(f"[0, {size})" for size in shape)
        raise ValueError(f"center must lie in the volume {bounds}, got {center}")


def sample_volume_window(
    image: npt.NDArray[np.number],
    classes: npt.NDArray[np.integer],
    weights: npt.NDArray[np.floating] | None = None,
    *,
    in_shape: int | tuple[int, int, int],
    out_shape: int | tuple[int, int, int],
    center: tuple[float, float, float],
    config: AugmentConfig,
    rng: np.random.Generator | int | None = None,
    spacing: tuple[float, float, float] | None = None,
) -> AugmentedSample:
    """Cut an augmented 3D training window: the volume counterpart of :func:`sample_window` (Cicek et al. 2016).

    Parameters
    ----------
    image : (Z, Y, X, C) ndarray
        Source volume; only the region the window reaches is read (and mirrored where needed).
    classes : (Z, Y, X) ndarray of int
        Source labels (``IGNORE = -1`` is kept like any other value).
    weights : (Z, Y, X) or (Z, Y, X, E) ndarray of float, optional
        Source weight map(s), cut like the labels.
    in_shape, out_shape : int or (int, int, int)
        Image window (network input) and label window (network output), centred in it, so
        ``in_shape - out_shape`` must be even and >= 0 per axis.
    center : (float, float, float)
        Source voxel ``(z, y, x)`` at window index ``in_shape // 2``; inside the volume. Flips and rotation turn
        about it.
    config : AugmentConfig
        The 2D settings, read in in-plane pixels: ``elastic_sigma_px``, ``shift_px`` and ``elastic_grid`` (nodes
        per axis, paper: 3) act in all three axes, ``rotation_deg`` in the (y, x) plane only, ``flip`` mirrors
        each axis and, when ``spacing`` y == x, transposes (y, x). :meth:`AugmentConfig.disabled` gives a crop.
    rng : numpy.random.Generator or int, optional
        Random source or seed.
    spacing : (float, float, float), optional
        Voxel size relative to the in-plane pixel, e.g. ``(2.24, 1, 1)``; default isotropic. The transform is
        physical: a z displacement of ``d`` in-plane pixels moves ``d / spacing[0]`` slices.

    Returns
    -------
    AugmentedSample
        ``image`` (*in_shape, C) float32, spline of order ``config.image_order`` in float32 (an exact lookup when
        the map moves by whole voxels); ``labels`` (*out_shape), same dtype, and ``weights`` (*out_shape[, E])
        float32, both nearest neighbour from the same source voxel. Gray values vary as in 2D.

    Raises
    ------
    TypeError
        If an input is not an ndarray, ``classes`` not integer, ``weights`` not numeric or ``config`` not an
        AugmentConfig.
    ValueError
        If the shapes disagree, ``in_shape - out_shape`` is odd or negative, ``center`` lies outside the volume
        or ``spacing`` is not three positive numbers.

    Notes
    -----
    Window voxel ``p`` (relative to the centre) reads the source at ``center + shift + S^-1 M (S p + d(p))``, with
    ``S = diag(spacing)``, ``M`` rotation @ transposition @ flips and ``d`` the elastic field (in in-plane pixels)
    over the window; mirrored beyond the volume (``np.pad(mode="symmetric")``). Draws, in order: flips (z, y, x),
    transposition, angle, shift, elastic, gray values.

    References
    ----------
    .. [1] Cicek, Abdulkadir, Lienkamp, Brox, Ronneberger (2016). 3D U-Net. MICCAI, section 2. arXiv:1606.06650
    """
    if not isinstance(config, AugmentConfig):
        raise TypeError(f"config must be an AugmentConfig, got {type(config).__name__}")
    _check_volume(image, classes, weights)
    in_shape, out_shape = _sizes(in_shape, "in_shape", 3), _sizes(out_shape, "out_shape", 3)
    _check_window(in_shape, out_shape, center, classes.shape)
    scale = _volume_spacing(spacing)
    rng = np.random.default_rng(rng)
    physical, shift = _volume_transform(config, scale, rng)
    matrix = np.vectorize(_snap)(physical * scale[None, :] / scale[:, None])  # S^-1 M S, for voxel steps
    origin = np.array([float(c) for c in center]) + shift
    coords = _volume_coords(in_shape, origin, matrix)
    elastic = config.elastic_sigma_px > 0 and rng.random() < config.elastic_prob
    if elastic:
        field = _random_volume_displacement(in_shape, config.elastic_sigma_px, config.elastic_grid, rng)
        for (axis, component), factor in np.ndenumerate(physical / scale[:, None]):  # S^-1 M d
            if factor:
                coords[axis] += np.float32(factor) * field[component]
    whole = not elastic and np.all(np.isin(matrix, (-1.0, 0.0, 1.0))) and all(v.is_integer() for v in origin)
    margin = [(i - o) // 2 for i, o in zip(in_shape, out_shape)]
    inner = tuple(slice(m, m + o) for m, o in zip(margin, out_shape))
    index = _nearest_flat_index([c[inner] for c in coords], classes.shape)
    labels_out = _take(classes, index, 3)
    weights_out = None if weights is None else _take(weights, index, 3).astype(np.float32)
    if whole:
        image_out = _take(image, _nearest_flat_index(coords, classes.shape), 3).astype(np.float32)
    else:
        image_out = _sample_spline(image, coords, config.image_order, np.float32)
    sample = AugmentedSample(image_out, labels_out, weights_out)
    if config.gray_prob and rng.random() < config.gray_prob:
        sample = sample._replace(image=_vary_gray(sample.image, config, rng))
    return sample
