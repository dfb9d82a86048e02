"""The run report: ``report.html`` with the training curves and overlays of ``model.pt`` on validation images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from biounet.core.samples import Sample
from biounet.core.targets import IGNORE
from biounet.data.checkpoint import load_model
from biounet.evaluation.report import plot_curves, save_overlay, write_report
from biounet.evaluation.validation import predict_samples
from biounet.training.config import TrainConfig


def write_run_report(run_dir: Path, val_samples: list[Sample], config: TrainConfig,
                     history: list[dict[str, float]], device: torch.device, max_overlays: int = 4) -> Path:
    """``report.html`` with the curves and overlays of ``model.pt``'s validation predictions (also as PNGs)."""
    pictures: list[tuple[str, Path]] = []
    if history:
        pictures.append(("training loss and validation scores", plot_curves(history, run_dir / "curves.png")))
    model = load_model(run_dir / "model.pt", device)
    shown = [s for s in val_samples if s.classes is not None][:max_overlays]
    probs = predict_samples(model, shown, normalization=config.normalization, precision=config.precision,
                            device=device)
    for sample, prob in zip(shown, probs):
        assert sample.classes is not None  # filtered above
        name = sample.name.replace("/", "_")
        truth = np.where(sample.classes == IGNORE, 0, sample.classes)
        pictures.append((f"{sample.name}: image | prediction | ground truth",
                         save_overlay(run_dir / f"overlay_{name}.png", sample.image, prob.argmax(0), truth)))
    last = history[-1] if history else {}
    summary = {"data": config.data, "steps": int(last.get("step", 0)), "training time (s)": last.get("elapsed_s"),
               "best validation score": min((r["score"] for r in history if "score" in r), default=None),
               "network": f"U-Net base {config.base_channels}, depth {config.depth}, {config.precision}",
               "target": config.target}
    toml = run_dir / "config.toml"
    return write_report(run_dir / "report.html", title=f"biounet training run {run_dir.name}", summary=summary,
                        pictures=pictures, config_text=toml.read_text() if toml.exists() else "")


__all__ = ["write_run_report"]
