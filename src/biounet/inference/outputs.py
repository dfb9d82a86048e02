"""What ``biounet predict`` makes from its outputs beyond the labels: instances (one id per cell), the boundaries
of a membrane model's segments, and the post-processing settings brought to the scale of the image.

The post-processing settings (:class:`~biounet.inference.instances.InstanceParams`,
:class:`~biounet.inference.segments.SegmentParams`) are chosen by the training run on its validation images, so
their sizes are in pixels of the training data. An image of another pixel size is predicted resampled by ``zoom``
to the model's scale and its outputs resampled back (:mod:`biounet.data.scale`), so the instances are made at the
image's scale and every size setting must be brought there: :func:`at_image_scale`.
"""

from __future__ import annotations

import math
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

AREA_FIELDS = frozenset({"min_size_px"})
"""Post-processing fields that are areas in pixels: divided by ``zoom_y * zoom_x`` at the image's scale."""
LENGTH_FIELDS = frozenset({"sigma_seeds", "min_distance", "h"})
"""Post-processing fields that are lengths in pixels: divided by the mean zoom at the image's scale."""
UNITLESS_FIELDS = frozenset({"seed_threshold", "watershed", "threshold", "bias", "membrane_threshold",
                             "overlap_threshold", "masks", "split_prominence", "background_bias"})
"""Post-processing fields without a unit of length (probabilities, normalised distances, switches): kept."""

Params = TypeVar("Params")


def at_image_scale(params: Params, zoom: tuple[float, float] | None) -> Params:
    """Post-processing settings chosen at the model's pixel size, for an image predicted resampled by ``zoom``.

    Parameters
    ----------
    params : InstanceParams or SegmentParams or None
        Settings in pixels of the training data (a frozen dataclass); None passes through.
    zoom : (float, float) or None
        How much the image was enlarged (y, x) to reach the model's pixel size
        (:attr:`biounet.inference.predict.PredictResult.zoom`); None: predicted at its own scale, nothing changes.

    Returns
    -------
    The same kind of settings in pixels of the image: areas (:data:`AREA_FIELDS`) divided by
    ``zoom_y * zoom_x``, lengths (:data:`LENGTH_FIELDS`) by ``(zoom_y + zoom_x) / 2``; integer fields rounded.

    Raises
    ------
    ValueError
        If a zoom factor is not a positive finite number.

    Examples
    --------
    >>> from biounet.inference.segments import SegmentParams
    >>> at_image_scale(SegmentParams(sigma_seeds=2.0, min_size_px=25), (0.5, 0.5))
    SegmentParams(threshold=0.5, sigma_seeds=4.0, min_size_px=100, bias=0.5, membrane_threshold=0.5)
    """
    if params is None or zoom is None:
        return params
    if len(zoom) != 2 or not all(math.isfinite(z) and z > 0 for z in zoom):
        raise ValueError(f"zoom must be two positive finite factors (y, x), got {zoom!r}")
    scales = {"area": zoom[0] * zoom[1], "length": (zoom[0] + zoom[1]) / 2}
    changes: dict[str, Any] = {}
    for field in fields(params):  # type: ignore[arg-type]
        kind = "area" if field.name in AREA_FIELDS else "length" if field.name in LENGTH_FIELDS else None
        if kind is None:
            continue
        value = getattr(params, field.name) / scales[kind]
        changes[field.name] = round(value) if isinstance(getattr(params, field.name), int) else value
    return replace(params, **changes)  # type: ignore[type-var]


def instances_of(labels: npt.NDArray[np.integer], probabilities: npt.NDArray[np.float32] | None, *,
                 target: str | None, params: Any, watershed: bool = False) -> npt.NDArray[np.int32]:
    """The instances of every plane, made the way the model's target asks for
    (:func:`biounet.inference.instances.instances_from_outputs`).

    Parameters
    ----------
    labels : (Z, H, W) integer array
        The predicted class labels.
    probabilities : (Z, C, H, W) float32 array or None
        The predicted probabilities; needed by the targets of
        :func:`~biounet.inference.instances.needs_probabilities`.
    target, params, watershed
        The model's target, its post-processing settings (at the image's scale) and the ``--watershed`` split.

    Returns
    -------
    (Z, H, W) int32 array: one id per cell (or segment) in each plane, 0 for background and boundaries.
    """
    from biounet.inference.instances import instances_from_outputs

    if labels.ndim != 3:
        raise ValueError(f"labels must be (Z, H, W), got shape {labels.shape}")
    if probabilities is not None and (probabilities.ndim != 4 or len(probabilities) != len(labels)):
        raise ValueError(f"probabilities must be (Z, C, H, W) with Z = {len(labels)}, got {probabilities.shape}")
    planes = [instances_from_outputs(plane, None if probabilities is None else probabilities[z], target=target,
                                     params=params, watershed=watershed)
              for z, plane in enumerate(labels)]
    return np.stack(planes).astype(np.int32, copy=False)


def segment_boundaries(segments: npt.NDArray[np.integer]) -> npt.NDArray[np.uint8]:
    """A membrane model's class labels that match its segments: 1 on their 0-valued boundaries, 0 inside.

    >>> segment_boundaries(np.array([[1, 0, 2]]))
    array([[0, 1, 0]], dtype=uint8)
    """
    return (np.asarray(segments) == 0).astype(np.uint8)


def count_cells(instances: npt.NDArray[np.integer]) -> int:
    """Cells in a ``(Z, H, W)`` instance stack: the distinct non-zero ids of each plane, summed over planes.

    >>> count_cells(np.array([[[0, 1, 1, 2]], [[3, 0, 0, 0]]]))
    3
    """
    return int(sum(np.unique(plane[plane > 0]).size for plane in instances))


def write_instances(labels_path: Path, probabilities_path: Path | None, target: str | None, params: Any,
                    watershed: bool) -> tuple[Path, npt.NDArray[np.int32]]:
    """``<stem>_instances.tif`` beside the outputs just written (:func:`instances_of`); returns the file and the
    instances, ``(Z, H, W)``. A membrane model's ``<stem>.tif`` is replaced by :func:`segment_boundaries`, so that
    its labels match its segments."""
    import tifffile

    from biounet.data.files import output_stem
    from biounet.data.images import open_image, read_labels, write_tiff
    from biounet.inference.instances import MEMBRANES, needs_probabilities

    source = open_image(labels_path)
    if source.dims == 3:
        return _write_volume_instances(labels_path, probabilities_path, target, params, source.voxel_size_um)
    labels = read_labels(labels_path)
    pixel_size = source.pixel_size  # the image's, recorded with the labels
    probs = None
    if needs_probabilities(target) and probabilities_path is not None:  # only their instances need them
        probs = np.asarray(tifffile.imread(probabilities_path), dtype=np.float32)
        probs = probs[None] if probs.ndim == 3 else probs
    stack = instances_of(labels, probs, target=target, params=params, watershed=watershed)
    out = labels_path.with_name(output_stem(labels_path) + "_instances.tif")
    dtype = np.uint16 if stack.max(initial=0) < 2**16 else np.uint32
    single = len(stack) == 1
    write_tiff(out, (stack[0] if single else stack).astype(dtype), labels=True, pixel_size=pixel_size)
    if target == MEMBRANES:
        boundaries = segment_boundaries(stack)
        write_tiff(labels_path, boundaries[0] if single else boundaries, labels=True, pixel_size=pixel_size)
    return out, stack


def _write_volume_instances(labels_path: Path, probabilities_path: Path | None, target: str | None, params: Any,
                            voxel_size_um: tuple[float, float, float] | None) -> tuple[Path, npt.NDArray[np.int32]]:
    """:func:`write_instances` for a 3D U-Net's volume: the instances are 3D objects of the whole volume (one id
    per cell across its planes), written as int32 ``(Z, Y, X)`` with the voxel size."""
    import tifffile

    from biounet.data.files import output_stem
    from biounet.data.images import read_labels
    from biounet.inference.instances import instances_from_outputs, needs_probabilities
    from biounet.inference.predict_volume import write_volume_tiff

    labels = read_labels(labels_path)
    probs = None
    if needs_probabilities(target) and probabilities_path is not None:
        probs = np.moveaxis(np.asarray(tifffile.imread(probabilities_path), dtype=np.float32), 1, 0)  # (K, Z, Y, X)
    volume = instances_from_outputs(labels, probs, target=target, params=params, watershed=False)
    out = labels_path.with_name(output_stem(labels_path) + "_instances.tif")
    write_volume_tiff(out, volume.astype(np.int32), voxel_size_um)
    return out, volume[None]


def write_rois(instances_path: Path, instances: npt.NDArray[np.integer]) -> Path:
    """``<stem>_rois.zip`` beside ``<stem>_instances.tif``: one ImageJ polygon ROI per cell of the ``(Z, H, W)``
    ``instances`` (:func:`biounet.data.rois.write_roi_zip`); returns the file."""
    from biounet.data.files import output_stem
    from biounet.data.rois import write_roi_zip

    stem = output_stem(instances_path).removesuffix("_instances")
    out = instances_path.with_name(f"{stem}_rois.zip")
    write_roi_zip(out, instances[0] if len(instances) == 1 else instances)
    return out


__all__ = ["AREA_FIELDS", "LENGTH_FIELDS", "UNITLESS_FIELDS", "at_image_scale", "count_cells", "instances_of",
           "segment_boundaries", "write_instances", "write_rois"]
