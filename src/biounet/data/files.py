"""Files by name and written safely: output stems, folders checked before a run writes, atomic writes (a temporary
name, then a rename), and errors that name the file."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

TIFF_SUFFIXES = (".tif", ".tiff")


PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


IMAGE_SUFFIXES = TIFF_SUFFIXES + PIL_SUFFIXES + (".zarr", ".npy")


COMPOUND_SUFFIXES = (".ome.tif", ".ome.tiff", ".ome.zarr")
"""Two-part extensions that :func:`output_stem` removes whole (OME-TIFF and OME-Zarr)."""


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


def remove_tree(path: Path) -> None:
    """Remove a temporary directory tree, ignoring a missing one."""
    shutil.rmtree(path, ignore_errors=True)


__all__ = ['COMPOUND_SUFFIXES', 'IMAGE_SUFFIXES', 'PIL_SUFFIXES', 'TIFF_SUFFIXES', 'OutputError', 'atomic_path', 'check_creatable_dir', 'check_writable_dir', 'files_by_stem', 'format_size', 'output_stem', 'remove_tree', 'write_bytes', 'write_text']
