"""The model contract every predictor shares: channels, classes, normalisation, tiling geometry and TTA.

:class:`Predictor` turns a float32 batch of input tiles into class probabilities of output tiles; a subclass only
runs the network's forward pass (:class:`biounet.inference.predict.TorchPredictor` on a PyTorch ``UNet``,
:class:`biounet.inference.exported.OnnxPredictor` on an ONNX export).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import numpy.typing as npt
import torch

from biounet.core.model import ModelConfig, axis_depths, geometry_sizes, same_padding_crop
from biounet.inference.tiling import TileGeometry
from biounet.inference.tta import dihedral_mean


class Predictor(ABC):
    """A network with its tiling contract; call it on a float32 batch ``(N, C, in_tile, in_tile)`` (a 3D U-Net's:
    ``(N, C, Z, Y, X)``, tiled by :mod:`biounet.inference.volumes`; its TTA turns and flips the (y, x) plane only).

    Returns class probabilities ``(N, K, out_tile, out_tile)`` as float32 numpy. With ``tta`` they are averaged
    over the 8 rotations/flips. For a same-padded network the outer :func:`~biounet.core.model.same_padding_crop`
    pixels of each tile are discarded (overlap with centre cropping; not seamless, since the network's zero
    padding differs from the true context).

    Attributes
    ----------
    normalization : str
        Intensity normalisation the network expects (:data:`biounet.data.normalization.NORMALIZATIONS`).
    class_names : list of str
        One name per class.
    tta : bool
        Average over the 8 rotations/flips (test-time augmentation).
    precision : str
        ``"fp32"`` or ``"bf16"``, the precision the forward pass runs in.
    pixel_size_um : (float, float) or None
        Pixel size ``(y, x)`` in micrometres of the images the network was trained on (:mod:`biounet.data.scale`);
        None where unknown.
    diameter_px : float or None
        The object diameter in pixels its training images were resampled to (:mod:`biounet.data.diameter`); new
        images are resampled the same way. None: images are predicted at their own scale.
    diameter_calibration : float
        How much larger the network's predicted cells measure than the true ones (its validation images), by
        which a measured diameter is divided.
    """

    normalization: str
    class_names: list[str]
    tta: bool
    precision: str
    pixel_size_um: tuple[float, float] | None = None
    diameter_px: float | None = None
    diameter_calibration: float = 1.0

    @property
    @abstractmethod
    def model_config(self) -> ModelConfig:
        """The architecture of the network (:class:`~biounet.core.model.ModelConfig`)."""

    @abstractmethod
    def _probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(N, K, H', W')`` of a float32 batch ``(N, C, H, W)`` from :meth:`_to_tensor`."""

    def _to_tensor(self, batch: npt.NDArray[np.float32]) -> torch.Tensor:
        """The batch as the tensor :meth:`_probabilities` takes (a CPU tensor unless a subclass moves it)."""
        return torch.from_numpy(batch)

    @property
    def in_channels(self) -> int:
        return self.model_config.in_channels

    @property
    def num_classes(self) -> int:
        return self.model_config.num_classes

    @property
    def output_channels(self) -> int:
        """Class probabilities plus the maps of its target (``ModelConfig.output_channels``)."""
        return self.model_config.output_channels

    @property
    def depth(self) -> int:
        return self.model_config.depth

    @property
    def dims(self) -> int:
        """2 for a network of images, 3 for a 3D U-Net of volumes."""
        return self.model_config.dims

    @property
    def padding(self) -> str:
        return self.model_config.padding

    @property
    def base_channels(self) -> int:
        return self.model_config.base_channels

    def geometry_sizes(self, in_tile: int) -> tuple[int, int]:
        """``(out_tile, margin)`` for an input tile side ``in_tile`` (a valid input size of the network)."""
        return geometry_sizes(in_tile, self.depth, self.padding)

    def geometry(self, in_tile: int) -> TileGeometry:
        """Tile sizes for an input tile side ``in_tile`` (a valid input size of the network)."""
        out, margin = self.geometry_sizes(in_tile)
        return TileGeometry(in_tile=in_tile, out_tile=out, margin=margin, align=2**self.depth)

    @torch.inference_mode()
    def __call__(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Class probabilities ``(N, K, out_tile, out_tile)`` float32 of a normalised batch ``(N, C, S, S)``.

        Raises
        ------
        ValueError
            If ``batch`` is not ``(N, in_channels, H, W)``.
        """
        if batch.ndim != 2 + self.dims or batch.shape[1] != self.in_channels:
            axes = "H, W" if self.dims == 2 else "Z, Y, X"
            raise ValueError(f"batch must be (N, {self.in_channels}, {axes}), got shape {batch.shape}")
        x = self._to_tensor(np.asarray(batch, dtype=np.float32))
        probs = dihedral_mean(self._probabilities, x) if self.tta else self._probabilities(x)
        if self.padding == "same":
            crops = [same_padding_crop(size, depth) for size, depth in zip(x.shape[2:], axis_depths(self.model_config))]
            probs = probs[(Ellipsis, *(slice(c, size - c) for c, size in zip(crops, probs.shape[2:])))]
        return np.ascontiguousarray(probs.float().cpu().numpy())
