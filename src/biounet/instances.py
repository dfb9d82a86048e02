"""Instance separation of touching cells from a semantic prediction.

The network is trained with separation borders (background pixels between touching cells, paper section 3), so
the connected components of its foreground are the cells. Each component is then grown back by the border's width
into the background it lost (:func:`skimage.segmentation.expand_labels`, never into another cell). Optionally,
components that still hold several cells are split by a seeded watershed on the distance transform.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage


def instances_from_foreground(
    foreground: npt.NDArray[np.bool_],
    *,
    min_size_px: int = 16,
    grow_px: int = 1,
    watershed: bool = False,
    min_distance_px: int = 5,
) -> npt.NDArray[np.int32]:
    """Instance labels (0 = background, 1..N) from a foreground mask.

    Parameters
    ----------
    foreground : (H, W) bool
        Predicted cell pixels.
    min_size_px : int
        Components smaller than this are dropped (noise).
    grow_px : int
        Each instance is grown by this many pixels into the background, without touching other instances (the
        training targets had a ~1 px border cut from each touching cell).
    watershed : bool
        Split components at the saddles of their distance transform, seeded by its maxima at least
        ``min_distance_px`` apart.

    Returns
    -------
    (H, W) int32
        Instance ids, 4-connected components numbered in raster order.
    """
    from skimage.segmentation import expand_labels, relabel_sequential

    foreground = np.asarray(foreground)
    if foreground.ndim != 2:
        raise ValueError(f"foreground must be 2-D, got shape {foreground.shape}")
    if foreground.dtype != np.bool_:
        raise TypeError(f"foreground must be a bool mask, got dtype {foreground.dtype}")
    if min_size_px < 0 or grow_px < 0:
        raise ValueError(f"min_size_px and grow_px must be >= 0, got {min_size_px} and {grow_px}")
    labels, count = ndimage.label(foreground)
    if count and min_size_px > 1:
        sizes = np.bincount(labels.ravel())
        small = sizes < min_size_px
        small[0] = False
        labels[small[labels]] = 0
    if watershed and labels.any():
        labels = _split_by_watershed(labels > 0, min_distance_px)
    labels = relabel_sequential(np.asarray(labels, dtype=np.int32))[0]
    if grow_px:
        labels = expand_labels(labels, distance=grow_px)
    return labels.astype(np.int32)


def _split_by_watershed(mask: npt.NDArray[np.bool_], min_distance_px: int) -> npt.NDArray[np.int32]:
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    distance = ndimage.distance_transform_edt(mask)
    components, _ = ndimage.label(mask)
    peaks = peak_local_max(distance, min_distance=min_distance_px, labels=components, exclude_border=False)
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return np.asarray(watershed(-distance, markers, mask=mask), dtype=np.int32)

