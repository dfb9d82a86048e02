"""The overlap-tile strategy (paper section 2, Fig. 2): seamless prediction of images of any size.

A network with valid convolutions predicts an ``out_tile`` square from an ``in_tile`` square that carries
``margin`` pixels of context on each side. The image is cut into tiles whose *outputs* cover it; context missing
at the image border is mirrored. With max pooling, a tile's output equals the corresponding part of one pass of
the network over the whole (mirror-padded) image only when tile origins differ by multiples of ``2**depth``
(PAPER.md section 2), so the tiles step by the largest multiple of ``align = 2**depth`` that fits in ``out_tile``.
Neighbouring outputs then overlap by a few pixels whose values agree to float rounding.

This module is NumPy only: the network is any callable mapping a float32 batch ``(N, C, in_tile, in_tile)`` to
``(N, K, out_tile, out_tile)`` class probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

PredictFn = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]
ReadFn = Callable[[slice, slice], npt.NDArray[Any]]


@dataclass(frozen=True)
class TileGeometry:
    """Sizes of one tile: ``in_tile = out_tile + 2 * margin``; tile origins step by ``step`` (a multiple of align)."""

    in_tile: int
    out_tile: int
    margin: int
    align: int

    def __post_init__(self) -> None:
        if self.in_tile != self.out_tile + 2 * self.margin:
            raise ValueError(
                f"in_tile ({self.in_tile}) must equal out_tile ({self.out_tile}) + 2 * margin ({self.margin})"
            )
        if self.out_tile < self.align or self.align < 1:
            raise ValueError(f"out_tile ({self.out_tile}) must be >= align ({self.align}) >= 1")

    @property
    def step(self) -> int:
        """Distance between tile origins: the largest multiple of ``align`` not above ``out_tile``."""
        return self.out_tile // self.align * self.align


def tile_starts(length: int, out_tile: int, step: int) -> list[int]:
    """Origins (in output pixels) of the fewest tiles of size ``out_tile``, stepping by ``step``, covering ``length``.

    The last tile may overhang the image; its overhang is predicted from mirrored context and discarded.

    >>> tile_starts(1000, 388, 384)
    [0, 384, 768]
    >>> tile_starts(37, 388, 384)
    [0]
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if not 0 < step <= out_tile:
        raise ValueError(f"step must be in 1..out_tile ({out_tile}), got {step}")
    starts = [0]
    while starts[-1] + out_tile < length:
        starts.append(starts[-1] + step)
    return starts


def mirror_indices(start: int, stop: int, length: int) -> npt.NDArray[np.intp]:
    """Indices ``start..stop-1`` folded into ``[0, length)`` by mirroring (edge pixel repeated, like ``np.pad``
    ``mode="symmetric"``); works for any overhang, also larger than ``length``.

    >>> mirror_indices(-3, 6, 4).tolist()
    [2, 1, 0, 0, 1, 2, 3, 3, 2]
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    index = np.mod(np.arange(start, stop), 2 * length)
    return np.where(index >= length, 2 * length - 1 - index, index).astype(np.intp)


def read_mirrored(read: ReadFn, shape: tuple[int, int], top: int, left: int, size: int) -> npt.NDArray[Any]:
    """Read the ``size`` x ``size`` window at (``top``, ``left``) of an image, mirroring outside its borders.

    ``read(rows, cols)`` returns the raw ``(h, w, C)`` region of the image; only the bounding box of the rows and
    columns needed is read.
    """
    rows = mirror_indices(top, top + size, shape[0])
    cols = mirror_indices(left, left + size, shape[1])
    r0, c0 = int(rows.min()), int(cols.min())
    block = read(slice(r0, int(rows.max()) + 1), slice(c0, int(cols.max()) + 1))
    return block[np.ix_(rows - r0, cols - c0)]


Window = tuple[tuple[int, int], tuple[int, int]]
"""``((top, bottom), (left, right))``: a rectangle of an image, in pixels, stops exclusive."""


def iter_tiles(shape: tuple[int, int], geometry: TileGeometry, window: Window | None = None,
               ) -> Iterator[tuple[int, int]]:
    """Output-space origins ``(top, left)`` of the tiles covering ``window`` of an image of ``shape`` (the whole
    image by default), row by row; they start at the window's corner and step by ``geometry.step``.

    >>> g = TileGeometry(in_tile=20, out_tile=12, margin=4, align=4)
    >>> list(iter_tiles((30, 10), g)), list(iter_tiles((30, 10), g, ((12, 30), (0, 10))))
    ([(0, 0), (12, 0), (24, 0)], [(12, 0), (24, 0)])
    """
    (top, bottom), (left, right) = window if window is not None else ((0, shape[0]), (0, shape[1]))
    if not (0 <= top < bottom <= shape[0] and 0 <= left < right <= shape[1]):
        raise ValueError(f"window {window} must be a non-empty part of the image of shape {shape}")
    for row in tile_starts(bottom - top, geometry.out_tile, geometry.step):
        for col in tile_starts(right - left, geometry.out_tile, geometry.step):
            yield top + row, left + col


def predict_tiled(
    read: ReadFn,
    shape: tuple[int, int],
    predict: PredictFn,
    geometry: TileGeometry,
    *,
    probabilities: Any | None = None,
    labels: Any | None = None,
    batch_size: int = 1,
    progress: Callable[[int], None] | None = None,
    label_channels: int | None = None,
    window: Window | None = None,
) -> None:
    """Predict an image of ``shape`` (H, W), or a ``window`` of it, tile by tile, writing into the given outputs.

    Parameters
    ----------
    read : callable
        ``read(rows, cols) -> (h, w, C)`` float32 normalised pixels of the image region (see :mod:`biounet.data.normalization`).
    shape : (int, int)
        Image height and width.
    predict : callable
        ``(N, C, in_tile, in_tile)`` float32 -> ``(N, K, out_tile, out_tile)`` float32 class probabilities.
    geometry : TileGeometry
        Tile sizes; tile origins step by ``geometry.step``.
    probabilities : array-like (K, h, w), optional
        Written with the class probabilities (numpy, zarr or any array supporting slice assignment); ``(h, w)``
        is the window's size, the image's by default.
    labels : array-like (h, w), optional
        Written with the arg-max class of each pixel.
    batch_size : int
        Tiles predicted per call of ``predict``.
    progress : callable, optional
        Called with the number of tiles finished after each batch.
    label_channels : int, optional
        The labels are the arg-max over the first ``label_channels`` channels (the class probabilities of a
        model that also regresses a distance map); all channels by default.
    window : ((top, bottom), (left, right)), optional
        Predict only this part of the image (a block of :mod:`biounet.inference.blockwise`); context is still read
        from the whole image, mirrored only at its borders. A window whose corner lies on multiples of
        ``geometry.step`` gets the tiles, hence the values, of a whole-image run there.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    (top0, bottom), (left0, right) = window if window is not None else ((0, shape[0]), (0, shape[1]))
    m, size = geometry.margin, geometry.in_tile
    origins = list(iter_tiles(shape, geometry, window))
    for first in range(0, len(origins), batch_size):
        batch_origins = origins[first : first + batch_size]
        batch = np.stack(
            [read_mirrored(read, shape, top - m, left - m, size) for top, left in batch_origins]
        ).transpose(0, 3, 1, 2)
        probs = predict(np.ascontiguousarray(batch, dtype=np.float32))
        expected = (len(batch_origins), geometry.out_tile, geometry.out_tile)
        if probs.ndim != 4 or (probs.shape[0], *probs.shape[2:]) != expected:
            raise ValueError(f"predict returned shape {probs.shape}, expected (N, K, H, W) with N, H, W = {expected}")
        for (top, left), tile_probs in zip(batch_origins, probs):
            h, w = min(geometry.out_tile, bottom - top), min(geometry.out_tile, right - left)
            region = (slice(top - top0, top - top0 + h), slice(left - left0, left - left0 + w))
            if probabilities is not None:
                probabilities[(slice(None), *region)] = tile_probs[:, :h, :w]
            if labels is not None:
                labels[region] = np.argmax(tile_probs[:label_channels, :h, :w], axis=0).astype(labels.dtype)
        if progress is not None:
            progress(len(batch_origins))


def count_tiles(shape: tuple[int, int], geometry: TileGeometry) -> int:
    """Number of tiles :func:`predict_tiled` runs for an image of ``shape``."""
    return len(tile_starts(shape[0], geometry.out_tile, geometry.step)) * len(
        tile_starts(shape[1], geometry.out_tile, geometry.step)
    )


def padded_extent(length: int, geometry: TileGeometry) -> int:
    """Side of the mirror-padded image that one whole-image pass needs to reproduce the tiled result."""
    starts = tile_starts(length, geometry.out_tile, geometry.step)
    return starts[-1] + geometry.in_tile
