"""The public Python API (biounet.predict_image, biounet.training.train, biounet.evaluation.evaluate) mirrors the command line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch

import biounet
from biounet.cli import main
from biounet.core.model import ModelConfig, UNet


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.pt"
    assert main(["init", "--out", str(path), "--base-channels", "4", "--depth", "2", "--seed", "2"]) == 0
    return path


def test_import_stays_light():
    code = "import sys, biounet; biounet.__version__; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.numerics
def test_predict_image_outputs(model_path, rng):
    image = (rng.random((45, 61)) * 4000).astype(np.uint16)
    probs = biounet.predict_image(model_path, image)
    assert probs.shape == (2, 45, 61) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    labels = biounet.predict_image(model_path, image, output="labels")
    np.testing.assert_array_equal(labels, probs.argmax(0))
    cells = biounet.predict_image(model_path, image, output="instances")
    assert cells.shape == (45, 61) and np.issubdtype(cells.dtype, np.integer)
    assert not np.any((cells > 0) & (labels == 0))  # cells lie in the foreground (specks below min size dropped)


@pytest.mark.numerics
def test_predict_image_matches_the_command_line(model_path, rng, tmp_path):
    image = (rng.random((40, 50)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "x.tif", image)
    assert main(["predict", str(model_path), str(tmp_path / "x.tif"), "--out", str(tmp_path / "out"), "-q"]) == 0
    np.testing.assert_array_equal(biounet.predict_image(model_path, image, output="labels"),
                                  tifffile.imread(tmp_path / "out" / "x.tif"))


def test_predict_image_takes_a_network(rng):
    torch.manual_seed(0)
    net = UNet(ModelConfig(base_channels=4, depth=2))
    probs = biounet.predict_image(net, rng.random((30, 30)), device="cpu")
    assert probs.shape == (2, 30, 30)


def test_predict_image_rejects_bad_arguments(model_path, rng):
    with pytest.raises(ValueError, match="output must be one of"):
        biounet.predict_image(model_path, rng.random((30, 30)), output="masks")
    with pytest.raises(TypeError, match="model must be"):
        biounet.predict_image(42, rng.random((30, 30)))


def test_train_rejects_unknown_settings_and_bad_budgets(tmp_path):
    with pytest.raises(ValueError, match="unknown training settings: tile_size"):
        biounet.train("synthetic:cells", tmp_path / "run", iterations=1, settings={"tile_size": 92})
    with pytest.raises(ValueError, match="duration"):
        biounet.train("synthetic:cells", tmp_path / "run", time_budget="ten minutes")


def test_train_and_evaluate_are_callable_modules():
    import biounet.evaluation.evaluate
    import biounet.training.train

    assert callable(biounet.training.train) and biounet.training.train.fit is not None  # still the module
    assert biounet.training.train.__call__.__wrapped__ is biounet.training.train.train_dataset
    assert biounet.evaluation.evaluate.__call__.__wrapped__ is biounet.evaluation.evaluate.evaluate_folders


def test_evaluate_is_evaluate_folders(tmp_path):
    from biounet.evaluation.evaluate import evaluate_folders

    (tmp_path / "p").mkdir()
    (tmp_path / "t").mkdir()
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2:6, 2:6] = 1
    tifffile.imwrite(tmp_path / "p" / "a.tif", mask)
    tifffile.imwrite(tmp_path / "t" / "a.tif", mask * 255)
    assert biounet.evaluate(tmp_path / "p", tmp_path / "t") == evaluate_folders(tmp_path / "p", tmp_path / "t")
    assert biounet.evaluate(tmp_path / "p", tmp_path / "t")["mean"]["iou"] == 1.0
