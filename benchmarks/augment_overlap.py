"""Does overlapping augmentation with the training step pay? Steps/s of the real training step (``train_step`` on
``TileSampler`` tiles: elastic deformation, rotation, gray values, weight maps) with the next batch augmented
in-process before each step, against a prefetch thread augmenting it during the step.

Batch norm, bf16 where native, ISBI 2012 tiles (``--data``); the two modes alternate twice. Prints one JSON line
per width with the augmentation time of one batch and the steps/s of each pass.

Usage: ``python benchmarks/augment_overlap.py [--data ../shared/data/isbi2012] [--bases 16 32] [--steps 40]``.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from common import emit, environment

from biounet.core.device import resolve_precision
from biounet.training.config import TrainConfig
from biounet.training.train import TileSampler, _new_state, prepare_samples, select_samples, train_step


def steps_per_second(sampler: TileSampler, step: Any, steps: int, *, thread: bool) -> float:
    start = time.perf_counter()
    if thread:
        with ThreadPoolExecutor(1) as pool:
            upcoming = pool.submit(sampler.__getitem__, 0)
            for index in range(steps):
                batch = upcoming.result()
                upcoming = pool.submit(sampler.__getitem__, index + 1)
                step(batch)
    else:
        for index in range(steps):
            step(sampler[index])
    return steps / (time.perf_counter() - start)


def bench(data: str, base: int, steps: int) -> dict[str, Any]:
    device = torch.device("cpu")
    config = TrainConfig(data=data, base_channels=base, batch_norm=True, iterations=steps, target="paper",
                         precision=resolve_precision("auto", device))
    split = select_samples(config, None)
    sampler = TileSampler(prepare_samples(split.train, config, split.num_classes), config, length=10**6)
    state = _new_state(config, split, device)
    state.model.train()

    def step(batch: Any) -> None:
        train_step(state.model, state.optimizer, batch, config=config, device=device, lr=1e-4)

    for index in range(3):  # warm-up
        step(sampler[index])
    start = time.perf_counter()
    for index in range(20):
        sampler[index]
    record: dict[str, Any] = {"benchmark": "augment_overlap", "base_channels": base, "precision": config.precision,
                              "augment_s_per_batch": round((time.perf_counter() - start) / 20, 4),
                              "in_process_steps_per_s": [], "thread_steps_per_s": []}
    for thread in (False, True, False, True):
        key = "thread_steps_per_s" if thread else "in_process_steps_per_s"
        record[key].append(round(steps_per_second(sampler, step, steps, thread=thread), 3))
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/isbi2012")
    parser.add_argument("--bases", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    emit({"benchmark": "augment_overlap", "environment": environment()})
    for base in args.bases:
        emit(bench(args.data, base, args.steps))


if __name__ == "__main__":
    main()
