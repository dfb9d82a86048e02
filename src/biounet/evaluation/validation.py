"""Validation by the task's own measure: SEG for cells, Rand and pixel error for membranes, mean IoU otherwise.

The training run predicts its validation images whole (overlap-tile), turns cell predictions into instances the
way ``biounet predict --instances`` does (:mod:`biounet.inference.instances`), scores them with :mod:`biounet.evaluation.metrics`, and
keeps ``best.pt`` by :func:`score_name`. At the end it picks the instance post-processing settings
(:func:`choose_instance_params`) on the same images and stores them with the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from itertools import product

import numpy as np
import numpy.typing as npt
import torch
from scipy import ndimage

from biounet.core.model import UNet
from biounet.core.samples import Sample
from biounet.core.targets import IGNORE, task_of
from biounet.evaluation import metrics
from biounet.inference.instances import InstanceParams, instances_from_probabilities, split_outputs
from biounet.inference.predict import DEFAULT_MEMORY_BUDGET, TorchPredictor, predict_image
from biounet.inference.predict_volume import segment_volume
from biounet.inference.segments import (
    SegmentParams,
    absorb_small,
    agglomerate,
    mutex_partition,
    oversegment,
    separate,
)

HIGHER_IS_BETTER: dict[str, bool] = {
    "seg": True, "object_f1": True, "foreground_iou": True, "mean_iou": True, "pixel_error": False,
    "rand_error": False,
}
_AUTO_MEASURE = {"cells": "seg", "membranes": "rand_error", "classes": "mean_iou"}


def dataset_task(samples: Sequence[Sample]) -> str:
    """The task all labelled samples share (:func:`biounet.core.targets.task_of`), ``classes`` if they differ."""
    tasks = {task_of(s.classes, s.instances) for s in samples if s.classes is not None and s.instances is not None}
    return tasks.pop() if len(tasks) == 1 else "classes"


def score_name(select_by: str, task: str) -> str:
    """The measure ``best.pt`` is chosen by: ``select_by``, or for ``auto`` the task's own.

    >>> score_name("auto", "cells"), score_name("auto", "membranes"), score_name("pixel_error", "cells")
    ('seg', 'rand_error', 'pixel_error')
    """
    return _AUTO_MEASURE[task] if select_by == "auto" else select_by


def predict_samples(model: UNet, samples: Sequence[Sample], *, normalization: str, precision: str,
                    device: torch.device, tta: bool = False) -> list[npt.NDArray[np.float32]]:
    """Class probabilities ``(K, H, W)`` of each sample's whole image (``(K, Z, Y, X)`` of a volume), averaged over
    the 8 rotations and flips with ``tta``; the model's train/eval mode is restored."""
    was_training = model.training
    predictor = TorchPredictor(model, normalization=normalization, device=device, precision=precision,
                               channels_last=False, tta=tta)
    try:
        return [segment_volume(predictor, sample.image, memory_budget=DEFAULT_MEMORY_BUDGET).probabilities
                if sample.dims == 3 else predict_image(predictor, sample.image, tile=None) for sample in samples]
    finally:
        model.train(was_training)


def _labels(sample: Sample) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
    if sample.classes is None or sample.instances is None:
        raise ValueError(f"sample {sample.name!r} has no labels to validate against")
    return sample.classes, sample.instances


def cell_scores(probs: Sequence[npt.NDArray[np.float32]], samples: Sequence[Sample], *, target: str,
                params: InstanceParams) -> dict[str, float]:
    """Pooled SEG (every annotated cell of every image), pooled object F1 at IoU 0.5 (predicted cells lying mostly
    on unannotated pixels do not count), and mean foreground IoU over annotated pixels.

    SEG only looks at the annotated cells, so it does not see spurious fragments; the F1 does.
    """
    jaccard_sum, cells, ious, pairs = 0.0, 0, [], []
    for prob, sample in zip(probs, samples):
        classes, instances = _labels(sample)
        valid = classes != IGNORE
        ious.append(metrics.iou(split_outputs(prob, target)[0].argmax(0) > 0, instances > 0, valid=valid))
        if instances.any():
            predicted = instances_from_probabilities(prob, target=target, params=params)
            seg = metrics.seg_score(predicted, instances)
            jaccard_sum, cells = jaccard_sum + float(seg.per_object.sum()), cells + seg.n_objects
            pairs.append((_annotated_only(predicted, valid), instances))
    scores = {"foreground_iou": float(np.mean(ious))}
    if cells:
        scores["seg"] = jaccard_sum / cells
        scores["object_f1"] = metrics.dataset_object_scores(pairs, thresholds=(0.5,))[0].f1
    return scores


def _annotated_only(predicted: npt.NDArray[np.integer], valid: npt.NDArray[np.bool_]) -> npt.NDArray[np.integer]:
    """``predicted`` without the cells that lie mostly on unannotated pixels (they can be neither right nor wrong)."""
    if valid.all():
        return predicted
    ids, inverse = np.unique(predicted, return_inverse=True)
    inside = np.bincount(inverse.ravel(), weights=valid.ravel(), minlength=ids.size)
    size = np.bincount(inverse.ravel(), minlength=ids.size)
    keep = inside * 2 > size
    return np.where(keep[inverse].reshape(predicted.shape), predicted, 0)


def membrane_scores(probs: Sequence[npt.NDArray[np.float32]], samples: Sequence[Sample]) -> dict[str, float]:
    """ISBI 2012 pixel and Rand error (class 1 = membrane), each the mean over images."""
    pixel, rand = [], []
    for prob, sample in zip(probs, samples):
        classes, _ = _labels(sample)
        valid = classes != IGNORE
        true_cells = classes == 0
        pixel.append(metrics.pixel_error(prob[1], true_cells, valid=valid).error)
        if true_cells.any() and valid.all():
            rand.append(metrics.rand_error(prob[1], true_cells).error)
    scores = {"pixel_error": float(np.mean(pixel))}
    if rand:
        scores["rand_error"] = float(np.mean(rand))
    return scores


def mean_iou(probs: Sequence[npt.NDArray[np.float32]], samples: Sequence[Sample]) -> float:
    """Mean over images of the arg-max IoU averaged over the classes present (annotated pixels only)."""
    values = []
    for prob, sample in zip(probs, samples):
        classes, _ = _labels(sample)
        valid, predicted = classes != IGNORE, prob.argmax(0)
        per_class = [metrics.iou(predicted == k, classes == k, valid=valid) for k in range(prob.shape[0])
                     if np.any((classes == k) & valid) or np.any((predicted == k) & valid)]
        values.append(float(np.mean(per_class)) if per_class else 1.0)
    return float(np.mean(values))


def task_scores(probs: Sequence[npt.NDArray[np.float32]], samples: Sequence[Sample], *, task: str, target: str,
                params: InstanceParams | None = None) -> dict[str, float]:
    """Every measure of ``task`` on predicted probabilities (and distance map), plus ``mean_iou``."""
    scores = {"mean_iou": mean_iou([split_outputs(p, target)[0] for p in probs], samples)}
    if task == "cells":
        scores.update(cell_scores(probs, samples, target=target, params=params or InstanceParams()))
    elif task == "membranes":
        scores.update(membrane_scores(probs, samples))
    return scores


SEED_THRESHOLDS: tuple[float, ...] = (0.5, 0.3, 0.4, 0.6, 0.7, 0.8)
"""The seed (interior, distance) thresholds :func:`instance_param_grid` tries, the default first."""
SPLIT_PROMINENCES: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5)
"""The seed cuts (:func:`biounet.inference.instances.split_seeds`) a ``boundary`` model's 2D run tries after its
other settings (:func:`split_param_grid`). On the dsb nuclei (10-minute run) the cuts at 0.3 lowered the merged
nuclei of the held-out images from 297 to 210 (``benchmarks/peers_table.py``)."""


BACKGROUND_BIASES: tuple[float, ...] = (1.5, 2.0, 3.0, 4.0, 6.0)
"""The background biases (:attr:`~biounet.inference.instances.InstanceParams.background_bias`) a ``boundary`` or
``distance`` model's run tries last, around its other chosen settings (:func:`bias_param_grid`). The class-balanced
loss widens the arg-max's cells: on the dsb nuclei (10-minute run) the predicted nuclei measured 1.17 times the
truth's diameter at the arg-max (``experiments/background_bias.py``)."""


def instance_param_grid(target: str, dims: int = 2) -> list[InstanceParams]:
    """The post-processing settings :func:`choose_instance_params` tries, simplest first; object sizes in voxels
    for volumes (``dims`` 3), where a cell spans ten times the pixels it spans in a plane."""
    sizes = (0, 16, 64, 256) if dims == 2 else (0, 64, 256, 1024)
    if target == "paper":
        return [InstanceParams(min_size_px=s, watershed=w) for w, s in product((False, True), sizes)]
    if target == "stardist":  # StarDist's optimize_thresholds searches the same two thresholds
        return [InstanceParams(min_size_px=16, seed_threshold=p, overlap_threshold=o, masks=m)
                for m, p, o in product(("watershed", "polygons"), (0.5, 0.3, 0.4, 0.6, 0.7), (0.4, 0.3, 0.5))]
    return [InstanceParams(min_size_px=s, seed_threshold=t) for t, s in product(SEED_THRESHOLDS, sizes)]


def split_param_grid(chosen: InstanceParams, target: str, dims: int = 2) -> list[InstanceParams]:
    """The second round of :func:`choose_instance_params`: for a ``boundary`` model's images (2D), the seed cuts of
    :data:`SPLIT_PROMINENCES` at every seed threshold and the size already chosen (a cut seed is smaller, so the
    threshold is searched again); none for other targets and for volumes (their voxels are anisotropic)."""
    if target != "boundary" or dims != 2:
        return []
    return [replace(chosen, seed_threshold=t, split_prominence=p)
            for p, t in product(SPLIT_PROMINENCES, SEED_THRESHOLDS)]


def bias_param_grid(chosen: InstanceParams, target: str) -> list[InstanceParams]:
    """The last round of :func:`choose_instance_params`: :data:`BACKGROUND_BIASES` at the settings already chosen,
    for the targets whose instances are made from the probabilities with a foreground (``boundary``, ``distance``);
    none for others (a ``paper`` model's instances come from its class labels)."""
    if target not in ("boundary", "distance"):
        return []
    return [replace(chosen, background_bias=b) for b in BACKGROUND_BIASES]


def choose_instance_params(probs: Sequence[npt.NDArray[np.float32]], samples: Sequence[Sample], *,
                           target: str) -> tuple[InstanceParams, float]:
    """The post-processing settings with the best mean of pooled SEG and object F1 at IoU 0.5 on the validation
    images (SEG rewards outlining the annotated cells, F1 also punishes spurious fragments, as the Cell Tracking
    Challenge's overall measure averages SEG and DET), and that SEG.

    Searched: :func:`instance_param_grid`, then :func:`split_param_grid` and :func:`bias_param_grid` around the
    best. Ties keep the earlier (simpler) setting.
    """
    best, _, best_seg = instance_choice(probs, samples, target=target)
    return best, best_seg


def instance_choice(probs: Sequence[npt.NDArray[np.float32]], samples: Sequence[Sample], *,
                    target: str) -> tuple[InstanceParams, float, float]:
    """:func:`choose_instance_params` with the score it chose by (the mean of SEG and object F1): the settings,
    that score and the SEG."""
    dims = max((s.dims for s in samples), default=2)
    best, best_score, best_seg = _best_params(probs, samples, target, instance_param_grid(target, dims=dims))
    for rounds in (lambda p: split_param_grid(p, target, dims=dims), lambda p: bias_param_grid(p, target)):
        grid = rounds(best)
        if grid:
            found, found_score, found_seg = _best_params(probs, samples, target, grid)
            if found_score > best_score:
                best, best_score, best_seg = found, found_score, found_seg
    return best, best_score, best_seg


def _best_params(probs: Sequence[npt.NDArray[np.float32]], samples: Sequence[Sample], target: str,
                 grid: Sequence[InstanceParams]) -> tuple[InstanceParams, float, float]:
    """The setting of ``grid`` with the best mean of pooled SEG and object F1 (the first of equal ones), its score
    and its SEG."""
    best, best_score, best_seg = grid[0], -1.0, 0.0
    for params in grid:
        scores = cell_scores(probs, samples, target=target, params=params)
        score = (scores.get("seg", 0.0) + scores.get("object_f1", 0.0)) / 2
        if score > best_score:
            best, best_score, best_seg = params, score, scores.get("seg", 0.0)
    return best, best_score, best_seg


SEGMENT_GRID: dict[str, tuple[float, ...]] = {
    "sigma_seeds": (1.0, 2.0, 3.0), "bias": (0.3, 0.4, 0.5, 0.6), "membrane_threshold": (0.5, 0.7, 0.8, 0.9, 0.95),
}
"""The segment settings :func:`choose_segment_params` tries: every combination."""


AFFINITY_GRID: dict[str, tuple[float, ...]] = {
    "min_size_px": (10, 25, 50, 100), "membrane_threshold": SEGMENT_GRID["membrane_threshold"],
}
"""The settings :func:`choose_segment_params` tries for an ``affinities`` model's segments (the mutex watershed
itself has none): every combination."""


def _segment_errors(segments: npt.NDArray[np.int32], true_cells: npt.NDArray[np.bool_],
                    true_labels: npt.NDArray[np.int32]) -> tuple[float, float, float]:
    boundary = (segments == 0).astype(np.float64)
    return (metrics.rand_scores(segments, true_labels).error, metrics.warping_error(boundary, true_cells).error,
            metrics.pixel_error(boundary, true_cells).error)


def segment_table(probs: Sequence[npt.NDArray[np.float32]], samples: Sequence[Sample],
                  ) -> list[tuple[SegmentParams, dict[str, float]]]:
    """Every :data:`SEGMENT_GRID` setting (:data:`AFFINITY_GRID` for an ``affinities`` model, whose outputs hold
    affinities after the two classes) with its mean Rand, warping and pixel error of the segments on the images
    (the fragments are made once per ``sigma_seeds``, the multicut once per ``bias``; the mutex watershed once)."""
    table: dict[SegmentParams, list[tuple[float, float, float]]] = {}
    for prob, sample in zip(probs, samples):
        membrane = np.asarray(prob[1], dtype=np.float32)
        true_cells = _labels(sample)[0] == 0
        true_labels = ndimage.label(true_cells)[0]
        if prob.shape[0] > 2:
            partition = mutex_partition(prob[2:])
            for size, level in product(AFFINITY_GRID["min_size_px"], AFFINITY_GRID["membrane_threshold"]):
                segments = separate(absorb_small(partition, membrane, int(size)), membrane, threshold=level)
                table.setdefault(SegmentParams(min_size_px=int(size), membrane_threshold=level), []).append(
                    _segment_errors(segments, true_cells, true_labels))
            continue
        for sigma in SEGMENT_GRID["sigma_seeds"]:
            fragments = oversegment(membrane, SegmentParams(sigma_seeds=sigma))
            for bias in SEGMENT_GRID["bias"]:
                merged = agglomerate(fragments, membrane, SegmentParams(bias=bias))
                for level in SEGMENT_GRID["membrane_threshold"]:
                    segments = separate(merged, membrane, threshold=level)
                    table.setdefault(SegmentParams(sigma_seeds=sigma, bias=bias, membrane_threshold=level), []).append(
                        _segment_errors(segments, true_cells, true_labels))
    return [(params, dict(zip(("rand_error", "warping_error", "pixel_error"), np.mean(rows, axis=0).tolist())))
            for params, rows in table.items()]


PIXEL_ERROR_BOUND = 0.0611
"""The paper's ISBI 2012 pixel error (PAPER.md, Table 1): segments whose boundaries are thinner than the truth's
score a better Rand error and a worse pixel error; :func:`choose_segment_params` accepts that trade up to here."""


def choose_segment_params(probs: Sequence[npt.NDArray[np.float32]], samples: Sequence[Sample],
                          ) -> tuple[SegmentParams, dict[str, float]]:
    """The segment settings with the lowest Rand error on the validation images among those whose pixel error is
    at most :data:`PIXEL_ERROR_BOUND` (or, where none is, within 5 % of the best setting's), and their scores.

    The challenge ranks by the Rand score; the pixel error bound keeps the boundaries near the truth's width.
    Searched: :data:`SEGMENT_GRID` (:data:`AFFINITY_GRID` for an affinities model); ties keep the earlier setting.
    """
    return pick_segment_setting(segment_table(probs, samples))


def pick_segment_setting(table: Sequence[tuple[SegmentParams, dict[str, float]]],
                         ) -> tuple[SegmentParams, dict[str, float]]:
    """The row of a :func:`segment_table` that :func:`choose_segment_params` picks."""
    best_pixel = min(scores["pixel_error"] for _, scores in table)
    bound = max(PIXEL_ERROR_BOUND, 1.05 * best_pixel)
    admissible = [row for row in table if row[1]["pixel_error"] <= bound]
    return min(admissible, key=lambda row: row[1]["rand_error"])


__all__ = [
    "AFFINITY_GRID", "BACKGROUND_BIASES", "HIGHER_IS_BETTER", "PIXEL_ERROR_BOUND", "SEED_THRESHOLDS", "SEGMENT_GRID",
    "SPLIT_PROMINENCES", "bias_param_grid", "cell_scores", "choose_instance_params", "choose_segment_params",
    "dataset_task", "instance_choice", "instance_param_grid", "mean_iou", "membrane_scores", "pick_segment_setting",
    "predict_samples", "score_name", "segment_table", "split_param_grid", "task_scores",
]
