"""Instances of touching cells from a network's prediction, one function per target (:mod:`biounet.core.targets`).

- ``paper``: the network predicts the background gaps the targets cut between touching cells, so the connected
  components of its foreground are the cells (paper section 3). The gap pixels are given back to the cells on
  either side (:func:`fill_gaps`); nothing grows into the rest of the background.
- ``boundary``: the connected interiors are the seeds; each is grown back over the predicted boundary band by a
  seeded watershed on the boundary probability.
- ``distance``: seeds are the maxima of the predicted distance map inside the foreground; a watershed of the
  negated distance splits the foreground between them.
- :data:`MEMBRANES` (a model trained on membranes between cells, ISBI 2012): the cells tile the image, so its
  instances are segments of the membrane map, agglomerated (:mod:`biounet.inference.segments`), never the connected
  components of the membrane class.

Every function takes arrays and returns ``(H, W) int32`` labels, 0 = background, 1..N in raster order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from biounet.core.affinities import OFFSETS
from biounet.core.targets import BOUNDARY_CLASS, MEMBRANES, TARGETS
from biounet.core.weights import nearest_two_distances
from biounet.inference.polygons import MASKS, StarParams, star_instances
from biounet.inference.segments import SegmentParams, segments_from_affinities, segments_from_membranes


@dataclass(frozen=True)
class InstanceParams:
    """Post-processing settings; the training run picks them on its validation images and stores them.

    Attributes
    ----------
    min_size_px : int
        Instances smaller than this are dropped (noise).
    seed_threshold : float
        ``boundary``: interior probability above which a pixel seeds a cell; ``distance``: the predicted
        normalised distance above which a pixel seeds a cell; ``stardist``: the object probability above which
        a pixel proposes a polygon.
    watershed : bool
        ``paper`` only: also split merged cells by a seeded watershed on the distance transform.
    overlap_threshold : float
        ``stardist`` only: polygon suppression's overlap (:class:`biounet.inference.polygons.StarParams`).
    masks : str
        ``stardist`` only: ``watershed`` (each detection's mask grown over the predicted foreground) or
        ``polygons`` (StarDist's own masks).
    split_prominence : float
        ``boundary`` only: seeds are cut at the necks of their distance transform where a second maximum rises
        at least this fraction of the seed's largest distance above the neck (:func:`split_seeds`); 0: no cut.
    background_bias : float
        ``boundary`` and ``distance`` (made from the probabilities at predict time): a pixel is a cell's where a
        cell class is more probable than this many times the background (1: the arg-max). The class-balanced loss
        (eq. 1's ``w_c``) weights the rare cell classes up, so the network's arg-max draws cells wider than their
        outlines; a bias above 1 takes that back (:func:`cell_foreground`).
    """

    min_size_px: int = 16
    seed_threshold: float = 0.5
    watershed: bool = False
    overlap_threshold: float = 0.4
    masks: str = "watershed"
    split_prominence: float = 0.0
    background_bias: float = 1.0

    def __post_init__(self) -> None:
        if self.min_size_px < 0:
            raise ValueError(f"min_size_px must be >= 0, got {self.min_size_px}")
        if not 0.0 <= self.seed_threshold <= 1.0:
            raise ValueError(f"seed_threshold must be in [0, 1], got {self.seed_threshold}")
        if not 0.0 < self.overlap_threshold < 1.0:
            raise ValueError(f"overlap_threshold must be in (0, 1), got {self.overlap_threshold}")
        if self.masks not in MASKS:
            raise ValueError(f"masks must be one of {MASKS}, got {self.masks!r}")
        if not 0.0 <= self.split_prominence < 1.0:
            raise ValueError(f"split_prominence must be in [0, 1), got {self.split_prominence}")
        if not (np.isfinite(self.background_bias) and self.background_bias > 0.0):
            raise ValueError(f"background_bias must be a positive number, got {self.background_bias}")


def _check_mask(mask: npt.NDArray[np.bool_], name: str) -> None:
    if not isinstance(mask, np.ndarray) or mask.ndim not in (2, 3):
        raise ValueError(f"{name} must be a 2-D (H, W) or 3-D (Z, Y, X) array, got "
                         f"{getattr(mask, 'shape', type(mask).__name__)}")
    if mask.dtype != np.bool_:
        raise TypeError(f"{name} must be a bool mask, got dtype {mask.dtype}")


def _drop_small(labels: npt.NDArray[np.int32], min_size_px: int) -> npt.NDArray[np.int32]:
    if min_size_px > 1 and labels.any():
        sizes = np.bincount(labels.ravel())
        small = sizes < min_size_px
        small[0] = False
        labels = np.where(small[labels], 0, labels).astype(np.int32)
    return labels


def _sequential(labels: npt.NDArray[np.integer]) -> npt.NDArray[np.int32]:
    from skimage.segmentation import relabel_sequential

    return np.asarray(relabel_sequential(np.asarray(labels, dtype=np.int32))[0], dtype=np.int32)


GAP_REACH_PX = 2.0
"""A gap pixel is at most this far (Euclidean) from the cell it is given back to."""
GAP_SUM_PX = 3.9
"""A gap pixel lies between two cells: ``d1 + d2`` at most this (3 across a straight cut contact, up to
``1 + 2 sqrt 2 = 3.83`` across a diagonal one)."""


def fill_gaps(labels: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """Give the background gaps between touching instances back to the instances on either side.

    A background pixel goes to its nearest instance when (a) that instance is at most :data:`GAP_REACH_PX` away,
    (b) the pixel lies between two instances, ``d1 + d2 <= GAP_SUM_PX`` (eq. 2's distances), and (c) once grown,
    the pixel touches another instance (its 3x3 window holds two ids). These are the contact pixels that
    :func:`biounet.core.weights.separation_borders` cuts; the rest of the background stays background.

    The cut is many-to-one, so no rule inverts it exactly everywhere: isolated cells and contacts that end at
    the image border come back exactly; where a contact ends in background, the background pixel beside its end
    is indistinguishable from a cut one and is filled too (a touching pair of 10x10 squares: SEG 0.987); the
    DIC-HeLa gold truth, separated then filled, scores SEG 0.996-0.999 per frame.

    Examples
    --------
    >>> fill_gaps(np.array([[1, 1, 0, 0, 2, 2]] * 2, dtype=np.int32))
    array([[1, 1, 1, 2, 2, 2],
           [1, 1, 1, 2, 2, 2]], dtype=int32)
    """
    from skimage.segmentation import expand_labels

    if not labels.any():
        return labels
    grown = np.asarray(expand_labels(labels, distance=GAP_REACH_PX), dtype=np.int32)
    foreground = grown > 0
    sentinel = np.iinfo(np.int32).max
    largest = ndimage.maximum_filter(grown, size=3, mode="nearest")
    smallest = ndimage.minimum_filter(np.where(foreground, grown, sentinel), size=3, mode="nearest")
    contact = foreground & ((largest != grown) | (smallest != grown))
    d1, d2 = nearest_two_distances(labels, max_distance_px=GAP_SUM_PX)
    gap = (labels == 0) & contact & (d1 + d2 <= GAP_SUM_PX)
    return np.where(gap, grown, labels).astype(np.int32)


def instances_from_foreground(
    foreground: npt.NDArray[np.bool_], *, min_size_px: int = 16, watershed: bool = False,
    min_distance_px: int = 5,
) -> npt.NDArray[np.int32]:
    """Instances of the ``paper`` target: connected components of the foreground, gaps given back.

    Parameters
    ----------
    foreground : (H, W) bool
        Predicted cell pixels (class > 0).
    min_size_px : int
        Components smaller than this are dropped.
    watershed : bool
        Also split components at the saddles of their distance transform, seeded by its maxima at least
        ``min_distance_px`` apart (for cells the network merged).

    Returns
    -------
    (H, W) int32
        Instance ids; 4-connected components, then :func:`fill_gaps`.
    """
    _check_mask(foreground, "foreground")
    if min_size_px < 0:
        raise ValueError(f"min_size_px must be >= 0, got {min_size_px}")
    labels = _drop_small(ndimage.label(foreground)[0].astype(np.int32), min_size_px)
    if watershed and labels.any():
        labels = _split_by_watershed(labels > 0, min_distance_px)
    return fill_gaps(_sequential(labels))


def split_seeds(seeds: npt.NDArray[np.integer], prominence: float) -> npt.NDArray[np.int32]:
    """Seeds cut at the necks of their distance transform: two touching nuclei whose interiors join through a
    neck are two maxima of the distance to the seed's edge. Every regional maximum of the h-maximum transform
    (Soille 2003, sec. 6.3.4; ``h = prominence`` times the seed's largest distance) seeds a part: a peak that rises
    less than ``h`` above its saddle with a higher one joins that one's plateau. A watershed of the negated
    distance within the seed draws the parts. Scale-free, so one setting serves every cell size. Labels ``1..N``
    in the order of the seeds; ``prominence`` 0 returns ``seeds`` unchanged.

    >>> two = np.zeros((9, 17), np.int32)
    >>> two[1:8, 1:8] = two[1:8, 9:16] = two[4, 8] = 1      # two squares joined by a one-pixel neck
    >>> np.unique(split_seeds(two, 0.3)).tolist()
    [0, 1, 2]
    """
    from skimage.morphology import local_maxima, reconstruction
    from skimage.segmentation import watershed

    labels = np.asarray(seeds, dtype=np.int32)
    if prominence <= 0 or not labels.any():
        return labels
    out = np.zeros_like(labels)
    next_id = 1
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        mask = labels[box] == index
        distance = ndimage.distance_transform_edt(np.pad(mask, 1))[(slice(1, -1),) * mask.ndim]
        relative = distance / distance.max()
        flooded = reconstruction(np.maximum(relative - prominence, 0), relative, method="dilation")
        markers = ndimage.label(local_maxima(flooded) & mask, structure=np.ones((3,) * mask.ndim))[0]
        parts = watershed(-distance, markers, mask=mask) if markers.max() > 1 else mask.astype(np.int32)
        out[box][mask] = parts[mask] + next_id - 1
        next_id += int(parts.max())
    return out


def instances_from_boundary(
    interior: npt.NDArray[np.float32], boundary: npt.NDArray[np.float32], *, seed_threshold: float = 0.5,
    min_size_px: int = 16, split_prominence: float = 0.0, background_bias: float = 1.0,
) -> npt.NDArray[np.int32]:
    """Instances of the ``boundary`` target: interiors grown over the boundary band by a seeded watershed.

    Parameters
    ----------
    interior, boundary : (H, W) float
        Probabilities of the interior and boundary classes (or 0/1 maps).
    seed_threshold : float
        Seeds are the connected components of ``interior > seed_threshold``.
    min_size_px : int
        Seeds smaller than this are dropped.
    split_prominence : float
        Seeds are cut at their necks (:func:`split_seeds`); 0: not cut.
    background_bias : float
        The background's probability counts this many times against the cell classes' (1: the arg-max;
        :attr:`InstanceParams.background_bias`).

    Returns
    -------
    (H, W) int32
        Each seed flooded over the foreground (the pixels where interior or boundary is the most probable class,
        the background's probability multiplied by ``background_bias``),
        across the boundary band breadth-first, so that a pixel of the band goes to its geodesically nearest seed.
        Flooding by the arg-max band rather than by rising boundary probability, and over the arg-max foreground
        rather than ``interior + boundary > 0.5``, finds more nuclei whole, on validation and held-out images
        alike (``experiments/boundary_flooding.py``).
    """
    from skimage.segmentation import watershed

    if interior.shape != boundary.shape or interior.ndim not in (2, 3):
        raise ValueError(f"interior {interior.shape} and boundary {boundary.shape} must be 2-D or 3-D of the same "
                         "shape")
    background = background_bias * (1.0 - interior - boundary)  # the softmax's third class (0/1 maps: 1 outside)
    foreground = np.maximum(interior, boundary) > background
    band = (boundary > np.maximum(interior, background)).astype(np.float64)
    seeds = ndimage.label(interior > seed_threshold)[0].astype(np.int32)
    seeds = _drop_small(split_seeds(seeds, split_prominence), min_size_px)
    if not seeds.any():
        return np.zeros(interior.shape, np.int32)
    flooded = watershed(band, markers=seeds, mask=foreground | (seeds > 0), connectivity=1)
    return _sequential(flooded)


def instances_from_distance(
    foreground: npt.NDArray[np.bool_], distance: npt.NDArray[np.float32], *, seed_threshold: float = 0.5,
    min_size_px: int = 16,
) -> npt.NDArray[np.int32]:
    """Instances of the ``distance`` target: watershed of the negated distance from its high regions.

    Parameters
    ----------
    foreground : (H, W) bool
        Predicted cell pixels.
    distance : (H, W) float
        Predicted normalised distance to the cell outline (1 at a cell's centre).
    seed_threshold : float
        Seeds are the connected components of ``distance > seed_threshold * m`` inside the foreground, ``m`` the
        largest predicted distance of the foreground component the pixel lies in: relative, so a network that
        predicts the distance map too flat (early in training) still gives one seed per cell.
    min_size_px : int
        Seeds and instances smaller than this are dropped.

    Returns
    -------
    (H, W) int32
        Instance ids; the gaps the ``paper`` classes cut are given back (:func:`fill_gaps`).
    """
    from skimage.segmentation import watershed

    _check_mask(foreground, "foreground")
    if distance.shape != foreground.shape:
        raise ValueError(f"distance {distance.shape} and foreground {foreground.shape} must have the same shape")
    components, count = ndimage.label(foreground)
    peak = np.zeros(count + 1)
    if count:
        peak[1:] = ndimage.maximum(distance, components, index=np.arange(1, count + 1))
    high = foreground & (distance > seed_threshold * peak[components])
    seeds = _drop_small(ndimage.label(high)[0].astype(np.int32), min_size_px)
    if not seeds.any():
        return np.zeros(foreground.shape, np.int32)
    flooded = watershed(-np.asarray(distance, dtype=np.float64), markers=seeds, mask=foreground, connectivity=1)
    return fill_gaps(_sequential(_drop_small(np.asarray(flooded, dtype=np.int32), min_size_px)))


SEEDED_BY_OUTPUTS: tuple[str, ...] = ("distance", "stardist")
"""Targets whose instances need the outputs beyond the classes (the distance map; the probability and rays)."""


def split_outputs(probs: npt.NDArray[np.float32], target: str,
                  ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
    """Class probabilities and, for a ``distance`` model, its distance map (the last channel); for a ``stardist``
    model, its object probability and radial distances ``(1 + n_rays, H, W)``; for an ``affinities`` model, its
    affinities ``(k, H, W)``."""
    if target == "affinities":
        if probs.shape[0] != 2 + len(OFFSETS):
            raise ValueError(f"an affinities model predicts 2 classes and {len(OFFSETS)} affinities, got "
                             f"{probs.shape[0]} channels")
        return probs[:2], probs[2:]
    if target == "stardist":
        if probs.shape[0] < BOUNDARY_CLASS + 5:
            raise ValueError(f"a stardist model predicts 3 classes, an object probability and rays, got "
                             f"{probs.shape[0]} channels")
        return probs[: BOUNDARY_CLASS + 1], probs[BOUNDARY_CLASS + 1:]
    if target == "distance":
        if probs.shape[0] < 3:
            raise ValueError(f"a distance model predicts classes and a distance map, got {probs.shape[0]} channels")
        return probs[:-1], probs[-1]
    return probs, None


def cell_foreground(probs: npt.NDArray[np.float32], background_bias: float = 1.0) -> npt.NDArray[np.bool_]:
    """Pixels where a cell class (1..K-1) of ``probs`` ``(K, ...)`` is more probable than ``background_bias`` times
    the background (class 0); ``background_bias`` 1 is the arg-max's foreground.

    A loss that weights class ``c`` by ``w_c`` makes the network's probabilities those of a prior tilted by ``w_c``
    (Saerens et al. 2002, Neural Computation 14:21-41); the class balance of eq. 1 tilts it towards the rare cell
    classes, which widens every cell by a pixel or two. The bias that draws outlines best is chosen on the
    validation images (:func:`biounet.evaluation.validation.instance_choice`).

    >>> cell_foreground(np.array([[0.6, 0.3], [0.4, 0.7]]), 2.0)  # (K=2, W=2): 0.4 > 2 * 0.6? 0.7 > 2 * 0.3
    array([False,  True])
    """
    if probs.shape[0] < 2:
        raise ValueError(f"probs must hold a background and at least one cell class, got {probs.shape[0]} channel(s)")
    return np.asarray(probs[1:].max(0) > background_bias * probs[0])


def instances_from_probabilities(
    probs: npt.NDArray[np.float32], *, target: str = "paper", params: InstanceParams | SegmentParams | None = None,
    distance: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.int32]:
    """Instances from a network's class probabilities ``(K, H, W)``, the way its ``target`` asks for.

    ``paper``: foreground = arg-max > 0. ``boundary``: classes (background, interior, boundary). ``distance``:
    the predicted distance map is also needed: ``distance``, or the last channel of ``probs``
    (:func:`split_outputs`). :data:`MEMBRANES`: segments of the class-1 (membrane) map, with ``params`` a
    :class:`~biounet.inference.segments.SegmentParams`.
    """
    if target == MEMBRANES:
        return _segments(probs, params)
    params = params or InstanceParams()
    if not isinstance(params, InstanceParams):
        raise TypeError(f"target {target!r} takes InstanceParams, got {type(params).__name__}")
    if target in SEEDED_BY_OUTPUTS and distance is None:
        probs, distance = split_outputs(probs, target)
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if probs.ndim not in (3, 4):
        raise ValueError(f"probs must be (K, H, W) or a volume's (K, Z, Y, X), got shape {probs.shape}")
    if target == "stardist":
        return _star_instances(probs, distance, params)
    if target == "boundary":
        if probs.shape[0] != BOUNDARY_CLASS + 1:
            raise ValueError(f"a boundary model predicts 3 classes, got {probs.shape[0]}")
        return instances_from_boundary(probs[1], probs[BOUNDARY_CLASS], seed_threshold=params.seed_threshold,
                                       min_size_px=params.min_size_px, split_prominence=params.split_prominence,
                                       background_bias=params.background_bias)
    foreground = cell_foreground(probs, params.background_bias)
    if target == "distance":
        if distance is None:
            raise ValueError("the distance target needs the predicted distance map")
        return instances_from_distance(foreground, distance, seed_threshold=params.seed_threshold,
                                       min_size_px=params.min_size_px)
    return instances_from_foreground(foreground, min_size_px=params.min_size_px, watershed=params.watershed)


def instances_from_labels(labels: npt.NDArray[np.integer], *, target: str | None = None,
                          params: InstanceParams | None = None) -> npt.NDArray[np.int32]:
    """Instances from a predicted class map (``<stem>.tif``): ``boundary`` classes if ``target`` says so, or, with
    ``target=None``, if the map holds class 2; else the ``paper`` way (foreground = class > 0).

    >>> instances_from_labels(np.array([[1, 1, 2, 2, 1, 1]] * 3), params=InstanceParams(min_size_px=0))
    array([[1, 1, 1, 2, 2, 2],
           [1, 1, 1, 2, 2, 2],
           [1, 1, 1, 2, 2, 2]], dtype=int32)
    """
    params = params or InstanceParams()
    labels = np.asarray(labels)
    if target is None:
        target = "boundary" if labels.max(initial=0) == BOUNDARY_CLASS else "paper"
    if target == "boundary":
        return instances_from_boundary((labels == 1).astype(np.float32), (labels == BOUNDARY_CLASS).astype(np.float32),
                                       seed_threshold=params.seed_threshold, min_size_px=params.min_size_px,
                                       split_prominence=params.split_prominence)
    return instances_from_foreground(labels > 0, min_size_px=params.min_size_px, watershed=params.watershed)


def _split_by_watershed(mask: npt.NDArray[np.bool_], min_distance_px: int) -> npt.NDArray[np.int32]:
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    distance = ndimage.distance_transform_edt(mask)
    components, _ = ndimage.label(mask)
    peaks = peak_local_max(distance, min_distance=min_distance_px, labels=components, exclude_border=False)
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return np.asarray(watershed(-distance, markers, mask=mask), dtype=np.int32)


def _star_instances(probs: npt.NDArray[np.float32], star: npt.NDArray[np.float32] | None,
                    params: InstanceParams) -> npt.NDArray[np.int32]:
    """A stardist model's instances: polygons kept by suppression, drawn or grown over the predicted foreground
    (interior or boundary) by a watershed on the boundary probability; objects under ``min_size_px`` dropped."""
    if star is None or star.ndim != 3 or star.shape[0] < 4:
        raise ValueError("the stardist target needs the object probability and radial distances")
    star_params = StarParams(prob_threshold=min(max(params.seed_threshold, 1e-3), 1 - 1e-3),
                             overlap_threshold=params.overlap_threshold, masks=params.masks)
    foreground = probs[1] + probs[BOUNDARY_CLASS] > probs[0]
    labels = star_instances(star[0], np.moveaxis(star[1:], 0, -1), star_params, foreground=foreground,
                            elevation=probs[BOUNDARY_CLASS])
    return _sequential(_drop_small(labels, params.min_size_px))


def _segments(probs: npt.NDArray[np.float32] | None, params: InstanceParams | SegmentParams | None,
              ) -> npt.NDArray[np.int32]:
    """A membrane model's segments: the multicut's of its membrane map, or, for an ``affinities`` model (its
    affinities after the two classes), the mutex watershed's."""
    links = len(OFFSETS)
    if probs is None or probs.ndim != 3 or probs.shape[0] not in (2, 2 + links):
        raise ValueError("segments of a membrane model need its probabilities (cell, membrane[, "
                         f"{links} affinities]), got {None if probs is None else probs.shape}")
    if params is not None and not isinstance(params, SegmentParams):
        raise TypeError(f"segments take SegmentParams, got {type(params).__name__}")
    if probs.shape[0] == 2 + links:
        return segments_from_affinities(probs[2:], probs[1], params or SegmentParams())
    return segments_from_membranes(probs[1], params or SegmentParams())


def post_processing_of(payload: Mapping[str, Any], name: str = "the model",
                       ) -> tuple[str | None, InstanceParams | SegmentParams]:
    """What ``--instances`` makes of a checkpoint's outputs: the name of its post-processing (its ``target``, or
    :data:`MEMBRANES` for a membrane model) and the settings its training run chose (defaults where none).

    Raises
    ------
    ValueError
        If the model predicts classes that are neither cells nor membranes (no instances to make); the message
        names its classes.
    """
    task = payload.get("task")
    if task == MEMBRANES:
        return MEMBRANES, SegmentParams(**(payload.get("segment_params") or {}))
    if task == "classes":
        names = ", ".join(map(str, payload.get("class_names") or [])) or "several classes"
        raise ValueError(f"{name} predicts the classes {names}, not cells or membranes: it cannot give instances "
                         "(train on instance labels or on membranes for that)")
    return payload.get("target"), InstanceParams(**(payload.get("instance_params") or {}))


FROM_PROBABILITIES: tuple[str, ...] = ("boundary", *SEEDED_BY_OUTPUTS)
"""Targets whose instances are made from the probabilities, as the validation images chose their settings: a
``boundary`` model's seeds are ``interior > seed_threshold``, which its arg-max labels cannot give."""


def needs_probabilities(target: str | None) -> bool:
    """Whether the instances of a ``target`` are made from the probabilities (not from the class labels alone)."""
    return target in (*FROM_PROBABILITIES, MEMBRANES)


def instances_from_outputs(labels: npt.NDArray[np.integer], probabilities: npt.NDArray[np.float32] | None, *,
                           target: str | None, params: InstanceParams | SegmentParams = InstanceParams(),
                           watershed: bool = False) -> npt.NDArray[np.int32]:
    """The instances of one plane as ``biounet predict --instances`` makes them from what prediction gave: from the
    probabilities for the targets of :data:`FROM_PROBABILITIES` (the same function the validation images chose
    their settings with) and the segments of a membrane model (:data:`MEMBRANES`), else from the class labels.
    ``watershed`` adds the seeded watershed split to ``params``."""
    if target == MEMBRANES:
        return _segments(probabilities, params)
    if not isinstance(params, InstanceParams):
        raise TypeError(f"target {target!r} takes InstanceParams, got {type(params).__name__}")
    if watershed:
        params = replace(params, watershed=True)
    if target in FROM_PROBABILITIES and probabilities is not None:
        return instances_from_probabilities(probabilities, target=target, params=params)
    return instances_from_labels(labels, target=target, params=params)


__all__ = [
    "FROM_PROBABILITIES",
    "MEMBRANES",
    "SEEDED_BY_OUTPUTS",
    "InstanceParams",
    "cell_foreground",
    "fill_gaps",
    "instances_from_boundary",
    "instances_from_distance",
    "instances_from_foreground",
    "instances_from_labels",
    "instances_from_outputs",
    "instances_from_probabilities",
    "needs_probabilities",
    "post_processing_of",
    "split_outputs",
]
