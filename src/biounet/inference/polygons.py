"""Star-convex polygons to instances: non-maximum suppression of the polygons a network predicts at every pixel
(StarDist's), and the polygons used as markers of a seeded watershed that draws each object's own outline.

A network with star-convex outputs gives, at every pixel, an object probability and ``n`` radial distances
(:mod:`biounet.core.starconvex`). :func:`suppress` keeps the most probable polygons that do not overlap a kept
one by more than ``overlap_threshold`` of the smaller polygon's area; :func:`draw_polygons` paints them (the
StarDist masks); :func:`watershed_from_markers` grows each kept polygon's core over the network's foreground,
so a detection's mask follows the predicted cell outline at pixel resolution instead of ``n`` straight edges.

References
----------
.. [1] Schmidt, Weigert, Broaddus, Myers (2018). Cell detection with star-convex polygons. MICCAI, LNCS 11071:
       265-273. doi:10.1007/978-3-030-00934-2_30 (``stardist.nms.non_maximum_suppression``)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from skimage.draw import polygon as draw_polygon
from skimage.segmentation import watershed

from biounet.core.starconvex import ray_angles

MASKS: tuple[str, ...] = ("watershed", "polygons")


class Polygons(NamedTuple):
    """Star-convex polygons: centres ``(k, 2)`` (y, x), radial distances ``(k, n_rays)``, probabilities ``(k,)``."""

    centres: npt.NDArray[np.int64]
    distances: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]


@dataclass(frozen=True)
class StarParams:
    """Thresholds of :func:`suppress`, chosen on the validation images and stored with the model.

    Attributes
    ----------
    prob_threshold : float
        Pixels whose object probability is above this propose a polygon.
    overlap_threshold : float
        A polygon is suppressed when its intersection with a kept, more probable one exceeds this fraction of
        the smaller polygon's area (StarDist's ``nms_thresh``, default 0.4).
    grid : int
        Polygons are proposed at every ``grid``-th pixel per axis (StarDist's default grid is (2, 2)): 1 / grid**2
        of the work, the same objects.
    masks : str
        ``"watershed"``: each kept polygon's core grows over the network's foreground
        (:func:`watershed_from_markers`); ``"polygons"``: the polygons themselves, as StarDist draws them.
    """

    prob_threshold: float = 0.5
    overlap_threshold: float = 0.4
    grid: int = 2
    masks: str = "watershed"

    def __post_init__(self) -> None:
        for name in ("prob_threshold", "overlap_threshold"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.grid < 1:
            raise ValueError(f"grid must be >= 1, got {self.grid}")
        if self.masks not in MASKS:
            raise ValueError(f"masks must be one of {MASKS}, got {self.masks!r}")


def polygon_pixels(centre: npt.ArrayLike, distances: npt.ArrayLike, shape: tuple[int, int],
                   ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Row and column indices of the pixels inside the polygon of ``distances`` around ``centre``, in ``shape``."""
    dist = np.asarray(distances, dtype=np.float64)
    angles = ray_angles(dist.size)
    y = float(centre[0]) + dist * np.sin(angles)  # type: ignore[index]
    x = float(centre[1]) + dist * np.cos(angles)  # type: ignore[index]
    return draw_polygon(y, x, shape=shape)


def _candidates(prob: npt.NDArray[np.floating], distances: npt.NDArray[np.floating], threshold: float,
                grid: int = 1) -> Polygons:
    on_grid = np.zeros(prob.shape, dtype=bool)
    on_grid[::grid, ::grid] = True
    rows, cols = np.nonzero((prob > threshold) & on_grid)
    order = np.argsort(-prob[rows, cols], kind="stable")
    rows, cols = rows[order], cols[order]
    return Polygons(np.stack([rows, cols], axis=1).astype(np.int64), distances[rows, cols].astype(np.float32),
                    prob[rows, cols].astype(np.float32))


def suppress(prob: npt.NDArray[np.floating], distances: npt.NDArray[np.floating],
             params: StarParams = StarParams()) -> Polygons:
    """Greedy non-maximum suppression of the polygons proposed where ``prob > prob_threshold``, most probable
    first: a polygon is kept unless its intersection with a kept one exceeds ``overlap_threshold`` of the
    smaller of the two areas. ``prob`` is ``(H, W)``, ``distances`` ``(H, W, n_rays)``.

    Examples
    --------
    >>> prob = np.zeros((9, 9)); prob[4, 4], prob[4, 5] = 0.9, 0.8
    >>> dist = np.full((9, 9, 8), 3.0)
    >>> suppress(prob, dist).centres.tolist()   # the second polygon overlaps the first almost entirely
    [[4, 4]]
    """
    prob, distances = np.asarray(prob), np.asarray(distances)
    if prob.ndim != 2 or distances.shape[:2] != prob.shape or distances.ndim != 3:
        raise ValueError(f"prob must be (H, W) and distances (H, W, n_rays), got {prob.shape} and {distances.shape}")
    candidates = _candidates(prob, distances, params.prob_threshold, params.grid)
    kept: list[int] = []
    masks: list[tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]] = []
    boxes = np.zeros((len(candidates.scores), 4), dtype=np.int64)  # y0, x0, y1, x1 of the kept polygons
    for index, (centre, dist) in enumerate(zip(candidates.centres, candidates.distances)):
        rows, cols = polygon_pixels(centre, dist, prob.shape)
        if rows.size == 0:
            continue
        box = np.array([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1])
        if kept and _overlaps_a_kept((rows, cols), box, boxes[: len(kept)], masks, params.overlap_threshold):
            continue
        boxes[len(kept)] = box
        kept.append(index)
        masks.append((rows, cols))
    return Polygons(candidates.centres[kept], candidates.distances[kept], candidates.scores[kept])


def _overlaps_a_kept(pixels: tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]], box: npt.NDArray[np.int64],
                     boxes: npt.NDArray[np.int64], masks: list[tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]],
                     threshold: float) -> bool:
    """Whether the polygon of ``pixels`` (bounding ``box``) overlaps a kept polygon by more than ``threshold`` of
    the smaller area; only kept polygons whose boxes meet ``box`` are compared."""
    near = np.flatnonzero((boxes[:, 0] < box[2]) & (boxes[:, 2] > box[0]) & (boxes[:, 1] < box[3])
                          & (boxes[:, 3] > box[1]))
    if near.size == 0:
        return False
    inside = np.zeros((box[2] - box[0], box[3] - box[1]), dtype=bool)
    inside[pixels[0] - box[0], pixels[1] - box[1]] = True
    for other in near:
        rows, cols = masks[other]
        within = (rows >= box[0]) & (rows < box[2]) & (cols >= box[1]) & (cols < box[3])
        inter = np.count_nonzero(inside[rows[within] - box[0], cols[within] - box[1]])
        if inter > threshold * min(pixels[0].size, rows.size):
            return True
    return False


def draw_polygons(polygons: Polygons, shape: tuple[int, int]) -> npt.NDArray[np.int32]:
    """Instance labels ``1..k`` of the polygons, the least probable painted first so that the most probable
    wins where two overlap (StarDist's ``polygons_to_label``)."""
    labels = np.zeros(shape, dtype=np.int32)
    for index in np.argsort(polygons.scores, kind="stable"):
        rows, cols = polygon_pixels(polygons.centres[index], polygons.distances[index], shape)
        labels[rows, cols] = index + 1
    return labels


def watershed_from_markers(polygons: Polygons, foreground: npt.NDArray[np.bool_],
                           elevation: npt.NDArray[np.floating], *, core: float = 0.5) -> npt.NDArray[np.int32]:
    """Instances grown from each kept polygon's core (the polygon shrunk to ``core`` of its radii) over
    ``foreground`` by a watershed on ``elevation`` (e.g. the network's boundary probability).

    Every polygon gives exactly one object, and no two markers merge: the mask follows the network's
    pixel-wise foreground instead of the polygon's straight edges. Markers are painted most probable last,
    and a marker's centre pixel always belongs to it, so a kept detection is never lost.
    """
    shape = foreground.shape
    markers = np.zeros(shape, dtype=np.int32)
    for index in np.argsort(polygons.scores, kind="stable"):
        rows, cols = polygon_pixels(polygons.centres[index], polygons.distances[index] * core, shape)
        markers[rows, cols] = index + 1
    centres = polygons.centres
    markers[centres[:, 0], centres[:, 1]] = np.arange(1, len(centres) + 1, dtype=np.int32)
    mask = np.asarray(foreground, dtype=bool) | (markers > 0)
    return watershed(np.asarray(elevation, dtype=np.float64), markers=markers, mask=mask).astype(np.int32)


def star_instances(prob: npt.NDArray[np.floating], distances: npt.NDArray[np.floating],
                   params: StarParams = StarParams(), *, foreground: npt.NDArray[np.bool_] | None = None,
                   elevation: npt.NDArray[np.floating] | None = None) -> npt.NDArray[np.int32]:
    """Instance labels of a star-convex model's outputs: the polygons :func:`suppress` keeps, drawn as polygons
    or grown over ``foreground`` by a watershed on ``elevation`` (``params.masks``; polygons without a foreground).
    """
    kept = suppress(prob, distances, params)
    if params.masks == "polygons" or foreground is None:
        return draw_polygons(kept, np.asarray(prob).shape)
    if len(kept.scores) == 0:
        return np.zeros(np.asarray(prob).shape, dtype=np.int32)
    return watershed_from_markers(kept, foreground, np.zeros(foreground.shape) if elevation is None else elevation)


__all__ = ["MASKS", "Polygons", "StarParams", "draw_polygons", "polygon_pixels", "star_instances", "suppress", "watershed_from_markers"]
