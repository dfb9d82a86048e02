"""Figures and the HTML report (biounet.evaluation.report, biounet.training.runreport)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biounet.core.model import ModelConfig, UNet
from biounet.core.weights import separation_borders, weight_map
from biounet.data.checkpoint import model_payload, save_checkpoint
from biounet.evaluation.report import curve_series, plot_curves, plot_weight_map
from biounet.training.config import TrainConfig
from biounet.training.runreport import selecting_measure


def test_plot_weight_map_writes_png(tmp_path):
    cells = np.zeros((40, 48), np.int32)
    cells[5:20, 5:24] = 1
    cells[5:20, 24:40] = 2  # touching
    cells[25:36, 10:30] = 3
    image = np.random.default_rng(0).random(cells.shape) + (cells > 0)
    separated = separation_borders(cells)
    path = plot_weight_map(image, cells, (separated > 0).astype(int), weight_map(separated), tmp_path / "fig3.png")
    assert path == tmp_path / "fig3.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["fig3.png"]  # no temporary file left behind
    with pytest.raises(ValueError, match="must share"):
        plot_weight_map(image[:5], cells, separated > 0, weight_map(separated), tmp_path / "bad.png")


# --- the run report's curves: the measure that selects the checkpoint -------------------------------------------

# A DIC-HeLa-like run: pooled SEG selects best.pt while the 3-class mean IoU stays low.
CELL_HISTORY = [
    {"step": 200, "train_loss": 0.9, "seg": 0.61, "object_f1": 0.70, "mean_iou": 0.50, "score": 0.61},
    {"step": 350, "train_loss": 0.7},  # a row without validation scores (the budget ran out between validations)
    {"step": 400, "train_loss": 0.6, "seg": 0.79, "object_f1": 0.85, "mean_iou": 0.54, "score": 0.79},
]


def test_curve_series_puts_the_selecting_measure_first_and_labels_it():
    assert curve_series(CELL_HISTORY, "seg") == [
        ("seg", "SEG (selects best.pt)"), ("object_f1", "object F1"), ("mean_iou", "mean IoU")]
    assert curve_series(CELL_HISTORY, "mean_iou")[0] == ("mean_iou", "mean IoU (selects best.pt)")
    assert curve_series(CELL_HISTORY) == [("seg", "SEG"), ("object_f1", "object F1"), ("mean_iou", "mean IoU")]
    assert curve_series([{"step": 5, "train_loss": 1.0}], "seg") == []  # no validation, no curve
    with pytest.raises(ValueError, match="selected must be one of"):
        curve_series(CELL_HISTORY, "accuracy")


def test_plot_curves_writes_png_with_a_selected_measure(tmp_path):
    path = plot_curves(CELL_HISTORY, tmp_path / "curves.png", selected="seg")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


@pytest.mark.parametrize(("select_by", "task", "expected"), [
    ("auto", "cells", "seg"), ("auto", "membranes", "rand_error"), ("auto", "classes", "mean_iou"),
    ("object_f1", "cells", "object_f1"), ("auto", None, None),
])
def test_selecting_measure(select_by, task, expected):
    assert selecting_measure(select_by, task) == expected


def test_run_report_plots_the_measure_that_selected_the_checkpoint(tmp_path, monkeypatch):
    from biounet.training import runreport

    model = UNet(ModelConfig(depth=2, base_channels=4))
    save_checkpoint(tmp_path / "model.pt", model_payload(model, normalization="percentile", task="cells"))
    plotted: list[list[tuple[str, str]]] = []

    def recording_plot(history, path, *, selected=None):
        plotted.append(curve_series(history, selected))
        return plot_curves(history, path, selected=selected)

    monkeypatch.setattr(runreport, "plot_curves", recording_plot)
    config = TrainConfig(data="synthetic:cells", base_channels=4, depth=2, tile=92, iterations=400)
    report = runreport.write_run_report(tmp_path, [], config, CELL_HISTORY, torch.device("cpu"))
    assert plotted == [[("seg", "SEG (selects best.pt)"), ("object_f1", "object F1"), ("mean_iou", "mean IoU")]]
    assert "best validation score (SEG, higher is better)</th><td>0.79<" in report.read_text()
