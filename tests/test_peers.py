"""The side-by-side harness's own helpers (benchmarks/peers.py, benchmarks/peers/runkit.py, benchmarks/peers_table.py).

Neither peer is needed: their scripts import StarDist, TensorFlow and Cellpose inside ``main`` only.
"""

from __future__ import annotations

import doctest
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path[:0] = [str(BENCHMARKS), str(BENCHMARKS / "peers")]

import cellpose_run
import peers
import peers_table
import runkit
import stardist_run


@pytest.mark.parametrize("module", [peers, runkit, peers_table, stardist_run, cellpose_run])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.failed == 0


def test_harness_imports_no_peer_and_peers_py_only_the_standard_library():
    import subprocess

    code = ("import sys; sys.path[:0] = [{!r}, {!r}]; import peers; first = 'numpy' in sys.modules; "
            "import peers_table, runkit, stardist_run, cellpose_run; "
            "print(first, sorted(m for m in sys.modules if m.split('.')[0] in "
            "{{'stardist', 'tensorflow', 'keras', 'csbdeep', 'cellpose', 'torch', 'biounet'}}))"
            ).format(str(BENCHMARKS), str(BENCHMARKS / "peers"))
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.split() == ["False", "[]"]


# --- peers.py ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [("10m", 600.0), ("30m", 1800.0), ("2m", 120.0), ("1h30m", 5400.0),
                                               ("90", 90.0), ("90s", 90.0), (" 1.5H ", 5400.0)])
def test_parse_duration(text, seconds):
    assert peers.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "0", "0m", "5m1h", "-5m"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="duration"):
        peers.parse_duration(text)


def test_venv_python_and_ready(tmp_path):
    assert peers.venv_python("cellpose", tmp_path) == tmp_path / "cellpose" / "bin" / "python"
    assert not peers.environment_ready("cellpose", tmp_path)
    python = peers.venv_python("cellpose", tmp_path)
    python.parent.mkdir(parents=True)
    python.touch()
    assert not peers.environment_ready("cellpose", tmp_path)  # setup.sh writes ready last
    (tmp_path / "cellpose" / "ready").write_text("cellpose==3.1.1.3\n")
    assert peers.environment_ready("cellpose", tmp_path)


def test_venv_python_rejects_unknown_peer():
    with pytest.raises(ValueError, match=r"peer must be one of \('stardist', 'cellpose'\), got 'omnipose'"):
        peers.venv_python("omnipose")


def test_run_command_points_at_the_peer_script_and_record():
    command = peers.run_command("stardist", data=Path("d"), test=[Path("a.tif"), Path("b.png")], budget_s=600.0,
                                out=Path("o"), seed=7, python=Path("py"))
    assert command[0] == "py"
    assert command[1] == str(BENCHMARKS / "peers" / "stardist_run.py")
    assert command[2:] == ["--data", "d", "--test", "a.tif", "b.png", "--budget-s", "600", "--out", "o",
                           "--record", str(Path("o") / "peer_run.json"), "--seed", "7"]


def test_read_record_takes_the_last_line(tmp_path):
    path = tmp_path / "peer_run.json"
    path.write_text('{"peer": "old"}\n{"peer": "stardist", "epochs": 3}\n\n')
    assert peers.read_record(path) == {"peer": "stardist", "epochs": 3}


@pytest.mark.parametrize(("text", "match"), [("", "empty"), ("epochs 3\n", "not JSON"), ("[1, 2]\n", "list")])
def test_read_record_rejects(tmp_path, text, match):
    path = tmp_path / "peer_run.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        peers.read_record(path)


def test_expand_test_images(tmp_path):
    for name in ("b.tif", "a.png", ".hidden.tif", "notes.txt"):
        (tmp_path / name).write_text("")
    (tmp_path / "empty").mkdir()
    single = tmp_path / "empty" / "x.tiff"
    assert peers.expand_test_images([tmp_path]) == [tmp_path / "a.png", tmp_path / "b.tif"]
    single.write_text("")
    assert peers.expand_test_images([single, tmp_path]) == [single, tmp_path / "a.png", tmp_path / "b.tif"]
    single.unlink()
    with pytest.raises(ValueError, match="empty: no image files"):
        peers.expand_test_images([tmp_path / "empty"])
    with pytest.raises(FileNotFoundError, match="nope.tif: no such file or directory"):
        peers.expand_test_images([tmp_path / "nope.tif"])


def test_main_refuses_bad_budget_and_missing_data(tmp_path, capsys):
    assert peers.main(["stardist", "--data", str(tmp_path), "--test", "x.tif", "--time-budget", "soon",
                       "--out", str(tmp_path / "o")]) == 2
    assert "error: must be a duration" in capsys.readouterr().err
    assert peers.main(["cellpose", "--data", str(tmp_path), "--test", "x.tif", "--time-budget", "2m",
                       "--out", str(tmp_path / "o")]) == 2
    assert "images: no such directory" in capsys.readouterr().err


# --- runkit.py --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("image", "expected"), [("d/t002.tif", "d/o/t002_instances.tif"),
                                                 ("x.ome.tif", "d/o/x_instances.tif"),
                                                 ("a.b.png", "d/o/a.b_instances.tif")])
def test_instances_path(image, expected):
    assert runkit.instances_path(Path("d/o"), image) == Path(expected)


def test_check_unique_stems():
    runkit.check_unique_stems([Path("a/x.tif"), Path("a/y.tif")])
    with pytest.raises(ValueError, match="would both be written as x_instances.tif"):
        runkit.check_unique_stems([Path("a/x.tif"), Path("b/x.png")])


def test_validation_split_is_the_notebooks():
    # np.random.RandomState(42).permutation(10) = [8 1 5 0 7 2 9 4 3 6]; max(1, round(0.15 * 10)) = 2 held back
    assert runkit.validation_split(10) == ([5, 0, 7, 2, 9, 4, 3, 6], [8, 1])
    train, val = runkit.validation_split(79)
    assert len(val) == 12 and sorted(train + val) == list(range(79))  # round(11.85)
    assert [len(part) for part in runkit.validation_split(2)] == [1, 1]  # max(1, round(0.3))


@pytest.mark.parametrize(("n", "fraction", "match"), [(1, 0.15, "at least 2"), (5, 0.0, "fraction"),
                                                      (5, 1.0, "fraction")])
def test_validation_split_rejects(n, fraction, match):
    with pytest.raises(ValueError, match=match):
        runkit.validation_split(n, fraction=fraction)


def test_epochs_that_fit():
    assert runkit.epochs_that_fit(600.0, 7.5) == 80
    assert runkit.epochs_that_fit(599.9, 7.5) == 79
    assert runkit.epochs_that_fit(-3.0, 7.5) == 1  # a peer trains for at least one epoch
    with pytest.raises(ValueError, match="epoch_s must be positive and finite, got 0"):
        runkit.epochs_that_fit(10.0, 0.0)


def test_another_epoch_fits_uses_the_longest_epoch():
    assert runkit.another_epoch_fits(5.0, [])
    assert not runkit.another_epoch_fits(0.0, [])
    assert runkit.another_epoch_fits(80.0, [80.0, 70.0])
    assert not runkit.another_epoch_fits(79.9, [70.0, 80.0])


def test_deadline():
    deadline = runkit.Deadline(60.0, start=0.0)  # perf_counter is far past 0
    assert deadline.remaining() < 0 < deadline.elapsed()
    with pytest.raises(ValueError, match="budget_s must be > 0, got 0"):
        runkit.Deadline(0.0)


def _pairs(root: Path, stems: list[str], shape=(8, 9)) -> None:
    import tifffile

    for folder in ("images", "labels"):
        (root / folder).mkdir(parents=True)
    for index, stem in enumerate(stems):
        tifffile.imwrite(root / "images" / f"{stem}.tif", np.full(shape, index, np.uint8))
        tifffile.imwrite(root / "labels" / f"{stem}.tif", np.eye(*shape, dtype=np.uint16) * (index + 1))


def test_read_pairs(tmp_path):
    _pairs(tmp_path, ["b", "a"])
    stems, images, labels = runkit.read_pairs(tmp_path)
    assert stems == ["a", "b"]
    assert images[0].shape == (8, 9) and int(images[1][0, 0]) == 0  # 'b' was written first, with value 0
    assert labels[1].dtype == np.int32 and int(labels[0].max()) == 2


def test_read_pairs_rejects_unpaired_and_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="images: no such directory"):
        runkit.read_pairs(tmp_path)
    _pairs(tmp_path, ["a"])
    (tmp_path / "labels" / "a.tif").rename(tmp_path / "labels" / "c.tif")
    with pytest.raises(ValueError, match="do not pair by stem: a, c"):
        runkit.read_pairs(tmp_path)


def test_read_image_rejects_stacks_and_unknown_suffixes(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"one 2-D grayscale plane, got shape \(2, 4, 4\)"):
        runkit.read_image(tmp_path / "stack.tif")
    with pytest.raises(ValueError, match="unsupported suffix '.zarr'"):
        runkit.read_image(tmp_path / "x.zarr")


def test_write_instances_is_int32_and_readable_by_evaluate(tmp_path):
    from biounet.evaluation.evaluate import evaluate_folders

    truth = np.zeros((6, 6), np.uint16)
    truth[1:3, 1:3], truth[3:5, 3:5] = 1, 2
    import tifffile

    (tmp_path / "truth").mkdir()
    (tmp_path / "pred").mkdir()
    tifffile.imwrite(tmp_path / "truth" / "t002.tif", truth)
    runkit.write_instances(runkit.instances_path(tmp_path / "pred", "x/t002.tif"), truth.astype(np.int64) * 3)
    written = tifffile.imread(tmp_path / "pred" / "t002_instances.tif")
    assert written.dtype == np.int32 and set(np.unique(written)) == {0, 3, 6}
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", kind="instances")
    assert result["pooled"]["average_precision"] == 1.0 and result["pooled"]["seg"] == 1.0


def test_write_record_round_trips(tmp_path):
    runkit.write_record(tmp_path / "r.json", {"peer": "cellpose", "epochs": 12, "path": tmp_path})
    assert peers.read_record(tmp_path / "r.json") == {"peer": "cellpose", "epochs": 12, "path": str(tmp_path)}
    assert not list(tmp_path.glob(".*.tmp"))


# --- the peers' scripts: their pure parts -----------------------------------------------------------------------


def test_stardist_patch_size():
    assert stardist_run.patch_size([(512, 512), (256, 300)], (256, 256)) == (256, 256)
    assert stardist_run.patch_size([(512, 512), (200, 250)], (256, 256)) == (192, 240)  # multiples of 16


class _Net:
    """Stands in for Cellpose's network: ``training`` and ``forward`` are all the wrapper uses."""

    training = True

    def forward(self, x):
        return x + 1

    def __call__(self, x):
        return self.forward(x)


def test_cellpose_stop_by_clock_counts_epochs_and_stops_before_one_that_does_not_fit():
    net, log = _Net(), {"batches": 0, "epoch_s": [], "stopped": None}
    cellpose_run.stop_by_clock(net, runkit.Deadline(3600.0), batches_per_epoch=2, log=log)
    assert [net(i) for i in range(5)] == [1, 2, 3, 4, 5]
    assert log["batches"] == 5 and len(log["epoch_s"]) == 2  # epochs 0 and 1 ended when batches 2 and 4 began
    net.training = False
    assert net(10) == 11 and log["batches"] == 5  # prediction is not counted
    del net.forward
    assert net.forward(1) == 2 and not hasattr(net.__dict__, "forward")


def test_cellpose_stop_by_clock_raises_at_the_epoch_boundary():
    net, log = _Net(), {"batches": 0, "epoch_s": [], "stopped": None}
    deadline = runkit.Deadline(3600.0)
    cellpose_run.stop_by_clock(net, deadline, batches_per_epoch=3, log=log)
    net(0), net(1), net(2)
    deadline.budget_s = deadline.elapsed()  # spent: no epoch fits any more
    with pytest.raises(cellpose_run.BudgetSpent):
        net(3)
    assert log["batches"] == 3 and len(log["epoch_s"]) == 1  # 1 whole epoch, nothing of the next one


def test_cellpose_count_masks():
    assert cellpose_run.count_masks(np.array([[0, 3], [3, 7]])) == 2
    assert cellpose_run.count_masks(np.zeros((2, 2), int)) == 0


# --- peers_table.py ---------------------------------------------------------------------------------------------


def test_parse_names():
    assert peers_table.parse_names("isbi, dic,isbi", peers_table.CASES, "--cases") == ["isbi", "dic"]
    with pytest.raises(ValueError, match="--tools must be comma-separated names from biounet, biounet-stardist, stardist, cellpose"):
        peers_table.parse_names("biounet,omnipose", peers_table.TOOLS, "--tools")
    with pytest.raises(ValueError, match="got ''"):
        peers_table.parse_names("", peers_table.CASES, "--cases")


def test_budget_label_and_run_key():
    assert [peers_table.budget_label(s) for s in (600.0, 1800.0, 120.0, 90.0, 61.5)] == ["10m", "30m", "2m", "90s",
                                                                                          "61.5s"]
    assert peers_table.run_key("isbi", 1800.0, "cellpose") == "isbi/30m/cellpose"


def _record(case, budget_s, tool, accuracy):
    return {"case": case, "budget_s": budget_s, "tool": tool, "version": "1", "trained": "3 epochs",
            "train_s": 598.2, "wall_s": 650.0, "commands": [f"python benchmarks/peers.py {tool}"],
            "scores": {"accuracy": accuracy, "f1": 0.5, "seg": 0.25}}


def test_read_results_later_lines_win_and_blank_lines_pass(tmp_path):
    path = tmp_path / "peers_table.json"
    assert peers_table.read_results(path) == {}
    lines = [_record("dic", 600.0, "stardist", 0.1), _record("dic", 1800.0, "stardist", 0.2),
             _record("dic", 600.0, "stardist", 0.3)]
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n\n")
    done = peers_table.read_results(path)
    assert sorted(done) == ["dic/10m/stardist", "dic/30m/stardist"]
    assert done["dic/10m/stardist"]["scores"]["accuracy"] == 0.3


def test_read_results_rejects_foreign_lines(tmp_path):
    path = tmp_path / "peers_table.json"
    path.write_text('{"benchmark": "inference"}\n')
    with pytest.raises(ValueError, match="peers_table.json:1: expected a JSON object with case, budget_s and tool"):
        peers_table.read_results(path)


def test_pooled_scores_objects_from_the_complete_images_seg_from_all():
    every = {"pooled": {"average_precision": 0.6, "f1": 0.75, "precision": 0.8, "recall": 0.7, "seg": 0.7,
                        "cells": 49, "predicted_cells": 60}}
    complete = {"pooled": {"average_precision": 0.9, "f1": 0.95, "precision": 0.96, "recall": 0.94, "seg": 0.8,
                           "cells": 46, "predicted_cells": 45}}
    scores = peers_table.pooled_scores(every, complete)
    assert (scores["accuracy"], scores["f1"], scores["object_cells"]) == (0.9, 0.95, 46)
    assert (scores["seg"], scores["seg_cells"]) == (0.7, 49)
    assert peers_table.pooled_scores(every)["accuracy"] == 0.6


def test_render_markdown_orders_rows_and_lists_commands():
    text = peers_table.render_markdown([_record("isbi", 600.0, "biounet", 0.5), _record("dic", 1800.0, "cellpose", 0.4),
                                        _record("dic", 600.0, "cellpose", 0.123456)])
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[:3] for row in rows] == [["| dic", "10m", "cellpose 1"], ["| dic", "30m", "cellpose 1"],
                                                      ["| isbi", "10m", "biounet 1"]]
    assert "| 0.123 | 0.500 | 0.250 | 3 epochs | 598 | 650 |" in rows[0]
    assert "- dic/10m/cellpose: `python benchmarks/peers.py cellpose`" in text


def test_table_main_refuses_unknown_case(tmp_path, capsys):
    assert peers_table.main(["--cases", "phc", "--results", str(tmp_path / "r.json")]) == 2
    assert "--cases must be comma-separated names" in capsys.readouterr().err


def test_rechoose_touches_only_biounet_runs_the_results_file_has(tmp_path, capsys):
    import argparse

    args = argparse.Namespace(rechoose=True, redo=False, work=tmp_path, results=tmp_path / "r.json",
                              biounet_extra="")
    case = peers_table.Case("dsb", tmp_path / "train", (tmp_path / "test" / "a.tif",), tmp_path / "truth")
    record = {"case": "dsb", "budget_s": 600.0, "tool": "stardist", "commands": ["x"]}
    assert peers_table._record(args, case, 600.0, "stardist", record) is None  # a peer is never re-chosen
    assert peers_table._record(args, case, 600.0, "biounet", None) is None  # nothing trained: nothing to re-choose
    args.rechoose = False
    assert peers_table._record(args, case, 600.0, "biounet", record) is None  # in the file already: skipped
    assert "already in" in capsys.readouterr().err
