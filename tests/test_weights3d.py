"""Eq. 2's weight map, the training targets and the weighted loss on volumes (Cicek et al. 2016, issue 22).

The 3D border term is checked against a brute-force computation (every voxel's physical distance to every voxel
of every cell), anisotropic spacing against hand-computed values, a z-invariant volume against the 2D map of its
slice, and the loss's ignore label against exact zeros in the gradient.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from biounet.core.samples import IGNORE
from biounet.core.targets import BOUNDARY_CLASS, boundary_band, cell_distance, target_classes, training_targets
from biounet.core.weights import (
    BORDER_TRUNCATION,
    border_weights,
    class_balance_weights,
    nearest_two_distances,
    separation_borders,
    weight_map,
)
from biounet.training.loss import distance_loss, weighted_cross_entropy

ANISOTROPIC = (2.24, 1.0, 1.0)


def touching_ellipsoids() -> np.ndarray:
    """12 x 16 x 16 volume: three ellipsoids that overlap (later ones drawn over earlier ones), so they touch."""
    z, y, x = np.indices((12, 16, 16))
    cells = np.zeros((12, 16, 16), np.int32)
    for cell, (cz, cy, cx, rz, ry, rx) in enumerate(
        [(5, 5, 5, 4, 4.5, 4), (6, 5, 11, 3.5, 4, 4.5), (6, 11, 8, 4, 4, 5)], start=1
    ):
        cells[((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1] = cell
    return cells


def brute_force_distances(instances: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """For every voxel, the physical distances to the nearest voxel of every cell; the two smallest."""
    coords = np.indices(instances.shape).reshape(instances.ndim, -1).T * np.asarray(spacing, float)
    flat = instances.ravel()
    per_cell = []
    for k in np.unique(flat[flat > 0]):
        cell = coords[flat == k]
        per_cell.append(np.sqrt(((coords[:, None, :] - cell[None]) ** 2).sum(-1)).min(1))
    d1, d2 = np.sort(np.stack(per_cell), axis=0)[:2]
    return d1.reshape(instances.shape), d2.reshape(instances.shape)


def brute_force_border(instances: np.ndarray, w0: float, sigma_px: float, spacing) -> np.ndarray:
    d1, d2 = brute_force_distances(instances, spacing)
    return np.where(instances == 0, w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma_px**2)), 0.0)


def z_invariant(image: np.ndarray, depth: int = 5) -> np.ndarray:
    return np.repeat(image[None], depth, axis=0)


def two_cells_2d() -> np.ndarray:
    cells = np.zeros((14, 20), np.int32)
    cells[2:11, 2:10], cells[3:12, 10:18] = 1, 2  # touching along columns 9 | 10
    return cells


# --- the border term against brute force ----------------------------------------------------------------------


def test_separation_borders_3d_leaves_no_26_connected_contact():
    cells = touching_ellipsoids()
    separated = separation_borders(cells)
    assert set(np.unique(separated)) == {0, 1, 2, 3}  # every cell survives the cut
    for k in (1, 2, 3):
        zs, ys, xs = np.nonzero(separated == k)
        for dz, dy, dx in np.ndindex(3, 3, 3):  # no voxel of another cell in any 3x3x3 window
            nz, ny, nx = zs + dz - 1, ys + dy - 1, xs + dx - 1
            ok = (nz >= 0) & (nz < 12) & (ny >= 0) & (ny < 16) & (nx >= 0) & (nx < 16)
            other = separated[nz[ok], ny[ok], nx[ok]]
            assert np.all((other == 0) | (other == k))


@pytest.mark.parametrize("spacing", [None, ANISOTROPIC, (0.5, 1.0, 1.5)])
@pytest.mark.parametrize("sigma_px", [2.0, 5.0])
def test_border_weights_3d_equal_brute_force(spacing, sigma_px):
    cells = separation_borders(touching_ellipsoids())
    fast = border_weights(cells, w0=10.0, sigma_px=sigma_px, spacing=spacing)
    exact = brute_force_border(cells, 10.0, sigma_px, spacing or (1.0, 1.0, 1.0))
    kept = exact > 10.0 * BORDER_TRUNCATION
    assert kept.sum() > 100  # the comparison covers the gaps, not only zeros
    np.testing.assert_allclose(fast[kept], exact[kept], rtol=1e-6)
    assert np.all(np.abs(fast - exact) <= 10.0 * BORDER_TRUNCATION)
    assert np.all(fast[cells > 0] == 0) and fast.dtype == np.float32


@pytest.mark.parametrize("reach", [3.0, 8.0])
def test_nearest_two_distances_3d_equal_brute_force_within_reach(reach):
    cells = separation_borders(touching_ellipsoids())
    d1, d2 = nearest_two_distances(cells, max_distance_px=reach, spacing=ANISOTROPIC)
    b1, b2 = brute_force_distances(cells, ANISOTROPIC)
    np.testing.assert_allclose(d1[b1 < reach], b1[b1 < reach], rtol=1e-12)
    np.testing.assert_allclose(d2[b2 < reach], b2[b2 < reach], rtol=1e-12)
    assert np.all(d1 >= b1 - 1e-9) and np.all(d2 >= b2 - 1e-9)  # beyond reach: never too close, maybe inf
    assert np.isinf(d2).any() == (reach == 3.0)  # 3 px: the boxes grow by 2 slices / 3 px and leave voxels out


# --- anisotropic spacing ---------------------------------------------------------------------------------------


def test_spacing_golden_gap_across_slices_and_in_plane():
    # two slabs stacked in z with a 2-slice gap (z = 3, 4), and the same pair side by side in x (x = 3, 4)
    stacked = np.zeros((8, 6, 6), np.int32)
    stacked[:3], stacked[5:] = 1, 2
    beside = np.transpose(stacked, (2, 1, 0)).copy()
    w0, sigma = 10.0, 5.0
    expected_z = w0 * math.exp(-((3 * 2.24) ** 2) / (2 * sigma**2))  # d1 = 1 slice, d2 = 2 slices of 2.24 px
    expected_x = w0 * math.exp(-(3.0**2) / (2 * sigma**2))  # d1 = 1 px, d2 = 2 px
    w_z = border_weights(stacked, w0=w0, sigma_px=sigma, spacing=ANISOTROPIC)
    w_x = border_weights(beside, w0=w0, sigma_px=sigma, spacing=ANISOTROPIC)
    assert w_z[3, 2, 2] == pytest.approx(expected_z, rel=1e-6) and w_z[4, 0, 5] == pytest.approx(expected_z, rel=1e-6)
    assert w_x[2, 2, 3] == pytest.approx(expected_x, rel=1e-6)
    # isotropic: the same gap weighs the same along any axis; anisotropic: a gap across slices is farther
    np.testing.assert_allclose(border_weights(stacked), np.transpose(border_weights(beside), (2, 1, 0)), rtol=1e-6)
    assert w_z[3, 2, 2] < border_weights(stacked)[3, 2, 2]


def test_coarser_z_spacing_never_raises_the_border_term():
    cells = separation_borders(touching_ellipsoids())
    iso = border_weights(cells, spacing=(1.0, 1.0, 1.0))
    coarse = border_weights(cells, spacing=ANISOTROPIC)  # distances only grow with the spacing
    assert np.all(coarse <= iso + 1e-6) and np.any(coarse < iso - 1e-3)
    np.testing.assert_array_equal(iso, border_weights(cells))  # spacing None = unit spacing


# --- a z-invariant volume behaves like its 2D slice ------------------------------------------------------------


@pytest.mark.parametrize("spacing", [None, ANISOTROPIC])
def test_z_invariant_volume_weight_map_equals_2d(spacing):
    cells = two_cells_2d()
    separated = separation_borders(cells)
    volume = separation_borders(z_invariant(cells))
    np.testing.assert_array_equal(volume, z_invariant(separated))
    w2 = weight_map(separated)
    w3 = weight_map(volume, spacing=spacing)
    assert w3.shape == volume.shape
    for z in range(volume.shape[0]):
        np.testing.assert_allclose(w3[z], w2, rtol=1e-6)


@pytest.mark.parametrize("target", ["paper", "boundary"])
def test_z_invariant_volume_targets_equal_2d(target):
    cells = two_cells_2d()
    classes = (cells > 0).astype(np.int64)
    num_classes = 3 if target == "boundary" else 2
    t2 = training_targets(classes, cells, num_classes=num_classes, target=target)
    t3 = training_targets(z_invariant(classes), z_invariant(cells), num_classes=num_classes, target=target,
                          spacing=ANISOTROPIC)
    np.testing.assert_array_equal(t3.classes, z_invariant(t2.classes))
    np.testing.assert_allclose(t3.weights, z_invariant(t2.weights), rtol=1e-6)


# --- training targets on volumes -------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["paper", "boundary", "distance"])
def test_training_targets_volume_shapes_and_sparse_annotation(target):
    instances = touching_ellipsoids()
    classes = (instances > 0).astype(np.int64)
    classes[1::3] = IGNORE  # a third of the slices annotated, as in Cicek et al.'s sparse annotation
    num_classes = 3 if target == "boundary" else 2
    t = training_targets(classes, instances, num_classes=num_classes, target=target, spacing=ANISOTROPIC)
    assert t.classes.shape == t.weights.shape == t.cells.shape == instances.shape
    assert t.weights.dtype == np.float32 and t.classes.dtype == np.int64
    assert np.all(t.weights[1::3] == 0) and np.all(t.classes[1::3] == IGNORE)
    annotated = t.classes != IGNORE
    assert np.all(t.weights[annotated] > 0) and set(np.unique(t.classes[annotated])) == set(range(num_classes))
    gaps = (t.classes == 0) & (instances > 0)  # cut contacts (paper) are background where there was a cell
    if target != "boundary":
        assert gaps.any() and t.weights[gaps].mean() > 2 * t.weights[(t.classes == 0) & (instances == 0)].mean()
    if target == "distance":
        assert t.distance is not None and t.distance.shape == instances.shape
        assert t.distance.max() == pytest.approx(1.0) and np.all(t.distance[t.cells == 0] == 0)


def test_boundary_band_3d_box_with_spacing():
    cell = np.zeros((9, 12, 12), np.int32)
    cell[1:8, 2:10, 2:10] = 1
    band = boundary_band(cell, boundary_px=2, spacing=ANISOTROPIC)  # reaches 1 slice in z, 2 px in y and x
    inner = np.zeros_like(cell, bool)
    inner[2:7, 4:8, 4:8] = True
    np.testing.assert_array_equal(band, (cell > 0) & ~inner)
    iso = boundary_band(cell, boundary_px=2)  # 2 voxels along every axis
    inner[:] = False
    inner[3:6, 4:8, 4:8] = True
    np.testing.assert_array_equal(iso, (cell > 0) & ~inner)
    classes, cells = target_classes((cell > 0).astype(np.int64), cell, target="boundary", spacing=ANISOTROPIC)
    assert np.all(classes[band] == BOUNDARY_CLASS) and np.all(cells[band] == 0)


def test_cell_distance_3d_physical():
    cell = np.zeros((5, 9, 9), np.int32)
    cell[1:4, 1:8, 1:8] = 1  # 3 slices by 7 x 7 px
    iso = cell_distance(cell)
    coarse = cell_distance(cell, spacing=(3.0, 1.0, 1.0))
    # centre (2, 4, 4): unit spacing, 2 voxels to the outside in z, 4 in plane -> the max; in-plane 1 from the edge
    assert iso[2, 4, 4] == 1.0 and iso[2, 4, 1] == pytest.approx(1 / 2)
    # z-slices 3 px apart: the centre is 4 px from the outside along y/x and 6 along z; distance max 4
    assert coarse[2, 4, 4] == 1.0 and coarse[2, 4, 1] == pytest.approx(1 / 4) and coarse[1, 4, 4] == pytest.approx(3 / 4)


# --- errors ----------------------------------------------------------------------------------------------------


def test_volume_errors():
    instances = touching_ellipsoids()
    classes = (instances > 0).astype(np.int64)
    with pytest.raises(ValueError, match="the stardist target is 2D only; got a volume of shape"):
        training_targets(classes, instances, num_classes=3, target="stardist")
    with pytest.raises(ValueError, match="the stardist target is 2D only"):
        target_classes(classes, instances, target="stardist")
    with pytest.raises(ValueError, match=r"spacing must be 3 finite values > 0 .* got \(2.0, 1.0\)"):
        border_weights(instances, spacing=(2.0, 1.0))
    with pytest.raises(ValueError, match=r"spacing must be 3 finite values > 0"):
        training_targets(classes, instances, num_classes=2, spacing=(0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"3-D \(Z, Y, X\) with Z >= 2 or 2-D \(H, W\), got shape \(1, 16, 16\)"):
        weight_map(instances[:1])
    with pytest.raises(ValueError, match=r"got shape \(2, 12, 16, 16\)"):
        class_balance_weights(np.stack([classes, classes]), num_classes=2)


# --- the loss on volumes ---------------------------------------------------------------------------------------


def _volume_batch(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 4, 5, 6, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 4, 5, 6), generator=gen)
    target[:, 1:3] = IGNORE  # two unannotated slices per volume
    target[1, 0, 0, 0] = IGNORE
    weights = torch.rand(2, 4, 5, 6, generator=gen, dtype=torch.float64) * 5
    weights[target == IGNORE] = float("nan")  # whatever is there must not leak in
    return logits, target, weights


def test_weighted_cross_entropy_5d_equals_explicit_formula():
    logits, target, weights = _volume_batch()
    labelled = target != IGNORE
    log_p = torch.log_softmax(logits, dim=1)
    picked = log_p.gather(1, target.clamp(min=0)[:, None])[:, 0]
    expected = -(weights[labelled] * picked[labelled]).sum() / labelled.sum()
    loss = weighted_cross_entropy(logits, target, weights, ignore_index=IGNORE)
    torch.testing.assert_close(loss, expected)
    per_voxel = weighted_cross_entropy(logits, target, weights, ignore_index=IGNORE, reduction="none")
    assert per_voxel.shape == target.shape and torch.all(per_voxel[~labelled] == 0)
    # a volume's sum is the sum over its slices, each a 2D image
    slices = sum(weighted_cross_entropy(logits[:, :, z], target[:, z], weights[:, z], ignore_index=IGNORE,
                                        reduction="sum") for z in range(logits.shape[2]))
    torch.testing.assert_close(weighted_cross_entropy(logits, target, weights, ignore_index=IGNORE, reduction="sum"),
                               slices)


def test_ignored_voxels_get_exactly_zero_gradient_and_no_loss():
    logits, target, weights = _volume_batch(1)
    logits.requires_grad_(True)
    loss = weighted_cross_entropy(logits, target, weights, ignore_index=IGNORE)
    loss.backward()
    ignored = (target == IGNORE)[:, None].expand_as(logits)
    assert torch.all(logits.grad[ignored] == 0)
    assert torch.all(logits.grad[~ignored] != 0)
    changed = logits.detach().clone()
    changed[ignored] = torch.randn(int(ignored.sum()), dtype=changed.dtype) * 100
    assert weighted_cross_entropy(changed, target, weights, ignore_index=IGNORE).item() == loss.item()


def test_distance_loss_volume_ignores_unannotated_voxels():
    gen = torch.Generator().manual_seed(2)
    predicted = torch.rand(2, 4, 5, 6, generator=gen, requires_grad=True)
    target = torch.rand(2, 4, 5, 6, generator=gen)
    annotated = torch.rand(2, 4, 5, 6, generator=gen) > 0.5
    loss = distance_loss(predicted, target, annotated)
    torch.testing.assert_close(loss, ((predicted - target) ** 2)[annotated].mean())
    loss.backward()
    assert torch.all(predicted.grad[~annotated] == 0) and torch.all(predicted.grad[annotated] != 0)
