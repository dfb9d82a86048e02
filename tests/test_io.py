"""File stems and atomic writing (biounet.data.files)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from biounet.data.checkpoint import save_checkpoint
from biounet.data.files import atomic_path, files_by_stem, output_stem, write_text


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("cells.tif", "cells"),
        ("a.b.c.tif", "a.b.c"),          # dots inside the name are kept
        (".hidden.tif", ".hidden"),      # a hidden file keeps its leading dot
        (".hidden", ".hidden"),
        ("x.ome.tif", "x"),              # two-part OME extensions go whole
        ("x.OME.TIFF", "x"),
        ("x.ome.zarr", "x"),
        ("volume.zarr", "volume"),
        ("t001", "t001"),
        (".ome.tif", ".ome"),            # only an extension: a hidden file named ".ome"
    ],
)
def test_output_stem(name: str, stem: str) -> None:
    assert output_stem(Path("some/dir") / name) == stem


def test_files_by_stem_keeps_order_and_dotted_names_apart() -> None:
    files = files_by_stem(["b.1.png", "b.2.png", "a.tif"])
    assert list(files) == ["b.1", "b.2", "a"]


def test_files_by_stem_names_both_files_of_a_collision() -> None:
    with pytest.raises(ValueError, match=r"two files with the stem 'x': in/x\.tif, in/x\.png"):
        files_by_stem(["in/x.tif", "in/y.tif", "in/x.png"])


class _WriteFailed(Exception):
    pass


def test_atomic_path_failure_keeps_the_old_target_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(_WriteFailed), atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise _WriteFailed
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_failure_without_target_leaves_nothing(tmp_path):
    with pytest.raises(_WriteFailed), atomic_path(tmp_path / "new.txt") as tmp:
        tmp.write_text("partial")
        raise _WriteFailed
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_success_replaces_the_target(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_checkpoint_that_fails_mid_write_keeps_the_previous_one(tmp_path):
    target = tmp_path / "last.pt"
    save_checkpoint(target, {"step": 1, "model_state": {"w": torch.ones(3)}})
    before = target.read_bytes()
    # torch.save has opened and partly written the archive when it meets the object it cannot pickle
    payload = {"step": 2, "model_state": {"w": torch.zeros(1000)}, "hook": lambda: None}
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        save_checkpoint(target, payload)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_text_that_fails_mid_write_keeps_the_previous_one(tmp_path):
    target = tmp_path / "metrics.csv"
    write_text(target, "step,loss\n1,0.5\n")
    with pytest.raises(UnicodeEncodeError):  # raised after the file was opened for writing
        write_text(target, "step,loss\n2,\ud800\n")
    assert target.read_text() == "step,loss\n1,0.5\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]
