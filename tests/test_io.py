"""File stems and atomic writing (biounet.io)."""

from __future__ import annotations

from pathlib import Path

import pytest

from biounet.io import files_by_stem, output_stem


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
