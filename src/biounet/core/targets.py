"""Training targets: from a labelled image to the class map, weight map (paper eq. 2) and distance map the loss sees.

One function, :func:`training_targets`, makes every array that training hands to the loss, so the pictures
(:func:`biounet.evaluation.report.plot_weight_map`, the demo's Fig. 3) draw exactly what the network is taught. Three target
representations of cell segmentation:

- ``paper``: background / cell, touching cells cut apart by a ~2 px background gap
  (:func:`biounet.core.weights.separation_borders`); the border term of eq. 2 sits on the gap pixels.
- ``boundary``: background / cell interior / cell boundary, the boundary an inner band of ``boundary_px`` pixels
  along every outline and contact; the border term sits on the boundary pixels between two cells' interiors.
- ``distance``: the paper's classes plus, per cell, the Euclidean distance to its outline divided by the cell's
  largest distance (in [0, 1]), regressed by an extra output channel.
- ``stardist``: the ``boundary`` classes plus StarDist's object probability and radial distances
  (:mod:`biounet.core.starconvex`), computed on each augmented tile from the instance ids carried through
  augmentation (a rotation turns the rays).
- ``affinities`` (membranes): the paper's cell / membrane classes plus, for each offset of
  :data:`biounet.core.affinities.OFFSETS`, whether a pixel and its partner lie in one cell, computed on each
  augmented tile from the cells' ids (Wolf et al. 2020; the mutex watershed makes segments of them).

Non-cell tasks (ISBI 2012 membranes, multi-class labels) keep their classes; the border term then separates the
given instances (the cells between the membranes).

Volumes: every target but ``stardist`` and ``affinities`` (2D only) takes (Z, Y, X) labels, with ``spacing`` the voxel size relative to
the in-plane pixel (e.g. ``(2.24, 1, 1)``); distances are then physical, and ``sigma_px`` and ``boundary_px`` stay
in in-plane pixels. Unannotated voxels (:data:`IGNORE`) get weight 0, so a volume painted on a few slices trains
the network (Cicek et al. 2016). NumPy/SciPy only.

References
----------
.. [1] Ronneberger, Fischer, Brox (2015). U-Net. MICCAI, section 3 and eq. 2. arXiv:1505.04597
.. [2] Chen et al. (2016). DCAN: deep contour-aware networks for accurate gland segmentation. CVPR.
   (three-class interior/boundary targets)
.. [3] Cicek et al. (2016). 3D U-Net: Learning Dense Volumetric Segmentation from Sparse Annotation. MICCAI.
   arXiv:1606.06650
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from biounet.core.samples import IGNORE
from biounet.core.weights import border_weights, check_spacing, class_balance_weights, separation_borders

TARGETS: tuple[str, ...] = ("paper", "boundary", "distance", "stardist", "affinities")
TASKS: tuple[str, ...] = ("cells", "membranes", "classes")
MEMBRANES = "membranes"
"""The task of cells between membranes (ISBI 2012), the one the ``affinities`` target serves; also the name of a
membrane model's post-processing (its checkpoint's ``task``: segments of its class-1 map or its affinities)."""
STAR_LIKE_BOUNDARY: tuple[str, ...] = ("boundary", "stardist")
"""Targets whose classes are background / interior / boundary (``stardist`` adds its outputs to those)."""
BOUNDARY_CLASS = 2
"""Class id of the boundary band in the ``boundary`` target (0 background, 1 interior)."""


@dataclass(frozen=True)
class TrainingTargets:
    """The arrays the loss sees for one image, all (H, W), or all (Z, Y, X) for a volume.

    Attributes
    ----------
    classes : int64
        Class id per pixel, :data:`IGNORE` where unannotated.
    weights : float32
        ``w_c + w0 exp(-(d1 + d2)^2 / 2 sigma^2)``, 0 where unannotated.
    cells : int32
        The instances whose borders the border term measures ``d1``, ``d2`` to (separated cells, interiors).
    distance : float32 or None
        Normalised distance to the cell outline (``distance`` target only), 0 on background.
    tile_ids : int32 or None
        The instance ids the per-tile outputs are computed from after augmentation: the star-convex outputs
        (``stardist`` target, cells) or the affinities (``affinities`` target, membranes: the cells between them).
    """

    classes: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float32]
    cells: npt.NDArray[np.int32]
    distance: npt.NDArray[np.float32] | None = None
    tile_ids: npt.NDArray[np.int32] | None = None


def task_of(classes: npt.NDArray[np.integer], instances: npt.NDArray[np.integer]) -> str:
    """What a labelled image asks for: ``cells``, ``membranes`` or ``classes``.

    ``cells`` when class 1 is exactly the union of the instances (instance-labelled cells, Cell Tracking
    Challenge), ``membranes`` when class 0 is (ISBI 2012: cells between membranes of class 1), else ``classes``.
    Unannotated pixels are left out of the comparison.

    Examples
    --------
    >>> task_of(np.array([[0, 1, 1]]), np.array([[0, 4, 4]]))
    'cells'
    >>> task_of(np.array([[1, 0, 0]]), np.array([[0, 4, 4]]))
    'membranes'
    """
    if classes.shape != instances.shape:
        raise ValueError(f"classes {classes.shape} and instances {instances.shape} must have the same shape")
    valid = classes != IGNORE
    if classes[valid].max(initial=0) > 1:
        return "classes"
    inside = instances[valid] > 0
    if np.array_equal(classes[valid] == 1, inside):
        return "cells"
    if np.array_equal(classes[valid] == 0, inside):
        return "membranes"
    return "classes"


def _band_radii(ndim: int, boundary_px: int, spacing: Sequence[float] | None) -> tuple[int, ...]:
    """Per axis, the band's half-width in pixels/voxels: ``boundary_px`` in-plane pixels, at least 1 voxel."""
    steps = check_spacing(spacing, ndim)
    if steps is None:
        return (boundary_px,) * ndim
    return tuple(max(1, round(boundary_px / v)) for v in steps)


def boundary_band(
    instances: npt.NDArray[np.integer], *, boundary_px: int = 2, spacing: Sequence[float] | None = None
) -> npt.NDArray[np.bool_]:
    """Cell pixels within ``boundary_px`` (chessboard distance) of a pixel that is not the same cell.

    On a (Z, Y, X) volume with ``spacing`` (voxel size relative to the in-plane pixel), the window reaches
    ``max(1, round(boundary_px / spacing))`` voxels along each axis, so the band is about ``boundary_px`` in-plane
    pixels thick in every direction and never thinner than one voxel.

    Examples
    --------
    >>> boundary_band(np.array([[1, 1, 1, 1, 2, 2, 2, 2]]), boundary_px=1).astype(int)
    array([[0, 0, 0, 1, 1, 0, 0, 0]])
    """
    if boundary_px < 1:
        raise ValueError(f"boundary_px must be >= 1, got {boundary_px}")
    size = tuple(2 * r + 1 for r in _band_radii(instances.ndim, boundary_px, spacing))
    foreground = instances > 0
    sentinel = np.iinfo(np.int64).max
    ids = instances.astype(np.int64)
    largest = ndimage.maximum_filter(ids, size=size, mode="nearest")
    smallest = ndimage.minimum_filter(np.where(foreground, ids, sentinel), size=size, mode="nearest")
    background_near = ndimage.minimum_filter(ids, size=size, mode="nearest") == 0
    return foreground & ((largest != ids) | (smallest != ids) | background_near)


def cell_distance(
    instances: npt.NDArray[np.integer], *, spacing: Sequence[float] | None = None
) -> npt.NDArray[np.float32]:
    """Per cell, the Euclidean distance to its outline divided by the cell's largest such distance.

    1 at each cell's centre (its most inward pixel), ``1 / max`` on its outline pixels, 0 on background. Works on
    (H, W) and (Z, Y, X); ``spacing`` (voxel size per axis relative to the in-plane pixel) makes the distance
    physical before the normalisation.

    Examples
    --------
    >>> cell_distance(np.pad(np.ones((3, 3), int), 1))[2]
    array([0. , 0.5, 1. , 0.5, 0. ], dtype=float32)
    """
    out = np.zeros(instances.shape, np.float32)
    ids = np.asarray(instances)
    sampling = check_spacing(spacing, ids.ndim)
    inner = (slice(1, -1),) * ids.ndim
    for index, box in enumerate(ndimage.find_objects(ids), start=1):
        if box is None:
            continue
        padded = np.pad(ids[box] == index, 1)
        dist = ndimage.distance_transform_edt(padded, sampling=sampling)[inner]
        top = dist.max()
        inside = ids[box] == index
        out[box][inside] = (dist[inside] / top).astype(np.float32)
    return out


def _check_dims(instances: npt.NDArray[np.integer], target: str) -> None:
    if instances.ndim not in (2, 3):
        raise ValueError(f"labels must be (H, W) or (Z, Y, X), got shape {instances.shape}")
    if target in ("stardist", "affinities") and instances.ndim == 3:
        raise ValueError(f"the {target} target is 2D only; got a volume of shape {instances.shape}")


def target_classes(
    classes: npt.NDArray[np.int64], instances: npt.NDArray[np.integer], *, target: str = "paper",
    boundary_px: int = 2, spacing: Sequence[float] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
    """The class map a target teaches and the cells its border term separates.

    Parameters
    ----------
    classes : (H, W) or (Z, Y, X) int64
        Class ids from the dataset, :data:`IGNORE` where unannotated.
    instances : int, the shape of ``classes``
        Instance ids, 0 = none.
    target : {"paper", "boundary", "distance", "stardist", "affinities"}
        See the module docstring. For ``membranes`` and ``classes`` tasks (see :func:`task_of`) every target
        keeps the classes and separates the given instances. ``stardist`` is 2D only.
    boundary_px : int
        Width of the ``boundary`` target's inner band, in in-plane pixels.
    spacing : sequence of float, optional
        Voxel size relative to the in-plane pixel (volumes), for the band's width along each axis.

    Returns
    -------
    classes : int64, the shape of ``classes``
        The taught classes, :data:`IGNORE` kept.
    cells : int32, the shape of ``classes``
        Instances for the border term (``d1``, ``d2``); the border term lives where ``cells == 0``.

    Raises
    ------
    ValueError
        For an unknown target, labels that are not 2-D or 3-D, or the ``stardist`` target on a volume.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    _check_dims(np.asarray(instances), target)
    if task_of(classes, instances) != "cells":
        return classes, np.asarray(instances, dtype=np.int32)
    valid = classes != IGNORE
    if target in STAR_LIKE_BOUNDARY:
        band = boundary_band(instances, boundary_px=boundary_px, spacing=spacing)
        taught = np.where(band, BOUNDARY_CLASS, (instances > 0).astype(np.int64))
        cells = np.where(band, 0, instances)
    else:
        cells = separation_borders(instances)
        taught = (cells > 0).astype(np.int64)
    return np.where(valid, taught, IGNORE).astype(np.int64), np.asarray(cells, dtype=np.int32)


def class_frequencies(class_maps: Sequence[npt.NDArray[np.int64]], num_classes: int) -> npt.NDArray[np.float64]:
    """Fraction of annotated pixels of each class over a dataset (of the *taught* classes).

    Examples
    --------
    >>> class_frequencies([np.array([[0, 1, -1]]), np.array([[1, 1, 1]])], 2)
    array([0.2, 0.8])
    """
    counts = np.zeros(num_classes, dtype=np.float64)
    for classes in class_maps:
        valid = classes[classes != IGNORE]
        counts += np.bincount(valid.ravel(), minlength=num_classes)[:num_classes]
    total = counts.sum()
    if total == 0:
        raise ValueError("the dataset has no annotated pixels")
    return counts / total


def training_targets(
    classes: npt.NDArray[np.int64], instances: npt.NDArray[np.integer], *, num_classes: int,
    target: str = "paper", w0: float = 10.0, sigma_px: float = 5.0, class_balance: bool = True,
    frequencies: npt.NDArray[np.float64] | None = None, boundary_px: int = 2,
    spacing: Sequence[float] | None = None,
) -> TrainingTargets:
    """Every array the loss sees for one labelled image (paper eq. 2 and the chosen target).

    Parameters
    ----------
    classes, instances : (H, W) or (Z, Y, X) int
        Dataset labels: class ids (:data:`IGNORE` where unannotated) and instance ids (0 = none).
    num_classes : int
        Classes the network predicts (3 for the ``boundary`` target of cells).
    target : {"paper", "boundary", "distance", "stardist", "affinities"}
        Target representation, see the module docstring; ``stardist`` and ``affinities`` are 2D only.
    w0, sigma_px : float
        Border term ``w0 exp(-(d1 + d2)^2 / (2 sigma^2))``; ``w0 = 0`` switches it off. ``sigma_px`` is in
        in-plane pixels.
    class_balance : bool
        ``w_c = 1 / (K' f_c)`` if True, else ``w_c = 1``; independent of the border term.
    frequencies : (num_classes,) float, optional
        Dataset frequencies of the taught classes (:func:`class_frequencies`); this image's by default.
    boundary_px : int
        Width of the ``boundary`` target's band, in in-plane pixels.
    spacing : sequence of float, optional
        For volumes, the voxel size relative to the in-plane pixel, e.g. ``(2.24, 1, 1)``: ``d1``, ``d2``, the
        band and the distance map are physical. None: unit spacing.

    Returns
    -------
    TrainingTargets
        ``classes``, ``weights``, ``cells`` and, for ``distance``, the normalised distance map.

    Examples
    --------
    Two touching 1-px-high cells: the gap pixels (the cut contact) carry the border term,
    ``d1 + d2 = 1 + 2 = 3``.

    >>> t = training_targets(np.array([[1, 1, 1, 1, 1, 1]]), np.array([[1, 1, 1, 2, 2, 2]]), num_classes=2,
    ...                      class_balance=False)
    >>> t.classes
    array([[1, 1, 0, 0, 1, 1]])
    >>> bool(np.isclose(t.weights[0, 2], 1 + 10 * np.exp(-9 / 50)))
    True
    """
    taught, cells = target_classes(classes, instances, target=target, boundary_px=boundary_px, spacing=spacing)
    if class_balance:
        weights = class_balance_weights(taught, num_classes=num_classes, frequencies=frequencies,
                                        ignore_index=IGNORE)
    else:
        weights = np.where(taught == IGNORE, 0.0, 1.0).astype(np.float32)
    weights = weights + border_weights(cells, w0=w0, sigma_px=sigma_px, spacing=spacing)
    weights[taught == IGNORE] = 0.0
    is_cells = task_of(classes, instances) == "cells"
    distance = cell_distance(cells, spacing=spacing) if target == "distance" and is_cells else None
    per_tile = (target == "stardist" and is_cells) or (target == "affinities" and task_of(classes, instances) == MEMBRANES)
    tile_ids = np.asarray(instances, dtype=np.int32) if per_tile else None
    return TrainingTargets(taught, weights.astype(np.float32), cells, distance, tile_ids)


def num_target_classes(task: str, target: str, dataset_classes: int) -> int:
    """Classes a network must predict: 3 for the ``boundary`` and ``stardist`` targets of cells, else the dataset's."""
    return 3 if task == "cells" and target in STAR_LIKE_BOUNDARY else dataset_classes


def class_names(task: str, target: str, num_classes: int) -> list[str]:
    """Names of the classes a network predicts, stored with the model (instances are made by them).

    >>> class_names("cells", "boundary", 3), class_names("membranes", "paper", 2)
    (['background', 'interior', 'boundary'], ['cell', 'membrane'])
    """
    if task == "cells":
        return ["background", "interior", "boundary"] if target in STAR_LIKE_BOUNDARY else ["background", "cell"]
    if task == "membranes":
        return ["cell", "membrane"]
    return [f"class{k}" for k in range(num_classes)]


__all__ = [
    "BOUNDARY_CLASS",
    "IGNORE",
    "STAR_LIKE_BOUNDARY",
    "TARGETS",
    "TASKS",
    "TrainingTargets",
    "boundary_band",
    "cell_distance",
    "class_frequencies",
    "class_names",
    "num_target_classes",
    "target_classes",
    "task_of",
    "training_targets",
]
