"""The main job runs end to end (with a tiny time budget), draws what training saw, and scores what it wrote."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

import biounet.integrations.demo
import biounet.training.train
from biounet.data.synthetic import make_dataset
from biounet.evaluation import metrics
from biounet.integrations.demo import DEMO_KIND, DEMO_SIZE, run_demo


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, monkeypatch):
    seen, plotted = [], {}
    original = biounet.training.train.prepare_samples
    monkeypatch.setattr(biounet.training.train, "prepare_samples", lambda *a, **k: seen.append(original(*a, **k)) or seen[-1])
    real_plot = biounet.integrations.demo.plot_weight_map
    monkeypatch.setattr(biounet.integrations.demo, "plot_weight_map",
                        lambda image, instances, classes, weights, path: plotted.update(classes=classes,
                        weights=weights) or real_plot(image, instances, classes, weights, path))
    summary = run_demo(tmp_path / "demo", time_budget_s=3.0, n_train=3, n_test=1, device="cpu")
    for picture in summary["pictures"]:
        assert (tmp_path / "demo").joinpath(picture).exists()
    # Fig. 3 shows exactly the arrays the loss was fed (first training image, dataset class frequencies)
    np.testing.assert_array_equal(plotted["classes"], seen[0][0].classes)
    np.testing.assert_array_equal(plotted["weights"], seen[0][0].weights)
    assert plotted["weights"].max() > 5  # the border term is on the gaps between touching cells
    # the reported scores are those of the files written
    written = tifffile.imread(tmp_path / "demo" / "test_predictions" / "test0_instances.tif")
    truth = make_dataset(DEMO_KIND, 1, size=DEMO_SIZE, rng=1)[0].instances
    assert summary["test"][0]["iou"] == pytest.approx(metrics.iou(written > 0, truth > 0))
    assert summary["test"][0]["seg"] == pytest.approx(metrics.seg_score(written.astype(np.int64), truth).mean_jaccard)
    # running it again into the same folder replaces the earlier demo run
    again = run_demo(tmp_path / "demo", time_budget_s=2.0, n_train=3, n_test=1, device="cpu")
    assert again["training"]["steps"] >= 1
