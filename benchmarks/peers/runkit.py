"""What the peers' run scripts share: the pairs folder and test images in, ``<stem>_instances.tif`` and the JSON
record out, the validation split and the budget's clock.

Runs inside a peer's own environment (``benchmarks/peers/.venvs/PEER``), so it needs only NumPy, tifffile and
Pillow, which both environments have; the pure helpers are tested from the project's environment
(``tests/test_peers.py``) without either peer installed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

TIFF_SUFFIXES = (".tif", ".tiff")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
COMPOUND_SUFFIXES = (".ome.tif", ".ome.tiff")
PAIRS_IMAGE_DIR, PAIRS_LABEL_DIR = "images", "labels"


def output_stem(path: str | os.PathLike[str]) -> str:
    """The file name without its extension, as ``biounet predict`` names its outputs (``biounet.data.files.output_stem``).

    >>> output_stem("data/t001.tif"), output_stem("a.b.png"), output_stem("x.ome.tif")
    ('t001', 'a.b', 'x')
    """
    name = Path(path).name
    for suffix in COMPOUND_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def instances_path(out_dir: str | os.PathLike[str], image: str | os.PathLike[str]) -> Path:
    """Where the instances predicted for ``image`` go: ``OUT/<stem>_instances.tif``, which ``biounet evaluate``
    pairs with the ground truth ``<stem>.*``.

    >>> instances_path("out", "data/images/t002.tif").as_posix()
    'out/t002_instances.tif'
    """
    return Path(out_dir) / f"{output_stem(image)}_instances.tif"


def check_unique_stems(images: Sequence[str | os.PathLike[str]]) -> None:
    """Raise ``ValueError`` where two test images would write the same output (``a.tif`` and ``a.png``)."""
    seen: dict[str, Path] = {}
    for image in images:
        stem = output_stem(image)
        if stem in seen:
            raise ValueError(f"test images {seen[stem]} and {image} would both be written as {stem}_instances.tif")
        seen[stem] = Path(image)


def parse_run_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line every peer runner takes from ``benchmarks/peers.py`` (one definition for both peers);
    checks that the test images' output stems are distinct."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--test", type=Path, nargs="+", required=True)
    parser.add_argument("--budget-s", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    check_unique_stems(args.test)
    return args


def validation_split(n_images: int, *, fraction: float = 0.15, seed: int = 42) -> tuple[list[int], list[int]]:
    """Indices ``(train, validation)`` as StarDist's training notebook splits: a seeded permutation, the first
    ``max(1, round(fraction * n))`` of it for validation.

    >>> validation_split(10, seed=42)
    ([5, 0, 7, 2, 9, 4, 3, 6], [8, 1])

    Raises
    ------
    ValueError
        If fewer than two images are given or ``fraction`` is not in (0, 1).
    """
    if n_images < 2:
        raise ValueError(f"need at least 2 training images to hold one back for validation, got {n_images}")
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    order = np.random.RandomState(seed).permutation(n_images)  # the notebook's generator, for its split
    n_val = max(1, int(round(fraction * n_images)))
    return [int(i) for i in order[n_val:]], [int(i) for i in order[:n_val]]


class Deadline:
    """The budget's clock: started when the training data are in memory, read with ``time.perf_counter``.

    Like ``biounet train --time-budget``, whose clock runs from the start of its training loop (target
    preparation, steps and validations) and not through loading the images or the final choice of
    post-processing, the peers' clocks cover target preparation, training and validation during training.
    """

    def __init__(self, budget_s: float, *, start: float | None = None) -> None:
        if not budget_s > 0:
            raise ValueError(f"budget_s must be > 0, got {budget_s}")
        self.budget_s = float(budget_s)
        self.start = time.perf_counter() if start is None else start

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def remaining(self) -> float:
        return self.budget_s - self.elapsed()


def epochs_that_fit(remaining_s: float, epoch_s: float) -> int:
    """Whole epochs of ``epoch_s`` seconds that fit in ``remaining_s``, at least 1 (a peer trains for at least one).

    >>> epochs_that_fit(100.0, 30.0), epochs_that_fit(10.0, 30.0)
    (3, 1)

    Raises
    ------
    ValueError
        If ``epoch_s`` is not positive and finite.
    """
    if not (epoch_s > 0 and math.isfinite(epoch_s)):
        raise ValueError(f"epoch_s must be positive and finite, got {epoch_s}")
    return max(1, int(remaining_s // epoch_s))


def another_epoch_fits(remaining_s: float, epoch_durations_s: Sequence[float]) -> bool:
    """Whether an epoch as long as the longest so far (validation included) ends before the budget does.

    >>> another_epoch_fits(70.0, [50.0, 60.0]), another_epoch_fits(59.0, [50.0, 60.0])
    (True, False)
    """
    if not epoch_durations_s:
        return remaining_s > 0
    return remaining_s >= max(epoch_durations_s)


# --- files ----------------------------------------------------------------------------------------------------------


def read_image(path: str | os.PathLike[str]) -> npt.NDArray[Any]:
    """A 2-D grayscale image or label image: TIFF with tifffile (LZW needs imagecodecs), PNG/JPEG/BMP with Pillow.

    Raises
    ------
    ValueError
        If the file holds anything but one 2-D plane, or its suffix is not one of those above.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        import tifffile

        array = np.asarray(tifffile.imread(path))
    elif suffix in PIL_SUFFIXES:
        from PIL import Image

        with Image.open(path) as image:
            array = np.asarray(image)
    else:
        raise ValueError(f"{path}: unsupported suffix {suffix!r}; expected one of {TIFF_SUFFIXES + PIL_SUFFIXES}")
    array = np.squeeze(array)
    if array.ndim != 2:
        raise ValueError(f"{path}: expected one 2-D grayscale plane, got shape {array.shape}")
    return array


def read_pairs(data_dir: str | os.PathLike[str]) -> tuple[list[str], list[npt.NDArray[Any]], list[npt.NDArray[Any]]]:
    """Stems, images and instance labels of a pairs folder (``images/<stem>.*`` with ``labels/<stem>.*``), as
    ``biounet train`` reads it, sorted by stem.

    Raises
    ------
    FileNotFoundError
        If ``images/`` or ``labels/`` is missing.
    ValueError
        If an image has no label file of the same stem (or the reverse), sizes differ, or labels are not integers.
    """
    root = Path(data_dir)
    folders = {}
    for name in (PAIRS_IMAGE_DIR, PAIRS_LABEL_DIR):
        folder = root / name
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such directory (a pairs folder has images/ and labels/)")
        folders[name] = {output_stem(p): p for p in sorted(folder.iterdir())
                         if p.suffix.lower() in TIFF_SUFFIXES + PIL_SUFFIXES and not p.name.startswith(".")}
    images, labels = folders[PAIRS_IMAGE_DIR], folders[PAIRS_LABEL_DIR]
    if set(images) != set(labels):
        unpaired = sorted(set(images) ^ set(labels))
        raise ValueError(f"{root}: images and labels do not pair by stem: {', '.join(unpaired[:5])}")
    if not images:
        raise ValueError(f"{root}: no images in {root / PAIRS_IMAGE_DIR}")
    stems = sorted(images)
    xs, ys = [], []
    for stem in stems:
        image, label = read_image(images[stem]), read_image(labels[stem])
        if image.shape != label.shape:
            raise ValueError(f"{root}: {stem}: image {image.shape} and labels {label.shape} differ in size")
        if not np.issubdtype(label.dtype, np.integer):
            raise ValueError(f"{labels[stem]}: labels must be integer instance ids, got dtype {label.dtype}")
        xs.append(image)
        ys.append(label.astype(np.int32))
    return stems, xs, ys


def write_instances(path: str | os.PathLike[str], instances: npt.NDArray[np.integer]) -> None:
    """Write an instance label image as int32 TIFF (0 = background), through a temporary file."""
    import tifffile

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tifffile.imwrite(tmp, np.asarray(instances, dtype=np.int32))
    tmp.replace(path)


def write_record(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """The run's record as one JSON line (what ``benchmarks/peers.py`` reads back)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, default=str) + "\n")
    tmp.replace(path)
