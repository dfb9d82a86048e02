"""Affinities: for every pixel and each of a few offsets, whether the pixel and its partner at that offset belong to
the same cell (Wolf et al. 2020).

A membrane network says where boundaries are; an affinity network says, for pairs of pixels near and far, whether
a boundary lies between them. Short-range affinities (offsets of one pixel) draw the boundaries; long-range ones
(9 and 27 pixels) say that two pixels across a faint or broken membrane still belong to different cells, which the
mutex watershed (:func:`biounet.inference.segments.segments_from_affinities`) uses as repulsion. Pure NumPy.

References
----------
.. [1] Wolf et al. (2020). The Mutex Watershed and its Objective: Efficient, Parameter-Free Graph Partitioning.
       IEEE TPAMI 43(10):3724-3738. arXiv:1904.12654 (ISBI 2012: nearest and long-range offsets up to 27 px).
.. [2] Lee, Zung, Li, Jain, Seung (2017). Superhuman accuracy on the SNEMI3D connectomics challenge.
       arXiv:1706.00120 (affinities of pixel pairs at several offsets as the network's target).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Offset = tuple[int, int]

OFFSETS: tuple[Offset, ...] = (
    (-1, 0), (0, -1), (-3, 0), (0, -3), (-9, 0), (0, -9), (-9, -9), (9, -9), (-27, 0), (0, -27),
)
"""The ``(dy, dx)`` offsets an affinity model predicts: the two nearest neighbours first (the attractive edges of
the mutex watershed), then long-range ones along the axes and diagonals up to 27 px (Wolf et al.'s ISBI 2012
range, fewer directions, for a CPU budget)."""


def check_offsets(offsets: Sequence[Sequence[int]]) -> tuple[Offset, ...]:
    """``offsets`` as a tuple of ``(dy, dx)`` integer pairs whose first two are ``(-1, 0)`` and ``(0, -1)``.

    Raises
    ------
    ValueError
        If an offset is not two integers, is (0, 0), or the nearest neighbours do not come first.
    """
    pairs = tuple((int(dy), int(dx)) for dy, dx in offsets)
    if any(pair == (0, 0) for pair in pairs) or any(len(o) != 2 for o in offsets):
        raise ValueError(f"offsets must be non-zero (dy, dx) pairs, got {list(offsets)}")
    if pairs[:2] != ((-1, 0), (0, -1)):
        raise ValueError(f"the first two offsets must be the nearest neighbours (-1, 0), (0, -1), got {pairs[:2]}")
    return pairs


def _shifted(array: npt.NDArray[np.generic], dy: int, dx: int, fill: object) -> npt.NDArray[np.generic]:
    """``array`` read at ``(y + dy, x + dx)`` for every ``(y, x)``; ``fill`` where that is outside."""
    out = np.full_like(array, fill)
    height, width = array.shape
    ys, yt = slice(max(dy, 0), height + min(dy, 0)), slice(max(-dy, 0), height + min(-dy, 0))
    xs, xt = slice(max(dx, 0), width + min(dx, 0)), slice(max(-dx, 0), width + min(-dx, 0))
    out[yt, xt] = array[ys, xs]
    return out


def affinities(ids: npt.NDArray[np.integer], offsets: Sequence[Offset] = OFFSETS, *,
               annotated: npt.NDArray[np.bool_] | None = None) -> npt.NDArray[np.float32]:
    """``(H, W, K)`` affinity targets of a segmentation: 1 where a pixel and its partner at offset ``k`` lie in the
    same segment (id > 0), 0 where they do not (or either is boundary, id 0), -1 where the partner is outside the
    image or either pixel is unannotated (no target).

    Examples
    --------
    >>> ids = np.array([[1, 1, 0, 2]])
    >>> affinities(ids, [(-1, 0), (0, -1)])[..., 1].tolist()   # each pixel with its left neighbour
    [[-1.0, 1.0, 0.0, 0.0]]
    """
    labels = np.asarray(ids)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"ids must be a 2-D integer label image, got {labels.dtype} of shape {labels.shape}")
    valid = np.ones(labels.shape, bool) if annotated is None else np.asarray(annotated, bool)
    out = np.empty((*labels.shape, len(offsets)), dtype=np.float32)
    for k, (dy, dx) in enumerate(check_offsets(offsets) if len(offsets) >= 2 else offsets):
        partner = _shifted(labels, dy, dx, -1)
        partner_valid = _shifted(valid, dy, dx, False)
        same = (labels == partner) & (labels > 0)
        out[..., k] = np.where(valid & partner_valid & (partner >= 0), same.astype(np.float32), -1.0)
    return out


__all__ = ["OFFSETS", "Offset", "affinities", "check_offsets"]
