"""Images read lazily and written tiled: every image is a stack of planes, ``(Z, H, W, C)`` channel-last (a PNG is
``(1, H, W, C)``, a multi-page TIFF ``(pages, H, W, C)``); TIFF, zarr and HDF5 inputs are opened lazily
(:class:`ImageSource`) so that an image larger than memory is read one region at a time.

A stack is a volume (:attr:`ImageSource.dims` 3: its planes are a spatial z axis, with a voxel size) when the file
says so: an HDF5 file (dataset ``raw``, the PlantSeg / ilastik convention), or a TIFF whose metadata declares a z
axis of 2 or more planes (ImageJ ``slices``, OME ``SizeZ``, or tifffile's ``axes`` with a ``Z``). Other stacks
(multi-page TIFFs without a z axis, time series) are planes to segment one by one (``dims`` 2).
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from biounet.core.extras import require
from biounet.data.files import IMAGE_SUFFIXES, TIFF_SUFFIXES, atomic_path, format_size

PALETTE = np.array(
    [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75],
     [227, 119, 194], [188, 189, 34], [23, 190, 207]], dtype=np.uint8,
)
"""Distinct colours for class or instance ids 1, 2, ... (tab10 without grey), as RGB bytes; 0 stays black."""


MAX_PLANE_PIXELS = 2**32
"""Largest plane accepted (65536 x 65536 pixels): a size sanity limit checked on the header, before any pixel is
read, so that a damaged or crafted header cannot make prediction allocate or run without bound."""


MAX_EAGER_BYTES = 2**30
"""Largest image read whole into memory (PNG, JPEG and other formats without lazy access)."""


MAX_CHUNK_BYTES = 256 * 2**20
"""Largest strip or tile of a TIFF read lazily: reading any region decodes the whole strip or tile."""


_SUPPORTED_KINDS = "biu f"  # numpy dtype kinds: bool (labels only), int, uint, float


HDF5_SUFFIXES: tuple[str, ...] = (".h5", ".hdf5")
"""HDF5 files: volumes in the PlantSeg / ilastik convention (datasets :data:`HDF5_RAW_KEY` and ``label``)."""

HDF5_RAW_KEY = "raw"
"""The HDF5 dataset :func:`open_image` reads: the intensities (PlantSeg, ilastik)."""

HDF5_VOXEL_ATTRIBUTE = "element_size_um"
"""Attribute of an HDF5 dataset holding its voxel size ``(z, y, x)`` in micrometres (PlantSeg, ilastik, elf)."""

MAX_CHANNELS = 4
"""Channels of a 4-D volume: an end axis of at most this many entries is the channel axis (:func:`volume_layout`)."""

PAIRS_IMAGE_DIRS: tuple[str, ...] = ("images", "image", "img")
PAIRS_LABEL_DIRS: tuple[str, ...] = ("labels", "label", "masks")
"""The folders of a ``pairs`` dataset (2-D images or 3-D stacks): images and label files paired by file stem."""

_MICROMETRES_PER_UNIT = {
    "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "um": 1.0, "\u00b5m": 1.0, "\\u00b5m": 1.0, "\u03bcm": 1.0,
    "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3, "millimeter": 1e3, "cm": 1e4, "m": 1e6, "meter": 1e6,
    "\u00c5": 1e-4, "angstrom": 1e-4,
}
"""Length units of ImageJ (``unit=``) and OME-XML (``PhysicalSizeZUnit``) metadata, lower-cased, in micrometres."""


class ImageError(ValueError):
    """An input file that cannot be used as an image; the message names the file and the problem."""


def label_dtype(num_classes: int) -> np.dtype[Any]:
    """The smallest unsigned dtype of a label image with class ids ``0 .. num_classes - 1``.

    >>> label_dtype(256), label_dtype(257)
    (dtype('uint8'), dtype('uint16'))
    """
    return np.dtype(np.uint8 if num_classes <= 256 else np.uint16)


@dataclass
class ImageSource:
    """A lazily read image of shape ``(Z, H, W, C)`` (planes, rows, columns, channels).

    ``array`` is anything indexable with slices (a numpy array, a zarr array over a TIFF, an h5py dataset);
    ``layout`` names its stored axes, which :meth:`read` maps to (Z, H, W, C).

    ``dims`` is 3 when the planes are a spatial z axis (an HDF5 volume, a TIFF declaring a z axis; see the module
    docstring), 2 when they are pages or frames to segment one by one. ``voxel_size_um`` is a volume's ``(z, y, x)``
    voxel size in micrometres from its metadata (HDF5 ``element_size_um``, ImageJ ``spacing`` and resolution,
    OME ``PhysicalSizeZ/Y/X``), None where it records none, and for 2-D images (which keep ``pixel_size``).
    """

    path: Path
    array: Any
    shape: tuple[int, int, int, int]
    dtype: np.dtype[Any]
    layout: str  # one of "YX", "YXC", "ZYX", "ZYXC", "CYX", "ZCYX", "CZYX"
    pixel_size: Any = None  # biounet.data.omezarr.PixelSize from OME-TIFF or OME-Zarr metadata, else None
    dims: int = 2  # 3: the planes are a volume's z axis
    voxel_size_um: tuple[float, float, float] | None = None  # a volume's (z, y, x) micrometres

    @property
    def planes(self) -> int:
        return self.shape[0]

    @property
    def height(self) -> int:
        return self.shape[1]

    @property
    def width(self) -> int:
        return self.shape[2]

    @property
    def channels(self) -> int:
        return self.shape[3]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def read(self, plane: int, rows: slice = slice(None), cols: slice = slice(None)) -> npt.NDArray[Any]:
        """Raw pixels of one plane's region, ``(h, w, C)``, in the file's dtype."""
        layout = self.layout
        if layout == "YX":
            block = np.asarray(self.array[rows, cols])[..., None]
        elif layout == "YXC":
            block = np.asarray(self.array[rows, cols, :])
        elif layout == "ZYX":
            block = np.asarray(self.array[plane, rows, cols])[..., None]
        elif layout == "ZYXC":
            block = np.asarray(self.array[plane, rows, cols, :])
        elif layout == "CYX":
            block = np.moveaxis(np.asarray(self.array[:, rows, cols]), 0, -1)
        elif layout == "CZYX":
            block = np.moveaxis(np.asarray(self.array[:, plane, rows, cols]), 0, -1)
        else:  # ZCYX
            block = np.moveaxis(np.asarray(self.array[plane, :, rows, cols]), 0, -1)
        return block

    def read_region(self, planes: slice = slice(None), rows: slice = slice(None), cols: slice = slice(None)
                    ) -> npt.NDArray[Any]:
        """Raw pixels of a region of several planes, ``(z, h, w, C)``, in the file's dtype (a volume's block)."""
        layout = self.layout
        if layout in ("ZYX", "ZYXC"):
            block = np.asarray(self.array[planes, rows, cols])
            return block[..., None] if layout == "ZYX" else block
        if layout == "CZYX":
            return np.moveaxis(np.asarray(self.array[:, planes, rows, cols]), 0, -1)
        if layout == "ZCYX":
            return np.moveaxis(np.asarray(self.array[planes, :, rows, cols]), 1, -1)
        return np.stack([self.read(z, rows, cols) for z in range(self.planes)[planes]])  # one plane

    def read_plane(self, plane: int = 0) -> npt.NDArray[Any]:
        """A whole plane, ``(H, W, C)``, in the file's dtype."""
        return self.read(plane)


def _check_path(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir() and path.suffix.lower() != ".zarr":
        raise ImageError(f"{path}: is a directory, not an image file")
    if path.is_file() and path.stat().st_size == 0:
        raise ImageError(f"{path}: file is empty")
    return path


def _check_dtype(path: Path, dtype: np.dtype[Any], *, allow_bool: bool = False) -> None:
    if dtype.kind == "b" and not allow_bool:
        raise TypeError(f"{path}: unsupported pixel type bool for an image; save it as uint8")
    if dtype.kind not in _SUPPORTED_KINDS:
        raise TypeError(f"{path}: unsupported pixel type {dtype}; expected an integer or float image")


def _layout_from_axes(axes: str, shape: tuple[int, ...]) -> tuple[str, Any]:
    """Map tifffile series axes to one of our layouts; returns (layout, reshape) where reshape is None or a shape."""
    channel_axes = [i for i, a in enumerate(axes) if a in "SC"]

    def planes(kept: int) -> tuple[int, ...] | None:  # several leading axes fold into one plane axis
        lead = shape[:-kept]
        return None if len(lead) == 1 else (int(np.prod(lead)), *shape[-kept:])

    if axes.endswith("YX") and not channel_axes:
        return ("YX", None) if len(axes) == 2 else ("ZYX", planes(2))
    if axes.endswith("YXS") and len(channel_axes) == 1:
        return ("YXC", None) if len(axes) == 3 else ("ZYXC", planes(3))
    if axes.endswith("YX") and len(channel_axes) == 1 and channel_axes[0] == len(axes) - 3:
        return ("CYX", None) if len(axes) == 3 else ("ZCYX", planes(3))
    raise ImageError(f"unsupported TIFF axes {axes!r} with shape {shape}")


def open_image(path: str | os.PathLike[str], *, allow_bool: bool = False) -> ImageSource:
    """Open an image lazily (TIFF, zarr, HDF5) or read it (PNG, JPEG, BMP, .npy), as ``(Z, H, W, C)``.

    An HDF5 file gives its dataset :data:`HDF5_RAW_KEY` as a volume (``dims`` 3, :func:`volume_layout`), the file
    kept open for lazy reads while the source lives; a TIFF declaring a z axis is a volume too (module docstring).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ImageError
        If the file is empty, not an image, or has fewer than 2x2 pixels; an HDF5 file that is damaged, has no
        ``raw`` dataset or whose ``raw`` is not 3-D (or 4-D with channels).
    MissingExtra
        For an HDF5 file when h5py is not installed (``pip install 'biounet[hdf5]'``).
    TypeError
        If the pixels are bool (unless ``allow_bool``), complex or another unsupported type.
    """
    path = _check_path(path)
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        source = _open_tiff(path)
    elif suffix == ".zarr" and _is_omezarr(path):
        source = _open_omezarr(path)
    elif suffix == ".zarr":
        source = _open_zarr(path)
    elif suffix == ".npy":
        source = _open_npy(path)
    elif suffix in HDF5_SUFFIXES:
        source = _open_hdf5_raw(path)
    else:
        source = _open_pil(path)
    _check_dtype(path, source.dtype, allow_bool=allow_bool)
    if source.height < 2 or source.width < 2:
        raise ImageError(f"{path}: image of {source.height}x{source.width} pixels is too small; need at least 2x2")
    check_plane_size(path, source.height, source.width)
    return source


def check_plane_size(path: str | os.PathLike[str], height: int, width: int) -> None:
    """Refuse a plane larger than :data:`MAX_PLANE_PIXELS`, from its header, before any pixel is read."""
    if height * width > MAX_PLANE_PIXELS:
        raise ImageError(
            f"{path}: image of {height}x{width} pixels ({height * width / 1e9:.1f} gigapixels per plane) is larger "
            f"than the limit of {MAX_PLANE_PIXELS / 1e9:.1f} gigapixels; is the file damaged? Otherwise split it "
            f"into smaller images"
        )


def _open_npy(path: Path) -> ImageSource:
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as err:  # pickled object arrays, bad headers, truncated files
        raise ImageError(f"{path}: not a readable numeric .npy array ({err})") from err
    if not isinstance(array, np.ndarray):
        raise ImageError(f"{path}: not a .npy array")
    _check_dtype(path, np.dtype(array.dtype), allow_bool=True)
    return _from_array(path, array)


def _from_array(path: Path, array: Any) -> ImageSource:
    shape = tuple(int(s) for s in array.shape)
    if len(shape) == 2:
        layout = "YX"
    elif len(shape) == 3 and shape[-1] <= 4:
        layout = "YXC"
    elif len(shape) == 3:
        layout = "ZYX"
    elif len(shape) == 4:
        layout = "ZYXC"
    else:
        raise ImageError(f"{path}: unsupported array shape {shape}; expected (H, W), (H, W, C) or (Z, H, W[, C])")
    full = {2: (1, *shape, 1), 3: (1, *shape) if layout == "YXC" else (*shape, 1), 4: shape}[len(shape)]
    return ImageSource(path, array, full, np.dtype(array.dtype), layout)  # type: ignore[arg-type]


def _open_tiff(path: Path) -> ImageSource:
    import tifffile
    import zarr

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, shape, dtype = series.axes, tuple(series.shape), np.dtype(series.dtype)
            layout, reshape = _layout_from_axes(axes, shape)
            small = series.size * dtype.itemsize <= 64 * 2**20
            memmap = _check_tiff_header(path, series, layout, reshape)  # before any pixel is read
            data = series.asarray() if small else None
            pixel_size = _ome_pixel_size(tif.ome_metadata if tif.is_ome else None)
            z_planes, voxel_size = declared_z_planes(series), _tiff_voxel_size_um(tif)
    except ImageError as err:
        raise ImageError(f"{path}: {err}" if not str(err).startswith(str(path)) else str(err)) from None
    except (tifffile.TiffFileError, ValueError, IndexError, OSError) as err:
        raise ImageError(f"{path}: not a readable TIFF image ({err})") from err
    if data is None:
        if memmap:  # one huge uncompressed strip: mapped, so a region read touches only its rows
            data = tifffile.memmap(path, mode="r")
        else:
            data = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
        if reshape is not None:  # several leading axes: read eagerly only as a last resort (bounded above)
            data = np.asarray(data).reshape(reshape)
    elif reshape is not None:
        data = data.reshape(reshape)
    if layout == "YX":
        full = (1, data.shape[0], data.shape[1], 1)
    elif layout == "YXC":
        full = (1, *data.shape)
    elif layout == "ZYX":
        full = (*data.shape, 1)
    elif layout == "ZYXC":
        full = tuple(data.shape)
    elif layout == "CYX":
        full = (1, data.shape[1], data.shape[2], data.shape[0])
    else:
        full = (data.shape[0], data.shape[2], data.shape[3], data.shape[1])
    volume = z_planes >= 2 and full[0] == z_planes  # Z is the only plane axis (not folded with T)
    return ImageSource(path, data, tuple(int(s) for s in full), dtype, layout, pixel_size,  # type: ignore[arg-type]
                       3 if volume else 2, voxel_size if volume else None)


def declared_z_planes(series: Any) -> int:
    """The size of the z axis a tifffile series declares (ImageJ ``slices``, OME ``SizeZ``, tifffile ``axes``), or 0.

    A multi-page TIFF without such metadata (tifffile axes ``I`` or ``Q``) declares none, and neither does a series
    of volumes (another plane axis such as time ``T`` longer than 1): that is not one volume.
    """
    axes, shape = str(series.axes), tuple(series.shape)
    if "Z" not in axes or any(size > 1 for axis, size in zip(axes, shape) if axis not in "ZYXCS"):
        return 0
    return int(shape[axes.index("Z")])


def tiff_z_planes(path: str | os.PathLike[str]) -> int:
    """:func:`declared_z_planes` of a TIFF file's first series, from its header alone; 0 for other files, and for
    unreadable TIFFs (whose reading reports the problem)."""
    if Path(path).suffix.lower() not in TIFF_SUFFIXES or not Path(path).is_file():
        return 0
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return declared_z_planes(tif.series[0])
    except (tifffile.TiffFileError, ValueError, IndexError, OSError):
        return 0


def _unit_micrometres(unit: str) -> float | None:
    unit = unit.strip()
    return _MICROMETRES_PER_UNIT.get(unit, _MICROMETRES_PER_UNIT.get(unit.lower()))


def _tiff_voxel_size_um(tif: Any) -> tuple[float, float, float] | None:
    """``(z, y, x)`` micrometres from OME-XML (``PhysicalSizeZ/Y/X`` and units, default µm) or from ImageJ metadata
    (``spacing`` for z, the X/YResolution tags for y and x, ``unit``); None where any of them is missing."""
    if tif.is_ome:
        return _ome_voxel_size_um(tif.ome_metadata)
    if not tif.is_imagej or not tif.imagej_metadata:
        return None
    meta, tags = tif.imagej_metadata, tif.pages[0].tags
    scale = _unit_micrometres(str(meta.get("unit", "")))
    if scale is None or "spacing" not in meta or "XResolution" not in tags or "YResolution" not in tags:
        return None
    try:
        (xn, xd), (yn, yd) = tags["XResolution"].value, tags["YResolution"].value
        size = (float(meta["spacing"]) * scale, yd / yn * scale, xd / xn * scale)  # resolution: pixels per unit
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return size if all(v > 0 and math.isfinite(v) for v in size) else None


def _ome_voxel_size_um(ome_xml: str | None) -> tuple[float, float, float] | None:
    try:
        root = ET.fromstring(ome_xml or "")
    except ET.ParseError:
        return None
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None
    size = []
    for axis in "ZYX":
        scale = _unit_micrometres(pixels.attrib.get(f"PhysicalSize{axis}Unit", "\u00b5m"))
        try:
            value = float(pixels.attrib[f"PhysicalSize{axis}"]) * (scale or math.nan)
        except (KeyError, ValueError):
            return None
        if not (value > 0 and math.isfinite(value)):
            return None
        size.append(value)
    return size[0], size[1], size[2]


def _is_omezarr(path: Path) -> bool:
    from biounet.data.omezarr import is_omezarr

    return is_omezarr(path)


def _ome_pixel_size(ome_xml: str | None) -> Any:
    from biounet.data.omezarr import ome_tiff_pixel_size

    return ome_tiff_pixel_size(ome_xml)


def _open_omezarr(path: Path) -> ImageSource:
    """The highest-resolution level of an OME-Zarr image, lazily, as (planes, H, W, C) (see biounet.data.omezarr)."""
    from biounet.data.omezarr import NgffError, open_ngff

    try:
        image = open_ngff(path)
    except NgffError as err:
        raise ImageError(str(err)) from None
    stack = image.planes()
    planes, channels, height, width = stack.shape
    return ImageSource(path, stack, (planes, height, width, channels), stack.dtype, "ZCYX", image.pixel_size)


def _check_tiff_header(path: Path, series: Any, layout: str, reshape: Any) -> bool:
    """Sanity checks of a TIFF series from its header alone; returns whether it is to be memory-mapped.

    Refuses planes over :data:`MAX_PLANE_PIXELS`, stacks that could only be read whole beyond
    :data:`MAX_EAGER_BYTES`, and (for images read lazily) strips or tiles over :data:`MAX_CHUNK_BYTES`, since
    any region read decodes a whole one. One huge uncompressed strip is memory-mapped instead, after checking that
    the file really holds the pixels its header claims.
    """
    shape, dtype = tuple(int(s) for s in series.shape), np.dtype(series.dtype)
    height, width = shape[-3:-1] if layout.endswith("YXC") else shape[-2:]
    check_plane_size(path, height, width)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if nbytes <= 64 * 2**20:
        return False
    if reshape is not None and nbytes > MAX_EAGER_BYTES:
        raise ImageError(f"{path}: TIFF of shape {shape} (axes {series.axes}) would be read whole, "
                         f"{format_size(nbytes)}; save it with one plane axis (ZYX) to read it in regions")
    chunk = tuple(int(c) for c in series.keyframe.chunks)
    chunk_bytes = int(np.prod(chunk)) * dtype.itemsize
    if chunk_bytes <= MAX_CHUNK_BYTES:
        return False
    offset = series.dataoffset
    if offset is None:
        raise ImageError(
            f"{path}: image of {height}x{width} pixels is stored in strips or tiles of "
            f"{'x'.join(map(str, chunk))} pixels ({format_size(chunk_bytes)} each), too large to read in regions "
            f"(limit {format_size(MAX_CHUNK_BYTES)}); save it tiled, e.g. in 512x512 tiles")
    size = path.stat().st_size
    if offset + nbytes > size:
        raise ImageError(f"{path}: truncated or damaged TIFF: its header claims {height}x{width} pixels "
                         f"({format_size(nbytes)} uncompressed) but the file holds {format_size(size)}")
    return True


def _open_zarr(path: Path) -> ImageSource:
    import zarr

    try:
        array = zarr.open(str(path), mode="r")
    except Exception as err:  # zarr raises several unrelated types for a bad store
        raise ImageError(f"{path}: not a readable zarr array ({type(err).__name__}: {err})") from err
    if not hasattr(array, "shape") or not hasattr(array, "dtype"):
        raise ImageError(f"{path}: is a zarr group, not an array")
    return _from_array(path, array)


def _open_pil(path: Path) -> ImageSource:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            _check_eager_size(path, img.height, img.width, len(img.getbands()))
            img.load()
            if img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGB")
            array = np.asarray(img)
    except Image.DecompressionBombError as err:
        raise ImageError(f"{path}: image is too large to read ({err})") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ImageError(f"{path}: not a readable image ({err})") from err
    if array.ndim == 3 and array.shape[-1] in (2, 4) and np.all(array[..., -1] == np.iinfo(array.dtype).max):
        array = array[..., :-1]  # an opaque alpha channel carries nothing
    return _from_array(path, array)


def _check_eager_size(path: Path, height: int, width: int, channels: int) -> None:
    check_plane_size(path, height, width)
    nbytes = height * width * channels * 4  # up to 32 bits per sample
    if nbytes > MAX_EAGER_BYTES:
        raise ImageError(
            f"{path}: image of {height}x{width} pixels would need about {format_size(nbytes)} of memory to read "
            f"whole (the limit is {format_size(MAX_EAGER_BYTES)}); save it as a TIFF or zarr, which are read in "
            f"regions"
        )


# --- HDF5 volumes --------------------------------------------------------------------------------------------


def open_hdf5(path: str | os.PathLike[str]) -> Any:
    """Open an HDF5 file read-only (an ``h5py.File``); h5py is imported only here (extra ``hdf5``).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ImageError
        If the file is empty, damaged or not HDF5.
    MissingExtra
        If h5py is not installed (``pip install 'biounet[hdf5]'``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    h5py = require("h5py", "reading HDF5 files", extra="hdf5")
    try:
        if not h5py.is_hdf5(path):
            raise ImageError(f"{path}: not an HDF5 file (no HDF5 signature); damaged, or another format renamed .h5")
        return h5py.File(path, "r")
    except OSError as err:
        raise ImageError(f"{path}: not a readable HDF5 file ({err})") from err


def hdf5_datasets(file: Any) -> list[str]:
    """The paths of every dataset in an open HDF5 file (groups walked), e.g. ``['label', 'raw']``."""
    import h5py

    found: list[str] = []
    file.visititems(lambda name, item: found.append(name) if isinstance(item, h5py.Dataset) else None)
    return found


def hdf5_dataset(file: Any, key: str) -> Any:
    """The dataset ``key`` of an open HDF5 file; :class:`ImageError` naming the datasets there when it has none."""
    import h5py

    item = file.get(key)
    if not isinstance(item, h5py.Dataset):
        raise ImageError(f"{file.filename}: no dataset {key!r}; datasets found: {hdf5_datasets(file)}")
    return item


def hdf5_voxel_size_um(dataset: Any) -> tuple[float, float, float] | None:
    """The attribute :data:`HDF5_VOXEL_ATTRIBUTE` of an HDF5 dataset as ``(z, y, x)`` micrometres, None if absent.

    Raises
    ------
    ImageError
        If the attribute is there but not three positive finite numbers.
    """
    if HDF5_VOXEL_ATTRIBUTE not in dataset.attrs:
        return None
    value = np.asarray(dataset.attrs[HDF5_VOXEL_ATTRIBUTE]).reshape(-1)
    if value.size != 3 or value.dtype.kind not in "iuf" or not np.all(np.isfinite(value) & (value > 0)):
        raise ImageError(f"{dataset.file.filename}: {dataset.name} attribute {HDF5_VOXEL_ATTRIBUTE} must be three "
                         f"positive micrometres (z, y, x), got {value.tolist()}")
    return float(value[0]), float(value[1]), float(value[2])


def volume_layout(shape: tuple[int, ...]) -> str:
    """The axes of a stored volume: ``"ZYX"`` for 3-D; for 4-D, the channel axis is an end axis of at most
    :data:`MAX_CHANNELS` entries, the last one first (``"ZYXC"``, ilastik's default order), else the first
    (``"CZYX"``, PlantSeg's order). A 4-D volume with both end axes that short reads as ``ZYXC``.

    >>> volume_layout((32, 128, 128)), volume_layout((32, 128, 128, 2)), volume_layout((2, 32, 128, 128))
    ('ZYX', 'ZYXC', 'CZYX')

    Raises
    ------
    ImageError
        If ``shape`` is not 3-D or 4-D with a channel axis at one end.
    """
    if len(shape) == 3:
        return "ZYX"
    if len(shape) == 4 and shape[-1] <= MAX_CHANNELS:
        return "ZYXC"
    if len(shape) == 4 and shape[0] <= MAX_CHANNELS:
        return "CZYX"
    raise ImageError(f"a volume must be 3-D (z, y, x) or 4-D with up to {MAX_CHANNELS} channels first or last "
                     f"(c, z, y, x) / (z, y, x, c), got shape {tuple(shape)}")


def volume_shape(shape: tuple[int, ...], layout: str) -> tuple[int, int, int, int]:
    """``(Z, Y, X, C)`` of a stored volume of ``shape`` and :func:`volume_layout` ``layout``."""
    if layout == "ZYX":
        return (shape[0], shape[1], shape[2], 1)
    if layout == "CZYX":
        return (shape[1], shape[2], shape[3], shape[0])
    return (shape[0], shape[1], shape[2], shape[3])


def _open_hdf5_raw(path: Path) -> ImageSource:
    file = open_hdf5(path)
    raw = hdf5_dataset(file, HDF5_RAW_KEY)
    shape = tuple(int(s) for s in raw.shape)
    try:
        layout = volume_layout(shape)
    except ImageError as err:
        raise ImageError(f"{path}: dataset {HDF5_RAW_KEY!r}: {err}") from None
    return ImageSource(path, raw, volume_shape(shape, layout), np.dtype(raw.dtype), layout, None, 3,
                       hdf5_voxel_size_um(raw))


# --- folders of images ---------------------------------------------------------------------------------------


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders embedded numbers by value.

    >>> sorted(["10.png", "2.png", "1.png"], key=natural_key)
    ['1.png', '2.png', '10.png']
    """
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name))


def image_files(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """The image files (and zarr folders) in ``folder`` with one of ``suffixes``, hidden ones left out, in natural
    order."""
    files = [
        path for path in folder.iterdir()
        if not path.name.startswith(".") and path.suffix.lower() in suffixes and (path.is_file() or path.is_dir())
    ]
    return sorted(files, key=lambda path: natural_key(path.name))


def pairs_folders(root: Path) -> tuple[Path | None, Path | None]:
    """The image folder and label folder of a ``pairs`` dataset (:data:`PAIRS_IMAGE_DIRS`, :data:`PAIRS_LABEL_DIRS`),
    each None when absent; ValueError when there are several of one."""
    images = [root / name for name in PAIRS_IMAGE_DIRS if (root / name).is_dir()]
    labels = [root / name for name in PAIRS_LABEL_DIRS if (root / name).is_dir()]
    if len(images) > 1:
        raise ValueError(f"{root}: several image folders {[p.name for p in images]}; keep one")
    if len(labels) > 1:
        raise ValueError(f"{root}: several label folders {[p.name for p in labels]}; keep one")
    return (images[0] if images else None), (labels[0] if labels else None)


def read_image(path: str | os.PathLike[str]) -> npt.NDArray[Any]:
    """Read a single-plane image whole, as ``(H, W, C)`` in the file's dtype."""
    source = open_image(path)
    if source.planes != 1:
        raise ImageError(f"{path}: has {source.planes} planes; expected a single image (use read_stack)")
    return source.read_plane(0)


def read_stack(path: str | os.PathLike[str]) -> npt.NDArray[Any]:
    """Read every plane of an image whole, as ``(Z, H, W, C)`` in the file's dtype."""
    source = open_image(path)
    return np.stack([source.read_plane(z) for z in range(source.planes)])


def read_labels(path: str | os.PathLike[str]) -> npt.NDArray[np.int64]:
    """Read a label image (class ids or instance ids) as ``(Z, H, W)`` int64.

    Float label files are accepted only when every value is a whole number; colour label files are rejected.
    """
    source = open_image(path, allow_bool=True)
    if source.channels != 1:
        raise ImageError(f"{path}: a label image must have one channel, got {source.channels}")
    labels = np.stack([source.read_plane(z)[..., 0] for z in range(source.planes)])
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise TypeError(f"{path}: float label image with non-integer values; labels must be whole numbers")
    return labels.astype(np.int64)


def write_tiff(path: str | os.PathLike[str], data: Any, *, tile: int = 256, labels: bool = False,
               pixel_size: Any = None) -> Path:
    """Write ``data`` (numpy or zarr array, 2-D to 4-D) to a TIFF atomically (:func:`atomic_path`).

    Arrays over 64 MiB are written tile by tile (BigTIFF, tiled), reading ``data`` one tile at a time, so a
    disk-backed ``data`` is never loaded whole. Planes are the leading axes; the last two are rows and columns.

    ``labels=True`` marks a 2-D or ``(Z, H, W)`` label image (up to 64 MiB) for viewers, pixel values unchanged:
    ``uint8`` (class labels) gets a colour palette, 0 black and 1, 2, ... the colours of :data:`PALETTE`, which
    Fiji shows as the image's lookup table; ``uint16`` (instance ids) gets ImageJ metadata with the display range
    0..largest id, so that cells are not shown near-black.
    With a ``pixel_size`` (:class:`biounet.data.omezarr.PixelSize`) the file is an OME-TIFF recording it
    (``PhysicalSizeX``/``PhysicalSizeY``; axes YX, ZYX or ZCYX; not for tiled stacks, whose planes are samples).
    """
    import tifffile

    path = Path(path)
    nbytes = int(np.prod(data.shape)) * np.dtype(data.dtype).itemsize
    ome: dict[str, Any] = {}
    if pixel_size is not None:
        from biounet.data.omezarr import ome_tiff_metadata

        ome = {"ome": True, "metadata": ome_tiff_metadata(pixel_size, {2: "YX", 3: "ZYX", 4: "ZCYX"}[len(data.shape)])}
    with atomic_path(path) as tmp:
        if nbytes <= 64 * 2**20:
            array = np.asarray(data)
            display = _label_display(array) if labels else {"photometric": "minisblack"}
            if ome:  # OME metadata replaces ImageJ's
                display = {k: v for k, v in display.items() if k not in ("imagej", "metadata")}
            tifffile.imwrite(tmp, array, compression="zlib", **display, **ome)
        else:
            tifffile.imwrite(
                tmp, _tiles(data, tile), shape=tuple(data.shape), dtype=data.dtype, tile=(tile, tile),
                photometric="minisblack", planarconfig="separate" if len(data.shape) > 2 else None,
                bigtiff=True, compression="zlib", **(ome if len(data.shape) == 2 else {}),  # samples: no OME axes
            )
    return path


def _label_display(array: npt.NDArray[Any]) -> dict[str, Any]:
    """tifffile arguments that make Fiji show a label image in colour (see :func:`write_tiff`)."""
    if array.ndim not in (2, 3):
        raise ValueError(f"a label image must be (H, W) or (Z, H, W), got shape {array.shape}")
    if array.dtype == np.uint8:
        colours = np.zeros((256, 3), dtype=np.uint16)
        colours[1:] = PALETTE[np.arange(255) % len(PALETTE)]
        return {"photometric": "palette", "colormap": (colours.T * 257).astype(np.uint16)}  # 8 -> 16 bit
    if array.dtype == np.uint16:
        axes = "YX" if array.ndim == 2 else "ZYX"
        return {"photometric": "minisblack", "imagej": True,
                "metadata": {"axes": axes, "min": 0.0, "max": float(max(1, int(array.max(initial=0))))}}
    return {"photometric": "minisblack"}


def _tiles(data: Any, tile: int) -> Iterator[npt.NDArray[Any]]:
    """Yield (tile, tile) blocks in TIFF order: leading axes, then tile rows, then tile columns."""
    *lead, height, width = data.shape
    for index in np.ndindex(*lead) if lead else [()]:
        for top in range(0, height, tile):
            strip = np.asarray(data[(*index, slice(top, min(top + tile, height)))])
            for left in range(0, width, tile):
                block = np.zeros((tile, tile), dtype=data.dtype)
                part = strip[:, left : left + tile]
                block[: part.shape[0], : part.shape[1]] = part
                yield block


def write_png(path: str | os.PathLike[str], rgb: npt.NDArray[np.uint8]) -> Path:
    """Write an 8-bit ``(H, W)`` or ``(H, W, 3)`` picture atomically."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")
    return path


__all__ = [
    'HDF5_RAW_KEY', 'HDF5_SUFFIXES', 'HDF5_VOXEL_ATTRIBUTE', 'MAX_CHANNELS', 'MAX_CHUNK_BYTES', 'MAX_EAGER_BYTES',
    'MAX_PLANE_PIXELS', 'PAIRS_IMAGE_DIRS', 'PAIRS_LABEL_DIRS', 'PALETTE', 'ImageError', 'ImageSource',
    'check_plane_size', 'declared_z_planes', 'hdf5_dataset', 'hdf5_datasets', 'hdf5_voxel_size_um', 'image_files',
    'label_dtype', 'natural_key', 'open_hdf5', 'open_image', 'pairs_folders', 'read_image', 'read_labels',
    'read_stack', 'tiff_z_planes', 'volume_layout', 'volume_shape', 'write_png', 'write_tiff',
]
