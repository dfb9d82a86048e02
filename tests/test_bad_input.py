"""The bad-input and fault catalogue: nothing lost, nothing hung, no silent wrong result.

Every case runs the command line and checks the exit code, the one-line ``biounet <command>: error: ...`` naming
the user's file (never a temporary path), and that the output folder holds nothing new (for a fault in the middle
of writing: nothing of the failed call). Full disks and read-only file systems are injected with monkeypatch at
the write layer: the tests run as root, so permissions cannot be taken away with chmod.
"""

from __future__ import annotations

import errno
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import biounet.data.files
import biounet.data.normalization
import biounet.inference.predict
from biounet.cli import main
from biounet.core.model import ModelConfig, UNet, nearest_valid_sizes
from biounet.data.checkpoint import CHECKSUM_KEY, load_checkpoint, model_payload, save_checkpoint
from biounet.inference.predict import STAGE_PREFIX

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


# --- helpers ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "m.pt"
    assert main(["init", "--base-channels", "4", "--depth", "2", "--out", str(path)]) == 0
    return path


@pytest.fixture
def image(tmp_path, rng) -> Path:
    path = tmp_path / "in" / "cells.tif"
    path.parent.mkdir()
    tifffile.imwrite(path, (rng.random((40, 44)) * 255).astype(np.uint8))
    return path


@pytest.fixture
def out(tmp_path) -> Path:
    """An output folder holding an earlier, unrelated result that must survive every failure."""
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "keep.tif").write_bytes(b"earlier result")
    return folder


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry below ``folder`` (hidden ones too) with its size and modification time."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def fails(capsys, argv: list[Any], *names: Any) -> str:
    """Run the CLI, expecting exit code 2 and exactly one line on stderr that names each of ``names``."""
    argv = [str(a) for a in argv]
    if argv[0] == "predict":
        argv.append("-q")  # no progress bar: stderr holds only what a failure adds
    code = main(argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured.err
    assert len(lines) == 1, captured.err
    line = lines[0]
    assert line.startswith(f"biounet {argv[0]}: error: "), line
    for name in names:
        assert str(name) in line, (name, line)
    assert ".tmp" not in line and STAGE_PREFIX not in line and "Traceback" not in captured.err, line
    return line


def usage_fails(capsys, argv: list[Any], flag: str) -> str:
    """An argparse value error: exit code 2 and a last line naming ``flag``, no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"biounet {argv[0]}: error: argument {flag}"), last
    return last


def unchanged(folder: Path, before: dict[str, tuple[int, int]]) -> None:
    assert snapshot(folder) == before


def full_disk_at_write(monkeypatch, after: int = 0) -> list[str]:
    """Let ``after`` TIFF writes succeed, then fail the next ones half-way with ENOSPC (a partial temporary file
    written, the error naming it, as the OS does)."""
    real = tifffile.imwrite
    calls: list[str] = []

    def imwrite(path, *args, **kwargs):
        calls.append(str(path))
        if len(calls) > after:
            Path(path).write_bytes(b"II*\x00partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", imwrite)
    return calls


def full_disk_at_bytes(monkeypatch) -> None:
    """Fail :func:`biounet.data.files.write_bytes` (checkpoints, exports) half-way with ENOSPC."""

    def write_all(path, data):
        Path(path).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(biounet.data.files, "_write_all", write_all)


def crafted_tiff(path: Path, side: int = 100_000) -> Path:
    """A tiny BigTIFF whose header claims ``side`` x ``side`` uint8 pixels in one strip (patched tags)."""
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8), bigtiff=True, rowsperstrip=64)
    data = bytearray(path.read_bytes())
    ifd = struct.unpack_from("<Q", data, 8)[0]
    for i in range(struct.unpack_from("<Q", data, ifd)[0]):
        entry = ifd + 8 + 20 * i
        tag = struct.unpack_from("<H", data, entry)[0]
        if tag in (256, 257, 278):  # ImageWidth, ImageLength, RowsPerStrip
            struct.pack_into("<HHQQ", data, entry, tag, 4, 1, side)
    path.write_bytes(bytes(data))
    return path


def crafted_png(path: Path, side: int = 100_000) -> Path:
    """A tiny PNG whose IHDR claims ``side`` x ``side`` pixels."""
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    struct.pack_into(">II", data, 16, side, side)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def checkpoint_with(path: Path, change) -> Path:
    """A checkpoint of a tiny network, its payload passed through ``change`` and saved by torch directly."""
    torch.manual_seed(0)
    payload = {"format": 1, "kind": "biounet-checkpoint",
               **model_payload(UNet(ModelConfig(base_channels=4, depth=2)), normalization="percentile")}
    torch.save(change(payload), path)
    return path


# --- predict: inputs ---------------------------------------------------------------------------------------------


def _write_input(kind: str, folder: Path) -> tuple[Path, str]:
    """A bad input of ``kind`` and a word its error names besides the file."""
    if kind == "missing":
        return folder / "nope.tif", "no such file"
    if kind == "directory":
        (folder / "dir.tif").mkdir()
        return folder / "dir.tif", "directory"
    path = folder / {"empty": "e.tif", "text_png": "t.png", "garbage_tiff": "g.tif", "truncated_tiff": "tr.tif",
                     "bool_npy": "b.npy", "complex_npy": "c.npy", "object_npy": "o.npy", "five_d_npy": "f.npy",
                     "one_pixel": "one.png", "rgb": "rgb.png", "nan_tiff": "nan.tif", "inf_tiff": "inf.tif",
                     "zarr_group": "grp.zarr", "bad_zarr": "bad.zarr", "huge_png": "huge.png",
                     "huge_tiff": "huge.tif", "two_pixel_rows": "row.png"}[kind]
    word = {"empty": "empty", "text_png": "not a readable image", "garbage_tiff": "not a readable TIFF",
            "truncated_tiff": "TIFF", "bool_npy": "bool", "complex_npy": "complex", "object_npy": ".npy",
            "five_d_npy": "shape", "one_pixel": "too small", "rgb": "channel", "nan_tiff": "NaN",
            "inf_tiff": "NaN or Inf", "zarr_group": "zarr", "bad_zarr": "zarr", "huge_png": "too large",
            "huge_tiff": "100000x100000", "two_pixel_rows": "too small"}[kind]
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text_png":
        path.write_text("not a picture")
    elif kind == "garbage_tiff":
        path.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    elif kind == "truncated_tiff":
        tifffile.imwrite(path, np.ones((64, 64), np.uint16))
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "bool_npy":
        np.save(path, np.ones((40, 40), bool))
    elif kind == "complex_npy":
        np.save(path, np.ones((40, 40), np.complex64))
    elif kind == "object_npy":
        np.save(path, np.array([[{"a": 1}] * 4] * 4, dtype=object), allow_pickle=True)
    elif kind == "five_d_npy":
        np.save(path, np.ones((2, 2, 2, 8, 8), np.uint8))
    elif kind == "one_pixel":
        Image.fromarray(np.ones((1, 1), np.uint8)).save(path)
    elif kind == "two_pixel_rows":
        Image.fromarray(np.ones((1, 50), np.uint8)).save(path)
    elif kind == "rgb":
        Image.fromarray(np.ones((40, 40, 3), np.uint8) * np.arange(3, dtype=np.uint8)).save(path)
    elif kind in ("nan_tiff", "inf_tiff"):
        data = np.ones((40, 40), np.float32)
        data[3, 3] = np.nan if kind == "nan_tiff" else np.inf
        tifffile.imwrite(path, data)
    elif kind == "zarr_group":
        import zarr

        zarr.open_group(str(path), mode="w")
    elif kind == "bad_zarr":
        path.mkdir()
        (path / ".zarray").write_text("{not json")
    elif kind == "huge_png":
        crafted_png(path)
    elif kind == "huge_tiff":
        crafted_tiff(path)
    return path, word


INPUT_KINDS = ["missing", "directory", "empty", "text_png", "garbage_tiff", "truncated_tiff", "bool_npy",
               "complex_npy", "object_npy", "five_d_npy", "one_pixel", "two_pixel_rows", "rgb", "nan_tiff",
               "inf_tiff", "zarr_group", "bad_zarr", "huge_png", "huge_tiff"]


@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_bad_input_alone(kind, model, tmp_path, out, capsys):
    bad, word = _write_input(kind, tmp_path)
    before = snapshot(out)
    line = fails(capsys, ["predict", model, bad, "--out", out], bad)
    assert word.lower() in line.lower(), line
    unchanged(out, before)


@pytest.mark.parametrize("kind", ["text_png", "rgb", "huge_tiff", "nan_tiff"])
def test_bad_second_input_leaves_nothing_of_the_first(kind, model, image, tmp_path, out, capsys):
    """All inputs are checked before the first is predicted (NaN pixels, found while reading, roll back)."""
    bad, _ = _write_input(kind, tmp_path)
    before = snapshot(out)
    fails(capsys, ["predict", model, image, bad, "--out", out, "--save-probabilities"], bad)
    unchanged(out, before)


def test_two_inputs_with_the_same_stem_are_refused(model, image, out, capsys, rng):
    other = image.with_suffix(".png")
    Image.fromarray((rng.random((40, 40)) * 255).astype(np.uint8)).save(other)
    before = snapshot(out)
    fails(capsys, ["predict", model, image, other, "--out", out], image, other)
    unchanged(out, before)


def test_an_input_named_like_another_inputs_probabilities_is_refused(model, image, out, capsys):
    other = image.with_name("cells_prob.tif")
    other.write_bytes(image.read_bytes())
    before = snapshot(out)
    fails(capsys, ["predict", model, image, other, "--out", out, "--save-probabilities"], other)
    unchanged(out, before)


def test_crafted_huge_tiff_header_ends_fast(model, tmp_path, out, capsys):
    """A 100000^2 header in a file of a few hundred bytes: refused from the header, in well under 10 s."""
    bad = crafted_tiff(tmp_path / "bomb.tif")
    assert bad.stat().st_size < 8192
    start = time.perf_counter()
    fails(capsys, ["predict", model, bad, "--out", out], bad, "100000x100000")
    assert time.perf_counter() - start < 10
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_tiff_header_claiming_more_pixels_than_the_file_holds(model, tmp_path, out, capsys):
    """30000^2 pixels pass the size limit; one uncompressed strip would be mapped, but the file is too short."""
    bad = crafted_tiff(tmp_path / "strip.tif", side=30_000)
    before = snapshot(out)
    fails(capsys, ["predict", model, bad, "--out", out], bad, "30000x30000", "damaged")
    unchanged(out, before)


def test_statistics_sample_reads_bounded_blocks(monkeypatch):
    """The normalisation's subsample of a big plane reads at most STATS_BLOCK_BYTES (rounded to the step) at once,
    not 1024 sampled rows of full resolution."""
    reads: list[int] = []

    class Counting:
        def __init__(self, array):
            self.array, self.shape, self.dtype = array, array.shape, array.dtype

        def __getitem__(self, index):
            block = self.array[index]
            reads.append(block.nbytes)
            return block

    array = np.arange(3000 * 3000, dtype=np.uint32).reshape(3000, 3000) % 251
    source = biounet.data.images.ImageSource(Path("big.zarr"), Counting(array.astype(np.uint8)), (1, 3000, 3000, 1),
                                    np.dtype(np.uint8), "YX")
    monkeypatch.setattr(biounet.data.normalization, "STATS_BLOCK_BYTES", 100_000)
    norm = biounet.data.normalization.normalization_for(source, 0, "minmax")
    # step = ceil(sqrt(9e6 / 4e6)) = 2; 100000 // 3000 // 2 * 2 = 32 rows of 3000 bytes per read
    assert max(reads) == 32 * 3000 and norm.offset == (0.0,)


# --- predict: tiling and memory options --------------------------------------------------------------------------


def test_huge_tile_ends_fast_with_a_one_line_error(model, image, out, capsys):
    before = snapshot(out)
    start = time.perf_counter()
    fails(capsys, ["predict", model, image, "--out", out, "--tile", 1000000004], "1000000004")
    assert time.perf_counter() - start < 10
    unchanged(out, before)


def test_tile_too_big_for_memory_names_the_largest_that_fits(model, image, out, capsys, monkeypatch):
    monkeypatch.setattr(biounet.inference.predict, "available_memory", lambda: 2**30)
    tile = nearest_valid_sizes(100_000, 2, "valid")[1]
    before = snapshot(out)
    line = fails(capsys, ["predict", model, image, "--out", out, "--tile", tile, "--precision", "fp32"], tile,
                 "largest tile size")
    largest = int(line.rsplit("largest tile size that fits is ", 1)[1].split()[0].rstrip(";"))
    # 1 GiB / (4 bytes * (6 * 4 + 1) values per pixel) = 10.7 Mpx -> side 3276 in fp32; the valid size just below
    assert 3200 < largest <= 3276
    unchanged(out, before)


def test_batch_too_big_for_memory_names_the_largest_batch(model, image, out, capsys, monkeypatch):
    monkeypatch.setattr(biounet.inference.predict, "available_memory", lambda: 2**30)
    before = snapshot(out)
    fails(capsys, ["predict", model, image, "--out", out, "--tile", 1004, "--batch-size", 10_000],
          "batch size 10000", "largest batch size")
    unchanged(out, before)


def test_memory_budget_above_the_machine_is_refused(model, image, out, capsys, monkeypatch):
    monkeypatch.setattr(biounet.inference.predict, "physical_memory", lambda: 2**33)
    before = snapshot(out)
    fails(capsys, ["predict", model, image, "--out", out, "--memory-budget", "100G"], "memory budget", "8 GiB")
    unchanged(out, before)


def test_invalid_tile_names_the_nearest(model, image, out, capsys):
    before = snapshot(out)
    fails(capsys, ["predict", model, image, "--out", out, "--tile", 33], "33", "nearest valid")
    unchanged(out, before)


@pytest.mark.parametrize(("flag", "value"), [
    ("--memory-budget", "inf"), ("--memory-budget", "nan"), ("--memory-budget", "-1G"),
    ("--memory-budget", "lots"), ("--tile", "abc"), ("--tile", "0"), ("--batch-size", "0"),
    ("--batch-size", "x"),
])
def test_argparse_value_errors_name_the_flag(flag, value, model, image, out, capsys):
    before = snapshot(out)
    usage_fails(capsys, ["predict", model, image, "--out", out, flag, value], flag)
    unchanged(out, before)


# --- predict: output folder and full disk ------------------------------------------------------------------------


def test_output_folder_is_a_file(model, image, tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    fails(capsys, ["predict", model, image, "--out", target], target, "not a directory")
    assert target.read_text() == "x"


def test_output_folder_under_a_file(model, image, tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    fails(capsys, ["predict", model, image, "--out", target / "sub"], target / "sub")


def test_read_only_output_folder(model, image, out, capsys, monkeypatch):
    before = snapshot(out)
    monkeypatch.setattr(biounet.data.images.os, "access", lambda path, mode: False)  # what EROFS looks like to access()
    fails(capsys, ["predict", model, image, "--out", out], out, "not writable")
    monkeypatch.undo()
    unchanged(out, before)


def test_read_only_at_the_first_write(model, image, out, capsys, monkeypatch):
    before = snapshot(out)

    def mkdtemp(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(out / ".x"))

    monkeypatch.setattr(biounet.inference.predict.tempfile, "mkdtemp", mkdtemp)
    fails(capsys, ["predict", model, image, "--out", out], out, "Read-only file system")
    monkeypatch.undo()
    unchanged(out, before)


def test_not_enough_free_disk_space(model, image, out, capsys, monkeypatch):
    import collections
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(biounet.inference.predict.shutil, "disk_usage", lambda path: usage(100, 90, 10))
    before = snapshot(out)
    fails(capsys, ["predict", model, image, "--out", out], out, "free disk space")
    unchanged(out, before)


def test_full_disk_at_the_labels(model, image, out, capsys, monkeypatch):
    before = snapshot(out)
    full_disk_at_write(monkeypatch, after=0)
    fails(capsys, ["predict", model, image, "--out", out], out / "cells.tif", "No space left on device")
    unchanged(out, before)


def test_full_disk_at_the_probabilities_leaves_no_labels(model, image, out, capsys, monkeypatch):
    before = snapshot(out)
    calls = full_disk_at_write(monkeypatch, after=1)
    fails(capsys, ["predict", model, image, "--out", out, "--save-probabilities"], out / "cells_prob.tif")
    assert len(calls) == 2
    unchanged(out, before)


def test_full_disk_at_the_second_input_rolls_back_the_first(model, image, out, capsys, monkeypatch, rng):
    second = image.with_name("more.tif")
    tifffile.imwrite(second, (rng.random((40, 40)) * 255).astype(np.uint8))
    before = snapshot(out)
    full_disk_at_write(monkeypatch, after=1)
    fails(capsys, ["predict", model, image, second, "--out", out], out / "more.tif")
    unchanged(out, before)


def test_full_disk_keeps_the_previous_outputs(model, image, out, capsys, monkeypatch):
    assert main(["predict", str(model), str(image), "--out", str(out), "--save-probabilities", "-q"]) == 0
    before = snapshot(out)
    full_disk_at_write(monkeypatch, after=1)
    fails(capsys, ["predict", model, image, "--out", out, "--save-probabilities"], out / "cells_prob.tif")
    unchanged(out, before)


def test_full_disk_at_the_instances(model, image, out, capsys, monkeypatch):
    before = snapshot(out)
    full_disk_at_write(monkeypatch, after=1)
    fails(capsys, ["predict", model, image, "--out", out, "--instances"], out / "cells_instances.tif")
    unchanged(out, before)


def test_nan_network_output_is_an_error_not_background(model, image, out, capsys, monkeypatch):
    before = snapshot(out)
    real = biounet.inference.predict.TorchPredictor._probabilities
    monkeypatch.setattr(biounet.inference.predict.TorchPredictor, "_probabilities",
                        lambda self, batch: real(self, batch) * float("nan"))  # what NaN weights would give
    fails(capsys, ["predict", model, image, "--out", out], image, "NaN")
    unchanged(out, before)


# --- predict: no silent wrong result -----------------------------------------------------------------------------


def test_stale_probabilities_and_instances_are_removed(model, image, out, capsys):
    assert main(["predict", str(model), str(image), "--out", str(out), "--save-probabilities", "--instances",
                 "-q"]) == 0
    assert {"cells.tif", "cells_prob.tif", "cells_instances.tif"} <= {p.name for p in out.iterdir()}
    assert main(["predict", str(model), str(image), "--out", str(out), "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cells.tif", "keep.tif"]


def test_staging_folder_of_a_killed_run_is_removed(model, image, out):
    killed = out / f"{STAGE_PREFIX}999999999-abc"  # no such process
    (killed / ".cells.zarr").mkdir(parents=True)
    (killed / "cells.tif").write_bytes(b"half")
    assert main(["predict", str(model), str(image), "--out", str(out), "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cells.tif", "keep.tif"]


def test_large_output_through_disk_leaves_no_temporary(model, image, out):
    assert main(["predict", str(model), str(image), "--out", str(out), "--memory-budget", "1K",
                 "--save-probabilities", "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cells.tif", "cells_prob.tif", "keep.tif"]


# --- checkpoints ---------------------------------------------------------------------------------------------------


def _flip_weight_byte(src: Path, dst: Path) -> Path:
    state = torch.load(src, weights_only=True)["model_state"]
    name = max(state, key=lambda key: state[key].numel())
    raw = state[name].numpy().tobytes()
    data = bytearray(src.read_bytes())
    at = data.find(raw)
    assert at > 0
    data[at + len(raw) // 2] ^= 0x01  # the lowest bit of some float's byte: still finite
    dst.write_bytes(bytes(data))
    return dst


def _nan_weights(payload):
    state = dict(payload["model_state"])
    name = next(iter(state))
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    return {**payload, "model_state": state}


CHECKPOINT_KINDS = {
    "missing": (lambda tmp: tmp / "none.pt", "no such"),
    "text": (lambda tmp: (tmp / "t.pt").write_text("hello") and tmp / "t.pt", "not a biounet checkpoint"),
    "truncated": (lambda tmp: None, "not a biounet checkpoint"),
    "flipped_byte": (lambda tmp: None, "checksum"),
    "nan_weights": (lambda tmp: checkpoint_with(tmp / "nan.pt", _nan_weights), "NaN"),
    "zero_base_channels": (lambda tmp: checkpoint_with(tmp / "z.pt", lambda p: {
        **p, "model_config": {**p["model_config"], "base_channels": 0}}), "base_channels"),
    "state_not_a_dict": (lambda tmp: checkpoint_with(tmp / "s.pt", lambda p: {**p, "model_state": [1, 2]}),
                         "model_state"),
    "other_format": (lambda tmp: checkpoint_with(tmp / "f.pt", lambda p: {**p, "format": 99}), "format"),
    "wrong_shapes": (lambda tmp: checkpoint_with(tmp / "w.pt", lambda p: {
        **p, "model_config": {**p["model_config"], "base_channels": 8}}), "do not match"),
}


@pytest.mark.parametrize("kind", list(CHECKPOINT_KINDS))
@pytest.mark.parametrize("command", ["predict", "info", "export"])
def test_bad_checkpoint(kind, command, model, image, tmp_path, out, capsys):
    make, word = CHECKPOINT_KINDS[kind]
    if kind == "truncated":
        bad = tmp_path / "cut.pt"
        bad.write_bytes(model.read_bytes()[:-200])
    elif kind == "flipped_byte":
        bad = _flip_weight_byte(model, tmp_path / "flip.pt")
    else:
        bad = make(tmp_path)
    before = snapshot(out)
    argv = {"predict": ["predict", bad, image, "--out", out], "info": ["info", bad],
            "export": ["export", bad, "--format", "torchscript", "--out", out / "m.ts"]}[command]
    line = fails(capsys, argv, bad)
    assert word in line, line
    unchanged(out, before)


def test_old_checkpoint_without_checksum_still_loads(tmp_path):
    path = checkpoint_with(tmp_path / "old.pt", lambda p: p)
    assert CHECKSUM_KEY not in torch.load(path, weights_only=True)
    assert load_checkpoint(path)["normalization"] == "percentile"


def test_new_checkpoint_carries_its_checksum(model):
    assert len(load_checkpoint(model)[CHECKSUM_KEY]) == 64


# --- init and export: output files -------------------------------------------------------------------------------


def test_init_out_is_a_directory(tmp_path, capsys):
    fails(capsys, ["init", "--base-channels", "4", "--depth", "2", "--out", tmp_path], tmp_path, "directory")


def test_init_out_under_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    fails(capsys, ["init", "--base-channels", "4", "--depth", "2", "--out", tmp_path / "f" / "m.pt"],
          tmp_path / "f" / "m.pt")


def test_init_full_disk_leaves_no_temporary(out, capsys, monkeypatch):
    before = snapshot(out)
    full_disk_at_bytes(monkeypatch)
    fails(capsys, ["init", "--base-channels", "4", "--depth", "2", "--out", out / "m.pt"], out / "m.pt",
          "No space left on device")
    unchanged(out, before)


@pytest.mark.parametrize(("code", "reason"), [(errno.EROFS, "Read-only file system"),
                                              (errno.EACCES, "Permission denied")])
def test_init_cannot_create_the_file(code, reason, out, capsys, monkeypatch):
    before = snapshot(out)

    def mkstemp(*args, **kwargs):
        raise OSError(code, reason, str(out / ".m.pt.abc.tmp"))

    monkeypatch.setattr(biounet.data.files.tempfile, "mkstemp", mkstemp)
    fails(capsys, ["init", "--base-channels", "4", "--depth", "2", "--out", out / "m.pt"], out / "m.pt", reason)
    unchanged(out, before)


def test_init_existing_checkpoint_untouched_on_full_disk(model, out, capsys, monkeypatch):
    target = out / "m.pt"
    target.write_bytes(model.read_bytes())
    before = snapshot(out)
    full_disk_at_bytes(monkeypatch)
    fails(capsys, ["init", "--base-channels", "4", "--depth", "2", "--out", target], target)
    unchanged(out, before)
    monkeypatch.undo()
    load_checkpoint(target)


def test_init_zero_base_channels_names_the_flag(tmp_path, capsys):
    usage_fails(capsys, ["init", "--base-channels", "0", "--out", tmp_path / "m.pt"], "--base-channels")


def test_export_full_disk_leaves_no_temporary(model, out, capsys, monkeypatch):
    before = snapshot(out)
    full_disk_at_bytes(monkeypatch)
    fails(capsys, ["export", model, "--format", "torchscript", "--out", out / "m.ts"], out / "m.ts",
          "No space left on device")
    unchanged(out, before)


def test_export_out_is_a_directory(model, out, capsys):
    before = snapshot(out)
    fails(capsys, ["export", model, "--format", "torchscript", "--out", out], out, "directory")
    unchanged(out, before)


def test_export_out_under_a_file(model, out, capsys):
    before = snapshot(out)
    fails(capsys, ["export", model, "--format", "torchscript", "--out", out / "keep.tif" / "m.ts"],
          out / "keep.tif" / "m.ts")
    unchanged(out, before)


def test_save_checkpoint_error_names_the_file_not_the_temporary(model, out, monkeypatch):
    full_disk_at_bytes(monkeypatch)
    with pytest.raises(biounet.data.files.OutputError, match="m.pt: cannot write") as err:
        save_checkpoint(out / "m.pt", load_checkpoint(model))
    assert ".tmp" not in str(err.value)


# --- train: the run folder is checked before data is loaded -----------------------------------------------------


def test_train_out_is_a_file(tmp_path, capsys):
    target = tmp_path / "run"
    target.write_text("x")
    fails(capsys, ["train", "--data", tmp_path / "no-data-here", "--out", target], target, "not a directory")


def test_train_out_under_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    fails(capsys, ["train", "--data", tmp_path / "no-data-here", "--out", tmp_path / "f" / "run"],
          tmp_path / "f" / "run")


def test_train_out_read_only(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(biounet.data.images.os, "access", lambda path, mode: False)
    fails(capsys, ["train", "--data", tmp_path / "no-data-here", "--out", tmp_path / "run"], tmp_path / "run",
          "not writable")
    monkeypatch.undo()
    assert not (tmp_path / "run").exists()


# --- evaluate --------------------------------------------------------------------------------------------------


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    pred.mkdir()
    truth.mkdir()
    mask = np.zeros((16, 16), np.uint8)
    mask[4:10, 4:10] = 1
    for stem in ("a", "b"):
        tifffile.imwrite(truth / f"{stem}.tif", mask * 255)
    tifffile.imwrite(pred / "a.tif", mask)
    return pred, truth


def test_evaluate_truth_without_prediction_is_an_error(folders, capsys):
    pred, truth = folders
    fails(capsys, ["evaluate", "--pred", pred, "--truth", truth], "b.tif", "--allow-missing")


def test_evaluate_allow_missing_scores_an_empty_prediction(folders, capsys):
    pred, truth = folders
    assert main(["evaluate", "--pred", str(pred), "--truth", str(truth), "--allow-missing", "--json"]) == 0
    import json

    result = json.loads(capsys.readouterr().out)
    rows = {row["image"]: row for row in result["images"]}
    assert rows["a"]["iou"] == 1.0 and rows["b"]["iou"] == 0.0 and "empty" in rows["b"]["note"]
    assert result["mean"]["iou"] == 0.5


def test_evaluate_size_mismatch(folders, capsys):
    pred, truth = folders
    tifffile.imwrite(pred / "b.tif", np.zeros((8, 8), np.uint8))
    fails(capsys, ["evaluate", "--pred", pred, "--truth", truth], "b.tif", "same size")


def test_evaluate_missing_folder(folders, capsys):
    pred, truth = folders
    fails(capsys, ["evaluate", "--pred", pred / "nope", "--truth", truth], pred / "nope")
