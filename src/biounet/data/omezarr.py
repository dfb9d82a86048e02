"""OME-Zarr (OME-NGFF 0.4 and 0.5) images and the pixel size of OME-TIFF files: the formats of the bioimaging tools.

An OME-Zarr image is a zarr group whose ``multiscales`` metadata lists resolution levels, highest first, with the
axes (``t``, ``c``, ``z``, ``y``, ``x``, in that order) and each level's ``scale`` coordinate transformation (the
pixel size). NGFF 0.4 keeps the metadata in zarr v2 ``.zattrs``; 0.5 in zarr v3 ``zarr.json`` under ``"ome"``.
:func:`open_ngff` opens the highest-resolution level lazily as a stack of planes ``(planes, C, H, W)`` (the ``t``
and ``z`` axes folded into planes). :class:`LabelImageWriter` writes a label image chunk by chunk, either into the
image's ``labels/`` group with ``image-label`` metadata, or as a new OME-Zarr of its own.

Only zarr is needed (the layout is read and written directly); the ``ome-zarr`` package reads what is written here.
This module imports nothing from biounet, so :mod:`biounet.data.images` can use it.

References
----------
.. [1] Moore et al. (2023). OME-Zarr: a cloud-optimized bioimaging file format. doi:10.1007/s00418-023-02209-1
.. [2] https://ngff.openmicroscopy.org/0.4/ and https://ngff.openmicroscopy.org/0.5/
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

NGFF_VERSIONS: tuple[str, ...] = ("0.4", "0.5")
AXIS_NAMES = "tczyx"  # the order NGFF requires: time, channel, then space
PLANE_AXES = "tz"  # folded into planes
_OME_UNITS = {"micrometer": "µm", "nanometer": "nm", "millimeter": "mm", "meter": "m", "angstrom": "Å"}
_NGFF_UNITS = {symbol: name for name, symbol in _OME_UNITS.items()} | {"um": "micrometer"}
_MICROMETRES = {"micrometer": 1.0, "nanometer": 1e-3, "millimeter": 1e3, "meter": 1e6, "angstrom": 1e-4}
"""Micrometres per NGFF length unit (the units a voxel size is converted from)."""


class NgffError(ValueError):
    """A folder that is not a readable OME-Zarr image; the message names it and the problem."""


@dataclass(frozen=True)
class PixelSize:
    """Physical size of a pixel along y and x, in ``unit`` (an NGFF unit name; OME's default is micrometer)."""

    y: float
    x: float
    unit: str = "micrometer"

    def __post_init__(self) -> None:
        if not (self.y > 0 and self.x > 0 and math.isfinite(self.y) and math.isfinite(self.x)):
            raise ValueError(f"pixel size must be positive and finite, got y={self.y}, x={self.x}")

    @property
    def ome_unit(self) -> str:
        """The unit as an OME-XML symbol (``µm``)."""
        return _OME_UNITS.get(self.unit, self.unit)


# --- reading ------------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def ngff_metadata(path: str | os.PathLike[str]) -> tuple[str, dict[str, Any]] | None:
    """``(version, first multiscales entry)`` of an OME-Zarr image group, or None if ``path`` is not one.

    NGFF 0.5: ``zarr.json`` holds ``{"attributes": {"ome": {"version", "multiscales"}}}``; 0.4: ``.zattrs`` holds
    ``{"multiscales": [{"version", ...}]}``.
    """
    path = Path(path)
    v3 = _read_json(path / "zarr.json")
    if v3 is not None:
        ome = (v3.get("attributes") or {}).get("ome") or {}
        if ome.get("multiscales"):
            return str(ome.get("version", "")), ome["multiscales"][0]
    v2 = _read_json(path / ".zattrs")
    if v2 is not None and v2.get("multiscales"):
        multiscale = v2["multiscales"][0]
        return str(multiscale.get("version", "")), multiscale
    return None


def is_omezarr(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an OME-Zarr image group (a folder with ``multiscales`` metadata)."""
    return Path(path).is_dir() and ngff_metadata(path) is not None


def _axis_names(multiscale: dict[str, Any], path: Path) -> tuple[str, ...]:
    axes = tuple(str(a["name"] if isinstance(a, dict) else a).lower() for a in multiscale.get("axes", ()))
    if axes[-2:] != ("y", "x") or any(a not in AXIS_NAMES for a in axes) or len(set(axes)) != len(axes):
        raise NgffError(f"{path}: unsupported OME-Zarr axes {axes}; expected a subset of (t, c, z, y, x) ending "
                        f"in y, x")
    return axes


def _scale(transformations: list[dict[str, Any]] | None, ndim: int) -> npt.NDArray[np.float64]:
    scale = np.ones(ndim)
    for transform in transformations or []:
        if transform.get("type") == "scale" and "scale" in transform:
            scale = scale * np.asarray(transform["scale"], dtype=np.float64)
    return scale


@dataclass
class NgffImage:
    """The highest-resolution level of an OME-Zarr image, opened lazily."""

    path: Path
    version: str  # "0.4" or "0.5"
    axes: tuple[str, ...]  # e.g. ("c", "y", "x")
    array: Any  # zarr array of that level, in ``axes`` order
    scale: tuple[float, ...]  # physical size of a step along each axis (1 where unknown)
    units: tuple[str | None, ...]  # unit of each axis, None where not given

    @property
    def pixel_size(self) -> PixelSize | None:
        """The y, x pixel size when the metadata gives a unit for y and x (a scale alone may be in pixels)."""
        unit_y, unit_x = self.units[-2:]
        if unit_y is None or unit_y != unit_x:
            return None
        return PixelSize(self.scale[-2], self.scale[-1], unit_y)

    def planes(self) -> PlaneStack:
        """The image as a lazy ``(planes, C, H, W)`` stack."""
        return PlaneStack(self.array, self.axes)

    @property
    def is_volume(self) -> bool:
        """Whether the image has a ``z`` axis of more than one plane and no ``t`` axis of more than one step."""
        size = dict(zip(self.axes, self.array.shape))
        return size.get("z", 1) > 1 and size.get("t", 1) == 1

    @property
    def voxel_size_um(self) -> tuple[float, float, float] | None:
        """The ``(z, y, x)`` voxel size in micrometres of a volume, where the metadata gives y and x the same
        length unit (a ``z`` axis without a unit takes theirs; NGFF's scale alone may be in pixels); else None."""
        if "z" not in self.axes or self.pixel_size is None:
            return None
        unit_y = self.units[-2]
        unit_z = self.units[self.axes.index("z")] or unit_y
        if unit_y not in _MICROMETRES or unit_z not in _MICROMETRES:
            return None
        z = self.scale[self.axes.index("z")] * _MICROMETRES[unit_z]
        return (z, self.scale[-2] * _MICROMETRES[unit_y], self.scale[-1] * _MICROMETRES[unit_y])

    def volume(self) -> VolumeStack:
        """The image as a lazy ``(Z, C, Y, X)`` volume.

        Raises
        ------
        NgffError
            If the image has no ``z`` axis of more than one plane, or a ``t`` axis of more than one time point.
        """
        if not self.is_volume:
            raise NgffError(f"{self.path}: OME-Zarr axes {self.axes} of shape {tuple(self.array.shape)} are not "
                            f"one volume (a z axis of more than one plane, at most one time point)")
        return VolumeStack(self.array, self.axes)


def open_ngff(path: str | os.PathLike[str]) -> NgffImage:
    """Open the highest-resolution level of an OME-Zarr image (NGFF 0.4 or 0.5) lazily.

    Raises
    ------
    NgffError
        If ``path`` is not an OME-Zarr image, is of another NGFF version, or has axes other than (t, c, z, y, x).
    """
    path = Path(path)
    found = ngff_metadata(path)
    if found is None:
        raise NgffError(f"{path}: not an OME-Zarr image (no multiscales metadata)")
    version, multiscale = found
    if version not in NGFF_VERSIONS:
        raise NgffError(f"{path}: OME-Zarr version {version!r} is not supported; biounet reads {NGFF_VERSIONS}")
    axes = _axis_names(multiscale, path)
    datasets = multiscale.get("datasets") or []
    if not datasets or "path" not in datasets[0]:
        raise NgffError(f"{path}: OME-Zarr multiscales lists no datasets")
    import zarr

    try:
        array = zarr.open_array(str(path / datasets[0]["path"]), mode="r")
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise NgffError(f"{path}: cannot open the level {datasets[0]['path']!r} ({err})") from err
    if array.ndim != len(axes):
        raise NgffError(f"{path}: level {datasets[0]['path']!r} has {array.ndim} dimensions for axes {axes}")
    scale = _scale(datasets[0].get("coordinateTransformations"), len(axes)) * _scale(
        multiscale.get("coordinateTransformations"), len(axes))
    units = tuple(a.get("unit") if isinstance(a, dict) else None for a in multiscale.get("axes", ()))
    return NgffImage(path, version, axes, array, tuple(float(s) for s in scale), units)


def _plane_index(axes: tuple[str, ...], lead_shape: tuple[int, ...], plane: int) -> dict[int, int]:
    """Positions along the folded ``t``/``z`` axes of plane number ``plane`` (row-major over ``lead_shape``)."""
    lead = [i for i, a in enumerate(axes) if a in PLANE_AXES]
    coords = np.unravel_index(plane, lead_shape) if lead else ()
    return {axis: int(c) for axis, c in zip(lead, coords)}


class PlaneStack:
    """A zarr array with NGFF axes seen as ``(planes, C, H, W)``; index it as ``[plane, channels, rows, cols]``.

    Only the region asked for is read. An image without a ``c`` axis has one channel.
    """

    def __init__(self, array: Any, axes: tuple[str, ...]) -> None:
        self.array, self.axes = array, axes
        self.lead_shape = tuple(int(array.shape[i]) for i, a in enumerate(axes) if a in PLANE_AXES)
        self.channel_axis = axes.index("c") if "c" in axes else None
        channels = int(array.shape[self.channel_axis]) if self.channel_axis is not None else 1
        self.shape = (int(np.prod(self.lead_shape)), channels, int(array.shape[-2]), int(array.shape[-1]))
        self.dtype = np.dtype(array.dtype)

    def __getitem__(self, index: tuple[int, slice, slice, slice]) -> npt.NDArray[Any]:
        plane, channels, rows, cols = index
        full: list[Any] = [0] * len(self.axes)
        for axis, position in _plane_index(self.axes, self.lead_shape, int(plane)).items():
            full[axis] = position
        if self.channel_axis is not None:
            full[self.channel_axis] = channels
        full[-2], full[-1] = rows, cols
        block = np.asarray(self.array[tuple(full)])  # (C, h, w), or (h, w) without a channel axis
        return block if self.channel_axis is not None else block[None]


class VolumeStack:
    """A zarr array with NGFF axes seen as a ``(Z, C, Y, X)`` volume (``t`` of one step dropped); index it as
    ``[zs, channels, rows, cols]`` with ints or slices. Only the region asked for is read. An image without a ``c``
    axis has one channel."""

    def __init__(self, array: Any, axes: tuple[str, ...]) -> None:
        self.array, self.axes = array, axes
        size = dict(zip(axes, (int(n) for n in array.shape)))
        self.shape = (size["z"], size.get("c", 1), size["y"], size["x"])
        self.dtype = np.dtype(array.dtype)

    def __getitem__(self, index: tuple[Any, Any, Any, Any]) -> npt.NDArray[Any]:
        keys = dict(zip("zcyx", index))
        block = np.asarray(self.array[tuple(keys.get(a, 0) for a in self.axes)])
        kept = [a for a in self.axes if a != "t" and not isinstance(keys[a], (int, np.integer))]
        if "c" not in self.axes:  # a channel axis of one, where the index asks for one
            kept, block = ["c", *kept], block[None]
            if isinstance(keys["c"], (int, np.integer)):
                kept, block = kept[1:], block[0]
        wanted = [a for a in "zcyx" if a in kept]
        return np.transpose(block, [kept.index(a) for a in wanted])


# --- writing ------------------------------------------------------------------------------------------------------


def _axes_metadata(axes: tuple[str, ...], units: tuple[str | None, ...]) -> list[dict[str, str]]:
    kinds = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    out = []
    for name, unit in zip(axes, units):
        entry = {"name": name, "type": kinds[name]}
        if unit is not None:
            entry["unit"] = unit
        out.append(entry)
    return out


@dataclass(frozen=True)
class LabelLayout:
    """Shape and metadata of a label image: the image's axes with a channel axis of size 1."""

    axes: tuple[str, ...]
    shape: tuple[int, ...]
    scale: tuple[float, ...]
    units: tuple[str | None, ...]
    version: str = "0.4"

    def __post_init__(self) -> None:
        if self.version not in NGFF_VERSIONS:
            raise ValueError(f"version must be one of {NGFF_VERSIONS}, got {self.version!r}")
        if not len(self.axes) == len(self.shape) == len(self.scale) == len(self.units):
            raise ValueError(f"axes {self.axes}, shape {self.shape}, scale {self.scale} and units {self.units} must "
                             f"have one entry per axis")

    @classmethod
    def like(cls, image: NgffImage) -> LabelLayout:
        """Labels for every plane of an OME-Zarr image, in its version and with its pixel size."""
        shape = tuple(1 if a == "c" else int(s) for a, s in zip(image.axes, image.array.shape))
        return cls(image.axes, shape, image.scale, image.units, image.version)

    @classmethod
    def for_planes(cls, planes: int, height: int, width: int, pixel_size: PixelSize | None) -> LabelLayout:
        """Labels for a ``(planes, H, W)`` stack (a TIFF, PNG, ...), as NGFF 0.4 ``(z, y, x)`` or ``(y, x)``."""
        unit = pixel_size.unit if pixel_size is not None else None
        yx = (pixel_size.y, pixel_size.x) if pixel_size is not None else (1.0, 1.0)
        if planes == 1:
            return cls(("y", "x"), (height, width), yx, (unit, unit))
        return cls(("z", "y", "x"), (planes, height, width), (1.0, *yx), (None, unit, unit))

    @classmethod
    def for_volume(cls, shape: tuple[int, int, int], voxel_size_um: tuple[float, float, float] | None,
                   ) -> LabelLayout:
        """Labels for a ``(Z, Y, X)`` volume (a TIFF stack, HDF5), as NGFF 0.4 ``(z, y, x)`` with its voxel size
        in micrometres (scale 1 and no unit where it is unknown).

        >>> LabelLayout.for_volume((4, 8, 8), (2.0, 0.5, 0.5)).scale
        (2.0, 0.5, 0.5)
        """
        if len(shape) != 3:
            raise ValueError(f"shape must be a volume's (Z, Y, X), got {tuple(shape)}")
        if voxel_size_um is None:
            return cls(("z", "y", "x"), tuple(shape), (1.0, 1.0, 1.0), (None, None, None))
        return cls(("z", "y", "x"), tuple(shape), tuple(float(v) for v in voxel_size_um), ("micrometer",) * 3)

    def multiscales(self, name: str) -> list[dict[str, Any]]:
        entry: dict[str, Any] = {
            "name": name,
            "axes": _axes_metadata(self.axes, self.units),
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": list(self.scale)}]}],
        }
        if self.version == "0.4":
            entry["version"] = "0.4"
        return [entry]


def _ome_attributes(version: str, values: dict[str, Any]) -> dict[str, Any]:
    """NGFF 0.5 puts the metadata under ``"ome"`` with the version; 0.4 at the top level."""
    return {"ome": {"version": "0.5", **values}} if version == "0.5" else values


class LabelImageWriter:
    """A label image written chunk by chunk, then put in place: into ``<image>/labels/<name>`` or as a new
    OME-Zarr at ``out``.

    Use it as a context manager: the label array is created in a temporary group beside its destination, written
    through :meth:`plane` (each plane accepts ``[rows, cols] = block`` assignments, as
    :func:`biounet.inference.tiling.predict_tiled` makes), and renamed into place only when the block succeeds; on an error
    the temporary group is removed and what was there before is left as it was.
    """

    def __init__(self, layout: LabelLayout, dtype: Any, *, image: str | os.PathLike[str] | None = None,
                 out: str | os.PathLike[str] | None = None, name: str = "biounet", chunk_px: int = 512) -> None:
        if (image is None) == (out is None):
            raise ValueError("give either image (write into its labels/ group) or out (a new OME-Zarr), not both")
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"label name must be a plain folder name, got {name!r}")
        self.layout, self.dtype, self.name, self.chunk_px = layout, np.dtype(dtype), name, chunk_px
        self.image = Path(image) if image is not None else None
        if self.image is not None:
            self.destination = self.image / "labels" / name
        else:
            self.destination = Path(out)  # type: ignore[arg-type]
        self._tmp = self.destination.parent / f".{self.destination.name}.{uuid.uuid4().hex[:8]}.tmp"
        self.array: Any = None

    def __enter__(self) -> LabelImageWriter:
        import zarr

        zarr_format = 3 if self.layout.version == "0.5" else 2
        self.destination.parent.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(str(self._tmp), mode="w", zarr_format=zarr_format)
        chunks = tuple(min(s, self.chunk_px) if i >= len(self.layout.shape) - 2 else 1
                       for i, s in enumerate(self.layout.shape))
        self.array = group.create_array("0", shape=self.layout.shape, chunks=chunks, dtype=self.dtype, fill_value=0)
        label_metadata: dict[str, Any] = {"source": {"image": "../../"}} if self.image is not None else {}
        if self.layout.version == "0.4":
            label_metadata["version"] = "0.4"
        group.attrs.update(_ome_attributes(self.layout.version, {
            "multiscales": self.layout.multiscales(self.name), "image-label": label_metadata}))
        return self

    def plane(self, index: int) -> LabelPlane:
        """Plane ``index`` (in the order of :class:`PlaneStack`) as a ``[rows, cols]``-assignable view."""
        return LabelPlane(self.array, self.layout.axes, index)

    def volume(self) -> LabelVolume:
        """The labels as a ``[zs, rows, cols]``-assignable ``(Z, Y, X)`` view (a ``t`` axis of one step, channel 0).

        Raises
        ------
        ValueError
            If the layout has no ``z`` axis, or a ``t`` axis of more than one step.
        """
        return LabelVolume(self.array, self.layout.axes)

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if exc_type is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return
        old = self.destination.parent / f".{self.destination.name}.{uuid.uuid4().hex[:8]}.old"
        if self.destination.exists():
            os.replace(self.destination, old)
        os.replace(self._tmp, self.destination)
        shutil.rmtree(old, ignore_errors=True)
        if self.image is not None:
            self._list_in_labels_group()

    def _list_in_labels_group(self) -> None:
        """Add the name to the ``labels`` list of ``<image>/labels`` (creating that group's metadata if needed)."""
        import zarr

        assert self.image is not None
        version = self.layout.version
        group = zarr.open_group(str(self.image / "labels"), mode="a", zarr_format=3 if version == "0.5" else 2)
        attrs = dict(group.attrs)
        names = list((attrs.get("ome", attrs) if version == "0.5" else attrs).get("labels", []))
        if self.name not in names:
            names.append(self.name)
        group.attrs.update(_ome_attributes(version, {"labels": names}))


class LabelPlane:
    """One plane of a label array with NGFF axes, assignable as ``[rows, cols] = block`` (channel index 0)."""

    def __init__(self, array: Any, axes: tuple[str, ...], plane: int) -> None:
        self.array, self.axes, self.dtype = array, axes, np.dtype(array.dtype)
        lead_shape = tuple(int(array.shape[i]) for i, a in enumerate(axes) if a in PLANE_AXES)
        self._fixed = _plane_index(axes, lead_shape, plane)

    def _index(self, rows: Any, cols: Any) -> tuple[Any, ...]:
        full: list[Any] = [0] * len(self.axes)
        for axis, position in self._fixed.items():
            full[axis] = position
        full[-2], full[-1] = rows, cols
        return tuple(full)

    def __setitem__(self, index: tuple[slice, slice], value: npt.NDArray[Any]) -> None:
        rows, cols = index
        self.array[self._index(rows, cols)] = value

    def __getitem__(self, index: tuple[slice, slice]) -> npt.NDArray[Any]:
        rows, cols = index
        return np.asarray(self.array[self._index(rows, cols)])


class LabelVolume:
    """A label array with NGFF axes seen as a ``(Z, Y, X)`` volume, read and assigned as ``[zs, rows, cols]``
    (channel and time index 0), as :func:`biounet.inference.volumes.predict_volume` writes its labels."""

    def __init__(self, array: Any, axes: tuple[str, ...]) -> None:
        size = dict(zip(axes, (int(n) for n in array.shape)))
        if "z" not in axes or size.get("t", 1) != 1:
            raise ValueError(f"label axes {axes} of shape {tuple(array.shape)} are not one volume (need a z axis and "
                             f"at most one time point)")
        self.array, self.axes, self.dtype = array, axes, np.dtype(array.dtype)
        self.shape = (size["z"], size["y"], size["x"])

    def _index(self, index: tuple[Any, Any, Any]) -> tuple[Any, ...]:
        keys = dict(zip("zyx", index))
        return tuple(keys.get(a, 0) for a in self.axes)

    def __setitem__(self, index: tuple[Any, Any, Any], value: npt.NDArray[Any]) -> None:
        self.array[self._index(index)] = value

    def __getitem__(self, index: tuple[Any, Any, Any]) -> npt.NDArray[Any]:
        return np.asarray(self.array[self._index(index)])


# --- OME-TIFF -----------------------------------------------------------------------------------------------------


def ome_tiff_pixel_size(ome_xml: str | None) -> PixelSize | None:
    """``PhysicalSizeY``/``PhysicalSizeX`` of the first image in OME-XML (tifffile's ``TiffFile.ome_metadata``).

    Returns None when the XML gives no pixel size or different units for y and x.

    >>> xml = ('<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"><Image ID="Image:0">'
    ...        '<Pixels PhysicalSizeX="0.65" PhysicalSizeY="0.5"/></Image></OME>')
    >>> ome_tiff_pixel_size(xml)
    PixelSize(y=0.5, x=0.65, unit='micrometer')
    """
    if not ome_xml:
        return None
    try:
        root = ET.fromstring(ome_xml)
    except ET.ParseError:
        return None
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None or "PhysicalSizeX" not in pixels.attrib or "PhysicalSizeY" not in pixels.attrib:
        return None
    unit_x = pixels.attrib.get("PhysicalSizeXUnit", "µm")
    unit_y = pixels.attrib.get("PhysicalSizeYUnit", "µm")
    if unit_x != unit_y:
        return None
    try:
        return PixelSize(float(pixels.attrib["PhysicalSizeY"]), float(pixels.attrib["PhysicalSizeX"]),
                         _NGFF_UNITS.get(unit_x, unit_x))
    except ValueError:
        return None


def ome_tiff_metadata(pixel_size: PixelSize, axes: str) -> dict[str, Any]:
    """tifffile ``imwrite(..., ome=True, metadata=...)`` keywords that record ``pixel_size`` (PhysicalSizeX/Y)."""
    return {"axes": axes, "PhysicalSizeX": pixel_size.x, "PhysicalSizeY": pixel_size.y,
            "PhysicalSizeXUnit": pixel_size.ome_unit, "PhysicalSizeYUnit": pixel_size.ome_unit}


def write_ome_tiff_volume(path: str | os.PathLike[str], planes: Any, *, shape: tuple[int, ...], dtype: Any,
                          voxel_size_um: tuple[float, float, float] | None = None) -> Path:
    """Write a ``(Z, Y, X)`` or ``(Z, C, Y, X)`` OME-TIFF (BigTIFF, zlib) from ``planes``, an iterable of its
    ``(Y, X)`` planes in order (z, then channels), one plane in memory at a time; the voxel size is recorded as
    ``PhysicalSizeZ/Y/X`` in µm. The pages are those :func:`tifffile.imwrite` writes for the whole array, so
    :func:`tifffile.imread` reads back the same array. ``path`` is written as it is (no temporary name).
    """
    import tifffile

    if len(shape) not in (3, 4):
        raise ValueError(f"shape must be (Z, Y, X) or (Z, C, Y, X), got {tuple(shape)}")
    metadata: dict[str, Any] = {"axes": "ZYX" if len(shape) == 3 else "ZCYX"}
    if voxel_size_um is not None:
        for axis, size in zip("ZYX", voxel_size_um):
            metadata[f"PhysicalSize{axis}"] = float(size)
            metadata[f"PhysicalSize{axis}Unit"] = "\u00b5m"
    tifffile.imwrite(path, (np.asarray(plane, dtype=dtype) for plane in planes), shape=tuple(shape),
                     dtype=np.dtype(dtype), ome=True, metadata=metadata, compression="zlib",
                     photometric="minisblack", bigtiff=True)
    return Path(path)


__all__ = [
    "NGFF_VERSIONS",
    "LabelImageWriter",
    "LabelLayout",
    "LabelPlane",
    "LabelVolume",
    "NgffError",
    "NgffImage",
    "PixelSize",
    "PlaneStack",
    "VolumeStack",
    "is_omezarr",
    "ngff_metadata",
    "ome_tiff_metadata",
    "ome_tiff_pixel_size",
    "open_ngff",
    "write_ome_tiff_volume",
]
