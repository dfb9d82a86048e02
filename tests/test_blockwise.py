"""Blockwise prediction on Dask (biounet.inference.blockwise): equal to the single-process prediction, restartable, and
instances merged across block faces."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

from conftest import assert_labels_agree_where_decided

from biounet.cli import main
from biounet.data.synthetic import make_sample
from biounet.inference.blockwise import (
    block_side,
    instances_blockwise,
    open_client,
    plan_blocks,
    predict_blockwise,
)
from biounet.inference.instances import InstanceParams, instances_from_labels
from biounet.inference.predict import PredictOptions, load_predictor, predict_file
from biounet.inference.tiling import TileGeometry

TILE = 132  # depth 2: 132 -> 92, step 92
BLOCK = 184  # two steps: a 512-px image is 3 x 3 blocks


@pytest.fixture(scope="module")
def client():
    with open_client(workers=2, processes=False) as client:
        yield client


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    assert main(["init", "--out", str(path), "--base-channels", "4", "--depth", "2", "--seed", "3"]) == 0
    return path


def _zarr_image(path: Path, size: int, chunks: int = 128) -> Path:
    """Synthetic cells, ``size`` x ``size`` uint16 (a 512-px sample repeated beyond 512 px)."""
    image = make_sample("cells", size=(min(size, 512),) * 2, rng=7).image[..., 0]
    image = np.tile(image, (-(-size // image.shape[0]),) * 2)[:size, :size]
    array = zarr.open_array(str(path), mode="w", shape=image.shape, chunks=(chunks, chunks), dtype=np.uint16)
    array[:] = np.round((image - image.min()) / (image.max() - image.min()) * 4000).astype(np.uint16)
    return path


def _single_process(model_path: Path, image: Path, out: Path, tile: int) -> tuple[np.ndarray, np.ndarray]:
    predictor = load_predictor(model_path, device="cpu", precision="fp32")
    result = predict_file(predictor, image, out, PredictOptions(tile=tile, save_probabilities=True))
    return tifffile.imread(result.labels_path), tifffile.imread(result.probabilities_path)


def _check_equal(result, labels: np.ndarray, probs: np.ndarray) -> None:
    """The blockwise outputs have the single-process layout ((H, W) labels, (K, H, W) probabilities for one plane)
    and values."""
    # worker processes run other thread counts, whose oneDNN sums may differ from this process's in the last bit
    got_probs = zarr.open_array(str(result.probabilities_path), mode="r")[:]
    got_labels = zarr.open_array(str(result.labels_path), mode="r")[:]
    assert (got_labels.shape, got_probs.shape) == (labels.shape, probs.shape)
    np.testing.assert_allclose(got_probs, probs, atol=1e-5)
    assert_labels_agree_where_decided(got_labels, labels, probs, 1e-5)


class Interrupted(Exception):
    """Raised by :func:`_interrupt_when_done` to stop a run like a Ctrl-C would."""


def _interrupt_when_done(done: int, total: int) -> None:
    """A ``progress`` that stops the run once every block is predicted, before its outputs are made final."""
    if done == total:
        raise Interrupted(f"{done} of {total} blocks")


def test_block_side_is_a_multiple_of_the_tile_step():
    geometry = TileGeometry(in_tile=132, out_tile=92, margin=20, align=4)
    assert block_side(geometry) == 92 * 11 and block_side(geometry, 184) == 184
    with pytest.raises(ValueError, match="multiple of the tile step 92 .* nearest: 92 or 184"):
        block_side(geometry, 100)


def test_plan_blocks_covers_every_plane():
    blocks = plan_blocks(2, (5, 3), 4)
    assert [(b.plane, b.number, b.rows, b.cols) for b in blocks] == [
        (0, 0, (0, 4), (0, 3)), (0, 1, (4, 5), (0, 3)), (1, 2, (0, 4), (0, 3)), (1, 3, (4, 5), (0, 3))]


@pytest.mark.numerics
def test_blockwise_equals_single_process(client, model_path, tmp_path):
    image = _zarr_image(tmp_path / "cells.zarr", 512)
    labels, probs = _single_process(model_path, image, tmp_path / "single", TILE)
    assert 0 < labels.mean() < 1  # both classes present: the comparison means something
    params = InstanceParams(min_size_px=4)  # an untrained network's foreground: ~30,000 specks of 1-12 px
    result = predict_blockwise(model_path, image, tmp_path / "blocks", client,
                               PredictOptions(tile=TILE, save_probabilities=True), device="cpu", precision="fp32",
                               block_size=BLOCK, instances=params, target="paper")
    assert (result.in_tile, result.block, len(result.computed), result.skipped) == (TILE, BLOCK, 9, [])
    _check_equal(result, labels, probs)
    expected = instances_from_labels(labels, target="paper", params=params)
    got = zarr.open_array(str(result.instances_path), mode="r")[:]
    assert expected.max() > 1
    np.testing.assert_array_equal(got, expected)


@pytest.mark.numerics
def test_restart_predicts_only_unfinished_blocks(client, model_path, tmp_path):
    image = _zarr_image(tmp_path / "img.zarr", 300)
    out = tmp_path / "out"
    options = PredictOptions(tile=TILE, save_probabilities=True)
    labels, probs = _single_process(model_path, image, tmp_path / "single", TILE)
    with pytest.raises(Interrupted):
        predict_blockwise(model_path, image, out, client, options, device="cpu", precision="fp32",
                          block_size=BLOCK, progress=_interrupt_when_done)
    done = out / "img.blocks" / "done"
    assert sorted(p.stem for p in done.iterdir()) == ["z0_y0_x0", "z0_y0_x184", "z0_y184_x0", "z0_y184_x184"]
    # a worker killed during these two blocks: chunks half-written, no marker
    for name, rows, cols in (("z0_y0_x184", slice(0, 184), slice(184, 300)),
                             ("z0_y184_x0", slice(184, 300), slice(0, 184))):
        (done / f"{name}.npz").unlink()
        zarr.open_array(str(out / "img.blocks" / "img.zarr"), mode="r+")[rows, cols] = 7
    time.sleep(0.01)
    second = predict_blockwise(model_path, image, out, client, options, device="cpu", precision="fp32",
                               block_size=BLOCK)
    assert sorted(second.computed) == ["z0_y0_x184", "z0_y184_x0"]
    assert sorted(second.skipped) == ["z0_y0_x0", "z0_y184_x184"]
    assert not done.exists()  # the progress folder goes once the run is complete
    _check_equal(second, labels, probs)


def test_restart_with_other_settings_is_refused(client, model_path, tmp_path):
    image = _zarr_image(tmp_path / "img.zarr", 200)
    with pytest.raises(Interrupted):
        predict_blockwise(model_path, image, tmp_path / "out", client, PredictOptions(tile=TILE), device="cpu",
                          precision="fp32", block_size=BLOCK, progress=_interrupt_when_done)
    with pytest.raises(ValueError, match=r"other settings \(block, in_tile\)"):
        predict_blockwise(model_path, image, tmp_path / "out", client, PredictOptions(tile=100), device="cpu",
                          precision="fp32", block_size=120)


def test_ome_zarr_input_is_read_at_full_resolution(client, model_path, tmp_path):
    plain = _zarr_image(tmp_path / "plain.zarr", 200)
    data = zarr.open_array(str(plain), mode="r")[:]
    group = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="w")
    full = group.create_array("0", shape=(1, 1, 1, 200, 200), chunks=(1, 1, 1, 64, 64), dtype=np.uint16)
    full[:] = data[None, None, None]
    group.create_array("1", shape=(1, 1, 1, 100, 100), chunks=(1, 1, 1, 64, 64), dtype=np.uint16)
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": a} for a in "tczyx"],
                                   "datasets": [{"path": "0"}, {"path": "1"}]}]
    options = PredictOptions(tile=TILE)
    ome = predict_blockwise(model_path, tmp_path / "img.ome.zarr", tmp_path / "o", client, options, device="cpu",
                            precision="fp32", block_size=BLOCK)
    ref = predict_blockwise(model_path, plain, tmp_path / "o", client, options, device="cpu", precision="fp32",
                            block_size=BLOCK)
    assert ome.labels_path.name == "img.zarr" and ome.shape == (1, 200, 200)
    np.testing.assert_array_equal(zarr.open_array(str(ome.labels_path), mode="r")[:],
                                  zarr.open_array(str(ref.labels_path), mode="r")[:])


def test_non_zarr_input_is_refused(client, model_path, tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((40, 40), np.uint8))
    with pytest.raises(ValueError, match="blockwise prediction reads zarr arrays"):
        predict_blockwise(model_path, tmp_path / "a.tif", tmp_path / "o", client)


def test_watershed_instances_are_refused(client, model_path, tmp_path):
    image = _zarr_image(tmp_path / "img.zarr", 100)
    with pytest.raises(ValueError, match="do not support --watershed"):
        predict_blockwise(model_path, image, tmp_path / "o", client, instances=InstanceParams(watershed=True))


def _labels_zarr(path: Path, labels: np.ndarray, block: int) -> Path:
    array = zarr.open_array(str(path), mode="w", shape=(1, *labels.shape), chunks=(1, block, block), dtype=np.uint8)
    array[0] = labels
    return path


def test_cells_cut_by_block_faces_are_merged(client, tmp_path):
    labels = np.zeros((64, 64), np.uint8)
    rows, cols = np.ogrid[:64, :64]
    labels[(rows - 32) ** 2 + (cols - 32) ** 2 <= 36] = 1  # a disk across the corner of four blocks
    labels[2:40, 44:48] = labels[2:40, 56:60] = labels[36:40, 44:60] = 1  # a U: two arms joined in the next block
    labels[5:8, 5:8] = 1  # a 9-px speck inside one block
    labels[44:51, 2:8] = 1
    labels[47, 2:8] = 0  # two 18-px bars separated by a one-pixel gap
    path = _labels_zarr(tmp_path / "labels.zarr", labels, 32)
    params = InstanceParams(min_size_px=12)
    got = zarr.open_array(str(instances_blockwise(client, path, tmp_path / "inst.zarr", params=params)))[0]
    expected = instances_from_labels(labels, target="paper", params=params)
    np.testing.assert_array_equal(got, expected)
    assert len(np.unique(got[(rows - 32) ** 2 + (cols - 32) ** 2 <= 36])) == 1  # the disk is one cell
    assert got[5, 5] == 0 and got[3, 45] == got[3, 57] > 0  # speck dropped; the U's arms are one cell


def test_quarters_below_the_minimum_size_make_a_kept_cell(client, tmp_path):
    labels = np.zeros((32, 32), np.uint8)
    labels[13:19, 13:19] = 1  # 36 px, 9 in each of four blocks
    path = _labels_zarr(tmp_path / "labels.zarr", labels, 16)
    got = zarr.open_array(str(instances_blockwise(client, path, tmp_path / "inst.zarr",
                                                  params=InstanceParams(min_size_px=16))))[0]
    assert set(np.unique(got)) == {0, 1} and (got == 1).sum() == 36


def test_cli_predict_dask_writes_zarr(model_path, tmp_path, capsys):
    image = _zarr_image(tmp_path / "cli.zarr", 200)
    assert main(["predict", str(model_path), str(image), "--out", str(tmp_path / "o"), "--dask-workers", "1",
                 "--precision", "fp32", "--tile", str(TILE)]) == 0
    assert "blocks of" in capsys.readouterr().out
    assert zarr.open_array(str(tmp_path / "o" / "cli.zarr"), mode="r").shape == (200, 200)  # as predict_file's
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["cli.zarr"]  # no progress folder left


def test_an_interrupted_run_leaves_no_output_that_looks_complete(client, model_path, tmp_path):
    image = _zarr_image(tmp_path / "img.zarr", 200)
    out = tmp_path / "out"
    options = PredictOptions(tile=TILE, save_probabilities=True)
    with pytest.raises(Interrupted):
        predict_blockwise(model_path, image, out, client, options, device="cpu", precision="fp32",
                          block_size=BLOCK, instances=InstanceParams(min_size_px=4), progress=_interrupt_when_done)
    assert sorted(p.name for p in out.iterdir()) == ["img.blocks"]  # no img.zarr, img_prob.zarr, img_instances.zarr
    resumed = predict_blockwise(model_path, image, out, client, options, device="cpu", precision="fp32",
                                block_size=BLOCK, instances=InstanceParams(min_size_px=4))
    assert resumed.computed == [] and len(resumed.skipped) == 4
    assert sorted(p.name for p in out.iterdir()) == ["img.zarr", "img_instances.zarr", "img_prob.zarr"]
    assert zarr.open_array(str(resumed.instances_path), mode="r").shape == (200, 200)


def test_a_rerun_replaces_the_outputs_it_does_not_write_again(client, model_path, tmp_path):
    image = _zarr_image(tmp_path / "img.zarr", 100)
    out = tmp_path / "out"
    predict_blockwise(model_path, image, out, client, PredictOptions(tile=TILE, save_probabilities=True),
                      device="cpu", precision="fp32")
    predict_blockwise(model_path, image, out, client, PredictOptions(tile=TILE), device="cpu", precision="fp32")
    assert sorted(p.name for p in out.iterdir()) == ["img.zarr"]  # the earlier img_prob.zarr is not this run's


@pytest.mark.numerics
@pytest.mark.slow
def test_blockwise_4096_equals_single_process(client, model_path, tmp_path):
    image = _zarr_image(tmp_path / "big.zarr", 4096, chunks=512)
    tile = 532  # depth 2: 532 -> 492, step 492; blocks of 984 px: 5 x 5
    labels, probs = _single_process(model_path, image, tmp_path / "single", tile)
    result = predict_blockwise(model_path, image, tmp_path / "blocks", client,
                               PredictOptions(tile=tile, save_probabilities=True), device="cpu", precision="fp32")
    assert (result.block, len(result.computed)) == (984, 25)
    _check_equal(result, labels, probs)


@pytest.mark.numerics
@pytest.mark.slow
def test_a_worker_process_killed_mid_run_changes_nothing(model_path, tmp_path):
    """Two worker processes; one is killed (SIGKILL) once the first blocks are done. Its blocks are rerun
    elsewhere (the nanny restarts it), and the output still equals the single-process prediction."""
    import os
    import signal
    import threading

    image = _zarr_image(tmp_path / "cells.zarr", 1104)  # 6 x 6 blocks of 184 px
    labels, probs = _single_process(model_path, image, tmp_path / "single", TILE)
    done = tmp_path / "blocks" / "cells.blocks" / "done"
    with open_client(workers=2, processes=True) as client:
        outcome: dict[str, object] = {}

        def run() -> None:
            outcome["result"] = predict_blockwise(model_path, image, tmp_path / "blocks", client,
                                                  PredictOptions(tile=TILE, save_probabilities=True), device="cpu",
                                                  precision="fp32", block_size=BLOCK)

        worker = threading.Thread(target=run)
        worker.start()
        deadline = time.monotonic() + 120
        while not (done.exists() and any(done.iterdir())) and time.monotonic() < deadline:
            time.sleep(0.01)
        finished_at_kill = len(list(done.iterdir()))
        victim = sorted(client.run(os.getpid).values())[0]
        os.kill(victim, signal.SIGKILL)
        worker.join(timeout=300)
    assert finished_at_kill < 36  # the kill came while blocks were still to do
    result = outcome["result"]
    assert len(result.computed) == 36 and not done.exists()  # every block done, the progress folder removed
    _check_equal(result, labels, probs)
