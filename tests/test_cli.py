"""The biounet command line: the public contract (names, flags, output files) and bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from biounet.cli import main
from biounet.data.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "m.pt"
    assert main(["init", "--out", str(path), "--base-channels", "4", "--depth", "3", "--seed", "1"]) == 0
    return path


@pytest.fixture(scope="module")
def rgb_model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "rgb.pt"
    assert main(["init", "--out", str(path), "--base-channels", "4", "--depth", "2", "--in-channels", "3",
                 "--num-classes", "3"]) == 0
    return path


def _png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def run_error(capsys, argv: list[str]) -> str:
    """Run the CLI expecting exit code 2 and a one-line error; return that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith(f"biounet {argv[0]}: error:")
    return err[-1]


@pytest.mark.numerics
def test_predict_writes_labels_and_probabilities(model_path, tmp_path, rng):
    image = _png(tmp_path / "cells.png", (rng.random((70, 90)) * 255).astype(np.uint8))
    out = tmp_path / "out"
    assert main(["predict", str(model_path), str(image), "--out", str(out), "--save-probabilities", "-q"]) == 0
    labels = tifffile.imread(out / "cells.tif")
    probs = tifffile.imread(out / "cells_prob.tif")
    assert labels.shape == (70, 90) and labels.dtype == np.uint8
    assert probs.shape == (2, 70, 90) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(labels, probs.argmax(0))
    assert sorted(p.name for p in out.iterdir()) == ["cells.tif", "cells_prob.tif"]  # no temporary left


@pytest.mark.numerics
def test_two_tile_sizes_give_same_probabilities(model_path, tmp_path, rng):
    image = _png(tmp_path / "a.png", (rng.random((150, 130)) * 255).astype(np.uint8))
    results = []
    for tile in ("132", "244"):
        out = tmp_path / tile
        assert main(["predict", str(model_path), str(image), "--out", str(out), "--tile", tile,
                     "--save-probabilities", "-q", "--batch-size", "3", "--precision", "fp32"]) == 0
        results.append(tifffile.imread(out / "a_prob.tif"))
    np.testing.assert_allclose(results[0], results[1], atol=1e-5)


def test_multipage_stack_predicts_every_page(model_path, tmp_path, rng):
    stack = (rng.random((3, 40, 50)) * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    out = tmp_path / "out"
    assert main(["predict", str(model_path), str(tmp_path / "stack.tif"), "--out", str(out),
                 "--save-probabilities", "-q"]) == 0
    assert tifffile.imread(out / "stack.tif").shape == (3, 40, 50)
    assert tifffile.imread(out / "stack_prob.tif").shape == (3, 2, 40, 50)


def test_rgb_input_multiclass(rgb_model_path, tmp_path, rng):
    image = _png(tmp_path / "rgb.png", (rng.random((33, 47, 3)) * 255).astype(np.uint8))
    assert main(["predict", str(rgb_model_path), str(image), "--out", str(tmp_path), "--save-probabilities",
                 "-q"]) == 0
    assert tifffile.imread(tmp_path / "rgb_prob.tif").shape == (3, 33, 47)


def test_float_tiff_input(model_path, tmp_path, rng):
    tifffile.imwrite(tmp_path / "f.tif", rng.random((30, 40)).astype(np.float32))
    assert main(["predict", str(model_path), str(tmp_path / "f.tif"), "--out", str(tmp_path / "o"), "-q"]) == 0


def test_init_info(model_path, capsys):
    assert main(["info", str(model_path)]) == 0
    out = capsys.readouterr().out
    assert "context margin: 44 px" in out and "100 -> 12" in out


# --- bad input: one line, exit code 2, no partial output ----------------------------------------------------------


def test_missing_input(model_path, tmp_path, capsys):
    line = run_error(capsys, ["predict", str(model_path), str(tmp_path / "nope.png"), "--out", str(tmp_path / "o")])
    assert "nope.png: no such file" in line
    assert not (tmp_path / "o").exists()


def test_missing_model(tmp_path, capsys):
    line = run_error(capsys, ["info", str(tmp_path / "nope.pt")])
    assert "nope.pt: no such checkpoint file" in line


def test_not_an_image(model_path, tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    line = run_error(capsys, ["predict", str(model_path), str(bad), "--out", str(tmp_path / "o")])
    assert "notes.png: not a readable image" in line


def test_corrupt_tiff(model_path, tmp_path, capsys):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage")
    line = run_error(capsys, ["predict", str(model_path), str(bad), "--out", str(tmp_path / "o")])
    assert "bad.tif: not a readable TIFF" in line


def test_empty_file(model_path, tmp_path, capsys):
    (tmp_path / "empty.tif").write_bytes(b"")
    line = run_error(capsys, ["predict", str(model_path), str(tmp_path / "empty.tif"), "--out", str(tmp_path)])
    assert "empty.tif: file is empty" in line


def test_one_pixel_image(model_path, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "px.tif", np.zeros((1, 1), np.uint8))
    line = run_error(capsys, ["predict", str(model_path), str(tmp_path / "px.tif"), "--out", str(tmp_path / "o")])
    assert "px.tif: image of 1x1 pixels is too small" in line


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_nan_inf_pixels(model_path, tmp_path, capsys, bad_value):
    image = np.ones((30, 30), np.float32)
    image[3, 4] = bad_value
    tifffile.imwrite(tmp_path / "nan.tif", image)
    out = tmp_path / "o"
    line = run_error(capsys, ["predict", str(model_path), str(tmp_path / "nan.tif"), "--out", str(out)])
    assert "nan.tif" in line and "NaN or Inf" in line
    assert not list(out.glob("*.tif"))


@pytest.mark.parametrize("dtype", [bool, np.complex64])
def test_unsupported_dtypes(model_path, tmp_path, capsys, dtype):
    np.save(tmp_path / "x.npy", np.zeros((20, 20), dtype=dtype))
    line = run_error(capsys, ["predict", str(model_path), str(tmp_path / "x.npy"), "--out", str(tmp_path / "o")])
    assert "x.npy: unsupported pixel type" in line


def test_wrong_channel_count(model_path, tmp_path, capsys, rng):
    image = _png(tmp_path / "rgb.png", (rng.random((20, 20, 3)) * 255).astype(np.uint8))
    line = run_error(capsys, ["predict", str(model_path), str(image), "--out", str(tmp_path / "o")])
    assert "rgb.png: image has 3 channel(s), the model takes 1" in line


def test_invalid_tile_names_nearest(model_path, tmp_path, capsys, rng):
    image = _png(tmp_path / "a.png", (rng.random((20, 20)) * 255).astype(np.uint8))
    line = run_error(capsys, ["predict", str(model_path), str(image), "--out", str(tmp_path / "o"), "--tile", "130"])
    assert "tile size 130 is not valid" in line and "124 or 132" in line


def test_not_a_checkpoint(tmp_path, capsys, rng):
    fake = tmp_path / "fake.pt"
    fake.write_bytes(rng.bytes(100))
    image = _png(tmp_path / "a.png", (rng.random((20, 20)) * 255).astype(np.uint8))
    line = run_error(capsys, ["predict", str(fake), str(image), "--out", str(tmp_path / "o")])
    assert "fake.pt: not a biounet checkpoint" in line
    torch.save({"weights": torch.zeros(2)}, fake)
    assert "fake.pt: not a biounet checkpoint" in run_error(capsys, ["info", str(fake)])
    real = tmp_path / "real.pt"
    assert main(["init", "--out", str(real), "--base-channels", "2", "--depth", "1"]) == 0
    capsys.readouterr()
    real.write_bytes(real.read_bytes()[:-200])  # a truncated download
    assert "real.pt: not a biounet checkpoint" in run_error(capsys, ["info", str(real)])


def test_other_format_version(model_path, tmp_path, capsys):
    payload = load_checkpoint(model_path)
    payload["format"] = 99
    other = tmp_path / "future.pt"
    torch.save(payload, other)
    assert "future.pt: checkpoint format 99 is not supported" in run_error(capsys, ["info", str(other)])


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_dir(model_path, tmp_path, capsys, rng):
    image = _png(tmp_path / "a.png", (rng.random((20, 20)) * 255).astype(np.uint8))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    line = run_error(capsys, ["predict", str(model_path), str(image), "--out", str(locked)])
    assert "not writable" in line


def test_output_path_is_a_file(model_path, tmp_path, capsys, rng):
    image = _png(tmp_path / "a.png", (rng.random((20, 20)) * 255).astype(np.uint8))
    (tmp_path / "file").write_text("x")
    line = run_error(capsys, ["predict", str(model_path), str(image), "--out", str(tmp_path / "file")])
    assert f"{tmp_path / 'file'}: output path exists and is not a directory" in line


def test_checkpoint_round_trip_leaves_one_file(tmp_path, model_path):
    payload = load_checkpoint(model_path)
    target = tmp_path / "ckpt.pt"
    save_checkpoint(target, {k: v for k, v in payload.items() if k not in ("format", "kind")})
    assert load_checkpoint(target)["model_config"] == payload["model_config"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_output_dir_cannot_be_created(model_path, tmp_path, capsys, rng):
    image = _png(tmp_path / "a.png", (rng.random((20, 20)) * 255).astype(np.uint8))
    (tmp_path / "file").write_text("x")
    line = run_error(capsys, ["predict", str(model_path), str(image), "--out", str(tmp_path / "file" / "sub")])
    assert "cannot create output directory" in line


def test_zarr_input_is_read_lazily(model_path, tmp_path, rng):
    import zarr

    array = zarr.open_array(str(tmp_path / "big.zarr"), mode="w", shape=(90, 110), chunks=(32, 32), dtype="uint16")
    array[:] = (rng.random((90, 110)) * 4000).astype(np.uint16)
    assert main(["predict", str(model_path), str(tmp_path / "big.zarr"), "--out", str(tmp_path / "o"),
                 "--save-probabilities", "-q"]) == 0
    assert tifffile.imread(tmp_path / "o" / "big.tif").shape == (90, 110)
    assert tifffile.imread(tmp_path / "o" / "big_prob.tif").shape == (2, 90, 110)


@pytest.mark.numerics
def test_large_output_goes_through_disk_and_matches(model_path, tmp_path, rng):
    """With a tiny memory budget the outputs stream through a temporary zarr array; results are identical."""
    image = _png(tmp_path / "a.png", (rng.random((150, 170)) * 255).astype(np.uint8))
    for budget, name in (("1G", "mem"), ("200K", "disk")):
        assert main(["predict", str(model_path), str(image), "--out", str(tmp_path / name), "--tile", "132",
                     "--save-probabilities", "--memory-budget", budget, "--precision", "fp32", "-q"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "mem" / "a_prob.tif"),
                                  tifffile.imread(tmp_path / "disk" / "a_prob.tif"))
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == ["a.tif", "a_prob.tif"]


def test_big_multipage_stack_is_opened_lazily(tmp_path):
    """A stack over 64 MiB is read plane by plane through zarr, not loaded whole."""
    from biounet.data.images import open_image

    stack = np.zeros((3, 3000, 4000), np.uint16)  # 72 MB
    stack[2, 100:110, 200:210] = 7
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    source = open_image(tmp_path / "stack.tif")
    assert source.shape == (3, 3000, 4000, 1) and not isinstance(source.array, np.ndarray)
    np.testing.assert_array_equal(source.read(2, slice(99, 111), slice(199, 211))[..., 0], stack[2, 99:111, 199:211])


def test_post_processing_overrides_need_instances_and_known_keys(model_path, tmp_path, rng, capsys):
    image = _png(tmp_path / "a.png", (rng.random((40, 50)) * 255).astype(np.uint8))
    line = run_error(capsys, ["predict", str(model_path), str(image), "--out", str(tmp_path / "o"),
                              "--post-processing", "min_size_px=0"])
    assert "give --instances too" in line
    line = run_error(capsys, ["predict", str(model_path), str(image), "--out", str(tmp_path / "o"), "--instances",
                              "--post-processing", "nope=1"])
    assert "'nope': not a setting" in line and "min_size_px" in line
    assert not (tmp_path / "o" / "a.tif").exists()  # refused before any pixel was predicted
