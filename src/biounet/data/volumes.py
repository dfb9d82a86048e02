"""Volumes as training and prediction inputs: one :class:`~biounet.core.samples.Sample` per 3-D stack, as the 3D
U-Net trains on a few annotated volumes [1]_.

Two layouts (the ``"volumes"`` layout of :func:`biounet.data.datasets.load_dataset`):

- HDF5 files, the PlantSeg / ilastik convention [2]_: a folder of ``.h5``/``.hdf5`` files (or one file), each with
  a dataset ``raw`` (``(z, y, x)``, or 4-D with channels, see :func:`biounet.data.images.volume_layout`) and,
  for training, ``label`` of the same ``(z, y, x)`` shape; the voxel size ``(z, y, x)`` in micrometres is the
  attribute ``element_size_um`` of ``raw``.
- ``pairs``: ``PATH/images/`` and ``PATH/labels/`` whose TIFFs are 3-D stacks declaring a z axis (ImageJ
  ``slices`` > 1, OME ``SizeZ`` > 1); the voxel size from ImageJ ``spacing`` and resolution or OME
  ``PhysicalSize{Z,Y,X}``. Given ``layout="volumes"`` explicitly, a pairs folder of multi-page TIFFs without a declared
  z axis is read the same way, its pages as z.

Each volume is normalised as a whole (:func:`volume_normalization`: statistics over all its planes, where 2-D
images are normalised per plane), so that its planes keep their relative brightness.

References
----------
.. [1] Çiçek, Abdulkadir, Lienkamp, Brox & Ronneberger (2016). 3D U-Net: learning dense volumetric segmentation
   from sparse annotation. MICCAI, arXiv:1606.06650.
.. [2] Wolny et al. (2020). Accurate and versatile 3D segmentation of plant tissues at cellular resolution. eLife
   9, e57613 (PlantSeg; its HDF5 files hold ``raw`` and ``label`` with ``element_size_um``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from biounet.core.samples import IGNORE, Sample, classes_and_instances, guess_label_kind
from biounet.data.files import files_by_stem
from biounet.data.images import (
    HDF5_SUFFIXES,
    ImageError,
    ImageSource,
    hdf5_dataset,
    hdf5_datasets,
    hdf5_voxel_size_um,
    image_files,
    open_hdf5,
    open_image,
    pairs_folders,
    read_labels,
    tiff_z_planes,
    volume_layout,
    volume_shape,
)
from biounet.data.normalization import NORMALIZATIONS, STATS_MAX_PIXELS, Normalization, normalization_for

logger = logging.getLogger(__name__)

VOLUME_LABEL_KINDS: tuple[str, ...] = ("auto", "classes", "instances")
VOLUME_STATS_PLANES = 64
"""Planes of a large volume whose pixels give its normalisation statistics (evenly spaced); a volume within
:data:`~biounet.data.normalization.STATS_MAX_PIXELS` voxels uses all of them."""

VoxelSizeUm = tuple[float, float, float]


class HDF5Volume(NamedTuple):
    """What :func:`read_hdf5` reads from one file."""

    raw: npt.NDArray[Any]  # (Z, Y, X, C) in the file's dtype
    label: npt.NDArray[np.int64] | None  # (Z, Y, X), None when the file has no label dataset
    voxel_size_um: VoxelSizeUm | None  # (z, y, x) from raw's element_size_um, None when absent


def read_hdf5(path: str | os.PathLike[str], raw_key: str = "raw", label_key: str = "label") -> HDF5Volume:
    """Read a volume and its labels from an HDF5 file (PlantSeg / ilastik convention).

    Parameters
    ----------
    path : str or path-like
        An HDF5 file.
    raw_key, label_key : str, optional
        Dataset paths of the intensities and of the labels (a missing label dataset gives ``label=None``).

    Returns
    -------
    HDF5Volume
        ``raw`` as ``(Z, Y, X, C)`` (a 4-D raw's channel axis by :func:`biounet.data.images.volume_layout`),
        ``label`` as ``(Z, Y, X)`` int64, ``voxel_size_um`` ``(z, y, x)`` from raw's ``element_size_um``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        (:class:`~biounet.data.images.ImageError`) If the file is not readable HDF5, has no ``raw_key`` dataset
        (the message names the datasets found), raw is not 3-D (or 4-D with channels), the label's shape differs
        from raw's ``(z, y, x)``, the label holds non-integer values, or ``element_size_um`` is malformed.
    MissingExtra
        If h5py is not installed (``pip install 'biounet[hdf5]'``).
    """
    with open_hdf5(path) as file:
        raw_set = hdf5_dataset(file, raw_key)
        shape = tuple(int(s) for s in raw_set.shape)
        try:
            layout = volume_layout(shape)
        except ImageError as err:
            raise ImageError(f"{path}: dataset {raw_key!r}: {err}") from None
        voxel = hdf5_voxel_size_um(raw_set)
        zyx = volume_shape(shape, layout)[:3]
        label_set = file.get(label_key)
        if label_set is not None and tuple(label_set.shape) != zyx:
            raise ImageError(f"{path}: dataset {label_key!r} of shape {tuple(label_set.shape)} does not match "
                             f"{raw_key!r} of shape {shape} (volume (z, y, x) = {zyx})")
        try:
            raw = _channels_last(np.asarray(raw_set[()]), layout)
            label = None if label_set is None else np.asarray(label_set[()])
        except OSError as err:  # a damaged file fails when its chunks are read
            raise ImageError(f"{path}: damaged HDF5 file, cannot read its data ({err})") from err
    return HDF5Volume(raw, None if label is None else _integer_labels(label, f"{path}:{label_key}"), voxel)


def _channels_last(raw: npt.NDArray[Any], layout: str) -> npt.NDArray[Any]:
    if layout == "ZYX":
        return raw[..., None]
    return np.moveaxis(raw, 0, -1) if layout == "CZYX" else raw


def _integer_labels(label: npt.NDArray[Any], source: str) -> npt.NDArray[np.int64]:
    """Labels as int64; floats only when every value is a whole number (as :func:`read_labels`)."""
    if label.dtype.kind == "f":
        if not np.all(np.isfinite(label)) or np.any(label != np.round(label)):
            raise ImageError(f"{source}: float labels with non-integer values; labels must be whole numbers")
    elif label.dtype.kind not in "biu":
        raise ImageError(f"{source}: labels must be integers, got dtype {label.dtype}")
    return label.astype(np.int64)


# --- normalisation --------------------------------------------------------------------------------------------


def volume_normalization(source: ImageSource, mode: str = "percentile") -> Normalization:
    """The per-channel normalisation of a whole volume (:mod:`biounet.data.normalization`'s ``mode``), its
    statistics taken over all planes: every voxel when the volume holds at most ``STATS_MAX_PIXELS`` of them, else
    :data:`VOLUME_STATS_PLANES` evenly spaced planes, each subsampled on a regular grid.

    >>> raw = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4, 1)
    >>> source = ImageSource(Path("<array>"), raw, raw.shape, raw.dtype, "ZYXC", dims=3)
    >>> volume_normalization(source, "minmax")
    Normalization(offset=(0.0,), scale=(23.0,))
    """
    if mode not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {mode!r}")
    plane_pixels = source.height * source.width
    count = min(source.planes, max(VOLUME_STATS_PLANES, STATS_MAX_PIXELS // plane_pixels))
    planes = np.unique(np.linspace(0, source.planes - 1, count).round().astype(int))
    step = max(1, math.ceil(math.sqrt(plane_pixels * len(planes) / STATS_MAX_PIXELS)))
    pooled = np.concatenate([np.asarray(source.read(int(z)))[::step, ::step] for z in planes])  # (k*h, w, C)
    stacked = ImageSource(source.path, pooled, (1, *pooled.shape), source.dtype, "YXC")  # type: ignore[arg-type]
    return normalization_for(stacked, 0, mode)


def normalize_volume(volume: npt.NDArray[Any], mode: str = "percentile") -> npt.NDArray[np.float32]:
    """An in-memory ``(Z, Y, X, C)`` volume normalised as a whole, per channel, exactly as a volume file is
    (:func:`volume_normalization`): napari layers, bioimage.io test tensors, a volume's validation part."""
    source = ImageSource(Path("<volume>"), volume, volume.shape, volume.dtype, "ZYXC", dims=3)
    return volume_normalization(source, mode).apply(volume)


def _normalized_volume(source: ImageSource, mode: str) -> npt.NDArray[np.float32]:
    scaling = volume_normalization(source, mode)
    try:
        return scaling.apply(source.read_region())
    except ValueError as err:  # NaN or Inf voxels; the message does not name the file
        raise ImageError(f"{source.path}: {err}") from err


# --- layouts --------------------------------------------------------------------------------------------------


def hdf5_files(path: str | os.PathLike[str]) -> list[Path]:
    """The HDF5 files a ``volumes`` path names: the file itself, or the folder's ``.h5``/``.hdf5`` files in natural
    order (none for other paths)."""
    path = Path(path)
    if path.is_file():
        return [path] if path.suffix.lower() in HDF5_SUFFIXES else []
    return [file for file in image_files(path, HDF5_SUFFIXES) if file.is_file()] if path.is_dir() else []


def is_volume_stack_folder(folder: Path) -> bool:
    """Whether a ``pairs`` image folder holds 3-D stacks: every TIFF in it declares a z axis of 2 or more planes
    (:func:`biounet.data.images.tiff_z_planes`, read from headers only). False when none does.

    Raises
    ------
    ValueError
        If some images declare a z axis and others do not: the folder mixes volumes and 2-D images.
    """
    files = image_files(folder)
    stacks = [path for path in files if tiff_z_planes(path) >= 2]
    if not stacks:
        return False
    flat = [path for path in files if path not in stacks]
    if flat:
        raise ValueError(f"{folder}: {len(stacks)} image(s) are 3-D stacks with a z axis ({_names(stacks)}) but "
                         f"{len(flat)} are not ({_names(flat)}); keep volumes and 2-D images in separate datasets, or "
                         "pass layout='pairs' to read every plane as a 2-D image")
    return True


class _RawVolume(NamedTuple):
    name: str
    source: ImageSource  # the intensities, (Z, Y, X, C)
    labels: npt.NDArray[np.int64] | None  # (Z, Y, X)
    labels_path: str  # names the labels in errors


def _hdf5_volumes(files: Sequence[Path], split: str, allow_unlabeled: bool) -> list[_RawVolume]:
    volumes = []
    for path in files:
        volume = read_hdf5(path)
        if volume.label is None and split == "train" and not allow_unlabeled:
            with open_hdf5(path) as file:
                found = sorted(hdf5_datasets(file))
            raise ValueError(f"{path}: no dataset 'label' to train on (datasets found: {found}); add one, or pass "
                             "allow_unlabeled=True")
        raw = volume.raw
        source = ImageSource(path, raw, raw.shape, raw.dtype, "ZYXC", None, 3, volume.voxel_size_um)
        volumes.append(_RawVolume(path.stem, source, volume.label if split == "train" else None, f"{path}:label"))
    return volumes


def _pairs_volumes(root: Path, split: str, allow_unlabeled: bool) -> list[_RawVolume]:
    images_dir, labels_dir = pairs_folders(root)
    if images_dir is None:
        raise ValueError(f"{root}: neither .h5/.hdf5 files nor an images/ folder of 3-D stacks; nothing to load")
    images = files_by_stem(image_files(images_dir))
    labels = files_by_stem(image_files(labels_dir)) if labels_dir is not None and split == "train" else {}
    if split == "train":
        missing = [path for stem, path in images.items() if stem not in labels]
        if missing and not allow_unlabeled:
            raise ValueError(f"{len(missing)} volume(s) in {images_dir} have no label file with the same stem in "
                             f"{labels_dir}: {_names(missing)} (or pass allow_unlabeled=True)")
        orphans = [path for stem, path in labels.items() if stem not in images]
        if orphans:
            raise ValueError(f"{len(orphans)} label file(s) in {labels_dir} have no image with the same stem in "
                             f"{images_dir}: {_names(orphans)}")
    volumes = []
    for stem, path in images.items():
        source = open_image(path)
        if source.planes < 2:
            raise ImageError(f"{path}: a 2-D image (1 plane); the 'volumes' layout needs 3-D stacks")
        stack = read_labels(labels[stem]) if stem in labels else None
        if stack is not None and stack.shape != source.shape[:3]:
            raise ValueError(f"{labels[stem]}: labels of shape {stack.shape} (z, y, x) do not match the volume "
                             f"{path} of shape {source.shape[:3]}")
        volumes.append(_RawVolume(stem, source, stack, str(labels.get(stem, ""))))
    return volumes


def _names(paths: Sequence[Path], limit: int = 5) -> str:
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(path.name for path in paths[:limit]) + more


# --- loading --------------------------------------------------------------------------------------------------


def load_volumes(
    path: str | os.PathLike[str],
    *,
    normalization: str,
    voxel_size_um: Sequence[float] | None = None,
    label_kind: str = "auto",
    split: str = "train",
    allow_unlabeled: bool = False,
    ignore_label: int | None = None,
) -> list[Sample]:
    """Load every volume of a ``volumes`` dataset (module docstring) as one 3-D sample each, in natural file order.

    Parameters
    ----------
    path : str or path-like
        A folder of ``.h5``/``.hdf5`` files, one such file, or a ``pairs`` folder of 3-D TIFF stacks.
    normalization : str
        :mod:`biounet.data.normalization` mode, computed per volume (:func:`volume_normalization`).
    voxel_size_um : (float, float, float), optional
        ``(z, y, x)`` micrometres for every volume, overriding the files' metadata (``--voxel-size Z Y X``).
    label_kind : {"auto", "classes", "instances"}, optional
        As :func:`biounet.data.datasets.load_dataset`'s: ``"auto"`` decides from all label volumes together with
        :func:`biounet.core.samples.guess_label_kind` (PlantSeg labels are instance ids, 0 = background).
    split : {"train", "test"}, optional
        ``"test"``: labels are not read.
    allow_unlabeled : bool, optional
        Keep volumes without labels as unlabeled samples instead of raising.
    ignore_label : int, optional
        Label value of unannotated voxels (sparse annotation, Cicek et al. 2016: a few slices painted): their
        class is :data:`~biounet.core.samples.IGNORE`, so they weigh nothing in the loss.

    Returns
    -------
    samples : list of Sample
        ``image`` ``(Z, Y, X, C)`` float32, ``classes``/``instances`` ``(Z, Y, X)``, ``pixel_size_um`` ``(z, y, x)``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        On bad options, an empty dataset, a file that is not a volume (see :func:`read_hdf5`), volumes without
        labels, label and volume shapes that differ, or ambiguous labels under ``label_kind="auto"``.
    """
    root = Path(path)
    override = _check_volume_options(root, normalization, voxel_size_um, label_kind, split)
    files = hdf5_files(root)
    volumes = _hdf5_volumes(files, split, allow_unlabeled) if files else _pairs_volumes(root, split, allow_unlabeled)
    if not volumes:
        raise ValueError(f"{root}: no volumes found")
    unannotated = [None if v.labels is None or ignore_label is None else v.labels == ignore_label for v in volumes]
    volumes = [v if mask is None else v._replace(labels=np.where(mask, 0, v.labels)) for v, mask in
               zip(volumes, unannotated)]
    labels = [volume.labels for volume in volumes if volume.labels is not None]
    if label_kind == "auto" and labels:
        try:
            guess = guess_label_kind(labels)
        except ValueError as err:
            raise ValueError(f"{root}: {err}") from err
        logger.info("label_kind='auto': %s labels read as %r (%s)", root, guess.kind, guess.reason)
        label_kind = guess.kind
    samples = [_volume_sample(volume, normalization, label_kind, override, mask)
               for volume, mask in zip(volumes, unannotated)]
    logger.info("loaded %d volumes from %s", len(samples), root)
    return samples


def _check_volume_options(
    root: Path, normalization: str, voxel_size_um: Sequence[float] | None, label_kind: str, split: str
) -> VoxelSizeUm | None:
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such dataset folder or file")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if label_kind not in VOLUME_LABEL_KINDS:
        raise ValueError(f"label_kind must be one of {VOLUME_LABEL_KINDS}, got {label_kind!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return None if voxel_size_um is None else check_voxel_size(voxel_size_um)


def check_voxel_size(voxel_size_um: Sequence[float]) -> VoxelSizeUm:
    """``(z, y, x)`` micrometres as three floats; ValueError unless three positive finite numbers.

    >>> check_voxel_size([2, 0.5, 0.5])
    (2.0, 0.5, 0.5)
    """
    try:
        values = tuple(float(v) for v in voxel_size_um)
    except (TypeError, ValueError):
        raise ValueError(f"voxel size must be three micrometres (z, y, x), got {voxel_size_um!r}") from None
    if len(values) != 3 or not all(v > 0 and math.isfinite(v) for v in values):
        raise ValueError(f"voxel size must be three positive micrometres (z, y, x), got {voxel_size_um!r}")
    return values[0], values[1], values[2]


def _volume_sample(volume: _RawVolume, normalization: str, label_kind: str, override: VoxelSizeUm | None,
                   unannotated: npt.NDArray[np.bool_] | None = None) -> Sample:
    image = _normalized_volume(volume.source, normalization)
    size = override or volume.source.voxel_size_um
    if volume.labels is None:
        return Sample(volume.name, image, None, None, size)
    classes, instances = classes_and_instances(volume.labels, label_kind, source=volume.labels_path)
    if unannotated is not None:
        classes = np.where(unannotated, IGNORE, classes).astype(np.int64)
    return Sample(volume.name, image, classes, instances, size)


# --- splitting ------------------------------------------------------------------------------------------------


def split_volume(sample: Sample, validation_fraction: float) -> tuple[Sample, Sample]:
    """Cut one volume into a training part and a validation part along its longest axis, for a dataset of a
    single volume (where :func:`biounet.data.datasets.split_samples` has nothing to hold out).

    The longest axis is the one of greatest physical length (size times voxel size; in voxels when the voxel
    size is unknown; the first of equal ones). The validation part is the last ``round(validation_fraction * n)``
    slices of that axis (at least 1, at most ``n - 1``), the training part the rest; both are copies named
    ``NAME/train`` and ``NAME/validation``.

    >>> volume = Sample("v", np.zeros((10, 4, 4, 1), np.float32), None, None, (0.5, 1.0, 1.0))
    >>> [part.image.shape for part in split_volume(volume, 0.2)]   # z: 5 um, y and x: 4 um
    [(8, 4, 4, 1), (2, 4, 4, 1)]

    Raises
    ------
    ValueError
        If ``sample`` is not a volume, ``validation_fraction`` is outside (0, 1), or the axis has one slice.
    """
    if sample.dims != 3:
        raise ValueError(f"sample {sample.name!r} is {sample.dims}-D; split_volume cuts volumes (Z, Y, X, C)")
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    shape = sample.image.shape[:3]
    spacing = sample.pixel_size_um or (1.0, 1.0, 1.0)
    axis = int(np.argmax([size * step for size, step in zip(shape, spacing)]))
    length = shape[axis]
    if length < 2:
        raise ValueError(f"sample {sample.name!r} of shape {shape} has one slice along its longest axis; cannot split")
    held_out = min(max(round(validation_fraction * length), 1), length - 1)
    parts = []
    for name, cut in (("train", slice(0, length - held_out)), ("validation", slice(length - held_out, length))):
        index = (slice(None),) * axis + (cut,)
        labels = [None if a is None else np.ascontiguousarray(a[index]) for a in (sample.classes, sample.instances)]
        parts.append(Sample(f"{sample.name}/{name}", np.ascontiguousarray(sample.image[index]), labels[0],
                            labels[1], sample.pixel_size_um))
    return parts[0], parts[1]


__all__ = [
    "VOLUME_LABEL_KINDS",
    "VOLUME_STATS_PLANES",
    "HDF5Volume",
    "VoxelSizeUm",
    "check_voxel_size",
    "hdf5_files",
    "is_volume_stack_folder",
    "load_volumes",
    "read_hdf5",
    "split_volume",
    "volume_normalization",
]
