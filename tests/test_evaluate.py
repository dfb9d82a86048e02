"""biounet evaluate and instance separation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from conftest import shared_path
from PIL import Image

from biounet.cli import main
from biounet.evaluation.evaluate import evaluate_folders


def _isbi_truth(tmp_path, rng):
    truth = np.full((40, 50), 255, np.uint8)
    truth[:, 20:23] = 0  # a vertical membrane splits two cells
    truth[15:17, :] = 0  # and a horizontal one: four cells
    (tmp_path / "truth").mkdir()
    Image.fromarray(truth).save(tmp_path / "truth" / "s0.png")
    return truth


def test_isbi_labels_against_themselves_score_zero(tmp_path, rng, capsys):
    truth = _isbi_truth(tmp_path, rng)
    (tmp_path / "pred").mkdir()
    membrane = (truth == 0).astype(np.float32)
    tifffile.imwrite(tmp_path / "pred" / "s0_prob.tif", np.stack([1 - membrane, membrane]))
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"), "--kind",
                 "isbi2012", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    mean = result["mean"]
    assert mean["pixel_error"] == 0 and mean["rand_error"] == 0 and mean["warping_error"] == 0


def test_isbi_gap_in_membrane_is_a_merger(tmp_path, rng, capsys):
    truth = _isbi_truth(tmp_path, rng)
    (tmp_path / "pred").mkdir()
    labels = (truth == 0).astype(np.uint8)
    labels[5, 20:23] = 0  # a one-pixel gap joins the two upper cells
    tifffile.imwrite(tmp_path / "pred" / "s0.tif", labels)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", kind="isbi2012")
    row = result["images"][0]
    assert row["mergers"] > 0 and row["warping_error"] > 0 and row["rand_error"] > 0


def test_shared_isbi_labels_score_zero(tmp_path):
    labels = shared_path("isbi2012", "train", "label")
    (tmp_path / "pred").mkdir()
    (tmp_path / "truth").mkdir()
    for index in (0, 7):
        truth = np.asarray(Image.open(labels / f"{index}.png"))
        Image.fromarray(truth).save(tmp_path / "truth" / f"{index}.png")
        tifffile.imwrite(tmp_path / "pred" / f"{index}.tif", (truth == 0).astype(np.uint8))
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", kind="isbi2012")
    assert result["mean"]["pixel_error"] == 0 and result["mean"]["rand_error"] == 0
    assert result["mean"]["warping_error"] == 0


def test_ctc_pairs_man_seg_with_frames(tmp_path):
    truth = np.zeros((30, 30), np.uint16)
    truth[2:10, 2:10] = 1
    truth[15:25, 15:25] = 2
    (tmp_path / "SEG").mkdir(parents=True)
    tifffile.imwrite(tmp_path / "SEG" / "man_seg005.tif", truth)
    (tmp_path / "pred").mkdir()
    predicted = truth.copy()
    predicted[15:25, 15:20] = 0  # cell 2 only half found: exactly half is not "more than half"
    tifffile.imwrite(tmp_path / "pred" / "t005_instances.tif", predicted)
    result = evaluate_folders(tmp_path / "pred", tmp_path, kind="ctc")
    assert result["images"][0]["seg"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert result["images"][0]["cells"] == 2


def test_missing_pairs_are_named(tmp_path, capsys):
    (tmp_path / "pred").mkdir()
    (tmp_path / "truth").mkdir()
    tifffile.imwrite(tmp_path / "pred" / "lonely.tif", np.zeros((5, 5), np.uint8))
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth")]) == 2
    err = capsys.readouterr().err
    assert "no ground truth" in err and "lonely" in err


def test_size_mismatch_is_named(tmp_path, capsys):
    (tmp_path / "pred").mkdir()
    (tmp_path / "truth").mkdir()
    tifffile.imwrite(tmp_path / "pred" / "a.tif", np.zeros((5, 5), np.uint8))
    tifffile.imwrite(tmp_path / "truth" / "a.tif", np.zeros((6, 5), np.uint8))
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth")]) == 2
    assert "a.tif is 5x5 but a.tif is 6x5" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [np.nan, 1.5])
def test_bad_probability_map(tmp_path, capsys, bad):
    (tmp_path / "pred").mkdir()
    (tmp_path / "truth").mkdir()
    probs = np.full((2, 5, 5), 0.5, np.float32)
    probs[1, 2, 2] = bad
    tifffile.imwrite(tmp_path / "pred" / "a_prob.tif", probs)
    tifffile.imwrite(tmp_path / "truth" / "a.tif", np.ones((5, 5), np.uint8))
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth")]) == 2
    assert "a_prob.tif" in capsys.readouterr().err


def test_all_membrane_truth_rand_undefined(tmp_path):
    (tmp_path / "pred").mkdir()
    (tmp_path / "truth").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "truth" / "a.png")
    tifffile.imwrite(tmp_path / "pred" / "a.tif", np.ones((8, 8), np.uint8))
    row = evaluate_folders(tmp_path / "pred", tmp_path / "truth", kind="isbi2012")["images"][0]
    assert row["rand_error"] is None and "undefined" in row["note"]


def test_float_truth_with_fractions_is_refused(tmp_path, capsys):
    (tmp_path / "pred").mkdir()
    (tmp_path / "truth").mkdir()
    tifffile.imwrite(tmp_path / "pred" / "a.tif", np.ones((5, 5), np.uint8))
    tifffile.imwrite(tmp_path / "truth" / "a.tif", np.full((5, 5), 0.5, np.float32))
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth")]) == 2
    assert "non-integer" in capsys.readouterr().err




def _write_ctc(folder, stem, truth, pred_labels=None, pred_instances=None):
    (folder / "pred").mkdir(exist_ok=True)
    (folder / "truth").mkdir(exist_ok=True)
    tifffile.imwrite(folder / "truth" / f"man_seg{stem}.tif", truth.astype(np.uint16))
    if pred_labels is not None:
        tifffile.imwrite(folder / "pred" / f"t{stem}.tif", pred_labels.astype(np.uint8))
    if pred_instances is not None:
        tifffile.imwrite(folder / "pred" / f"t{stem}_instances.tif", pred_instances.astype(np.uint16))


def test_ctc_seg_is_pooled_over_every_ground_truth_object(tmp_path):
    # frame 001: one object, missed (J = 0); frame 002: three objects, all exact (J = 1) -> pooled 3/4, mean 1/2
    one = np.zeros((20, 20), int)
    one[2:8, 2:8] = 1
    three = np.zeros((20, 20), int)
    three[2:6, 2:6], three[10:14, 2:6], three[10:14, 10:14] = 1, 2, 3
    _write_ctc(tmp_path, "001", one, pred_instances=np.zeros_like(one))
    _write_ctc(tmp_path, "002", three, pred_instances=three)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", kind="ctc")
    assert result["pooled"]["seg"] == pytest.approx(0.75)
    assert result["mean"]["seg"] == pytest.approx(0.5)
    assert [row["seg"] for row in result["images"]] == [0.0, 1.0]


def test_ctc_foreground_iou_comes_from_the_network_labels(tmp_path):
    truth = np.zeros((20, 20), int)
    truth[2:10, 2:10] = 1
    labels = (truth > 0).astype(np.uint8)
    labels[2:10, 2] = 0  # the network missed a column...
    instances = truth.copy()  # ...that post-processing gave back
    _write_ctc(tmp_path, "001", truth, pred_labels=labels, pred_instances=instances)
    row = evaluate_folders(tmp_path / "pred", tmp_path / "truth", kind="ctc")["images"][0]
    assert row["foreground_iou"] == pytest.approx(56 / 64) and row["seg"] == 1.0


@pytest.mark.parametrize("kind_of_file", ["labels", "instances", "probabilities"])
def test_binary_kind_is_right_for_every_file_kind(tmp_path, kind_of_file):
    truth = np.zeros((10, 10), np.uint8)
    truth[2:6, 2:6] = 255
    (tmp_path / "pred").mkdir()
    (tmp_path / "truth").mkdir()
    tifffile.imwrite(tmp_path / "truth" / "a.tif", truth)
    predicted = truth > 0
    predicted[2, 2] = False  # one pixel wrong
    if kind_of_file == "labels":
        tifffile.imwrite(tmp_path / "pred" / "a.tif", predicted.astype(np.uint8))
    elif kind_of_file == "instances":
        tifffile.imwrite(tmp_path / "pred" / "a_instances.tif", predicted.astype(np.uint16) * 7)
    else:
        tifffile.imwrite(tmp_path / "pred" / "a_prob.tif", np.stack([~predicted, predicted]).astype(np.float32))
    row = evaluate_folders(tmp_path / "pred", tmp_path / "truth", kind="binary")["images"][0]
    assert row["iou"] == pytest.approx(15 / 16) and row["pixel_error_rate"] == pytest.approx(1 / 100)
