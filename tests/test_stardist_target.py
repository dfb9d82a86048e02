"""The ``stardist`` target through the seams: instance ids ride through augmentation beside the labels, the star
targets are made from them per tile, the loss sees only annotated pixels, and train -> predict -> evaluate hands
the right arrays on."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

import biounet
from biounet.cli import main
from biounet.core.samples import IGNORE
from biounet.core.starconvex import star_targets
from biounet.data.synthetic import make_sample
from biounet.training.augment import sample_window
from biounet.training.config import TrainConfig, resolve_target
from biounet.training.train import PreparedSample, TileSampler, objective, prepare_samples

TINY = {"target": "stardist", "depth": 2, "base_channels": 4, "tile": 92, "n_rays": 8}


def _config(**changes) -> TrainConfig:
    return TrainConfig(data="synthetic:cells", tile=92, depth=2, base_channels=4, batch_size=2, n_rays=8,
                       target="stardist", iterations=1, **changes)


def test_tiles_carry_star_targets_made_from_the_labels_own_pixels():
    samples = [make_sample("cells", size=(96, 96), rng=seed) for seed in range(2)]
    config = _config()
    prepared = prepare_samples(samples, config, num_classes=3)
    assert prepared[0].weights.shape == (96, 96, 2)  # pixel weights, instance ids
    images, labels, weights = TileSampler(prepared, config, length=1)[0]
    assert weights.shape == (2, *labels.shape[1:], 2 + 8)
    prob = weights[..., 1].numpy()
    # the object probability is positive exactly on the cells the labels teach (interior or boundary class)
    assert np.array_equal(prob > 0, labels.numpy() > 0)
    assert torch.all(weights[..., 2:][labels == 0] == 0)  # no rays on background


def test_star_loss_ignores_unannotated_pixels_and_reaches_every_output():
    torch.manual_seed(0)
    ids = np.zeros((1, 12, 12), np.int32)
    ids[0, 2:8, 2:8] = 1
    star = torch.from_numpy(star_targets(ids[0], 8))[None]
    weights = torch.cat([torch.ones(1, 12, 12, 1), star], dim=-1)
    labels = torch.from_numpy((ids > 0).astype(np.int64))
    labels[0, :, 10:] = IGNORE
    logits = torch.randn(1, 3 + 1 + 8, 12, 12, requires_grad=True)
    loss = objective(logits, labels, weights)
    loss.backward()
    grad = logits.grad.abs()
    assert torch.all(grad[..., 10:] == 0)  # ignored columns: no gradient at all
    assert grad[0, :3].sum() > 0 and grad[0, 3].sum() > 0 and grad[0, 4:].sum() > 0  # classes, prob, rays
    changed = logits.detach().clone()
    changed[..., 10:] += 5.0
    assert torch.isclose(objective(changed, labels, weights), loss.detach())


def test_stardist_needs_instance_labels():
    with pytest.raises(ValueError, match="--target stardist needs instance labels.*membranes"):
        resolve_target(_config(), "membranes")
    assert resolve_target(_config(), "cells")[0].target == "stardist"


@pytest.mark.slow
def test_train_predict_evaluate_hands_on_star_outputs(tmp_path, capsys):
    biounet.train("synthetic:cells,n=4,size=96x96,seed=0", tmp_path / "run", iterations=3,
                  settings={**TINY, "val_every": 3})
    payload = torch.load(tmp_path / "run" / "model.pt", weights_only=False)
    assert payload["target"] == "stardist" and payload["model_config"]["ray_channels"] == 8
    assert {"seed_threshold", "overlap_threshold", "masks"} <= set(payload["instance_params"])
    sample = make_sample("cells", size=(96, 96), rng=7)
    (tmp_path / "in").mkdir()
    (tmp_path / "truth").mkdir()
    tifffile.imwrite(tmp_path / "in" / "a.tif", (sample.image[..., 0] * 255).astype(np.uint8))
    tifffile.imwrite(tmp_path / "truth" / "a.tif", sample.instances.astype(np.int32))
    assert main(["predict", str(tmp_path / "run" / "model.pt"), str(tmp_path / "in" / "a.tif"), "--out",
                 str(tmp_path / "out"), "--instances", "--save-probabilities", "--no-rescale", "--quiet"]) == 0
    probs = tifffile.imread(tmp_path / "out" / "a_prob.tif")
    instances = tifffile.imread(tmp_path / "out" / "a_instances.tif")
    assert probs.shape == (3 + 1 + 8, 96, 96)  # classes, object probability, rays
    assert np.all(probs[4:] >= 0) and np.allclose(probs[:3].sum(0), 1, atol=1e-3)
    assert instances.shape == (96, 96) and np.issubdtype(instances.dtype, np.integer)
    # the instances are those of the saved outputs, made again here from them
    from biounet.inference.instances import InstanceParams, instances_from_probabilities

    again = instances_from_probabilities(probs, target="stardist", params=InstanceParams(**payload["instance_params"]))
    assert np.array_equal(again > 0, instances > 0) and again.max() == instances.max()
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(tmp_path / "out"), "--truth", str(tmp_path / "truth"), "--kind",
                 "instances", "--json"]) == 0
    pooled = json.loads(capsys.readouterr().out)["pooled"]
    assert pooled["cells"] == len(np.unique(sample.instances)) - 1
    assert pooled["predicted_cells"] == instances.max()


def test_rays_resampled_back_are_lengths_in_the_images_pixels():
    """An image predicted enlarged 2x (pixel size or cell diameter): rays measured in the enlarged image's pixels
    are halved on the way back, so the polygons outline the image's cells."""
    from biounet.core.model import ModelConfig, UNet
    from biounet.inference.predict import TorchPredictor, predict_rescaled

    class Constant(TorchPredictor):
        def _probabilities(self, batch):
            out = super()._probabilities(batch)
            out[:, 4:] = 10.0  # every ray 10 px long in the enlarged image
            return out

    model = UNet(ModelConfig(num_classes=3, ray_channels=8, depth=2, base_channels=4))
    predictor = Constant(model, precision="fp32")
    outputs = predict_rescaled(predictor, np.zeros((60, 60, 1), np.float32), (120, 120), predictor.geometry(92))
    assert outputs.shape == (12, 60, 60)
    np.testing.assert_allclose(outputs[4:], 5.0, atol=1e-4)


def test_rays_stop_at_the_image_border_not_in_its_mirror_image():
    """A tile reaching past the border reads a mirrored copy of the cell there, with the same id: the star
    targets must still see two cells, so that a ray stops at the border as on the whole image."""
    from biounet.training.augment import AugmentConfig

    labels = np.zeros((40, 40), np.int64)
    labels[0:6, 10:20] = 1  # a cell cut by the top border
    sample = PreparedSample("edge", np.zeros((40, 40, 1), np.float32), (labels > 0).astype(np.int64),
                            np.stack([np.ones((40, 40)), labels], -1).astype(np.float32))
    config = _config(augment=AugmentConfig.disabled())
    sampler = TileSampler([sample], config, length=1)
    tile = sample_window(sample.image, sample.classes, sample.weights, in_tile=92, out_tile=sampler.out_tile,
                         center=(0.0, 15.0), config=config.augment, rng=0, mirror_copies=True)
    star = sampler._tile_targets(tile.weights, tile.copies)
    top = sampler.out_tile // 2  # the output row at source row 0 (the window's centre)
    up = 6  # ray 6 of 8 points to -y
    assert tile.labels[top - 1, sampler.out_tile // 2] == 1  # the mirror image of the cell is in the tile
    assert star[top, sampler.out_tile // 2, 2 + up] == pytest.approx(0.5)  # ... but the ray stops at the border
    whole = star_targets(labels.astype(np.int32), 8)
    np.testing.assert_allclose(star[top:top + 6, top - 5:top + 5, 1:], whole[0:6, 10:20], atol=1e-6)
