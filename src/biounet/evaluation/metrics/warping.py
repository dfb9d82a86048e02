"""Warping error of the ISBI 2012 challenge (Jain et al. 2010): topological disagreements (splits, mergers) left
after warping the truth toward the prediction by simple-point flips."""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
import numpy.typing as npt
from scipy import ndimage

from biounet.core.topology import warp_toward
from biounet.evaluation.metrics.checks import (
    check_2d,
    check_mask,
    check_membrane_prob,
    check_same_shape,
    check_thresholds,
)

WARPING_THRESHOLDS = np.arange(10) / 10  # 0.0, 0.1, ..., 0.9, as in Fiji's evaluation script


class WarpingScores(NamedTuple):
    """Result of :func:`warping_error`: the scores at the threshold with the smallest error."""

    error: float  # (splits + mergers) / number of pixels
    splits: int  # number of split *pixels* (not events) left after warping
    mergers: int  # number of merger *pixels* (not events) left after warping
    threshold: float


@numba.njit(cache=True)
def _cut_pixels(warped: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """Cut vertices of the 4-connected foreground pixel graph: pixels whose removal disconnects their component.

    Iterative Tarjan depth-first search, O(H W): a non-root pixel ``u`` is a cut pixel if some child ``v`` has
    ``low[v] >= disc[u]``; a root is one if it has two or more children.
    """
    height, width = warped.shape
    n_pixels = height * width
    disc = np.full(n_pixels, -1, dtype=np.int64)
    low = np.zeros(n_pixels, dtype=np.int64)
    parent = np.full(n_pixels, -1, dtype=np.int64)
    next_step = np.zeros(n_pixels, dtype=np.uint8)  # which of the 4 neighbours to try next
    stack = np.empty(n_pixels, dtype=np.int64)
    is_cut = np.zeros(n_pixels, dtype=np.bool_)
    flat = warped.ravel()
    timer = 0
    for root in range(n_pixels):
        if flat[root] == 0 or disc[root] >= 0:
            continue
        disc[root] = low[root] = timer
        timer += 1
        stack[0] = root
        depth = 1
        root_children = 0
        while depth > 0:
            node = stack[depth - 1]
            if next_step[node] < 4:
                step = next_step[node]
                next_step[node] += 1
                row, col = node // width, node % width
                if step == 0:
                    row -= 1
                elif step == 1:
                    row += 1
                elif step == 2:
                    col -= 1
                else:
                    col += 1
                if row < 0 or row >= height or col < 0 or col >= width or flat[row * width + col] == 0:
                    continue
                neighbour = row * width + col
                if disc[neighbour] < 0:
                    parent[neighbour] = node
                    disc[neighbour] = low[neighbour] = timer
                    timer += 1
                    stack[depth] = neighbour
                    depth += 1
                    root_children += node == root
                elif neighbour != parent[node]:
                    low[node] = min(low[node], disc[neighbour])
            else:
                depth -= 1
                above = parent[node]
                if above >= 0:
                    low[above] = min(low[above], low[node])
                    if above != root and low[node] >= disc[above]:
                        is_cut[above] = True
        is_cut[root] = root_children >= 2
    return is_cut.reshape(height, width)


@numba.njit(cache=True)
def _count_splits_mergers(
    warped: npt.NDArray[np.uint8], components: npt.NDArray[np.int32], rows: npt.NDArray[np.int64],
    cols: npt.NDArray[np.int64],
) -> tuple[int, int]:
    """Classify the mismatches left after warping as in Fiji's ``WarpingError.classifyMismatches2d``.

    Fiji's "flip the pixel, relabel the image, count > 2 ids around it" test for a foreground pixel next to one
    object and background is answered by the cut-pixel test: the ids around it are then background plus one per
    component of its object without it, and that object falls apart iff the pixel is a cut vertex.
    """
    height, width = warped.shape
    is_cut = _cut_pixels(warped)
    ids = np.empty(8, dtype=np.int64)
    splits = 0
    mergers = 0
    for k in range(rows.size):
        row, col = rows[k], cols[k]
        n_ids = 0
        for d_row in range(-1, 2):
            for d_col in range(-1, 2):
                r, c = row + d_row, col + d_col
                if (d_row != 0 or d_col != 0) and 0 <= r < height and 0 <= c < width:
                    label = components[r, c]
                    seen = False
                    for m in range(n_ids):
                        seen = seen or ids[m] == label
                    if not seen:
                        ids[n_ids] = label
                        n_ids += 1
        if n_ids >= 3:  # two or more objects meet here
            if warped[row, col]:
                splits += 1
            else:
                mergers += 1
        elif n_ids == 2 and warped[row, col] and is_cut[row, col]:  # removal splits its object
            splits += 1
        # otherwise: object addition/deletion or hole addition/deletion, not counted in this variant
    return splits, mergers


def _splits_and_mergers(
    true_cells: npt.NDArray[np.bool_], target: npt.NDArray[np.bool_], priority: npt.NDArray[np.float64]
) -> tuple[int, int]:
    """Warp ``true_cells`` toward ``target`` by simple-point flips; count the split and merger pixels left."""
    warped, rows, cols = warp_toward(true_cells, target, priority)
    components, _ = ndimage.label(warped)  # 4-connectivity
    splits, mergers = _count_splits_mergers(warped.astype(np.uint8), components.astype(np.int32), rows, cols)
    return int(splits), int(mergers)


def warping_error(membrane_prob: npt.NDArray[np.floating], true_cells: npt.NDArray[np.bool_], *,
                  thresholds: npt.ArrayLike = WARPING_THRESHOLDS) -> WarpingScores:
    """ISBI 2012 warping error, "minimum splits and mergers" variant of Jain et al. (2010), as in Fiji.

    Parameters
    ----------
    membrane_prob : (H, W) ndarray of float
        Membrane probability in [0, 1].
    true_cells : (H, W) ndarray of bool
        Ground truth, True on cell interior (foreground, 4-connected), False on membrane (8-connected).
    thresholds : sequence of float, optional
        Levels ``t`` in [0, 1]; the target is ``1 - membrane_prob > t``. Default 0.0, 0.1, ..., 0.9.
        Levels leaving no predicted cell pixel or no predicted membrane pixel are skipped.

    Returns
    -------
    WarpingScores
        ``(error, splits, mergers, threshold)`` at the first threshold reaching the minimal error; ``splits``
        and ``mergers`` count pixels (Fiji's ``clusterByError=false``), not events.

    Raises
    ------
    ValueError
        If the shapes differ, an input is not 2-D, ``membrane_prob`` has NaN or values outside [0, 1], the
        thresholds are invalid, or every threshold is skipped.
    TypeError
        If ``true_cells`` is not bool or ``membrane_prob`` is not real-valued.

    Notes
    -----
    At each level the ground truth is warped toward the target: mismatching pixels that are *simple* for
    (4, 8) topology (flipping them changes no connectivity, [3]) are flipped, pass after pass, until a pass
    flips none. Within a pass, pixels are visited in decreasing ``|1 - membrane_prob - t|`` (most confident
    prediction first), ties in column-major order, as in Fiji's ``simplePointWarp2d``; flips take effect
    immediately. Each remaining mismatch is classified from the 4-connected components of the warped ground
    truth among its in-image 8-neighbours (ids, with 0 = background):

    - >= 2 objects: merger if the pixel is background in the warped ground truth, else split;
    - one object and background, pixel foreground: split if, with the pixel removed, its foreground neighbours
      fall into >= 2 components of the whole image (it is a cut vertex of its 4-connected object; Fiji
      relabels the image to decide), else hole deletion;
    - all other cases (object addition/deletion, hole addition/deletion) are not counted.

    ``error = (split pixels + merger pixels) / (H W)``, minimised over the levels.

    References
    ----------
    .. [1] Jain et al. (2010). Boundary learning by optimization with topological constraints. CVPR.
           doi:10.1109/CVPR.2010.5539950
    .. [2] Arganda-Carreras et al. (2015). Front. Neuroanat. 9:142. doi:10.3389/fnana.2015.00142; reference
           implementation: Fiji Trainable Weka Segmentation, ``trainableSegmentation/metrics/WarpingError.java``
           (``getMinimumSplitsAndMergersErrorValue(0.0, 0.9, 0.1, false)``).
    .. [3] Bertrand, Malandain (1994). A new characterization of three-dimensional simple points. Pattern
           Recogn. Lett. 15(2):169-175. doi:10.1016/0167-8655(94)90046-9

    Examples
    --------
    >>> cells = np.ones((5, 5), dtype=bool)
    >>> cells[:, 2] = False                           # two cells, one membrane column
    >>> prob = np.zeros((5, 5))
    >>> prob[:, 2] = 1.0
    >>> prob[2, 2] = 0.0                              # one-pixel gap in the predicted membrane
    >>> warping_error(prob, cells)
    WarpingScores(error=0.04, splits=0, mergers=1, threshold=0.0)
    """
    prob = check_membrane_prob(membrane_prob)
    cells = check_mask("true_cells", true_cells)
    check_2d("true_cells", cells)
    check_same_shape("membrane_prob", prob, "true_cells", cells)
    levels = check_thresholds(thresholds)
    cell_prob = 1.0 - prob
    best: WarpingScores | None = None
    for level in levels:
        target = cell_prob > level
        if target.all() or not target.any():
            continue  # all cell or all membrane: splits and mergers are undefined here, not zero
        splits, mergers = _splits_and_mergers(cells, target, np.abs(cell_prob - level))
        error = (splits + mergers) / cells.size
        if best is None or error < best.error:
            best = WarpingScores(error=error, splits=splits, mergers=mergers, threshold=float(level))
    if best is None:
        raise ValueError(
            f"every threshold {levels.tolist()} leaves no predicted cell pixel or no predicted membrane pixel "
            f"(1 - membrane_prob spans [{cell_prob.min()}, {cell_prob.max()}]); the warping error is undefined"
        )
    return best


__all__ = ['WARPING_THRESHOLDS', 'WarpingScores', 'warping_error']
