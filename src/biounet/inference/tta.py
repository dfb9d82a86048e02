"""Test-time augmentation over the dihedral group: the 8 rotations and flips of an image's last two axes."""

from __future__ import annotations

from collections.abc import Callable

import torch

DIHEDRAL_ORDER = 8


def dihedral(x: torch.Tensor, k: int, inverse: bool = False) -> torch.Tensor:
    """The ``k``-th of the 8 rotations/flips of the last two axes (``k`` in 0..7), or its inverse.

    ``k % 4`` quarter turns, followed by a left-right flip for ``k >= 4``.
    """
    if not 0 <= k < DIHEDRAL_ORDER:
        raise ValueError(f"k must be in 0..{DIHEDRAL_ORDER - 1}, got {k}")
    if inverse:
        x = torch.flip(x, dims=(-1,)) if k >= 4 else x
        return torch.rot90(x, -(k % 4), dims=(-2, -1))
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


def dihedral_mean(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Mean of ``forward`` over the 8 rotations/flips of square tiles ``x``, each mapped back before averaging.

    Parameters
    ----------
    forward : callable
        ``(N, C, S, S) -> (N, K, S', S')``, e.g. class probabilities of a network.
    x : (N, C, S, S) tensor
        A batch of square tiles.

    Returns
    -------
    mean : (N, K, S', S') tensor
    """
    total = forward(x)
    for k in range(1, DIHEDRAL_ORDER):
        total = total + dihedral(forward(dihedral(x, k)), k, inverse=True)
    return total / DIHEDRAL_ORDER
