"""The U-Net of Ronneberger, Fischer & Brox (2015), Fig. 1, and its size arithmetic.

Valid (unpadded) 3x3 convolutions shrink every map by 2 px per side, so the output is smaller than the input by
a fixed context margin (92 px per side for depth 4). The size functions below are the contract the overlap-tile
strategy (:mod:`biounet.inference.tiling`) relies on.

References
----------
.. [1] Ronneberger, Fischer, Brox (2015). U-Net: Convolutional Networks for Biomedical Image Segmentation.
   MICCAI. arXiv:1505.04597
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

Padding = Literal["valid", "same"]
Variant = Literal["paper", "release"]
PADDINGS: tuple[str, ...] = ("valid", "same")
VARIANTS: tuple[str, ...] = ("paper", "release")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a :class:`UNet`; stored in every checkpoint.

    ``variant="paper"`` is the network of the paper's Fig. 1 (31,030,658 parameters for 1 channel in, 2 classes);
    ``variant="release"`` matches the authors' released Caffe model (a ReLU after each up-convolution, the last
    up-convolution keeps ``2 * base_channels`` channels, dropout after the two deepest levels: 31,100,354).
    """

    in_channels: int = 1
    num_classes: int = 2
    depth: int = 4
    base_channels: int = 64
    padding: str = "valid"
    batch_norm: bool = False
    variant: str = "paper"
    dropout: float = 0.5
    distance_channels: int = 0  # 1 for the ``distance`` target: a regressed map beside the class scores
    ray_channels: int = 0  # n for the ``stardist`` target: an object probability, then n radial distances

    def __post_init__(self) -> None:
        if self.distance_channels not in (0, 1):
            raise ValueError(f"distance_channels must be 0 or 1, got {self.distance_channels}")
        if self.ray_channels != 0 and (self.ray_channels < 3 or self.distance_channels):
            raise ValueError(f"ray_channels must be 0, or >= 3 without a distance channel, got {self.ray_channels}")
        for name in ("in_channels", "base_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background and at least one class), got {self.num_classes}")
        if not 1 <= self.depth <= 8:
            raise ValueError(f"depth must be in 1..8, got {self.depth}")
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {self.padding!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def output_channels(self) -> int:
        """Channels of the network's output: the class scores, then the distance map or the star-convex outputs.

        >>> ModelConfig(num_classes=3, ray_channels=32).output_channels
        36
        """
        return self.num_classes + self.distance_channels + (1 + self.ray_channels if self.ray_channels else 0)


def output_probabilities(logits: torch.Tensor, num_classes: int, rays: int = 0) -> torch.Tensor:
    """The network's outputs as probabilities: softmax over the ``num_classes`` class scores (axis 1) and the
    sigmoid of the extra channels (a ``distance`` model's normalised distance to the cell outline, a ``stardist``
    model's object probability); the last ``rays`` channels, a star-convex model's radial distances in pixels,
    are kept non-negative.

    >>> output_probabilities(torch.zeros(1, 3, 1, 1), 2).flatten().tolist()
    [0.5, 0.5, 0.5]
    >>> output_probabilities(torch.tensor([0.0, 0.0, 0.0, -2.0, 7.5]).reshape(1, 5, 1, 1), 2, rays=2).flatten().tolist()
    [0.5, 0.5, 0.5, 0.0, 7.5]
    """
    if logits.shape[1] == num_classes:
        return torch.softmax(logits, dim=1)
    end = logits.shape[1] - rays
    parts = [torch.softmax(logits[:, :num_classes], dim=1), torch.sigmoid(logits[:, num_classes:end])]
    if rays:
        parts.append(torch.relu(logits[:, end:]))
    return torch.cat(parts, dim=1)


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by [BatchNorm and] ReLU; valid padding shrinks H and W by 4."""

    def __init__(self, in_channels: int, out_channels: int, *, padding: str = "valid", batch_norm: bool = False):
        pad = 1 if padding == "same" else 0
        layers: list[nn.Module] = []
        for cin in (in_channels, out_channels):
            layers.append(nn.Conv2d(cin, out_channels, kernel_size=3, padding=pad, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def center_crop(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Crop the last two axes of ``x`` to ``size`` around the centre (the paper's "copy and crop")."""
    top, left = (x.shape[-2] - size[0]) // 2, (x.shape[-1] - size[1]) // 2
    if top < 0 or left < 0:
        raise ValueError(f"cannot crop {tuple(x.shape[-2:])} to larger size {tuple(size)}")
    return x[..., top : top + size[0], left : left + size[1]]


def init_he_normal(module: nn.Module) -> None:
    """Gaussian init with std sqrt(2 / fan_in), biases 0 (paper section 3).

    For a transposed convolution the fan-in of an output pixel is ``in_channels * k * k / stride**2``
    = ``in_channels`` for the 2x2 stride-2 up-convolution.
    """
    if isinstance(module, nn.ConvTranspose2d):
        fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
        fan_in //= module.stride[0] * module.stride[1]
    elif isinstance(module, nn.Conv2d):
        fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
    else:
        return
    nn.init.normal_(module.weight, mean=0.0, std=math.sqrt(2.0 / fan_in))
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015, Fig. 1), fully convolutional.

    Parameters
    ----------
    config : ModelConfig
        Architecture. The defaults are the paper's network: 1 channel in, 2 classes, 4 poolings, 64 base channels,
        valid convolutions, no batch norm, dropout 0.5 at the end of the contracting path.
    initialize : bool
        Draw the paper's initial weights (:func:`init_he_normal`); False leaves PyTorch's defaults, for a network
        whose weights are loaded next.

    Examples
    --------
    >>> net = UNet(ModelConfig())
    >>> sum(p.numel() for p in net.parameters())
    31030658
    >>> net.output_size(572)
    388
    """

    def __init__(self, config: ModelConfig | None = None, *, initialize: bool = True) -> None:
        super().__init__()
        self.config = config = config or ModelConfig()
        self.depth = config.depth
        widths = [config.base_channels * 2**level for level in range(config.depth + 1)]
        block = dict(padding=config.padding, batch_norm=config.batch_norm)
        self.encoder = nn.ModuleList(
            [DoubleConv(config.in_channels, widths[0], **block)]  # type: ignore[arg-type]
            + [DoubleConv(widths[i - 1], widths[i], **block) for i in range(1, config.depth + 1)]  # type: ignore[arg-type]
        )
        # Dropout "at the end of the contracting path"; the release model also drops after the level above it.
        dropout_levels = {config.depth} if config.variant == "paper" else {config.depth - 1, config.depth}
        self.dropout_levels = sorted(level for level in dropout_levels if level >= 1)
        self.upsamplers = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(config.depth)):
            up_out = widths[level]
            if config.variant == "release" and level == 0:
                up_out = widths[1]  # the released model's last up-convolution keeps 2 * base (128 for base 64)
            up: nn.Module = nn.ConvTranspose2d(widths[level + 1], up_out, kernel_size=2, stride=2)
            if config.variant == "release":
                up = nn.Sequential(up, nn.ReLU(inplace=True))
            self.upsamplers.append(up)
            self.decoder.append(DoubleConv(widths[level] + up_out, widths[level], **block))  # type: ignore[arg-type]
        self.head = nn.Conv2d(widths[0], config.output_channels, kernel_size=1)
        if initialize:  # False where stored weights replace them at once (0.2 s for the paper's 31 M parameters)
            self.apply(init_he_normal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> logits (N, num_classes, H', W') with H' = ``output_size(H)``.

        H and W must be valid input sizes (see :func:`valid_input_sizes`); the output is raw class scores.
        """
        skips: list[torch.Tensor] = []
        for level, block in enumerate(self.encoder):
            x = block(x)
            if level in self.dropout_levels:
                x = F.dropout(x, p=self.config.dropout, training=self.training)
            if level < self.depth:
                skips.append(x)
                x = F.max_pool2d(x, kernel_size=2)
        for up, block, skip in zip(self.upsamplers, self.decoder, reversed(skips)):
            x = up(x)
            x = block(torch.cat([x, center_crop(skip, x.shape[-2:])], dim=1))
        return self.head(x)

    def output_size(self, input_size: int) -> int:
        """Output side length for an input side length (see :func:`output_size`)."""
        return output_size(input_size, self.config.depth, self.config.padding)

    @property
    def margin(self) -> int:
        """Context consumed on each side of a tile, in pixels (92 for the paper's network)."""
        return context_margin(self.config.depth, self.config.padding)


def output_size(input_size: int, depth: int = 4, padding: str = "valid") -> int:
    """Output side length of a U-Net for an input side length.

    Raises ``ValueError`` naming the nearest valid sizes when ``input_size`` is not valid: every map before a
    pooling must have an even size, and every map must stay non-empty.

    >>> output_size(572)
    388
    >>> output_size(188)
    4
    >>> output_size(64, depth=2, padding="same")
    64
    """
    size = _try_output_size(input_size, depth, padding)
    if size is None:
        kind = "a same-padded U-Net" if padding == "same" else "a U-Net with valid convolutions"
        raise ValueError(
            f"input size {input_size} is not valid for {kind} of depth {depth}; "
            f"nearest valid sizes: {_nearest_text(input_size, depth, padding)}"
        )
    return size


def _try_output_size(input_size: int, depth: int, padding: str) -> int | None:
    """Output size, or None when ``input_size`` is not valid (odd map before a pooling, or an empty map)."""
    if padding == "same":
        return input_size if input_size >= 2**depth and input_size % 2**depth == 0 else None
    size = input_size
    for _ in range(depth):
        size -= 4
        if size <= 0 or size % 2:
            return None
        size //= 2
    size -= 4
    for _ in range(depth):
        if size <= 0:
            return None
        size = 2 * size - 4
    return size if size > 0 else None


def smallest_input_size(depth: int = 4, padding: str = "valid") -> int:
    """Smallest valid input side length (188 for the paper's network; ``2**depth`` when same-padded)."""
    step = 2**depth
    if padding == "same":
        return step
    # Valid sizes are step * k + c; the smallest has a positive output after every up-convolution.
    size = 2 ** (depth + 3) - 4 + step
    while _try_output_size(size, depth, padding) is None:
        size += step
    return size


def valid_input_sizes(depth: int = 4, padding: str = "valid", *, up_to: int = 1024) -> list[int]:
    """All valid input side lengths up to ``up_to`` (``16k + 60``, k >= 8, for the paper's network).

    >>> valid_input_sizes(up_to=580)[:3], valid_input_sizes(up_to=580)[-1]
    ([188, 204, 220], 572)
    """
    start = smallest_input_size(depth, padding)
    return list(range(start, up_to + 1, 2**depth))


def nearest_valid_sizes(size: int, depth: int = 4, padding: str = "valid") -> tuple[int, int]:
    """The valid input sizes just below and above ``size`` (equal when ``size`` is valid).

    Below is clamped to the smallest valid size.

    >>> nearest_valid_sizes(570)
    (556, 572)
    """
    smallest = smallest_input_size(depth, padding)
    step = 2**depth
    if size <= smallest:
        return smallest, smallest
    below = smallest + (size - smallest) // step * step
    above = below if below == size else below + step
    return below, above


def nearest_valid_size(size: int, depth: int = 4, padding: str = "valid") -> int:
    """The valid input size closest to ``size`` (ties go up).

    >>> nearest_valid_size(512)
    508
    """
    below, above = nearest_valid_sizes(size, depth, padding)
    return below if size - below < above - size else above


def _nearest_text(size: int, depth: int, padding: str) -> str:
    below, above = nearest_valid_sizes(size, depth, padding)
    return f"{below} or {above}" if below != above else str(below)


def context_margin(depth: int = 4, padding: str = "valid") -> int:
    """Pixels of context consumed on each side of a tile (92 for depth 4, 0 for a same-padded net).

    >>> context_margin()
    92
    """
    if padding == "same":
        return 0
    size = smallest_input_size(depth, padding)
    return (size - output_size(size, depth, padding)) // 2


class NetworkShape(Protocol):
    """Anything naming a U-Net's depth and padding: a :class:`ModelConfig` or a predictor."""

    @property
    def depth(self) -> int: ...

    @property
    def padding(self) -> str: ...


def same_padding_crop(in_tile: int, depth: int) -> int:
    """Pixels discarded on each side of a same-padded tile: an eighth of the tile, rounded up to ``2**depth``.

    >>> same_padding_crop(256, 4)
    32
    """
    align = 2**depth
    return int(math.ceil(in_tile / 8 / align)) * align


def geometry_sizes(in_tile: int, depth: int = 4, padding: str = "valid") -> tuple[int, int]:
    """``(out_tile, margin)`` for an input tile side ``in_tile`` (a valid input size of the network).

    A valid-convolution network predicts ``out_tile = output_size(in_tile)`` from ``margin`` pixels of context per
    side; a same-padded one keeps the centre of its tile, discarding :func:`same_padding_crop` pixels per side.

    >>> geometry_sizes(572)
    (388, 92)
    >>> geometry_sizes(256, 4, "same")
    (192, 32)
    """
    out = output_size(in_tile, depth, padding)
    if padding == "same":
        margin = same_padding_crop(in_tile, depth)
        return in_tile - 2 * margin, margin
    return out, (in_tile - out) // 2


def smallest_tile(network: NetworkShape) -> int:
    """Smallest input tile whose output spans at least one pooling period ``2**depth``.

    >>> smallest_tile(ModelConfig())
    204
    """
    align = 2**network.depth
    size = smallest_input_size(network.depth, network.padding)
    while geometry_sizes(size, network.depth, network.padding)[0] < align:
        size += align
    return size


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
