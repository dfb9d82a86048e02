"""Distance-target models (``num_classes + 1`` outputs: the class probabilities, then the distance map) through
every prediction path: the outputs keep all channels, the labels come from the class channels only (issue 21).

The model's distance channel is made large (sigmoid of a bias of 50, i.e. 1.0), so an arg-max over all channels
would label every pixel 2; its class channels are those of a random network, so the labels are not trivial.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from biounet.core.model import ModelConfig, UNet
from biounet.data.checkpoint import model_payload, save_checkpoint
from biounet.inference.predict import PredictOptions, load_predictor, predict_file

TILE = 92  # depth 2: 92 -> 52


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    torch.manual_seed(5)
    model = UNet(ModelConfig(depth=2, base_channels=4, distance_channels=1))
    with torch.no_grad():
        model.head.bias[2] = 50.0  # the distance channel: sigmoid(50) = 1.0 beats any class probability
    path = tmp_path_factory.mktemp("model") / "distance.pt"
    return save_checkpoint(path, model_payload(model, normalization="percentile", target="distance"))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return (np.random.default_rng(3).random((70, 90)) * 4000).astype(np.uint16)


@pytest.fixture(scope="module")
def single(model_path, image, tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of the single-process file path (the reference)."""
    folder = tmp_path_factory.mktemp("single")
    tifffile.imwrite(folder / "img.tif", image)
    predictor = load_predictor(model_path, device="cpu", precision="fp32")
    result = predict_file(predictor, folder / "img.tif", folder / "out",
                          PredictOptions(tile=TILE, save_probabilities=True))
    labels, probs = tifffile.imread(result.labels_path), tifffile.imread(result.probabilities_path)
    assert probs.shape == (3, 70, 90) and np.all(probs[2] > probs[:2].max(0))  # an all-channel arg-max gives 2
    assert 0 < labels.mean() < 1  # both classes present
    np.testing.assert_array_equal(labels, probs[:2].argmax(0))
    return labels, probs


def test_napari_segment_array_sizes_outputs_by_output_channels(model_path, image, single):
    pytest.importorskip("magicgui")
    pytest.importorskip("qtpy")
    from biounet.inference.settings import instance_settings
    from biounet.integrations.napari import SegmentSettings, segment_array

    predictor = load_predictor(model_path, device="cpu", precision="fp32")
    result = segment_array(predictor, image, settings=SegmentSettings(tile=TILE, instances=False, probabilities=True))
    np.testing.assert_allclose(result.probabilities, single[1], atol=1e-5)
    np.testing.assert_array_equal(result.labels, single[0])
    cells = segment_array(predictor, image, settings=SegmentSettings(tile=TILE),
                          instance_settings=instance_settings(model_path))
    assert cells.labels.shape == image.shape and cells.labels.dtype == np.int32


def test_api_labels_come_from_the_class_channels(model_path, image, single):
    import biounet

    labels = biounet.predict_image(model_path, image, output="labels", device="cpu", precision="fp32", tile=TILE)
    np.testing.assert_array_equal(labels, single[0])


def test_omezarr_labels_come_from_the_class_channels(model_path, image, single, tmp_path):
    zarr = pytest.importorskip("zarr")
    from biounet.inference.predict_omezarr import predict_to_omezarr

    tifffile.imwrite(tmp_path / "img.tif", image)
    predictor = load_predictor(model_path, device="cpu", precision="fp32")
    result = predict_to_omezarr(predictor, tmp_path / "img.tif", tmp_path / "labels.zarr", PredictOptions(tile=TILE))
    labels = np.asarray(zarr.open_group(str(result.labels_path), mode="r")["0"][:])
    np.testing.assert_array_equal(labels.reshape(image.shape), single[0])


def test_blockwise_writes_every_output_channel(model_path, image, single, tmp_path):
    pytest.importorskip("distributed")
    zarr = pytest.importorskip("zarr")
    from biounet.inference.blockwise import open_client, predict_blockwise

    array = zarr.open_array(str(tmp_path / "img.zarr"), mode="w", shape=image.shape, chunks=(64, 64),
                            dtype=image.dtype)
    array[:] = image
    with open_client(workers=1, processes=False) as client:
        result = predict_blockwise(model_path, tmp_path / "img.zarr", tmp_path / "out", client,
                                   PredictOptions(tile=TILE, save_probabilities=True), device="cpu",
                                   precision="fp32")
    np.testing.assert_allclose(zarr.open_array(str(result.probabilities_path), mode="r")[:], single[1], atol=1e-5)
    np.testing.assert_array_equal(zarr.open_array(str(result.labels_path), mode="r")[:], single[0])
