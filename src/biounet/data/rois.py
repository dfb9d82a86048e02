"""Cell outlines as ImageJ ROIs: one polygon per instance, in a ``.zip`` that Fiji's ROI Manager opens.

Outlines come from :func:`skimage.measure.find_contours` at level 0.5 of each cell's mask, in ImageJ's
coordinates (pixel ``(row, col)`` covers ``x`` in ``[col, col + 1)``, ``y`` in ``[row, row + 1)``), so a polygon
runs along the cell's outer pixel edges, with corners cut diagonally. Writing needs the optional ``roifile`` package
(``pip install 'biounet[fiji]'``).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

from biounet.core.extras import require
from biounet.data.files import atomic_path


def instance_outlines(instances: npt.NDArray[np.integer]) -> list[tuple[int, npt.NDArray[np.float64]]]:
    """The outline of every instance of a 2-D label image, as ``(id, (N, 2) array of x, y)`` in ImageJ's pixel-edge
    coordinates (see the module docstring), in id order.

    An instance made of several pieces gives the outline of its largest piece (its longest contour).

    >>> labels = np.zeros((5, 6), dtype=int); labels[1:3, 1:4] = 7
    >>> [(cell, xy.min(0).tolist(), xy.max(0).tolist()) for cell, xy in instance_outlines(labels)]
    [(7, [1.0, 1.0], [4.0, 3.0])]

    Raises
    ------
    ValueError
        If ``instances`` is not 2-D or holds negative ids.
    TypeError
        If ``instances`` is not of integer dtype.
    """
    from scipy import ndimage
    from skimage.measure import find_contours

    instances = np.asarray(instances)
    if instances.ndim != 2:
        raise ValueError(f"instances must be a 2-D label image, got shape {instances.shape}")
    if not np.issubdtype(instances.dtype, np.integer):
        raise TypeError(f"instances must be an integer label image, got dtype {instances.dtype}")
    if instances.size and instances.min() < 0:
        raise ValueError(f"instances must be >= 0, got {instances.min()}")
    outlines = []
    for index, box in enumerate(ndimage.find_objects(instances)):
        if box is None:
            continue
        cell = index + 1
        mask = np.pad(instances[box] == cell, 1).astype(np.float32)  # a closed contour even at the border
        contours = find_contours(mask, 0.5)
        longest = max(contours, key=len)
        rows = longest[:, 0] + box[0].start - 1 + 0.5  # -1: the padding; +0.5: pixel centre -> ImageJ edge
        cols = longest[:, 1] + box[1].start - 1 + 0.5
        outlines.append((cell, np.stack([cols, rows], axis=1)))
    return outlines


def write_roi_zip(path: str | os.PathLike[str], planes: npt.NDArray[np.integer]) -> int:
    """Write one ImageJ polygon ROI per instance of a ``(H, W)`` or ``(Z, H, W)`` label image as a ``.zip``.

    ROIs are named ``cell-<id>`` (``z<plane>-cell-<id>`` for stacks, with their position set to the plane), so
    the ROI Manager lists them in id order. The file is written atomically; an image without cells gives an
    empty zip. Returns the number of ROIs written.

    Raises
    ------
    ModuleNotFoundError
        If ``roifile`` is not installed (the message says how to install it).
    """
    roifile = require("roifile", "writing ImageJ ROIs", extra="fiji")
    ROI_TYPE, ImagejRoi = roifile.ROI_TYPE, roifile.ImagejRoi
    planes = np.asarray(planes)
    stack = planes[None] if planes.ndim == 2 else planes
    count = 0
    with atomic_path(Path(path)) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for z, plane in enumerate(stack):
            for cell, xy in instance_outlines(plane):
                name = f"cell-{cell:05d}" if planes.ndim == 2 else f"z{z + 1:04d}-cell-{cell:05d}"
                roi = ImagejRoi.frompoints(xy)
                roi.roitype = ROI_TYPE.POLYGON  # frompoints makes a freehand ROI; an outline is a polygon
                roi.name = name
                if planes.ndim == 3:
                    roi.position = z + 1  # ImageJ's stack positions count from 1
                archive.writestr(f"{roi.name}.roi", roi.tobytes())
                count += 1
    return count
