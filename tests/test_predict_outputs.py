"""`biounet predict` for a biologist's folder: folder inputs with --pattern, no overwriting of inputs, outline
overlays, ImageJ ROI sets, and label TIFFs that Fiji shows in colour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from biounet.cli import main
from biounet.data.images import PALETTE, read_labels, write_tiff


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "m.pt"
    assert main(["init", "--out", str(path), "--base-channels", "4", "--depth", "2", "--seed", "3"]) == 0
    return path


@pytest.fixture
def folder(tmp_path, rng) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    for name in ("b.png", "a.png"):
        Image.fromarray((rng.random((48, 56)) * 255).astype(np.uint8)).save(images / name)
    tifffile.imwrite(images / "c.tif", (rng.random((48, 56)) * 255).astype(np.uint8))
    (images / "notes.txt").write_text("not an image")
    return images


def test_folder_input_predicts_every_image(model_path, folder, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", str(model_path), str(folder), "--out", str(out), "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "b.tif", "c.tif"]


def test_pattern_selects_files_in_folders(model_path, folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(model_path), str(folder), "--pattern", "*.png", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "b.tif"]
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed] == [str(folder / "a.png"), str(folder / "b.png")]  # natural order


def test_folder_without_matching_images_is_an_error(model_path, folder, tmp_path, capsys):
    assert main(["predict", str(model_path), str(folder), "--pattern", "*.jpg", "--out", str(tmp_path / "o")]) == 2
    assert "no image files matching '*.jpg'" in capsys.readouterr().err


def test_refuses_to_overwrite_an_input(model_path, folder, capsys):
    before = (folder / "c.tif").read_bytes()
    assert main(["predict", str(model_path), str(folder), "--out", str(folder), "-q"]) == 2
    err = capsys.readouterr().err
    assert "c.tif: is an input and would be overwritten" in err
    assert (folder / "c.tif").read_bytes() == before
    assert not (folder / "a.tif").exists()  # refused before anything was written


def test_overlays_rois_and_instances(model_path, folder, tmp_path):
    roifile = pytest.importorskip("roifile")
    out = tmp_path / "out"
    assert main(["predict", str(model_path), str(folder / "a.png"), "--out", str(out), "--save-rois",
                 "--save-overlays", "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "a_instances.tif", "a_overlay.png", "a_rois.zip"]
    overlay = np.asarray(Image.open(out / "a_overlay.png"))
    assert overlay.shape == (48, 56, 3) and overlay.dtype == np.uint8
    instances = tifffile.imread(out / "a_instances.tif")
    rois = roifile.roiread(out / "a_rois.zip")
    assert len(rois) == np.unique(instances[instances > 0]).size  # --save-rois implied --instances


def test_label_tiffs_carry_display_hints_and_keep_values(tmp_path):
    classes = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    write_tiff(tmp_path / "classes.tif", classes, labels=True)
    with tifffile.TiffFile(tmp_path / "classes.tif") as tif:
        page = tif.pages[0]
        assert page.photometric == tifffile.PHOTOMETRIC.PALETTE
        colormap = page.colormap
    assert colormap.shape == (3, 256)
    np.testing.assert_array_equal(colormap[:, 0], 0)  # background black
    np.testing.assert_array_equal(colormap[:, 1] // 257, PALETTE[0])
    np.testing.assert_array_equal(read_labels(tmp_path / "classes.tif")[0], classes)

    cells = np.array([[0, 7, 7], [300, 300, 0]], dtype=np.uint16)
    write_tiff(tmp_path / "cells.tif", cells, labels=True)
    with tifffile.TiffFile(tmp_path / "cells.tif") as tif:
        assert tif.is_imagej
        assert (tif.imagej_metadata["min"], tif.imagej_metadata["max"]) == (0.0, 300.0)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "cells.tif"), cells)
