"""The run report: ``report.html`` with the training curves and overlays of ``model.pt`` on validation images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from biounet.core.samples import Sample
from biounet.core.targets import IGNORE
from biounet.data.checkpoint import load_checkpoint, model_from_payload
from biounet.evaluation.report import MEASURE_LABELS, plot_curves, save_overlay, write_report
from biounet.evaluation.validation import HIGHER_IS_BETTER, predict_samples, score_name
from biounet.training.config import TrainConfig


def write_run_report(run_dir: Path, val_samples: list[Sample], config: TrainConfig,
                     history: list[dict[str, float]], device: torch.device, max_overlays: int = 4) -> Path:
    """``report.html`` with the curves and overlays of ``model.pt``'s validation predictions (also as PNGs).

    The curves show the measure that selected ``model.pt`` (``select_by``, for ``auto`` the task's own: SEG for
    cells, Rand error for membranes, mean IoU for classes) beside the other measures the run recorded.
    """
    payload = load_checkpoint(run_dir / "model.pt")
    selected = selecting_measure(config.select_by, payload.get("task"))
    pictures: list[tuple[str, Path]] = []
    if history:
        pictures.append(("training loss and validation scores",
                         plot_curves(history, run_dir / "curves.png", selected=selected)))
    model = model_from_payload(payload, run_dir / "model.pt").to(device)
    shown = [s for s in val_samples if s.classes is not None][:max_overlays]
    probs = predict_samples(model, shown, normalization=config.normalization, precision=config.precision,
                            device=device)
    for sample, prob in zip(shown, probs):
        assert sample.classes is not None  # filtered above
        name = sample.name.replace("/", "_")
        truth = np.where(sample.classes == IGNORE, 0, sample.classes)
        for view, image, predicted, true in orthogonal_views(sample.image, prob.argmax(0), truth, config):
            pictures.append((f"{sample.name}{view}: image | prediction | ground truth",
                             save_overlay(run_dir / f"overlay_{name}{view.replace(' ', '_')}.png", image, predicted,
                                          true)))
    toml = run_dir / "config.toml"
    return write_report(run_dir / "report.html", title=f"biounet training run {run_dir.name}",
                        summary=_summary(config, history, selected), pictures=pictures,
                        config_text=toml.read_text() if toml.exists() else "")


def orthogonal_views(image: np.ndarray, predicted: np.ndarray, truth: np.ndarray, config: TrainConfig,
                     ) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """The planes an overlay shows: the image itself, or a volume's three central orthogonal planes (z, y and x
    fixed), z stretched by the voxel size's anisotropy so that cells keep their shape."""
    if predicted.ndim == 2:
        return [("", image, predicted, truth)]
    stretch = 1 if config.voxel_size is None else max(1, round(config.voxel_size[0] / config.voxel_size[2]))
    views = []
    for axis, name in enumerate("zyx"):
        index = predicted.shape[axis] // 2
        planes = [np.take(array, index, axis=axis) for array in (image, predicted, truth)]
        if axis:
            planes = [np.repeat(plane, stretch, axis=0) for plane in planes]
        views.append((f" {name}={index}", *planes))
    return views


def selecting_measure(select_by: str, task: str | None) -> str | None:
    """The validation measure that chose the checkpoint: ``select_by``, or for ``auto`` the task's own (None where
    the checkpoint records no task)."""
    if select_by != "auto":
        return select_by
    return None if task is None else score_name(select_by, task)


def _summary(config: TrainConfig, history: list[dict[str, float]], selected: str | None) -> dict[str, Any]:
    """The report's table: data, steps, time, the best value of the selecting measure, network, target."""
    last = history[-1] if history else {}
    scores = [row["score"] for row in history if "score" in row]
    higher = HIGHER_IS_BETTER.get(selected or "", False)
    best = (max if higher else min)(scores, default=None)
    measure = f" ({MEASURE_LABELS[selected]}, {'higher' if higher else 'lower'} is better)" if selected else ""
    return {"data": config.data, "steps": int(last.get("step", 0)), "training time (s)": last.get("elapsed_s"),
            f"best validation score{measure}": best,
            "network": f"U-Net base {config.base_channels}, depth {config.depth}, {config.precision}",
            "target": config.target}


__all__ = ["selecting_measure", "write_run_report"]
