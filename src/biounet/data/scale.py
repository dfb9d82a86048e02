"""Pixel size ("element size"): a model sees cells at the scale it was trained at.

A network learns features of a fixed size in pixels. A model records the pixel size of its training images (in
micrometres, y and x); an image of another pixel size is resampled to the model's before prediction and its
outputs resampled back, so labels have the image's own shape [1]_. Images without a recorded pixel size, and
models without one, are predicted as they are.

References
----------
.. [1] Falk et al. (2019). U-Net: deep learning for cell counting, detection, and morphometry. Nature Methods
   16, 67-70 (the Fiji plugin's "element size": images are rescaled to the model's before segmentation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

MICROMETRES_PER_UNIT: dict[str, float] = {
    "micrometer": 1.0, "nanometer": 1e-3, "angstrom": 1e-4, "millimeter": 1e3, "centimeter": 1e4, "meter": 1e6,
}
"""NGFF unit names with their length in micrometres (OME-TIFF units are translated to these on reading)."""
TOLERANCE = 0.02
"""Pixel sizes within 2 % of each other count as equal: no resampling."""

PixelSizeUm = tuple[float, float]


def micrometres(y: float, x: float, unit: str = "micrometer") -> PixelSizeUm:
    """A pixel size ``(y, x)`` in ``unit`` as micrometres.

    Raises
    ------
    ValueError
        If the unit is not a length unit of :data:`MICROMETRES_PER_UNIT` or a size is not positive and finite.
    """
    if unit not in MICROMETRES_PER_UNIT:
        raise ValueError(f"pixel size unit {unit!r} is not a length unit ({', '.join(MICROMETRES_PER_UNIT)})")
    size = (float(y) * MICROMETRES_PER_UNIT[unit], float(x) * MICROMETRES_PER_UNIT[unit])
    if not all(s > 0 and math.isfinite(s) for s in size):
        raise ValueError(f"pixel size must be positive and finite, got {size} µm")
    return size


def physical_micrometres(size: Any) -> PixelSizeUm | None:
    """A metadata pixel size (:class:`biounet.data.omezarr.PixelSize`: ``y``, ``x``, ``unit``) in micrometres, or None
    where there is none or its unit is not a length (e.g. pixels)."""
    if size is None or size.unit not in MICROMETRES_PER_UNIT:
        return None
    return micrometres(size.y, size.x, size.unit)


def parse_pixel_size(text: str) -> PixelSizeUm:
    """``"0.19"`` (square pixels) or ``"0.19,0.2"`` (y, x), in micrometres."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"pixel size must be micrometres, e.g. 0.19 or 0.19,0.2 (y,x); got {text!r}") from None
    if len(values) not in (1, 2):
        raise ValueError(f"pixel size must be one number or two (y,x), got {text!r}")
    return micrometres(values[0], values[-1])


def common_pixel_size(sizes: Sequence[PixelSizeUm | None]) -> PixelSizeUm | None:
    """The pixel size all of ``sizes`` share (within :data:`TOLERANCE`), or None if one is unknown or they differ."""
    if not sizes or any(size is None for size in sizes):
        return None
    first = sizes[0]
    assert first is not None
    if any(zoom_factors(size, first) is not None for size in sizes):  # type: ignore[arg-type]
        return None
    return first


def zoom_factors(image_um: PixelSizeUm, model_um: PixelSizeUm) -> tuple[float, float] | None:
    """How much to enlarge an image of pixel size ``image_um`` to the model's ``model_um`` (y, x), or None when
    they agree within :data:`TOLERANCE`. An image of twice the model's pixel size is enlarged 2x.

    >>> zoom_factors((0.38, 0.38), (0.19, 0.19))
    (2.0, 2.0)
    >>> zoom_factors((0.19, 0.19), (0.19, 0.1905)) is None
    True
    """
    factors = (image_um[0] / model_um[0], image_um[1] / model_um[1])
    if all(abs(f - 1.0) <= TOLERANCE for f in factors):
        return None
    return factors


def scaled_shape(shape: tuple[int, int], factors: tuple[float, float]) -> tuple[int, int]:
    """The ``(H, W)`` of an image of ``shape`` enlarged by ``factors`` (at least 1 px)."""
    return (max(1, round(shape[0] * factors[0])), max(1, round(shape[1] * factors[1])))


def resample(array: npt.NDArray[np.float32], shape: tuple[int, int], *, order: int = 1) -> npt.NDArray[np.float32]:
    """``array`` ``(..., H, W)`` resampled to ``(..., *shape)`` with spline interpolation of ``order``.

    Pixel centres map onto pixel centres (``grid_mode``), so enlarging and shrinking back returns the image up to
    interpolation error; edges are mirrored.
    """
    if array.shape[-2:] == tuple(shape):
        return array
    factors = (1.0,) * (array.ndim - 2) + (shape[0] / array.shape[-2], shape[1] / array.shape[-1])
    out = ndimage.zoom(np.asarray(array, dtype=np.float32), factors, order=order, mode="grid-mirror",
                       grid_mode=True, prefilter=order > 1)
    return out[(..., slice(0, shape[0]), slice(0, shape[1]))].astype(np.float32, copy=False)


__all__ = [
    "MICROMETRES_PER_UNIT",
    "TOLERANCE",
    "PixelSizeUm",
    "common_pixel_size",
    "micrometres",
    "parse_pixel_size",
    "physical_micrometres",
    "resample",
    "scaled_shape",
    "zoom_factors",
]
