"""The main job runs end to end (with a tiny time budget) and leaves its pictures."""

from __future__ import annotations

from biounet.demo import run_demo


def test_demo_end_to_end(tmp_path):
    summary = run_demo(tmp_path / "demo", time_budget_s=3.0, n_train=3, n_test=1, device="cpu")
    for picture in summary["pictures"]:
        assert (tmp_path / "demo").joinpath(picture).exists()
    assert (tmp_path / "demo" / "test_predictions" / "test0_instances.tif").exists()
    assert 0.0 <= summary["mean_iou"] <= 1.0 and summary["training"]["steps"] >= 1
    # running it again into the same folder replaces the earlier demo run
    again = run_demo(tmp_path / "demo", time_budget_s=2.0, n_train=3, n_test=1, device="cpu")
    assert again["training"]["steps"] >= 1
