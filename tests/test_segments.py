"""Segments of membrane maps (biounet.inference.segments): known answers on synthetic maps, topology, tile-size independence,
and the V_rand / V_info measures they are scored by, against scikit-image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import adapted_rand_error, variation_of_information

from biounet.evaluation.metrics import info_scores, rand_scores
from biounet.evaluation.validation import SEGMENT_GRID
from biounet.inference.segments import (
    SegmentParams,
    agglomerate,
    require_elf,
    segments_from_membranes,
    separate,
    thin_boundaries,
)

pytest.importorskip("elf.segmentation", reason="the segments extra (python-elf) is not installed")


def _four_cells(rng: np.random.Generator, gap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A 96x128 membrane map of four cells (a cross of 3-px membranes at p = 0.95, noise elsewhere) with a 5-px
    gap (p = 0.05) in the vertical membrane between the two upper cells; and the true cells (1..4, 0 on membranes)."""
    prob = np.clip(rng.normal(0.08, 0.04, (96, 128)), 0.0, 1.0)
    membrane = np.zeros((96, 128), bool)
    membrane[46:49, :] = True
    membrane[:, 62:65] = True
    prob[membrane] = np.clip(rng.normal(0.95, 0.02, membrane.sum()), 0.0, 1.0)
    if gap:
        prob[20:25, 62:65] = 0.05
    truth = ndimage.label(~membrane)[0]
    return prob, truth


def test_a_gap_in_a_membrane_does_not_merge_two_cells(rng):
    prob, truth = _four_cells(rng)
    components = ndimage.label(prob < 0.5)[0]
    assert components.max() == 3  # thresholding the map merges the two upper cells through the gap
    segments = segments_from_membranes(prob)
    assert segments.max() == 4
    assert rand_scores(segments, truth).error == pytest.approx(0.0, abs=0.02)  # only boundary pixels differ
    inside = truth > 0
    for cell in range(1, 5):  # each true cell lies in one segment, and each segment in one cell
        assert len(np.unique(segments[(truth == cell) & (segments > 0)])) == 1
    assert len({int(segments[truth == cell].max()) for cell in range(1, 5)}) == 4
    assert np.all(segments[inside & (segments == 0)] == 0)


def _fragments(shape: tuple[int, int], step: int) -> np.ndarray:
    """A grid of ``step``-px square fragments, 1..n, that cut across cells and membranes alike."""
    rows, cols = np.indices(shape)
    return (rows // step * (-(-shape[1] // step)) + cols // step + 1).astype(np.uint32)


def test_agglomeration_merges_fragments_that_no_membrane_separates(rng):
    prob, truth = _four_cells(rng, gap=False)
    fragments = _fragments(prob.shape, 16)  # 6 x 8 squares; the membranes at 46-48 and 62-64 cut through some
    merged = agglomerate(fragments, prob)
    assert len(np.unique(merged)) >= 4
    for cell in range(1, 5):  # the fragments of each cell's interior are one segment
        core = ndimage.binary_erosion(truth == cell, iterations=8)
        assert len(np.unique(merged[core])) == 1
    assert len({int(merged[ndimage.binary_erosion(truth == c, iterations=8)][0]) for c in range(1, 5)}) == 4


def test_bias_above_one_half_cuts_more(rng):
    prob, _ = _four_cells(rng)
    fragments = _fragments(prob.shape, 16)
    counts = [len(np.unique(agglomerate(fragments, prob, SegmentParams(bias=b)))) for b in (0.2, 0.5, 0.99)]
    assert counts[0] <= counts[1] <= counts[2] and counts[0] < counts[2]


def test_segments_never_touch_and_are_numbered_from_one(rng):
    prob, _ = _four_cells(rng)
    segments = segments_from_membranes(prob)
    assert segments.dtype == np.int32 and set(np.unique(segments)) == set(range(segments.max() + 1))
    for a, b in ((segments[:, :-1], segments[:, 1:]), (segments[:-1], segments[1:])):
        assert not np.any((a != b) & (a > 0) & (b > 0))  # different segments are never 4-adjacent


def test_thin_boundaries_mark_one_pixel_of_each_contact():
    partition = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 3, 3]])
    assert thin_boundaries(partition).astype(int).tolist() == [[0, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]


def test_separate_widens_boundaries_to_the_map_and_keeps_the_segments(rng):
    partition = np.ones((40, 60), np.int32)
    partition[:, 30:] = 2
    prob = np.full((40, 60), 0.1)
    prob[:, 27:34] = 0.9  # a 7-px membrane
    prob[10:12, 5:8] = 0.9  # a blob inside a cell: widening over it would open a hole, so it stays cell
    segments = separate(partition, prob, threshold=0.5)
    assert segments.max() == 2
    assert np.all(segments[:, 27:34] == 0) and np.all(segments[:, :27] == 1) and np.all(segments[:, 34:] == 2)
    thin = separate(partition, prob, threshold=0.95)  # nothing above 0.95: the one-pixel boundary stays
    assert (thin == 0).sum() == 40


@pytest.fixture(scope="module")
def membrane_model(tmp_path_factory) -> Path:
    """A small network trained on synthetic membranes (60 steps): its run chose segment settings."""
    from biounet.training.config import TrainConfig
    from biounet.training.train import fit

    run = tmp_path_factory.mktemp("membranes") / "run"
    fit(TrainConfig(data="synthetic:membranes,n=6,size=128x128,seed=0", base_channels=8, depth=2, tile=124,
                    batch_size=2, iterations=60, val_every=60, workers=0, lr=3e-3, warmup_steps=5, batch_norm=True),
        run)
    return run / "model.pt"


def test_the_run_stores_segment_settings_chosen_on_its_validation_images(membrane_model):
    from biounet.data.checkpoint import load_checkpoint

    payload = load_checkpoint(membrane_model)
    assert payload["task"] == "membranes"
    params = SegmentParams(**payload["segment_params"])
    assert params.sigma_seeds in SEGMENT_GRID["sigma_seeds"] and params.bias in SEGMENT_GRID["bias"]
    assert set(payload["segment_scores"]) == {"rand_error", "warping_error", "pixel_error"}
    assert isinstance(payload["tta"], bool)  # chosen by the validation Rand error of averaged vs. plain maps


def test_predict_averages_over_rotations_as_the_model_chose_unless_told(membrane_model, tmp_path):
    from biounet.data.checkpoint import load_checkpoint, save_checkpoint
    from biounet.inference.predict import load_predictor

    for chosen in (True, False):
        path = tmp_path / f"tta_{chosen}.pt"
        save_checkpoint(path, {**load_checkpoint(membrane_model), "tta": chosen})
        assert load_predictor(path, device="cpu").tta is chosen
        assert load_predictor(path, device="cpu", tta=not chosen).tta is (not chosen)


def test_segment_settings_trade_pixel_error_for_rand_error_up_to_the_papers(monkeypatch):
    from biounet.evaluation import validation

    rows = [(SegmentParams(membrane_threshold=0.5), {"rand_error": 0.05, "warping_error": 0.0, "pixel_error": 0.050}),
            (SegmentParams(membrane_threshold=0.9), {"rand_error": 0.03, "warping_error": 0.0, "pixel_error": 0.060}),
            (SegmentParams(membrane_threshold=0.95), {"rand_error": 0.02, "warping_error": 0.0, "pixel_error": 0.07})]
    monkeypatch.setattr(validation, "segment_table", lambda probs, samples: rows)
    assert validation.choose_segment_params([], [])[0].membrane_threshold == 0.9  # 0.07 > the paper's 0.0611
    wide = [(params, {**scores, "pixel_error": scores["pixel_error"] + 0.1}) for params, scores in rows]
    monkeypatch.setattr(validation, "segment_table", lambda probs, samples: wide)
    assert validation.choose_segment_params([], [])[0].membrane_threshold == 0.5  # none under it: within 5 %


def test_segments_do_not_depend_on_the_tile_size(membrane_model):
    from biounet.data.synthetic import make_sample
    from biounet.inference.predict import load_predictor, predict_image

    predictor = load_predictor(membrane_model, device="cpu", precision="fp32")
    image = make_sample("membranes", size=(300, 410), rng=5).image[..., 0]
    assert predictor.geometry(124).out_tile == 84
    maps = [predict_image(predictor, image, tile=tile)[1] for tile in (124, 188, None)]  # 20, 6 and 1 tiles
    segments = [segments_from_membranes(m) for m in maps]
    assert segments[0].max() > 20
    for other in segments[1:]:
        np.testing.assert_array_equal(other, segments[0])


def _write_isbi_like(folder: Path, n: int) -> tuple[list[Path], Path]:
    """Synthetic membrane images (TIFF) and their truth as ISBI labels (255 = cell, 0 = membrane)."""
    from biounet.data.images import write_tiff
    from biounet.data.synthetic import make_sample

    (folder / "images").mkdir(parents=True)
    (folder / "truth").mkdir()
    images = []
    for index in range(n):
        sample = make_sample("membranes", size=(160, 200), rng=100 + index)
        images.append(folder / "images" / f"slice{index}.tif")
        write_tiff(images[-1], sample.image[..., 0])
        write_tiff(folder / "truth" / f"slice{index}.tif", np.where(sample.classes == 0, 255, 0).astype(np.uint8),
                   labels=True)
    return images, folder / "truth"


def test_predict_instances_of_a_membrane_model_writes_its_segments_and_evaluate_scores_them(
        membrane_model, tmp_path, capsys):
    import json

    import tifffile

    from biounet.cli import main
    from biounet.data.checkpoint import load_checkpoint

    images, truth_dir = _write_isbi_like(tmp_path, 2)
    out = tmp_path / "out"
    assert main(["predict", str(membrane_model), *map(str, images), "--out", str(out), "--instances",
                 "--save-probabilities", "-q"]) == 0
    params = SegmentParams(**load_checkpoint(membrane_model)["segment_params"])
    for image in images:
        probs = tifffile.imread(out / f"{image.stem}_prob.tif")
        instances = tifffile.imread(out / f"{image.stem}_instances.tif")
        np.testing.assert_array_equal(instances, segments_from_membranes(probs[1], params))  # the seam
        np.testing.assert_array_equal(tifffile.imread(out / f"{image.stem}.tif"), instances == 0)
        truth = tifffile.imread(truth_dir / f"{image.stem}.tif") > 0
        # not the membrane class's components: about as many segments as true cells
        assert 0.5 * ndimage.label(truth)[1] <= instances.max() <= 2 * ndimage.label(truth)[1]
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(out), "--truth", str(truth_dir), "--kind", "isbi2012", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    row = result["images"][0]
    instances = tifffile.imread(out / "slice0_instances.tif").astype(np.int64)
    true_labels = ndimage.label(tifffile.imread(truth_dir / "slice0.tif") > 0)[0]
    assert row["segments_rand_error"] == pytest.approx(rand_scores(instances, true_labels).error)
    assert row["segments_v_info"] == pytest.approx(info_scores(instances, true_labels).score)
    assert row["v_rand"] == pytest.approx(1 - row["rand_error"])
    assert {"segments_warping_error", "segments_pixel_error", "v_info"} <= set(result["mean"])


def test_segments_are_refused_clearly_where_they_cannot_be_made(membrane_model, tmp_path, capsys, monkeypatch):
    import sys

    from biounet.cli import main
    from biounet.data.checkpoint import load_checkpoint, save_checkpoint

    images, _ = _write_isbi_like(tmp_path, 1)
    classes_model = tmp_path / "classes.pt"
    save_checkpoint(classes_model, {**load_checkpoint(membrane_model), "task": "classes",
                                    "class_names": ["background", "nucleus"]})
    out = tmp_path / "out"
    cases = [
        (["predict", str(classes_model), str(images[0]), "--out", str(out), "--instances"],
         "predicts the classes background, nucleus, not cells or membranes"),
        (["predict", str(membrane_model), str(images[0]), "--out", str(out), "--instances", "--watershed"],
         "leave --watershed out"),
        (["predict", str(membrane_model), str(images[0]), "--out", str(out), "--instances", "--dask-workers", "1"],
         "predict this model without --dask"),
        (["predict", str(membrane_model), str(images[0]), "--out", str(tmp_path / "x.zarr"), "--instances", "-q"],
         "does not yet write the segments of a membrane model"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    monkeypatch.setitem(sys.modules, "elf.segmentation", None)  # python-elf not installed
    assert main(["predict", str(membrane_model), str(images[0]), "--out", str(out), "--instances"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'biounet[segments]'" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_segment_params_name_the_bad_value():
    with pytest.raises(ValueError, match="bias must be in"):
        SegmentParams(bias=1.0)
    with pytest.raises(ValueError, match="membrane_threshold"):
        SegmentParams(membrane_threshold=0.0)
    with pytest.raises(ValueError, match="2-D"):
        segments_from_membranes(np.zeros((2, 8, 8)))
    with pytest.raises(TypeError, match="float"):
        segments_from_membranes(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        segments_from_membranes(np.full((8, 8), np.nan))


def test_missing_elf_names_the_pip_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "elf.segmentation", None)  # what an import of a missing package raises
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'biounet\[segments\]'"):
        require_elf()


# --- V_rand and V_info ------------------------------------------------------------------------------------------


def test_v_info_equals_scikit_image_conditional_entropies(rng):
    true = rng.integers(0, 6, (64, 64))  # 0 is ignored
    pred = ndimage.label(rng.random((64, 64)) > 0.3)[0] + 1  # no predicted boundary pixel
    scores = info_scores(pred, true)
    false_split, false_merge = variation_of_information(true, pred, ignore_labels=[0])
    assert (scores.false_split, scores.false_merge) == pytest.approx((false_split, false_merge), rel=1e-9)


def test_v_info_direction_is_pinned():
    true = np.array([[1, 1, 2, 2]] * 2)
    split = info_scores(np.array([[1, 3, 2, 2]] * 2), true)  # true cell 1 cut in two: a false split
    assert split.merge == 1.0 and split.split < 1.0 and split.false_merge == 0.0
    merged = info_scores(np.ones((2, 4), np.int64), true)  # both cells in one segment: a false merge
    assert merged.split == 1.0 and merged.merge == 0.0


def test_v_rand_agrees_with_scikit_image_to_the_pair_counting_difference(rng):
    true = ndimage.label(rng.random((128, 128)) > 0.35)[0]
    pred = ndimage.label(ndimage.binary_opening(true > 0))[0] + 1  # every true-foreground pixel in a segment
    ours = rand_scores(pred, true)
    theirs, _, _ = adapted_rand_error(true, pred, ignore_labels=(0,))
    # scikit-image counts pairs, sum n^2 - n; we square counts (Arganda-Carreras et al. 2015): the two F-scores
    # differ by at most about 2 n / sum n_ij^2 (n counted pixels).
    kept = pred[true > 0]
    joint = np.unique(true[true > 0] * (pred.max() + 1) + kept, return_counts=True)[1].astype(float)
    assert ours.error == pytest.approx(theirs, abs=2 * kept.size / (joint @ joint))
