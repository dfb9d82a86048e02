"""Prediction from files: output names and their collisions (biounet.inference.predict)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from biounet.core.model import ModelConfig, UNet
from biounet.evaluation.evaluate import find_predictions
from biounet.inference.predict import PredictOptions, TorchPredictor, check_output_stems, predict_file


@pytest.fixture(scope="module")
def predictor() -> TorchPredictor:
    return TorchPredictor(UNet(ModelConfig(depth=2, base_channels=4)), channels_last=False)


def _png(path: Path, rng: np.random.Generator) -> Path:
    Image.fromarray((rng.random((30, 40)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize(("name", "stem"), [("a.b.c.png", "a.b.c"), (".hidden.png", ".hidden")])
def test_outputs_are_named_after_the_full_stem(predictor, tmp_path, rng, name, stem):
    out = tmp_path / "out"
    result = predict_file(predictor, _png(tmp_path / name, rng), out, PredictOptions(save_probabilities=True))
    assert (result.labels_path.name, result.probabilities_path.name) == (f"{stem}.tif", f"{stem}_prob.tif")
    assert sorted(p.name for p in out.iterdir()) == [f"{stem}.tif", f"{stem}_prob.tif"]


def test_evaluate_groups_predictions_by_the_same_stem(predictor, tmp_path, rng):
    out = tmp_path / "out"
    predict_file(predictor, _png(tmp_path / "s.1.png", rng), out, PredictOptions(save_probabilities=True))
    predict_file(predictor, _png(tmp_path / "s.2.png", rng), out, PredictOptions(save_probabilities=True))
    found = find_predictions(out)
    assert list(found) == ["s.1", "s.2"]
    assert (found["s.1"].labels.name, found["s.1"].probabilities.name) == ("s.1.tif", "s.1_prob.tif")


def test_inputs_with_the_same_stem_are_refused():
    with pytest.raises(ValueError, match=r"'x': data/x\.tif, data/x\.png: both would be written as"):
        check_output_stems(["data/x.tif", "data/y.tif", "data/x.png"])


def test_inputs_with_distinct_stems_are_accepted():
    assert list(check_output_stems(["x.1.tif", "x.2.tif", "x.tif"])) == ["x.1", "x.2", "x"]
