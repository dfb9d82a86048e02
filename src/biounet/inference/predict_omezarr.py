"""Prediction into OME-Zarr: the labels of an image written chunk by chunk as an NGFF label image.

A thin layer over :mod:`biounet.inference.predict`: the same tiling, normalisation and network
(:func:`~biounet.inference.predict.predict_plane`, labels from the class channels only), with the labels written
through :class:`biounet.data.omezarr.LabelImageWriter` instead of a TIFF. An OME-Zarr input gets its labels in its own
``labels/<name>`` group (``image-label`` metadata pointing back at the image, its axes and pixel size); with ``out``
any input (OME-Zarr, TIFF, PNG, ...) gets a new OME-Zarr holding the label image, with the input's pixel size.

A 3D U-Net (Cicek et al. 2016) predicts an OME-Zarr with a ``z`` axis (or a volume file: HDF5, a TIFF with a z
axis) as one volume, tile by tile in 3D (:func:`biounet.inference.predict_volume.predict_volume_outputs`, the volume
normalised as a whole as for ``predict_volume_file``); its labels (and 3D instances) are a ``(z, y, x)`` label image
with the voxel size as the z, y, x scale. A 2D U-Net predicts the planes of such an image one by one, as before.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from biounet.data.images import ImageSource, label_dtype, open_image
from biounet.data.normalization import normalization_for
from biounet.data.omezarr import (
    LabelImageWriter,
    LabelLayout,
    LabelPlane,
    LabelVolume,
    NgffError,
    is_omezarr,
    open_ngff,
)
from biounet.data.volumes import volume_normalization
from biounet.inference.instances import MEMBRANES, InstanceParams, instances_from_labels
from biounet.inference.predict import (
    PredictOptions,
    PredictResult,
    check_compatible,
    check_native_scale,
    predict_plane,
    tile_counter,
    tile_for,
    volume_tile_for,
)
from biounet.inference.predict_volume import check_dims, count_tiles_for, predict_volume_outputs, source_reader
from biounet.inference.predictor import Predictor
from biounet.inference.tiling import count_tiles
from biounet.inference.volumes import volume_geometry

DEFAULT_LABEL_NAME = "biounet"


_NO_SEGMENTS = ("OME-Zarr prediction does not yet write the segments of a membrane model; predict it to an output "
                "folder (--out DIR) for <stem>_instances.tif")


def predict_to_omezarr(
    predictor: Predictor,
    path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    options: PredictOptions = PredictOptions(),
    *,
    name: str = DEFAULT_LABEL_NAME,
    instances: tuple[str | None, InstanceParams] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PredictResult:
    """Segment every plane of the image at ``path`` and write the class labels as an OME-Zarr label image.

    Parameters
    ----------
    predictor : Predictor
        The network and its tiling contract.
    path : path
        Any image :func:`biounet.data.images.open_image` reads; an OME-Zarr is read lazily at its highest resolution.
    out : path, optional
        A new OME-Zarr (replaced if it exists) holding the label image. Without it, ``path`` must be an OME-Zarr
        image and the labels go into its ``labels/<name>`` group.
    options : PredictOptions
        Tiling and memory settings; ``save_probabilities`` is not supported here.
    name : str
        Name of the label image in the ``labels/`` group (and of the multiscale).
    instances : (target, InstanceParams), optional
        Also write ``<name>_instances`` (touching cells separated, see
        :func:`biounet.inference.instances.instances_from_labels`); with ``out``, the instance ids replace the class labels.
        Made from the class labels, as no probabilities are kept here: a ``boundary`` model's seeds are its arg-max
        interior, not ``interior > seed_threshold`` as for image files.
    progress : callable, optional
        ``progress(done, total)`` with tile counts.

    Raises
    ------
    ValueError
        If ``out`` is None and ``path`` is not an OME-Zarr image, or probabilities are asked for.
    """
    if instances is not None and instances[0] == MEMBRANES:
        raise ValueError(_NO_SEGMENTS)
    if options.save_probabilities:
        raise ValueError("--save-probabilities writes TIFF files; it is not available with OME-Zarr output")
    if predictor.dims == 3:
        return _predict_volume(predictor, Path(path), out, options, name=name, instances=instances, progress=progress)
    source = open_image(path)
    check_compatible(predictor, source)
    check_native_scale(predictor, source, options, "OME-Zarr prediction")
    if out is None and not is_omezarr(path):
        raise ValueError(f"{path}: not an OME-Zarr image; give an output OME-Zarr (--out result.zarr)")
    planes, height, width = source.planes, source.height, source.width
    layout = (LabelLayout.like(open_ngff(path)) if is_omezarr(path)
              else LabelLayout.for_planes(planes, height, width, source.pixel_size))
    in_tile = tile_for(predictor, (height, width), options)
    geometry = predictor.geometry(in_tile)
    total = planes * count_tiles((height, width), geometry)
    labels_dtype = label_dtype(predictor.num_classes)
    if instances is not None and out is not None:
        labels_dtype = np.dtype(np.uint32)  # the instance ids replace the class labels
    target = {"image": path} if out is None else {"out": out}
    step = tile_counter(total, progress)
    with LabelImageWriter(layout, labels_dtype, name=name, **target) as writer:  # type: ignore[arg-type]
        for plane in range(planes):
            norm = normalization_for(source, plane, predictor.normalization)

            def read(rows: slice, cols: slice, plane: int = plane, norm: Any = norm) -> npt.NDArray[np.float32]:
                return norm.apply(source.read(plane, rows, cols))

            predict_plane(predictor, read, (height, width), geometry, labels=writer.plane(plane),
                          batch_size=options.batch_size, progress=step, path=source.path)
        if instances is not None and out is not None:
            _relabel_as_instances(writer, planes, (height, width), instances)
    if instances is not None and out is None:
        _write_instances(Path(path), layout, planes, (height, width), name, instances)
    labels_path = Path(out) if out is not None else Path(path) / "labels" / name
    return PredictResult(labels_path, None, (planes, height, width), in_tile, total)


def open_volume(path: str | os.PathLike[str]) -> tuple[ImageSource, LabelLayout]:
    """A volume to predict with a 3D U-Net and the layout of its labels: an OME-Zarr with a ``z`` axis as one
    ``(Z, Y, X, C)`` volume with its voxel size (labels in its own axes and scale), or any volume file
    :func:`~biounet.data.images.open_image` reads (labels ``(z, y, x)`` with its voxel size).

    Raises
    ------
    ValueError
        If the image is not a volume (no z axis, or a time series), naming the image.
    """
    path = Path(path)
    if is_omezarr(path):
        image = open_ngff(path)
        try:
            stack = image.volume()
        except NgffError as err:
            raise ValueError(f"{err}; a 3D U-Net predicts volumes (z, y, x)") from None
        depth, channels, height, width = stack.shape
        source = ImageSource(path, stack, (depth, height, width, channels), stack.dtype, "ZCYX", image.pixel_size,
                             dims=3, voxel_size_um=image.voxel_size_um)
        return source, LabelLayout.like(image)
    source = open_image(path)
    return source, LabelLayout.for_volume((source.planes, source.height, source.width), source.voxel_size_um)


def _predict_volume(
    predictor: Predictor, path: Path, out: str | os.PathLike[str] | None, options: PredictOptions, *, name: str,
    instances: tuple[str | None, InstanceParams] | None, progress: Callable[[int, int], None] | None,
) -> PredictResult:
    """:func:`predict_to_omezarr` for a 3D U-Net: the volume tiled in 3D, its labels written tile by tile."""
    source, layout = open_volume(path)
    check_compatible(predictor, source)
    check_dims(predictor, source.dims, path)
    if out is None and not is_omezarr(path):
        raise ValueError(f"{path}: not an OME-Zarr image; give an output OME-Zarr (--out result.zarr)")
    shape = (source.planes, source.height, source.width)
    in_shape = volume_tile_for(predictor, shape, options)
    total = count_tiles_for(predictor, shape, in_shape)
    labels_dtype = np.dtype(np.uint32) if instances is not None and out is not None else label_dtype(
        predictor.num_classes)
    read = source_reader(source, volume_normalization(source, predictor.normalization))
    target = {"image": path} if out is None else {"out": out}
    with LabelImageWriter(layout, labels_dtype, name=name, **target) as writer:  # type: ignore[arg-type]
        predict_volume_outputs(predictor, read, shape, volume_geometry(predictor.model_config, in_shape),
                               probabilities=None, labels=writer.volume(), batch_size=options.batch_size,
                               progress=tile_counter(total, progress), path=path)
        if instances is not None and out is not None:  # the instance ids replace the class labels
            whole = writer.volume()
            whole[:, :, :] = _instances_of(whole[:, :, :], instances).astype(np.uint32)
    if instances is not None and out is None:
        import zarr

        labels = LabelVolume(zarr.open_array(str(path / "labels" / name / "0"), mode="r"), layout.axes)[:, :, :]
        with LabelImageWriter(layout, np.uint32, image=path, name=f"{name}_instances") as writer:
            writer.volume()[:, :, :] = _instances_of(labels, instances).astype(np.uint32)
    labels_path = Path(out) if out is not None else path / "labels" / name
    return PredictResult(labels_path, None, shape, in_shape[-1], total, in_shape=in_shape)


def _instances_of(plane_labels: npt.NDArray[Any], instances: tuple[str | None, InstanceParams]) -> npt.NDArray[Any]:
    target, params = instances
    if target == MEMBRANES:  # checked before prediction by predict_to_omezarr; kept for direct callers
        raise ValueError(_NO_SEGMENTS)
    return instances_from_labels(plane_labels, target=target, params=params)


def _relabel_as_instances(writer: LabelImageWriter, planes: int, shape: tuple[int, int],
                          instances: tuple[str | None, InstanceParams]) -> None:
    """Replace the class labels just written by instance ids, plane by plane (each plane is read whole)."""
    whole = (slice(0, shape[0]), slice(0, shape[1]))
    for plane in range(planes):
        view = writer.plane(plane)
        view[whole] = _instances_of(view[whole], instances).astype(writer.dtype)


def _write_instances(image: Path, layout: LabelLayout, planes: int, shape: tuple[int, int], name: str,
                     instances: tuple[str | None, InstanceParams]) -> None:
    """``labels/<name>_instances`` beside the class labels of an OME-Zarr image, plane by plane."""
    import zarr

    classes = zarr.open_array(str(image / "labels" / name / "0"), mode="r")
    whole = (slice(0, shape[0]), slice(0, shape[1]))
    with LabelImageWriter(layout, np.uint32, image=image, name=f"{name}_instances") as writer:
        for plane in range(planes):
            plane_labels = LabelPlane(classes, layout.axes, plane)[whole]
            writer.plane(plane)[whole] = _instances_of(plane_labels, instances).astype(np.uint32)


__all__ = ["DEFAULT_LABEL_NAME", "open_volume", "predict_to_omezarr"]
