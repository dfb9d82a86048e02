"""The main job on an embedded default: ``biounet demo``.

Makes a synthetic dataset of touching cells (:mod:`biounet.data.synthetic`), shows its weight map as in the paper's
Fig. 3, trains a small U-Net with the fast recipe for a few minutes on the CPU, segments synthetic images it did
not train on (instances separated), scores them (foreground IoU and the cell tracking challenge's SEG), and leaves
pictures: ``weight_map.png``, ``test_overlays.png``, the run's ``report.html`` and ``curves.png``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from biounet.data.datasets import load_dataset
from biounet.data.images import write_png, write_tiff
from biounet.data.synthetic import make_dataset, write_dataset
from biounet.evaluation import metrics
from biounet.evaluation.report import overlay, plot_weight_map, side_by_side, to_gray_uint8
from biounet.inference.instances import instances_from_outputs
from biounet.inference.predict import TorchPredictor, segment_image
from biounet.inference.settings import instance_settings
from biounet.training.augment import AugmentConfig
from biounet.training.config import TrainConfig, read_config_toml
from biounet.training.train import fit, prepare_samples

DEMO_KIND = "cells"
DEMO_SIZE = (256, 256)


def demo_config(data: str, time_budget_s: float, precision: str = "fp32") -> TrainConfig:
    """The demo's training settings: base 16, 316-px tiles (132-px outputs), 2 tiles a step, Adam."""
    return TrainConfig(
        data=data, layout="pairs", label_kind="instances", recipe="fast", base_channels=16, batch_norm=True, tile=316,
        batch_size=2,
        time_budget_s=time_budget_s, precision=precision, lr=2e-3, warmup_steps=20, val_every=100,
        validation_fraction=0.2, workers=0, seed=0, augment=replace(AugmentConfig(), image_order=1),
    )


def run_demo(
    out_dir: str | os.PathLike[str], *, time_budget_s: float = 240.0, n_train: int = 12, n_test: int = 4,
    device: str = "auto", progress: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Run the demo into ``out_dir`` and return its metrics (see the module docstring)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_samples = make_dataset(DEMO_KIND, n_train, size=DEMO_SIZE, rng=0)
    data_dir = write_dataset(train_samples, out / "data")

    config = demo_config(str(data_dir), time_budget_s)
    _remove_previous_demo_run(out / "run", str(data_dir))
    result = fit(config, out / "run", device=device, progress=progress)
    config = read_config_toml(out / "run" / "config.toml")  # with the target the run resolved
    plot_training_targets(config, out / "run", out / "weight_map.png")

    from biounet.data.checkpoint import load_model

    predictor = TorchPredictor(load_model(out / "run" / "model.pt"), normalization=config.normalization)
    target, params = instance_settings(out / "run" / "model.pt")
    test_samples = make_dataset(DEMO_KIND, n_test, size=DEMO_SIZE, rng=1)
    predictions = out / "test_predictions"
    predictions.mkdir(exist_ok=True)
    rows, panels = [], []
    for index, sample in enumerate(test_samples):
        assert sample.instances is not None
        segmented = segment_image(predictor, sample.image)
        instances = instances_from_outputs(segmented.labels, segmented.probabilities, target=target, params=params)
        write_tiff(predictions / f"test{index}.tif", segmented.labels, labels=True)
        write_tiff(predictions / f"test{index}_instances.tif", instances.astype(np.uint16))
        write_tiff(predictions / f"test{index}_prob.tif", segmented.probabilities)
        seg = metrics.seg_score(instances, sample.instances)
        rows.append({"image": f"test{index}", "iou": metrics.iou(instances > 0, sample.instances > 0),
                     "seg": seg.mean_jaccard, "cells_true": seg.n_objects, "cells_found": int(instances.max())})
        panels.append(side_by_side([to_gray_uint8(sample.image), overlay(sample.image, instances,
                                                                        truth=sample.instances)]))
    write_png(out / "test_overlays.png", np.concatenate(
        [np.pad(p, ((0, 4), (0, 0), (0, 0)), constant_values=255) for p in panels]))
    return {
        "out": str(out),
        "training": {"steps": result.steps, "seconds": round(result.elapsed_s, 1),
                     "best_validation_score": result.best_score, "model": str(out / "run" / "model.pt")},
        "test": rows,
        "mean_iou": float(np.mean([r["iou"] for r in rows])),
        "mean_seg": float(np.mean([r["seg"] for r in rows])),
        "pictures": [str(out / name) for name in ("weight_map.png", "test_overlays.png", "run/report.html")],
    }


def plot_training_targets(config: TrainConfig, run_dir: Path, path: Path) -> Path:
    """The paper's Fig. 3 for the run's first training image, drawn from the arrays its loss saw."""
    split = json.loads((run_dir / "split.json").read_text())
    samples = {s.name: s for s in load_dataset(config.data, layout=config.layout, label_kind=config.label_kind,
                                               normalization=config.normalization)}
    training = [samples[name] for name in split["train"]]
    prepared = prepare_samples(training, config, 3 if config.target == "boundary" else 2)[0]
    first = training[0]
    assert first.instances is not None  # a training sample is labelled
    return plot_weight_map(first.image, first.instances, prepared.classes, prepared.weights, path)


def _remove_previous_demo_run(run_dir: Path, data: str) -> None:
    """A demo run left by an earlier ``biounet demo`` into the same folder is replaced; anything else is kept."""
    toml = run_dir / "config.toml"
    if toml.exists() and read_config_toml(toml).data == data:
        shutil.rmtree(run_dir)
