"""Training U-Net the paper's way: weighted loss, elastic deformation, large tiles; exact resume; DDP.

``fit(config)`` reads a dataset (:mod:`biounet.data`), precomputes the weight maps (:mod:`biounet.weights`),
samples augmented tiles with their context (:mod:`biounet.augment`) in worker processes, and minimises the
weighted cross-entropy (:mod:`biounet.loss`). Every training step's tiles depend only on ``(seed, step, rank)``,
so a run resumed from ``last.pt`` (model, optimizer, step, elapsed time and RNG states) continues exactly.

Recipes:

- ``paper``: SGD with momentum 0.99, one large tile (572 px) per step, base 64, fp32, constant learning rate.
- ``fast``: Adam, learning rate warmed up for ``warmup_steps`` then cosine-decayed to 5 % over the run (by step
  count, or by elapsed time under a time budget), bf16 autocast where the hardware runs it natively.

Run directory: ``last.pt`` (everything needed to resume), ``best.pt`` (best validation score), ``model.pt`` (the
final model for ``biounet predict``: the best validation checkpoint), ``config.toml``, ``split.json`` (which images
were held back for validation), ``metrics.csv`` and ``report.html``; all written atomically.
"""

from __future__ import annotations

import csv
import json
import io as _io
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from biounet.augment import AugmentConfig, sample_window
from biounet.checkpoint import load_checkpoint, model_payload, save_checkpoint
from biounet.data import load_dataset, split_samples
from biounet.device import autocast, resolve_device
from biounet.io import NORMALIZATIONS, write_text
from biounet.loss import weighted_cross_entropy
from biounet.model import ModelConfig, UNet, nearest_valid_sizes, output_size
from biounet.predict import TorchPredictor, predict_image
from biounet.samples import IGNORE, Sample
from biounet.weights import separation_borders, weight_map_from_classes

logger = logging.getLogger(__name__)

RECIPES: tuple[str, ...] = ("fast", "paper")
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run; written to ``config.toml`` and stored in checkpoints."""

    data: str
    layout: str | None = None
    label_kind: str = "classes"  # pairs layout: "instances" when label files hold one id per cell
    silver: bool = False  # ctc layout: also train on the silver-truth frames
    exclude: tuple[str, ...] = ()  # sample names left out of training and validation (held out for testing)
    recipe: str = "fast"
    base_channels: int = 16
    depth: int = 4
    variant: str = "paper"
    batch_norm: bool = False
    tile: int = 572  # input tile side; labels and weights are cut at the network's output size
    batch_size: int = 1
    iterations: int | None = None
    time_budget_s: float | None = None
    precision: str = "fp32"
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.99
    weight_decay: float = 0.0
    warmup_steps: int = 20
    schedule: str = "cosine"  # or "constant"
    w0: float = 10.0
    sigma_px: float = 5.0
    class_balance: bool = True
    validation_fraction: float = 0.2
    val_every: int = 200
    seed: int = 0
    normalization: str = "percentile"
    workers: int = 0  # data-loading processes; 0 = in the training process (best on 2 cores)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {RECIPES}, got {self.recipe!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16 (resolve 'auto' first), got {self.precision!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be cosine or constant, got {self.schedule!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.iterations is None and self.time_budget_s is None:
            raise ValueError("give iterations or a time budget")
        if self.iterations is not None and self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(f"time budget must be > 0 seconds, got {self.time_budget_s}")
        for name in ("batch_size", "val_every", "base_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.workers < 0:
            raise ValueError(f"lr must be > 0, warmup_steps and workers >= 0; got {self.lr}, "
                             f"{self.warmup_steps}, {self.workers}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        try:
            output_size(self.tile, self.depth, "valid")
        except ValueError:
            below, above = nearest_valid_sizes(self.tile, self.depth)
            raise ValueError(f"tile size {self.tile} is not valid for a U-Net of depth {self.depth}; nearest valid "
                             f"tile sizes: {below} or {above}") from None

    def model_config(self, in_channels: int, num_classes: int) -> ModelConfig:
        return ModelConfig(in_channels=in_channels, num_classes=num_classes, depth=self.depth,
                           base_channels=self.base_channels, variant=self.variant, batch_norm=self.batch_norm)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        values = dict(values)
        if "exclude" in values:
            values["exclude"] = tuple(values["exclude"])
        augment = values.pop("augment", {}) or {}
        augment = {k: tuple(v) if isinstance(v, list) else v for k, v in augment.items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(unknown)}")
        return cls(**values, augment=AugmentConfig(**augment))


def recipe_defaults(recipe: str) -> dict[str, Any]:
    """Settings that define a recipe (see the module docstring)."""
    if recipe == "paper":
        return dict(recipe="paper", optimizer="sgd", lr=0.01, momentum=0.99, batch_size=1, base_channels=64,
                    tile=572, precision="fp32", schedule="constant", warmup_steps=0)
    if recipe == "fast":
        return dict(recipe="fast", optimizer="adam", lr=1e-3, batch_size=1, tile=572, schedule="cosine",
                    warmup_steps=20)
    raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")


# --- data: prepared samples and the tile sampler --------------------------------------------------------------


@dataclass
class PreparedSample:
    """A training image with its class targets and weight map, all full-size."""

    name: str
    image: npt.NDArray[np.float32]  # (H, W, C)
    classes: npt.NDArray[np.int64]  # (H, W), IGNORE for unannotated pixels
    weights: npt.NDArray[np.float32]  # (H, W)


def class_frequencies(samples: list[Sample], num_classes: int) -> npt.NDArray[np.float64]:
    """Fraction of annotated pixels of each class over a dataset."""
    counts = np.zeros(num_classes, dtype=np.float64)
    for sample in samples:
        assert sample.classes is not None  # callers pass labelled samples only
        valid = sample.classes[sample.classes != IGNORE]
        counts += np.bincount(valid.ravel(), minlength=num_classes)[:num_classes]
    total = counts.sum()
    if total == 0:
        raise ValueError("the dataset has no annotated pixels")
    return counts / total


def separate_touching(sample: Sample) -> npt.NDArray[np.int64]:
    """Class targets where touching cells are split by a background border (paper section 3).

    Applies when the foreground class is exactly the union of the instances (cell segmentation with instance
    labels, e.g. the Cell Tracking Challenge); other targets (ISBI membranes) are returned unchanged.
    """
    assert sample.classes is not None
    classes, instances = sample.classes, sample.instances
    if instances is None or classes.max(initial=0) > 1:
        return classes
    valid = classes != IGNORE
    if not np.array_equal(classes[valid] == 1, instances[valid] > 0):
        return classes
    separated = separation_borders(instances)
    return np.where(valid, (separated > 0).astype(np.int64), IGNORE)


def prepare_samples(samples: list[Sample], config: TrainConfig, num_classes: int) -> list[PreparedSample]:
    """Targets with separated touching cells and their weight maps w = w_c + border term (eq. 2)."""
    frequencies = class_frequencies(samples, num_classes) if config.class_balance else None
    prepared = []
    for sample in samples:
        classes = separate_touching(sample)
        if config.class_balance:
            weights = weight_map_from_classes(
                classes, sample.instances, num_classes=num_classes, w0=config.w0, sigma_px=config.sigma_px,
                class_frequencies=frequencies, ignore_index=IGNORE,
            )
        else:
            weights = np.where(classes == IGNORE, 0.0, 1.0).astype(np.float32)
        prepared.append(PreparedSample(sample.name, sample.image, classes, weights.astype(np.float32)))
    return prepared


class TileSampler(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """The tiles of training step ``i``: a batch drawn with ``np.random.default_rng((seed, rank, i))``.

    Indexing by step makes the data independent of worker scheduling, and resuming exact.
    """

    def __init__(self, samples: list[PreparedSample], config: TrainConfig, *, rank: int = 0, length: int) -> None:
        self.samples, self.config, self.rank, self.length = samples, config, rank, length
        self.out_tile = output_size(config.tile, config.depth)
        sizes = np.array([s.classes.size for s in samples], dtype=np.float64)
        self.sample_p = sizes / sizes.sum()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.config.seed, self.rank, step))
        images, labels, weights = [], [], []
        for _ in range(self.config.batch_size):
            sample = self.samples[rng.choice(len(self.samples), p=self.sample_p)]
            height, width = sample.classes.shape
            center = (rng.uniform(0, height), rng.uniform(0, width))
            tile = sample_window(sample.image, sample.classes, sample.weights, in_tile=self.config.tile,
                                 out_tile=self.out_tile, center=center, config=self.config.augment, rng=rng)
            images.append(tile.image.transpose(2, 0, 1) if tile.image.ndim == 3 else tile.image[None])
            labels.append(tile.labels)
            assert tile.weights is not None
            weights.append(tile.weights)
        return (torch.from_numpy(np.ascontiguousarray(np.stack(images), dtype=np.float32)),
                torch.from_numpy(np.stack(labels).astype(np.int64)),
                torch.from_numpy(np.stack(weights).astype(np.float32)))


# --- schedule, validation ---------------------------------------------------------------------------------------


def learning_rate(config: TrainConfig, step: int, progress: float) -> float:
    """Learning rate at ``step``: linear warm-up, then constant or cosine decay to 5 % by ``progress`` in [0, 1]."""
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    if config.schedule == "constant":
        return config.lr * warm
    progress = min(max(progress, 0.0), 1.0)
    return config.lr * warm * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def binary_pixel_error(prob1: npt.NDArray[np.float32], classes: npt.NDArray[np.int64]) -> float:
    """1 - max F-score of class 0 over thresholds 0.0..1.0 (the ISBI pixel error when class 1 is the membrane),
    over annotated pixels only."""
    valid = classes != IGNORE
    positive_true = classes[valid] == 0
    p0 = 1.0 - prob1[valid]
    best = 0.0
    for threshold in np.linspace(0.0, 1.0, 11):
        positive = p0 > threshold
        tp = float(np.count_nonzero(positive & positive_true))
        denominator = float(np.count_nonzero(positive) + np.count_nonzero(positive_true))
        best = max(best, 2 * tp / denominator if denominator else 0.0)
    return 1.0 - best


def validate(model: UNet, samples: list[Sample], config: TrainConfig, device: torch.device,
             normalization: str) -> dict[str, float]:
    """Predict each validation image whole (overlap-tile) and score it.

    Returns ``pixel_error`` (binary tasks: class 0 positive, thresholds 0..1), ``mean_iou`` over classes
    (arg-max), and ``score``, the value the best checkpoint minimises (pixel error for 2 classes, else 1 - mIoU).
    """
    was_training = model.training
    predictor = TorchPredictor(model, normalization=normalization, device=device, precision=config.precision,
                               channels_last=False)
    pixel_errors, ious = [], []
    try:
        for sample in samples:
            assert sample.classes is not None
            probs = predict_image(predictor, sample.image, tile=None)
            valid = sample.classes != IGNORE
            predicted = probs.argmax(0)
            per_class = []
            for k in range(probs.shape[0]):
                union = np.count_nonzero(((predicted == k) | (sample.classes == k)) & valid)
                if union:
                    per_class.append(np.count_nonzero((predicted == k) & (sample.classes == k) & valid) / union)
            ious.append(float(np.mean(per_class)))
            if probs.shape[0] == 2:
                pixel_errors.append(binary_pixel_error(probs[1], sample.classes))
    finally:
        model.train(was_training)
    result = {"mean_iou": float(np.mean(ious))}
    if pixel_errors:
        result["pixel_error"] = float(np.mean(pixel_errors))
    result["score"] = result.get("pixel_error", 1.0 - result["mean_iou"])
    return result


# --- the loop ---------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What a run produced."""

    run_dir: Path
    steps: int
    elapsed_s: float
    best_score: float | None
    history: list[dict[str, float]]
    model: UNet | None = None  # the weights at the end of this call (every rank has its own copy)


@dataclass
class _Distributed:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> _Distributed:
    """Join the process group that torchrun describes in the environment (gloo on CPU, nccl on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return _Distributed()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return _Distributed(rank=dist.get_rank(), world_size=dist.get_world_size())


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [key for key in sorted(set(old) | set(new)) if key != "workers" and old.get(key) != new.get(key)]


def fit(
    config: TrainConfig,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    device: str = "auto",
    progress: Callable[[dict[str, float]], None] | None = None,
    stop_after: int | None = None,
    samples: list[Sample] | None = None,
    notes: list[str] | None = None,
) -> TrainResult:
    """Train a U-Net on ``config.data`` and write the run directory.

    Parameters
    ----------
    config : TrainConfig
        The run's settings (see :func:`recipe_defaults`).
    run_dir : path
        Output directory; with ``resume=True`` it must hold the ``last.pt`` of a run with the same config.
    device : str
        ``auto``, ``cpu`` or ``cuda[:N]``. Under ``torchrun`` each rank uses its ``LOCAL_RANK`` GPU.
    progress : callable, optional
        Called after every step with ``{"step", "loss", "lr", "elapsed_s", "steps_per_s"}`` and the validation
        scores when they are computed.
    stop_after : int, optional
        Stop (saving ``last.pt``) after this many steps of this call, as if interrupted: for tests and to split
        a run over sessions.
    samples : list of Sample, optional
        Use these instead of loading ``config.data``.
    notes : list of str, optional
        Why the settings were chosen; written as comments at the top of ``config.toml``.
    """
    run_dir = Path(run_dir)
    torch_device = resolve_device(device)
    if torch_device.type == "cuda" and "LOCAL_RANK" in os.environ:
        torch_device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    ddp = _init_distributed(torch_device)
    if samples is None:
        options: dict[str, Any] = {}
        if config.label_kind != "classes":
            options["label_kind"] = config.label_kind
        if config.silver:
            options["use_silver"] = True
        samples = load_dataset(config.data, layout=config.layout, normalization=config.normalization, **options)
    excluded = {s.name for s in samples if any(_name_matches(s.name, entry) for entry in config.exclude)}
    unknown = [entry for entry in config.exclude if not any(_name_matches(n, entry) for n in excluded)]
    if unknown:
        raise ValueError(f"{config.data}: cannot exclude {', '.join(unknown[:5])}: no such images "
                         f"(names look like {samples[0].name!r})")
    labelled = [s for s in samples if s.classes is not None and s.name not in excluded]
    if not labelled:
        raise ValueError(f"{config.data}: no labelled images to train on")
    train_samples, val_samples = (
        split_samples(labelled, validation_fraction=config.validation_fraction, rng=config.seed)
        if config.validation_fraction > 0 and len(labelled) > 1 else (labelled, [])
    )
    in_channels = train_samples[0].image.shape[-1]
    num_classes = max(2, int(max(int(s.classes.max(initial=0)) for s in labelled)) + 1)  # type: ignore[union-attr]
    model_config = config.model_config(in_channels, num_classes)
    if num_classes > 8 and config.label_kind == "classes" and ddp.is_main:
        logger.warning("training %d classes (label values 0..%d); if each label id is one cell, use "
                       "--label-kind instances", num_classes, num_classes - 1)

    torch.manual_seed(config.seed)
    model = UNet(model_config).to(torch_device)
    if torch_device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    if config.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=config.lr,
                                                           momentum=config.momentum,
                                                           weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    step, elapsed, best_score, history = 0, 0.0, None, []
    last_path = run_dir / "last.pt"
    if resume:
        payload = load_checkpoint(last_path)
        differences = _config_differences(payload.get("train_config", {}), config.to_dict())
        if differences:
            raise ValueError(f"{last_path}: cannot resume, the run was made with other settings "
                             f"({', '.join(differences)}); use a new --out directory")
        model.load_state_dict(payload["model_state"])
        optimizer.load_state_dict(payload["optimizer_state"])
        _set_rng_state(payload["rng_state"])
        step, elapsed = int(payload["step"]), float(payload["elapsed_s"])
        best_score = payload.get("best_score")
        history = list(_read_metrics(run_dir / "metrics.csv"))
    elif ddp.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if last_path.exists():
            raise ValueError(f"{run_dir}: already holds a run (last.pt); use --resume or a new --out directory")
        write_config_toml(run_dir / "config.toml", config, notes)
        write_text(run_dir / "split.json", json.dumps(
            {"train": [s.name for s in train_samples], "validation": [s.name for s in val_samples]}, indent=1))

    train_model: torch.nn.Module = model
    if ddp.world_size > 1:
        train_model = DistributedDataParallel(model, device_ids=[torch_device.index] if torch_device.type == "cuda"
                                              else None)
    prepared = prepare_samples(train_samples, config, num_classes)
    total_steps = config.iterations if config.iterations is not None else 10**9
    sampler = TileSampler(prepared, config, rank=ddp.rank, length=total_steps)
    loader = torch.utils.data.DataLoader(
        sampler, batch_size=None, sampler=range(step, total_steps), num_workers=config.workers,
        prefetch_factor=2 if config.workers else None, persistent_workers=False,
        generator=torch.Generator().manual_seed(config.seed),  # keeps the global RNG (dropout) untouched
    )
    interrupted = _Interrupt()
    model.train()
    running: list[float] = []
    steps_this_call = 0
    clock = time.perf_counter() - elapsed
    window_start, window_steps = time.perf_counter(), 0

    def save_last() -> None:
        if ddp.is_main:
            save_checkpoint(last_path, model_payload(
                model, normalization=config.normalization, step=step, elapsed_s=elapsed,
                train_config=config.to_dict(), optimizer_state=optimizer.state_dict(), rng_state=_rng_state(),
                best_score=best_score,
            ))

    def evaluate_and_save() -> None:
        nonlocal best_score
        row: dict[str, float] = {"step": step, "elapsed_s": round(elapsed, 2), "lr": learning_rate(
            config, max(step - 1, 0), _progress(config, step, elapsed)),
            "train_loss": float(np.mean(running)) if running else float("nan")}
        if ddp.is_main and val_samples:
            row.update(validate(model, val_samples, config, torch_device, config.normalization))
            if best_score is None or row["score"] < best_score:
                best_score = row["score"]
                save_checkpoint(run_dir / "best.pt", model_payload(
                    model, normalization=config.normalization, step=step, train_config=config.to_dict(),
                    scores=row))
        running.clear()
        if ddp.is_main:
            history.append(row)
            _write_metrics(run_dir / "metrics.csv", history)
        save_last()
        if progress is not None and ddp.is_main:  # only rank 0 validates
            progress(row)

    with interrupted:
        for images, labels, weights in loader:
            progress_fraction = _progress(config, step, elapsed)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step, progress_fraction)
            images = images.to(torch_device, non_blocking=True)
            if torch_device.type == "cpu":
                images = images.contiguous(memory_format=torch.channels_last)
            labels, weights = labels.to(torch_device), weights.to(torch_device)
            with autocast(torch_device, config.precision):
                logits = train_model(images)
            loss = weighted_cross_entropy(logits.float(), labels, weights, ignore_index=IGNORE)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training diverged at step {step}: loss is {loss.item()}; "
                                         f"lower the learning rate (now {config.lr})")
            step += 1
            steps_this_call += 1
            window_steps += 1
            elapsed = time.perf_counter() - clock
            running.append(float(loss.item()))
            done = _should_stop(config, step, elapsed, ddp)
            if progress is not None:
                now = time.perf_counter()
                progress({"step": step, "loss": running[-1], "lr": optimizer.param_groups[0]["lr"],
                          "elapsed_s": elapsed, "steps_per_s": window_steps / max(now - window_start, 1e-9)})
            if step % config.val_every == 0 or done:
                evaluate_and_save()
                window_start, window_steps = time.perf_counter(), 0
            if done:
                break
            if interrupted.requested or (stop_after is not None and steps_this_call >= stop_after):
                save_last()
                return TrainResult(run_dir, step, elapsed, best_score, history, model)
    if ddp.is_main:
        _finish(run_dir, model, config)
        write_run_report(run_dir, val_samples, config, history, torch_device)
    if ddp.world_size > 1:
        dist.barrier()
    return TrainResult(run_dir, step, elapsed, best_score, history, model)


def _name_matches(name: str, entry: str) -> bool:
    """``entry`` names the sample ``name`` whole or by its trailing path parts (``01/t005`` for ``HeLa/01/t005``)."""
    return name == entry or name.endswith("/" + entry.strip("/"))


def _progress(config: TrainConfig, step: int, elapsed: float) -> float:
    if config.iterations is not None:
        return step / config.iterations
    assert config.time_budget_s is not None
    return elapsed / config.time_budget_s


def _should_stop(config: TrainConfig, step: int, elapsed: float, ddp: _Distributed) -> bool:
    stop = (config.iterations is not None and step >= config.iterations) or (
        config.time_budget_s is not None and elapsed >= config.time_budget_s)
    if ddp.world_size > 1:  # all ranks stop at the same step: rank 0's clock decides
        flag = torch.tensor([1.0 if stop else 0.0])
        dist.broadcast(flag, src=0)
        stop = bool(flag.item())
    return stop


def _finish(run_dir: Path, model: UNet, config: TrainConfig) -> None:
    """``model.pt``: the best validation checkpoint if there is one, else the final weights."""
    best = run_dir / "best.pt"
    source = load_checkpoint(best) if best.exists() else None
    if source is None:
        payload = model_payload(model, normalization=config.normalization, train_config=config.to_dict())
    else:
        payload = {k: v for k, v in source.items() if k not in ("format", "kind")}
    save_checkpoint(run_dir / "model.pt", payload)


def write_run_report(run_dir: Path, val_samples: list[Sample], config: TrainConfig,
                     history: list[dict[str, float]], device: torch.device, max_overlays: int = 4) -> Path:
    """``report.html`` with the curves and overlays of ``model.pt``'s validation predictions (also as PNGs)."""
    from biounet.checkpoint import load_model
    from biounet.report import plot_curves, save_overlay, write_report

    pictures: list[tuple[str, Path]] = []
    if history:
        pictures.append(("training loss and validation scores", plot_curves(history, run_dir / "curves.png")))
    model = load_model(run_dir / "model.pt", device)
    predictor = TorchPredictor(model, normalization=config.normalization, device=device,
                               precision=config.precision, channels_last=False)
    for sample in val_samples[:max_overlays]:
        assert sample.classes is not None
        predicted = predict_image(predictor, sample.image).argmax(0)
        name = sample.name.replace("/", "_")
        truth = np.where(sample.classes == IGNORE, 0, sample.classes)
        pictures.append((f"{sample.name}: image | prediction | ground truth",
                         save_overlay(run_dir / f"overlay_{name}.png", sample.image, predicted, truth)))
    last = history[-1] if history else {}
    summary = {"data": config.data, "steps": int(last.get("step", 0)), "training time (s)": last.get("elapsed_s"),
               "best validation score": min((r["score"] for r in history if "score" in r), default=None),
               "network": f"U-Net base {config.base_channels}, depth {config.depth}, {config.precision}"}
    toml = run_dir / "config.toml"
    return write_report(run_dir / "report.html", title=f"biounet training run {run_dir.name}", summary=summary,
                        pictures=pictures, config_text=toml.read_text() if toml.exists() else "")


class _Interrupt:
    """Turn SIGINT/SIGTERM into a request to stop after the current step (and save ``last.pt``)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Interrupt:
        if _in_main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second signal: stop now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# --- run directory files -----------------------------------------------------------------------------------------

_METRIC_COLUMNS = ("step", "elapsed_s", "lr", "train_loss", "pixel_error", "mean_iou", "score")


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


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_toml(config: TrainConfig) -> str:
    """The resolved config as TOML (``None`` values are omitted)."""
    values = config.to_dict()
    augment = values.pop("augment")
    lines = [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    lines += ["", "[augment]"] + [f"{k} = {_toml_value(v)}" for k, v in augment.items() if v is not None]
    return "\n".join(lines) + "\n"


def write_config_toml(path: Path, config: TrainConfig, comments: list[str] | None = None) -> None:
    header = "".join(f"# {line}\n" for line in (comments or []))
    write_text(path, header + config_toml(config))


def read_config_toml(path: str | os.PathLike[str]) -> TrainConfig:
    """Read a ``config.toml`` written by :func:`write_config_toml` (or by hand)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    with open(path, "rb") as handle:
        return TrainConfig.from_dict(tomllib.load(handle))


__all__ = [
    "RECIPES", "TrainConfig", "TrainResult", "fit", "learning_rate", "prepare_samples", "read_config_toml",
    "recipe_defaults", "validate",
]
