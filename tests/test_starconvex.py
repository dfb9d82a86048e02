"""Star-convex targets and polygons: radial distances against the geometry of discs and ellipses, non-maximum
suppression against a brute-force version on full-image masks, and the marker watershed's guarantees."""

from __future__ import annotations

import numpy as np
import pytest

from biounet.core.starconvex import object_probability, ray_angles, star_distances
from biounet.evaluation.metrics import object_scores
from biounet.inference.polygons import (
    Polygons,
    StarParams,
    draw_polygons,
    polygon_pixels,
    star_instances,
    suppress,
    watershed_from_markers,
)


def _ellipses(shape, specs) -> np.ndarray:
    """Labels of filled ellipses ``(cy, cx, ry, rx)``, ids 1..n in order (later ones on top)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, dtype=np.int32)
    for index, (cy, cx, ry, rx) in enumerate(specs, start=1):
        labels[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = index
    return labels


def _ray_to_ellipse(py, px, angle, cy, cx, ry, rx) -> float:
    """Exact distance from (py, px) inside the ellipse to its outline along ``angle`` (a quadratic's root)."""
    dy, dx = np.sin(angle), np.cos(angle)
    a = (dy / ry) ** 2 + (dx / rx) ** 2
    b = 2 * ((py - cy) * dy / ry**2 + (px - cx) * dx / rx**2)
    c = ((py - cy) / ry) ** 2 + ((px - cx) / rx) ** 2 - 1
    return float((-b + np.sqrt(b * b - 4 * a * c)) / (2 * a))


@pytest.mark.parametrize("spec", [(32, 32, 12, 12), (32, 32, 8, 16), (30, 34, 14, 6)])
def test_star_distances_follow_the_outline_of_discs_and_ellipses(spec):
    labels = _ellipses((64, 64), [spec])
    distances = star_distances(labels, 16)
    angles = ray_angles(16)
    cy, cx, ry, rx = spec
    yy, xx = np.mgrid[:64, :64]
    # pixels at least 2 px inside: on the outline itself a ray grazing the pixel staircase stops at once
    inner = ((yy - cy) / (ry - 2)) ** 2 + ((xx - cx) / (rx - 2)) ** 2 <= 1
    rows, cols = np.nonzero(inner)
    errors = [distances[r, c, k] - _ray_to_ellipse(r, c, angles[k], *spec)
              for r, c in zip(rows[::7], cols[::7]) for k in range(16)]
    # the pixel outline of a rasterised ellipse lies within about a pixel of the true one
    assert np.max(np.abs(errors)) < 1.5
    assert abs(np.mean(errors)) < 0.35
    assert np.all(distances[labels == 0] == 0)


def test_star_distances_stop_at_a_touching_neighbour_and_the_image_border():
    labels = np.zeros((10, 20), dtype=np.int32)
    labels[2:8, 0:10], labels[2:8, 10:20] = 1, 2
    distances = star_distances(labels, 4)  # rays right, down, left, up
    assert distances[4, 5].tolist() == [4.5, 3.5, 5.5, 2.5]  # right: cell 2 begins at column 10
    assert distances[4, 0, 2] == 0.5  # left: the image border


def test_object_probability_is_highest_at_centres():
    labels = _ellipses((40, 40), [(20, 20, 9, 9)])
    prob = object_probability(labels)
    assert prob[20, 20] == 1.0 and 0 < prob[20, 12] < 0.5 and prob[0, 0] == 0


def _brute_force_suppress(prob, distances, params):
    """The same greedy rule on full-image masks: every kept polygon compared with every candidate."""
    rows, cols = np.nonzero(prob > params.prob_threshold)
    order = np.argsort(-prob[rows, cols], kind="stable")
    kept, kept_masks = [], []
    for r, c in zip(rows[order], cols[order]):
        mask = np.zeros(prob.shape, dtype=bool)
        mask[polygon_pixels((r, c), distances[r, c], prob.shape)] = True
        if not mask.any():
            continue
        if any((mask & other).sum() > params.overlap_threshold * min(mask.sum(), other.sum()) for other in kept_masks):
            continue
        kept.append((r, c))
        kept_masks.append(mask)
    return kept


@pytest.mark.parametrize("overlap", [0.1, 0.4, 0.7])
def test_suppression_keeps_what_brute_force_keeps(overlap):
    labels = _ellipses((48, 48), [(12, 12, 7, 7), (12, 24, 6, 8), (32, 30, 9, 5), (36, 12, 5, 5)])
    rng = np.random.default_rng(0)
    prob = object_probability(labels) + rng.uniform(0, 0.05, labels.shape) * (labels > 0)
    distances = star_distances(labels, 16) * rng.uniform(0.9, 1.1, (48, 48, 16))
    params = StarParams(prob_threshold=0.4, overlap_threshold=overlap, grid=1)
    kept = suppress(prob, distances, params)
    assert kept.centres.tolist() == [list(map(int, pair)) for pair in _brute_force_suppress(prob, distances, params)]


def test_polygons_at_the_centres_redraw_the_objects():
    labels = _ellipses((64, 64), [(16, 16, 9, 9), (16, 34, 9, 9), (44, 30, 8, 14)])  # two discs touching
    prob = object_probability(labels)
    kept = suppress(prob, star_distances(labels, 32), StarParams(prob_threshold=0.5, overlap_threshold=0.4))
    assert len(kept.scores) == 3
    drawn = draw_polygons(kept, labels.shape)
    (scores,) = object_scores(drawn, labels, thresholds=(0.8,))
    assert (scores.tp, scores.fp, scores.fn) == (3, 0, 0)


def test_marker_watershed_keeps_every_detection_and_merges_none():
    labels = _ellipses((48, 48), [(14, 14, 8, 8), (14, 29, 8, 8), (34, 22, 7, 11)])
    foreground = labels > 0  # one connected blob of three touching cells
    centres = np.array([[14, 14], [14, 29], [34, 22], [14, 22]])  # the 4th: a detection on the contact
    polygons = Polygons(centres, np.full((4, 16), 4.0, np.float32), np.array([0.9, 0.8, 0.7, 0.6], np.float32))
    elevation = np.zeros(labels.shape)
    grown = watershed_from_markers(polygons, foreground, elevation)
    assert sorted(np.unique(grown[grown > 0]).tolist()) == [1, 2, 3, 4]  # every detection kept
    for index, (r, c) in enumerate(centres, start=1):
        assert grown[r, c] == index  # each object holds its own centre: no two markers in one object
    assert np.array_equal(grown > 0, foreground)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="n_rays must be >= 3"):
        star_distances(np.ones((4, 4), int), 2)
    with pytest.raises(TypeError, match="integer labels"):
        star_distances(np.ones((4, 4), float))
    with pytest.raises(ValueError, match="prob must be"):
        suppress(np.zeros((4, 4)), np.zeros((4, 5, 8)))
    with pytest.raises(ValueError, match="overlap_threshold"):
        StarParams(overlap_threshold=1.5)


def test_star_instances_draw_polygons_or_grow_them_over_the_foreground():
    labels = _ellipses((64, 64), [(16, 16, 9, 9), (16, 34, 9, 9), (44, 30, 8, 14)])
    prob, distances = object_probability(labels), star_distances(labels, 32) * 0.8  # polygons drawn too small
    polygons = star_instances(prob, distances, StarParams(masks="polygons"))
    grown = star_instances(prob, distances, StarParams(masks="watershed"), foreground=labels > 0,
                           elevation=-prob)
    (too_small,) = object_scores(polygons, labels, thresholds=(0.8,))
    (exact,) = object_scores(grown, labels, thresholds=(0.8,))
    assert too_small.tp == 0 and exact.tp == 3  # the watershed follows the foreground, not the short rays
    assert np.array_equal(star_instances(np.zeros((8, 8)), np.zeros((8, 8, 8))), np.zeros((8, 8), np.int32))
