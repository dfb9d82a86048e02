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

import argparse
import os
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from biounet.core.device import autocast, cpu_has_native_bf16, resolve_device
from biounet.core.model import ModelConfig, UNet, output_size
from biounet.training.config import TrainConfig, read_config_toml, recipe_defaults

MIN_STEPS = 800
WIDTHS = (16, 32, 64)
BF16_MIN_SPEEDUP = 1.15


def measure_step_seconds(base_channels: int, tile: int, precision: str, device: torch.device, *, depth: int = 4,
                         repeats: int = 2, batch_norm: bool = False) -> float:
    """Seconds of one training step (forward, backward, Adam) on one random tile: the best of ``repeats``."""
    torch.manual_seed(0)
    model = UNet(ModelConfig(base_channels=base_channels, depth=depth, batch_norm=batch_norm)).to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.randn(1, 1, tile, tile, device=device)
    if device.type == "cpu":
        images = images.contiguous(memory_format=torch.channels_last)
    out = output_size(tile, depth)
    target = torch.randint(0, 2, (1, out, out), device=device)
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


def _explicit(args: argparse.Namespace) -> dict[str, Any]:
    """Training settings given on the command line (argparse leaves the others None)."""
    names = {f.name for f in fields(TrainConfig)} - {"data", "augment"}
    given = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if getattr(args, "time_budget", None) is not None:
        given["time_budget_s"] = args.time_budget
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
    values["normalization"] = payload["normalization"]
    return (f"fine-tuning {init}: its network (base {network['base_channels']}, depth {network['depth']}) and "
            f"normalisation ({payload['normalization']}) are kept")


def resolve_train_config(args: argparse.Namespace) -> tuple[TrainConfig, list[str]]:
    """Build the run's :class:`TrainConfig` from the command line, filling open choices by measurement."""
    explicit = _explicit(args)
    if args.resume:
        toml = Path(args.out) / "config.toml"
        if not toml.exists():
            raise FileNotFoundError(f"{toml}: no such file; --resume needs a run directory made by biounet train")
        base = read_config_toml(toml).to_dict()
        base.update(explicit, data=args.data)
        return TrainConfig.from_dict(base), [f"resuming the run in {args.out}"]
    values: dict[str, Any] = {}
    if args.config is not None:
        values.update(read_config_toml(args.config).to_dict())
    recipe = explicit.get("recipe", values.get("recipe", "fast"))
    values.update(recipe_defaults(recipe))
    values.update(explicit)
    values["data"] = args.data
    notes: list[str] = []
    if values.get("init"):
        notes.append(take_architecture(values, str(values["init"])))
    if "iterations" not in values and "time_budget_s" not in values:
        raise ValueError("give --iterations N or --time-budget T (e.g. --time-budget 15m)")
    if recipe == "paper":
        values.setdefault("precision", "fp32")
        notes.append("recipe paper: base 64, SGD momentum 0.99, one 572-px tile per step, fp32 (paper section 3)")
        if values.get("precision") == "auto":
            values["precision"] = "fp32"
        return TrainConfig.from_dict(values), notes
    device = resolve_device(args.device)
    provisional = TrainConfig.from_dict(  # validates the settings before anything is measured
        {**values, "precision": "fp32", "base_channels": values.get("base_channels", WIDTHS[0])})
    tile, depth = provisional.tile, provisional.depth
    measured: dict[tuple[int, str], float] = {}
    started = time.perf_counter()

    def step_time(width: int, precision: str) -> float:
        if (width, precision) not in measured:
            measured[width, precision] = measure_step_seconds(width, tile, precision, device, depth=depth,
                                                              batch_norm=bool(values.get("batch_norm")))
        return measured[width, precision]

    width_given = "base_channels" in explicit or (args.config is not None and "base_channels" in values) or bool(
        values.get("init"))
    probe_width = int(values["base_channels"]) if width_given else WIDTHS[0]
    precision = values.get("precision")
    if precision in (None, "auto"):
        native = device.type == "cuda" and torch.cuda.is_bf16_supported() or (
            device.type == "cpu" and cpu_has_native_bf16())
        if not native:
            precision = "fp32"
            notes.append("precision fp32: this device has no native bf16")
        else:
            fp32, bf16 = step_time(probe_width, "fp32"), step_time(probe_width, "bf16")
            precision = "bf16" if fp32 / bf16 >= BF16_MIN_SPEEDUP else "fp32"
            notes.append(f"precision {precision}: measured step {fp32:.2f} s fp32 vs {bf16:.2f} s bf16 "
                         f"(base {probe_width}, tile {tile}; bf16 needs a {BF16_MIN_SPEEDUP:.2f}x speed-up)")
    values["precision"] = precision
    if not width_given:
        budget = values.get("time_budget_s")
        if budget is None:
            values["base_channels"] = 64
            notes.append("base 64 (the paper's width): --iterations sets no time limit")
        else:
            chosen = WIDTHS[0]
            for width in WIDTHS:
                seconds = step_time(width, precision)
                if budget / seconds < MIN_STEPS:
                    break
                chosen = width
            values["base_channels"] = chosen
            notes.append(
                f"base {chosen}: widest network with >= {MIN_STEPS} steps in {budget:.0f} s "
                f"(measured {', '.join(f'base {w} {p}: {s:.2f} s/step' for (w, p), s in measured.items())})"
            )
    if "workers" not in explicit:
        cores = os.cpu_count() or 1
        values["workers"] = 0 if cores <= 2 else min(4, cores // 4)
        notes.append(f"{values['workers']} data-loading worker process(es) for {cores} cores (augmentation runs "
                     "beside the training step; on 2 cores a worker slows the step more than it saves)")
    spent = time.perf_counter() - started
    if values.get("time_budget_s") is not None and spent > 0.5:
        values["time_budget_s"] = max(1.0, float(values["time_budget_s"]) - spent)
        notes.append(f"{spent:.0f} s of the budget went to these measurements")
    return TrainConfig.from_dict(values), notes
