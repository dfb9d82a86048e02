"""Training: loss goes down, resume is exact, the run directory is complete, bad input is refused."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import pytest

from biounet.cli import main
from biounet.core.samples import IGNORE, Sample
from biounet.data.checkpoint import load_checkpoint
from biounet.training.augment import AugmentConfig
from biounet.training.config import TrainConfig, config_toml, read_config_toml
from biounet.training.events import StepEvent, ValidationEvent
from biounet.training.train import fit, learning_rate, prepare_samples

TINY = TrainConfig(data="synthetic:cells,n=6,size=96x96,seed=0", base_channels=4, depth=2, tile=92, batch_size=2,
                   iterations=8, val_every=4, workers=0, lr=3e-3, warmup_steps=2)


def _weights(run_dir):
    return load_checkpoint(run_dir / "last.pt")["model_state"]


def _max_difference(a, b):
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.numerics
@pytest.mark.slow
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
    assert read_config_toml(tmp_path / "run" / "config.toml") == replace(TINY, target="boundary")  # auto, resolved
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["scores"]["seg"] == pytest.approx(result.best_score)  # synthetic cells: chosen by SEG
    model = load_checkpoint(tmp_path / "run" / "model.pt")
    assert model["target"] == "boundary" and model["task"] == "cells"
    assert model["class_names"] == ["background", "interior", "boundary"]
    assert set(model["instance_params"]) == {"min_size_px", "seed_threshold", "watershed", "overlap_threshold", "masks",
                                             "split_prominence", "background_bias"}
    # choosing again on the same validation images gives the same post-processing back
    from biounet.data.checkpoint import save_checkpoint
    from biounet.training.train import rechoose_post_processing

    chosen = model["instance_params"]
    save_checkpoint(tmp_path / "run" / "model.pt", {**model, "instance_params": {"min_size_px": 999}})
    assert asdict(rechoose_post_processing(tmp_path / "run", device="cpu")) == chosen
    assert load_checkpoint(tmp_path / "run" / "model.pt")["instance_params"] == chosen


@pytest.mark.numerics
def test_short_run_lowers_the_loss(tmp_path):
    config = replace(TINY, iterations=40, val_every=20, augment=AugmentConfig.disabled(), lr=5e-3,
                     data="synthetic:cells,n=4,size=96x96,seed=0", validation_fraction=0.0, w0=0.0, target="paper")
    losses = []
    fit(config, tmp_path / "run", progress=lambda e: losses.append(e.loss) if isinstance(e, StepEvent) else None)
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


def test_prepared_targets_weight_the_gap_between_touching_cells():
    """The seam the weight map was once computed on the wrong instance map: the cut gap carries the border term."""
    instances = np.zeros((12, 22), np.int32)
    instances[1:9, 1:11] = 1
    instances[1:9, 11:21] = 2  # two 8x10 rectangles touching along a column
    sample = Sample("t", np.zeros((12, 22, 1), np.float32), (instances > 0).astype(np.int64), instances)
    membranes = Sample("m", sample.image, (instances == 0).astype(np.int64), instances)  # ISBI-like target
    (cells, isbi) = prepare_samples([sample, membranes], replace(TINY, target="paper", class_balance=False), 2)
    assert cells.classes[4, 10] == 0 and cells.classes[4, 11] == 0  # the contact became background
    assert cells.weights[4, 10] >= 9 and cells.weights[4, 11] >= 9  # 1 + 10 exp(-9/50) = 9.35
    np.testing.assert_array_equal(isbi.classes, membranes.classes)


def test_class_frequencies_are_counted_after_separation():
    instances = np.zeros((12, 22), np.int32)
    instances[1:9, 1:11], instances[1:9, 11:21] = 1, 2
    sample = Sample("t", np.zeros((12, 22, 1), np.float32), (instances > 0).astype(np.int64), instances)
    (prepared,) = prepare_samples([sample], replace(TINY, target="paper", w0=0.0), 2)
    background = prepared.classes == 0
    # w_c = 1 / (2 f_c) with f_c over the separated target: the weights average to 1 exactly
    assert prepared.weights.mean() == pytest.approx(1.0)
    assert prepared.weights[background][0] == pytest.approx(1 / (2 * background.mean()))


def test_ignore_label_is_kept():
    instances = np.zeros((6, 6), np.int32)
    instances[1:4, 1:4] = 1
    classes = (instances > 0).astype(np.int64)
    classes[5, 5] = IGNORE
    (out,) = prepare_samples([Sample("t", np.zeros((6, 6, 1), np.float32), classes, instances)],
                             replace(TINY, target="paper"), 2)
    assert out.classes[5, 5] == IGNORE and out.weights[5, 5] == 0


def test_training_without_validation_writes_the_final_model(tmp_path):
    events = []
    result = fit(replace(TINY, validation_fraction=0.0, iterations=4), tmp_path / "run", progress=events.append)
    assert result.best_score is None and not (tmp_path / "run" / "best.pt").exists()
    model = load_checkpoint(tmp_path / "run" / "model.pt")
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert all((model["model_state"][k] == last["model_state"][k]).all() for k in last["model_state"])
    validations = [e for e in events if isinstance(e, ValidationEvent)]
    assert [v.step for v in validations] == [4, 4][:1] and validations[0].score is None


def test_cli_trains_without_validation(tmp_path, capsys):
    code = main(["train", "--data", "synthetic:cells,n=3,size=96x96,seed=0", "--out", str(tmp_path / "run"),
                 "--base-channels", "4", "--depth", "2", "--tile", "92", "--iterations", "3",
                 "--validation-fraction", "0", "--precision", "fp32", "--workers", "0", "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "no validation images" in captured.out and captured.out.count("\n") == 1  # stdout: the result line only
    assert "validation" not in captured.err  # -q
    assert (tmp_path / "run" / "model.pt").exists()


def test_boundary_target_trains_three_classes(tmp_path):
    result = fit(replace(TINY, target="boundary", iterations=2, val_every=2), tmp_path / "run")
    model = load_checkpoint(tmp_path / "run" / "model.pt")
    assert model["model_config"]["num_classes"] == 3 and model["class_names"][2] == "boundary"
    assert result.history[-1]["seg"] >= 0.0


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
    from biounet.data.images import write_tiff
    from biounet.data.synthetic import make_sample

    write_tiff(tmp_path / "img.tif", make_sample("cells", size=(60, 70), rng=5).image[..., 0])
    assert main(["predict", str(tmp_path / "run" / "model.pt"), str(tmp_path / "img.tif"), "--out",
                 str(tmp_path / "pred"), "--instances", "--save-probabilities", "-q"]) == 0
    # the instances are what the run's stored settings make of the probabilities, as validation chose them
    import tifffile

    from biounet.inference.instances import instances_from_probabilities
    from biounet.inference.settings import instance_settings

    target, params = instance_settings(tmp_path / "run" / "model.pt")
    probs = tifffile.imread(tmp_path / "pred" / "img_prob.tif")
    assert target == "boundary" and probs.shape == (3, 60, 70)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "pred" / "img_instances.tif"),
                                  instances_from_probabilities(probs, target=target, params=params))
    # --post-processing replaces stored settings: every pixel a seed and foreground, whatever 4 steps learnt
    overrides = ["seed_threshold=0", "min_size_px=0", "background_bias=0.01"]
    assert main(["predict", str(tmp_path / "run" / "model.pt"), str(tmp_path / "img.tif"), "--out",
                 str(tmp_path / "pred2"), "--instances", "-q", *(f"--post-processing={o}" for o in overrides)]) == 0
    changed = replace(params, seed_threshold=0.0, min_size_px=0, background_bias=0.01)
    overridden = tifffile.imread(tmp_path / "pred2" / "img_instances.tif")
    np.testing.assert_array_equal(overridden, instances_from_probabilities(probs, target=target, params=changed))
    assert overridden.max() > 0 and not np.array_equal(overridden, instances_from_probabilities(
        probs, target=target, params=params))
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
    from biounet.data.synthetic import make_dataset, write_dataset

    data = write_dataset(make_dataset("cells", 2, size=(200, 200), rng=0), tmp_path / "data")  # instance ids
    with caplog.at_level("WARNING"):  # label_kind="auto" (the default) would read them as instances
        fit(replace(TINY, data=str(data), layout="pairs", label_kind="classes", iterations=1,
                    validation_fraction=0.0), tmp_path / "r")
    assert "--label-kind instances" in caplog.text


@pytest.mark.numerics
def test_distance_model_tiles_seamlessly(rng):
    import torch

    from biounet.core.model import ModelConfig, UNet
    from biounet.inference.predict import TorchPredictor, predict_image

    torch.manual_seed(0)
    model = UNet(ModelConfig(depth=2, base_channels=4, distance_channels=1))
    predictor = TorchPredictor(model, precision="fp32")
    image = rng.random((70, 90, 1)).astype(np.float32)
    whole, tiled = predict_image(predictor, image), predict_image(predictor, image, tile=60)
    assert whole.shape == (3, 70, 90)
    np.testing.assert_allclose(whole[:2].sum(0), 1.0, atol=1e-5)  # softmax over the classes only
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


@pytest.mark.slow
def test_distance_target_trains_and_predicts_instances(tmp_path, capsys):
    import tifffile

    fit(replace(TINY, target="distance", iterations=2, val_every=2), tmp_path / "run")
    model = load_checkpoint(tmp_path / "run" / "model.pt")
    assert model["model_config"]["distance_channels"] == 1 and model["target"] == "distance"
    image = tmp_path / "a.tif"
    tifffile.imwrite(image, np.random.default_rng(0).random((100, 100)).astype(np.float32))
    assert main(["predict", str(tmp_path / "run" / "model.pt"), str(image), "--out", str(tmp_path / "p"),
                 "--instances", "-q"]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["a.tif", "a_instances.tif"]
    assert tifffile.imread(tmp_path / "p" / "a.tif").max() <= 1  # labels from the class channels only


@pytest.mark.numerics
@pytest.mark.slow
def test_fine_tuning_starts_from_the_trained_weights(tmp_path):
    first = fit(replace(TINY, iterations=2, target="paper"), tmp_path / "first")
    assert first.steps == 2
    tuned = fit(replace(TINY, iterations=1, target="paper", init=str(tmp_path / "first" / "model.pt"), lr=1e-12,
                        warmup_steps=0),
                tmp_path / "tuned", samples=None)
    source = load_checkpoint(tmp_path / "first" / "model.pt")["model_state"]
    assert tuned.model is not None
    tuned_state = tuned.model.state_dict()
    assert all(np.allclose(source[k].numpy(), tuned_state[k].numpy(), atol=1e-6) for k in source)
    # another class count (the boundary target's 3) replaces only the 1x1 head
    boundary = fit(replace(TINY, iterations=1, target="boundary", init=str(tmp_path / "first" / "model.pt"),
                           lr=1e-12, warmup_steps=0), tmp_path / "boundary")
    assert boundary.model is not None
    state = boundary.model.state_dict()
    assert state["head.weight"].shape[0] == 3
    assert all(np.allclose(source[k].numpy(), state[k].numpy(), atol=1e-6) for k in source if "head" not in k)


def test_sparse_annotation_with_an_ignore_label(tmp_path):
    import tifffile

    from biounet.data.datasets import load_dataset

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    labels = np.full((32, 32), 9, np.uint16)  # 9 = not annotated
    labels[4:12, 4:12], labels[20:28, 20:28], labels[0:3, :] = 1, 2, 0  # two painted cells, a strip of background
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.random.default_rng(0).random((32, 32)).astype(np.float32))
    tifffile.imwrite(tmp_path / "labels" / "a.tif", labels)
    (sample,) = load_dataset(tmp_path, label_kind="instances", ignore_label=9)
    assert (sample.classes[labels == 9] == IGNORE).all()
    assert sample.classes[5, 5] == 1 and sample.classes[1, 1] == 0 and sample.instances.max() == 2
    (prepared,) = prepare_samples([sample], replace(TINY, target="paper"), 2)
    assert (prepared.weights[labels == 9] == 0).all()


@pytest.mark.numerics
@pytest.mark.slow
def test_compiled_training_steps_learn_what_the_module_learns(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from torch._dynamo.utils import counters

    import biounet.training.train

    # without dropout, whose random masks torch.compile draws from another stream
    model_config = TrainConfig.model_config
    monkeypatch.setattr(TrainConfig, "model_config", lambda self, *a, **k: replace(model_config(self, *a, **k),
                                                                                   dropout=0.0))
    initial: dict[str, dict[str, torch.Tensor]] = {}
    new_state = biounet.training.train._new_state

    def recording_initial_weights(config, split, device):
        state = new_state(config, split, device)
        initial["compiled" if config.compile else "eager"] = {
            name: p.detach().clone() for name, p in state.model.named_parameters()}
        return state

    monkeypatch.setattr(biounet.training.train, "_new_state", recording_initial_weights)
    # SGD without momentum: each step is linear in the gradient, so a near-zero gradient whose sign flips under
    # float reordering moves its weight by a near-zero amount (Adam moves it by ~lr whatever the gradient's size)
    config = replace(TINY, iterations=3, val_every=3, augment=AugmentConfig.disabled(), batch_norm=True,
                     optimizer="sgd", momentum=0.0)
    losses: dict[str, list[float]] = {"eager": [], "compiled": []}
    for name, compiled in (("eager", False), ("compiled", True)):
        counters.clear()
        fit(replace(config, compile=compiled), tmp_path / name,
            progress=lambda e, n=name: losses[n].append(e.loss) if isinstance(e, StepEvent) else None)
        assert (counters["stats"]["unique_graphs"] >= 1) == compiled  # the steps ran through torch.compile
    assert _max_difference(initial["eager"], initial["compiled"]) == 0.0  # same seed, same weights
    # same weights, same batch: fp32 sums reordered (<= 144 terms per convolution output, ~5,000 pixels in the
    # loss), ~eps * sqrt(5,000) ~ 4e-6 relative
    assert losses["compiled"][0] == pytest.approx(losses["eager"][0], rel=1e-4)
    eager, compiled = _weights(tmp_path / "eager"), _weights(tmp_path / "compiled")
    assert eager.keys() == compiled.keys()  # checkpoints hold the module's names, not the compiled wrapper's
    # The updates (final - initial weights) agree to float rounding: a weight gradient sums ~1.6e4 pixel terms
    # (2 tiles x 90 x 90), whose reordering in fp32 (eps 6e-8) changes it by ~eps * sqrt(1.6e4) ~ 1e-5 relative, and
    # each step rounds the weights (~3e3 x an update here) by ~eps |w|, ~3e-4 of the update at most: 1e-3 bounds both
    # (seen: 3e-5 with the AVX512-BF16, AVX512 and AVX2 kernels alike; a learning rate 1 % off gives 1.8e-2)
    names = list(initial["eager"])
    update = {run: torch.cat([(weights[k].float() - initial["eager"][k]).flatten() for k in names])
              for run, weights in (("eager", eager), ("compiled", compiled))}
    relative = ((update["compiled"] - update["eager"]).norm() / update["eager"].norm()).item()
    assert relative < 1e-3, relative


# --- compile: opt-in, "auto" where it measured faster, eager steps where compilation fails -------------------------


@pytest.mark.parametrize(("compile_", "budget_s", "device", "world_size", "expected"), [
    (True, None, "cuda", 1, True),  # asked for: compiled anywhere
    (False, 3600.0, "cpu", 1, False),  # refused: never
    ("auto", 600.0, "cpu", 1, True),  # measured faster: CPU, 10 minutes and more
    ("auto", 599.0, "cpu", 1, False),
    ("auto", None, "cpu", 1, False),  # a run given iterations: its length is not known
    ("auto", 3600.0, "cuda", 1, False),  # not measured
    ("auto", 3600.0, "cpu", 2, False),
])
def test_resolve_compile(compile_, budget_s, device, world_size, expected):
    from biounet.training.config import resolve_compile

    config = replace(TINY, compile=compile_, time_budget_s=budget_s, iterations=None if budget_s else 8)
    compiled, note = resolve_compile(config, device, world_size=world_size)
    assert compiled == expected
    assert (note is not None) == (expected and compile_ == "auto")  # auto says when it compiles


def test_compile_setting_is_checked_and_round_trips(tmp_path):
    assert TrainConfig(data="x", iterations=1).compile == "auto"
    with pytest.raises(ValueError, match="compile must be True, False or 'auto', got 'yes'"):
        replace(TINY, compile="yes")
    from biounet.training.config import write_config_toml

    for value in (True, False, "auto"):
        write_config_toml(tmp_path / "config.toml", replace(TINY, compile=value))
        assert read_config_toml(tmp_path / "config.toml").compile == value


def _failing_compile(network, *args, **kwargs):
    """What ``torch.compile`` returns where compilation fails: a callable raising at its first call."""
    import torch._dynamo.exc

    def compiled(*inputs):  # the base of BackendCompilerFailed and InductorError, whose signatures vary by version
        raise torch._dynamo.exc.TorchDynamoException(
            "backend='inductor' raised:\nInvalidCxxCompiler: No working C++ compiler found")

    return compiled


@pytest.mark.parametrize("failure", ["first_step", "torch.compile"])
def test_failed_compilation_falls_back_to_eager_steps(tmp_path, monkeypatch, caplog, failure):
    import torch

    def refusing_compile(network, *args, **kwargs):
        raise RuntimeError("torch.compile is not supported on this platform")

    config = replace(TINY, iterations=2, val_every=2, validation_fraction=0.0)
    fit(replace(config, compile=False), tmp_path / "eager")
    monkeypatch.setattr(torch, "compile", _failing_compile if failure == "first_step" else refusing_compile)
    with caplog.at_level("WARNING", logger="biounet.training.train"):
        result = fit(replace(config, compile=True), tmp_path / "fallback")
    assert result.steps == 2
    notes = [r.getMessage() for r in caplog.records if "torch.compile failed" in r.getMessage()]
    assert len(notes) == 1 and "\n" not in notes[0] and "eager steps" in notes[0]  # one line, once
    assert ("No working C++ compiler" if failure == "first_step" else "not supported on this platform") in notes[0]
    # the failed step changed nothing: the run is the eager run
    assert _max_difference(_weights(tmp_path / "eager"), _weights(tmp_path / "fallback")) == 0.0


def test_compile_auto_compiles_a_long_cpu_run(tmp_path, monkeypatch, caplog):
    import torch

    compiled: list[object] = []
    monkeypatch.setattr(torch, "compile", lambda network, *a, **k: compiled.append(network) or network)
    long_run = replace(TINY, iterations=None, time_budget_s=600.0, validation_fraction=0.0)
    with caplog.at_level("WARNING", logger="biounet.training.train"):
        fit(long_run, tmp_path / "long", device="cpu", stop_after=1)
    assert len(compiled) == 1 and "compile auto" in caplog.text
    fit(replace(TINY, iterations=1, validation_fraction=0.0), tmp_path / "short", device="cpu")  # iterations: eager
    assert len(compiled) == 1


# --- the post-processing a cell run stores ------------------------------------------------------------------------


def _two_cells() -> tuple[np.ndarray, np.ndarray, Sample]:
    """Two cells (paper target): probabilities that find both, and probabilities that miss the second."""
    instances = np.zeros((48, 48), np.int32)
    instances[4:20, 4:20], instances[26:44, 24:44] = 1, 2
    found = np.stack([instances == 0, instances > 0]).astype(np.float32)
    missed = np.stack([instances != 1, instances == 1]).astype(np.float32)
    classes = (instances > 0).astype(np.int64)
    return found, missed, Sample("cells", np.zeros((48, 48, 1), np.float32), classes, instances)


@pytest.mark.parametrize("averaged_is_better", [True, False])
def test_a_cell_run_stores_tta_where_the_averaged_outputs_score_higher(monkeypatch, averaged_is_better):
    """The validation images choose test-time augmentation for cells as for membranes: ``tta`` is stored where the
    outputs averaged over rotations and flips give the better instances, with the settings chosen on those."""
    import torch

    from biounet.core.model import UNet
    from biounet.training import train as training

    found, missed, sample = _two_cells()
    plain, averaged = (missed, found) if averaged_is_better else (found, missed)
    calls = []

    def predict(model, samples, *, tta=False, **_):
        calls.append(tta)
        return [averaged if tta else plain]

    monkeypatch.setattr(training, "predict_samples", predict)
    config = replace(TINY, target="paper")
    split = training.Split([sample], [sample], "cells", 1, 2, 2)
    chosen = training._cell_post_processing(UNet(config.model_config(1, 2)), config, split, torch.device("cpu"),
                                            predict(None, [sample]))
    assert calls == [False, True] and chosen["tta"] is averaged_is_better
    assert chosen["instance_params_seg"] == 1.0
