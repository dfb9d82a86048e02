"""Good defaults for ``biounet train``: settle what the user left open from a short measured step time.

Rules (each choice is printed and recorded at the top of ``config.toml``):

- precision: bf16 autocast when the device runs bf16 natively *and* a measured training step is at least 15 %
  faster than fp32; fp32 otherwise.
- network width (``base_channels``) under a time budget: the widest of 16, 32, 64 that still gets at least
  ``MIN_STEPS`` steps of one 572-px tile in the budget, by the measured step time. A U-Net trained for too few
  steps is worse than a narrower one trained longer; on a 2-core CPU 10 minutes gives base 16. With
  ``--iterations`` and no budget, the paper's width 64.
- ``--recipe paper`` fixes everything to the paper's choices (base 64, SGD momentum 0.99, batch 1, fp32).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from biounet.core.device import autocast, cpu_has_native_bf16, resolve_device
from biounet.core.model import ModelConfig, UNet, nearest_valid_shape, output_shape
from biounet.training.config import VOLUME_DEFAULTS, TrainConfig, read_config_toml, recipe_defaults

MIN_STEPS = 800
WIDTHS = (16, 32, 64)
BF16_MIN_SPEEDUP = 1.15


def measure_step_seconds(base_channels: int, tile: int, precision: str, device: torch.device, *, depth: int = 4,
                         repeats: int = 2, batch_norm: bool = False, network: ModelConfig | None = None,
                         window: tuple[int, ...] | None = None) -> float:
    """Seconds of one training step (forward, backward, Adam) on one random tile: the best of ``repeats``; a
    ``network`` (e.g. a 3D U-Net) with its input ``window`` replaces the 2D one of the other arguments."""
    torch.manual_seed(0)
    network = network or ModelConfig(base_channels=base_channels, depth=depth, batch_norm=batch_norm)
    window = window or (tile, tile)
    channels_last = device.type == "cpu" and network.dims == 2
    model = UNet(network).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.randn(1, 1, *window, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 2, (1, *output_shape(window, network)), device=device)
    best = float("inf")
    for attempt in range(repeats + 1):  # the first step warms up the kernels
        start = time.perf_counter()
        with autocast(device, precision):
            logits = model(images)
        loss = torch.nn.functional.cross_entropy(logits.float(), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if attempt:
            best = min(best, time.perf_counter() - start)
    return best


SETTINGS = frozenset(f.name for f in fields(TrainConfig)) - {"data", "augment"}
"""The :class:`TrainConfig` fields a training call may set by name (``data`` and ``augment`` are set otherwise)."""


@dataclass(frozen=True)
class TrainRequest:
    """What a training call asks for, before the open choices are settled: built from ``biounet train``'s flags
    (:mod:`biounet.cli.train`) or from :func:`biounet.training.train.train_dataset`'s arguments.

    Attributes
    ----------
    data : str
        Dataset folder, or ``synthetic:KIND[,...]``.
    out : Path
        Run folder; ``out/config.toml`` is read back on ``resume``.
    settings : mapping
        :class:`TrainConfig` fields given by name (:data:`SETTINGS`); a None value counts as not given. A given
        ``time_budget_s`` wins over ``iterations``.
    config : Path or None
        A ``config.toml`` to start from; ``settings`` override it.
    device : str
        ``auto``, ``cpu``, ``cuda[:N]`` or ``mps``: where step times are measured.
    resume : bool
        Continue the run in ``out``: its ``config.toml`` with ``settings`` over it, nothing measured.

    Raises
    ------
    ValueError
        If ``settings`` names a field that is not in :data:`SETTINGS`.
    """

    data: str
    out: Path
    settings: Mapping[str, Any] = field(default_factory=dict)
    config: Path | None = None
    device: str = "auto"
    resume: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.settings) - SETTINGS)
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(unknown)}; known: {', '.join(sorted(SETTINGS))}")


def _explicit(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings given (not None); a time budget clears ``iterations``, iterations clear the time budget."""
    given = {name: value for name, value in settings.items() if value is not None}
    if given.get("time_budget_s") is not None:
        given["iterations"] = None
    elif given.get("iterations") is not None:
        given["time_budget_s"] = None
    return given


def take_architecture(values: dict[str, Any], init: str) -> str:
    """Fine-tuning keeps the trained model's network and normalisation contract (``values`` is updated)."""
    from biounet.data.checkpoint import load_checkpoint

    payload = load_checkpoint(init)
    network = payload["model_config"]
    for key in ("base_channels", "depth", "variant", "batch_norm"):
        values[key] = network[key]
    values["dims"] = network.get("dims", 2)  # checkpoints from before 3D networks are 2D
    values["normalization"] = payload["normalization"]
    return (f"fine-tuning {init}: its network (base {network['base_channels']}, depth {network['depth']}) and "
            f"normalisation ({payload['normalization']}) are kept")


def resolve_train_config(request: TrainRequest) -> tuple[TrainConfig, list[str]]:
    """Build the run's :class:`TrainConfig` from a :class:`TrainRequest`, filling open choices by measurement.

    Returns
    -------
    (TrainConfig, list of str)
        The configuration and one note per choice made (printed by the command line, recorded in ``config.toml``).

    Raises
    ------
    ValueError
        When neither ``iterations`` nor ``time_budget_s`` is given, or on bad settings (from :class:`TrainConfig`).
    FileNotFoundError
        On ``resume`` without the run's ``config.toml``.
    """
    explicit = _explicit(request.settings)
    if request.resume:
        return _resumed(request, explicit)
    values, notes = _starting_values(request, explicit)
    if values["recipe"] == "paper":
        values.setdefault("precision", "fp32")
        notes.append("recipe paper: base 64, SGD momentum 0.99, one 572-px tile per step, fp32 (paper section 3)")
        if values.get("precision") == "auto":
            values["precision"] = "fp32"
        return TrainConfig.from_dict(values), notes
    device = resolve_device(request.device)
    provisional = TrainConfig.from_dict(  # validates the settings before anything is measured
        {**values, "precision": "fp32", "base_channels": values.get("base_channels", WIDTHS[0])})
    started = time.perf_counter()
    step_time = _StepTimes(device, provisional, batch_norm=bool(values.get("batch_norm")))
    width_given = "base_channels" in explicit or (request.config is not None and "base_channels" in values) or bool(
        values.get("init")) or provisional.dims == 3  # 3D: VOLUME_DEFAULTS' width, not measured
    probe_width = int(values["base_channels"]) if width_given else WIDTHS[0]
    values["precision"] = _choose_precision(values.get("precision"), step_time, probe_width, notes)
    if not width_given:
        values["base_channels"] = _choose_width(values.get("time_budget_s"), step_time, values["precision"], notes)
    if "workers" not in explicit:
        values["workers"] = _choose_workers(notes)
    spent = time.perf_counter() - started
    if values.get("time_budget_s") is not None and spent > 0.5:
        values["time_budget_s"] = max(1.0, float(values["time_budget_s"]) - spent)
        notes.append(f"{spent:.0f} s of the budget went to these measurements")
    return TrainConfig.from_dict(values), notes


def _resumed(request: TrainRequest, explicit: dict[str, Any]) -> tuple[TrainConfig, list[str]]:
    """``--resume``: the run's own ``config.toml``, with the settings given over it."""
    toml = Path(request.out) / "config.toml"
    if not toml.exists():
        raise FileNotFoundError(f"{toml}: no such file; --resume needs a run directory made by biounet train")
    base = read_config_toml(toml).to_dict()
    base.update(explicit, data=request.data)
    return TrainConfig.from_dict(base), [f"resuming the run in {request.out}"]


def _starting_values(request: TrainRequest, explicit: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The settings before any measurement: ``config.toml``, then the recipe's defaults, then the given ones, then
    a fine-tuned model's network (``values["recipe"]`` always set); checks that a budget (steps or time) is given."""
    values: dict[str, Any] = {}
    if request.config is not None:
        values.update(read_config_toml(request.config).to_dict())
    recipe = explicit.get("recipe", values.get("recipe", "fast"))
    values.update(recipe_defaults(recipe))
    notes: list[str] = []
    if explicit.get("dims", 3) == 3 and recipe == "fast" and _is_volume_data(request.data, explicit.get("layout")):
        values.update(VOLUME_DEFAULTS, augment={**values.get("augment", {}), **VOLUME_DEFAULTS["augment"]})
        notes.append("volumes: a 3D U-Net (Cicek et al. 2016: depth 3, base 16, batch norm, 132-px windows in-plane); "
                     "--dims 2 trains the 2D network on their z planes")
    values.update(explicit)
    values["data"] = request.data
    if values.get("init"):
        notes.append(take_architecture(values, str(values["init"])))
    if "iterations" not in values and "time_budget_s" not in values:
        raise ValueError("give --iterations N or --time-budget T (e.g. --time-budget 15m)")
    values["recipe"] = recipe
    return values, notes


def _is_volume_data(data: str, layout: str | None) -> bool:
    """Whether ``data`` holds volumes (:func:`biounet.data.datasets.detect_layout` says ``volumes``)."""
    from biounet.data.datasets import detect_layout

    if layout is not None:
        return layout == "volumes"
    try:
        return detect_layout(data) == "volumes"
    except (OSError, ValueError):
        return False  # the loader names the problem


class _StepTimes:
    """Measured seconds of one training step by (width, precision), each measured once
    (:func:`measure_step_seconds`); ``measured`` keeps them in measuring order, for the notes."""

    def __init__(self, device: torch.device, config: TrainConfig, *, batch_norm: bool) -> None:
        self.device, self.config, self.batch_norm = device, config, batch_norm
        self.tile, self.depth = config.tile, config.depth
        self.measured: dict[tuple[int, str], float] = {}

    def __call__(self, width: int, precision: str) -> float:
        if (width, precision) not in self.measured:
            network, window = None, None
            if self.config.dims == 3:  # the window depth follows the voxel size, unknown here: about half the side
                network = replace(self.config, base_channels=width, batch_norm=self.batch_norm).model_config(1, 2)
                window = nearest_valid_shape((self.tile // 2, self.tile, self.tile), network)
            self.measured[width, precision] = measure_step_seconds(
                width, self.tile, precision, self.device, depth=self.depth, batch_norm=self.batch_norm,
                network=network, window=window)
        return self.measured[width, precision]


def _choose_precision(given: str | None, step_time: _StepTimes, width: int, notes: list[str]) -> str:
    """The given precision, or for ``auto``: bf16 where native and at least :data:`BF16_MIN_SPEEDUP` faster."""
    if given not in (None, "auto"):
        return str(given)
    device = step_time.device
    native = device.type == "cuda" and torch.cuda.is_bf16_supported() or (
        device.type == "cpu" and cpu_has_native_bf16())
    if not native:
        notes.append("precision fp32: this device has no native bf16")
        return "fp32"
    fp32, bf16 = step_time(width, "fp32"), step_time(width, "bf16")
    precision = "bf16" if fp32 / bf16 >= BF16_MIN_SPEEDUP else "fp32"
    notes.append(f"precision {precision}: measured step {fp32:.2f} s fp32 vs {bf16:.2f} s bf16 "
                 f"(base {width}, tile {step_time.tile}; bf16 needs a {BF16_MIN_SPEEDUP:.2f}x speed-up)")
    return precision


def _choose_width(budget: float | None, step_time: _StepTimes, precision: str, notes: list[str]) -> int:
    """The paper's 64 without a time budget, else the widest of :data:`WIDTHS` with >= :data:`MIN_STEPS` steps."""
    if budget is None:
        notes.append("base 64 (the paper's width): --iterations sets no time limit")
        return 64
    chosen = WIDTHS[0]
    for width in WIDTHS:
        if budget / step_time(width, precision) < MIN_STEPS:
            break
        chosen = width
    notes.append(
        f"base {chosen}: widest network with >= {MIN_STEPS} steps in {budget:.0f} s "
        f"(measured {', '.join(f'base {w} {p}: {s:.2f} s/step' for (w, p), s in step_time.measured.items())})"
    )
    return chosen


def _choose_workers(notes: list[str]) -> int:
    """Data-loading worker processes: none on <= 2 cores, else a quarter of the cores, at most 4."""
    cores = os.cpu_count() or 1
    workers = 0 if cores <= 2 else min(4, cores // 4)
    notes.append(f"{workers} data-loading worker process(es) for {cores} cores (augmentation runs "
                 "beside the training step; on 2 cores a worker slows the step more than it saves)")
    return workers
