"""Pictures people can look at: prediction overlays, training curves, the weight-map figure (paper Fig. 3), and a
self-contained HTML report."""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from biounet.data.files import atomic_path, write_text
from biounet.data.images import PALETTE, write_png


def to_gray_uint8(image: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """An ``(H, W)`` or ``(H, W, C)`` image stretched to its 1st..99th percentile, as 8-bit RGB ``(H, W, 3)``."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    low, high = np.percentile(array, (1, 99))
    scaled = np.clip((array - low) / max(float(high - low), 1e-6), 0, 1)
    rgb = scaled if scaled.ndim == 3 and scaled.shape[-1] == 3 else np.repeat(
        (scaled if scaled.ndim == 2 else scaled.mean(-1))[..., None], 3, axis=-1)
    return (rgb * 255).astype(np.uint8)


def overlay(
    image: npt.NDArray[Any], labels: npt.NDArray[np.integer], *, truth: npt.NDArray[np.integer] | None = None,
    alpha: float = 0.35,
) -> npt.NDArray[np.uint8]:
    """The image with predicted regions tinted and outlined (and ground-truth outlines in white, if given).

    ``labels`` holds class ids or instance ids; 0 is background and stays untinted.
    """
    from skimage.segmentation import find_boundaries

    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels {labels.shape} and image {image.shape[:2]} must have the same size")
    rgb = to_gray_uint8(image).astype(np.float32)
    colours = PALETTE[(np.asarray(labels, dtype=np.int64) - 1) % len(PALETTE)].astype(np.float32)
    inside = labels > 0
    rgb[inside] = (1 - alpha) * rgb[inside] + alpha * colours[inside]
    edges = find_boundaries(labels, mode="inner") & inside
    rgb[edges] = colours[edges]
    if truth is not None:
        rgb[find_boundaries(truth, mode="inner") & (truth > 0)] = 255.0
    return rgb.astype(np.uint8)


def side_by_side(panels: Sequence[npt.NDArray[np.uint8]], gap: int = 4) -> npt.NDArray[np.uint8]:
    """Join RGB panels of equal height horizontally with a white gap."""
    height = max(p.shape[0] for p in panels)
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0)), constant_values=255) for p in panels]
    spacer = np.full((height, gap, 3), 255, dtype=np.uint8)
    out: list[npt.NDArray[np.uint8]] = []
    for panel in padded:
        out += [panel, spacer]
    return np.concatenate(out[:-1], axis=1)


MEASURE_LABELS: dict[str, str] = {
    "seg": "SEG", "object_f1": "object F1", "foreground_iou": "foreground IoU", "mean_iou": "mean IoU",
    "pixel_error": "pixel error", "rand_error": "Rand error",
}
"""The validation measures a run records (:mod:`biounet.evaluation.validation`), as the curves name them."""
SELECTING_SUFFIX = " (selects best.pt)"


def curve_series(history: Sequence[dict[str, float]], selected: str | None = None) -> list[tuple[str, str]]:
    """``(measure, label)`` of each validation curve to plot: every measure the history records, the one that
    selects the checkpoint first and labelled so.

    Parameters
    ----------
    history : sequence of dict
        The run's rows (``metrics.csv``): ``step`` and, at validations, a value per measure.
    selected : str, optional
        The measure ``best.pt`` is chosen by (``score_name(select_by, task)``); None where unknown.

    Raises
    ------
    ValueError
        If ``selected`` is not one of :data:`MEASURE_LABELS`.

    Examples
    --------
    >>> curve_series([{"step": 10, "seg": 0.79, "mean_iou": 0.52}], "seg")
    [('seg', 'SEG (selects best.pt)'), ('mean_iou', 'mean IoU')]
    """
    if selected is not None and selected not in MEASURE_LABELS:
        raise ValueError(f"selected must be one of {tuple(MEASURE_LABELS)} or None, got {selected!r}")
    recorded = [key for key in MEASURE_LABELS
                if any(key in row and not math.isnan(float(row[key])) for row in history)]
    ordered = sorted(recorded, key=lambda key: key != selected)  # stable: the others keep their order
    return [(key, MEASURE_LABELS[key] + (SELECTING_SUFFIX if key == selected else "")) for key in ordered]


def plot_curves(history: Sequence[dict[str, float]], path: str | os.PathLike[str], *,
                selected: str | None = None) -> Path:
    """Training loss and validation scores against the step, as a PNG (written atomically).

    Every measure the history records is drawn (:func:`curve_series`); ``selected``, the measure that chooses
    ``best.pt``, in a heavier line and named in the legend and the title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = [row["step"] for row in history]
    figure = Figure(figsize=(9, 3.4), dpi=100)
    FigureCanvasAgg(figure)
    loss_axes, score_axes = figure.subplots(1, 2)
    loss_axes.plot(steps, [row.get("train_loss", np.nan) for row in history], marker="o", ms=3)
    loss_axes.set(xlabel="step", ylabel="weighted cross-entropy", title="training loss")
    for key, label in curve_series(history, selected):
        heavy = key == selected
        score_axes.plot(steps, [row.get(key, np.nan) for row in history], marker="o", ms=4 if heavy else 2,
                        lw=2.5 if heavy else 1.0, alpha=1.0 if heavy else 0.7, label=label, zorder=3 if heavy else 2)
    chosen = f": best.pt by {MEASURE_LABELS[selected]}" if selected is not None and score_axes.lines else ""
    score_axes.set(xlabel="step", title=f"validation{chosen}")
    if score_axes.lines:
        score_axes.legend(fontsize="small")
    for axes in (loss_axes, score_axes):
        axes.grid(alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def _minmax_for_display(image: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """``image`` scaled to 0..1 by its min and max (all zeros for a constant image)."""
    image = np.asarray(image, dtype=np.float64)
    low, high = np.nanmin(image), np.nanmax(image)
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def plot_weight_map(
    image: npt.NDArray[np.number],
    instances: npt.NDArray[np.integer],
    classes: npt.NDArray[np.integer],
    weights: npt.NDArray[np.floating],
    path: str | os.PathLike[str],
) -> Path:
    """Write a PNG in the layout of the paper's Fig. 3.

    Panels: (a) the raw image, (b) the ground-truth instances in distinct colours over the image, (c) the
    taught classes (for the paper's target: cells white, background and separation borders black; unannotated
    pixels grey), (d) the weight map with a colour bar. Pass the arrays the loss sees
    (:func:`biounet.core.targets.training_targets`), so the picture shows what the network is taught.

    Parameters
    ----------
    image : (H, W) or (H, W, 3) ndarray
        Raw image, any value range (rescaled for display).
    instances : (H, W) ndarray of int
        Ground-truth instance labels, touching cells allowed.
    classes : (H, W) ndarray of int
        The taught class map (``TrainingTargets.classes``); -1 = unannotated.
    weights : (H, W) ndarray of float
        The weight map the loss uses (``TrainingTargets.weights``).
    path : str or PathLike
        Output PNG file; written atomically (:func:`biounet.data.files.atomic_path`).

    Returns
    -------
    path : Path
        The written file.

    Raises
    ------
    ValueError
        If the shapes differ.

    Notes
    -----
    Uses matplotlib's object API with the Agg canvas, so the global pyplot backend is left untouched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from skimage.color import label2rgb

    image, weights, classes = np.asarray(image), np.asarray(weights), np.asarray(classes)
    if image.shape[:2] != instances.shape or weights.shape != instances.shape or classes.shape != instances.shape:
        raise ValueError(f"image {image.shape}, instances {instances.shape}, classes {classes.shape} and weights "
                         f"{weights.shape} must share (H, W)")
    mask = np.where(classes < 0, 0.5 * classes.max(initial=1), classes)
    path = Path(path)
    shown = _minmax_for_display(image)
    grey = shown if shown.ndim == 2 else shown.mean(axis=-1)
    figure = Figure(figsize=(16, 4.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 4)
    axes[0].imshow(shown, cmap="gray")
    axes[1].imshow(label2rgb(instances, image=grey, bg_label=0, alpha=0.45, image_alpha=1.0))
    axes[2].imshow(mask, cmap="gray", interpolation="nearest", vmin=0)
    shown_weights = axes[3].imshow(weights, cmap="jet", interpolation="nearest")
    figure.colorbar(shown_weights, ax=axes[3], fraction=0.046, pad=0.02)
    titles = ("a  raw image", "b  ground truth", "c  taught classes", "d  pixel-wise loss weight")
    for axis, title in zip(axes, titles):
        axis.set_title(title, loc="left")
        axis.set_axis_off()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return path


def _embedded_png(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


def write_report(
    path: str | os.PathLike[str], *, title: str, summary: dict[str, Any], pictures: Sequence[tuple[str, Path]],
    config_text: str = "",
) -> Path:
    """A self-contained HTML page: a summary table, the pictures (embedded), and the run's config."""
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in summary.items())
    figures = "".join(f"<figure><figcaption>{html.escape(caption)}</figcaption>{_embedded_png(p)}</figure>"
                      for caption, p in pictures if p.exists())
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:1200px}img{max-width:100%}"
        "th{text-align:left;padding-right:1em}figure{margin:1.5em 0}figcaption{font-weight:bold}"
        f"</style></head><body><h1>{html.escape(title)}</h1><table>{rows}</table>{figures}"
        f"<h2>config</h2><pre>{html.escape(config_text)}</pre></body></html>"
    )
    return write_text(path, page)


def save_overlay(path: str | os.PathLike[str], image: npt.NDArray[Any], labels: npt.NDArray[np.integer],
                 truth: npt.NDArray[np.integer] | None = None) -> Path:
    """Write image | prediction overlay (| ground truth overlay) as one PNG."""
    panels = [to_gray_uint8(image), overlay(image, labels)]
    if truth is not None:
        panels.append(overlay(image, truth))
    return write_png(path, side_by_side(panels))


def outlines(image: npt.NDArray[Any], labels: npt.NDArray[np.integer]) -> npt.NDArray[np.uint8]:
    """The image (8-bit grey, :func:`to_gray_uint8`) with the inner outline of every labelled region in its
    :data:`~biounet.data.images.PALETTE` colour and nothing tinted, so the cells stay visible. ``image`` is ``(H, W)`` or
    ``(H, W, C)``; ``labels`` ``(H, W)`` class or instance ids, 0 = background."""
    return overlay(image, labels, alpha=0.0)


def save_outlines(path: str | os.PathLike[str], image: npt.NDArray[Any],
                  labels: npt.NDArray[np.integer]) -> Path:
    """Write :func:`outlines` of ``labels`` over ``image`` as an RGB PNG (atomically)."""
    return write_png(path, outlines(image, labels))
