"""The sample type every dataset loader and generator returns: a normalised image or volume with its class and
instance labels; and the two label encodings a label file can hold (class ids or instance ids), told apart by
:func:`guess_label_kind` and turned into a sample's classes and instances by :func:`classes_and_instances`.

A 2-D sample's image is ``(H, W, C)``; a volume's (3-D sample) is ``(Z, Y, X, C)``, its labels ``(Z, Y, X)`` and its
voxel size ``(z, y, x)`` micrometres. The label functions work on either.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from skimage import measure

IGNORE = -1
"""Class id of unannotated pixels; the loss gives them no weight."""

BINARY_MASK_VALUE = 255
"""In a class label file whose values are a subset of {0, 255}, 255 is class 1 (a binary mask)."""

AUTO_MIN_INSTANCE_IDS = 9
"""``label_kind="auto"`` calls labels instance ids only when some image has at least this many non-zero ids (fewer
could be class ids; training warns above 8 classes too)."""
AUTO_MIN_CONNECTED_FRACTION = 0.95
"""... and when at least this fraction of the ids (counted per image) is one 8-connected region each."""
AUTO_MIN_FEW_CELLS_IDS = 4
"""A few cells per image (a biologist's first annotated images): labels are also instance ids when some image has at
least this many non-zero ids, all images together at least :data:`AUTO_MIN_INSTANCE_IDS`, and every id is one
8-connected region in every image. Classes are rarely one region each in every image; two or three such values
(nucleus and cytoplasm of one cell per image) stay ambiguous."""


@dataclass(eq=False)
class Sample:
    """One 2-D training or test image, or one volume, with its labels.

    Attributes
    ----------
    name : str
        Where it came from, e.g. ``"isbi2012/train/3"``, ``"DIC-C2DH-HeLa/01/t067"``, a ``pairs`` file stem or an
        HDF5 file stem.
    image : (H, W, C) or (Z, Y, X, C) ndarray of float32
        Normalised intensities (the loader's ``normalization`` mode): a 2-D image, or a volume (:attr:`dims` 3).
    classes : (H, W) or (Z, Y, X) ndarray of int64 or None
        Class ids ``0..K-1``, :data:`IGNORE` (-1) for unannotated pixels; None for an unlabeled image.
    instances : (H, W) or (Z, Y, X) ndarray of int32 or None
        Instance ids (0 = none) for the weight map's border term; None for an unlabeled image. They are not
        always ``classes > 0``: for ISBI 2012 the instances are cells while class 1 is the membrane between them.
    pixel_size_um : (float, float), (float, float, float) or None
        Pixel size ``(y, x)`` of an image, voxel size ``(z, y, x)`` of a volume, in micrometres, from the file's
        metadata (or given); None where it records none.

    Samples compare by identity (``eq=False``): comparing arrays elementwise has no single truth value.

    Raises
    ------
    TypeError
        If an array has the wrong dtype.
    ValueError
        If an array has the wrong shape, labels are given without instances, or the pixel size has not one
        positive finite value per spatial axis.
    """

    name: str
    image: npt.NDArray[np.float32]
    classes: npt.NDArray[np.int64] | None
    instances: npt.NDArray[np.int32] | None
    pixel_size_um: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.image.ndim not in (3, 4):
            raise ValueError(
                f"sample {self.name!r}: image must be (H, W, C) or a volume (Z, Y, X, C), got shape {self.image.shape}"
            )
        if self.image.dtype != np.float32:
            raise TypeError(f"sample {self.name!r}: image must be float32, got {self.image.dtype}")
        if (self.classes is None) != (self.instances is None):
            raise ValueError(f"sample {self.name!r}: classes and instances must both be given or both be None")
        spatial = self.image.shape[:-1]
        for field, array, dtype in (("classes", self.classes, np.int64), ("instances", self.instances, np.int32)):
            if array is None:
                continue
            if array.shape != spatial:
                raise ValueError(f"sample {self.name!r}: {field} shape {array.shape} does not match image {spatial}")
            if array.dtype != dtype:
                raise TypeError(f"sample {self.name!r}: {field} must be {np.dtype(dtype)}, got {array.dtype}")
        size = self.pixel_size_um
        if size is not None and (
            len(size) != self.dims or not all(isinstance(s, numbers.Real) and s > 0 and math.isfinite(s) for s in size)
        ):
            axes = "(y, x)" if self.dims == 2 else "(z, y, x)"
            raise ValueError(f"sample {self.name!r}: pixel_size_um must be {self.dims} positive micrometres {axes}, "
                             f"got {size}")

    @property
    def labeled(self) -> bool:
        """Whether the sample has labels."""
        return self.classes is not None

    @property
    def dims(self) -> int:
        """2 for an image ``(H, W, C)``, 3 for a volume ``(Z, Y, X, C)``."""
        return self.image.ndim - 1


# --- label encodings: class ids or instance ids ----------------------------------------------------------------


class LabelKindGuess(NamedTuple):
    """Result of :func:`guess_label_kind`."""

    kind: str  # "classes" or "instances"
    reason: str  # one line saying why, for a log


def guess_label_kind(labels_list: Sequence[npt.NDArray[np.integer]]) -> LabelKindGuess:
    """Whether a dataset's label images hold class ids or instance ids, decided from all of them together.

    Parameters
    ----------
    labels_list : sequence of ndarray of int
        The label images of one dataset (each 2-D, or N-D for volumes), as read from their files.

    Returns
    -------
    LabelKindGuess
        ``(kind, reason)``: ``kind`` is ``"classes"`` or ``"instances"`` (the ``label_kind`` values of
        :func:`biounet.data.datasets.load_dataset`), ``reason`` a sentence saying why.

    Raises
    ------
    ValueError
        If ``labels_list`` is empty, a label is negative, or the labels are ambiguous (see Notes); the message
        says to pass ``label_kind`` (``--label-kind``) explicitly.
    TypeError
        If a label image is not of integer dtype.

    Notes
    -----
    Ids are counted per image: an (image, id) pair is one cell if the id is one 8-connected region there (in a
    volume, 26-connected, and the pieces of an id that all touch the volume's border count as one region: a crop
    cuts curved cells into pieces). In this order:

    1. ``"classes"`` if every image is a binary mask: its values lie within {0, 1} or within {0, 255} (read as
       class 1, as ``label_kind="classes"`` does).
    2. ``"instances"`` if some image has at least :data:`AUTO_MIN_INSTANCE_IDS` non-zero ids and at least
       :data:`AUTO_MIN_CONNECTED_FRACTION` of all (image, id) pairs are one 8-connected region each: one id
       per cell, touching cells or not, consecutive (Cellpose) or not (napari label layers).
    3. ``"instances"`` for a few cells per image (:data:`AUTO_MIN_FEW_CELLS_IDS`): some image has at least that
       many ids, the images together at least :data:`AUTO_MIN_INSTANCE_IDS`, and every id is one region in every
       image. Ids that are single regions across images are cells, not classes.
    4. Otherwise ambiguous: a few values (e.g. 3 semantic classes, or a few cells in one image), or many ids
       that are not one region each.

    Examples
    --------
    >>> guess_label_kind([np.array([[0, 255], [255, 0]])]).kind
    'classes'
    >>> cells = np.kron(np.arange(16).reshape(4, 4), np.ones((3, 3), dtype=int))   # 15 touching squares
    >>> guess_label_kind([cells])
    LabelKindGuess(kind='instances', reason='up to 15 ids per image, 100% of them one connected region each')
    >>> few = np.kron(np.arange(6).reshape(2, 3), np.ones((3, 3), dtype=int))   # 5 cells in each of 2 images
    >>> guess_label_kind([few, few]).reason
    '10 ids in 2 images, up to 5 per image, every one a single connected region: a few cells per image'
    """
    if len(labels_list) == 0:
        raise ValueError("labels_list is empty: no label images to look at")
    stats = _label_stats(labels_list)
    if stats.binary:
        return LabelKindGuess("classes", f"binary masks, values {sorted(stats.values)}")
    fraction = stats.single / stats.ids  # not binary, so some image has a non-zero id
    summary = f"up to {stats.max_ids} ids per image, {fraction:.0%} of them one connected region each"
    if stats.max_ids >= AUTO_MIN_INSTANCE_IDS and fraction >= AUTO_MIN_CONNECTED_FRACTION:
        return LabelKindGuess("instances", summary)
    if stats.max_ids >= AUTO_MIN_FEW_CELLS_IDS and stats.ids >= AUTO_MIN_INSTANCE_IDS and stats.single == stats.ids:
        return LabelKindGuess("instances", f"{stats.ids} ids in {len(labels_list)} images, up to {stats.max_ids} per "
                              "image, every one a single connected region: a few cells per image")
    shown = sorted(stats.values)
    raise ValueError(
        f"cannot tell class ids from instance ids: values {shown[:10]}{'...' if len(shown) > 10 else ''} in "
        f"{len(labels_list)} label image(s), {summary} (instances need >= {AUTO_MIN_INSTANCE_IDS} ids in some "
        f"image, >= {AUTO_MIN_CONNECTED_FRACTION:.0%} of them one region each; or >= {AUTO_MIN_INSTANCE_IDS} ids "
        f"in all images, >= {AUTO_MIN_FEW_CELLS_IDS} in some, every one a single region); pass "
        f"label_kind='classes' (--label-kind classes: each value is a class 0..K-1) or label_kind='instances' "
        f"(--label-kind instances: each value > 0 is one object)"
    )


class _LabelStats(NamedTuple):
    """What :func:`guess_label_kind` counts over a dataset's label images."""

    values: set[int]  # every value seen, 0 included
    binary: bool  # every image's values within {0, 1} or within {0, 255}
    ids: int  # (image, non-zero id) pairs
    single: int  # ... of which the id is one 8-connected region in that image
    max_ids: int  # the most non-zero ids in one image


def _label_stats(labels_list: Sequence[npt.NDArray[np.integer]]) -> _LabelStats:
    """Count values, binary masks and (image, id) regions; raise on non-integer or negative labels."""
    values_seen: set[int] = set()
    binary, n_ids, n_single, max_ids = True, 0, 0, 0
    for index, labels in enumerate(labels_list):
        array = np.asarray(labels)
        if not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"labels_list[{index}] must be an integer label image, got dtype {array.dtype}")
        values = np.unique(array)
        if values.size and values[0] < 0:
            raise ValueError(f"labels_list[{index}] has the negative label {values[0]}; labels must be >= 0")
        value_set = set(values.tolist())
        values_seen |= value_set
        binary = binary and (value_set <= {0, 1} or value_set <= {0, BINARY_MASK_VALUE})
        regions_per_id = _regions_per_id(array)
        n_ids += regions_per_id.size
        n_single += int(np.count_nonzero(regions_per_id == 1))
        max_ids = max(max_ids, int(regions_per_id.size))
    return _LabelStats(values_seen, binary, n_ids, n_single, max_ids)


def _regions_per_id(labels: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    """Number of 8-connected (fully connected in N-D) regions of each non-zero id, in ascending id order.

    In a volume (3-D labels) the regions of an id that touch the volume's border count as one: a crop cuts curved
    cells into pieces that meet outside it (3 of the 50 cells of PlantSeg's ovule crop are two pieces each)."""
    regions = measure.label(labels, background=0, connectivity=labels.ndim)  # same-valued connected regions
    numbers, first_pixel = np.unique(regions.reshape(-1), return_index=True)
    region_ids = labels.reshape(-1)[first_pixel]
    foreground = region_ids != 0  # drop the background region
    region_ids = region_ids[foreground]
    if labels.ndim != 3:
        return np.unique(region_ids, return_counts=True)[1].astype(np.int64)
    at_border = np.isin(numbers[foreground], np.unique(_faces(regions)))
    ids = np.unique(region_ids)
    counts = np.zeros(ids.size, np.int64)
    inner_ids, inner_counts = np.unique(region_ids[~at_border], return_counts=True)
    counts[np.searchsorted(ids, inner_ids)] += inner_counts
    counts[np.searchsorted(ids, np.unique(region_ids[at_border]))] += 1
    return counts


def _faces(volume: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The values on the six faces of a 3-D array, concatenated."""
    return np.concatenate([face.reshape(-1) for axis in range(3) for face in (
        np.take(volume, 0, axis=axis), np.take(volume, -1, axis=axis))])


def classes_and_instances(
    labels: npt.NDArray[np.integer], label_kind: str, *, source: object = "labels", num_classes: int | None = None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
    """A label image (2-D or a volume) as a sample's ``(classes, instances)``.

    ``label_kind="instances"``: ``labels`` are instance ids (0 = background), ``classes = instances > 0``.
    ``"classes"``: ``labels`` are class ids ``0..K-1`` (values within {0, 255} are a binary mask, 255 is class 1);
    instances are the connected components of each class > 0 (:func:`instances_of_classes`). ``source`` (a file)
    names the labels in errors; class ids ``>= num_classes`` are rejected.

    >>> classes, instances = classes_and_instances(np.array([[0, 255, 255, 0, 255]]), "classes")
    >>> classes.tolist(), instances.tolist()
    ([[0, 1, 1, 0, 1]], [[0, 1, 1, 0, 2]])
    """
    if label_kind == "instances":
        instances = as_instances(labels, source)
        classes = (instances > 0).astype(np.int64)
        if num_classes is not None and num_classes < 2 and instances.any():
            raise ValueError(f"{source}: instance labels give 2 classes but num_classes={num_classes}")
        return classes, instances
    values = np.unique(labels)
    if values.size and values[0] < 0:
        raise ValueError(f"{source}: negative class id {values[0]}; class ids must be 0..K-1")
    if set(values.tolist()) <= {0, BINARY_MASK_VALUE}:  # a binary mask saved as 0/255
        classes = (labels == BINARY_MASK_VALUE).astype(np.int64)
    else:
        classes = np.asarray(labels, dtype=np.int64)
    if num_classes is not None and classes.max(initial=0) >= num_classes:
        raise ValueError(
            f"{source}: class id {classes.max()} out of range for num_classes={num_classes} "
            f"(values found: {values[:10].tolist()}{'...' if values.size > 10 else ''})"
        )
    return classes, instances_of_classes(classes)


def instances_of_classes(classes: npt.NDArray[np.int64]) -> npt.NDArray[np.int32]:
    """4-connected (6-connected in 3-D) components of each class > 0, numbered 1..N across classes (touching classes
    stay apart)."""
    foreground = np.where(classes > 0, classes, 0)
    return np.asarray(measure.label(foreground, background=0, connectivity=1), dtype=np.int32)


def as_instances(labels: npt.NDArray[np.integer], source: object = "labels") -> npt.NDArray[np.int32]:
    """Instance ids (0 = background) as int32; ``source`` (a file) names them in the error for ids out of range."""
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.int32).max):
        raise ValueError(
            f"{source}: instance ids must be in 0..{np.iinfo(np.int32).max}, got {labels.min()}..{labels.max()}"
        )
    return labels.astype(np.int32)
