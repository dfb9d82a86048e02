"""The sample type every dataset loader and generator returns: a normalised image with its class and instance labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IGNORE = -1
"""Class id of unannotated pixels; the loss gives them no weight."""


@dataclass(eq=False)
class Sample:
    """One 2-D training or test image with its labels.

    Attributes
    ----------
    name : str
        Where it came from, e.g. ``"isbi2012/train/3"``, ``"DIC-C2DH-HeLa/01/t067"`` or a ``pairs`` file stem.
    image : (H, W, C) ndarray of float32
        Normalised intensities (the loader's ``normalization`` mode).
    classes : (H, W) ndarray of int64 or None
        Class ids ``0..K-1``, :data:`IGNORE` (-1) for unannotated pixels; None for an unlabeled image.
    instances : (H, W) ndarray of int32 or None
        Instance ids (0 = none) for the weight map's border term; None for an unlabeled image. They are not
        always ``classes > 0``: for ISBI 2012 the instances are cells while class 1 is the membrane between them.
    pixel_size_um : (float, float) or None
        Pixel size ``(y, x)`` in micrometres from the image file's metadata; None where it records none.

    Samples compare by identity (``eq=False``): comparing arrays elementwise has no single truth value.

    Raises
    ------
    TypeError
        If an array has the wrong dtype.
    ValueError
        If an array has the wrong shape, or labels are given without instances.
    """

    name: str
    image: npt.NDArray[np.float32]
    classes: npt.NDArray[np.int64] | None
    instances: npt.NDArray[np.int32] | None
    pixel_size_um: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.image.ndim != 3:
            raise ValueError(f"sample {self.name!r}: image must be (H, W, C), got shape {self.image.shape}")
        if self.image.dtype != np.float32:
            raise TypeError(f"sample {self.name!r}: image must be float32, got {self.image.dtype}")
        if (self.classes is None) != (self.instances is None):
            raise ValueError(f"sample {self.name!r}: classes and instances must both be given or both be None")
        for field, array, dtype in (("classes", self.classes, np.int64), ("instances", self.instances, np.int32)):
            if array is None:
                continue
            if array.shape != self.image.shape[:2]:
                raise ValueError(
                    f"sample {self.name!r}: {field} shape {array.shape} does not match image {self.image.shape[:2]}"
                )
            if array.dtype != dtype:
                raise TypeError(f"sample {self.name!r}: {field} must be {np.dtype(dtype)}, got {array.dtype}")

    @property
    def labeled(self) -> bool:
        """Whether the sample has labels."""
        return self.classes is not None
