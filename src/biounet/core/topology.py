"""Digital topology of 2D masks: simple points and the topology-preserving warp of one mask toward another.

A pixel is *simple* when flipping it changes no connectivity of the mask (foreground 4-connected, background
8-connected: Bertrand & Malandain 1994). Warping a mask toward a target by flipping only simple pixels keeps its
topology while matching the target wherever topology allows (Jain et al. 2010). The ISBI 2012 warping error
(:func:`biounet.evaluation.metrics.warping_error`) counts what such a warp cannot fix; :mod:`biounet.inference.segments` uses the same
warp to give segments the network's membrane width without changing which cells they separate.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
import numpy.typing as npt

# Neighbour offsets (row, col) in bit order of the 8-neighbourhood code used by the simple-point table.
_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _count_components(members: set[tuple[int, int]], steps: tuple[tuple[int, int], ...]) -> list[set[tuple[int, int]]]:
    components: list[set[tuple[int, int]]] = []
    unseen = set(members)
    while unseen:
        frontier = [unseen.pop()]
        component = set(frontier)
        while frontier:
            row, col = frontier.pop()
            for d_row, d_col in steps:
                neighbour = (row + d_row, col + d_col)
                if neighbour in unseen:
                    unseen.remove(neighbour)
                    component.add(neighbour)
                    frontier.append(neighbour)
        components.append(component)
    return components


@functools.cache
def simple_point_table() -> npt.NDArray[np.bool_]:
    """Whether the centre of a 3x3 patch is simple for (4, 8) topology, indexed by its 8-neighbour code.

    Bit ``k`` of the code is the foreground value of neighbour ``_NEIGHBOURS[k]``. The centre is simple iff
    ``T4(fg) == 1`` (one 4-component of foreground neighbours 4-adjacent to it) and ``T8(bg) == 1`` (one
    8-component of background neighbours), Bertrand & Malandain (1994). The test does not depend on the
    centre's own value, so flipping it either way is allowed by the same entry (256 entries, not 512).
    """
    four = ((-1, 0), (1, 0), (0, -1), (0, 1))
    eight = tuple((r, c) for r in (-1, 0, 1) for c in (-1, 0, 1) if (r, c) != (0, 0))
    table = np.zeros(256, dtype=np.bool_)
    for code in range(256):
        fg = {_NEIGHBOURS[k] for k in range(8) if code >> k & 1}
        bg = set(_NEIGHBOURS) - fg
        t4 = sum(1 for comp in _count_components(fg, four) if comp & set(four))
        t8 = len(_count_components(bg, eight))
        table[code] = t4 == 1 and t8 == 1
    table.flags.writeable = False
    return table


@numba.njit(cache=True)
def _neighbour_code(padded: npt.NDArray[np.uint8], row: int, col: int) -> int:
    """8-neighbour code of ``padded[row, col]`` (bit order of ``_NEIGHBOURS``); needs a 1-pixel border."""
    code = 0
    for bit, (d_row, d_col) in enumerate(((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))):
        code |= np.int64(padded[row + d_row, col + d_col]) << bit
    return code


@numba.njit(cache=True)
def _warp_simple_points(
    padded: npt.NDArray[np.uint8], rows: npt.NDArray[np.int64], cols: npt.NDArray[np.int64],
    table: npt.NDArray[np.bool_],
) -> int:
    """Flip simple mismatch pixels of ``padded`` in place, pass after pass, until a pass flips none.

    ``rows``/``cols`` (image coordinates, in processing order) are compacted in place to the pixels left
    unflipped; returns their number.
    """
    active = rows.size
    while True:
        kept = 0
        for k in range(active):
            row, col = rows[k] + 1, cols[k] + 1
            if table[_neighbour_code(padded, row, col)]:
                padded[row, col] ^= 1  # a flipped pixel now agrees with the target and never flips back
            else:
                rows[kept], cols[kept] = rows[k], cols[k]
                kept += 1
        if kept == active:
            return active
        active = kept


def warp_toward(mask: npt.NDArray[np.bool_], target: npt.NDArray[np.bool_], priority: npt.NDArray[np.floating],
                ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``mask`` warped toward ``target`` by simple-point flips; returns it and the pixels still mismatched.

    Parameters
    ----------
    mask, target : (H, W) bool
        Foreground (4-connected) is True; outside the image counts as background, as in Fiji.
    priority : (H, W) float
        Mismatched pixels are visited in decreasing ``priority`` (most confident first), ties in column-major
        order (Fiji's ``simplePointWarp2d``), pass after pass until a pass flips none.

    Returns
    -------
    warped : (H, W) bool
        Same topology as ``mask`` (the same components and holes).
    rows, cols : (M,) int64
        The mismatches left, in visiting order.

    Examples
    --------
    >>> mask = np.zeros((3, 5), bool); mask[1, 0] = mask[1, 4] = True     # two cells
    >>> warp_toward(mask, np.ones((3, 5), bool), np.ones((3, 5)))[0].astype(int)   # grown, never joined
    array([[1, 1, 1, 1, 0],
           [1, 1, 1, 0, 1],
           [1, 1, 1, 1, 0]])
    """
    if mask.shape != target.shape or mask.shape != priority.shape or mask.ndim != 2:
        raise ValueError(f"mask {mask.shape}, target {target.shape} and priority {priority.shape} must be 2-D "
                         "of one shape")
    padded = np.pad(mask, 1).astype(np.uint8)
    cols, rows = np.nonzero((mask != target).T)  # column-major, Fiji's list order
    order = np.argsort(-priority[rows, cols], kind="stable")
    rows, cols = rows[order].astype(np.int64), cols[order].astype(np.int64)
    left = _warp_simple_points(padded, rows, cols, simple_point_table())
    return padded[1:-1, 1:-1].astype(bool), rows[:left], cols[:left]


__all__ = ["simple_point_table", "warp_toward"]
