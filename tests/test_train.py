"""Training: loss goes down, resume is exact, the run directory is complete, bad input is refused."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from biounet.augment import AugmentConfig
from biounet.checkpoint import load_checkpoint
from biounet.cli import main
from biounet.samples import IGNORE, Sample
from biounet.train import (
    TrainConfig,
    config_toml,
    fit,
    learning_rate,
    read_config_toml,
    separate_touching,
)

TINY = TrainConfig(data="synthetic:cells,n=6,size=96x96,seed=0", base_channels=4, depth=2, tile=92, batch_size=2,
                   iterations=8, val_every=4, workers=0, lr=3e-3, warmup_steps=2)


def _weights(run_dir):
    return load_checkpoint(run_dir / "last.pt")["model_state"]


def _max_difference(a, b):
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_is_exact(tmp_path, workers):
    config = replace(TINY, workers=workers)
    fit(config, tmp_path / "whole")
    fit(config, tmp_path / "split", stop_after=3)  # interrupted between validations
    assert load_checkpoint(tmp_path / "split" / "last.pt")["step"] == 3
    fit(config, tmp_path / "split", resume=True)
    assert _max_difference(_weights(tmp_path / "whole"), _weights(tmp_path / "split")) == 0.0


def test_run_directory_contents(tmp_path):
    result = fit(TINY, tmp_path / "run")
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"last.pt", "best.pt", "model.pt", "config.toml", "metrics.csv", "report.html", "curves.png"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert result.steps == 8 and [row["step"] for row in result.history] == [4, 8]
    assert read_config_toml(tmp_path / "run" / "config.toml") == TINY
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["scores"]["score"] == pytest.approx(result.best_score)


def test_short_run_lowers_the_loss(tmp_path):
    config = replace(TINY, iterations=40, val_every=20, augment=AugmentConfig.disabled(), lr=5e-3,
                     data="synthetic:cells,n=4,size=96x96,seed=0", validation_fraction=0.0)
    losses = []
    fit(config, tmp_path / "run", progress=lambda row: losses.append(row["loss"]) if "loss" in row else None)
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5])


def test_paper_recipe_sgd_runs(tmp_path):
    config = replace(TINY, recipe="paper", optimizer="sgd", lr=0.01, schedule="constant", warmup_steps=0,
                     iterations=3, val_every=3)
    result = fit(config, tmp_path / "run")
    assert result.steps == 3
    assert "momentum_buffer" in str(load_checkpoint(tmp_path / "run" / "last.pt")["optimizer_state"])


def test_learning_rate_schedule():
    config = replace(TINY, lr=1.0, warmup_steps=10)
    assert learning_rate(config, 0, 0.0) == pytest.approx(0.1)  # warm-up: (0 + 1) / 10
    assert learning_rate(config, 50, 0.0) == pytest.approx(1.0)
    assert learning_rate(config, 50, 0.5) == pytest.approx(0.05 + 0.95 * 0.5)
    assert learning_rate(config, 50, 1.0) == pytest.approx(0.05)
    assert learning_rate(replace(config, schedule="constant"), 50, 0.9) == 1.0


def test_touching_cells_are_separated_for_instance_targets():
    instances = np.zeros((8, 10), np.int32)
    instances[2:6, 1:5] = 1
    instances[2:6, 5:9] = 2  # touching along a column
    sample = Sample("t", np.zeros((8, 10, 1), np.float32), (instances > 0).astype(np.int64), instances)
    classes = separate_touching(sample)
    assert classes[3, 4] == 0 and classes[3, 5] == 0  # the contact became background
    assert classes[3, 2] == 1 and classes[3, 7] == 1
    membranes = Sample("m", sample.image, (instances == 0).astype(np.int64), instances)  # ISBI-like target
    np.testing.assert_array_equal(separate_touching(membranes), membranes.classes)


def test_ignore_label_is_kept():
    instances = np.zeros((6, 6), np.int32)
    instances[1:4, 1:4] = 1
    classes = (instances > 0).astype(np.int64)
    classes[5, 5] = IGNORE
    out = separate_touching(Sample("t", np.zeros((6, 6, 1), np.float32), classes, instances))
    assert out[5, 5] == IGNORE


@pytest.mark.parametrize(
    "change, match",
    [
        ({"tile": 90}, "tile size 90 is not valid.*88 or 92"),
        ({"time_budget_s": 0.0, "iterations": None}, "time budget must be > 0"),
        ({"iterations": None}, "give iterations or a time budget"),
        ({"recipe": "slow"}, "recipe"),
        ({"precision": "auto"}, "resolve 'auto'"),
    ],
)
def test_config_validation(change, match):
    with pytest.raises(ValueError, match=match):
        replace(TINY, **change)


def test_resume_with_other_settings_is_refused(tmp_path):
    fit(TINY, tmp_path / "run", stop_after=2)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(ValueError, match=r"cannot resume.*\(lr\)"):
        fit(replace(TINY, lr=0.1), tmp_path / "run", resume=True)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_new_run_into_existing_run_is_refused(tmp_path):
    fit(TINY, tmp_path / "run", stop_after=1)
    with pytest.raises(ValueError, match="already holds a run"):
        fit(TINY, tmp_path / "run")


def test_corrupt_checkpoint_resume(tmp_path):
    fit(TINY, tmp_path / "run", stop_after=1)
    (tmp_path / "run" / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="last.pt: not a biounet checkpoint"):
        fit(TINY, tmp_path / "run", resume=True)


def test_config_toml_round_trip(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(config_toml(TINY))
    assert read_config_toml(path) == TINY


# --- the command line ---------------------------------------------------------------------------------------------


def test_cli_train_then_predict(tmp_path, capsys):
    args = ["train", "--data", "synthetic:cells,n=4,size=96x96", "--out", str(tmp_path / "run"), "--iterations",
            "4", "--base-channels", "4", "--depth", "2", "--tile", "92", "--precision", "fp32", "--val-every", "2",
            "--workers", "0", "-q"]
    assert main(args) == 0
    assert "model.pt" in capsys.readouterr().out
    config = read_config_toml(tmp_path / "run" / "config.toml")
    assert (config.base_channels, config.iterations, config.recipe) == (4, 4, "fast")
    from biounet.synthetic import make_sample
    from biounet.io import write_tiff

    write_tiff(tmp_path / "img.tif", make_sample("cells", size=(60, 70), rng=5).image[..., 0])
    assert main(["predict", str(tmp_path / "run" / "model.pt"), str(tmp_path / "img.tif"), "--out",
                 str(tmp_path / "pred"), "--instances", "-q"]) == 0
    assert (tmp_path / "pred" / "img_instances.tif").exists()
    # resume a finished run: nothing left to do, weights unchanged
    before = _weights(tmp_path / "run")
    assert main(["train", "--data", "synthetic:cells,n=4,size=96x96", "--out", str(tmp_path / "run"),
                 "--resume", "-q", "--device", "cpu"]) == 0
    assert _max_difference(before, _weights(tmp_path / "run")) == 0.0


def test_cli_train_auto_defaults_are_recorded(tmp_path, capsys):
    assert main(["train", "--data", "synthetic:cells,n=3,size=64x64", "--out", str(tmp_path / "run"),
                 "--time-budget", "3s", "--tile", "92", "--depth", "2", "--workers", "0", "-q"]) == 0
    err = capsys.readouterr().err
    assert "precision" in err and "base" in err
    text = (tmp_path / "run" / "config.toml").read_text()
    assert text.startswith("# precision") and "time_budget_s" in text


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--time-budget=-5m"], "duration"),
        (["--time-budget", "0s"], "positive duration"),
        (["--iterations", "2", "--tile", "500"], "tile size 500 is not valid"),
    ],
)
def test_cli_train_bad_arguments(tmp_path, capsys, argv, match):
    import re

    code = None
    try:
        code = main(["train", "--data", "synthetic:cells,n=3,size=64x64", "--out", str(tmp_path / "r"), *argv])
    except SystemExit as exit_:  # argparse rejects the value itself
        code = exit_.code
    assert code == 2
    assert re.search(match, capsys.readouterr().err)


def test_cli_train_missing_data(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "r"), "--iterations",
                 "2", "--base-channels", "4", "--depth", "2", "--tile", "92", "--precision", "fp32"]) == 2
    assert "nothing" in capsys.readouterr().err
    assert not (tmp_path / "r" / "last.pt").exists()


def test_cli_resume_without_run(tmp_path, capsys):
    assert main(["train", "--data", "synthetic:cells", "--out", str(tmp_path / "r"), "--resume"]) == 2
    assert "config.toml: no such file" in capsys.readouterr().err




def test_exclude_holds_images_out(tmp_path):
    import json

    fit(replace(TINY, exclude=("cells/0", "synthetic/cells/3"), iterations=1), tmp_path / "run")
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    names = split["train"] + split["validation"]
    assert "synthetic/cells/0" not in names and "synthetic/cells/3" not in names and len(names) == 4
    with pytest.raises(ValueError, match="cannot exclude cells/9"):
        fit(replace(TINY, exclude=("cells/9",)), tmp_path / "other")


def test_many_label_values_are_flagged(tmp_path, caplog):
    from biounet.synthetic import make_dataset, write_dataset

    data = write_dataset(make_dataset("cells", 2, size=(200, 200), rng=0), tmp_path / "data")  # instance ids
    with caplog.at_level("WARNING"):
        fit(replace(TINY, data=str(data), layout="pairs", iterations=1, validation_fraction=0.0), tmp_path / "r")
    assert "--label-kind instances" in caplog.text
