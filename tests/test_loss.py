"""Tests for biounet.training.loss: golden values, the ignore label, reductions, errors."""

from __future__ import annotations

import math

import pytest
import torch

from biounet.training.loss import WeightedCrossEntropy, weighted_cross_entropy


def test_zero_logits_unit_weights_is_ln2():
    logits = torch.zeros(2, 2, 5, 7)
    target = torch.randint(0, 2, (2, 5, 7))
    loss = weighted_cross_entropy(logits, target, torch.ones(2, 5, 7))
    torch.testing.assert_close(loss, torch.tensor(math.log(2.0)))


def test_weighted_loss_golden():
    # one image, 1 x 2 pixels; scores (0, ln 3): p = (1/4, 3/4)
    logits = torch.tensor([[[[0.0, 0.0]], [[math.log(3.0), math.log(3.0)]]]])
    target = torch.tensor([[[1, 0]]])  # CE = -ln(3/4) = ln(4/3), then -ln(1/4) = ln 4
    weights = torch.tensor([[[2.0, 0.5]]])
    per_pixel = torch.tensor([[[2.0 * math.log(4 / 3), 0.5 * math.log(4.0)]]])
    torch.testing.assert_close(weighted_cross_entropy(logits, target, weights, reduction="none"), per_pixel)
    torch.testing.assert_close(weighted_cross_entropy(logits, target, weights, reduction="sum"), per_pixel.sum())
    # mean divides by the number of pixels (2), not by the sum of weights (2.5)
    torch.testing.assert_close(weighted_cross_entropy(logits, target, weights), per_pixel.sum() / 2)


def test_ignore_index_contributes_nothing_and_is_not_counted():
    logits = torch.tensor([[[[0.0, 5.0, -3.0]], [[0.0, 1.0, 2.0]]]])
    target = torch.tensor([[[1, -1, -1]]])
    weights = torch.tensor([[[3.0, float("nan"), 100.0]]])  # weights at ignored pixels are never used
    loss = weighted_cross_entropy(logits, target, weights, ignore_index=-1)
    torch.testing.assert_close(loss, torch.tensor(3.0 * math.log(2.0)))  # one labelled pixel, CE = ln 2
    logits.requires_grad_(True)
    weighted_cross_entropy(logits, target, weights, ignore_index=-1).backward()
    assert torch.isfinite(logits.grad).all()
    assert torch.all(logits.grad[..., 1:] == 0)


def test_all_ignored_gives_zero_not_nan():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), 255)
    loss = weighted_cross_entropy(logits, target, ignore_index=255)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(logits.grad == 0)


def test_ignore_index_may_be_a_class_id():
    logits = torch.zeros(1, 3, 1, 2)
    loss = weighted_cross_entropy(logits, torch.tensor([[[2, 0]]]), ignore_index=2)
    torch.testing.assert_close(loss, torch.tensor(math.log(3.0)))


def test_module_matches_function_and_gradients_flow():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 6, 6, generator=generator, requires_grad=True)
    target = torch.randint(0, 3, (2, 6, 6), generator=generator)
    weights = torch.rand(2, 6, 6, generator=generator) * 10
    criterion = WeightedCrossEntropy(reduction="sum")
    loss = criterion(logits, target, weights)
    torch.testing.assert_close(loss, weighted_cross_entropy(logits, target, weights, reduction="sum"))
    reference = (weights * torch.nn.functional.cross_entropy(logits, target, reduction="none")).sum()
    torch.testing.assert_close(loss, reference)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert "reduction='sum'" in repr(criterion)


def test_half_precision_logits_are_computed_in_float32():
    logits = torch.zeros(1, 2, 2, 2, dtype=torch.bfloat16)
    loss = weighted_cross_entropy(logits, torch.zeros(1, 2, 2, dtype=torch.long))
    assert loss.dtype == torch.float32


def test_errors():
    logits = torch.zeros(1, 2, 4, 4)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"target must have shape \(1, 4, 4\) .* crop it to the network's output"):
        weighted_cross_entropy(logits, torch.zeros(1, 6, 6, dtype=torch.long), torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match=r"weights must have shape \(1, 4, 4\) .* got \(1, 6, 6\)"):
        weighted_cross_entropy(logits, target, torch.ones(1, 6, 6))
    with pytest.raises(ValueError, match=r"logits must be \(N, C, H, W\), got shape \(2, 4, 4\)"):
        weighted_cross_entropy(logits[0], target)
    with pytest.raises(ValueError, match=r"target values must be in \[0, 2\) or ignore_index=None, got \[-1, 2\]"):
        weighted_cross_entropy(logits, torch.tensor([[[0, -1, 2, 1]] * 4]))
    with pytest.raises(ValueError, match="weights must be finite and >= 0 at labelled pixels"):
        weighted_cross_entropy(logits, target, -torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match=r"reduction must be one of \('mean', 'sum', 'none'\), got 'avg'"):
        weighted_cross_entropy(logits, target, reduction="avg")
    with pytest.raises(ValueError, match="reduction must be one of"):
        WeightedCrossEntropy(reduction="avg")
    with pytest.raises(TypeError, match="target must hold integer class ids, got dtype torch.float32"):
        weighted_cross_entropy(logits, target.float())
    with pytest.raises(TypeError, match="logits must be floating point"):
        weighted_cross_entropy(logits.long(), target)
    with pytest.raises(TypeError, match="weights must be floating point"):
        weighted_cross_entropy(logits, target, torch.ones(1, 4, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="ignore_index must be an int or None, got 1.5"):
        WeightedCrossEntropy(ignore_index=1.5)
