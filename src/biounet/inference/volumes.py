"""The overlap-tile strategy for volumes (Ronneberger et al. 2015, section 2, Fig. 2; Cicek et al. 2016, 3D U-Net).

A 3D U-Net with valid convolutions predicts an ``out_shape`` box from an ``in_shape`` box that carries ``margins``
voxels of context per side, per axis ``(z, y, x)``. As in 2D (:mod:`biounet.inference.tiling`) the volume is cut
into tiles whose outputs cover it, context beyond the volume is mirrored (in z too), and tile origins step by
multiples of the per-axis pooling factor ``align`` (``2**depth`` in-plane, ``2**(depth - flat_levels)`` in z), so
every tile's output is the corresponding part of one network pass over the whole mirror-padded volume: the result
does not depend on the tile shape, to float rounding.

The outputs are written tile by tile into array-likes (numpy, zarr), so memory stays at a few tiles whatever the
volume's size. :func:`choose_volume_tile` picks the tile shape from a memory budget.

References
----------
.. [1] Ronneberger, Fischer, Brox (2015). U-Net: Convolutional Networks for Biomedical Image Segmentation.
   MICCAI. arXiv:1505.04597
.. [2] Cicek, Abdulkadir, Lienkamp, Brox, Ronneberger (2016). 3D U-Net: Learning Dense Volumetric Segmentation
   from Sparse Annotation. MICCAI. arXiv:1606.06650
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from biounet.core.model import (
    ModelConfig,
    align_shape,
    context_margins,
    level_widths,
    output_shape,
    smallest_input_shape,
)
from biounet.inference.tiling import mirror_indices, tile_starts

Shape3 = tuple[int, int, int]
PredictFn = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]
VolumeReadFn = Callable[[slice, slice, slice], npt.NDArray[Any]]
"""``read(zs, ys, xs) -> (z, y, x, C)``: the raw region of a volume."""

ACTIVE_MAPS = 4
"""Feature maps of a level alive at once during inference, in units of the level's width times its voxels (see
:func:`estimate_volume_bytes`)."""


@dataclass(frozen=True)
class VolumeGeometry:
    """Sizes of one 3D tile, per axis ``(z, y, x)``: ``in_shape = out_shape + 2 * margins``; tile origins step by
    ``step``, the largest multiple of ``align`` not above ``out_shape``.

    >>> VolumeGeometry(in_shape=(20, 44, 44), out_shape=(12, 20, 20), margins=(4, 12, 12), align=(2, 8, 8)).step
    (12, 16, 16)
    """

    in_shape: Shape3
    out_shape: Shape3
    margins: Shape3
    align: Shape3

    def __post_init__(self) -> None:
        for name in ("in_shape", "out_shape", "margins", "align"):
            value = getattr(self, name)
            if len(value) != 3 or not all(isinstance(v, (int, np.integer)) for v in value):
                raise ValueError(f"{name} must be three integers (z, y, x), got {value}")
            object.__setattr__(self, name, tuple(int(v) for v in value))
        for axis, (size, out, margin, align) in enumerate(zip(self.in_shape, self.out_shape, self.margins,
                                                              self.align)):
            if size != out + 2 * margin or margin < 0:
                raise ValueError(f"in_shape {self.in_shape} must equal out_shape {self.out_shape} + 2 * margins "
                                 f"{self.margins} (margins >= 0), axis {'zyx'[axis]} does not")
            if not 1 <= align <= out:
                raise ValueError(f"out_shape {self.out_shape} must be >= align {self.align} >= 1 on every axis, "
                                 f"axis {'zyx'[axis]} is not")

    @property
    def step(self) -> Shape3:
        """Distance between tile origins per axis: the largest multiple of ``align`` not above ``out_shape``."""
        return tuple(out // align * align for out, align in zip(self.out_shape, self.align))  # type: ignore[return-value]


def _same_padding_margins(in_shape: Shape3, align: Shape3) -> Shape3:
    """Voxels discarded per side of a same-padded tile: an eighth of the tile per axis, rounded up to ``align``
    (:func:`~biounet.core.model.same_padding_crop` per axis)."""
    return tuple(math.ceil(size / 8 / a) * a for size, a in zip(in_shape, align))  # type: ignore[return-value]


def volume_geometry(config: ModelConfig, in_shape: Sequence[int]) -> VolumeGeometry:
    """The tile geometry of a 3D network ``config`` for input tiles of ``in_shape`` ``(z, y, x)``.

    A valid-convolution network predicts ``output_shape(in_shape)`` from ``context_margins`` voxels of context;
    a same-padded one keeps the centre of its tile, discarding an eighth of it per side (not seamless, as in 2D).
    Raises ``ValueError`` (from :func:`biounet.core.model.output_shape`, naming the nearest valid sizes) when
    ``in_shape`` is not a valid input shape.
    """
    if config.dims != 3:
        raise ValueError(f"volume tiles need a 3D network (ModelConfig.dims=3), got dims={config.dims}")
    shape: Shape3 = tuple(int(s) for s in in_shape)  # type: ignore[assignment]
    if len(shape) != 3:
        raise ValueError(f"in_shape must be (z, y, x), got {tuple(in_shape)}")
    out, margins = _tile_sizes(config, shape)
    return VolumeGeometry(in_shape=shape, out_shape=out, margins=margins, align=align_shape(config))  # type: ignore[arg-type]


def _tile_sizes(config: ModelConfig, in_shape: Shape3) -> tuple[Shape3, Shape3]:
    """``(out_shape, margins)`` of a tile of the valid input shape ``in_shape``, unchecked against ``align``."""
    if config.padding == "same":
        margins = _same_padding_margins(in_shape, align_shape(config))  # type: ignore[arg-type]
        return tuple(size - 2 * m for size, m in zip(in_shape, margins)), margins  # type: ignore[return-value]
    return output_shape(in_shape, config), context_margins(config, in_shape)  # type: ignore[return-value]


def array_reader(volume: npt.NDArray[Any]) -> VolumeReadFn:
    """``read(zs, ys, xs)`` for an in-memory ``(Z, Y, X, C)`` volume, as :func:`predict_volume` takes it."""
    if getattr(volume, "ndim", None) != 4:
        raise ValueError(f"volume must be (Z, Y, X, C), got shape {getattr(volume, 'shape', None)}; add a channel "
                         f"axis to a single-channel volume (volume[..., None])")

    def read(zs: slice, ys: slice, xs: slice) -> npt.NDArray[Any]:
        return volume[zs, ys, xs]

    return read


def read_mirrored_box(read: VolumeReadFn, shape: Shape3, corner: Sequence[int], size: Sequence[int],
                      ) -> npt.NDArray[Any]:
    """The ``size`` box at ``corner`` (z, y, x) of a volume of ``shape``, mirrored beyond its borders like
    ``np.pad(mode="symmetric")`` (:func:`~biounet.inference.tiling.mirror_indices`), ``(z, y, x, C)``.

    Only the bounding box of the voxels needed is read (once), as :func:`~biounet.inference.tiling.read_mirrored`
    does in 2D.
    """
    indices = [mirror_indices(start, start + extent, length) for start, extent, length in zip(corner, size, shape)]
    lows = [int(index.min()) for index in indices]
    block = read(*(slice(low, int(index.max()) + 1) for low, index in zip(lows, indices)))
    if getattr(block, "ndim", None) != 4:
        raise ValueError(f"read must return (z, y, x, C) voxels, got shape {getattr(block, 'shape', None)}")
    return np.asarray(block)[np.ix_(*(index - low for index, low in zip(indices, lows)))]


def volume_tile_origins(shape: Sequence[int], geometry: VolumeGeometry) -> list[Shape3]:
    """Output-space origins ``(z, y, x)`` of the tiles covering a volume of ``shape``, x fastest.

    >>> g = VolumeGeometry(in_shape=(8, 20, 20), out_shape=(4, 12, 12), margins=(2, 4, 4), align=(2, 4, 4))
    >>> volume_tile_origins((5, 12, 20), g)
    [(0, 0, 0), (0, 0, 12), (4, 0, 0), (4, 0, 12)]
    """
    starts = [tile_starts(length, out, step) for length, out, step in zip(shape, geometry.out_shape, geometry.step)]
    return list(itertools.product(*starts))  # type: ignore[arg-type]


def count_volume_tiles(shape: Sequence[int], geometry: VolumeGeometry) -> int:
    """Number of tiles :func:`predict_volume` runs for a volume of ``shape``."""
    return math.prod(len(tile_starts(length, out, step))
                     for length, out, step in zip(shape, geometry.out_shape, geometry.step))


def _check_volume_arguments(shape: Sequence[int], geometry: VolumeGeometry, probabilities: Any, labels: Any,
                            batch_size: int) -> Shape3:
    """``shape`` as a tuple, after checking it and the outputs' shapes against it."""
    if not isinstance(geometry, VolumeGeometry):
        raise TypeError(f"geometry must be a VolumeGeometry, got {type(geometry).__name__}")
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be a volume's (Z, Y, X), each >= 1, got {tuple(shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    volume: Shape3 = tuple(int(s) for s in shape)  # type: ignore[assignment]
    if probabilities is not None and (len(probabilities.shape) != 4 or tuple(probabilities.shape[1:]) != volume):
        raise ValueError(f"probabilities must be (K, Z, Y, X) with (Z, Y, X) = {volume}, got {probabilities.shape}")
    if labels is not None and tuple(labels.shape) != volume:
        raise ValueError(f"labels must be (Z, Y, X) = {volume}, got {labels.shape}")
    return volume


def predict_volume(
    read: VolumeReadFn,
    shape: Sequence[int],
    predict: PredictFn,
    geometry: VolumeGeometry,
    *,
    probabilities: Any | None = None,
    labels: Any | None = None,
    batch_size: int = 1,
    progress: Callable[[int], None] | None = None,
    label_channels: int | None = None,
) -> None:
    """Predict a volume of ``shape`` (Z, Y, X) tile by tile, writing into the given outputs in place.

    Parameters
    ----------
    read : callable
        ``read(zs, ys, xs) -> (z, y, x, C)`` float32 normalised voxels of the volume region (:func:`array_reader`
        for an in-memory volume); only the regions a tile needs are read.
    shape : (int, int, int)
        The volume's size (Z, Y, X).
    predict : callable
        ``(N, C, *geometry.in_shape)`` float32 -> ``(N, K, *geometry.out_shape)`` float32 class probabilities.
    geometry : VolumeGeometry
        Tile sizes (:func:`volume_geometry`); tile origins step by ``geometry.step``.
    probabilities : array-like (K, Z, Y, X), optional
        Written with the class probabilities (numpy, zarr or any array supporting slice assignment).
    labels : array-like (Z, Y, X), optional
        Written with the arg-max class of each voxel, in its dtype.
    batch_size : int
        Tiles predicted per call of ``predict``.
    progress : callable, optional
        Called with the number of tiles finished after each batch (:func:`count_volume_tiles` in all).
    label_channels : int, optional
        The labels are the arg-max over the first ``label_channels`` channels; all channels by default.

    Raises
    ------
    ValueError
        For a bad shape, batch size or output array, a ``read`` that does not return ``(z, y, x, C)`` and a
        ``predict`` that does not return ``(N, K, *out_shape)``.
    """
    volume = _check_volume_arguments(shape, geometry, probabilities, labels, batch_size)
    origins = volume_tile_origins(volume, geometry)
    for first in range(0, len(origins), batch_size):
        batch_origins = origins[first : first + batch_size]
        tiles = [read_mirrored_box(read, volume, [o - m for o, m in zip(origin, geometry.margins)],
                                   geometry.in_shape) for origin in batch_origins]
        batch = np.ascontiguousarray(np.stack(tiles).transpose(0, 4, 1, 2, 3), dtype=np.float32)
        probs = np.asarray(predict(batch))
        expected = (len(batch_origins), *geometry.out_shape)
        if probs.ndim != 5 or (probs.shape[0], *probs.shape[2:]) != expected:
            raise ValueError(f"predict returned shape {probs.shape}, expected (N, K, Z, Y, X) with N, Z, Y, X = "
                             f"{expected}")
        for origin, tile_probs in zip(batch_origins, probs):
            _write_tile(tile_probs, origin, volume, probabilities, labels, label_channels)
        if progress is not None:
            progress(len(batch_origins))


def _write_tile(tile_probs: npt.NDArray[np.float32], origin: Shape3, volume: Shape3, probabilities: Any,
                labels: Any, label_channels: int | None) -> None:
    """Write the part of one tile's ``(K, z, y, x)`` output inside the volume at ``origin``."""
    extent = [min(out, length - start) for out, length, start in zip(tile_probs.shape[1:], volume, origin)]
    region = tuple(slice(start, start + size) for start, size in zip(origin, extent))
    inside = tile_probs[(slice(None), *(slice(0, size) for size in extent))]
    if probabilities is not None:
        probabilities[(slice(None), *region)] = inside
    if labels is not None:
        labels[region] = np.argmax(inside[:label_channels], axis=0).astype(labels.dtype)


def estimate_volume_bytes(config: ModelConfig, in_shape: Sequence[int], *, batch_size: int = 1,
                          bytes_per_value: int = 4) -> int:
    """Rough peak memory of inference on a batch of 3D tiles of ``in_shape``, in bytes.

    ``bytes_per_value * batch_size * (ACTIVE_MAPS * sum_l width_l * voxels_l + (C_in + K) * voxels_0)``: ``voxels_l``
    is the tile's voxel count divided by the pooling above level ``l`` (in-plane only for the ``flat_levels`` top
    levels), ``width_l`` the mean of the level's two convolution widths (:func:`~biounet.core.model.level_widths`;
    they differ in the ``cicek`` variant) and :data:`ACTIVE_MAPS` the maps of a level alive at once (a
    convolution's input and output, the batch norm's output, the skip kept for the synthesis path). Under
    ``torch.inference_mode`` a map is freed once used; the sum over levels stands for the skips of the levels
    above, all held while a deeper level runs, and keeps a margin.

    Peak resident-memory growth of one forward pass on the CPU (torch 2.13, fp32, 2 threads, fresh process;
    ``tests/test_volumes_tiling.py::test_memory_estimate_within_2x_of_measured_peak``), as a fraction of this
    estimate: 0.73 for depth 3 base 8 on 124^3 voxels, 0.54 with one flat level on 60x140x140, 0.56 for depth 2
    base 16 with batch norm on 100^3, 0.55 for Cicek et al.'s network at base 16 on 116x132x132, but 1.42 for depth
    2 base 8 with both levels flat on 20x140x140: there the CPU convolves the (1, 3, 3) kernels by unfolding
    their input (a workspace of 9 input channels per output voxel), which this estimate does not model.

    >>> estimate_volume_bytes(ModelConfig(dims=3, depth=1, base_channels=2), (8, 8, 8))  # 4 * (4 * (2 * 512 + 4 * 64) + 3 * 512)
    26624
    """
    flat = config.flat_levels
    voxels = [math.prod(size / 2 ** max(0, level - (flat if axis == 0 else 0)) for axis, size in enumerate(in_shape))
              for level in range(config.depth + 1)]
    widths = [(mid + out) / 2 for mid, out in zip(*level_widths(config))]
    maps = ACTIVE_MAPS * sum(width * count for width, count in zip(widths, voxels))
    ends = (config.in_channels + config.output_channels) * voxels[0]
    return int(bytes_per_value * batch_size * (maps + ends))


def _smallest_tile_shape(config: ModelConfig) -> Shape3:
    """The smallest valid input shape whose output spans at least one pooling period ``align`` on every axis."""
    align = tuple(align_shape(config))
    shape = list(smallest_input_shape(config))
    for axis in range(3):
        while _tile_sizes(config, tuple(shape))[0][axis] < align[axis]:  # type: ignore[arg-type]
            shape[axis] += align[axis]
    return tuple(shape)  # type: ignore[return-value]


def _axis_sizes(config: ModelConfig, smallest: Shape3, axis: int, length: int, fits: Callable[[Shape3], bool],
                ) -> list[int]:
    """Valid input sizes along ``axis`` (others at ``smallest``) that fit the budget, up to the first whose output
    covers ``length``."""
    step = align_shape(config)[axis]
    sizes: list[int] = []
    probe = list(smallest)
    while fits(tuple(probe)) or not sizes:  # type: ignore[arg-type]
        sizes.append(probe[axis])
        if _tile_sizes(config, tuple(probe))[0][axis] >= length:  # type: ignore[arg-type]
            break
        probe[axis] += step
    return sizes


def choose_volume_tile(config: ModelConfig, shape: Sequence[int], memory_bytes: int, *, batch_size: int = 1,
                       bytes_per_value: int = 4) -> Shape3:
    """Input tile shape ``(z, y, x)`` for a volume of ``shape``: the cheapest valid tiling within the memory budget.

    Candidates are the valid input shapes, from the smallest whose output spans ``align`` to the smallest whose
    output covers the volume (a small volume gets one tile), whose :func:`estimate_volume_bytes` is at most
    ``memory_bytes``; y and x take the same size unless the volume needs less on one of them. Among them the one
    computing the fewest input voxels in all (tiles x voxels per tile: recomputed context is the overhead) wins.
    Among equal costs, tiles whose in-plane sizes are at least ``2**flat_levels`` times their z size (the anisotropy
    the network was built for; 1 for an isotropic one) win where the volume allows, then the larger tile. (Making
    that preference stronger than the cost would compute more: a (30, 90, 90) volume would take two z tiles of
    (32, 88, 88) voxels instead of one of (46, 88, 88), 39 % more voxels, for depth 2 with one flat level.)

    Raises ``ValueError`` where even the smallest tile does not fit ``memory_bytes``.
    """
    volume = tuple(int(s) for s in shape)
    if len(volume) != 3 or min(volume) < 1:
        raise ValueError(f"shape must be a volume's (Z, Y, X), each >= 1, got {tuple(shape)}")
    if memory_bytes <= 0 or batch_size < 1:
        raise ValueError(f"memory_bytes and batch_size must be > 0, got {memory_bytes} and {batch_size}")
    if config.dims != 3:
        raise ValueError(f"volume tiles need a 3D network (ModelConfig.dims=3), got dims={config.dims}")
    smallest = _smallest_tile_shape(config)

    def need(in_shape: Sequence[int]) -> int:
        return estimate_volume_bytes(config, in_shape, batch_size=batch_size, bytes_per_value=bytes_per_value)

    if need(smallest) > memory_bytes:
        raise ValueError(f"the memory budget {memory_bytes / 2**20:.1f} MiB is below the smallest tile "
                         f"{smallest}'s estimated {need(smallest) / 2**20:.1f} MiB")

    def fits(in_shape: Sequence[int]) -> bool:
        return need(in_shape) <= memory_bytes

    z_sizes = _axis_sizes(config, smallest, 0, volume[0], fits)
    y_sizes, x_sizes = (_axis_sizes(config, smallest, axis, volume[axis], fits) for axis in (1, 2))
    plane_sizes = range(smallest[1], max(y_sizes[-1], x_sizes[-1]) + 1, align_shape(config)[1])
    ratio = 2 ** config.flat_levels

    def preference(in_shape: Shape3) -> tuple[int, bool, int]:
        geometry = volume_geometry(config, in_shape)
        flat_enough = min(in_shape[1:]) >= min(in_shape[0] * ratio, y_sizes[-1], x_sizes[-1])
        voxels = math.prod(in_shape)
        return count_volume_tiles(volume, geometry) * voxels, not flat_enough, -voxels

    candidates = [(z, min(side, y_sizes[-1]), min(side, x_sizes[-1])) for z in z_sizes for side in plane_sizes]
    return min((c for c in candidates if fits(c)), key=preference)
