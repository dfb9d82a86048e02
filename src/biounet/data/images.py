"""Images read lazily and written tiled: every image is a stack of planes, ``(Z, H, W, C)`` channel-last (a PNG is
``(1, H, W, C)``, a multi-page TIFF ``(pages, H, W, C)``); TIFF and zarr inputs are opened lazily
(:class:`ImageSource`) so that an image larger than memory is read one region at a time."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from biounet.data.files import TIFF_SUFFIXES, atomic_path, format_size

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


__all__ = ['MAX_CHUNK_BYTES', 'MAX_EAGER_BYTES', 'MAX_PLANE_PIXELS', 'PALETTE', 'ImageError', 'ImageSource', 'check_plane_size', 'label_dtype', 'open_image', 'read_image', 'read_labels', 'read_stack', 'write_png', 'write_tiff']
