"""Shared fixtures: a seeded rng, tiny networks, and the path of the shared real data (may be absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

torch.set_num_threads(2)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or a clean skip where the shared data is absent (a user's machine)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


def assert_labels_agree_where_decided(labels: np.ndarray, expected: np.ndarray, probabilities: np.ndarray,
                                      tolerance: float) -> None:
    """Labels of two computations of one network (other kernels, fused, another process) are equal wherever the
    ``expected`` probabilities ``(C, ...)`` put their top two classes more than ``2 * tolerance`` apart, ``tolerance``
    being what the two may differ by; closer than that either computation's rounding may pick the other class."""
    top_two = np.sort(probabilities, axis=0)[-2:]
    decided = top_two[1] - top_two[0] > 2 * tolerance
    assert decided.mean() > 0.5, f"only {decided.mean():.0%} of the pixels decided: the comparison means little"
    np.testing.assert_array_equal(labels[decided], expected[decided])
