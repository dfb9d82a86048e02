"""Input checks shared by the measures: 2-D arrays of one shape, masks, labels, membrane probabilities, thresholds."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def check_2d(name: str, array: npt.NDArray[np.generic]) -> None:
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) array, got shape {array.shape}")


def check_same_shape(name_a: str, a: npt.NDArray[np.generic], name_b: str, b: npt.NDArray[np.generic]) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {name_a} {a.shape} vs {name_b} {b.shape}; they must be equal")


def check_mask(name: str, mask: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    array = np.asarray(mask)
    if array.dtype != np.bool_:
        raise TypeError(f"{name} must be a bool mask, got dtype {array.dtype}; build it with e.g. labels == 255")
    return array


def check_labels(name: str, labels: npt.ArrayLike) -> npt.NDArray[np.integer]:
    array = np.asarray(labels)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(
            f"{name} must be an integer label image, got dtype {array.dtype}; label images are never float or "
            f"bool (for a mask use scipy.ndimage.label, for whole-number floats use .astype(np.int64))"
        )
    return array


def check_membrane_prob(membrane_prob: npt.ArrayLike) -> npt.NDArray[np.float64]:
    array = np.asarray(membrane_prob)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
            or array.dtype == np.bool_):
        raise TypeError(f"membrane_prob must be a real-valued array, got dtype {array.dtype}")
    check_2d("membrane_prob", array)
    prob = array.astype(np.float64)
    if np.isnan(prob).any():
        raise ValueError(f"membrane_prob contains {int(np.isnan(prob).sum())} NaN values; expected values in [0, 1]")
    if prob.size and (prob.min() < 0.0 or prob.max() > 1.0):
        raise ValueError(
            f"membrane_prob must lie in [0, 1] (a probability, not logits or 0-255 intensities), "
            f"got range [{prob.min()}, {prob.max()}]"
        )
    return prob


def check_thresholds(thresholds: npt.ArrayLike) -> npt.NDArray[np.float64]:
    values = np.asarray(thresholds, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D sequence, got shape {values.shape}")
    if not np.isfinite(values).all() or values.min() < 0.0 or values.max() > 1.0:
        raise ValueError(f"thresholds must be finite values in [0, 1], got {values.tolist()}")
    return values


__all__ = ['check_2d', 'check_labels', 'check_mask', 'check_membrane_prob', 'check_same_shape', 'check_thresholds']
