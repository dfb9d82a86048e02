"""Object diameter: cells of one size for the network, whatever their size in the image.

Nuclei in one collection can be 8 px across in one image and 55 px in the next (DSB2018). A network with a fixed
receptive field and a boundary band of fixed width sees those as different problems. With a *common diameter*,
every training image is resampled so that its median object is that many pixels across (the training set's median
by default), and a new image is resampled the same way before prediction: its objects' diameter is estimated from
a first prediction at its own scale (or given), the image enlarged or shrunk to the common diameter, predicted,
and the outputs resampled back, so labels keep the image's shape (Cellpose's size model does this with a
regression; here the network's own first segmentation measures it).

References
----------
.. [1] Stringer, Wang, Michaelos, Pachitariu (2021). Cellpose: a generalist algorithm for cellular segmentation.
       Nature Methods 18:100-106 (images resized to a common cell diameter of 30 px, estimated at test time).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from biounet.core.samples import Sample
from biounet.data.scale import resample, scaled_shape

TOLERANCE = 0.1
"""Diameters within 10 % of the common one are left at their scale (resampling blurs; a 10 % size change does not
matter to the network)."""


def median_diameter(instances: npt.NDArray[np.integer]) -> float | None:
    """The median over objects of the equivalent diameter ``2 sqrt(area / pi)`` in pixels; None without objects.

    >>> labels = np.zeros((40, 40), int); labels[:10, :10] = 1; labels[20:30, 20:30] = 2
    >>> round(median_diameter(labels), 2)   # two 10 x 10 squares: 2 sqrt(100 / pi)
    11.28
    """
    labels = np.asarray(instances)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"instances must be a 2-D integer label image, got {labels.dtype} of shape {labels.shape}")
    areas = np.bincount(labels[labels > 0].ravel())
    areas = areas[areas > 0]
    if areas.size == 0:
        return None
    return float(np.median(2.0 * np.sqrt(areas / math.pi)))


def check_diameter(diameter: float) -> float:
    """``diameter`` if it is a positive finite number of pixels.

    Raises
    ------
    ValueError
        Naming the value otherwise.
    """
    if not (isinstance(diameter, (int, float)) and math.isfinite(diameter) and diameter > 0):
        raise ValueError(f"the object diameter must be a positive number of pixels, got {diameter!r}")
    return float(diameter)


def diameter_zoom(image_diameter: float | None, common_diameter: float | None) -> float | None:
    """How much to enlarge an image whose objects are ``image_diameter`` px across so that they are
    ``common_diameter`` px; None where either is unknown or they agree within :data:`TOLERANCE`.

    >>> diameter_zoom(8.0, 16.0), diameter_zoom(15.0, 16.0)
    (2.0, None)
    """
    if image_diameter is None or common_diameter is None:
        return None
    zoom = check_diameter(common_diameter) / check_diameter(image_diameter)
    return None if abs(zoom - 1.0) <= TOLERANCE else zoom


def rescale_sample(sample: Sample, zoom: float) -> Sample:
    """A 2-D labelled sample enlarged ``zoom`` times: the image linearly, classes and instances by nearest
    neighbour (ids and :data:`~biounet.core.samples.IGNORE` kept)."""
    if sample.dims != 2:
        raise ValueError(f"sample {sample.name!r}: object diameters rescale 2-D images only")
    shape = scaled_shape(sample.image.shape[:2], (zoom, zoom))
    image = np.moveaxis(resample(np.moveaxis(sample.image, -1, 0), shape, order=1), 0, -1)

    def nearest(labels: npt.NDArray[np.integer] | None, dtype: type) -> npt.NDArray[np.integer] | None:
        if labels is None:
            return None
        return np.rint(resample(labels.astype(np.float32), shape, order=0)).astype(dtype)

    size = None if sample.pixel_size_um is None else tuple(u / zoom for u in sample.pixel_size_um)
    return replace(sample, image=np.ascontiguousarray(image, dtype=np.float32),
                   classes=nearest(sample.classes, np.int64), instances=nearest(sample.instances, np.int32),
                   pixel_size_um=size)


def common_diameter(samples: list[Sample]) -> float | None:
    """The median of the samples' median object diameters (None where none has objects)."""
    diameters = [d for d in (median_diameter(s.instances) for s in samples if s.instances is not None) if d]
    return float(np.median(diameters)) if diameters else None


def to_common_diameter(samples: list[Sample], diameter: float) -> list[Sample]:
    """Each sample resampled so that its median object is ``diameter`` px across (:func:`diameter_zoom`; samples
    without objects, or near that size already, as they are)."""
    out = []
    for sample in samples:
        zoom = diameter_zoom(median_diameter(sample.instances) if sample.instances is not None else None, diameter)
        out.append(sample if zoom is None else rescale_sample(sample, zoom))
    return out


__all__ = [
    "TOLERANCE", "check_diameter", "common_diameter", "diameter_zoom", "median_diameter", "rescale_sample",
    "to_common_diameter",
]
