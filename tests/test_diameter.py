"""Object diameters (biounet.data.diameter): measured sizes, resampled samples, the common diameter a run stores,
and prediction resampling new images to it (given or estimated)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from biounet.core.samples import Sample
from biounet.data.diameter import (
    common_diameter,
    diameter_zoom,
    median_diameter,
    rescale_sample,
    to_common_diameter,
)


def _discs(radius: float, size: int = 96, spacing: int | None = None) -> Sample:
    """Non-touching discs of ``radius`` on a grid, as a labelled sample (image = foreground)."""
    spacing = spacing or int(2 * radius + 6)
    yy, xx = np.mgrid[:size, :size]
    instances = np.zeros((size, size), np.int32)
    label = 0
    for cy in range(spacing // 2, size - int(radius), spacing):
        for cx in range(spacing // 2, size - int(radius), spacing):
            label += 1
            instances[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = label
    image = (instances > 0).astype(np.float32)[..., None]
    return Sample(f"discs{radius}", image, (instances > 0).astype(np.int64), instances, (0.5, 0.5))


@pytest.mark.parametrize("radius", [4.0, 7.5, 12.0])
def test_median_diameter_of_discs_is_their_diameter(radius):
    assert median_diameter(_discs(radius).instances) == pytest.approx(2 * radius, rel=0.06)


def test_no_objects_no_diameter():
    assert median_diameter(np.zeros((8, 8), np.int32)) is None
    assert common_diameter([_discs(5.0), Sample("empty", np.zeros((8, 8, 1), np.float32),
                                                np.zeros((8, 8), np.int64), np.zeros((8, 8), np.int32))]) == \
        pytest.approx(median_diameter(_discs(5.0).instances))


def test_rescaled_samples_keep_their_ids_and_reach_the_common_diameter():
    small, large = _discs(4.0, size=80), _discs(12.0, size=160)
    common = 16.0
    rescaled = to_common_diameter([small, large], common)
    for before, after in zip([small, large], rescaled):
        assert median_diameter(after.instances) == pytest.approx(common, rel=0.1)
        assert set(np.unique(after.instances)) == set(np.unique(before.instances))  # no id lost or blended
        assert after.image.shape[:2] == after.classes.shape == after.instances.shape
        np.testing.assert_array_equal(after.classes, after.instances > 0)
    zoom = after.image.shape[0] / large.image.shape[0]
    assert rescaled[1].pixel_size_um == pytest.approx((0.5 / zoom, 0.5 / zoom), rel=0.02)
    assert to_common_diameter([small], median_diameter(small.instances) * 1.05)[0] is small  # within 10 %: as is


def test_bad_diameters_are_named():
    with pytest.raises(ValueError, match="positive number of pixels, got 0"):
        diameter_zoom(0.0, 16.0)
    with pytest.raises(ValueError, match="2-D images only"):
        rescale_sample(Sample("v", np.zeros((4, 8, 8, 1), np.float32), None, None), 2.0)


@pytest.fixture(scope="module")
def cell_model(tmp_path_factory) -> Path:
    """A small boundary-target network trained 40 steps on synthetic cells at a common diameter."""
    from biounet.training.config import TrainConfig
    from biounet.training.train import fit

    run = tmp_path_factory.mktemp("diameter") / "run"
    fit(TrainConfig(data="synthetic:cells,n=6,size=128x128,seed=0", base_channels=8, depth=2, tile=124,
                    batch_size=2, iterations=40, val_every=40, workers=0, lr=3e-3, warmup_steps=5, target="boundary"), run)
    return run / "model.pt"


def test_a_run_stores_the_common_diameter_of_its_training_images(cell_model):
    from biounet.data.checkpoint import load_checkpoint
    from biounet.training.config import TrainConfig
    from biounet.training.train import select_samples

    payload = load_checkpoint(cell_model)
    config = TrainConfig(data="synthetic:cells,n=6,size=128x128,seed=0", iterations=1)
    split = select_samples(config, None)
    assert payload["diameter_px"] == pytest.approx(split.diameter_px)
    assert split.diameter_px == pytest.approx(common_diameter(split.train), rel=0.1)


def _boundary_outputs(instances: np.ndarray) -> np.ndarray:
    """One-hot outputs of a boundary model that predicts ``instances`` exactly."""
    from biounet.core.targets import boundary_band

    classes = np.where(boundary_band(instances, boundary_px=2), 2, (instances > 0).astype(int))
    return np.stack([classes == k for k in range(3)]).astype(np.float32)


def test_the_first_prediction_measures_the_cells_it_finds(cell_model, monkeypatch):
    from biounet.inference import predict
    from biounet.inference.predict import estimate_diameter, load_predictor

    outputs = _boundary_outputs(_discs(9.0, size=120).instances)
    monkeypatch.setattr(predict, "predict_image", lambda predictor, image, tile=None: outputs)
    predictor = load_predictor(cell_model, device="cpu", precision="fp32")
    predictor.diameter_calibration = 1.0
    assert estimate_diameter(predictor, np.zeros((120, 120, 1), np.float32), passes=1) == pytest.approx(18.0, rel=0.1)
    predictor.diameter_calibration = 1.5  # its cells measured 1.5x too large on its validation images
    assert estimate_diameter(predictor, np.zeros((120, 120, 1), np.float32), passes=1) == pytest.approx(12.0, rel=0.1)


def test_the_calibration_is_how_much_larger_predicted_cells_measure_than_labelled_ones():
    from biounet.training.train import Split, diameter_calibration

    samples = [_discs(radius, size=96) for radius in (6.0, 8.0, 10.0)]
    probs = [_boundary_outputs(_discs(radius * 1.2, size=96, spacing=int(2 * radius + 6)).instances)
             for radius in (6.0, 8.0, 10.0)]  # every predicted disc 1.2x the labelled one
    split = Split(train=samples, validation=samples, task="cells", in_channels=1, num_classes=3, dataset_classes=2,
                  diameter_px=16.0)
    assert diameter_calibration(probs, split)["diameter_calibration"] == pytest.approx(1.2, rel=0.05)
    assert diameter_calibration(probs, Split(samples, samples, "cells", 1, 3, 2, None)) == {}


def test_the_estimate_predicts_again_at_the_scale_it_asks_for(cell_model, monkeypatch):
    """Cells 8 px across that a prediction at the image's own scale merges (they measure 1.5x): the second pass,
    at the zoom the first measure asked for, sees them apart, and the third confirms the scale."""
    from biounet.inference import predict
    from biounet.inference.predict import estimate_diameter, load_predictor

    calls = []

    def fake(predictor, image, tile=None):
        zoom = image.shape[0] / 200
        calls.append(round(zoom, 3))
        apparent = 8.0 * zoom * (1.5 if zoom == 1.0 else 1.0)
        return _boundary_outputs(_discs(apparent / 2, size=image.shape[0]).instances)

    monkeypatch.setattr(predict, "predict_image", fake)
    predictor = load_predictor(cell_model, device="cpu", precision="fp32")
    predictor.diameter_px, predictor.diameter_calibration = 16.0, 1.0
    assert estimate_diameter(predictor, np.zeros((200, 200, 1), np.float32)) == pytest.approx(8.0, rel=0.1)
    assert len(calls) == 3 and calls[0] == 1.0 and calls[2] == pytest.approx(2.0, rel=0.1)


def test_predict_resamples_an_image_to_the_models_diameter_and_back(cell_model, tmp_path, capsys):
    import tifffile

    from biounet.cli import main
    from biounet.data.checkpoint import load_checkpoint
    from biounet.data.images import write_tiff
    from biounet.data.synthetic import make_sample
    from biounet.inference.predict import PredictOptions, load_predictor, predict_file

    model_diameter = load_checkpoint(cell_model)["diameter_px"]
    sample = make_sample("cells", size=(150, 170), rng=3)
    write_tiff(tmp_path / "cells.tif", sample.image[..., 0])
    predictor = load_predictor(cell_model, device="cpu", precision="fp32")
    half = predict_file(predictor, tmp_path / "cells.tif", tmp_path / "a",
                        PredictOptions(diameter_px=model_diameter / 2))
    assert half.zoom == pytest.approx((2.0, 2.0))
    assert tifffile.imread(tmp_path / "a" / "cells.tif").shape == (150, 170)  # outputs in the image's shape
    same = predict_file(predictor, tmp_path / "cells.tif", tmp_path / "b", PredictOptions(diameter_px=model_diameter))
    assert same.zoom is None
    off = predict_file(predictor, tmp_path / "cells.tif", tmp_path / "c",
                       PredictOptions(diameter_px=model_diameter / 2, rescale=False))
    assert off.zoom is None
    capsys.readouterr()
    assert main(["predict", str(cell_model), str(tmp_path / "cells.tif"), "--out", str(tmp_path / "e"), "--instances",
                 "--diameter", str(model_diameter / 2)]) == 0
    assert "cells resampled to the model's diameter" in capsys.readouterr().err
    assert tifffile.imread(tmp_path / "e" / "cells_instances.tif").shape == (150, 170)
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(cell_model), str(tmp_path / "cells.tif"), "--out", str(tmp_path / "d"), "--diameter", "0"])
    assert exit_info.value.code == 2 and "positive number of pixels, got 0" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_train_refuses_a_non_positive_diameter(tmp_path, capsys):
    from biounet.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", "synthetic:cells,n=2,size=64x64", "--out", str(tmp_path / "r"), "--iterations", "1",
              "--diameter", "-3"])
    assert exit_info.value.code == 2 and "auto, off or a positive number of pixels" in capsys.readouterr().err
