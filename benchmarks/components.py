"""Timings of the numeric parts a training step and the data pipeline rely on; JSON lines (these were prints in
the test suite, where a timing cannot fail a test honestly).

    python benchmarks/components.py

- ``sample_window`` of a 572-px tile (388-px labels) from a 700x700 image, spline order 3 and 1;
- ``border_weights`` of 200 cells on 512x512 (eq. 2's border term);
- ``training_targets`` of the same image (separation, class weights, border term);
- ``make_sample`` of each synthetic kind at 256x256.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from common import emit, environment

from biounet.core.targets import training_targets
from biounet.core.weights import border_weights, separation_borders
from biounet.data.synthetic import KINDS, make_sample
from biounet.training.augment import AugmentConfig, sample_window


def best_of(function: Callable[[], object], repeats: int = 5) -> float:
    """The fastest of ``repeats`` calls, in milliseconds."""
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        durations.append(time.perf_counter() - start)
    return 1e3 * min(durations)


def random_cells(shape: tuple[int, int], count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` discs of radius 4-12 px with ids 1..count, later ones on top (so many touch)."""
    cells = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for index in range(1, count + 1):
        y, x, r = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(4.0, 12.0)
        cells[(yy - y) ** 2 + (xx - x) ** 2 < r * r] = index
    return cells


def main() -> None:
    emit({"benchmark": "components", **environment()})
    rng = np.random.default_rng(0)
    image = rng.random((700, 700)).astype(np.float32)
    labels = rng.integers(0, 2, (700, 700))
    weights = rng.random((700, 700)).astype(np.float32)
    for order in (3, 1):
        config = AugmentConfig(shift_px=10.0, image_order=order)
        ms = best_of(lambda: sample_window(image, labels, weights, in_tile=572, out_tile=388, center=(350, 350),
                                           config=config, rng=1))
        emit({"part": "sample_window 572 -> 388", "image_order": order, "best_ms": round(ms, 1)})
    cells = random_cells((512, 512), 200, rng)
    separated = separation_borders(cells)
    emit({"part": "border_weights 512x512", "cells": int(len(np.unique(separated)) - 1),
          "best_ms": round(best_of(lambda: border_weights(separated, w0=10.0, sigma_px=5.0)), 1)})
    classes = (cells > 0).astype(np.int64)
    for target in ("paper", "boundary", "distance"):
        ms = best_of(lambda: training_targets(classes, cells, num_classes=3 if target == "boundary" else 2,
                                              target=target), repeats=3)
        emit({"part": "training_targets 512x512, 200 cells", "target": target, "best_ms": round(ms, 1)})
    for kind in KINDS:
        emit({"part": "make_sample 256x256", "kind": kind,
              "best_ms": round(best_of(lambda: make_sample(kind, rng=0), repeats=3), 1)})


if __name__ == "__main__":
    main()
