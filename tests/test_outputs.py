"""inference/outputs.py: post-processing settings at the image's scale, the membrane labels of segments, cell
counts (the array logic that the command line used to hold)."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
from scipy import ndimage

from biounet.inference.instances import InstanceParams
from biounet.inference.outputs import (
    AREA_FIELDS,
    LENGTH_FIELDS,
    UNITLESS_FIELDS,
    at_image_scale,
    count_cells,
    instances_of,
    segment_boundaries,
)
from biounet.inference.segments import SegmentParams


def test_areas_scale_by_the_zoom_product_and_lengths_by_the_mean_zoom():
    # image pixels 4x (y) and 8x (x) the model's side: zoom (0.25, 0.125); area 1/32, mean zoom 0.1875
    params = SegmentParams(threshold=0.4, sigma_seeds=3.0, min_size_px=25, bias=0.6, membrane_threshold=0.7)
    scaled = at_image_scale(params, (0.5, 0.25))
    assert scaled.min_size_px == 200  # 25 / (0.5 * 0.25)
    assert scaled.sigma_seeds == pytest.approx(8.0)  # 3 / ((0.5 + 0.25) / 2)
    assert (scaled.threshold, scaled.bias, scaled.membrane_threshold) == (0.4, 0.6, 0.7)


def test_instance_sizes_shrink_when_the_image_is_enlarged():
    params = InstanceParams(min_size_px=16, seed_threshold=0.3, watershed=True)
    assert at_image_scale(params, (2.0, 2.0)) == InstanceParams(min_size_px=4, seed_threshold=0.3, watershed=True)
    assert at_image_scale(params, (3.0, 1.0)).min_size_px == 5  # round(16 / 3)


def test_no_zoom_or_no_params_changes_nothing():
    params = SegmentParams()
    assert at_image_scale(params, None) is params
    assert at_image_scale(None, (2.0, 2.0)) is None


@pytest.mark.parametrize("zoom", [(0.0, 1.0), (1.0, -2.0), (float("nan"), 1.0), (float("inf"), 1.0)])
def test_bad_zoom_is_refused(zoom):
    with pytest.raises(ValueError, match="zoom must be two positive finite factors"):
        at_image_scale(InstanceParams(), zoom)


@pytest.mark.parametrize("kind", [InstanceParams, SegmentParams])
def test_every_post_processing_field_has_a_unit(kind):
    """A new size field must be added to AREA_FIELDS or LENGTH_FIELDS, or it would not follow --pixel-size."""
    unknown = {f.name for f in fields(kind)} - AREA_FIELDS - LENGTH_FIELDS - UNITLESS_FIELDS
    assert not unknown, f"{kind.__name__} fields without a unit in biounet.inference.outputs: {sorted(unknown)}"
    assert not (AREA_FIELDS & LENGTH_FIELDS or AREA_FIELDS & UNITLESS_FIELDS or LENGTH_FIELDS & UNITLESS_FIELDS)


def test_segment_boundaries_and_cell_counts_golden():
    segments = np.array([[[1, 1, 0, 2]], [[0, 3, 3, 0]]])
    np.testing.assert_array_equal(segment_boundaries(segments), [[[0, 0, 1, 0]], [[1, 0, 0, 1]]])
    assert segment_boundaries(segments).dtype == np.uint8
    assert count_cells(segments) == 3  # ids 1, 2 in the first plane, 3 in the second


def test_instances_of_every_plane():
    labels = np.zeros((2, 12, 12), dtype=np.uint8)
    labels[0, 1:5, 1:5] = 1
    labels[0, 7:11, 7:11] = 1
    labels[1, 2:8, 2:8] = 1
    stack = instances_of(labels, None, target="paper", params=InstanceParams(min_size_px=1))
    assert stack.shape == (2, 12, 12) and stack.dtype == np.int32
    assert count_cells(stack) == 3
    with pytest.raises(ValueError, match=r"labels must be \(Z, H, W\)"):
        instances_of(labels[0], None, target="paper", params=InstanceParams())


def test_instances_and_rewritten_labels_keep_the_image_pixel_size(tmp_path):
    from biounet.data.images import open_image, write_tiff
    from biounet.data.omezarr import PixelSize
    from biounet.inference.instances import MEMBRANES
    from biounet.inference.outputs import write_instances

    size = PixelSize(0.5, 0.65, "micrometer")
    labels = np.zeros((40, 40), np.uint8)
    labels[18:22, :] = 1  # a membrane across the image: two cells
    probs = np.stack([1.0 - labels, labels]).astype(np.float32)
    write_tiff(tmp_path / "a.tif", labels, labels=True, pixel_size=size)
    write_tiff(tmp_path / "a_prob.tif", probs, pixel_size=size)
    pytest.importorskip("elf.segmentation")
    out, stack = write_instances(tmp_path / "a.tif", tmp_path / "a_prob.tif", MEMBRANES, SegmentParams(), False)
    assert stack.max() == 2
    assert open_image(out).pixel_size == size
    assert open_image(tmp_path / "a.tif").pixel_size == size  # the boundaries replace the labels, metadata kept


def _two_nuclei_probabilities(neck: float) -> np.ndarray:
    """(1, 3, 48, 80) probabilities of two touching nuclei: interior 0.9 at their centres and ``neck`` where the
    eroded discs meet, boundary on the rest of their union, background outside."""
    rows, cols = np.indices((48, 80))
    first, second = ((rows - 24) ** 2 + (cols - 25) ** 2 <= 81), ((rows - 24) ** 2 + (cols - 40) ** 2 <= 81)
    union = first | second
    interior = ndimage.binary_erosion(union, iterations=2)  # two nuclei's interiors joined by a neck
    neck_band = interior & (np.abs(cols - 32.5) <= 2)
    p_interior = np.where(interior, np.where(neck_band, neck, 0.9), 0.0)
    p_boundary = np.where(union, 1.0 - p_interior, 0.0) * 0.9
    return np.stack([1.0 - p_interior - p_boundary, p_interior, p_boundary])[None].astype(np.float32)


def test_predict_path_cuts_seeds_with_the_stored_setting_at_any_zoom():
    """The seam predict uses for a boundary model: its stored settings brought to the image's scale
    (at_image_scale keeps the unitless split_prominence), then instances_of on the probabilities."""
    probs = _two_nuclei_probabilities(neck=0.9)  # one joined seed at any threshold: only a cut separates them
    labels = probs.argmax(1).astype(np.uint8)
    stored = InstanceParams(min_size_px=16, split_prominence=0.3)
    scaled = at_image_scale(stored, (0.5, 0.5))
    assert scaled.split_prominence == 0.3 and scaled.min_size_px == 64
    cut = instances_of(labels, probs, target="boundary", params=scaled)
    assert cut.max() == 2 and cut[0, 24, 25] != cut[0, 24, 40]
    assert instances_of(labels, probs, target="boundary", params=InstanceParams(min_size_px=16)).max() == 1


def test_predict_seeds_a_boundary_model_at_the_chosen_threshold(tmp_path):
    """A boundary model's instances at predict are the validation's (interior probability > seed_threshold), not
    its arg-max labels': a neck of interior probability 0.6 joins two nuclei in the labels (interior wins there) and
    separates them at the seed threshold 0.7 that validation would have chosen."""
    import tifffile

    from biounet.data.images import write_tiff
    from biounet.inference.instances import instances_from_probabilities
    from biounet.inference.outputs import write_instances

    probs = _two_nuclei_probabilities(neck=0.6)
    labels = probs[0].argmax(0).astype(np.uint8)
    assert labels[24, 32] == 1  # the labels join the two interiors
    write_tiff(tmp_path / "a.tif", labels, labels=True)
    tifffile.imwrite(tmp_path / "a_prob.tif", probs[0], photometric="minisblack")
    params = InstanceParams(seed_threshold=0.7, min_size_px=16)
    out, stack = write_instances(tmp_path / "a.tif", tmp_path / "a_prob.tif", "boundary", params, False)
    np.testing.assert_array_equal(stack[0], instances_from_probabilities(probs[0], target="boundary", params=params))
    assert stack.max() == 2 and stack[0, 24, 25] != stack[0, 24, 40]
    np.testing.assert_array_equal(tifffile.imread(out), stack[0])
