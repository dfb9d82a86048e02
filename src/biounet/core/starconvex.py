"""Star-convex object targets: for every pixel of an object, the distances to the object's outline along ``n``
rays, and the object probability the network learns beside them (Schmidt et al. 2018).

An object is star-convex around a pixel when every ray from it leaves the object once; nuclei are, around any
interior pixel near their centre, so a polygon of ``n`` radial distances predicted at a pixel draws the whole
nucleus, and two touching nuclei predicted from their own centres stay two polygons. Pure NumPy / Numba.

References
----------
.. [1] Schmidt, Weigert, Broaddus, Myers (2018). Cell detection with star-convex polygons. MICCAI, LNCS 11071:
       265-273. doi:10.1007/978-3-030-00934-2_30 (``stardist.geometry.star_dist``, ``stardist.utils.edt_prob``)
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

from biounet.core.targets import cell_distance

N_RAYS = 32
"""StarDist's default number of rays (``Config2D(n_rays=32)``)."""


def ray_angles(n_rays: int = N_RAYS) -> npt.NDArray[np.float64]:
    """The ray directions ``2 pi k / n`` in radians, k = 0..n-1 (ray k steps ``(sin, cos)`` in ``(y, x)``).

    >>> ray_angles(4) / np.pi
    array([0. , 0.5, 1. , 1.5])
    """
    if n_rays < 3:
        raise ValueError(f"n_rays must be >= 3 to draw a polygon, got {n_rays}")
    return 2 * np.pi * np.arange(n_rays) / n_rays


@numba.njit(cache=True, nogil=True)
def _star_distances(labels: npt.NDArray[np.int64], dy: npt.NDArray[np.float64], dx: npt.NDArray[np.float64],
                    ) -> npt.NDArray[np.float32]:  # pragma: no cover - compiled
    height, width = labels.shape
    out = np.zeros((height, width, dy.size), dtype=np.float32)
    for i in range(height):
        for j in range(width):
            value = labels[i, j]
            if value == 0:
                continue
            for k in range(dy.size):
                y, x = 0.0, 0.0
                while True:
                    y += dy[k]
                    x += dx[k]
                    ii, jj = int(round(i + y)), int(round(j + x))
                    if ii < 0 or ii >= height or jj < 0 or jj >= width or labels[ii, jj] != value:
                        # back up from the first pixel outside to the outline between the two pixels
                        back = 1.0 - 0.5 / max(abs(dy[k]), abs(dx[k]))
                        y -= back * dy[k]
                        x -= back * dx[k]
                        out[i, j, k] = np.sqrt(y * y + x * x)
                        break
    return out


def star_distances(instances: npt.NDArray[np.integer], n_rays: int = N_RAYS) -> npt.NDArray[np.float32]:
    """``(H, W, n_rays)`` distances (pixels) from every object pixel to its object's outline along each ray.

    A ray walks in unit steps from the pixel until the rounded position leaves the object (or the image), then
    backs up to the outline; 0 on background. The image border counts as an outline.

    Examples
    --------
    >>> square = np.pad(np.ones((5, 5), int), 2)
    >>> star_distances(square, 4)[4, 4].tolist()   # the centre of a 5 x 5 square: 2.5 px to each side
    [2.5, 2.5, 2.5, 2.5]
    """
    labels = np.asarray(instances)
    if labels.ndim != 2:
        raise ValueError(f"instances must be a 2-D (H, W) label image, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"instances must be integer labels, got dtype {labels.dtype}")
    angles = ray_angles(n_rays)
    return _star_distances(labels.astype(np.int64), np.sin(angles), np.cos(angles))


def object_probability(instances: npt.NDArray[np.integer]) -> npt.NDArray[np.float32]:
    """StarDist's object probability: per object, the distance to its outline over the object's largest, so that
    pixels near a centre, whose polygons draw the object best, score highest (:func:`cell_distance`)."""
    return cell_distance(instances)


def star_targets(instances: npt.NDArray[np.integer], n_rays: int = N_RAYS) -> npt.NDArray[np.float32]:
    """``(H, W, 1 + n_rays)``: the object probability, then the radial distances, of one (augmented) label tile."""
    return np.concatenate([object_probability(instances)[..., None], star_distances(instances, n_rays)], axis=-1)


__all__ = ["N_RAYS", "object_probability", "ray_angles", "star_distances", "star_targets"]
