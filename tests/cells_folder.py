"""A small hand-annotated-looking dataset for the first-hour tests: bright cells on a dark, noisy background, with
masks in the styles people bring (napari or Cellpose instance ids, 0/1 or 0/255 class masks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile


def cell_instances(rng: np.random.Generator, size: int = 96, n_cells: int = 12) -> np.ndarray:
    """``n_cells`` separate discs of radius size/20..size/13 px with ids 1..n_cells (Cellpose style), int32."""
    labels = np.zeros((size, size), dtype=np.int32)
    rows, cols = np.mgrid[:size, :size]
    placed = 0
    for _ in range(100 * n_cells):
        if placed == n_cells:
            return labels
        radius = rng.uniform(size / 20, size / 13)
        r, c = rng.uniform(radius + 1, size - radius - 1, size=2)
        disc = np.hypot(rows - r, cols - c) <= radius
        grown = np.hypot(rows - r, cols - c) <= radius + 2  # keep one-piece cells apart
        if labels[grown].any():
            continue
        placed += 1
        labels[disc] = placed
    if placed < n_cells:
        raise ValueError(f"could not place {n_cells} separate cells on {size}x{size}")
    return labels


def napari_ids(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same cells with random, non-consecutive ids, as a napari label layer saves them."""
    ids = np.concatenate([[0], rng.choice(np.arange(2, 60_000), size=int(labels.max()), replace=False)])
    return ids[labels].astype(np.int32)


def image_of(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """8-bit image: cells bright, background dark, with noise."""
    image = np.where(labels > 0, 170.0, 40.0) + rng.normal(0, 12, labels.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_cells_folder(root: Path, style: str, rng: np.random.Generator, *, n_images: int = 4,
                       size: int = 96) -> Path:
    """``root/images/cell_NN.tif`` and ``root/labels/cell_NN.tif`` (or ``.png``) with masks in ``style``:
    ``napari``, ``cellpose``, ``binary255`` or ``binary01``."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for index in range(n_images):
        cells = cell_instances(rng, size)
        tifffile.imwrite(root / "images" / f"cell_{index:02d}.tif", image_of(cells, rng))
        name = root / "labels" / f"cell_{index:02d}"
        if style == "napari":
            tifffile.imwrite(name.with_suffix(".tif"), napari_ids(cells, rng))
        elif style == "cellpose":
            Image.fromarray(cells.astype(np.uint16)).save(name.with_suffix(".png"))
        elif style == "binary255":
            Image.fromarray(((cells > 0) * 255).astype(np.uint8)).save(name.with_suffix(".png"))
        elif style == "binary01":
            tifffile.imwrite(name.with_suffix(".tif"), (cells > 0).astype(np.uint8))
        else:
            raise ValueError(f"unknown mask style {style!r}")
    return root
