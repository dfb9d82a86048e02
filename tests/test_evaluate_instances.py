"""`biounet evaluate --kind instances`: object precision, recall, F1 and AP at IoU 0.5..0.95, pooled over the
cells of all images, beside SEG and the breakdown of the errors; hand-made cases through the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from biounet.cli import main


@pytest.fixture
def folders(tmp_path):
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    pred.mkdir()
    truth.mkdir()
    # image a: cell 7 found exactly (IoU 1); cell 900 half found (8 of its 16 pixels, IoU 0.5); one spurious cell
    true_a = np.zeros((12, 12), dtype=np.int32)
    true_a[0:4, 0:4] = 7
    true_a[6:10, 6:10] = 900
    pred_a = np.zeros((12, 12), dtype=np.uint16)
    pred_a[0:4, 0:4] = 1
    pred_a[6:8, 6:10] = 2
    pred_a[0:2, 9:12] = 3
    # image b: one true cell, nothing predicted
    true_b = np.zeros((12, 12), dtype=np.int32)
    true_b[2:6, 2:6] = 5
    pred_b = np.zeros((12, 12), dtype=np.uint16)
    tifffile.imwrite(truth / "a.tif", true_a)
    tifffile.imwrite(truth / "b.tif", true_b)
    tifffile.imwrite(pred / "a_instances.tif", pred_a)
    tifffile.imwrite(pred / "b_instances.tif", pred_b)
    return pred, truth


def _evaluate_json(capsys, pred, truth) -> dict:
    assert main(["evaluate", "--pred", str(pred), "--truth", str(truth), "--kind", "instances", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_pooled_object_scores_golden(folders, capsys):
    result = _evaluate_json(capsys, *folders)
    pooled = result["pooled"]
    # IoU >= 0.5: tp 2 (a: 7, 900), fp 1 (a: spurious), fn 1 (b: 5)
    assert (pooled["cells"], pooled["predicted_cells"]) == (3, 3)
    assert pooled["precision"] == pytest.approx(2 / 3)  # of the PREDICTED cells
    assert pooled["recall"] == pytest.approx(2 / 3)  # of the TRUE cells
    assert pooled["f1"] == pytest.approx(2 / 3)
    assert pooled["average_precision"] == pytest.approx(2 / 4)  # tp / (tp + fp + fn)
    objects = pooled["objects"]
    assert [o["threshold"] for o in objects] == pytest.approx(np.arange(50, 100, 5) / 100)
    # above 0.5 the half-found cell no longer matches: tp 1, fp 2, fn 2 -> AP 1/5
    assert [(o["tp"], o["fp"], o["fn"]) for o in objects[1:]] == [(1, 2, 2)] * 9
    assert pooled["average_precision_50_90"] == pytest.approx((0.5 + 8 * 0.2) / 9)
    assert pooled["average_precision_50_95"] == pytest.approx((0.5 + 9 * 0.2) / 10)  # the DSB2018 score
    # at IoU 0.5: cell 5 of image b missed (nothing predicted there), the cell on background in a spurious
    assert {key: pooled[key] for key in ("merged", "split", "missed", "spurious")} == {
        "merged": 0, "split": 0, "missed": 1, "spurious": 1}
    # SEG: cell 7 J = 1; cell 900 covered by exactly half, not more than half: 0; cell 5 missed: 0
    assert pooled["seg"] == pytest.approx(1 / 3)


def test_per_image_rows(folders, capsys):
    rows = {row["image"]: row for row in _evaluate_json(capsys, *folders)["images"]}
    assert (rows["a"]["precision"], rows["a"]["recall"]) == pytest.approx((2 / 3, 1.0))
    assert (rows["b"]["precision"], rows["b"]["recall"], rows["b"]["cells"]) == (0.0, 0.0, 1)
    assert rows["a"]["seg"] == pytest.approx(0.5)


def test_pooling_weighs_cells_not_images(folders, capsys):
    result = _evaluate_json(capsys, *folders)
    per_image_mean = result["mean"]["recall"]  # (1 + 0) / 2
    assert per_image_mean == pytest.approx(0.5)
    assert result["pooled"]["recall"] == pytest.approx(2 / 3)  # 2 of 3 cells


def test_table_output(folders, capsys):
    pred, truth = folders
    assert main(["evaluate", "--pred", str(pred), "--truth", str(truth), "--kind", "instances"]) == 0
    out = capsys.readouterr().out
    assert "pooled" in out and "objects, pooled over 3 true and 3 predicted cells" in out
    assert "unmatched at IoU 0.5: 0 merged, 0 split, 1 missed, 1 spurious" in out
    assert "0.90" in out


def test_perfect_prediction(tmp_path, capsys):
    (tmp_path / "p").mkdir()
    (tmp_path / "t").mkdir()
    cells = np.zeros((10, 10), dtype=np.uint16)
    cells[1:4, 1:4], cells[5:9, 5:9] = 3, 40
    tifffile.imwrite(tmp_path / "t" / "x.tif", cells)
    tifffile.imwrite(tmp_path / "p" / "x_instances.tif", (cells > 0) * (1 + (cells == 40)))
    pooled = _evaluate_json(capsys, tmp_path / "p", tmp_path / "t")["pooled"]
    assert [o["average_precision"] for o in pooled["objects"]] == [1.0] * 10
    assert pooled["seg"] == 1.0
