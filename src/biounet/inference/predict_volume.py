"""Prediction with a 3D U-Net (Cicek et al. 2016): volumes in memory and volume files, tile by tile.

The overlap-tile strategy in 3D is :mod:`biounet.inference.volumes`; this module gives it a predictor, a tile shape
within the memory budget and the file outputs that ``biounet predict`` writes for images: ``<stem>.tif`` (class
labels, (Z, Y, X)) and ``<stem>_prob.tif`` (outputs, (Z, K, Y, X): ImageJ's hyperstack order, z before channels).

References
----------
.. [1] Cicek, Abdulkadir, Lienkamp, Brox, Ronneberger (2016). 3D U-Net: Learning Dense Volumetric Segmentation
   from Sparse Annotation. MICCAI. arXiv:1606.06650
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from biounet.core.model import output_shape
from biounet.data.files import atomic_path
from biounet.data.images import ImageSource, label_dtype
from biounet.data.omezarr import write_ome_tiff_volume
from biounet.inference.predictor import Predictor
from biounet.inference.volumes import (
    VolumeGeometry,
    array_reader,
    choose_volume_tile,
    count_volume_tiles,
    predict_volume,
    volume_geometry,
)

VolumeReadFn = Callable[[slice, slice, slice], npt.NDArray[Any]]


@dataclass(frozen=True)
class VolumeSegmentation:
    """What :func:`segment_volume` gives for one volume."""

    probabilities: npt.NDArray[np.float32]  # (K', Z, Y, X): class probabilities, then a distance model's map
    labels: npt.NDArray[np.integer]  # (Z, Y, X): arg-max over the class channels only
    in_shape: tuple[int, int, int]


def check_dims(predictor: Predictor, dims: int, name: str | Path = "the input") -> None:
    """Refuse a volume for a 2D model and an image for a 3D one, naming both."""
    if predictor.dims != dims:
        what = {2: "a 2D image (or a stack of planes)", 3: "a volume (Z, Y, X)"}
        raise ValueError(f"{name} is {what[dims]}, but the model is a {predictor.dims}D U-Net trained on "
                         f"{'volumes' if predictor.dims == 3 else 'images'}; "
                         + ("predict volumes with a 3D model (biounet train on volumes)" if dims == 3 else
                            "a 3D model predicts volumes: give an HDF5 file or a TIFF with a z axis"))


def volume_tile(predictor: Predictor, shape: tuple[int, int, int], memory_budget: int, *, batch_size: int = 1,
                tile: int | None = None) -> tuple[int, int, int]:
    """The input tile shape for a volume of ``shape``: the largest valid one within ``memory_budget`` bytes
    (:func:`~biounet.inference.volumes.choose_volume_tile`); ``tile`` fixes its in-plane side."""
    config = predictor.model_config
    chosen = choose_volume_tile(config, shape, memory_budget, batch_size=batch_size)
    if tile is None:
        return chosen
    in_shape = (chosen[0], tile, tile)
    output_shape(in_shape, config)  # names the nearest valid sizes
    return in_shape


def predict_volume_outputs(
    predictor: Predictor, read: VolumeReadFn, shape: tuple[int, int, int], geometry: VolumeGeometry, *,
    probabilities: Any | None, labels: Any | None, batch_size: int = 1, progress: Callable[[int], None] | None = None,
    path: Path | str = "<volume>",
) -> None:
    """Every output of a volume, tile by tile (the 3D counterpart of :func:`biounet.inference.predict.predict_plane`).

    Raises
    ------
    FloatingPointError
        If the network's output is NaN or infinite (``path`` names the volume).
    """

    def finite(batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        probs = predictor(batch)
        if not np.all(np.isfinite(probs)):
            raise FloatingPointError(f"{path}: the network's output is NaN or infinite; nothing was written")
        return probs

    predict_volume(read, shape, finite, geometry, probabilities=probabilities, labels=labels, batch_size=batch_size,
                   progress=progress, label_channels=predictor.num_classes)


def segment_volume(
    predictor: Predictor, volume: npt.NDArray[np.float32], *, memory_budget: int, batch_size: int = 1,
    tile: int | None = None, progress: Callable[[int], None] | None = None,
) -> VolumeSegmentation:
    """Outputs and class labels of one normalised in-memory volume ``(Z, Y, X)`` or ``(Z, Y, X, C)``.

    Raises
    ------
    ValueError
        If the model is not a 3D U-Net, the volume has another channel count than the model takes, or holds NaN or Inf.
    """
    check_dims(predictor, 3, "the volume")
    volume = volume[..., None] if volume.ndim == 3 else volume
    if volume.ndim != 4 or volume.shape[-1] != predictor.in_channels:
        raise ValueError(f"volume must be (Z, Y, X) or (Z, Y, X, C) with C = {predictor.in_channels}, got shape "
                         f"{volume.shape}")
    if not np.all(np.isfinite(volume)):
        raise ValueError("volume contains NaN or Inf voxels")
    shape = (int(volume.shape[0]), int(volume.shape[1]), int(volume.shape[2]))
    in_shape = volume_tile(predictor, shape, memory_budget, batch_size=batch_size, tile=tile)
    probabilities = np.zeros((predictor.output_channels, *shape), dtype=np.float32)
    labels = np.zeros(shape, dtype=label_dtype(predictor.num_classes))
    predict_volume_outputs(predictor, array_reader(volume), shape, volume_geometry(predictor.model_config, in_shape),
                           probabilities=probabilities, labels=labels, batch_size=batch_size, progress=progress)
    return VolumeSegmentation(probabilities, labels, in_shape)


def source_reader(source: ImageSource, normalization: Any) -> VolumeReadFn:
    """``read(zs, ys, xs) -> (z, y, x, C)`` normalised voxels of a volume file, read plane by plane (lazily)."""

    def read(zs: slice, ys: slice, xs: slice) -> npt.NDArray[np.float32]:
        try:
            return normalization.apply(source.read_region(zs, ys, xs))
        except ValueError as err:
            raise ValueError(f"{source.path}: {err}") from err

    return read


def write_volume_tiff(path: Path, array: npt.NDArray[Any], voxel_size_um: tuple[float, float, float] | None) -> Path:
    """An OME-TIFF of a ``(Z, Y, X)`` or ``(Z, C, Y, X)`` array recording the voxel size (PhysicalSizeZ/Y/X, µm),
    written atomically (:func:`biounet.data.omezarr.write_ome_tiff_volume`, fed the array's planes); Fiji
    (Bio-Formats) and :func:`biounet.data.images.open_image` read it back as a volume."""
    planes = array.reshape(-1, *array.shape[-2:])  # (z, then channels) planes in order
    with atomic_path(path) as tmp:
        write_ome_tiff_volume(tmp, planes, shape=array.shape, dtype=array.dtype, voxel_size_um=voxel_size_um)
    return path


def write_volume_outputs(out_dir: Path, stem: str, labels: Any, probabilities: Any | None,
                         voxel_size_um: tuple[float, float, float] | None) -> tuple[Path, Path | None]:
    """``<stem>.tif`` (Z, Y, X) and, where given, ``<stem>_prob.tif`` (Z, K, Y, X), each with the voxel size."""
    labels_path = write_volume_tiff(out_dir / f"{stem}.tif", np.asarray(labels), voxel_size_um)
    if probabilities is None:
        return labels_path, None
    prob = np.moveaxis(np.asarray(probabilities, dtype=np.float32), 0, 1)
    return labels_path, write_volume_tiff(out_dir / f"{stem}_prob.tif", prob, voxel_size_um)


def count_tiles_for(predictor: Predictor, shape: tuple[int, int, int], in_shape: tuple[int, int, int]) -> int:
    """Tiles a volume of ``shape`` takes with input tiles of ``in_shape``."""
    return count_volume_tiles(shape, volume_geometry(predictor.model_config, in_shape))
