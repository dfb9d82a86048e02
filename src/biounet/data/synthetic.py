"""Synthetic microscopy images with exact labels, for the demo and the tests: no files needed.

Three kinds (:data:`KINDS`) stand in for the paper's three datasets:

- ``"cells"``: roundish, irregular cells, many of them touching (so the weight map's border term matters), with
  texture, dimmer rims, uneven illumination and Poisson plus Gaussian noise, like fluorescence or PhC-U373.
  ``classes = instances > 0``; touching cells are separate instances.
- ``"membranes"``: an EM section like ISBI 2012: Voronoi-like cells separated by wavy dark membranes 2-4 px thick,
  with vesicle dots and noise. Class 1 is the membrane (as for ISBI 2012); the instances are the cells.
- ``"dic"``: DIC relief like DIC-HeLa: the directional derivative of a smooth height map of touching cells,
  a bright and a shadowed side per cell, plus noise. ``classes = instances > 0``.

Images are normalised with :func:`biounet.data.normalization.normalize` (``"percentile"`` by default), as the loaders do, so they
lie in about [0, 1]. Cell sizes are in pixels and do not scale with the image size; the cell count does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from skimage import measure

from biounet.core.samples import IGNORE, Sample
from biounet.data.files import check_writable_dir
from biounet.data.images import write_tiff
from biounet.data.normalization import normalize

KINDS: tuple[str, ...] = ("cells", "membranes", "dic")
MIN_SIZE_PX = 16
WRITE_LABEL_KINDS: tuple[str, ...] = ("instances", "classes")


def make_sample(
    kind: str,
    *,
    size: int | Sequence[int] = (256, 256),
    rng: np.random.Generator | int | None = None,
    normalization: str = "percentile",
) -> Sample:
    """Generate one synthetic sample with exact labels.

    Parameters
    ----------
    kind : {"cells", "membranes", "dic"}
        What to imitate (see the module docstring).
    size : int or (int, int), optional
        Image height and width in pixels, each >= 16; an int gives a square.
    rng : {numpy.random.Generator, int, None}, optional
        Seed or generator; the same seed gives the same sample.
    normalization : str, optional
        :func:`biounet.data.normalization.normalize` mode applied to the rendered image.

    Returns
    -------
    sample : Sample
        Named ``"synthetic/KIND"``; ``image`` is (H, W, 1) float32, ``classes`` (H, W) int64 in {0, 1},
        ``instances`` (H, W) int32 numbered 1..N.

    Raises
    ------
    ValueError
        If ``kind``, ``size`` or ``normalization`` is invalid.

    Examples
    --------
    >>> sample = make_sample("cells", size=64, rng=0)
    >>> sample.image.shape, sample.image.dtype, sample.classes.dtype, sample.instances.dtype
    ((64, 64, 1), dtype('float32'), dtype('int64'), dtype('int32'))
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    shape = _check_size(size)
    rng = np.random.default_rng(rng)
    if kind == "cells":
        raw, classes, instances = _render_cells(shape, rng)
    elif kind == "membranes":
        raw, classes, instances = _render_membranes(shape, rng)
    else:
        raw, classes, instances = _render_dic(shape, rng)
    image = normalize(raw.astype(np.float32)[..., None], normalization)
    return Sample(f"synthetic/{kind}", image, classes.astype(np.int64), instances.astype(np.int32))


def make_dataset(
    kind: str,
    n: int,
    *,
    size: int | Sequence[int] = (256, 256),
    rng: np.random.Generator | int | None = None,
    normalization: str = "percentile",
) -> list[Sample]:
    """Generate ``n`` independent samples named ``"synthetic/KIND/0"``, ``"synthetic/KIND/1"``, ...

    Sample ``i`` depends only on the seed and ``i``, not on ``n``: each sample gets its own child generator
    (``Generator.spawn``). Parameters are those of :func:`make_sample`.

    Raises
    ------
    ValueError
        If ``n < 1`` or another argument is invalid.

    Examples
    --------
    >>> [sample.name for sample in make_dataset("dic", 2, size=32, rng=0)]
    ['synthetic/dic/0', 'synthetic/dic/1']
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    children = np.random.default_rng(rng).spawn(int(n))
    samples = []
    for index, child in enumerate(children):
        sample = make_sample(kind, size=size, rng=child, normalization=normalization)
        sample.name = f"synthetic/{kind}/{index}"
        samples.append(sample)
    return samples


def write_dataset(
    samples: Sequence[Sample], out_dir: str | os.PathLike[str], *, label_kind: str = "instances"
) -> Path:
    """Write samples as a ``pairs`` dataset that :func:`biounet.data.datasets.load_dataset` (and the CLI) can read.

    Each sample becomes ``out_dir/images/NAME.tif``, a float32 (H, W) TIFF of its already normalised image (the
    ``"range"`` normalisation reads it back unchanged, ``"percentile"`` nearly so), and, when labeled,
    ``out_dir/labels/NAME.tif``, uint16. NAME is the sample name with characters other than letters, digits,
    ``.``, ``-`` and ``_`` replaced by ``_``. Every file is written atomically (temporary file, then rename).

    Parameters
    ----------
    samples : sequence of Sample
        Single-channel samples.
    out_dir : str or path-like
        Created if needed; files of the same names are replaced.
    label_kind : {"instances", "classes"}, optional
        ``"instances"``: the label files hold instance ids; read them back with ``label_kind="instances"``
        (classes become ``instances > 0``, so for ``"membranes"`` class 1 is then the cells, not the membrane).
        ``"classes"``: the label files hold class ids; read them back with ``label_kind="classes"`` (instances
        become connected components of each class > 0).

    Returns
    -------
    out_dir : Path

    Raises
    ------
    ValueError
        On an unknown ``label_kind``, a multi-channel image, two samples with the same file name, class labels
        with :data:`biounet.core.samples.IGNORE` pixels (a uint16 file cannot hold them), or ids above 65535; or when
        ``out_dir`` cannot be written.
    """
    if label_kind not in WRITE_LABEL_KINDS:
        raise ValueError(f"label_kind must be one of {WRITE_LABEL_KINDS}, got {label_kind!r}")
    names: dict[str, str] = {}
    for sample in samples:
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", sample.name)
        if stem in names:
            raise ValueError(f"samples {names[stem]!r} and {sample.name!r} would both be written as {stem}.tif")
        names[stem] = sample.name
        if sample.image.shape[2] != 1:
            raise ValueError(f"sample {sample.name!r}: only single-channel images can be written, "
                             f"got {sample.image.shape[2]} channels")
        labels = sample.instances if label_kind == "instances" else sample.classes
        if labels is not None and labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.uint16).max):
            reason = "IGNORE pixels" if labels.min() == IGNORE else f"ids {labels.min()}..{labels.max()}"
            raise ValueError(f"sample {sample.name!r}: {label_kind} with {reason} do not fit a uint16 label file")
    root = check_writable_dir(out_dir)
    images_dir = check_writable_dir(root / "images")
    labels_dir = check_writable_dir(root / "labels")
    for stem, sample in zip(names, samples):
        write_tiff(images_dir / f"{stem}.tif", sample.image[..., 0])
        labels = sample.instances if label_kind == "instances" else sample.classes
        if labels is not None:
            write_tiff(labels_dir / f"{stem}.tif", labels.astype(np.uint16))
    return root


# --- rendering --------------------------------------------------------------------------------------------------


def _check_size(size: int | Sequence[int]) -> tuple[int, int]:
    dims = [size, size] if isinstance(size, (int, np.integer)) else list(size)
    if len(dims) != 2 or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) for d in dims):
        raise ValueError(f"size must be an int or (height, width) ints, got {size!r}")
    if min(dims) < MIN_SIZE_PX:
        raise ValueError(f"size must be at least {MIN_SIZE_PX} px per side, got {tuple(dims)}")
    return int(dims[0]), int(dims[1])


def _smooth_noise(shape: tuple[int, int], sigma_px: float, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Gaussian-filtered white noise rescaled to unit standard deviation.

    A wide filter runs on a grid coarser by ``sigma_px / 2`` and is interpolated back, which is much faster and
    looks the same.
    """
    step = max(1, int(sigma_px // 2))
    coarse = shape if step == 1 else tuple(-(-side // step) + 2 for side in shape)
    field = ndimage.gaussian_filter(rng.standard_normal(coarse), sigma_px / step, mode="wrap")
    if step > 1:
        field = ndimage.zoom(field, step, order=1, grid_mode=False)[: shape[0], : shape[1]]
    return np.asarray(field / max(float(field.std()), 1e-12), dtype=np.float64)


def _illumination(shape: tuple[int, int], strength: float, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Slowly varying multiplicative field around 1: a random linear ramp plus a broad bump."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * rows / shape[0] + np.sin(angle) * cols / shape[1]) - 0.5 * (np.cos(angle) + np.sin(angle))
    centre = rng.uniform(0, 1, 2) * shape
    spread = 0.6 * max(shape)
    bump = np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * spread**2))
    return np.asarray(1 + strength * (ramp + bump - bump.mean()), dtype=np.float64)


def _blob_cells(
    shape: tuple[int, int], rng: np.random.Generator, *, radius_px: tuple[float, float], coverage: float,
    touch_fraction: float,
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float64]]:
    """Irregular elliptical cells; a pixel claimed by two cells goes to the one it is deeper inside.

    Returns ``(instances, depth)``: instance ids 1..N (4-connected, tiny fragments removed) and, per pixel, the
    normalised radius ``rho`` of its cell (0 at the centre, 1 at the rim; inf outside every cell).
    """
    height, width = shape
    mean_radius = float(np.mean(radius_px))
    count = max(2, int(round(coverage * height * width / (np.pi * mean_radius**2))))
    depth = np.full(shape, np.inf)
    owner = np.zeros(shape, dtype=np.int32)
    centres: list[tuple[float, float, float]] = []
    for cell in range(1, count + 1):
        semi_axes = rng.uniform(*radius_px, size=2)
        radius = float(semi_axes.mean())
        centre = None
        if centres and (cell == 2 or rng.random() < touch_fraction):  # the second cell always touches the first
            anchor = centres[0] if cell == 2 else centres[rng.integers(len(centres))]
            for _ in range(8):
                angle = rng.uniform(0, 2 * np.pi)
                distance = (radius + anchor[2]) * rng.uniform(0.7, 0.9)
                candidate = (anchor[0] + distance * np.sin(angle), anchor[1] + distance * np.cos(angle))
                if 0 <= candidate[0] < height and 0 <= candidate[1] < width:
                    centre = candidate
                    break
        if centre is None:
            margin = min(radius, 0.25 * min(shape))
            centre = (rng.uniform(margin, height - margin), rng.uniform(margin, width - margin))
        centres.append((centre[0], centre[1], radius))
        _draw_blob(depth, owner, cell, centre, semi_axes, rng)
    instances = np.asarray(measure.label(owner, background=0, connectivity=1), dtype=np.int32)
    sizes = np.bincount(instances.ravel())
    small = sizes < 0.1 * np.pi * radius_px[0] ** 2
    small[0] = False
    if small.any():
        instances[small[instances]] = 0
        instances = np.asarray(measure.label(instances, background=0, connectivity=1), dtype=np.int32)
    depth[instances == 0] = np.inf
    return instances, depth


def _draw_blob(
    depth: npt.NDArray[np.float64], owner: npt.NDArray[np.int32], cell: int, centre: tuple[float, float],
    semi_axes: npt.NDArray[np.float64], rng: np.random.Generator,
) -> None:
    """Rasterise one cell into ``depth``/``owner`` where it is deeper than what is there (in place)."""
    harmonics = np.arange(2, 6)
    amplitudes = rng.uniform(0, 0.07, harmonics.size)
    phases = rng.uniform(0, 2 * np.pi, harmonics.size)
    orientation = rng.uniform(0, np.pi)
    reach = float(semi_axes.max()) * (1 + amplitudes.sum()) + 1
    top, bottom = max(int(centre[0] - reach), 0), min(int(centre[0] + reach) + 2, depth.shape[0])
    left, right = max(int(centre[1] - reach), 0), min(int(centre[1] + reach) + 2, depth.shape[1])
    if top >= bottom or left >= right:
        return
    rows, cols = np.mgrid[top:bottom, left:right]
    dy, dx = rows - centre[0], cols - centre[1]
    along = (dx * np.cos(orientation) + dy * np.sin(orientation)) / semi_axes[0]
    across = (-dx * np.sin(orientation) + dy * np.cos(orientation)) / semi_axes[1]
    theta = np.arctan2(across, along)
    outline = 1 + (amplitudes[:, None, None] * np.cos(harmonics[:, None, None] * theta + phases[:, None, None])).sum(0)
    rho = np.hypot(along, across) / outline
    window = depth[top:bottom, left:right]
    claim = (rho < 1) & (rho < window)
    window[claim] = rho[claim]
    owner[top:bottom, left:right][claim] = cell


def _render_cells(
    shape: tuple[int, int], rng: np.random.Generator
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int32]]:
    instances, depth = _blob_cells(shape, rng, radius_px=(9.0, 18.0), coverage=0.3, touch_fraction=0.35)
    brightness = rng.uniform(0.45, 0.9, int(instances.max()) + 1)
    brightness[0] = 0
    rim = np.where(np.isfinite(depth), depth, 1.0)
    cells = brightness[instances] * (1 - 0.75 * rim**3)  # dimmer rims: a seam between touching cells
    cells *= 1 + 0.15 * _smooth_noise(shape, 1.5, rng)
    image = 0.08 + ndimage.gaussian_filter(cells, 0.8)
    image *= _illumination(shape, 0.35, rng)
    photons = rng.uniform(40, 150)
    image = rng.poisson(np.clip(image, 0, None) * photons) / photons
    image += rng.normal(0, 0.02, shape)
    return image, (instances > 0).astype(np.int64), instances


def _render_membranes(
    shape: tuple[int, int], rng: np.random.Generator
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int32]]:
    height, width = shape
    diameter = rng.uniform(22, 34)
    count = max(3, int(round(height * width / diameter**2)))
    seeds = np.zeros(shape, dtype=np.int32)
    seeds[rng.integers(0, height, count), rng.integers(0, width, count)] = np.arange(1, count + 1)
    _, nearest = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    voronoi = seeds[nearest[0], nearest[1]]
    # Wavy membranes: look the Voronoi cells up at smoothly displaced coordinates.
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    amplitude = rng.uniform(1.5, 3.5)
    warped = ndimage.map_coordinates(
        voronoi, [rows + amplitude * _smooth_noise(shape, 10, rng), cols + amplitude * _smooth_noise(shape, 10, rng)],
        order=0, mode="nearest",
    )
    edge = np.zeros(shape, dtype=bool)  # pixels with a 4-neighbour in another cell: a 2 px line
    vertical, horizontal = warped[1:] != warped[:-1], warped[:, 1:] != warped[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    widening = np.clip(0.5 + 0.5 * _smooth_noise(shape, 12, rng), 0, 1)  # 2 to 4 px in all
    membrane = ndimage.distance_transform_edt(~edge) <= widening
    instances = np.asarray(measure.label(~membrane, background=0, connectivity=1), dtype=np.int32)

    shade = rng.uniform(0.55, 0.8, int(instances.max()) + 1)
    image = np.where(membrane, 0.12, shade[instances])
    image += 0.06 * _smooth_noise(shape, 2.0, rng)  # cytoplasm texture
    dots = np.zeros(shape)
    inside = np.flatnonzero(~membrane)
    vesicles = rng.choice(inside, size=max(1, inside.size // 250), replace=False)
    dots.flat[vesicles] = rng.uniform(4, 9, vesicles.size)
    image -= ndimage.gaussian_filter(dots, 1.2)
    image = ndimage.gaussian_filter(image, 0.7)
    image *= _illumination(shape, 0.15, rng)
    image += rng.normal(0, 0.05, shape)
    return image, membrane.astype(np.int64), instances


def _render_dic(
    shape: tuple[int, int], rng: np.random.Generator
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int32]]:
    instances, depth = _blob_cells(shape, rng, radius_px=(14.0, 28.0), coverage=0.45, touch_fraction=0.6)
    heights = rng.uniform(0.6, 1.2, int(instances.max()) + 1)
    heights[0] = 0
    dome = np.sqrt(np.clip(1 - np.where(np.isfinite(depth), depth, 1.0) ** 2, 0, None))
    relief = heights[instances] * dome * (1 + 0.1 * _smooth_noise(shape, 2.0, rng))
    relief = ndimage.gaussian_filter(relief, 1.5)
    shear = rng.uniform(0, 2 * np.pi)
    slope_rows, slope_cols = np.gradient(relief)
    contrast = np.sin(shear) * slope_rows + np.cos(shear) * slope_cols
    contrast /= max(float(np.abs(contrast).max()), 1e-12)
    image = 0.5 + 0.4 * contrast
    image *= _illumination(shape, 0.2, rng)
    image += rng.normal(0, 0.03, shape)
    return image, (instances > 0).astype(np.int64), instances
