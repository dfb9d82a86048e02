"""Training and test samples from the dataset layouts the paper's experiments use, as normalised arrays.

Five layouts (:data:`ALL_LAYOUTS`), detected from the path by :func:`detect_layout` and overridable with ``layout=``:

- ``"pairs"``: ``PATH/images/`` and ``PATH/labels/`` (also ``image/``, ``img/`` and ``label/``, ``masks/``), an image
  and its label file paired by file stem (``a.png`` with ``a.tif``).
- ``"isbi2012"``: the ISBI 2012 EM challenge, per-slice ``PATH/train/image/{0..19}.png`` with
  ``PATH/train/label/{0..19}.png`` and ``PATH/test/image/*.png``, or the original multi-page ``train-volume.tif``,
  ``train-labels.tif`` and ``test-volume.tif`` in ``PATH``.
- ``"ctc"``: the Cell Tracking Challenge (DIC-HeLa, PhC-U373): ``PATH/01/tNNN.tif`` frames, gold truth
  ``PATH/01_GT/SEG/man_segNNN.tif`` and silver truth ``PATH/01_ST/SEG/man_segNNN.tif`` instance labels.
- ``"synthetic"``: ``"synthetic:KIND[,n=N][,size=H[xW]][,seed=S]"`` generates samples (:mod:`biounet.data.synthetic`).
- ``"volumes"``: 3-D samples, one per volume (:mod:`biounet.data.volumes`): HDF5 files with datasets ``raw`` and
  ``label`` (PlantSeg / ilastik), or a ``pairs`` folder whose TIFFs are 3-D stacks declaring a z axis.

Every 2-D sample's image is normalised per plane (a volume per volume) with :mod:`biounet.data.normalization`'s mode. Labels become class ids
(``IGNORE`` where unannotated) plus the instance ids that the weight map's border term needs.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from skimage import measure

from biounet.core.samples import (
    AUTO_MIN_CONNECTED_FRACTION,
    AUTO_MIN_FEW_CELLS_IDS,
    AUTO_MIN_INSTANCE_IDS,
    BINARY_MASK_VALUE,
    IGNORE,
    LabelKindGuess,
    Sample,
    as_instances,
    classes_and_instances,
    guess_label_kind,
)
from biounet.data.files import IMAGE_SUFFIXES, files_by_stem, output_stem
from biounet.data.images import (
    PAIRS_IMAGE_DIRS,
    PAIRS_LABEL_DIRS,
    ImageError,
    ImageSource,
    image_files,
    natural_key,
    open_image,
    pairs_folders,
    read_labels,
)
from biounet.data.normalization import NORMALIZATIONS, normalization_for
from biounet.data.scale import PixelSizeUm, physical_micrometres
from biounet.data.synthetic import KINDS, make_dataset
from biounet.data.volumes import hdf5_files, is_volume_stack_folder, load_volumes

logger = logging.getLogger(__name__)

LAYOUTS: tuple[str, ...] = ("pairs", "isbi2012", "ctc", "synthetic")
"""The layouts of 2-D samples."""
VOLUME_LAYOUTS: tuple[str, ...] = ("volumes",)
"""The layouts of volumes (3-D samples, :mod:`biounet.data.volumes`)."""
ALL_LAYOUTS: tuple[str, ...] = LAYOUTS + VOLUME_LAYOUTS
"""Every layout :func:`detect_layout` returns and :func:`load_dataset` reads (``--layout`` choices)."""
SPLITS: tuple[str, ...] = ("train", "test")
LABEL_KINDS: tuple[str, ...] = ("auto", "classes", "instances")
"""``pairs`` and ``volumes`` label encodings; ``"auto"`` picks one of the other two with :func:`guess_label_kind`."""
SYNTHETIC_PREFIX = "synthetic:"

ISBI_CELL_VALUE = 255
"""ISBI 2012 label files are {0, 255}: 255 is cell interior, 0 is membrane."""
ISBI_CELL_CLASS = 0
ISBI_MEMBRANE_CLASS = 1
"""Our classes for ISBI 2012: the membrane is class 1, the paper's foreground; cell interior is class 0."""
ISBI_VOLUMES = {"train": ("train-volume.tif", "train-labels.tif"), "test": ("test-volume.tif", None)}

_CTC_FRAME = re.compile(r"^t(\d+)\.tiff?$", re.IGNORECASE)
_CTC_MASK = re.compile(r"^man_seg(\d+)\.tiff?$", re.IGNORECASE)
_CTC_SEQUENCE = re.compile(r"^\d+$")

_EXPECTED_STRUCTURES = (
    "expected one of: 'pairs' (PATH/images/ + PATH/labels/, or image/ + label/, or img/ + masks/); "
    "'isbi2012' (PATH/train/image/ + PATH/train/label/ + PATH/test/image/, or PATH/train-volume.tif + "
    "PATH/train-labels.tif); 'ctc' (PATH/01/tNNN.tif + PATH/01_GT/SEG/man_segNNN.tif); 'volumes' (PATH/*.h5 "
    "with datasets raw + label, one .h5 file, or 'pairs' of 3-D TIFF stacks with a z axis); or 'synthetic:KIND'"
)


# --- layout detection -------------------------------------------------------------------------------------------


def _numeric_slices(folder: Path) -> bool:
    files = image_files(folder) if folder.is_dir() else []
    return bool(files) and all(output_stem(path).isdigit() for path in files)


def _isbi_location(root: Path) -> tuple[Path, str | None] | None:
    """``(dataset root, split named by the path or None)`` when ``root`` is an ISBI 2012 folder or split folder."""
    if any((root / name).is_file() for name in ("train-volume.tif", "test-volume.tif")):
        return root, None
    if _numeric_slices(root / "train" / "image") or _numeric_slices(root / "test" / "image"):
        return root, None
    if root.name in SPLITS and _numeric_slices(root / "image"):
        return root.parent, root.name
    return None


def _is_ctc_sequence(folder: Path) -> bool:
    return (
        folder.is_dir() and _CTC_SEQUENCE.match(folder.name) is not None
        and any(_CTC_FRAME.match(path.name) for path in folder.iterdir())
    )


def _ctc_location(root: Path) -> tuple[Path, tuple[str, ...] | None] | None:
    """``(dataset root, sequence named by the path or None)`` when ``root`` is a CTC dataset or sequence folder."""
    if any(_is_ctc_sequence(child) for child in root.iterdir()):
        return root, None
    if _is_ctc_sequence(root):
        return root.parent, (root.name,)
    return None


def detect_layout(path: str | os.PathLike[str]) -> str:
    """Which of :data:`ALL_LAYOUTS` a dataset path has.

    Parameters
    ----------
    path : str or path-like
        A dataset folder, or ``"synthetic:..."``. ISBI 2012 may also be given as its ``train``/``test`` folder,
        a CTC dataset as one sequence folder (``PATH/01``), and a ``volumes`` dataset as one ``.h5`` file.

    Returns
    -------
    layout : str
        One of :data:`ALL_LAYOUTS`: ``"volumes"`` for an HDF5 file, a folder of HDF5 files (and no other layout's
        folders), or a ``pairs`` folder whose TIFFs all declare a z axis (:func:`is_volume_stack_folder`);
        ``"pairs"`` for one of 2-D images or of stacks without a z axis.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``path`` is not a folder (nor an HDF5 file), is empty or matches no layout; if it is an ISBI 2012 split
        folder with labels (``train/`` with ``image/`` + ``label/``), which is also a ``pairs`` folder with another
        label encoding: pass ``layout=`` then (or give the ISBI 2012 root); or if its ``pairs`` images mix 3-D stacks
        and 2-D images.

    Examples
    --------
    >>> detect_layout("synthetic:cells")
    'synthetic'
    """
    if os.fspath(path).startswith(SYNTHETIC_PREFIX):
        return "synthetic"
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such dataset folder")
    if root.is_file() and hdf5_files(root):
        return "volumes"
    if not root.is_dir():
        raise ValueError(f"{root}: a dataset must be a folder; {_EXPECTED_STRUCTURES}")
    if not any(not child.name.startswith(".") for child in root.iterdir()):
        raise ValueError(f"{root}: dataset folder is empty; {_EXPECTED_STRUCTURES}")
    isbi = _isbi_location(root)
    images_dir, labels_dir = pairs_folders(root)
    if isbi is not None:
        if isbi[1] is not None and labels_dir is not None:
            raise ValueError(
                f"{root}: ambiguous layout, an ISBI 2012 split folder and a 'pairs' folder at once; pass "
                "layout='isbi2012' (labels 255 = cell, class 1 = membrane) or layout='pairs' (255 = class 1)"
            )
        return "isbi2012"
    if _ctc_location(root) is not None:
        return "ctc"
    if images_dir is not None:
        return "volumes" if is_volume_stack_folder(images_dir) else "pairs"
    if hdf5_files(root):
        return "volumes"
    raise ValueError(f"{root}: unrecognised dataset layout; {_EXPECTED_STRUCTURES}")


# --- loading ----------------------------------------------------------------------------------------------------

# Options that only some layouts use; giving one to another layout is an error rather than silently ignored.
_OPTION_LAYOUTS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "label_kind": ("classes", ("pairs",)),
    "num_classes": (None, ("pairs",)),
    "allow_unlabeled": (False, ("pairs", "isbi2012", "ctc")),
    "sequences": (None, ("ctc",)),
    "use_gt": (True, ("ctc",)),
    "use_silver": (False, ("ctc",)),
    "ignore_margin_px": (2.0, ("ctc",)),
    "voxel_size_um": (None, ()),
}
_VOLUME_OPTIONS = ("label_kind", "allow_unlabeled", "voxel_size_um")
"""The options of :data:`_OPTION_LAYOUTS` that the ``volumes`` layout reads too."""


def load_dataset(
    path: str | os.PathLike[str],
    *,
    layout: str | None = None,
    normalization: str = "percentile",
    split: str | None = None,
    label_kind: str | None = None,
    num_classes: int | None = None,
    allow_unlabeled: bool = False,
    sequences: Sequence[str] | None = None,
    use_gt: bool = True,
    use_silver: bool = False,
    ignore_margin_px: float = 2.0,
    ignore_label: int | None = None,
    voxel_size_um: Sequence[float] | None = None,
) -> list[Sample]:
    """Load every 2-D sample (or every volume) of a dataset, images normalised, in natural file order.

    Parameters
    ----------
    path : str or path-like
        Dataset folder (see the module docstring) or ``"synthetic:KIND[,n=N][,size=H[xW]][,seed=S]"``.
    layout : str, optional
        One of :data:`ALL_LAYOUTS`; detected with :func:`detect_layout` when None. ``"volumes"`` is read by
        :func:`biounet.data.volumes.load_volumes`: one 3-D sample per volume.
    normalization : str, optional
        Intensity normalisation of :mod:`biounet.data.normalization` (``"percentile"``, ``"range"``, ``"minmax"``, ``"zscore"``),
        computed per image plane (per volume for ``volumes``).
    split : {"train", "test"}, optional
        ``"train"``: labeled samples. ``"test"``: images only, labels are not read (ISBI 2012 reads ``test/``,
        CTC gives every frame). Default ``"train"``, or the split folder ``path`` names (``isbi2012/test``).
    label_kind : {"classes", "instances", "auto"}, optional
        ``pairs`` and ``volumes`` only; default (None) ``"classes"`` for ``pairs``, ``"auto"`` for ``volumes``
        (PlantSeg labels are instance ids). ``"classes"``: label files hold class ids ``0..K-1``; a file whose values are a subset of
        {0, 255} is a binary mask (255 is class 1); instances are the 4-connected components of each class > 0.
        ``"instances"``: label files hold instance ids (0 = background) and ``classes = instances > 0``.
        ``"auto"``: one of the two for the whole dataset, chosen by :func:`guess_label_kind` from all label files
        (logged at INFO level with the reason); ambiguous labels raise ValueError.
    num_classes : int, optional
        ``pairs`` only: reject class ids ``>= num_classes``.
    ignore_label : int, optional
        ``pairs`` only: the label value of unannotated pixels (sparse annotation: paint a few cells, mark the
        rest, or leave the rest as this value); they become :data:`IGNORE` and do not count in the loss.
    allow_unlabeled : bool, optional
        Keep images that have no label file as unlabeled samples (``classes=None``) instead of raising.
    sequences : sequence of str, optional
        ``ctc`` only: sequence folders to read (``("01",)``); all present when None.
    use_gt, use_silver : bool, optional
        ``ctc`` only: use gold truth (``NN_GT/SEG``) frames; use silver truth (``NN_ST/SEG``) for frames without
        gold truth (or for every frame when ``use_gt=False``).
    ignore_margin_px : float, optional
        ``ctc`` only: gold truth is partial (DIC-HeLa ``man_seg067`` labels 3 cells), so where a gold-truth frame
        also has silver truth, pixels that are silver foreground, in no gold cell and farther than this from every
        gold cell become :data:`IGNORE` instead of being taught as background.
    voxel_size_um : (float, float, float), optional
        ``volumes`` only: the ``(z, y, x)`` voxel size in micrometres of every volume, overriding the files' metadata.

    Returns
    -------
    samples : list of Sample
        One per image plane (a multi-page image gives one sample per page); one per volume for ``volumes``.

    Raises
    ------
    FileNotFoundError
        If ``path``, a folder the layout needs or a requested sequence is missing.
    ValueError
        On an unknown layout, split, label kind or normalisation, an option the layout does not use, an empty
        dataset, images without labels, labels without images, label and image sizes that differ, or label values
        outside the documented encoding. :class:`biounet.data.images.ImageError` (a ValueError) names an unreadable file.
    TypeError
        From :mod:`biounet.data.images`, for pixels of an unsupported type.
    """
    _check_values(layout, normalization, split, label_kind, num_classes, ignore_margin_px)
    if layout is None:
        layout = detect_layout(path)
    _check_layout_options(layout, {
        "label_kind": label_kind or "classes", "num_classes": num_classes, "allow_unlabeled": allow_unlabeled,
        "sequences": sequences, "use_gt": use_gt, "use_silver": use_silver, "ignore_margin_px": ignore_margin_px,
        "voxel_size_um": None if voxel_size_um is None else tuple(voxel_size_um),
    })
    if layout == "volumes":
        return load_volumes(path, normalization=normalization, voxel_size_um=voxel_size_um,
                            label_kind=label_kind or "auto", split=split or "train", allow_unlabeled=allow_unlabeled,
                            ignore_label=ignore_label)
    label_kind = label_kind or "classes"
    if layout == "synthetic":
        return _load_synthetic(os.fspath(path), normalization, split or "train")
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such dataset folder")
    if not root.is_dir():
        raise ValueError(f"{root}: a dataset must be a folder; {_EXPECTED_STRUCTURES}")
    if layout == "pairs":
        samples = _load_pairs(root, normalization, split or "train", label_kind, num_classes, allow_unlabeled,
                              ignore_label)
    elif layout == "isbi2012":
        samples = _load_isbi(root, normalization, split, allow_unlabeled)
    else:
        if not (use_gt or use_silver):
            raise ValueError("use_gt and use_silver are both False: no labels to train on")
        samples = _load_ctc(root, normalization, split or "train", sequences, use_gt, use_silver,
                            ignore_margin_px, allow_unlabeled)
    if not samples:
        raise ValueError(f"{root}: no samples found for layout {layout!r}, split {split or 'train'!r}")
    logger.info("loaded %d %s samples from %s", len(samples), layout, root)
    return samples


def _check_values(layout: str | None, normalization: str, split: str | None, label_kind: str | None,
                  num_classes: int | None, ignore_margin_px: float) -> None:
    """Refuse an unknown layout, normalisation, split or label kind, and out-of-range numbers."""
    if layout is not None and layout not in ALL_LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS} or {VOLUME_LAYOUTS}, got {layout!r}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if label_kind is not None and label_kind not in LABEL_KINDS:
        raise ValueError(f"label_kind must be one of {LABEL_KINDS}, got {label_kind!r}")
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if ignore_margin_px < 0:
        raise ValueError(f"ignore_margin_px must be >= 0, got {ignore_margin_px}")


def _check_layout_options(layout: str, given: dict[str, Any]) -> None:
    """Refuse an option (one of :data:`_OPTION_LAYOUTS`, given a value other than its default) that the layout
    does not use."""
    for option, (default, layouts) in _OPTION_LAYOUTS.items():
        volumes = option in _VOLUME_OPTIONS
        if given[option] != default and layout not in layouts and not (volumes and layout == "volumes"):
            where = (f"the {layouts} layout(s) and to volumes" if layouts else "the 'volumes' layout") if volumes \
                else f"the {layouts} layout(s)"
            raise ValueError(f"{option}={given[option]!r} applies to {where}, not to {layout!r}")


def _normalized_plane(source: ImageSource, plane: int, normalization: str) -> npt.NDArray[np.float32]:
    scaling = normalization_for(source, plane, normalization)  # its errors name the file
    try:
        return scaling.apply(source.read_plane(plane))
    except ValueError as err:  # NaN or Inf pixels; the message does not name the file
        raise ImageError(f"{source.path}: {err}") from err


def _read_planes(path: Path, normalization: str) -> tuple[list[npt.NDArray[np.float32]], PixelSizeUm | None]:
    """The file's planes, normalised, and its pixel size in micrometres (None where its metadata has none)."""
    source = open_image(path)
    planes = [_normalized_plane(source, plane, normalization) for plane in range(source.planes)]
    return planes, physical_micrometres(source.pixel_size)


def _check_size(image_path: Path, image_shape: tuple[int, ...], label_path: Path, label_shape: tuple[int, ...]) -> None:
    """Raise unless the label stack's ``(planes, H, W)`` equals the image's."""
    if tuple(image_shape) != tuple(label_shape):
        raise ValueError(
            f"label size does not match image size: {label_path} is {_describe(label_shape)} but {image_path} is "
            f"{_describe(image_shape)}"
        )


def _describe(shape: tuple[int, ...]) -> str:
    planes, height, width = shape
    return f"{height}x{width} ({planes} plane{'s' if planes != 1 else ''})"


def _list_names(paths: Sequence[Path], limit: int = 5) -> str:
    names = [path.name for path in paths[:limit]]
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(names) + more


def _unlabeled(name: str, image: npt.NDArray[np.float32], pixel_size_um: PixelSizeUm | None = None) -> Sample:
    return Sample(name, image, None, None, pixel_size_um)


# pairs


def _load_pairs(
    root: Path, normalization: str, split: str, label_kind: str, num_classes: int | None, allow_unlabeled: bool,
    ignore_label: int | None = None,
) -> list[Sample]:
    images_dir, labels_dir = pairs_folders(root)
    if images_dir is None:
        raise FileNotFoundError(f"{root}: no image folder; expected one of {PAIRS_IMAGE_DIRS}")
    images = files_by_stem(image_files(images_dir))
    if not images:
        raise ValueError(f"{images_dir}: no image files ({', '.join(IMAGE_SUFFIXES)}); the dataset is empty")
    labels: dict[str, Path] = {}
    if split == "train":
        if labels_dir is None and not allow_unlabeled:
            raise FileNotFoundError(
                f"{root}: no label folder; expected one of {PAIRS_LABEL_DIRS} (or pass allow_unlabeled=True)"
            )
        if labels_dir is not None:
            labels = files_by_stem(image_files(labels_dir))
        missing = [path for stem, path in images.items() if stem not in labels]
        if missing and not allow_unlabeled:
            raise ValueError(
                f"{len(missing)} image(s) in {images_dir} have no label file with the same stem in "
                f"{labels_dir}: {_list_names(missing)} (or pass allow_unlabeled=True)"
            )
        orphans = [path for stem, path in labels.items() if stem not in images]
        if orphans:
            raise ValueError(
                f"{len(orphans)} label file(s) in {labels_dir} have no image with the same stem in {images_dir}: "
                f"{_list_names(orphans)}"
            )
    planes_of: dict[str, list[npt.NDArray[np.float32]]] = {}
    sizes: dict[str, PixelSizeUm | None] = {}
    labels_of: dict[str, npt.NDArray[np.int64]] = {}
    for stem, image_path in images.items():
        planes_of[stem], sizes[stem] = _read_planes(image_path, normalization)
        if stem in labels:
            labels_of[stem] = read_labels(labels[stem])
            _check_size(image_path, (len(planes_of[stem]), *planes_of[stem][0].shape[:2]), labels[stem],
                        labels_of[stem].shape)
    unannotated = {stem: labels == ignore_label for stem, labels in labels_of.items()} if ignore_label is not None \
        else {}
    for stem, mask in unannotated.items():
        labels_of[stem] = np.where(mask, 0, labels_of[stem])
    if label_kind == "auto" and labels_of:
        label_kind = _guess_pairs_label_kind(labels_of, labels_dir)
    samples: list[Sample] = []
    for stem, planes in planes_of.items():
        for z, image in enumerate(planes):
            name = _plane_name(stem, z, len(planes))
            if stem not in labels_of:
                samples.append(_unlabeled(name, image, sizes[stem]))
                continue
            classes, instances = classes_and_instances(labels_of[stem][z], label_kind, source=labels[stem],
                                                               num_classes=num_classes)
            if stem in unannotated:
                classes = np.where(unannotated[stem][z], IGNORE, classes).astype(np.int64)
            samples.append(Sample(name, image, classes, instances, sizes[stem]))
    return samples


def _guess_pairs_label_kind(labels_of: dict[str, npt.NDArray[np.int64]], labels_dir: Path | None) -> str:
    planes = [plane for stack in labels_of.values() for plane in stack]
    try:
        guess = guess_label_kind(planes)
    except ValueError as err:
        raise ValueError(f"{labels_dir}: {err}") from err
    logger.info("label_kind='auto': %s label files read as %r (%s)", labels_dir, guess.kind, guess.reason)
    return guess.kind


def _plane_name(stem: str, plane: int, planes: int) -> str:
    return stem if planes == 1 else f"{stem}/{plane}"


# isbi2012


def _load_isbi(root: Path, normalization: str, split: str | None, allow_unlabeled: bool) -> list[Sample]:
    location = _isbi_location(root)
    if location is not None and location[1] is not None:
        root, named = location
        if split is not None and split != named:
            raise ValueError(f"split={split!r} conflicts with the path, which is the ISBI 2012 {named!r} folder")
        split = named
    split = split or "train"
    volume_name, labels_name = ISBI_VOLUMES[split]
    slices_dir = root / split / "image"
    volume = root / volume_name
    if slices_dir.is_dir() and volume.is_file():
        raise ValueError(f"{root}: has both {slices_dir} and {volume}; keep one ISBI 2012 {split!r} layout")
    if volume.is_file():
        return _load_isbi_volume(root, volume, root / labels_name if labels_name else None, normalization, split,
                                 allow_unlabeled)
    if not slices_dir.is_dir():
        raise FileNotFoundError(f"{root}: ISBI 2012 {split!r} data not found: neither {slices_dir} nor {volume}")
    images = files_by_stem(image_files(slices_dir))
    if not images:
        raise ValueError(f"{slices_dir}: no image files; the dataset is empty")
    labels: dict[str, Path] = {}
    if split == "train":
        labels_dir = root / split / "label"
        if labels_dir.is_dir():
            labels = files_by_stem(image_files(labels_dir))
        missing = [path for stem, path in images.items() if stem not in labels]
        if missing and not allow_unlabeled:
            raise ValueError(
                f"{len(missing)} ISBI 2012 slice(s) in {slices_dir} have no label in {labels_dir}: "
                f"{_list_names(missing)} (or pass allow_unlabeled=True)"
            )
    samples = []
    for stem, image_path in images.items():
        planes, size = _read_planes(image_path, normalization)
        if len(planes) != 1:
            raise ImageError(f"{image_path}: has {len(planes)} planes; expected one ISBI 2012 slice per file")
        name = f"isbi2012/{split}/{stem}"
        if stem not in labels:
            samples.append(_unlabeled(name, planes[0], size))
            continue
        stack = read_labels(labels[stem])
        _check_size(image_path, (1, *planes[0].shape[:2]), labels[stem], stack.shape)
        samples.append(Sample(name, planes[0], *_isbi_labels(stack[0], labels[stem]), size))
    return samples


def _load_isbi_volume(
    root: Path, volume: Path, labels_path: Path | None, normalization: str, split: str, allow_unlabeled: bool
) -> list[Sample]:
    planes, size = _read_planes(volume, normalization)
    names = [f"isbi2012/{split}/{z}" for z in range(len(planes))]
    if labels_path is None:
        return [_unlabeled(name, image, size) for name, image in zip(names, planes)]
    if not labels_path.is_file():
        if allow_unlabeled:
            return [_unlabeled(name, image, size) for name, image in zip(names, planes)]
        raise FileNotFoundError(f"{labels_path}: no such file (labels of {volume}; or pass allow_unlabeled=True)")
    stack = read_labels(labels_path)
    _check_size(volume, (len(planes), *planes[0].shape[:2]), labels_path, stack.shape)
    return [
        Sample(name, image, *_isbi_labels(stack[z], labels_path), size)
        for z, (name, image) in enumerate(zip(names, planes))
    ]


def _isbi_labels(raw: npt.NDArray[np.int64], path: Path) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
    """ISBI label values {0 = membrane, 255 = cell} to our classes (1 = membrane) and cell instances."""
    values = np.unique(raw)
    if not set(values.tolist()) <= {0, ISBI_CELL_VALUE}:
        raise ValueError(
            f"{path}: ISBI 2012 labels must be 0 (membrane) or {ISBI_CELL_VALUE} (cell interior), "
            f"got values {values[:10].tolist()}"
        )
    cell = raw == ISBI_CELL_VALUE
    classes = np.where(cell, ISBI_CELL_CLASS, ISBI_MEMBRANE_CLASS).astype(np.int64)
    instances = np.asarray(measure.label(cell, background=0, connectivity=1), dtype=np.int32)
    return classes, instances


# ctc


def _ctc_masks(folder: Path) -> dict[int, Path]:
    if not folder.is_dir():
        return {}
    masks: dict[int, Path] = {}
    skipped = 0
    for path in folder.iterdir():
        match = _CTC_MASK.match(path.name)
        if match is None:
            skipped += not path.name.startswith(".")
            continue
        frame = int(match.group(1))
        if frame in masks:
            raise ValueError(f"{folder}: two masks for frame {frame}: {masks[frame].name}, {path.name}")
        masks[frame] = path
    if skipped:
        logger.warning("%s: ignored %d file(s) not named man_segNNN.tif (only 2-D masks are read)", folder, skipped)
    return masks


def _load_ctc(
    root: Path, normalization: str, split: str, sequences: Sequence[str] | None, use_gt: bool, use_silver: bool,
    ignore_margin_px: float, allow_unlabeled: bool,
) -> list[Sample]:
    location = _ctc_location(root)
    if location is None:
        raise ValueError(f"{root}: no Cell Tracking Challenge sequence folder (NN/ with tNNN.tif frames)")
    root, named = location
    present = sorted((child.name for child in root.iterdir() if _is_ctc_sequence(child)), key=natural_key)
    if sequences is None:
        chosen = list(named or present)
    else:
        if isinstance(sequences, str):
            raise TypeError(f"sequences must be folder names such as ('01',), not the string {sequences!r}")
        chosen = [str(name) for name in sequences]
        absent = [name for name in chosen if name not in present]
        if absent:
            raise FileNotFoundError(f"{root}: sequence folder(s) {absent} not found; present: {present}")
        if named is not None and chosen != list(named):
            raise ValueError(f"sequences={chosen} conflicts with the path, which is sequence folder {named[0]!r}")
    samples: list[Sample] = []
    for sequence in chosen:
        samples.extend(_load_ctc_sequence(root, sequence, normalization, split, use_gt, use_silver,
                                          ignore_margin_px, allow_unlabeled))
    return samples


def _load_ctc_sequence(
    root: Path, sequence: str, normalization: str, split: str, use_gt: bool, use_silver: bool,
    ignore_margin_px: float, allow_unlabeled: bool,
) -> list[Sample]:
    folder = root / sequence
    frames: dict[int, Path] = {}
    for path in folder.iterdir():
        match = _CTC_FRAME.match(path.name)
        if match is not None:
            frames[int(match.group(1))] = path
    gold = _ctc_masks(root / f"{sequence}_GT" / "SEG")
    silver = _ctc_masks(root / f"{sequence}_ST" / "SEG")
    for masks in (gold, silver):
        orphans = [path for frame, path in sorted(masks.items()) if frame not in frames]
        if orphans:
            raise ValueError(f"{len(orphans)} mask(s) have no frame tNNN.tif in {folder}: {_list_names(orphans)}")
    samples = []
    for frame in sorted(frames):
        image_path = frames[frame]
        name = f"{root.name}/{sequence}/{output_stem(image_path)}"
        labeled = False
        if split == "train":
            labeled = (use_gt and frame in gold) or (use_silver and frame in silver)
            if not (labeled or allow_unlabeled):
                continue
        planes, size = _read_planes(image_path, normalization)
        if len(planes) != 1:
            raise ImageError(f"{image_path}: has {len(planes)} planes; only 2-D Cell Tracking Challenge data is read")
        image = planes[0]
        if split == "test" or not labeled:
            samples.append(_unlabeled(name, image, size))
            continue
        shape = (1, *image.shape[:2])
        if use_gt and frame in gold:
            instances = _ctc_instances(gold[frame], image_path, shape)
            classes = (instances > 0).astype(np.int64)
            if frame in silver:
                weak = _ctc_instances(silver[frame], image_path, shape)
                classes[unannotated_cells(instances, weak, margin_px=ignore_margin_px)] = IGNORE
        else:
            instances = _ctc_instances(silver[frame], image_path, shape)
            classes = (instances > 0).astype(np.int64)
        samples.append(Sample(name, image, classes, instances, size))
    return samples


def _ctc_instances(path: Path, image_path: Path, shape: tuple[int, int, int]) -> npt.NDArray[np.int32]:
    stack = read_labels(path)
    _check_size(image_path, shape, path, stack.shape)
    return as_instances(stack[0], path)


def unannotated_cells(
    gold: npt.NDArray[np.integer], silver: npt.NDArray[np.integer], *, margin_px: float = 2.0
) -> npt.NDArray[np.bool_]:
    """Pixels that silver truth calls cell but partial gold truth leaves unlabeled: set them to IGNORE.

    Parameters
    ----------
    gold : (H, W) ndarray of int
        Gold-truth instance labels (0 = background), possibly labelling only some cells.
    silver : (H, W) ndarray of int
        Silver-truth instance labels of the same frame.
    margin_px : float, optional
        Pixels within this Euclidean distance of a gold cell are kept (silver outlines are a little off).

    Returns
    -------
    mask : (H, W) ndarray of bool
        ``silver > 0`` and farther than ``margin_px`` from every ``gold > 0`` pixel.

    Examples
    --------
    >>> gold = np.array([[1, 1, 0, 0, 0, 0]])
    >>> silver = np.array([[1, 1, 1, 0, 2, 2]])
    >>> unannotated_cells(gold, silver, margin_px=1).astype(int)
    array([[0, 0, 0, 0, 1, 1]])
    """
    if gold.shape != silver.shape:
        raise ValueError(f"gold {gold.shape} and silver {silver.shape} labels must have the same shape")
    if not gold.any():
        return silver > 0
    distance = ndimage.distance_transform_edt(gold == 0)
    return np.asarray((silver > 0) & (distance > margin_px), dtype=bool)


# synthetic


def _parse_synthetic(spec: str) -> tuple[str, int, tuple[int, int], int]:
    """``"synthetic:KIND[,n=N][,size=H[xW]][,seed=S]"`` to ``(kind, n, size, seed)``."""
    parts = [part.strip() for part in spec[len(SYNTHETIC_PREFIX):].split(",")]
    kind = parts[0] or KINDS[0]
    if kind not in KINDS:
        raise ValueError(f"{spec!r}: synthetic kind must be one of {KINDS}, got {kind!r}")
    options = {"n": "8", "size": "256", "seed": "0"}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep or key not in options:
            raise ValueError(f"{spec!r}: bad option {part!r}; expected n=N, size=H or HxW, seed=S")
        options[key] = value
    try:
        n = int(options["n"])
        dims = [int(side) for side in options["size"].lower().split("x")]
        seed = int(options["seed"])
    except ValueError as err:
        raise ValueError(f"{spec!r}: options must be integers ({err})") from err
    if n < 1 or len(dims) not in (1, 2):
        raise ValueError(f"{spec!r}: need n >= 1 and size=H or HxW")
    return kind, n, (dims[0], dims[-1]), seed


def _load_synthetic(spec: str, normalization: str, split: str) -> list[Sample]:
    kind, n, size, seed = _parse_synthetic(spec)
    # The test split is drawn from an independent stream so that it never repeats training samples.
    rng = np.random.default_rng(seed if split == "train" else [seed, 1])
    samples = make_dataset(kind, n, size=size, rng=rng, normalization=normalization)
    if split == "test":
        return [_unlabeled(sample.name.replace(f"/{kind}/", f"/{kind}/test/"), sample.image) for sample in samples]
    return samples


# --- splitting --------------------------------------------------------------------------------------------------


def split_samples(
    samples: Sequence[Sample], *, validation_fraction: float = 0.2, rng: np.random.Generator | int | None = 0
) -> tuple[list[Sample], list[Sample]]:
    """Split samples into training and validation sets at random, whole samples (frames, slices) at a time.

    Parameters
    ----------
    samples : sequence of Sample
        What to split; never cropped, so a CTC frame or ISBI slice stays whole on one side.
    validation_fraction : float, optional
        Fraction in [0, 1) to hold out, rounded; with 2 or more samples and a fraction > 0 each side gets at
        least one.
    rng : {numpy.random.Generator, int, None}, optional
        Seed or generator of the permutation; the default 0 makes the split the same in every run.

    Returns
    -------
    train, validation : list of Sample
        Disjoint, each in the input order.

    Raises
    ------
    ValueError
        If ``samples`` is empty or ``validation_fraction`` is outside [0, 1).
    """
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    count = len(samples)
    if count == 0:
        raise ValueError("no samples to split")
    held_out = int(round(validation_fraction * count))
    if validation_fraction > 0 and count >= 2:
        held_out = min(max(held_out, 1), count - 1)
    elif count < 2:
        held_out = 0
    chosen = set(np.random.default_rng(rng).permutation(count)[:held_out].tolist())
    train = [sample for index, sample in enumerate(samples) if index not in chosen]
    validation = [sample for index, sample in enumerate(samples) if index in chosen]
    return train, validation


__all__ = [
    "ALL_LAYOUTS",
    "AUTO_MIN_CONNECTED_FRACTION",
    "AUTO_MIN_FEW_CELLS_IDS",
    "AUTO_MIN_INSTANCE_IDS",
    "BINARY_MASK_VALUE",
    "ISBI_CELL_CLASS",
    "ISBI_CELL_VALUE",
    "ISBI_MEMBRANE_CLASS",
    "ISBI_VOLUMES",
    "LABEL_KINDS",
    "LAYOUTS",
    "PAIRS_IMAGE_DIRS",
    "PAIRS_LABEL_DIRS",
    "SPLITS",
    "SYNTHETIC_PREFIX",
    "VOLUME_LAYOUTS",
    "LabelKindGuess",
    "detect_layout",
    "guess_label_kind",
    "load_dataset",
    "natural_key",
    "split_samples",
    "unannotated_cells",
]
