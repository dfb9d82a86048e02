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

import numba
import numpy as np
import numpy.typing as npt
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


@numba.njit(cache=True, nogil=True)
def _inside(qy: float, qx: float, dist: npt.NDArray[np.float32], sin: npt.NDArray[np.float64],
            cos: npt.NDArray[np.float64]) -> bool:  # pragma: no cover - compiled
    """Whether the point ``(qy, qx)``, relative to the centre, lies in the star polygon of ``dist``: inside the
    triangle of the centre and the two vertices of its angular sector (edges included)."""
    if qy == 0.0 and qx == 0.0:
        return True
    n = dist.size
    step = 2 * np.pi / n
    angle = np.arctan2(qy, qx)
    if angle < 0:
        angle += 2 * np.pi
    k = int(angle / step) % n
    k1 = (k + 1) % n
    ay, ax = dist[k] * sin[k], dist[k] * cos[k]
    by, bx = dist[k1] * sin[k1], dist[k1] * cos[k1]
    ey, ex = by - ay, bx - ax
    centre_side = ex * (-ay) - ey * (-ax)
    if centre_side == 0.0:  # a degenerate sector: nothing but the centre
        return False
    return (ex * (qy - ay) - ey * (qx - ax)) * centre_side >= 0.0


@numba.njit(cache=True, nogil=True)
def _box(cy: int, cx: int, dist: npt.NDArray[np.float32], sin: npt.NDArray[np.float64],
         cos: npt.NDArray[np.float64], height: int, width: int) -> tuple[int, int, int, int]:  # pragma: no cover
    """The polygon's bounding box ``y0, x0, y1, x1`` (end exclusive), clipped to the image."""
    ys, xs = dist * sin, dist * cos
    return (max(cy + int(np.floor(ys.min())), 0), max(cx + int(np.floor(xs.min())), 0),
            min(cy + int(np.ceil(ys.max())) + 1, height), min(cx + int(np.ceil(xs.max())) + 1, width))


@numba.njit(cache=True, nogil=True)
def _overlap(i: int, j: int, centres: npt.NDArray[np.int64], dists: npt.NDArray[np.float32],
             boxes: npt.NDArray[np.int64], sin: npt.NDArray[np.float64],
             cos: npt.NDArray[np.float64]) -> int:  # pragma: no cover - compiled
    """Pixels inside polygon ``i`` (and, for ``j >= 0``, inside polygon ``j`` too)."""
    y0, x0, y1, x1 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
    if j >= 0:
        y0, x0 = max(y0, boxes[j, 0]), max(x0, boxes[j, 1])
        y1, x1 = min(y1, boxes[j, 2]), min(x1, boxes[j, 3])
    count = 0
    for y in range(y0, y1):
        for x in range(x0, x1):
            if _inside(y - centres[i, 0], x - centres[i, 1], dists[i], sin, cos) and (
                    j < 0 or _inside(y - centres[j, 0], x - centres[j, 1], dists[j], sin, cos)):
                count += 1
    return count


@numba.njit(cache=True, nogil=True)
def _suppress(centres: npt.NDArray[np.int64], dists: npt.NDArray[np.float32], threshold: float, height: int,
              width: int, sin: npt.NDArray[np.float64], cos: npt.NDArray[np.float64],
              ) -> npt.NDArray[np.int64]:  # pragma: no cover - compiled
    """Greedy suppression with the kept polygons filed by the bucket of their centre: two polygons can only
    overlap when their centres are closer than twice the longest ray, so with buckets that wide a candidate is
    compared with the kept polygons of the 3 x 3 buckets around its own, never with all of them."""
    m = centres.shape[0]
    side = max(16, int(np.ceil(2 * dists.max())) + 1)
    rows, cols = height // side + 1, width // side + 1
    head = np.full(rows * cols, -1, dtype=np.int64)  # the last kept polygon filed in each bucket
    below = np.full(m, -1, dtype=np.int64)  # the kept polygon filed before it in the same bucket
    boxes = np.zeros((m, 4), dtype=np.int64)
    areas = np.zeros(m, dtype=np.int64)
    kept = np.zeros(m, dtype=np.int64)
    n_kept = 0
    for i in range(m):
        boxes[i] = _box(centres[i, 0], centres[i, 1], dists[i], sin, cos, height, width)
        areas[i] = _overlap(i, -1, centres, dists, boxes, sin, cos)
        if areas[i] == 0:
            continue
        row, col = centres[i, 0] // side, centres[i, 1] // side
        suppressed = False
        for near_row in range(max(row - 1, 0), min(row + 2, rows)):
            for near_col in range(max(col - 1, 0), min(col + 2, cols)):
                j = head[near_row * cols + near_col]
                while j >= 0 and not suppressed:
                    if not (boxes[j, 0] >= boxes[i, 2] or boxes[j, 2] <= boxes[i, 0] or boxes[j, 1] >= boxes[i, 3]
                            or boxes[j, 3] <= boxes[i, 1]):
                        inter = _overlap(i, j, centres, dists, boxes, sin, cos)
                        suppressed = inter > threshold * min(areas[i], areas[j])
                    j = below[j]
        if not suppressed:
            kept[n_kept] = i
            n_kept += 1
            bucket = row * cols + col
            below[i] = head[bucket]
            head[bucket] = i
    return kept[:n_kept]


@numba.njit(cache=True, nogil=True)
def _paint(labels: npt.NDArray[np.int32], centres: npt.NDArray[np.int64], dists: npt.NDArray[np.float32],
           order: npt.NDArray[np.int64], sin: npt.NDArray[np.float64],
           cos: npt.NDArray[np.float64]) -> None:  # pragma: no cover - compiled
    height, width = labels.shape
    for i in order:
        y0, x0, y1, x1 = _box(centres[i, 0], centres[i, 1], dists[i], sin, cos, height, width)
        for y in range(y0, y1):
            for x in range(x0, x1):
                if _inside(y - centres[i, 0], x - centres[i, 1], dists[i], sin, cos):
                    labels[y, x] = i + 1


def _trig(n_rays: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    angles = ray_angles(n_rays)
    return np.sin(angles), np.cos(angles)


def polygon_pixels(centre: npt.ArrayLike, distances: npt.ArrayLike, shape: tuple[int, int],
                   ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Row and column indices of the pixels whose centres lie inside the polygon of ``distances`` (vertex k at
    ``centre + d_k (sin, cos)(2 pi k / n)``) around ``centre``, within ``shape``."""
    dist = np.asarray(distances, dtype=np.float32)[None]
    labels = np.zeros(shape, dtype=np.int32)
    _paint(labels, np.asarray(centre, dtype=np.int64).reshape(1, 2), dist, np.zeros(1, np.int64),
           *_trig(dist.shape[1]))
    return np.nonzero(labels)


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
    smaller of the two areas (areas and intersections counted in pixels). ``prob`` is ``(H, W)``, ``distances``
    ``(H, W, n_rays)``.

    Examples
    --------
    >>> prob = np.zeros((9, 9)); prob[4, 4], prob[4, 5] = 0.9, 0.8
    >>> dist = np.full((9, 9, 8), 3.0)
    >>> suppress(prob, dist, StarParams(grid=1)).centres.tolist()   # the second overlaps the first almost entirely
    [[4, 4]]
    """
    prob, distances = np.asarray(prob), np.asarray(distances)
    if prob.ndim != 2 or distances.shape[:2] != prob.shape or distances.ndim != 3:
        raise ValueError(f"prob must be (H, W) and distances (H, W, n_rays), got {prob.shape} and {distances.shape}")
    candidates = _candidates(prob, distances, params.prob_threshold, params.grid)
    if len(candidates.scores) == 0:
        return candidates
    kept = _suppress(candidates.centres, candidates.distances, params.overlap_threshold, prob.shape[0],
                     prob.shape[1], *_trig(distances.shape[2]))
    return Polygons(candidates.centres[kept], candidates.distances[kept], candidates.scores[kept])


def draw_polygons(polygons: Polygons, shape: tuple[int, int], *, scale: float = 1.0) -> npt.NDArray[np.int32]:
    """Instance labels ``1..k`` of the polygons (radii times ``scale``), the least probable painted first so that
    the most probable wins where two overlap (StarDist's ``polygons_to_label``)."""
    labels = np.zeros(shape, dtype=np.int32)
    if len(polygons.scores):
        order = np.argsort(polygons.scores, kind="stable").astype(np.int64)
        distances = (polygons.distances * scale).astype(np.float32)
        _paint(labels, polygons.centres.astype(np.int64), distances, order, *_trig(distances.shape[1]))
    return labels


def watershed_from_markers(polygons: Polygons, foreground: npt.NDArray[np.bool_],
                           elevation: npt.NDArray[np.floating], *, core: float = 0.5) -> npt.NDArray[np.int32]:
    """Instances grown from each kept polygon's core (the polygon shrunk to ``core`` of its radii) over
    ``foreground`` by a watershed on ``elevation`` (e.g. the network's boundary probability).

    Every polygon gives exactly one object, and no two markers merge: the mask follows the network's
    pixel-wise foreground instead of the polygon's straight edges. Markers are painted most probable last,
    and a marker's centre pixel always belongs to it, so a kept detection is never lost.
    """
    markers = draw_polygons(polygons, foreground.shape, scale=core)
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
