from __future__ import annotations

import numpy as np
import pytest
import torch

from biounet.core.model import ModelConfig, UNet, nearest_valid_sizes
from biounet.inference.predict import TorchPredictor, check_in_tile, predict_image
from biounet.inference.tiling import (
    TileGeometry,
    mirror_indices,
    padded_extent,
    predict_tiled,
    read_mirrored,
    tile_starts,
)
from biounet.inference.tta import dihedral


def whole_image_pass(model: UNet, image: np.ndarray, geometry: TileGeometry) -> np.ndarray:
    """Reference: one network pass over the whole mirror-padded image (PAPER.md section 2)."""
    height, width = image.shape[:2]
    depth, m = model.config.depth, geometry.margin
    ext_h = nearest_valid_sizes(padded_extent(height, geometry), depth)[1]
    ext_w = nearest_valid_sizes(padded_extent(width, geometry), depth)[1]
    padded = image[np.ix_(mirror_indices(-m, ext_h - m, height), mirror_indices(-m, ext_w - m, width))]
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1)[None])))
    return torch.softmax(logits, 1)[0].numpy()[:, :height, :width]


@pytest.fixture(scope="module")
def small_models():
    torch.manual_seed(0)
    return {
        1: UNet(ModelConfig(depth=3, base_channels=4)),
        3: UNet(ModelConfig(depth=3, base_channels=4, in_channels=3, num_classes=3)),
    }


@pytest.mark.numerics
@pytest.mark.slow
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("shape", [(37, 53), (1000, 777)])
def test_tiled_equals_whole_image_pass(small_models, rng, channels, shape):
    model = small_models[channels]
    predictor = TorchPredictor(model)
    image = rng.random((*shape, channels)).astype(np.float32)
    for tile in (132, 260):  # output tiles 44 and 172 px: many tiles, and fewer larger ones
        probs = predict_image(predictor, image, tile=tile, batch_size=4)
        reference = whole_image_pass(model, image, predictor.geometry(tile))
        assert probs.shape == (model.config.num_classes, *shape)
        np.testing.assert_allclose(probs, reference, atol=1e-5)
        np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)


@pytest.mark.numerics
def test_tile_larger_than_image(small_models, rng):
    model = small_models[1]
    predictor = TorchPredictor(model)
    image = rng.random((9, 30, 1)).astype(np.float32)
    probs = predict_image(predictor, image, tile=300)  # output tile 212 px > image
    np.testing.assert_allclose(probs, whole_image_pass(model, image, predictor.geometry(300)), atol=1e-5)
    np.testing.assert_allclose(predict_image(predictor, image, tile=100), probs, atol=1e-5)


def test_auto_tile_covers_small_image_in_one_tile(small_models, rng):
    predictor = TorchPredictor(small_models[1])
    from biounet.inference.predict import choose_in_tile

    tile = choose_in_tile(predictor, (37, 53))
    assert predictor.geometry(tile).out_tile >= 53
    assert predictor.geometry(tile - 8).out_tile < 53


def test_crop_model_reproduces_image_exactly(rng):
    """A 'network' that only removes the margin must give back the image, whatever the tiling."""
    image = rng.random((37, 53, 1)).astype(np.float32)
    geometry = TileGeometry(in_tile=20, out_tile=12, margin=4, align=4)
    out = np.zeros((1, 37, 53), np.float32)
    predict_tiled(lambda rows, cols: image[rows, cols], (37, 53),
                  lambda batch: batch[:, :, 4:16, 4:16], geometry, probabilities=out, batch_size=5)
    np.testing.assert_array_equal(out[0], image[..., 0])


def test_tile_starts_keep_pooling_phase():
    assert tile_starts(1000, 388, 384) == [0, 384, 768]
    assert all(s % 16 == 0 for s in tile_starts(5000, 388, 384))
    assert tile_starts(388, 388, 384) == [0]
    assert tile_starts(389, 388, 384) == [0, 384]
    with pytest.raises(ValueError, match="step"):
        tile_starts(100, 10, 11)


def test_mirror_indices_match_numpy_symmetric_pad():
    data = np.arange(5)
    for before, after in [(3, 2), (7, 12), (0, 0), (11, 1)]:
        expected = np.pad(data, (before, after), mode="symmetric")
        np.testing.assert_array_equal(data[mirror_indices(-before, 5 + after, 5)], expected)


def test_read_mirrored_reads_only_bounding_box():
    image = np.arange(100, dtype=np.float32).reshape(10, 10, 1)
    calls = []

    def read(rows, cols):
        calls.append((rows, cols))
        return image[rows, cols]

    block = read_mirrored(read, (10, 10), -2, 5, 4)
    np.testing.assert_array_equal(block[..., 0], np.pad(image[..., 0], 2, mode="symmetric")[0:4, 7:11])
    assert calls == [(slice(0, 2), slice(5, 9))]


def test_geometry_validation():
    with pytest.raises(ValueError, match="in_tile"):
        TileGeometry(in_tile=20, out_tile=10, margin=4, align=2)


def test_invalid_tile_names_nearest_valid(small_models):
    predictor = TorchPredictor(small_models[1])
    with pytest.raises(ValueError, match="nearest valid tile sizes: 100 or 108"):
        check_in_tile(predictor, 105)
    with pytest.raises(ValueError, match="smallest valid tile size is 100"):
        check_in_tile(predictor, 92)


@pytest.mark.numerics
def test_same_padded_model_tiles_with_overlap(rng):
    torch.manual_seed(0)
    model = UNet(ModelConfig(depth=2, base_channels=4, padding="same")).eval()
    predictor = TorchPredictor(model)
    image = rng.random((96, 96, 1)).astype(np.float32)
    with torch.no_grad():
        whole = torch.softmax(model(torch.from_numpy(image.transpose(2, 0, 1))[None]), 1)[0].numpy()
    inner = (slice(None), slice(24, -24), slice(24, -24))  # beyond the zero padding's reach in the whole pass
    # one tile that covers the image (plus the discarded eighth): its interior is the whole-image pass
    np.testing.assert_allclose(predict_image(predictor, image, tile=128)[inner], whole[inner], atol=1e-5)
    # overlapping tiles: not seamless (zero padding inside each tile), but close to the whole pass
    tiled = predict_image(predictor, image, tile=48)
    assert tiled.shape == (2, 96, 96)
    np.testing.assert_allclose(tiled.sum(0), 1.0, atol=1e-5)
    error = np.abs(tiled[inner] - whole[inner]).mean()  # 0.032 here
    shifted = np.abs(np.roll(tiled, 1, axis=2)[inner] - whole[inner]).mean()  # a misplaced tile is worse
    assert error < 0.05 and error < shifted


def test_tta_of_equivariant_model_changes_nothing(rng):
    """A pointwise (1x1) network is rotation/flip equivariant, so TTA must return the same probabilities."""
    torch.manual_seed(0)
    model = UNet(ModelConfig(depth=1, base_channels=2))
    predictor = TorchPredictor(model, tta=False)
    image = rng.random((20, 30, 1)).astype(np.float32)
    batch = np.ascontiguousarray(image[:18, :18].transpose(2, 0, 1)[None])

    class Pointwise(torch.nn.Module):
        config = model.config

        def forward(self, x):
            return torch.cat([x[..., 4:-4, 4:-4] * 3.0, -x[..., 4:-4, 4:-4]], dim=1)

    predictor.model = Pointwise()
    plain = predictor(batch)
    predictor.tta = True
    np.testing.assert_allclose(predictor(batch), plain, atol=1e-6)


@pytest.mark.numerics
@pytest.mark.slow
def test_compiled_predictor_matches_eager(rng):
    """torch.compile (--compile) changes how the network runs, not what it computes (~20 s to compile)."""
    torch.manual_seed(0)
    model = UNet(ModelConfig(depth=1, base_channels=2))
    image = rng.random((30, 41, 1)).astype(np.float32)
    eager = predict_image(TorchPredictor(model), image, tile=34)
    compiled = predict_image(TorchPredictor(model, compile=True), image, tile=34)
    np.testing.assert_allclose(compiled, eager, atol=1e-5)


def test_predictor_rejects_batch_with_wrong_channels():
    predictor = TorchPredictor(UNet(ModelConfig(depth=2, base_channels=4)))
    with pytest.raises(ValueError, match=r"batch must be \(N, 1, H, W\)"):
        predictor(np.zeros((1, 2, 44, 44), dtype=np.float32))


def test_dihedral_inverse_undoes_each_transform():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    seen = {tuple(dihedral(x, k).flatten().tolist()) for k in range(8)}
    assert len(seen) == 8  # the 8 elements of the dihedral group are distinct on a generic tile
    for k in range(8):
        torch.testing.assert_close(dihedral(dihedral(x, k), k, inverse=True), x)
