"""ImageJ ROIs from instance labels: one polygon per cell whose inside is exactly the cell's pixels."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.path import Path as PolygonPath

from biounet.data.rois import instance_outlines, write_roi_zip


def _cells() -> np.ndarray:
    labels = np.zeros((20, 24), dtype=np.int32)
    labels[2:6, 3:9] = 901  # a rectangle (napari-style id)
    labels[8:16, 2:5] = 17  # an L shape
    labels[13:16, 5:10] = 17
    labels[0:4, 18:24] = 4  # touching the image border
    labels[10, 15] = 3  # a single pixel
    return labels


def _inside(xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre (ImageJ: col + 0.5, row + 0.5) lies inside the polygon."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
    return PolygonPath(xy).contains_points(centres).reshape(shape)


def test_each_outline_encloses_exactly_its_cell():
    labels = _cells()
    outlines = instance_outlines(labels)
    assert [cell for cell, _ in outlines] == [3, 4, 17, 901]
    for cell, xy in outlines:
        np.testing.assert_array_equal(_inside(xy, labels.shape), labels == cell, err_msg=f"cell {cell}")


def test_outline_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        instance_outlines(np.zeros((2, 3, 4), dtype=int))
    with pytest.raises(TypeError, match="integer"):
        instance_outlines(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=">= 0"):
        instance_outlines(-np.ones((3, 4), dtype=int))


def test_roi_zip_reads_back_with_roifile(tmp_path):
    roifile = pytest.importorskip("roifile")
    labels = _cells()
    assert write_roi_zip(tmp_path / "cells.zip", labels) == 4
    rois = roifile.roiread(tmp_path / "cells.zip")
    assert [roi.name for roi in rois] == ["cell-00003", "cell-00004", "cell-00017", "cell-00901"]
    for roi, (cell, xy) in zip(rois, instance_outlines(labels)):
        assert roi.roitype == roifile.ROI_TYPE.POLYGON
        np.testing.assert_array_equal(_inside(roi.coordinates(), labels.shape), labels == cell)


def test_roi_zip_of_a_stack_sets_positions(tmp_path):
    roifile = pytest.importorskip("roifile")
    stack = np.stack([_cells(), np.zeros((20, 24), dtype=np.int32), _cells()[::-1]])
    assert write_roi_zip(tmp_path / "stack.zip", stack) == 8
    rois = roifile.roiread(tmp_path / "stack.zip")
    assert sorted({roi.position for roi in rois}) == [1, 3]


def test_empty_image_gives_an_empty_zip(tmp_path):
    pytest.importorskip("roifile")
    import zipfile

    assert write_roi_zip(tmp_path / "none.zip", np.zeros((5, 5), dtype=np.int32)) == 0
    assert zipfile.ZipFile(tmp_path / "none.zip").namelist() == []
