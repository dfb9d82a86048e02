"""Intensity normalisation, per plane and per channel: part of a model's contract, stored in its checkpoint.

- ``"range"``: integer images are divided by their dtype's maximum (uint8 by 255, uint16 by 65535); signed integers
  are shifted to start at 0 first; float images are used as they are.
- ``"percentile"``: ``(x - p1) / (p99.8 - p1)`` with percentiles of the plane (robust to 12-bit data in 16-bit
  files and to different microscope settings). The default.
- ``"minmax"``: ``(x - min) / (max - min)`` over the plane.
- ``"zscore"``: ``(x - mean) / std`` over the plane.

Statistics of a plane larger than ``STATS_MAX_PIXELS`` are taken on a regular subsample of its rows and columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from biounet.data.images import ImageSource, _check_dtype

NORMALIZATIONS: tuple[str, ...] = ("percentile", "range", "minmax", "zscore")


PERCENTILES: tuple[float, float] = (1.0, 99.8)


STATS_MAX_PIXELS = 4_000_000


STATS_BLOCK_BYTES = 32 * 2**20
"""Largest block of raw pixels read at once while sampling a plane for its statistics."""


@dataclass(frozen=True)
class Normalization:
    """Per-channel affine map ``(x - offset) / scale`` computed for one plane (see the module docstring)."""

    offset: tuple[float, ...]
    scale: tuple[float, ...]

    def apply(self, block: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Normalise a raw ``(h, w, C)`` block to float32; rejects NaN and Inf."""
        out = block.astype(np.float32)
        if out.dtype.kind == "f" and block.dtype.kind == "f" and not np.all(np.isfinite(out)):
            raise ValueError("image contains NaN or Inf pixels")
        out -= np.asarray(self.offset, dtype=np.float32)
        out /= np.asarray(self.scale, dtype=np.float32)
        return out


def _subsample(source: ImageSource, plane: int) -> npt.NDArray[Any]:
    step = max(1, int(np.ceil(np.sqrt(source.height * source.width / STATS_MAX_PIXELS))))
    if step == 1:
        return source.read_plane(plane)
    row_bytes = source.width * source.channels * source.dtype.itemsize
    block = max(1, STATS_BLOCK_BYTES // max(row_bytes, 1) // step) * step  # rows per read, a multiple of step
    rows = []
    for top in range(0, source.height, block):  # bounded memory: at most STATS_BLOCK_BYTES (or one row) a read
        strip = source.read(plane, slice(top, min(top + block, source.height)))
        rows.append(np.asarray(strip[::step, ::step]))
    return np.concatenate(rows)


def normalization_for(source: ImageSource, plane: int = 0, mode: str = "percentile") -> Normalization:
    """Compute the normalisation of one plane of ``source`` (see the module docstring for ``mode``)."""
    if mode not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {mode!r}")
    dtype = source.dtype
    channels = source.channels
    if mode == "range":
        if dtype.kind in "ui":
            info = np.iinfo(dtype)
            return Normalization((float(info.min),) * channels, (float(info.max) - float(info.min),) * channels)
        if dtype.kind == "b":
            return Normalization((0.0,) * channels, (1.0,) * channels)
        sample = _subsample(source, plane)
        _check_finite(source, sample)
        return Normalization((0.0,) * channels, (1.0,) * channels)
    sample = _subsample(source, plane).reshape(-1, channels).astype(np.float64)
    _check_finite(source, sample)
    if mode == "percentile":
        low, high = np.percentile(sample, PERCENTILES, axis=0)
    elif mode == "minmax":
        low, high = sample.min(axis=0), sample.max(axis=0)
    else:
        low, std = sample.mean(axis=0), sample.std(axis=0)
        high = low + std
    scale = np.where(high - low > 1e-12, high - low, 1.0)  # a constant plane maps to 0, not to NaN
    return Normalization(tuple(float(v) for v in low), tuple(float(v) for v in scale))


def _check_finite(source: ImageSource, sample: npt.NDArray[Any]) -> None:
    if sample.dtype.kind == "f" and not np.all(np.isfinite(sample)):
        raise ValueError(f"{source.path}: image contains NaN or Inf pixels")


def normalize(image: npt.NDArray[Any], mode: str = "percentile") -> npt.NDArray[np.float32]:
    """Normalise an in-memory ``(H, W)`` or ``(H, W, C)`` image to float32 (see the module docstring)."""
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    array = image if image.ndim == 3 else image[..., None]
    source = ImageSource(Path("<array>"), array, (1, *array.shape), array.dtype, "YXC")  # type: ignore[arg-type]
    _check_dtype(source.path, source.dtype)
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError("image contains NaN or Inf pixels")
    out = normalization_for(source, 0, mode).apply(array)
    return out if image.ndim == 3 else out[..., 0]


__all__ = ['NORMALIZATIONS', 'PERCENTILES', 'STATS_BLOCK_BYTES', 'STATS_MAX_PIXELS', 'Normalization', 'normalization_for', 'normalize']
