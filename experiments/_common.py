"""Shared steps of the experiment scripts: run the CLI, describe the machine."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def biounet(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``biounet ARGS`` with this interpreter; stderr (progress) passes through, stdout is captured."""
    command = [sys.executable, "-m", "biounet", *args]
    print("$ biounet " + " ".join(args), file=sys.stderr, flush=True)
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"biounet {args[0]} failed with exit code {result.returncode}")
    return result


def hardware() -> dict[str, Any]:
    """The machine, in words: CPU model and cores, or the GPU's name."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def emit(record: dict[str, Any], results: Path | None = None) -> None:
    """Print one JSON line to stdout; with ``results``, also write the record there (indented JSON)."""
    print(json.dumps(record), flush=True)
    if results is not None:
        results.write_text(json.dumps(record, indent=1) + "\n")


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def instance_scores(pred_dir: Path, truth: dict[str, np.ndarray], partial: frozenset[str] = frozenset()
                    ) -> dict[str, Any]:
    """Pooled SEG, object scores at IoU 0.5 (pooled) and foreground IoU, from the files predict wrote.

    Images in ``partial`` have ground truth for some cells only: they count for SEG (which scores annotated cells)
    but not for the object scores (every unannotated cell found would count as a false positive) nor the IoU."""
    import tifffile

    from biounet.evaluation import metrics

    pairs, jaccard, cells, ious = [], 0.0, 0, []
    for stem, true in sorted(truth.items()):
        instances = tifffile.imread(pred_dir / f"{stem}_instances.tif").astype(np.int64)
        labels = tifffile.imread(pred_dir / f"{stem}.tif")
        seg = metrics.seg_score(instances, true)
        jaccard, cells = jaccard + float(seg.per_object.sum()), cells + seg.n_objects
        if stem not in partial:
            ious.append(metrics.iou(labels > 0, true > 0))
            pairs.append((instances, true))
    objects = metrics.dataset_object_scores(pairs, thresholds=(0.5,))[0]
    return {"seg_pooled": jaccard / cells, "cells": cells, "object_f1_iou50": objects.f1,
            "object_accuracy_iou50": objects.average_precision, "precision_iou50": objects.precision,
            "recall_iou50": objects.recall, "foreground_iou": float(np.mean(ious))}
