"""Evaluation of prediction folders against ground truth, the way the paper was measured.

Predictions are paired with ground truth by file stem. A prediction is ``<stem>_prob.tif`` (class probabilities
``(K, H, W)``, as written by ``biounet predict --save-probabilities``), ``<stem>_instances.tif`` (instance
labels, ``--instances``) or ``<stem>.tif`` (class labels). Kinds:

- ``isbi2012``: ground truth PNG/TIFF with 255 = cell, 0 = membrane; the prediction's class 1 is the membrane.
  Pixel error, Rand error (``split``/``merge`` named by the side they divide by), warping error, V_rand
  (``1 - Rand error``) and V_info (the information-theoretic F-score the challenge now ranks by), each at the
  best of the challenge's thresholds (:mod:`biounet.evaluation.metrics`). A label prediction is a 0/1 map. Segments
  (``<stem>_instances.tif``, 0 = boundary, as ``biounet predict --instances`` writes them for a membrane model)
  are also scored as they are, no threshold chosen: the ``segments_*`` columns.
- ``ctc``: Cell Tracking Challenge instance ground truth (``man_segNNN.tif`` pairs with ``tNNN``): SEG (the
  Jaccard index of each ground-truth cell with the predicted cell covering more than half of it), pooled as the
  challenge pools it, over every ground-truth cell of all frames (``pooled["seg"]``; per-frame values beside
  it), and the foreground IoU of the network's own foreground (``<stem>.tif``, class > 0). SEG is measured on
  ``<stem>_instances.tif`` where present, else on the instances made from the class labels as
  ``biounet predict --instances`` makes them. Only annotated cells count in SEG, so partial ground truth is fine.
- ``instances``: instance ground truth (one id per cell, 0 = background; Cellpose or napari label images):
  object-level precision, recall, F1 and average precision at IoU thresholds 0.5, 0.55, ..., 0.9
  (:func:`biounet.evaluation.metrics.object_scores`; per image at 0.5, and pooled over all cells of all images in
  ``pooled["objects"]``, StarDist's convention), and SEG per image and pooled. Predicted instances as for ``ctc``.
  Every true cell counts, so partial ground truth makes unannotated predicted cells false positives.
- ``binary``: any ground-truth mask (non-zero = foreground): foreground IoU, Dice, and the pixel error rate
  (fraction of pixels whose foreground/background call is wrong), from any prediction file kind.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from biounet.core.callable_module import make_callable
from biounet.data.files import IMAGE_SUFFIXES, output_stem
from biounet.data.images import read_labels
from biounet.evaluation import metrics

KINDS: tuple[str, ...] = ("isbi2012", "ctc", "instances", "binary")
_CTC_TRUTH = re.compile(r"^man_seg(\d+)$")


@dataclass
class PredictionFiles:
    """The prediction files found for one stem."""

    probabilities: Path | None = None
    instances: Path | None = None
    labels: Path | None = None
    empty: tuple[int, ...] | None = None  # no file: an all-background prediction of this size (--allow-missing)


def _stem(path: Path) -> str:
    return output_stem(path)


def find_predictions(folder: Path) -> dict[str, PredictionFiles]:
    """Prediction files in ``folder`` grouped by stem (``a_prob.tif``, ``a_instances.tif`` and ``a.tif`` -> ``a``)."""
    found: dict[str, PredictionFiles] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in (".tif", ".tiff"):
            continue
        stem = _stem(path)
        for suffix, attribute in (("_prob", "probabilities"), ("_instances", "instances")):
            if stem.endswith(suffix):
                setattr(found.setdefault(stem[: -len(suffix)], PredictionFiles()), attribute, path)
                break
        else:
            found.setdefault(stem, PredictionFiles()).labels = path
    return found


def find_truth(folder: Path, kind: str) -> dict[str, Path]:
    """Ground-truth files by the stem of the image they annotate (``man_seg005`` -> ``t005`` for ``ctc``)."""
    if kind == "ctc" and (folder / "SEG").is_dir():
        folder = folder / "SEG"
    truth = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        stem = _stem(path)
        match = _CTC_TRUTH.match(stem)
        truth[f"t{match.group(1)}" if kind == "ctc" and match else stem] = path
    return truth


def _single_plane(path: Path, array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    if array.shape[0] != 1:
        raise ValueError(f"{path}: has {array.shape[0]} planes; evaluate compares single images")
    return array[0]


def _image_or_volume(path: Path, array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """A label file as compared: ``(H, W)`` for a single plane, ``(Z, Y, X)`` for a stack, whose objects are
    then 3D (a volume's instance ids, as ``biounet predict`` writes them for a 3D U-Net)."""
    return array[0] if array.shape[0] == 1 else array


def read_probabilities(path: Path) -> npt.NDArray[np.float32]:
    """A ``(K, H, W)`` probability map written by ``biounet predict --save-probabilities``, checked."""
    import tifffile

    try:
        probs = np.asarray(tifffile.imread(path), dtype=np.float32)
    except (tifffile.TiffFileError, ValueError, OSError) as err:
        raise ValueError(f"{path}: not a readable probability TIFF ({err})") from err
    if probs.ndim != 3 or probs.shape[0] < 2:
        raise ValueError(f"{path}: a probability map must be (K, H, W) with K >= 2, got shape {probs.shape}")
    if not np.all(np.isfinite(probs)):
        raise ValueError(f"{path}: probability map contains NaN or Inf")
    if probs.min() < 0 or probs.max() > 1:
        raise ValueError(f"{path}: probabilities must lie in [0, 1], got {probs.min():.4g}..{probs.max():.4g}")
    return probs


def _membrane_probability(files: PredictionFiles) -> npt.NDArray[np.float64]:
    if files.empty is not None:  # class 0 everywhere: no membrane
        return np.zeros(files.empty, dtype=np.float64)
    if files.probabilities is not None:
        return read_probabilities(files.probabilities)[1].astype(np.float64)
    path = files.labels or files.instances
    assert path is not None
    labels = _single_plane(path, read_labels(path))
    return (labels == 1).astype(np.float64) if files.labels is not None else (labels == 0).astype(np.float64)


def _predicted_instances(files: PredictionFiles) -> npt.NDArray[np.int64]:
    from biounet.inference.instances import instances_from_labels

    if files.empty is not None:
        return np.zeros(files.empty, dtype=np.int64)
    if files.instances is not None:
        return _image_or_volume(files.instances, read_labels(files.instances))
    if files.labels is not None:
        labels = _image_or_volume(files.labels, read_labels(files.labels))
    else:
        assert files.probabilities is not None
        labels = read_probabilities(files.probabilities).argmax(0)
    return instances_from_labels(labels).astype(np.int64)


def _predicted_foreground(files: PredictionFiles) -> npt.NDArray[np.bool_]:
    """The network's foreground (class > 0): from the class labels, the probabilities, or the instances."""
    if files.empty is not None:
        return np.zeros(files.empty, dtype=bool)
    if files.labels is not None:
        return _image_or_volume(files.labels, read_labels(files.labels)) > 0
    if files.probabilities is not None:
        return read_probabilities(files.probabilities).argmax(0) > 0
    assert files.instances is not None
    return _image_or_volume(files.instances, read_labels(files.instances)) > 0


def _read_truth(truth_path: Path, pred_path: Path | None, pred_shape: tuple[int, ...]) -> npt.NDArray[np.int64]:
    """The single-plane ground truth, checked to be the size of the prediction read from ``pred_path`` (None for
    an empty prediction, made at the truth's size)."""
    truth = _image_or_volume(truth_path, read_labels(truth_path))
    if pred_path is not None:
        _check_shapes(pred_path, pred_shape, truth_path, truth.shape)
    return truth


def _check_shapes(pred_path: Path, pred_shape: tuple[int, ...], truth_path: Path,
                  truth_shape: tuple[int, ...]) -> None:
    if pred_shape != truth_shape:
        raise ValueError(f"{pred_path.name} is {'x'.join(map(str, pred_shape))} but {truth_path.name} is "
                         f"{'x'.join(map(str, truth_shape))}; prediction and truth must have the same size")


def score_isbi(files: PredictionFiles, truth_path: Path) -> dict[str, Any]:
    """One ISBI 2012 slice: pixel, Rand and warping error and V_rand, V_info of the map, each at its best
    threshold; with ``<stem>_instances.tif`` also of the segments as they are (``segments_*``, no threshold)."""
    membrane = _membrane_probability(files)
    truth = _read_truth(truth_path, files.probabilities or files.labels or files.instances, membrane.shape)
    true_cells = truth > 0
    row = _isbi_scores(membrane, true_cells)
    if files.instances is not None and files.empty is None:
        segments = _single_plane(files.instances, read_labels(files.instances)).astype(np.int64)
        _check_shapes(files.instances, segments.shape, truth_path, truth.shape)
        scores = _isbi_scores((segments == 0).astype(np.float64), true_cells, segments=segments)
        row.update({f"segments_{key}": value for key, value in scores.items() if key != "note"})
        row["segments"] = int(np.unique(segments[segments > 0]).size)
    return row


def _isbi_scores(membrane: npt.NDArray[np.float64], true_cells: npt.NDArray[np.bool_], *,
                 segments: npt.NDArray[np.int64] | None = None) -> dict[str, Any]:
    """The challenge's measures of a membrane map, or of ``segments`` (0 = boundary) as they are."""
    row: dict[str, Any] = {"pixel_error": metrics.pixel_error(membrane, true_cells).error}
    try:
        if segments is None:
            rand: Any = metrics.rand_error(membrane, true_cells)
            info = metrics.info_score(membrane, true_cells)[0]
        else:
            true_labels = ndimage.label(true_cells)[0]
            rand = metrics.rand_scores(segments, true_labels)
            info = metrics.info_scores(segments, true_labels)
        row.update(rand_error=rand.error, rand_split=rand.split, rand_merge=rand.merge, v_rand=1.0 - rand.error,
                   v_info=info.score, v_info_split=info.split, v_info_merge=info.merge)
    except ValueError as err:  # all-membrane ground truth: the Rand error is undefined
        row.update(rand_error=None, v_rand=None, v_info=None, note=str(err))
    try:
        warp = metrics.warping_error(membrane, true_cells)
        row.update(warping_error=warp.error, splits=warp.splits, mergers=warp.mergers)
    except ValueError as err:
        row.update(warping_error=None, note=str(err))
    return row


def score_ctc(files: PredictionFiles, truth_path: Path) -> dict[str, Any]:
    """SEG and foreground IoU of one Cell Tracking Challenge frame (``seg_sum`` is what pooling adds up)."""
    predicted = _predicted_instances(files)
    truth = _read_truth(truth_path, files.instances or files.labels or files.probabilities, predicted.shape)
    row: dict[str, Any] = {"foreground_iou": metrics.iou(_predicted_foreground(files), truth > 0)}
    if truth.max() > 0:
        seg = metrics.seg_score(predicted, truth)
        row.update(seg=seg.mean_jaccard, cells=seg.n_objects, seg_sum=float(seg.per_object.sum()))
    else:
        row.update(seg=None, note="no annotated cell: SEG undefined")
    return row


def score_instances(files: PredictionFiles, truth_path: Path) -> dict[str, Any]:
    """Object scores at every IoU threshold (``objects``, for pooling), the scores at 0.5, and SEG of one image."""
    predicted = _predicted_instances(files)
    truth = _read_truth(truth_path, files.instances or files.labels or files.probabilities, predicted.shape)
    scores = metrics.object_scores(predicted, truth)
    at_half = scores[0]  # thresholds start at 0.5
    row: dict[str, Any] = {
        "precision": at_half.precision, "recall": at_half.recall, "f1": at_half.f1,
        "average_precision": at_half.average_precision, "predicted_cells": at_half.tp + at_half.fp,
        "cells": at_half.tp + at_half.fn, "objects": [s._asdict() for s in scores],
        **metrics.object_errors(predicted, truth)._asdict(),
    }
    if truth.max() > 0:
        seg = metrics.seg_score(predicted, truth)
        row.update(seg=seg.mean_jaccard, seg_sum=float(seg.per_object.sum()))
    else:
        row.update(seg=None, note="no annotated cell: SEG undefined")
    return row


def pooled_objects(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Object scores of all images together, per IoU threshold: tp, fp, fn summed, then the ratios
    (:func:`biounet.evaluation.metrics.pool_object_scores`)."""
    per_image = [[metrics.ObjectScores(**entry) for entry in row["objects"]] for row in rows]
    return [s._asdict() for s in metrics.pool_object_scores(per_image)]


def score_binary(files: PredictionFiles, truth_path: Path) -> dict[str, Any]:
    """Foreground IoU, Dice and pixel error rate of one binary mask; any prediction file kind."""
    predicted = _predicted_foreground(files)
    truth = _read_truth(truth_path, files.labels or files.probabilities or files.instances, predicted.shape) > 0
    return {"iou": metrics.iou(predicted, truth), "dice": metrics.dice(predicted, truth),
            "pixel_error_rate": float(np.count_nonzero(predicted != truth) / truth.size)}


def pooled_seg(rows: list[dict[str, Any]]) -> float | None:
    """SEG over every ground-truth object of all frames: ``sum of J / number of objects`` (the challenge's).

    >>> pooled_seg([{"seg_sum": 0.0, "cells": 1}, {"seg_sum": 3.0, "cells": 3}])
    0.75
    """
    cells = sum(int(row.get("cells") or 0) for row in rows)
    if cells == 0:
        return None
    return float(sum(float(row.get("seg_sum") or 0.0) for row in rows) / cells)


_SCORERS: dict[str, Callable[[PredictionFiles, Path], dict[str, Any]]] = {
    "isbi2012": score_isbi, "ctc": score_ctc, "instances": score_instances, "binary": score_binary,
}


def evaluate_folders(pred_dir: str | os.PathLike[str], truth_dir: str | os.PathLike[str], *,
                     kind: str = "binary", allow_missing: bool = False) -> dict[str, Any]:
    """Score every prediction against its ground truth; returns ``{"kind", "images": [...], "mean": {...}}``.

    Every ground-truth file must have a prediction, so that a missing one cannot silently raise the mean; with
    ``allow_missing`` it is scored as an empty (all-background) prediction instead, with a ``note`` in its row.

    Raises
    ------
    FileNotFoundError
        If a folder is missing.
    ValueError
        If a prediction has no ground truth (or none pairs at all), a ground truth has no prediction (unless
        ``allow_missing``), or sizes differ.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    for folder in (pred_dir, truth_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such directory")
    predictions, truth = find_predictions(pred_dir), find_truth(truth_dir, kind)
    if not predictions:
        raise ValueError(f"{pred_dir}: no prediction files (<stem>.tif, <stem>_prob.tif or <stem>_instances.tif)")
    missing = sorted(set(predictions) - set(truth))
    if missing:
        raise ValueError(f"no ground truth in {truth_dir} for: {', '.join(missing[:5])}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    unpredicted = sorted(set(truth) - set(predictions))
    if unpredicted and not allow_missing:
        names = ", ".join(truth[stem].name for stem in unpredicted[:5])
        raise ValueError(f"no prediction in {pred_dir} for the ground truth {names}"
                         + (f" and {len(unpredicted) - 5} more" if len(unpredicted) > 5 else "")
                         + "; predict them, or pass --allow-missing to score them as empty predictions")
    rows = []
    for stem in sorted(set(predictions) | set(unpredicted)):
        files = predictions.get(stem)
        if files is None:
            shape = _image_or_volume(truth[stem], read_labels(truth[stem])).shape
            files = PredictionFiles(empty=tuple(int(size) for size in shape))
        row = {"image": stem, **_SCORERS[kind](files, truth[stem])}
        if files.empty is not None:
            row["note"] = "no prediction: scored as empty" + (f"; {row['note']}" if "note" in row else "")
        rows.append(row)
    numeric = sorted({k for row in rows for k, v in row.items() if isinstance(v, (int, float))
                      and not isinstance(v, bool)})
    mean = {}
    for key in numeric:
        values = [row[key] for row in rows if isinstance(row.get(key), (int, float))]
        mean[key] = float(np.mean(values)) if values else None
    mean.pop("seg_sum", None)
    result = {"kind": kind, "pred": str(pred_dir), "truth": str(truth_dir), "images": rows, "mean": mean}
    if kind == "ctc":
        result["pooled"] = {"seg": pooled_seg(rows), "cells": sum(int(r.get("cells") or 0) for r in rows)}
    if kind == "instances":
        objects = pooled_objects(rows)
        result["pooled"] = {
            **{key: objects[0][key] for key in ("precision", "recall", "f1", "average_precision")},
            "average_precision_50_90": float(np.mean([entry["average_precision"] for entry in objects
                                                      if entry["threshold"] <= 0.9])),
            "average_precision_50_95": float(np.mean([entry["average_precision"] for entry in objects])),
            **{key: sum(int(row[key]) for row in rows) for key in metrics.ObjectErrors._fields},
            "seg": pooled_seg(rows), "cells": sum(int(r["cells"]) for r in rows),
            "predicted_cells": sum(int(r["predicted_cells"]) for r in rows), "objects": objects,
        }
    return result


def format_table(result: dict[str, Any]) -> str:
    """A per-image table and the mean, as plain text."""
    columns = [k for k in result["mean"] if k not in ("cells", "seg_sum", "predicted_cells")
               and not k.endswith(("splits", "mergers", "_split", "_merge"))]  # the JSON has them all
    header = ["image", *columns]
    lines = [header]
    for row in result["images"]:
        lines.append([row["image"], *(_fmt(row.get(c)) for c in columns)])
    lines.append(["mean", *(_fmt(result["mean"].get(c)) for c in columns)])
    if "pooled" in result:
        lines.append(["pooled", *(_fmt(result["pooled"][c]) if c in result["pooled"] else "" for c in columns)])
    text = _aligned(lines)
    if "objects" in result.get("pooled", {}):
        pooled = result["pooled"]
        objects = [["IoU >=", "precision", "recall", "f1", "average_precision", "tp", "fp", "fn"]]
        objects += [[f"{o['threshold']:.2f}", *(_fmt(o[k]) for k in objects[0][1:5]), *(str(o[k]) for k in
                     ("tp", "fp", "fn"))] for o in pooled["objects"]]
        text += (f"\n\nobjects, pooled over {pooled['cells']} true and {pooled['predicted_cells']} predicted cells "
                 f"(precision, recall, F1 and AP above are at IoU 0.5; mean AP over 0.5..0.9: "
                 f"{_fmt(pooled['average_precision_50_90'])}, over 0.5..0.95 (the DSB2018 score): "
                 f"{_fmt(pooled['average_precision_50_95'])})\n" + _aligned(objects)
                 + "\n\nunmatched at IoU 0.5: " + ", ".join(f"{pooled[key]} {key}" for key in
                                                         metrics.ObjectErrors._fields))
    return text


def _aligned(lines: list[list[Any]]) -> str:
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(line, widths)) for line in lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "undefined"
    if isinstance(value, float):
        return f"{value:.6f}" if abs(value) < 0.01 else f"{value:.4f}"
    return str(value)


make_callable(__name__, evaluate_folders)  # biounet.evaluate(pred_dir, truth_dir, kind=...)
