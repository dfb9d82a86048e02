"""Reading images lazily, normalising intensities, naming files by stem, and writing files atomically.

Every image is seen as a stack of planes, ``(Z, H, W, C)`` channel-last: a PNG is ``(1, H, W, C)``, a multi-page
TIFF ``(pages, H, W, C)``. TIFF and zarr inputs are opened lazily (:class:`ImageSource`) so that an image larger
than memory is read one region at a time.

Intensity normalisation (``normalization=``), applied per plane and per channel, is part of a model's contract and
is stored in its checkpoint:

- ``"range"``: integer images are divided by their dtype's maximum (uint8 by 255, uint16 by 65535); signed integers
  are shifted to start at 0 first; float images are used as they are.
- ``"percentile"``: ``(x - p1) / (p99.8 - p1)`` with percentiles of the plane (robust to 12-bit data in 16-bit
  files and to different microscope settings). The default.
- ``"minmax"``: ``(x - min) / (max - min)`` over the plane.
- ``"zscore"``: ``(x - mean) / std`` over the plane.

Statistics of a plane larger than ``STATS_MAX_PIXELS`` are taken on a regular subsample of its rows and columns.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

NORMALIZATIONS: tuple[str, ...] = ("percentile", "range", "minmax", "zscore")
PALETTE = np.array(
    [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75],
     [227, 119, 194], [188, 189, 34], [23, 190, 207]], dtype=np.uint8,
)
"""Distinct colours for class or instance ids 1, 2, ... (tab10 without grey), as RGB bytes; 0 stays black."""
PERCENTILES: tuple[float, float] = (1.0, 99.8)
STATS_MAX_PIXELS = 4_000_000
STATS_BLOCK_BYTES = 32 * 2**20
"""Largest block of raw pixels read at once while sampling a plane for its statistics."""
MAX_PLANE_PIXELS = 2**32
"""Largest plane accepted (65536 x 65536 pixels): a size sanity limit checked on the header, before any pixel is
read, so that a damaged or crafted header cannot make prediction allocate or run without bound."""
MAX_EAGER_BYTES = 2**30
"""Largest image read whole into memory (PNG, JPEG and other formats without lazy access)."""
MAX_CHUNK_BYTES = 256 * 2**20
"""Largest strip or tile of a TIFF read lazily: reading any region decodes the whole strip or tile."""
TIFF_SUFFIXES = (".tif", ".tiff")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
IMAGE_SUFFIXES = TIFF_SUFFIXES + PIL_SUFFIXES + (".zarr", ".npy")
COMPOUND_SUFFIXES = (".ome.tif", ".ome.tiff", ".ome.zarr")
"""Two-part extensions that :func:`output_stem` removes whole (OME-TIFF and OME-Zarr)."""
_SUPPORTED_KINDS = "biu f"  # numpy dtype kinds: bool (labels only), int, uint, float


class ImageError(ValueError):
    """An input file that cannot be used as an image; the message names the file and the problem."""


class OutputError(OSError):
    """A file or folder that could not be written. ``str()`` names the user's path (never a temporary file) and
    the operating system's reason, so the CLI can show it as one line."""

    def __init__(self, path: str | os.PathLike[str], err: OSError, action: str = "cannot write") -> None:
        reason = err.strerror or str(err) or type(err).__name__
        super().__init__(err.errno, f"{path}: {action} ({reason})")
        self.path = Path(path)
        self.action = action
        self.reason = reason

    def __str__(self) -> str:
        return str(self.strerror)


def label_dtype(num_classes: int) -> np.dtype[Any]:
    """The smallest unsigned dtype of a label image with class ids ``0 .. num_classes - 1``.

    >>> label_dtype(256), label_dtype(257)
    (dtype('uint8'), dtype('uint16'))
    """
    return np.dtype(np.uint8 if num_classes <= 256 else np.uint16)


def format_size(nbytes: float) -> str:
    """A byte count for messages: ``1.5 GiB``, ``37 GiB``, ``512 MiB``.

    >>> format_size(1536 * 2**20), format_size(2**20), format_size(100)
    ('1.5 GiB', '1 MiB', '100 B')
    """
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            value = nbytes / size
            return f"{value:.1f} {unit}".replace(".0 ", " ") if value < 10 else f"{value:.0f} {unit}"
    return f"{int(nbytes)} B"


@dataclass
class ImageSource:
    """A lazily read image of shape ``(Z, H, W, C)`` (planes, rows, columns, channels).

    ``array`` is anything indexable with slices (a numpy array, a zarr array over a TIFF); ``axes_order`` maps
    the stored axes to (Z, H, W, C).
    """

    path: Path
    array: Any
    shape: tuple[int, int, int, int]
    dtype: np.dtype[Any]
    layout: str  # one of "YX", "YXC", "ZYX", "ZYXC", "CYX", "ZCYX"
    pixel_size: Any = None  # biounet.data.omezarr.PixelSize from OME-TIFF or OME-Zarr metadata, else None

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
        else:  # ZCYX
            block = np.moveaxis(np.asarray(self.array[plane, :, rows, cols]), 0, -1)
        return block

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
    """Open an image lazily (TIFF, zarr) or read it (PNG, JPEG, BMP, .npy), as ``(Z, H, W, C)``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ImageError
        If the file is empty, not an image, or has fewer than 2x2 pixels.
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
    return ImageSource(path, data, tuple(int(s) for s in full), dtype, layout, pixel_size)  # type: ignore[arg-type]


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


# --- file stems -------------------------------------------------------------------------------------------------


def output_stem(path: str | os.PathLike[str]) -> str:
    """The file name without its final extension: what outputs are named after and images and labels pair by.

    Everything but the last extension is kept, so names with dots stay distinct (``a.b.c.tif`` -> ``a.b.c``) and
    hidden files keep their leading dot. The two-part extensions of :data:`COMPOUND_SUFFIXES` (``.ome.tif``,
    ``.ome.tiff``, ``.ome.zarr``, any case) are removed whole.

    >>> output_stem("a.b.c.tif"), output_stem(".hidden.tif"), output_stem("x.ome.tif"), output_stem("data/t001")
    ('a.b.c', '.hidden', 'x', 't001')
    """
    name = Path(path).name
    for suffix in COMPOUND_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def files_by_stem(paths: Iterable[str | os.PathLike[str]]) -> dict[str, Path]:
    """Files keyed by their :func:`output_stem`, in the given order.

    Raises
    ------
    ValueError
        If two files have the same stem (``x.tif`` and ``x.png``); the message names both.
    """
    stems: dict[str, Path] = {}
    for path in map(Path, paths):
        stem = output_stem(path)
        if stem in stems:
            raise ValueError(f"two files with the stem {stem!r}: {stems[stem]}, {path}")
        stems[stem] = path
    return stems


# --- intensity normalisation ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Normalization:
    """Per-channel affine map ``(x - offset) / scale`` computed for one plane (see the module docstring)."""

    offset: tuple[float, ...]
    scale: tuple[float, ...]

    def apply(self, block: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Normalise a raw ``(h, w, C)`` block to float32; rejects NaN and Inf."""
        out = block.astype(np.float32)
        if out.dtype.kind == "f" and block.dtype.kind == "f" and not np.all(np.isfinite(out)):
            raise ValueError("image contains NaN or Inf pixels")
        out -= np.asarray(self.offset, dtype=np.float32)
        out /= np.asarray(self.scale, dtype=np.float32)
        return out


def _subsample(source: ImageSource, plane: int) -> npt.NDArray[Any]:
    step = max(1, int(np.ceil(np.sqrt(source.height * source.width / STATS_MAX_PIXELS))))
    if step == 1:
        return source.read_plane(plane)
    row_bytes = source.width * source.channels * source.dtype.itemsize
    block = max(1, STATS_BLOCK_BYTES // max(row_bytes, 1) // step) * step  # rows per read, a multiple of step
    rows = []
    for top in range(0, source.height, block):  # bounded memory: at most STATS_BLOCK_BYTES (or one row) a read
        strip = source.read(plane, slice(top, min(top + block, source.height)))
        rows.append(np.asarray(strip[::step, ::step]))
    return np.concatenate(rows)


def normalization_for(source: ImageSource, plane: int = 0, mode: str = "percentile") -> Normalization:
    """Compute the normalisation of one plane of ``source`` (see the module docstring for ``mode``)."""
    if mode not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {mode!r}")
    dtype = source.dtype
    channels = source.channels
    if mode == "range":
        if dtype.kind in "ui":
            info = np.iinfo(dtype)
            return Normalization((float(info.min),) * channels, (float(info.max) - float(info.min),) * channels)
        if dtype.kind == "b":
            return Normalization((0.0,) * channels, (1.0,) * channels)
        sample = _subsample(source, plane)
        _check_finite(source, sample)
        return Normalization((0.0,) * channels, (1.0,) * channels)
    sample = _subsample(source, plane).reshape(-1, channels).astype(np.float64)
    _check_finite(source, sample)
    if mode == "percentile":
        low, high = np.percentile(sample, PERCENTILES, axis=0)
    elif mode == "minmax":
        low, high = sample.min(axis=0), sample.max(axis=0)
    else:
        low, std = sample.mean(axis=0), sample.std(axis=0)
        high = low + std
    scale = np.where(high - low > 1e-12, high - low, 1.0)  # a constant plane maps to 0, not to NaN
    return Normalization(tuple(float(v) for v in low), tuple(float(v) for v in scale))


def _check_finite(source: ImageSource, sample: npt.NDArray[Any]) -> None:
    if sample.dtype.kind == "f" and not np.all(np.isfinite(sample)):
        raise ValueError(f"{source.path}: image contains NaN or Inf pixels")


def normalize(image: npt.NDArray[Any], mode: str = "percentile") -> npt.NDArray[np.float32]:
    """Normalise an in-memory ``(H, W)`` or ``(H, W, C)`` image to float32 (see the module docstring)."""
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    array = image if image.ndim == 3 else image[..., None]
    source = ImageSource(Path("<array>"), array, (1, *array.shape), array.dtype, "YXC")  # type: ignore[arg-type]
    _check_dtype(source.path, source.dtype)
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError("image contains NaN or Inf pixels")
    out = normalization_for(source, 0, mode).apply(array)
    return out if image.ndim == 3 else out[..., 0]


# --- atomic writing ---------------------------------------------------------------------------------------------


def check_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` if needed and check that files can be written in it."""
    path = check_creatable_dir(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{path}: cannot create output directory ({err.strerror})") from err
    if not path.is_dir():
        raise ValueError(f"{path}: output path exists and is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{path}: output directory is not writable")
    return path


def check_creatable_dir(path: str | os.PathLike[str]) -> Path:
    """Check, without creating anything, that ``path`` is a writable directory or could be created as one.

    Raises
    ------
    ValueError
        If ``path`` is a file, lies under a file, or its nearest existing folder is not writable (read-only file
        system, no permission); the message names ``path``.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{path}: output path exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"{path}: output directory is not writable")
        return path
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{path}: cannot create output directory ({parent} is a file)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{path}: cannot create output directory ({parent} is not writable)")
    return path


def _temp_path(path: Path) -> Path:
    """A new hidden temporary file beside ``path``, with the permissions a plain ``open`` would give it."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:  # read-only file system, no permission, full disk, parent not a folder
        raise OutputError(path, err) from err
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Write a file atomically: yield a temporary path beside ``path`` to write to.

    When the block succeeds the temporary file replaces ``path`` (one rename in the same directory, so readers see
    the old file or the new one, never a partial one); when it raises, the temporary file is removed and an
    existing ``path`` is left as it was. An ``OSError`` while writing or renaming (full disk, read-only file
    system) becomes an :class:`OutputError` naming ``path``, not the temporary file.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text(), [p.name for p in target.parent.iterdir()]
    ('done', ['notes.txt'])
    """
    path = Path(path)
    tmp = _temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OutputError:
        raise
    except OSError as err:
        raise OutputError(path, err) from err
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


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


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to a file atomically (:func:`atomic_path`); a full disk is an :class:`OutputError` naming
    ``path``, and leaves neither a partial file nor a temporary one."""
    path = Path(path)
    with atomic_path(path) as tmp:
        _write_all(tmp, data)
    return path


def _write_all(path: Path, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write a text file atomically (:func:`atomic_path`)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def write_png(path: str | os.PathLike[str], rgb: npt.NDArray[np.uint8]) -> Path:
    """Write an 8-bit ``(H, W)`` or ``(H, W, 3)`` picture atomically."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")
    return path


def remove_tree(path: Path) -> None:
    """Remove a temporary directory tree, ignoring a missing one."""
    shutil.rmtree(path, ignore_errors=True)
