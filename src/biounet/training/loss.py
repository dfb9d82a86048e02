"""The training objective of Ronneberger et al. (2015), eq. 1: pixel-wise softmax cross-entropy weighted by the
weight map ``w(x)`` (:mod:`biounet.core.weights`), at the network's output size, with an optional ignore label.
Images (N, C, H, W) and volumes (N, C, Z, Y, X) alike: Cicek et al. (2016) train the 3D U-Net with the same loss,
unannotated voxels ignored so that a few annotated slices suffice.

References
----------
.. [1] Ronneberger, Fischer, Brox (2015). U-Net: Convolutional Networks for Biomedical Image Segmentation.
   MICCAI. arXiv:1505.04597
.. [2] Cicek et al. (2016). 3D U-Net: Learning Dense Volumetric Segmentation from Sparse Annotation. MICCAI.
   arXiv:1606.06650
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["REDUCTIONS", "WeightedCrossEntropy", "affinity_loss", "distance_loss", "star_loss",
           "weighted_cross_entropy"]

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")


def _check_options(ignore_index: int | None, reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
        raise TypeError(f"ignore_index must be an int or None, got {ignore_index!r}")


def weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Pixel-wise softmax cross-entropy weighted by ``w(x)`` (paper eq. 1).

    Parameters
    ----------
    logits : (N, C, H, W) or (N, C, Z, Y, X) tensor of float
        Raw class scores (not probabilities) at the network's output size.
    target : (N, H, W) or (N, Z, Y, X) tensor of int
        Class ids in ``[0, C)``, or ``ignore_index``; cropped to the output size.
    weights : tensor of float, the shape of ``target``, optional
        Pixel-wise weights ``w(x) >= 0`` (e.g. :func:`biounet.core.weights.weight_map`), cropped like ``target``.
        All ones by default.
    ignore_index : int, optional
        Target value of unlabelled pixels, which contribute nothing (their logits get an exactly zero gradient)
        and are not counted. None: every target value must be a class id.
    reduction : {"mean", "sum", "none"}, optional
        ``"mean"``: ``sum_x w(x) CE(x)`` divided by the number of labelled pixels (not by the sum of weights),
        0 when no pixel is labelled. ``"sum"``: the sum. ``"none"``: the per-pixel map (the shape of ``target``),
        0 at ignored pixels.

    Returns
    -------
    loss : tensor
        Scalar (or the shape of ``target`` for ``"none"``), float32 or the logits' dtype if wider.

    Raises
    ------
    ValueError
        If ``logits`` is not 4-D or 5-D, ``target``/``weights`` do not have its shape less C (crop them to
        the network output size), a target value is outside ``[0, C)`` and not ``ignore_index``, a labelled
        pixel has a negative or non-finite weight, or ``reduction`` is unknown.
    TypeError
        If ``logits`` or ``weights`` is not floating point, ``target`` not integer, or ``ignore_index`` not int.

    Notes
    -----
    ``E = -(1/|L|) sum_{x in L} w(x) log p_{l(x)}(x)`` with ``p_k(x) = exp(a_k(x)) / sum_k' exp(a_k'(x))`` and
    ``L`` the labelled pixels. The paper prints eq. 1 without the minus sign and does not say sum or mean; the
    mean over pixels keeps the learning rate independent of the tile size, while dividing by ``sum w`` would
    undo the weighting's overall scale.

    References
    ----------
    .. [1] Ronneberger, Fischer, Brox (2015). U-Net. MICCAI, eq. 1. arXiv:1505.04597

    Examples
    --------
    >>> loss = weighted_cross_entropy(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long))
    >>> round(loss.item(), 6)  # ln 2
    0.693147
    """
    _check_options(ignore_index, reduction)
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(f"logits and target must be tensors, got {type(logits).__name__}, {type(target).__name__}")
    if logits.ndim not in (4, 5):
        raise ValueError(f"logits must be (N, C, H, W), got shape {tuple(logits.shape)} (volumes: (N, C, Z, Y, X))")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point raw scores, got dtype {logits.dtype}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target must hold integer class ids, got dtype {target.dtype}")
    expected = (logits.shape[0], *logits.shape[2:])
    for name, tensor in (("target", target), ("weights", weights)):
        if tensor is not None and tuple(tensor.shape) != expected:
            raise ValueError(
                f"{name} must have shape {expected} to match logits {tuple(logits.shape)}, got "
                f"{tuple(tensor.shape)}; crop it to the network's output size first"
            )
    if weights is not None and not weights.is_floating_point():
        raise TypeError(f"weights must be floating point, got dtype {weights.dtype}")

    num_classes = logits.shape[1]
    target = target.long()
    labelled = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    out_of_range = labelled & ((target < 0) | (target >= num_classes))
    bad_weight = labelled & ~((weights >= 0) & torch.isfinite(weights)) if weights is not None else out_of_range
    has_bad_target, has_bad_weight = torch.stack([out_of_range.any(), bad_weight.any()]).tolist()  # one sync
    if has_bad_target:
        values = torch.unique(target[out_of_range])[:10].tolist()
        raise ValueError(f"target values must be in [0, {num_classes}) or ignore_index={ignore_index}, got {values}")
    if has_bad_weight:
        raise ValueError("weights must be finite and >= 0 at labelled pixels")

    compute_dtype = torch.promote_types(logits.dtype, torch.float32)
    safe_target = torch.where(labelled, target, torch.zeros_like(target))
    per_pixel = F.cross_entropy(logits.to(compute_dtype), safe_target, reduction="none")
    scale = labelled.to(compute_dtype) if weights is None else torch.where(labelled, weights.to(compute_dtype), 0.0)
    per_pixel = per_pixel * scale
    if reduction == "none":
        return per_pixel
    total = per_pixel.sum()
    if reduction == "sum":
        return total
    return total / labelled.sum().clamp(min=1)


def distance_loss(predicted: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
    """Mean squared error of a predicted normalised distance map over the annotated pixels (``distance`` target).

    Parameters
    ----------
    predicted : (N, H, W) or (N, Z, Y, X) tensor
        Distance in [0, 1] (the sigmoid of the network's distance channel).
    target : tensor, the shape of ``predicted``
        :func:`biounet.core.targets.cell_distance` of the separated cells (0 on background).
    annotated : bool tensor, the shape of ``predicted``
        Pixels with a label; the others contribute nothing, not even a gradient.

    Returns
    -------
    Scalar tensor; 0 when no pixel is annotated.

    Examples
    --------
    >>> distance_loss(torch.tensor([[[0.5, 1.0]]]), torch.tensor([[[1.0, 1.0]]]), torch.tensor([[[True, False]]]))
    tensor(0.2500)
    """
    if predicted.shape != target.shape or annotated.shape != target.shape:
        raise ValueError(f"predicted {tuple(predicted.shape)}, target {tuple(target.shape)} and annotated "
                         f"{tuple(annotated.shape)} must have the same shape")
    if not bool(annotated.any()):
        return predicted.sum() * 0.0
    return ((predicted - target) ** 2)[annotated].mean()


def star_loss(prob_logit: torch.Tensor, distances: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor, *,
              ray_weight: float = 0.2) -> torch.Tensor:
    """StarDist's loss: binary cross-entropy of the object probability, plus ``ray_weight`` times the mean
    absolute error of the radial distances weighted by the true object probability (rays from near an object's
    centre matter most; background rays not at all).

    Parameters
    ----------
    prob_logit : (N, H, W) tensor
        The network's object-probability channel, before the sigmoid.
    distances : (N, n_rays, H, W) tensor
        Predicted radial distances in pixels.
    target : (N, H, W, 1 + n_rays) tensor
        :func:`biounet.core.starconvex.star_targets` of the label tiles.
    annotated : (N, H, W) bool tensor
        Pixels with a label; the others do not count.

    References
    ----------
    .. [1] Schmidt et al. (2018). MICCAI. doi:10.1007/978-3-030-00934-2_30 (``StarDist2D``: ``train_loss_weights
           (1, 0.2)``, ``masked_loss_mae``)

    Examples
    --------
    >>> target = torch.tensor([[[[1.0, 2.0, 2.0], [0.0, 0.0, 0.0]]]])   # (1, 1, 2, 3): a centre, a background px
    >>> loss = star_loss(torch.tensor([[[9.0, -9.0]]]), torch.tensor([[[[3.0, 0.0]], [[2.0, 5.0]]]]), target,
    ...                  torch.ones(1, 1, 2, dtype=torch.bool), ray_weight=1.0)
    >>> round(float(loss), 3)   # BCE ~0.0001; |3 - 2| and |2 - 2| at the centre, weight 1: MAE 0.5
    0.5
    """
    prob = target[..., 0]
    if not bool(annotated.any()):
        return prob_logit.sum() * 0.0 + distances.sum() * 0.0
    bce = nn.functional.binary_cross_entropy_with_logits(prob_logit[annotated], prob[annotated])
    weight = prob * annotated
    error = (distances - target[..., 1:].permute(0, 3, 1, 2)).abs().mean(dim=1)
    mae = (error * weight).sum() / weight.sum().clamp_min(1e-6)
    return bce + ray_weight * mae


def affinity_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of predicted affinities, each offset's channel balanced between its two values (as
    eq. 1's ``w_c`` balances classes: a long-range pair crosses a membrane far more often than a nearest one).

    Parameters
    ----------
    logits : (N, K, H, W) tensor
        The network's affinity channels, before the sigmoid.
    target : (N, H, W, K) tensor
        :func:`biounet.core.affinities.affinities` of the label tiles: 1 same cell, 0 not, -1 no target.

    References
    ----------
    .. [1] Wolf et al. (2020). The Mutex Watershed. IEEE TPAMI. arXiv:1904.12654

    Examples
    --------
    >>> target = torch.tensor([[[[1.0], [0.0], [-1.0]]]])   # (1, 1, 3, 1): same cell, not, no target
    >>> round(float(affinity_loss(torch.zeros(1, 1, 1, 3), target)), 4)   # log 2 for each counted pair
    0.6931
    """
    target = target.permute(0, 3, 1, 2)
    if logits.shape != target.shape:
        raise ValueError(f"affinity logits {tuple(logits.shape)} and targets {tuple(target.shape)} (channels last) "
                         "do not match")
    valid = target >= 0
    if not bool(valid.any()):
        return logits.sum() * 0.0
    positive = (target > 0.5) & valid
    dims = (0, 2, 3)
    count = valid.sum(dims, keepdim=True).clamp_min(1)
    share = positive.sum(dims, keepdim=True) / count
    weight = torch.where(positive, 0.5 / share.clamp_min(1e-3), 0.5 / (1 - share).clamp_min(1e-3)) * valid
    bce = nn.functional.binary_cross_entropy_with_logits(logits, target.clamp_min(0), reduction="none")
    return (bce * weight).sum() / valid.sum()


class WeightedCrossEntropy(nn.Module):
    """Module form of :func:`weighted_cross_entropy`; the options are checked at construction.

    Parameters
    ----------
    ignore_index : int, optional
        Target value of unlabelled pixels.
    reduction : {"mean", "sum", "none"}, optional
        See :func:`weighted_cross_entropy`.

    Raises
    ------
    ValueError
        If ``reduction`` is unknown.
    TypeError
        If ``ignore_index`` is not an int or None.

    Examples
    --------
    >>> criterion = WeightedCrossEntropy(ignore_index=-1)
    >>> target = torch.tensor([[[0, -1]]])
    >>> round(criterion(torch.zeros(1, 2, 1, 2), target, torch.ones(1, 1, 2)).item(), 6)
    0.693147
    """

    def __init__(self, *, ignore_index: int | None = None, reduction: Reduction = "mean") -> None:
        super().__init__()
        _check_options(ignore_index, reduction)
        self.ignore_index = ignore_index
        self.reduction: Reduction = reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C, [Z,] Y, X) logits, (N, [Z,] Y, X) target and weights -> loss; see :func:`weighted_cross_entropy`."""
        return weighted_cross_entropy(logits, target, weights, ignore_index=self.ignore_index, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"
