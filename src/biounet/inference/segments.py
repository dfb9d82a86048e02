"""Segments from a membrane probability map: cells that tile the image (EM, plant tissue), not a map to threshold.

The pipeline of Beier et al. (2017) on one 2D plane of a membrane (boundary) probability map:

1. :func:`oversegment`: a seeded watershed whose seeds are the maxima of the smoothed distance transform of the
   thresholded map: many fragments, few of them spanning a membrane;
2. :func:`agglomerate`: the region adjacency graph of the fragments, each edge weighted by the mean membrane
   probability along it, partitioned by a multicut (Kernighan-Lin warm-started by greedy additive contraction);
   a gap in a membrane does not merge two cells whose shared boundary is strong elsewhere, since the edge
   weighs the whole boundary;
3. :func:`separate`: 0-valued boundary pixels between the segments (as the ISBI labels have), thickened toward
   the network's own membrane width by a topology-preserving warp (:func:`biounet.core.topology.warp_toward`), so
   that the segments keep their topology and the membrane pixels agree with the map.

The graph part uses python-elf and its C++ backend bioimage-cpp (``pip install 'biounet[segments]'``), imported
only here and only when called.

References
----------
.. [1] Beier et al. (2017). Multicut brings automated neurite segmentation closer to human performance. Nature
       Methods 14:101-102. doi:10.1038/nmeth.4151
.. [2] Arganda-Carreras et al. (2015). Crowdsourcing the creation of image segmentation algorithms for
       connectomics. Front. Neuroanat. 9:142. doi:10.3389/fnana.2015.00142
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from biounet.core.affinities import OFFSETS, Offset, check_offsets
from biounet.core.extras import require
from biounet.core.topology import warp_toward

MAP_LEVELS = 1024
"""The map is read in steps of ``1 / MAP_LEVELS``: differences in its last bits, such as the overlap-tile
prediction's with another tile size or another CPU's kernels (1e-7 here), then almost never change a segment."""

EXTRA = "segments"
"""The pip extra that installs the graph libraries (``pip install 'biounet[segments]'``)."""


@dataclass(frozen=True)
class SegmentParams:
    """Settings of :func:`segments_from_membranes`; a membrane run picks them on its validation images by Rand
    error and stores them with the model (``segment_params``).

    Attributes
    ----------
    threshold : float
        Membrane probability above which a pixel is boundary for the distance transform that seeds fragments.
    sigma_seeds : float
        Gaussian smoothing (pixels) of that distance transform before its maxima become seeds: larger, fewer
        fragments.
    min_size_px : int
        Fragments smaller than this are flooded by their neighbours.
    bias : float
        Multicut boundary bias in (0, 1): an edge of mean membrane probability ``p`` costs
        ``log((1 - p) / p) + log((1 - bias) / bias)`` to cut; above 0.5 cuts more (more, smaller segments).
    membrane_threshold : float
        The output's boundaries widen over pixels whose membrane probability is above this (:func:`separate`):
        higher, thinner boundaries.
    """

    threshold: float = 0.5
    sigma_seeds: float = 2.0
    min_size_px: int = 25
    bias: float = 0.5
    membrane_threshold: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.sigma_seeds < 0:
            raise ValueError(f"sigma_seeds must be >= 0, got {self.sigma_seeds}")
        if self.min_size_px < 0:
            raise ValueError(f"min_size_px must be >= 0, got {self.min_size_px}")
        if not 0.0 < self.bias < 1.0:
            raise ValueError(f"bias must be in (0, 1), got {self.bias}")
        if not 0.0 < self.membrane_threshold <= 1.0:
            raise ValueError(f"membrane_threshold must be in (0, 1], got {self.membrane_threshold}")


def require_elf() -> ModuleType:
    """The ``elf.segmentation`` package, or a one-line error naming the pip extra that installs it."""
    return require("elf.segmentation", "a membrane model's segments", extra=EXTRA, package="python-elf")


def _check_map(membrane_prob: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    array = np.asarray(membrane_prob)
    if array.ndim != 2:
        raise ValueError(f"membrane_prob must be a 2-D (H, W) map, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"membrane_prob must be a float probability map, got dtype {array.dtype}")
    if not np.all(np.isfinite(array)) or array.min(initial=0) < 0 or array.max(initial=0) > 1:
        raise ValueError("membrane_prob must hold finite probabilities in [0, 1]")
    return (np.round(array.astype(np.float64) * MAP_LEVELS) / MAP_LEVELS).astype(np.float32)


def oversegment(membrane_prob: npt.NDArray[np.floating], params: SegmentParams = SegmentParams(),
                ) -> npt.NDArray[np.uint32]:
    """Fragments ``(H, W) uint32`` (1..n, every pixel assigned) of a distance-transform watershed.

    Seeds: maxima of the distance transform of ``membrane_prob <= threshold``, smoothed by ``sigma_seeds``;
    height map: 0.9 the smoothed map plus 0.1 the inverted distance (elf's ``distance_transform_watershed``).
    """
    segmentation = require_elf()
    prob = _check_map(membrane_prob)
    fragments, _ = segmentation.watershed.distance_transform_watershed(
        prob, params.threshold, params.sigma_seeds, min_size=params.min_size_px)
    return fragments.astype(np.uint32)


def agglomerate(fragments: npt.NDArray[np.integer], membrane_prob: npt.NDArray[np.floating],
                params: SegmentParams = SegmentParams()) -> npt.NDArray[np.uint32]:
    """Fragments merged into segments by a multicut on their region adjacency graph (every pixel assigned).

    Each edge costs ``log((1 - p) / p) + log((1 - bias) / bias)`` with ``p`` the mean membrane probability along
    the shared boundary, weighted by the boundary's length (elf's ``compute_edge_costs``, scheme ``all``).
    """
    segmentation = require_elf()
    prob = _check_map(membrane_prob)
    fragments = np.asarray(fragments, dtype=np.uint32)
    if fragments.shape != prob.shape:
        raise ValueError(f"fragments {fragments.shape} and membrane_prob {prob.shape} must have the same shape")
    if fragments.max(initial=0) <= 1:
        return fragments
    rag = segmentation.features.compute_rag(fragments, n_threads=1)
    if rag.number_of_edges == 0:
        return fragments
    features = segmentation.features.compute_boundary_mean_and_length(rag, fragments, prob, n_threads=1)
    costs = segmentation.multicut.compute_edge_costs(features[:, 0], edge_sizes=features[:, 1],
                                                     weighting_scheme="all", beta=params.bias)
    nodes = segmentation.multicut.multicut_kernighan_lin(rag, costs)
    merged = segmentation.features.project_node_labels_to_pixels(rag, fragments, nodes)
    return np.asarray(merged, dtype=np.uint32) + 1  # node labels start at 0


def thin_boundaries(partition: npt.NDArray[np.integer]) -> npt.NDArray[np.bool_]:
    """Pixels to set to 0 so that no two segments touch (4-connectivity): of each 4-adjacent pair of different
    segments, the pixel of the smaller id; one pixel wide.

    >>> thin_boundaries(np.array([[1, 1, 2, 2]])).astype(int)
    array([[0, 1, 0, 0]])
    """
    labels = np.asarray(partition)
    marked = np.zeros(labels.shape, dtype=bool)
    for axis in range(labels.ndim):
        before = [slice(None)] * labels.ndim
        after = [slice(None)] * labels.ndim
        before[axis], after[axis] = slice(None, -1), slice(1, None)
        first, second = labels[tuple(before)], labels[tuple(after)]
        differ = first != second
        marked[tuple(before)] |= differ & (first < second)
        marked[tuple(after)] |= differ & (second < first)
    return marked


def separate(partition: npt.NDArray[np.integer], membrane_prob: npt.NDArray[np.floating], *,
             threshold: float = 0.5) -> npt.NDArray[np.int32]:
    """Segments ``1..N`` separated by 0-valued boundaries as wide as the map's membranes, topology kept.

    The cells of ``partition`` minus :func:`thin_boundaries` are warped toward ``membrane_prob < threshold`` by
    simple-point flips, most confident pixels first: boundaries widen where the map says membrane, narrow where
    it says cell, and no flip joins, splits, opens or closes a segment. The result is labelled by 4-connected
    components (ISBI's convention for cells), in raster order.
    """
    prob = _check_map(membrane_prob)
    labels = np.asarray(partition)
    if labels.shape != prob.shape:
        raise ValueError(f"partition {labels.shape} and membrane_prob {prob.shape} must have the same shape")
    cells = (labels > 0) & ~thin_boundaries(labels)
    warped, _, _ = warp_toward(cells, prob < threshold, np.abs(prob.astype(np.float64) - threshold))
    return ndimage.label(warped)[0].astype(np.int32)


def segments_from_membranes(membrane_prob: npt.NDArray[np.floating], params: SegmentParams = SegmentParams(),
                            ) -> npt.NDArray[np.int32]:
    """Segments ``(H, W) int32`` (1..N, 0 = boundary) of one plane of a membrane probability map: fragments
    (:func:`oversegment`), merged by a multicut (:func:`agglomerate`), separated (:func:`separate`).

    Parameters
    ----------
    membrane_prob : (H, W) float
        Membrane (boundary) probability in [0, 1], e.g. class 1 of an ISBI 2012 model.
    params : SegmentParams
        The post-processing settings (a trained model stores its own).

    Raises
    ------
    ModuleNotFoundError
        If python-elf is not installed (the message names the pip extra).
    ValueError, TypeError
        If the map is not 2-D, not float, or not in [0, 1].
    """
    fragments = oversegment(membrane_prob, params)
    return separate(agglomerate(fragments, membrane_prob, params), membrane_prob,
                    threshold=params.membrane_threshold)


MWS_STRIDES: tuple[int, int] = (2, 2)
"""The mutex watershed keeps every long-range edge of every second pixel along each axis (Wolf et al.'s strides:
the repulsions are redundant at full density, and a quarter of them costs a quarter of the time)."""


def mutex_partition(affinity: npt.NDArray[np.floating], offsets: Sequence[Offset] = OFFSETS,
                    ) -> npt.NDArray[np.uint32]:
    """A partition ``(H, W) uint32`` (every pixel assigned, ids from 1) of same-cell affinities ``(K, H, W)`` by
    the mutex watershed: nearest-neighbour pairs attract with their affinity, long-range pairs repel with one minus
    theirs, strongest first, and no merge joins two pixels under a repulsion already taken (elf's
    ``mutex_watershed``; no parameter to choose)."""
    require_elf()
    import elf.segmentation.mutex_watershed as mws

    affs = np.asarray(affinity)
    offsets = check_offsets(offsets)
    if affs.ndim != 3 or affs.shape[0] != len(offsets):
        raise ValueError(f"affinities must be (K, H, W) with K = {len(offsets)} offsets, got shape {affs.shape}")
    boundary = 1.0 - np.stack([_check_map(channel) for channel in affs])  # elf reads 1 - affinity
    partition = mws.mutex_watershed(boundary.astype(np.float32), [list(o) for o in offsets],
                                    strides=list(MWS_STRIDES), randomize_strides=False)
    return _relabel(partition)


def _relabel(partition: npt.NDArray[np.integer]) -> npt.NDArray[np.uint32]:
    """Ids 1..n in raster order of first appearance."""
    _, first, inverse = np.unique(partition.ravel(), return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return (order[inverse] + 1).reshape(partition.shape).astype(np.uint32)


def absorb_small(partition: npt.NDArray[np.integer], membrane_prob: npt.NDArray[np.floating], min_size_px: int,
                 ) -> npt.NDArray[np.uint32]:
    """``partition`` with its parts smaller than ``min_size_px`` flooded by their neighbours over the membrane map
    (a seeded watershed; the mutex watershed leaves membrane pixels as specks that belong to no cell)."""
    from skimage.segmentation import watershed

    labels = np.asarray(partition)
    sizes = np.bincount(labels.ravel())
    kept = np.where(sizes[labels] >= min_size_px, labels, 0)
    if not kept.any() or kept.all():
        return _relabel(labels if not kept.any() else kept)
    return _relabel(watershed(_check_map(membrane_prob), markers=kept))


def segments_from_affinities(affinity: npt.NDArray[np.floating], membrane_prob: npt.NDArray[np.floating],
                             params: SegmentParams = SegmentParams(), offsets: Sequence[Offset] = OFFSETS,
                             ) -> npt.NDArray[np.int32]:
    """Segments ``(H, W) int32`` (1..N, 0 = boundary) of an ``affinities`` model's plane: the mutex watershed's
    partition (:func:`mutex_partition`), its specks absorbed (``min_size_px``, :func:`absorb_small`), separated
    like a multicut's by the membrane map (:func:`separate`, ``membrane_threshold``).

    References
    ----------
    .. [1] Wolf et al. (2020). The Mutex Watershed and its Objective. IEEE TPAMI. arXiv:1904.12654
    """
    prob = _check_map(membrane_prob)
    if prob.shape != np.shape(affinity)[1:]:
        raise ValueError(f"affinities {np.shape(affinity)} and membrane_prob {prob.shape} must be (K, H, W), (H, W)")
    partition = absorb_small(mutex_partition(affinity, offsets), prob, params.min_size_px)
    return separate(partition, prob, threshold=params.membrane_threshold)


__all__ = [
    "EXTRA", "MWS_STRIDES", "SegmentParams", "absorb_small", "agglomerate", "mutex_partition", "oversegment",
    "require_elf", "segments_from_affinities", "segments_from_membranes", "separate", "thin_boundaries",
]
