"""Training U-Net the paper's way: weighted loss, elastic deformation, large tiles; exact resume; DDP.

``fit(config)`` reads a dataset (:mod:`biounet.data.datasets`), makes the training targets and weight maps
(:mod:`biounet.core.targets`), samples augmented tiles with their context (:mod:`biounet.training.augment`) and minimises the
weighted cross-entropy (:mod:`biounet.training.loss`). It is a short sequence of named steps: select samples and split,
open or resume the :class:`RunState`, then a loop of :func:`train_step` and :func:`validate_and_checkpoint`.
Every step's tiles depend only on ``(seed, step, rank)``, so a run resumed from ``last.pt`` (model, optimizer,
step, elapsed time and RNG states) continues exactly.

Run directory: ``last.pt`` (everything needed to resume), ``best.pt`` (best validation score), ``model.pt`` (the
final model for ``biounet predict``: the best validation checkpoint, or the last weights without validation, with
the instance post-processing chosen on the validation images), ``config.toml``, ``split.json`` (which images were
held back for validation), ``metrics.csv`` and ``report.html``; all written atomically.
"""

from __future__ import annotations

import copy
import csv
import io as _io
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.nn.parallel import DistributedDataParallel

from biounet.core.affinities import OFFSETS, affinities
from biounet.core.callable_module import make_callable
from biounet.core.device import autocast, resolve_device
from biounet.core.extras import MissingExtra, missing_message
from biounet.core.model import UNet, output_shape
from biounet.core.samples import Sample
from biounet.core.starconvex import star_targets
from biounet.core.targets import (
    IGNORE,
    MEMBRANES,
    class_frequencies,
    class_names,
    num_target_classes,
    target_classes,
    training_targets,
)
from biounet.data.checkpoint import load_checkpoint, model_from_payload, model_payload, save_checkpoint
from biounet.data.datasets import detect_layout, load_dataset, split_samples
from biounet.data.diameter import common_diameter, median_diameter, to_common_diameter
from biounet.data.files import write_text
from biounet.data.volumes import normalize_volume, split_volume
from biounet.evaluation.validation import (
    HIGHER_IS_BETTER,
    choose_segment_params,
    dataset_task,
    instance_choice,
    predict_samples,
    score_name,
    task_scores,
)
from biounet.inference.instances import InstanceParams
from biounet.inference.predict import predicted_diameter
from biounet.inference.segments import EXTRA as SEGMENTS_EXTRA
from biounet.inference.segments import SegmentParams
from biounet.training.augment import sample_volume_window, sample_window
from biounet.training.config import (
    TrainConfig,
    read_config_toml,
    resolve_compile,
    resolve_pixel_size,
    resolve_target,
    resolve_volume,
    write_config_toml,
)
from biounet.training.distributed import Distributed, agree, barrier, init_distributed, rank_device
from biounet.training.events import Progress, StepEvent, ValidationEvent
from biounet.training.loss import affinity_loss, distance_loss, star_loss, weighted_cross_entropy

logger = logging.getLogger(__name__)


# --- data: prepared samples and the tile sampler --------------------------------------------------------------


@dataclass
class PreparedSample:
    """A training image with the arrays its loss sees (:class:`biounet.core.targets.TrainingTargets`), full-size."""

    name: str
    image: npt.NDArray[np.float32]  # (H, W, C)
    classes: npt.NDArray[np.int64]  # (H, W), IGNORE for unannotated pixels
    weights: npt.NDArray[np.float32]  # (H, W), or (H, W, 2): the distance map or the stardist ids as channel 1


def prepare_samples(samples: list[Sample], config: TrainConfig, num_classes: int) -> list[PreparedSample]:
    """Training targets of every sample, with class frequencies counted on the taught (separated) classes."""
    labels = [_labels_of(sample) for sample in samples]
    spacing = voxel_spacing(config)
    frequencies = None
    if config.class_balance:
        taught = [target_classes(c, i, target=config.target, boundary_px=config.boundary_px, spacing=spacing)[0]
                  for c, i in labels]
        frequencies = class_frequencies(taught, num_classes)
    prepared = []
    for sample, (classes, instances) in zip(samples, labels):
        targets = training_targets(classes, instances, num_classes=num_classes, target=config.target, w0=config.w0,
                                   sigma_px=config.sigma_px, class_balance=config.class_balance,
                                   frequencies=frequencies, boundary_px=config.boundary_px, spacing=spacing)
        extra = targets.distance if targets.tile_ids is None else targets.tile_ids.astype(np.float32)
        weights = targets.weights if extra is None else np.stack([targets.weights, extra], -1)
        prepared.append(PreparedSample(sample.name, sample.image, targets.classes, weights))
    return prepared


def voxel_spacing(config: TrainConfig) -> tuple[float, float, float] | None:
    """A 3D run's voxel size relative to its in-plane pixel, ``(z / x, y / x, 1)``: distances of the weight map and
    the elastic deformation are physical (None: 2D, or an unknown voxel size taken as isotropic)."""
    if config.dims != 3 or config.voxel_size is None:
        return None
    z, y, x = config.voxel_size
    return (z / x, y / x, 1.0)


def _labels_of(sample: Sample) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
    if sample.classes is None or sample.instances is None:
        raise ValueError(f"sample {sample.name!r} has no labels; only labelled samples can be trained on")
    return sample.classes, sample.instances


class TileSampler(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """The tiles of training step ``i``: a batch drawn with ``np.random.default_rng((seed, rank, i))``.

    Indexing by step makes the data independent of worker scheduling, and resuming exact.
    """

    def __init__(self, samples: list[PreparedSample], config: TrainConfig, *, rank: int = 0, length: int) -> None:
        self.samples, self.config, self.rank, self.length = samples, config, rank, length
        self.out_shape = output_shape(config.window_shape, config.model_config(1, 2))
        self.out_tile = self.out_shape[-1]  # the output window's side (in-plane for volumes)
        self.spacing = voxel_spacing(config)
        sizes = np.array([s.classes.size for s in samples], dtype=np.float64)
        self.sample_p = sizes / sizes.sum()

    def __len__(self) -> int:
        return self.length

    def _tile_targets(self, weights: npt.NDArray[np.float32], copies: npt.NDArray[np.int64] | None,
                      ) -> npt.NDArray[np.float32]:
        """``(h, w, 2 + n_rays)`` or ``(h, w, 1 + k)``: the pixel weights, then the star-convex targets
        (:func:`biounet.core.starconvex.star_targets`) or the affinities (:func:`biounet.core.affinities.affinities`,
        -1 where there is none) of the tile's (augmented) instance ids, which rode through augmentation as channel
        1. For rays, a cell and its mirror images beyond the image border are told apart (``copies``), so a ray
        stops at the border as it does on the whole image, where StarDist measures it; affinities join a cell to
        its mirror image, as the mirrored tile shows no membrane there."""
        if weights.ndim != 3:
            return weights  # neither cells nor membranes: no per-tile outputs
        ids = np.rint(weights[..., 1]).astype(np.int64)
        if self.config.target == "affinities":
            return np.concatenate([weights[..., :1], affinities(ids, OFFSETS, annotated=weights[..., 0] > 0)], -1)
        if copies is not None:
            _, ids = np.unique(np.where(ids > 0, ids * 64 + (copies % 64) + 1, 0), return_inverse=True)
            ids = ids.reshape(weights.shape[:2])
        return np.concatenate([weights[..., :1], star_targets(ids.astype(np.int32), self.config.n_rays)], axis=-1)

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.config.seed, self.rank, step))
        images, labels, weights = [], [], []
        per_tile, star = self.config.target in ("stardist", "affinities"), self.config.target == "stardist"
        for _ in range(self.config.batch_size):
            sample = self.samples[rng.choice(len(self.samples), p=self.sample_p)]
            center = tuple(rng.uniform(0, size) for size in sample.classes.shape)
            if self.config.dims == 3:
                tile = sample_volume_window(sample.image, sample.classes, sample.weights,
                                            in_shape=self.config.window_shape, out_shape=self.out_shape,
                                            center=center, config=self.config.augment, rng=rng, spacing=self.spacing)
            else:
                tile = sample_window(sample.image, sample.classes, sample.weights, in_tile=self.config.tile,
                                     out_tile=self.out_shape, center=center, config=self.config.augment, rng=rng,
                                     mirror_copies=star)
            spatial = tile.image.ndim == self.config.dims
            images.append(tile.image[None] if spatial else np.moveaxis(tile.image, -1, 0))
            labels.append(tile.labels)
            weights.append(self._tile_targets(tile.weights, tile.copies) if per_tile else tile.weights)
        return (torch.from_numpy(np.ascontiguousarray(np.stack(images), dtype=np.float32)),
                torch.from_numpy(np.stack(labels).astype(np.int64)),
                torch.from_numpy(np.stack(weights).astype(np.float32)))


# --- schedule ---------------------------------------------------------------------------------------------------


def learning_rate(config: TrainConfig, step: int, progress: float) -> float:
    """Learning rate at ``step``: linear warm-up, then constant or cosine decay to 5 % by ``progress`` in [0, 1]."""
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    if config.schedule == "constant":
        return config.lr * warm
    progress = min(max(progress, 0.0), 1.0)
    return config.lr * warm * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress)))


# --- the run: state, opening or resuming, one step, validation ----------------------------------------------------


@dataclass
class TrainResult:
    """What a run produced."""

    run_dir: Path
    steps: int
    elapsed_s: float
    best_score: float | None
    history: list[dict[str, float]]
    model: UNet | None = None  # the weights at the end of this call (every rank has its own copy)
    interrupted: bool = False  # stopped by a signal (or stop_after) before the budget was spent
    signal: int | None = None  # the signal that stopped it (SIGINT, SIGTERM), if one did


@dataclass
class Split:
    """The labelled images of a run, split, with what the network predicts for them."""

    train: list[Sample]
    validation: list[Sample]
    task: str  # cells | membranes | classes (biounet.core.targets.task_of)
    in_channels: int
    num_classes: int  # what the network predicts for the target
    dataset_classes: int  # the class ids the labels hold
    diameter_px: float | None = None  # the common object diameter the images were resampled to (cells), or None


@dataclass
class RunState:
    """Everything that changes while a run trains; ``last.pt`` holds it."""

    model: UNet
    optimizer: torch.optim.Optimizer
    step: int = 0
    elapsed_s: float = 0.0
    best_score: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def select_samples(config: TrainConfig, samples: list[Sample] | None) -> Split:
    """Load the dataset (unless given), drop the excluded images, split off the validation images."""
    if samples is None:
        options: dict[str, Any] = {}
        layout = config.layout or detect_layout(config.data)
        # "auto" (the default) applies to the pairs layout only; an explicit kind reaches the loader, which
        # rejects it for other layouts
        if config.label_kind not in ("classes", "auto") or (config.label_kind == "auto" and layout == "pairs"):
            options["label_kind"] = config.label_kind
        if config.silver:
            options["use_silver"] = True
        if config.ignore_label is not None:
            options["ignore_label"] = config.ignore_label
        if config.voxel_size is not None:
            options["voxel_size_um"] = config.voxel_size
        samples = load_dataset(config.data, layout=config.layout, normalization=config.normalization, **options)
    excluded = {s.name for s in samples if any(_name_matches(s.name, entry) for entry in config.exclude)}
    unknown = [entry for entry in config.exclude if not any(_name_matches(n, entry) for n in excluded)]
    if unknown:
        raise ValueError(f"{config.data}: cannot exclude {', '.join(unknown[:5])}: no such images "
                         f"(names look like {samples[0].name!r})")
    labelled = _as_dims([s for s in samples if s.classes is not None and s.name not in excluded], config)
    if not labelled:
        raise ValueError(f"{config.data}: no labelled images to train on")
    if config.validation_fraction > 0 and len(labelled) == 1 and labelled[0].dims == 3:
        parts = split_volume(labelled[0], config.validation_fraction)
        train, validation = [_normalized_alone(parts[0], config)], [_normalized_alone(parts[1], config)]
    else:
        train, validation = (
            split_samples(labelled, validation_fraction=config.validation_fraction, rng=config.seed)
            if config.validation_fraction > 0 and len(labelled) > 1 else (labelled, [])
        )
    task = dataset_task(labelled)
    dataset_classes = max(2, max(int(_labels_of(s)[0].max(initial=0)) for s in labelled) + 1)
    diameter = common_diameter_of(config, task, train)
    if diameter is not None:
        train, validation = to_common_diameter(train, diameter), to_common_diameter(validation, diameter)
    return Split(train, validation, task, train[0].image.shape[-1],
                 num_target_classes(task, config.target, dataset_classes), dataset_classes, diameter)


def common_diameter_of(config: TrainConfig, task: str, train: list[Sample]) -> float | None:
    """The object diameter (px) a run resamples its images to (:mod:`biounet.data.diameter`): ``config.diameter``
    if a number, the training images' median for ``auto``; None for ``off``, for labels that are not
    instance-labelled cells, and for volumes."""
    if config.diameter == "off" or task != "cells" or config.dims != 2:
        return None
    if config.diameter == "auto":
        return common_diameter(train)
    return float(config.diameter)


def _normalized_alone(sample: Sample, config: TrainConfig) -> Sample:
    """A part of a volume normalised on its own statistics, as prediction normalises a new volume, so that the
    validation part scores what prediction meets (percentile, min-max and z-score maps are affine, so normalising
    the normalised part equals normalising its raw voxels); ``range`` is fixed by the dtype and stays."""
    if config.normalization == "range":
        return sample
    return replace(sample, image=normalize_volume(sample.image, config.normalization))


def _as_dims(samples: list[Sample], config: TrainConfig) -> list[Sample]:
    """The samples as the run trains on them: volumes for a 3D run (images refused), each z plane of a volume as an
    image for a 2D run (``--dims 2``: slice-wise)."""
    if config.dims == 3:
        flat = [s.name for s in samples if s.dims != 3]
        if flat:
            raise ValueError(f"{config.data}: a 3D run (dims 3) trains on volumes, but {flat[0]!r} is a 2D image; "
                             "give --dims 2 or volumes (HDF5, or TIFF stacks with a z axis)")
        return samples
    planes = []
    for sample in samples:
        if sample.dims == 2:
            planes.append(sample)
            continue
        size = None if sample.pixel_size_um is None else tuple(sample.pixel_size_um[1:])
        planes += [Sample(f"{sample.name}/z{z}", np.ascontiguousarray(sample.image[z]),
                          None if sample.classes is None else np.ascontiguousarray(sample.classes[z]),
                          None if sample.instances is None else np.ascontiguousarray(sample.instances[z]),
                          size) for z in range(sample.image.shape[0])]
    return planes


def _new_state(config: TrainConfig, split: Split, device: torch.device) -> RunState:
    torch.manual_seed(config.seed)
    distance = config.target == "distance" and split.task == "cells"
    rays = config.n_rays if config.target == "stardist" and split.task == "cells" else 0
    links = len(OFFSETS) if config.target == "affinities" and split.task == MEMBRANES else 0
    model = UNet(config.model_config(split.in_channels, split.num_classes, distance=distance, rays=rays,
                                     affinities=links))
    if config.init is not None:
        load_initial_weights(model, config.init)
    model = model.to(device)
    if device.type == "cpu" and config.dims == 2:
        model = model.to(memory_format=torch.channels_last)
    if config.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return RunState(model, optimizer)


def load_initial_weights(model: UNet, path: str) -> list[str]:
    """Fine-tuning: copy a trained model's weights into ``model``; layers whose shape differs (the 1x1 head for
    another class count) keep their fresh initialisation. Returns the names of the layers kept fresh.

    Raises
    ------
    ValueError
        If the architectures differ in anything but the head (depth, width, channels in), or the normalisation.
    """
    payload = load_checkpoint(path)
    source = payload["model_state"]
    target = model.state_dict()
    if set(source) != set(target):
        raise ValueError(f"{path}: its network (depth/variant/batch norm) differs from the one to train; fine-tuning "
                         "keeps the architecture (give --depth/--base-channels of the model, or none)")
    fresh = [k for k in target if source[k].shape != target[k].shape]
    if any(not k.startswith("head.") for k in fresh):
        raise ValueError(f"{path}: layer shapes differ ({', '.join(fresh[:3])}); fine-tuning keeps the network's "
                         "width and input channels")
    model.load_state_dict({k: (target[k] if k in fresh else source[k]) for k in target})
    if fresh:
        logger.info("fine-tuning from %s: new 1x1 head (%s)", path, ", ".join(fresh))
    return fresh


def open_run(config: TrainConfig, run_dir: Path, split: Split, device: torch.device, group: Distributed, *,
             resume: bool, notes: list[str] | None) -> RunState:
    """A fresh run (writing ``config.toml`` and ``split.json``) or the state saved in ``last.pt``."""
    state = _new_state(config, split, device)
    last_path = run_dir / "last.pt"
    if resume:
        _remove_orphan_temp_files(run_dir)
        payload = load_checkpoint(last_path)
        differences = _config_differences(payload.get("train_config", {}), config.to_dict())
        if differences:
            raise ValueError(f"{last_path}: cannot resume, the run was made with other settings "
                             f"({', '.join(differences)}); use a new --out directory")
        state.model.load_state_dict(payload["model_state"])
        state.optimizer.load_state_dict(payload["optimizer_state"])
        _set_rng_state(payload["rng_state"])
        state.step, state.elapsed_s = int(payload["step"]), float(payload["elapsed_s"])
        state.best_score = payload.get("best_score")
        # rows written after last.pt (a kill between the two writes) are dropped: the steps are redone
        state.history = [r for r in _read_metrics(run_dir / "metrics.csv") if r["step"] <= state.step]
    elif group.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if last_path.exists():
            raise ValueError(f"{run_dir}: already holds a run (last.pt); use --resume or a new --out directory")
        write_config_toml(run_dir / "config.toml", config, notes)
        write_text(run_dir / "split.json", json.dumps(
            {"train": [s.name for s in split.train], "validation": [s.name for s in split.validation]}, indent=1))
    return state


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, ...], *,
               config: TrainConfig, device: torch.device, lr: float) -> float:
    """One optimizer step on a batch of (images, labels, weights); returns the loss."""
    images, labels, weights = batch
    for group in optimizer.param_groups:
        group["lr"] = lr
    images = images.to(device, non_blocking=True)
    if device.type == "cpu" and images.ndim == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast(device, config.precision):
        logits = model(images)
    loss = objective(logits.float(), labels.to(device), weights.to(device), distance_weight=config.distance_weight,
                     ray_weight=config.ray_weight, affinity_target=config.target == "affinities")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if not torch.isfinite(loss):
        raise FloatingPointError(f"training diverged: loss is {loss.item()}; lower the learning rate "
                                 f"(now {config.lr})")
    return float(loss.item())


def objective(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, *,
              distance_weight: float = 1.0, ray_weight: float = 0.2, affinity_target: bool = False) -> torch.Tensor:
    """Weighted cross-entropy (paper eq. 1); with a distance map as the weights' last channel ``(N, H, W, 2)``,
    plus ``distance_weight`` times its squared error (the ``distance`` target, whose network has one more output);
    with star-convex targets ``(N, H, W, 2 + n_rays)``, plus StarDist's loss on the object probability and rays
    (:func:`biounet.training.loss.star_loss`); with ``affinity_target`` and affinities ``(N, H, W, 1 + k)``, plus
    the affinities' binary cross-entropy (:func:`biounet.training.loss.affinity_loss`)."""
    if weights.ndim == labels.ndim:
        return weighted_cross_entropy(logits, labels, weights, ignore_index=IGNORE)
    if affinity_target:
        links = weights.shape[-1] - 1
        classes = logits.shape[1] - links
        loss = weighted_cross_entropy(logits[:, :classes], labels, weights[..., 0], ignore_index=IGNORE)
        return loss + affinity_loss(logits[:, classes:], weights[..., 1:])
    if weights.shape[-1] > 2:
        classes = logits.shape[1] - (weights.shape[-1] - 1)
        loss = weighted_cross_entropy(logits[:, :classes], labels, weights[..., 0], ignore_index=IGNORE)
        return loss + star_loss(logits[:, classes], logits[:, classes + 1:], weights[..., 1:], labels != IGNORE,
                                ray_weight=ray_weight)
    classes = logits.shape[1] - 1
    loss = weighted_cross_entropy(logits[:, :classes], labels, weights[..., 0], ignore_index=IGNORE)
    predicted = torch.sigmoid(logits[:, classes])
    return loss + distance_weight * distance_loss(predicted, weights[..., 1], labels != IGNORE)


def _payload(model: UNet, config: TrainConfig, split: Split, **extra: Any) -> dict[str, Any]:
    names = class_names(split.task, config.target, split.num_classes)
    pixel_size = None if config.pixel_size is None else list(config.pixel_size)
    return model_payload(model, normalization=config.normalization, class_names=names, pixel_size_um=pixel_size,
                         train_config=config.to_dict(), target=config.target, task=split.task,
                         diameter_px=split.diameter_px, **extra)


def save_last(state: RunState, config: TrainConfig, run_dir: Path, split: Split) -> None:
    """``last.pt``: everything a resume needs."""
    save_checkpoint(run_dir / "last.pt", _payload(
        state.model, config, split, step=state.step, elapsed_s=state.elapsed_s, optimizer_state=state.optimizer.state_dict(),
        rng_state=_rng_state(), best_score=state.best_score))


def recalibrate_batch_norm(model: torch.nn.Module, images: list[npt.NDArray[np.float32]], *, tile: int | tuple[int, ...],
                           device: torch.device, precision: str, rng: np.random.Generator, count: int = 16) -> None:
    """Batch-norm statistics of the weights as they are now: the running means and variances recomputed as plain
    averages over ``count`` un-augmented ``tile``-px crops of the training images (mirrored where smaller).

    With one tile per step the running statistics follow the last few tiles (momentum 0.1) and lag the weights,
    so a validation or a saved model in eval mode can be far off what training sees ("precise BN", Wu & Johnson
    2021, Rethinking "Batch" in BatchNorm, arXiv:2105.07576). Eval mode keeps prediction seamless: the layers are
    then fixed affine maps.
    """
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return
    momenta = [layer.momentum for layer in layers]
    was_training = model.training
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the calls below
    model.eval()  # no dropout: the statistics are those of the eval-mode network
    for layer in layers:
        layer.train()
    try:
        with torch.no_grad(), autocast(device, precision):
            for _ in range(count):
                image = images[rng.integers(len(images))]
                crop = np.moveaxis(_random_crop(image, tile, rng), -1, 0)[None]
                batch = torch.from_numpy(np.ascontiguousarray(crop)).to(device)
                cpu_2d = device.type == "cpu" and batch.ndim == 4
                model(batch.contiguous(memory_format=torch.channels_last) if cpu_2d else batch)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        model.train(was_training)


def _random_crop(image: npt.NDArray[np.float32], tile: int | tuple[int, ...], rng: np.random.Generator,
                 ) -> npt.NDArray[np.float32]:
    """A crop of ``tile`` (a side, or a shape per spatial axis) of an ``(H, W, C)`` image or ``(Z, Y, X, C)``
    volume, mirrored at the border where it is smaller."""
    window = (tile,) * (image.ndim - 1) if isinstance(tile, int) else tuple(tile)
    pad = [(0, max(0, size - length)) for size, length in zip(window, image.shape[:-1])] + [(0, 0)]
    if any(p[1] for p in pad[:-1]):
        image = np.pad(image, pad, mode="symmetric")
    corner = [int(rng.integers(length - size + 1)) for size, length in zip(window, image.shape[:-1])]
    return image[tuple(slice(c, c + size) for c, size in zip(corner, window))]


def validate_and_checkpoint(state: RunState, config: TrainConfig, run_dir: Path, split: Split,
                            device: torch.device, train_loss: float) -> ValidationEvent:
    """Score the validation images, keep ``best.pt`` by the task's measure, append to ``metrics.csv``, save
    ``last.pt`` (in that order: a kill between the writes leaves rows that a resume drops)."""
    lr = state.optimizer.param_groups[0]["lr"]
    row: dict[str, float] = {"step": state.step, "elapsed_s": round(state.elapsed_s, 2), "lr": lr,
                             "train_loss": train_loss}
    name = score_name(config.select_by, split.task)
    event = ValidationEvent(state.step, state.elapsed_s, train_loss)
    if config.batch_norm:
        recalibrate_batch_norm(state.model, [s.image for s in split.train], tile=config.window_shape, device=device,
                               precision=config.precision, rng=np.random.default_rng((config.seed, state.step)))
    if split.validation:
        probs = predict_samples(state.model, split.validation, normalization=config.normalization,
                                precision=config.precision, device=device)
        scores = task_scores(probs, split.validation, task=split.task, target=config.target)
        if name not in scores:
            raise ValueError(f"select_by={name!r} is not measured for a {split.task} task "
                             f"(measured: {', '.join(sorted(scores))})")
        higher = HIGHER_IS_BETTER[name]
        value = scores[name]
        better = state.best_score is None or (value > state.best_score if higher else value < state.best_score)
        if better:
            state.best_score = value
            save_checkpoint(run_dir / "best.pt", _payload(state.model, config, split, step=state.step, scores=scores))
        row.update(scores, score=value)
        event = replace(event, scores=scores, score_name=name, score=value, higher_is_better=higher, best=better)
    state.history.append(row)
    _write_metrics(run_dir / "metrics.csv", state.history)
    save_last(state, config, run_dir, split)
    return event


# --- the orchestrator ----------------------------------------------------------------------------------------------


def fit(
    config: TrainConfig,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    device: str = "auto",
    progress: Progress | None = None,
    stop_after: int | None = None,
    samples: list[Sample] | None = None,
    notes: list[str] | None = None,
) -> TrainResult:
    """Train a U-Net on ``config.data`` and write the run directory.

    Parameters
    ----------
    config : TrainConfig
        The run's settings (see :func:`biounet.training.config.recipe_defaults`).
    run_dir : path
        Output directory; with ``resume=True`` it must hold the ``last.pt`` of a run with the same config.
    device : str
        ``auto``, ``cpu`` or ``cuda[:N]``. Under ``torchrun`` each rank uses its ``LOCAL_RANK`` GPU.
    progress : callable, optional
        Called with a :class:`~biounet.training.events.StepEvent` after every step and a
        :class:`~biounet.training.events.ValidationEvent` after each validation (rank 0 only).
    stop_after : int, optional
        Stop (saving ``last.pt``) after this many steps of this call, as if interrupted: for tests and to split
        a run over sessions.
    samples : list of Sample, optional
        Use these instead of loading ``config.data``.
    notes : list of str, optional
        Why the settings were chosen; written as comments at the top of ``config.toml``.
    """
    run_dir = Path(run_dir)
    torch_device = rank_device(resolve_device(device))
    group = init_distributed(torch_device)
    split = select_samples(config, samples)
    config, note = resolve_target(config, split.task)
    if note is not None:
        notes = [*(notes or []), note]
        split = replace(split, num_classes=num_target_classes(split.task, config.target, split.dataset_classes))
        if group.is_main:
            logger.warning("%s", note)
    config, note = resolve_pixel_size(config, [s.pixel_size_um for s in split.train + split.validation
                                               if s.dims == 2])
    if note is not None:
        notes = [*(notes or []), note]
        if group.is_main:
            logger.warning("%s", note)
    config, note = resolve_volume(config, [s.pixel_size_um for s in split.train + split.validation])
    if note is not None:
        notes = [*(notes or []), note]
        if group.is_main:
            logger.warning("%s", note)
    if split.num_classes > 8 and config.label_kind == "classes" and group.is_main:
        logger.warning("training %d classes (label values 0..%d); if each label id is one cell, use "
                       "--label-kind instances", split.num_classes, split.num_classes - 1)
    state = open_run(config, run_dir, split, torch_device, group, resume=resume, notes=notes)
    stopped = _train_loop(state, config, run_dir, split, torch_device, group, progress, stop_after)
    if stopped is None and group.is_main:
        finish_run(state, config, run_dir, split, torch_device)
    barrier(group)
    return TrainResult(run_dir, state.step, state.elapsed_s, state.best_score, state.history, state.model,
                       interrupted=stopped is not None, signal=stopped or None)


def _loader(config: TrainConfig, split: Split, group: Distributed, start: int) -> torch.utils.data.DataLoader[Any]:
    prepared = prepare_samples(split.train, config, split.num_classes)
    total_steps = config.iterations if config.iterations is not None else 10**9
    sampler = TileSampler(prepared, config, rank=group.rank, length=total_steps)
    return torch.utils.data.DataLoader(
        sampler, batch_size=None, sampler=range(start, total_steps), num_workers=config.workers,
        prefetch_factor=2 if config.workers else None, persistent_workers=False,
        generator=torch.Generator().manual_seed(config.seed),  # keeps the global RNG (dropout) untouched
    )


def _train_loop(state: RunState, config: TrainConfig, run_dir: Path, split: Split, device: torch.device,
                group: Distributed, progress: Progress | None, stop_after: int | None) -> int | None:
    """Steps until the budget is spent (None) or a signal (its number) or ``stop_after`` (0) asks to stop."""
    network: torch.nn.Module = state.model
    if group.world_size > 1:
        network = DistributedDataParallel(state.model, device_ids=[device.index] if device.type == "cuda" else None)
    compiled, note = resolve_compile(config, device.type, world_size=group.world_size)
    if note is not None and group.is_main:
        logger.warning("%s", note)
    steps = CompiledSteps(network, compiled=compiled)  # validation and batch-norm recalibration run the module
    state.model.train()
    losses: list[float] = []
    clock = time.perf_counter() - state.elapsed_s
    window_start, window_steps, steps_this_call = time.perf_counter(), 0, 0
    with _Interrupt() as interrupt:
        for batch in _loader(config, split, group, state.step):
            lr = learning_rate(config, state.step, _progress(config, state.step, state.elapsed_s))
            losses.append(steps(state.optimizer, batch, config=config, device=device, lr=lr))
            state.step, steps_this_call, window_steps = state.step + 1, steps_this_call + 1, window_steps + 1
            state.elapsed_s = time.perf_counter() - clock
            done = agree(_budget_spent(config, state.step, state.elapsed_s), group)
            if progress is not None and group.is_main:
                rate = window_steps / max(time.perf_counter() - window_start, 1e-9)
                progress(StepEvent(state.step, losses[-1], lr, state.elapsed_s, rate))
            if state.step % config.val_every == 0 or done:
                if group.is_main:
                    event = validate_and_checkpoint(state, config, run_dir, split, device, float(np.mean(losses)))
                    if progress is not None:
                        progress(event)
                losses.clear()
                window_start, window_steps = time.perf_counter(), 0
            if done:
                return None
            if interrupt.requested or (stop_after is not None and steps_this_call >= stop_after):
                if group.is_main:
                    save_last(state, config, run_dir, split)
                return interrupt.signal or 0
    return None


class CompiledSteps:
    """Training steps (:func:`train_step`) through ``torch.compile`` where asked, on the module (eager) otherwise
    or once compilation fails: then one warning line says why, and the same batch is stepped eagerly.

    A compilation error leaves the optimizer and weights as they were (it comes before the optimizer step, and
    :func:`train_step` zeroes the gradients before the backward pass), so the run goes on as an eager run would.
    Errors that are not compilation errors propagate (an eager step raises them anew).
    """

    def __init__(self, network: torch.nn.Module, *, compiled: bool) -> None:
        self.eager = network
        self.network = network
        if compiled:
            import torch._dynamo  # its errors are what a failed compilation raises

            try:
                self.network = torch.compile(network)  # type: ignore[assignment]
            except RuntimeError as err:  # torch.compile itself refuses (unsupported Python or platform)
                self._fall_back(err)

    @property
    def compiled(self) -> bool:
        """Whether the next step runs through ``torch.compile``."""
        return self.network is not self.eager

    def __call__(self, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, ...], *, config: TrainConfig,
                 device: torch.device, lr: float) -> float:
        if self.compiled:
            try:
                return train_step(self.network, optimizer, batch, config=config, device=device, lr=lr)
            except torch._dynamo.exc.TorchDynamoException as err:  # compilation failed (no C++ compiler, ...)
                self._fall_back(err)
        return train_step(self.eager, optimizer, batch, config=config, device=device, lr=lr)

    def _fall_back(self, err: Exception) -> None:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [""]
        cause = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]  # "backend='inductor' raised:" + why
        logger.warning("torch.compile failed (%s: %s); training goes on with eager steps", type(err).__name__,
                       cause[:300])
        self.network = self.eager


def finish_run(state: RunState, config: TrainConfig, run_dir: Path, split: Split, device: torch.device) -> None:
    """``model.pt`` (the best validation checkpoint, else the final weights; with the instance post-processing
    chosen on the validation images for cells) and ``report.html``."""
    from biounet.training.runreport import write_run_report

    best, model, step = run_dir / "best.pt", state.model, state.step
    if best.exists():  # a copy: the run's own weights (and every DDP rank's) stay the final ones
        model, chosen = copy.deepcopy(state.model), load_checkpoint(best)
        model.load_state_dict(chosen["model_state"])
        step = int(chosen["step"])
    extra: dict[str, Any] = {"step": step}
    if split.task in ("cells", "membranes") and split.validation:
        extra.update(_post_processing(model, config, split, device))
    save_checkpoint(run_dir / "model.pt", _payload(model, config, split, **extra))
    write_run_report(run_dir, split.validation, config, state.history, device)


def rechoose_post_processing(run_dir: str | os.PathLike[str], *, device: str = "auto",
                             ) -> InstanceParams | SegmentParams:
    """Choose the post-processing of a finished cell or membrane run again on its own validation images (the rules
    of :func:`biounet.evaluation.validation.choose_instance_params` and :func:`~biounet.evaluation.validation.choose_segment_params`,
    which may have changed since it trained) and store it in its ``model.pt``; returns the settings.

    Raises
    ------
    ValueError
        If the run has no validation images or is neither a cell nor a membrane run.
    """
    run_dir = Path(run_dir)
    config = read_config_toml(run_dir / "config.toml")
    split = select_samples(config, None)
    if split.task not in ("cells", "membranes") or not split.validation:
        raise ValueError(f"{run_dir}: no validation images of instance-labelled cells or membranes to choose on")
    payload = load_checkpoint(run_dir / "model.pt")
    model = model_from_payload(payload, run_dir / "model.pt")
    chosen = _post_processing(model, config, split, resolve_device(device))
    if not chosen:
        raise MissingExtra(missing_message("elf", "choosing segment settings", extra=SEGMENTS_EXTRA,
                                           package="python-elf"))
    save_checkpoint(run_dir / "model.pt", {**payload, **chosen})
    if split.task == "membranes":
        return SegmentParams(**chosen["segment_params"])
    return InstanceParams(**chosen["instance_params"])


def _post_processing(model: UNet, config: TrainConfig, split: Split, device: torch.device) -> dict[str, Any]:
    """The checkpoint entries of the post-processing chosen on the validation images: instance settings for cells,
    segment settings for membranes (none, with a warning, where python-elf is missing)."""
    probs = predict_samples(model, split.validation, normalization=config.normalization,
                            precision=config.precision, device=device)
    if split.task == "membranes":
        try:
            return _segment_post_processing(model, config, split, device, probs)
        except ModuleNotFoundError as err:
            logger.warning("segment settings not chosen: %s", err)
            return {}
    return _cell_post_processing(model, config, split, device, probs)


def _cell_post_processing(model: UNet, config: TrainConfig, split: Split, device: torch.device,
                          probs: list[npt.NDArray[np.float32]]) -> dict[str, Any]:
    """A cell run's instance settings chosen on its validation images, on its outputs as they are and averaged over
    the 8 rotations and flips: ``tta`` is stored with the model where the averaged outputs' instances score higher
    (the mean of SEG and object F1), as a membrane run's segments choose it. Rays and affinities turn with the
    image and volumes are not averaged, so those runs keep ``tta`` off."""
    params, score, seg = instance_choice(probs, split.validation, target=config.target)
    tta = False
    if not (model.config.ray_channels or model.config.affinity_channels or config.dims == 3):
        averaged = predict_samples(model, split.validation, normalization=config.normalization,
                                   precision=config.precision, device=device, tta=True)
        tta_params, tta_score, tta_seg = instance_choice(averaged, split.validation, target=config.target)
        logger.info("instances of the outputs averaged over rotations and flips: %s (score %.4f against %.4f)",
                    tta_params, tta_score, score)
        if tta_score > score:
            params, seg, tta, probs = tta_params, tta_seg, True, averaged
    logger.info("instance post-processing chosen on the validation images: %s, tta %s (SEG %.4f)", params, tta, seg)
    return {"instance_params": asdict(params), "instance_params_seg": seg, "tta": tta,
            **diameter_calibration(probs, split)}


def diameter_calibration(probs: list[npt.NDArray[np.float32]], split: Split) -> dict[str, float]:
    """``{"diameter_calibration": r}`` for a run at a common diameter: the median over validation images of how much
    larger the predicted cells measure than the labelled ones (:func:`biounet.inference.predict.predicted_diameter`),
    by which prediction divides its measures; empty for other runs or where nothing was measured."""
    if split.diameter_px is None:
        return {}
    ratios = []
    for prob, sample in zip(probs, split.validation):
        measured = predicted_diameter(prob, split.num_classes)
        true = median_diameter(sample.instances) if sample.instances is not None else None
        if measured and true:
            ratios.append(measured / true)
    return {"diameter_calibration": float(np.median(ratios))} if ratios else {}


def _segment_post_processing(model: UNet, config: TrainConfig, split: Split, device: torch.device,
                             probs: list[npt.NDArray[np.float32]]) -> dict[str, Any]:
    """A membrane run's segment settings chosen on its validation images, on its maps as they are and averaged over
    the 8 rotations and flips (test-time augmentation): ``tta`` is stored with the model where the averaged maps'
    segments score the lower Rand error (``biounet predict`` then averages unless told ``--no-tta``). Affinities
    are directional, so an affinities model is not averaged."""
    chosen, scores = choose_segment_params(probs, split.validation)
    tta = False
    if not model.config.affinity_channels:
        averaged = predict_samples(model, split.validation, normalization=config.normalization,
                                   precision=config.precision, device=device, tta=True)
        tta_chosen, tta_scores = choose_segment_params(averaged, split.validation)
        logger.info("segments of the maps averaged over rotations and flips: %s (%s)", tta_chosen, tta_scores)
        if tta_scores["rand_error"] < scores["rand_error"]:
            chosen, scores, tta = tta_chosen, tta_scores, True
    logger.info("segment post-processing chosen on the validation images: %s, tta %s (%s)", chosen, tta, scores)
    return {"segment_params": asdict(chosen), "segment_scores": scores, "tta": tta}


def _remove_orphan_temp_files(run_dir: Path) -> None:
    """Temporary files of atomic writes that a killed run left (``.NAME.*.tmp``, see :func:`biounet.data.files.atomic_path`)."""
    for path in run_dir.glob(".*.tmp"):
        path.unlink(missing_ok=True)
        logger.info("removed %s, left by a killed run", path)


def _name_matches(name: str, entry: str) -> bool:
    """``entry`` names the sample ``name`` whole or by its trailing path parts (``01/t005`` for ``HeLa/01/t005``)."""
    return name == entry or name.endswith("/" + entry.strip("/"))


def _progress(config: TrainConfig, step: int, elapsed: float) -> float:
    if config.iterations is not None:
        return step / config.iterations
    assert config.time_budget_s is not None  # TrainConfig requires one of the two
    return elapsed / config.time_budget_s


def _budget_spent(config: TrainConfig, step: int, elapsed: float) -> bool:
    return (config.iterations is not None and step >= config.iterations) or (
        config.time_budget_s is not None and elapsed >= config.time_budget_s)


def _config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [key for key in sorted(set(old) | set(new)) if key not in ("workers", "compile")
            and old.get(key) != new.get(key)]


# --- run directory files -----------------------------------------------------------------------------------------

_METRIC_COLUMNS = ("step", "elapsed_s", "lr", "train_loss", "seg", "object_f1", "foreground_iou", "pixel_error",
                   "rand_error", "mean_iou", "score")


def _write_metrics(path: Path, rows: list[dict[str, float]]) -> None:
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_METRIC_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def _read_metrics(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with path.open() as handle:
        return [{k: int(float(v)) if k == "step" else float(v) for k, v in row.items() if v not in ("", None)}
                for row in csv.DictReader(handle)]


class _Interrupt:
    """Turn SIGINT/SIGTERM into a request to stop after the current step (and save ``last.pt``)."""

    def __init__(self) -> None:
        self.requested = False
        self.signal: int | None = None  # the signal that asked to stop
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Interrupt:
        if _in_main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second signal: stop now
            raise KeyboardInterrupt
        self.requested, self.signal = True, signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


__all__ = [
    "PreparedSample", "RunState", "Split", "TileSampler", "TrainResult", "finish_run", "fit", "learning_rate",
    "open_run", "prepare_samples", "save_last", "select_samples", "train_dataset", "train_step",
    "validate_and_checkpoint",
]


def train_dataset(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    time_budget: float | str | None = None,
    iterations: int | None = None,
    label_kind: str | None = None,
    base_channels: int | None = None,
    device: str = "auto",
    resume: bool = False,
    settings: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train a U-Net on a dataset folder, as ``biounet train`` does, with the same measured defaults; this is what
    calling the module, ``biounet.train(...)``, runs.

    Parameters
    ----------
    data : path or str
        Dataset folder (``images/`` + ``labels/`` or ``masks/``, paired by file stem; or an ISBI 2012 or Cell
        Tracking Challenge folder), or ``synthetic:cells``.
    out : path
        Run folder; ``out/model.pt`` is the model to predict with.
    time_budget : float (seconds) or str, optional
        Training time, e.g. ``600`` or ``"10m"``, ``"1h"``. Give this or ``iterations``.
    iterations : int, optional
        Number of training steps.
    label_kind : {"auto", "classes", "instances"}, optional
        How label files are read (default ``auto``: decided from the files).
    base_channels : int, optional
        Network width; measured from the time budget when None (as ``--base-channels``).
    device : str, optional
        ``auto``, ``cpu``, ``cuda[:N]`` or ``mps``.
    resume : bool, optional
        Continue the run in ``out`` exactly.
    settings : mapping, optional
        Any other :class:`~biounet.training.config.TrainConfig` field by name (``{"tile": 316, "depth": 3}``), as the
        command line's flags.
    progress : callable, optional
        Called with each :class:`~biounet.training.events.StepEvent` and :class:`~biounet.training.events.ValidationEvent`.

    Returns
    -------
    TrainResult
        Steps, time, best validation score and history; ``run_dir / "model.pt"`` is the best checkpoint.

    Raises
    ------
    ValueError
        On bad settings or data (the message names the problem), or when neither budget is given.
    """
    from biounet.training.autoconfig import TrainRequest, resolve_train_config
    from biounet.training.config import parse_duration

    given = {"iterations": iterations, "label_kind": label_kind, "base_channels": base_channels,
             "time_budget_s": parse_duration(time_budget) if isinstance(time_budget, str) else time_budget}
    request = TrainRequest(data=os.fspath(data), out=Path(out), device=device, resume=resume,
                           settings={**(settings or {}), **{k: v for k, v in given.items() if v is not None}})
    config, notes = resolve_train_config(request)
    for note in notes:
        logger.info("biounet.training.train: %s", note)
    return fit(config, out, resume=resume, device=device, progress=progress, notes=notes)


make_callable(__name__, train_dataset)
