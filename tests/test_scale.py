"""Pixel size: parsing, resampling, the model's recorded size, and predict resampling other sizes to it and back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from biounet.cli import main
from biounet.core.model import ModelConfig, UNet
from biounet.data.checkpoint import load_checkpoint, model_payload, save_checkpoint
from biounet.data.images import write_tiff
from biounet.data.normalization import normalize
from biounet.data.omezarr import PixelSize
from biounet.data.scale import common_pixel_size, micrometres, parse_pixel_size, resample, scaled_shape, zoom_factors
from biounet.inference.predict import PredictOptions, load_predictor, predict_files, predict_image
from biounet.training.config import TrainConfig, resolve_pixel_size

MODEL_UM = 0.5


def test_pixel_sizes_parse_convert_and_compare():
    assert parse_pixel_size("0.19") == (0.19, 0.19)
    assert parse_pixel_size("0.19,0.2") == (0.19, 0.2)
    assert micrometres(190, 200, "nanometer") == pytest.approx((0.19, 0.2))
    for bad in ("x", "0.1,0.2,0.3", "0", "-1", "nan"):
        with pytest.raises(ValueError):
            parse_pixel_size(bad)
    with pytest.raises(ValueError, match="not a length unit"):
        micrometres(1, 1, "second")
    assert zoom_factors((1.0, 1.0), (0.5, 0.5)) == (2.0, 2.0)
    assert zoom_factors((0.25, 0.5), (0.5, 0.5)) == (0.5, 1.0)
    assert zoom_factors((0.505, 0.5), (0.5, 0.5)) is None  # within 2 %
    assert scaled_shape((70, 90), (2.0, 0.5)) == (140, 45)
    assert common_pixel_size([(0.5, 0.5), (0.501, 0.5)]) == (0.5, 0.5)
    assert common_pixel_size([(0.5, 0.5), (1.0, 1.0)]) is None
    assert common_pixel_size([(0.5, 0.5), None]) is None and common_pixel_size([]) is None


def test_resample_keeps_pixel_centres_and_returns_a_smooth_image():
    yy, xx = np.mgrid[0:40, 0:50].astype(np.float32)
    image = np.sin(yy / 6) * np.cos(xx / 7)
    big = resample(image, (80, 100), order=3)
    assert big.shape == (80, 100) and big.dtype == np.float32
    back = resample(big, (40, 50), order=1)
    assert np.abs(back - image).max() < 0.02
    stack = resample(np.stack([image, 1 - image]), (80, 100), order=1)  # leading axes untouched
    assert stack.shape == (2, 80, 100) and np.allclose(stack.sum(0), 1.0, atol=1e-5)


def _model(path: Path, pixel_size_um: float | None) -> Path:
    torch.manual_seed(3)
    model = UNet(ModelConfig(depth=2, base_channels=4))
    extra = {} if pixel_size_um is None else {"pixel_size_um": [pixel_size_um, pixel_size_um]}
    return save_checkpoint(path, model_payload(model, normalization="percentile", **extra))


@pytest.fixture
def image(rng) -> np.ndarray:
    return (rng.random((70, 90)) * 255).astype(np.uint8)


@pytest.mark.numerics
def test_an_image_at_twice_the_models_pixel_size_is_predicted_enlarged_and_resampled_back(tmp_path, image):
    """The seam: the probabilities predict writes are those of the image enlarged 2x to the model's scale, predicted,
    and shrunk back; labels have the image's own shape and keep its pixel size."""
    model = _model(tmp_path / "m.pt", MODEL_UM)
    write_tiff(tmp_path / "coarse.tif", image, pixel_size=PixelSize(2 * MODEL_UM, 2 * MODEL_UM))
    predictor = load_predictor(model, precision="fp32")
    assert predictor.pixel_size_um == (MODEL_UM, MODEL_UM)
    (result,) = predict_files(predictor, [tmp_path / "coarse.tif"], tmp_path / "out",
                              PredictOptions(save_probabilities=True))
    assert result.zoom == (2.0, 2.0) and result.pixel_size_um == (1.0, 1.0)
    written = tifffile.imread(result.probabilities_path)
    enlarged = resample(normalize(image, "percentile")[None], (140, 180), order=3)[0]
    expected = resample(predict_image(predictor, enlarged), (70, 90), order=1)
    assert written.shape == (2, 70, 90)
    np.testing.assert_allclose(written, expected, atol=1e-5)
    labels = tifffile.imread(result.labels_path)
    np.testing.assert_array_equal(labels, expected.argmax(0))
    with tifffile.TiffFile(result.labels_path) as tif:
        assert "PhysicalSizeX=\"1.0\"" in tif.ome_metadata
    # the same network predicting the image at its own scale gives other probabilities: resampling matters
    (plain,) = predict_files(predictor, [tmp_path / "coarse.tif"], tmp_path / "plain",
                             PredictOptions(save_probabilities=True, rescale=False))
    assert plain.zoom is None and np.abs(tifffile.imread(plain.probabilities_path) - written).max() > 1e-3


def test_no_resampling_where_sizes_agree_or_one_is_unknown(tmp_path, image):
    with_size, without = _model(tmp_path / "a.pt", MODEL_UM), _model(tmp_path / "b.pt", None)
    write_tiff(tmp_path / "same.tif", image, pixel_size=PixelSize(MODEL_UM, MODEL_UM))
    tifffile.imwrite(tmp_path / "bare.tif", image)
    reference = predict_files(load_predictor(without, precision="fp32"), [tmp_path / "same.tif"], tmp_path / "r",
                              PredictOptions(save_probabilities=True))[0]
    for path in (tmp_path / "same.tif", tmp_path / "bare.tif"):
        (result,) = predict_files(load_predictor(with_size, precision="fp32"), [path], tmp_path / path.stem,
                                  PredictOptions(save_probabilities=True))
        assert result.zoom is None
        np.testing.assert_array_equal(tifffile.imread(result.probabilities_path),
                                      tifffile.imread(reference.probabilities_path))
    # a pixel size given for a file without one is used
    (given,) = predict_files(load_predictor(with_size, precision="fp32"), [tmp_path / "bare.tif"], tmp_path / "g",
                             PredictOptions(pixel_size_um=(1.0, 1.0)))
    assert given.zoom == (2.0, 2.0)


def test_cli_says_it_resampled_and_zarr_paths_refuse_another_pixel_size(tmp_path, image, capsys):
    model = _model(tmp_path / "m.pt", MODEL_UM)
    tifffile.imwrite(tmp_path / "bare.tif", image)
    assert main(["predict", str(model), str(tmp_path / "bare.tif"), "--out", str(tmp_path / "out"),
                 "--pixel-size", "1.0", "--precision", "fp32"]) == 0
    err = capsys.readouterr().err
    assert "pixel size 1 x 1 µm, the model's 0.5 x 0.5 µm" in err and "x2" in err
    assert tifffile.imread(tmp_path / "out" / "bare.tif").shape == (70, 90)
    assert main(["predict", str(model), str(tmp_path / "bare.tif"), "--out", str(tmp_path / "o.zarr"),
                 "--pixel-size", "1.0"]) == 2
    assert "does not resample" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(model), str(tmp_path / "bare.tif"), "--out", str(tmp_path / "o2"), "--pixel-size", "abc"])
    assert exit_info.value.code == 2 and "pixel size must be micrometres" in capsys.readouterr().err


def test_training_records_the_pixel_size_given_or_read_from_the_images(tmp_path, rng):
    config = TrainConfig(data="x", iterations=1)
    assert resolve_pixel_size(config, [(0.3, 0.3), (0.3, 0.3)])[0].pixel_size == (0.3, 0.3)
    unresolved, note = resolve_pixel_size(config, [(0.3, 0.3), (0.6, 0.6)])
    assert unresolved.pixel_size is None and "different" in note
    assert resolve_pixel_size(config, [None, None]) == (config, None)
    given = TrainConfig(data="x", iterations=1, pixel_size=(0.2, 0.2))
    assert resolve_pixel_size(given, [(0.3, 0.3)]) == (given, None)
    # end to end: OME-TIFF training images record 0.3 µm; the model remembers it
    for folder in ("images", "labels"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    for k in range(2):
        labels = np.zeros((64, 64), np.uint8)
        labels[10:30, 10:30], labels[35:55, 30:60] = 1, 1
        write_tiff(tmp_path / "data" / "images" / f"i{k}.tif", (rng.random((64, 64)) * 50 + labels * 150)
                   .astype(np.uint8), pixel_size=PixelSize(0.3, 0.3))
        tifffile.imwrite(tmp_path / "data" / "labels" / f"i{k}.tif", labels)
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(run), "--iterations", "2",
                 "--base-channels", "4", "--depth", "2", "--tile", "124", "--precision", "fp32", "-q"]) == 0
    assert load_checkpoint(run / "model.pt")["pixel_size_um"] == [0.3, 0.3]
    assert "pixel size 0.3 x 0.3" in (run / "config.toml").read_text()
    run2 = tmp_path / "run2"
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(run2), "--iterations", "1",
                 "--base-channels", "4", "--depth", "2", "--tile", "124", "--precision", "fp32", "-q",
                 "--pixel-size", "0.25,0.3"]) == 0
    assert load_checkpoint(run2 / "model.pt")["pixel_size_um"] == [0.25, 0.3]
