"""The U-Net of Ronneberger, Fischer & Brox (2015), Fig. 1, its 3D form (Cicek et al. 2016), and their size arithmetic.

Valid (unpadded) 3x3 convolutions shrink every map by 2 px per side, so the output is smaller than the input by
a fixed context margin (92 px per side for depth 4). The size functions below are the contract the overlap-tile
strategy (:mod:`biounet.inference.tiling`) relies on.

The 3D network (``ModelConfig.dims = 3``) replaces every operation by its 3D counterpart: 3x3x3 convolutions,
2x2x2 max pooling and up-convolution, a 1x1x1 output layer [2]_. For anisotropic voxels the top
``ModelConfig.flat_levels`` levels convolve (1x3x3) and pool (1x2x2) in-plane only, as nnU-Net does [3]_; the
size arithmetic then works per axis (:func:`output_shape`): along z, the network is a U-Net of depth
``depth - flat_levels``.

References
----------
.. [1] Ronneberger, Fischer, Brox (2015). U-Net: Convolutional Networks for Biomedical Image Segmentation.
   MICCAI. arXiv:1505.04597
.. [2] Cicek, Abdulkadir, Lienkamp, Brox, Ronneberger (2016). 3D U-Net: Learning Dense Volumetric Segmentation
   from Sparse Annotation. MICCAI. arXiv:1606.06650
.. [3] Isensee, Jaeger, Kohl, Petersen, Maier-Hein (2021). nnU-Net: a self-configuring method for deep
   learning-based biomedical image segmentation. Nature Methods 18, 203-211. doi:10.1038/s41592-020-01008-z
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

Padding = Literal["valid", "same"]
Variant = Literal["paper", "release", "cicek"]
PADDINGS: tuple[str, ...] = ("valid", "same")
VARIANTS: tuple[str, ...] = ("paper", "release", "cicek")
DIMS: tuple[int, ...] = (2, 3)
Kernel = int | tuple[int, ...]


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a :class:`UNet`; stored in every checkpoint.

    ``variant="paper"`` is the network of the paper's Fig. 1 (31,030,658 parameters for 1 channel in, 2 classes);
    ``variant="release"`` matches the authors' released Caffe model (a ReLU after each up-convolution, the last
    up-convolution keeps ``2 * base_channels`` channels, dropout after the two deepest levels: 31,100,354).
    ``variant="cicek"`` (3D only) has the widths of Cicek et al.'s 3D U-Net: the first convolution of each analysis
    level has half the level's channels, up-convolutions keep their channels and have no bias, and convolutions
    keep their bias beside batch norm, as in the authors' Caffe network (:func:`cicek_config`).

    ``dims`` is 2 for images (N, C, Y, X) and 3 for volumes (N, C, Z, Y, X). ``flat_levels`` (3D only) is how many
    top levels convolve (1x3x3) and pool (1x2x2) in-plane only, for anisotropic voxels
    (:func:`anisotropic_levels`); deeper levels and the bottom are fully 3D. Checkpoints without these keys load
    as 2D networks.
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
    affinity_channels: int = 0  # k for the ``affinities`` target: one affinity per offset (biounet.core.affinities)
    dims: int = 2  # 2: images (N, C, Y, X); 3: volumes (N, C, Z, Y, X)
    flat_levels: int = 0  # 3D only: top levels with (1, 3, 3) convolutions and (1, 2, 2) pooling

    def __post_init__(self) -> None:
        if self.distance_channels not in (0, 1):
            raise ValueError(f"distance_channels must be 0 or 1, got {self.distance_channels}")
        if self.ray_channels != 0 and (self.ray_channels < 3 or self.distance_channels):
            raise ValueError(f"ray_channels must be 0, or >= 3 without a distance channel, got {self.ray_channels}")
        if self.affinity_channels < 0 or (self.affinity_channels and (self.ray_channels or self.distance_channels)):
            raise ValueError(f"affinity_channels must be >= 0, and 0 beside rays or a distance channel, got "
                             f"{self.affinity_channels}")
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
        self._check_dims()

    def _check_dims(self) -> None:
        if self.dims not in DIMS:
            raise ValueError(f"dims must be one of {DIMS}, got {self.dims!r}")
        if self.dims == 2 and self.flat_levels != 0:
            raise ValueError(f"flat_levels is for 3D networks only (dims=3); got flat_levels={self.flat_levels} "
                             "with dims=2")
        if not 0 <= self.flat_levels <= self.depth:
            raise ValueError(f"flat_levels must be in 0..depth ({self.depth}), got {self.flat_levels}")
        if self.variant == "cicek" and self.dims != 3:
            raise ValueError(f"variant 'cicek' is a 3D network (dims=3), got dims={self.dims}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def output_channels(self) -> int:
        """Channels of the network's output: the class scores, then the distance map, the star-convex outputs or the
        affinities.

        >>> ModelConfig(num_classes=3, ray_channels=32).output_channels
        36
        """
        rays = 1 + self.ray_channels if self.ray_channels else 0
        return self.num_classes + self.distance_channels + rays + self.affinity_channels


def cicek_config(in_channels: int = 3, num_classes: int = 3) -> ModelConfig:
    """The 3D U-Net of Cicek et al. (2016), Fig. 1: 3 poolings, 32-64 / 64-128 / 128-256 / 256-512 channels,
    batch norm before each ReLU, valid 3x3x3 convolutions (132x132x116 voxels in, 44x44x28 out).

    19,069,955 parameters counting convolution weights and biases (``count_parameters(net, include_norm=False)``);
    dropout stays this project's: at the end of the contracting path.

    >>> output_shape((116, 132, 132), cicek_config())
    (28, 44, 44)
    """
    return ModelConfig(in_channels=in_channels, num_classes=num_classes, depth=3, base_channels=32, batch_norm=True,
                       variant="cicek", dims=3)


def anisotropic_levels(voxel_size_zyx: Sequence[float], depth: int) -> int:
    """How many top levels of a 3D U-Net should convolve and pool in-plane only (``ModelConfig.flat_levels``).

    nnU-Net's rule (Isensee et al. 2021, ``get_pool_and_conv_props``): an axis whose spacing is at least twice
    the finest spacing is not pooled. Each in-plane pooling doubles the in-plane spacing, so the level is
    in-plane only while ``z >= 2 * in-plane``; the count is capped at ``depth``.

    Parameters
    ----------
    voxel_size_zyx : sequence of 3 floats
        Voxel size (z, y, x), any unit; each > 0. The in-plane spacing is the finer of y and x.
    depth : int
        Number of poolings of the network, >= 0.

    >>> anisotropic_levels((0.284, 0.127, 0.127), 3), anisotropic_levels((1.0, 1.0, 1.0), 3)
    (1, 0)
    """
    voxel = tuple(float(v) for v in voxel_size_zyx)
    if len(voxel) != 3 or not all(math.isfinite(v) and v > 0 for v in voxel):
        raise ValueError(f"voxel_size_zyx must be 3 positive sizes (z, y, x), got {tuple(voxel_size_zyx)}")
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    z_size, in_plane = voxel[0], min(voxel[1:])
    levels = 0
    while levels < depth and z_size >= 2 * in_plane:
        levels += 1
        in_plane *= 2
    return levels


def output_probabilities(logits: torch.Tensor, num_classes: int, rays: int = 0) -> torch.Tensor:
    """The network's outputs as probabilities: softmax over the ``num_classes`` class scores (axis 1) and the
    sigmoid of the extra channels (a ``distance`` model's normalised distance to the cell outline, a ``stardist``
    model's object probability, an ``affinities`` model's affinities); the last ``rays`` channels, a star-convex model's radial distances in pixels,
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


def _layers(dims: int) -> tuple[type[nn.Module], type[nn.Module], type[nn.Module]]:
    """(convolution, batch norm, up-convolution) classes for images (dims 2) or volumes (dims 3)."""
    if dims == 2:
        return nn.Conv2d, nn.BatchNorm2d, nn.ConvTranspose2d
    if dims == 3:
        return nn.Conv3d, nn.BatchNorm3d, nn.ConvTranspose3d
    raise ValueError(f"dims must be one of {DIMS}, got {dims!r}")


class DoubleConv(nn.Sequential):
    """Two 3x3 (3x3x3, or in-plane 1x3x3) convolutions, each followed by [BatchNorm and] ReLU; valid padding
    shrinks every axis the kernel spans by 4.

    ``mid_channels`` is the first convolution's width (``out_channels`` unless given: Cicek et al. halve it in
    the analysis path); ``bias`` defaults to ``not batch_norm``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, padding: str = "valid", batch_norm: bool = False,
                 dims: int = 2, kernel_size: Kernel = 3, mid_channels: int | None = None,
                 bias: bool | None = None):
        conv, norm, _ = _layers(dims)
        pad: Kernel = 0
        if padding == "same":
            pad = kernel_size // 2 if isinstance(kernel_size, int) else tuple(k // 2 for k in kernel_size)
        bias = not batch_norm if bias is None else bias
        mid = out_channels if mid_channels is None else mid_channels
        layers: list[nn.Module] = []
        for cin, cout in ((in_channels, mid), (mid, out_channels)):
            layers.append(conv(cin, cout, kernel_size=kernel_size, padding=pad, bias=bias))
            if batch_norm:
                layers.append(norm(cout))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def center_crop(x: torch.Tensor, size: Sequence[int] | torch.Size) -> torch.Tensor:
    """Crop the last ``len(size)`` axes of ``x`` to ``size`` around the centre (the paper's "copy and crop").

    >>> center_crop(torch.zeros(1, 1, 5, 6, 7), (1, 2, 3)).shape
    torch.Size([1, 1, 1, 2, 3])
    """
    axes = len(size)
    starts = [(x.shape[axis - axes] - size[axis]) // 2 for axis in range(axes)]
    if any(start < 0 for start in starts):
        raise ValueError(f"cannot crop {tuple(x.shape[-axes:])} to larger size {tuple(size)}")
    return x[(..., *(slice(start, start + length) for start, length in zip(starts, size)))]


def init_he_normal(module: nn.Module) -> None:
    """Gaussian init with std sqrt(2 / fan_in), biases 0 (paper section 3).

    For a transposed convolution the fan-in of an output pixel is ``in_channels * prod(kernel) / prod(stride)``
    = ``in_channels`` for the 2x2 (2x2x2, 1x2x2) stride-2 up-convolution.
    """
    if isinstance(module, (nn.ConvTranspose2d, nn.ConvTranspose3d)):
        fan_in = module.in_channels * math.prod(module.kernel_size) // math.prod(module.stride)
    elif isinstance(module, (nn.Conv2d, nn.Conv3d)):
        fan_in = module.in_channels * math.prod(module.kernel_size)
    else:
        return
    nn.init.normal_(module.weight, mean=0.0, std=math.sqrt(2.0 / fan_in))
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def level_kernels(config: ModelConfig) -> tuple[list[Kernel], list[Kernel]]:
    """``(conv, pool)``: the convolution kernel of each level 0..depth and the pooling (and up-convolution)
    kernel below each level 0..depth-1.

    Levels above ``flat_levels`` are in-plane only in 3D: kernel (1, 3, 3), pooling (1, 2, 2).

    >>> level_kernels(ModelConfig(dims=3, depth=2, flat_levels=1))
    ([(1, 3, 3), 3, 3], [(1, 2, 2), 2])
    """
    conv: list[Kernel] = [(1, 3, 3) if level < config.flat_levels else 3 for level in range(config.depth + 1)]
    pool: list[Kernel] = [(1, 2, 2) if level < config.flat_levels else 2 for level in range(config.depth)]
    return conv, pool


def level_widths(config: ModelConfig) -> tuple[list[int], list[int]]:
    """``(mid, out)``: the channels of each level's first and second convolution, levels 0..depth.

    >>> level_widths(ModelConfig(depth=2, base_channels=8))
    ([8, 16, 32], [8, 16, 32])
    >>> level_widths(cicek_config())
    ([32, 64, 128, 256], [64, 128, 256, 512])
    """
    if config.variant == "cicek":  # "doubled before each max pooling": the first convolution has half the channels
        mid = [config.base_channels * 2**level for level in range(config.depth + 1)]
        return mid, [2 * width for width in mid]
    widths = [config.base_channels * 2**level for level in range(config.depth + 1)]
    return widths, widths


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015, Fig. 1), fully convolutional, on images or volumes (Cicek et al. 2016).

    Parameters
    ----------
    config : ModelConfig
        Architecture. The defaults are the paper's network: 1 channel in, 2 classes, 4 poolings, 64 base channels,
        valid convolutions, no batch norm, dropout 0.5 at the end of the contracting path. ``dims=3`` builds the
        3D network (:func:`cicek_config` is Cicek et al.'s).
    initialize : bool
        Draw the paper's initial weights (:func:`init_he_normal`); False leaves PyTorch's defaults, for a network
        whose weights are loaded next.

    Notes
    -----
    Dropout is element-wise (``F.dropout``) in 2D and 3D alike, as the authors' Caffe ``Dropout`` layer: the
    channel-wise ``Dropout3d`` would drop whole feature maps of the bottom level, a far stronger regulariser than
    the paper's.

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
        conv, pool = level_kernels(config)  # [3, ...], [2, ...] unless 3D levels are flat
        self.pool_kernels: list[Kernel] = pool
        mid, out = level_widths(config)
        conv_layer, _, up_conv = _layers(config.dims)
        block: dict[str, Any] = {"padding": config.padding, "batch_norm": config.batch_norm, "dims": config.dims}
        if config.variant == "cicek":  # the authors' Caffe convolutions keep their bias beside batch norm
            block["bias"] = True
        self.encoder = nn.ModuleList(
            [DoubleConv(config.in_channels if level == 0 else out[level - 1], out[level], kernel_size=conv[level],
                        mid_channels=mid[level], **block) for level in range(config.depth + 1)]
        )
        # Dropout "at the end of the contracting path"; the release model also drops after the level above it.
        dropout_levels = {config.depth - 1, config.depth} if config.variant == "release" else {config.depth}
        self.dropout_levels = sorted(level for level in dropout_levels if level >= 1)
        self.upsamplers = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(config.depth)):
            up_out = out[level]
            if config.variant == "release" and level == 0:
                up_out = out[1]  # the released model's last up-convolution keeps 2 * base (128 for base 64)
            elif config.variant == "cicek":
                up_out = out[level + 1]  # Cicek et al.: up-convolutions keep their channels (512 -> 512)
            up: nn.Module = up_conv(out[level + 1], up_out, kernel_size=pool[level], stride=pool[level],
                                    bias=config.variant != "cicek")
            if config.variant == "release":
                up = nn.Sequential(up, nn.ReLU(inplace=True))
            self.upsamplers.append(up)
            self.decoder.append(DoubleConv(out[level] + up_out, out[level], kernel_size=conv[level], **block))
        self.head = conv_layer(out[0], config.output_channels, kernel_size=1)
        if initialize:  # False where stored weights replace them at once (0.2 s for the paper's 31 M parameters)
            self.apply(init_he_normal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> logits (N, num_classes, H', W') with H' = ``output_size(H)``; in 3D
        (N, in_channels, Z, Y, X) -> (N, num_classes, *``output_shape((Z, Y, X))``).

        Every spatial size must be valid (see :func:`valid_input_sizes`, :func:`output_shape`); the output is raw
        class scores.
        """
        max_pool = F.max_pool2d if self.config.dims == 2 else F.max_pool3d
        skips: list[torch.Tensor] = []
        for level, block in enumerate(self.encoder):
            x = block(x)
            if level in self.dropout_levels:
                x = F.dropout(x, p=self.config.dropout, training=self.training)
            if level < self.depth:
                skips.append(x)
                x = max_pool(x, kernel_size=self.pool_kernels[level])
        for up, block, skip in zip(self.upsamplers, self.decoder, reversed(skips)):
            x = up(x)
            x = block(torch.cat([x, center_crop(skip, x.shape[2:])], dim=1))
        return self.head(x)

    def output_size(self, input_size: int) -> int:
        """Output side length for an input side length (see :func:`output_size`); in-plane for a 3D network."""
        return output_size(input_size, self.config.depth, self.config.padding)

    def output_shape(self, in_shape: Sequence[int]) -> tuple[int, ...]:
        """Output shape for a spatial input shape, (H, W) or (Z, Y, X) (see :func:`output_shape`)."""
        return output_shape(in_shape, self.config)

    @property
    def margin(self) -> int:
        """Context consumed on each side of a tile, in pixels (92 for the paper's network); in-plane in 3D."""
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
    return math.ceil(in_tile / 8 / align) * align


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


def axis_depths(config: ModelConfig) -> tuple[int, ...]:
    """Poolings along each spatial axis: (Y, X) in 2D, (Z, Y, X) in 3D, where levels above ``flat_levels`` leave
    z alone, so along z the network is a U-Net of depth ``depth - flat_levels`` (depth 0: the bottom's two
    convolutions).

    >>> axis_depths(ModelConfig(dims=3, depth=3, flat_levels=1))
    (2, 3, 3)
    """
    if config.dims == 2:
        return config.depth, config.depth
    return config.depth - config.flat_levels, config.depth, config.depth


def _axis_names(config: ModelConfig) -> tuple[str, ...]:
    return ("y", "x") if config.dims == 2 else ("z", "y", "x")


def _check_shape(shape: Sequence[int], config: ModelConfig, name: str) -> tuple[int, ...]:
    shape = tuple(int(size) for size in shape)
    if len(shape) != config.dims:
        axes = ", ".join(name.upper() for name in _axis_names(config))
        raise ValueError(f"{name} must have {config.dims} spatial sizes ({axes}) for a {config.dims}D U-Net, "
                         f"got {shape}")
    return shape


def output_shape(in_shape: Sequence[int], config: ModelConfig) -> tuple[int, ...]:
    """Output shape of a U-Net for a spatial input shape, (H, W) in 2D or (Z, Y, X) in 3D, axis by axis.

    Raises ``ValueError`` naming the nearest valid sizes of each invalid axis and the nearest valid shape.

    >>> output_shape((572, 572), ModelConfig())
    (388, 388)
    >>> output_shape((20, 60, 60), ModelConfig(dims=3, depth=2, flat_levels=1))
    (4, 20, 20)
    """
    in_shape = _check_shape(in_shape, config, "in_shape")
    sizes = [_try_output_size(size, depth, config.padding) for size, depth in zip(in_shape, axis_depths(config))]
    bad = [
        f"{axis} {size} (nearest valid sizes: {_nearest_text(size, depth, config.padding)})"
        for axis, size, depth, out in zip(_axis_names(config), in_shape, axis_depths(config), sizes) if out is None
    ]
    if bad:
        kind = "same-padded" if config.padding == "same" else "valid-convolution"
        raise ValueError(f"input shape {in_shape} is not valid for a {kind} {config.dims}D U-Net of depth "
                         f"{config.depth} (flat_levels {config.flat_levels}): {', '.join(bad)}; nearest valid "
                         f"shape at least as large: {nearest_valid_shape(in_shape, config)}")
    return tuple(size for size in sizes if size is not None)


def nearest_valid_shape(shape: Sequence[int], config: ModelConfig) -> tuple[int, ...]:
    """The smallest valid input shape that is at least ``shape`` along every axis.

    >>> nearest_valid_shape((98, 130, 130), cicek_config())
    (100, 132, 132)
    """
    shape = _check_shape(shape, config, "shape")
    return tuple(nearest_valid_sizes(size, depth, config.padding)[1]
                 for size, depth in zip(shape, axis_depths(config)))


def smallest_input_shape(config: ModelConfig) -> tuple[int, ...]:
    """Smallest valid input shape, per axis (see :func:`smallest_input_size`).

    >>> smallest_input_shape(cicek_config()), smallest_input_shape(ModelConfig(dims=3, depth=3, flat_levels=3))
    ((92, 92, 92), (5, 92, 92))
    """
    return tuple(smallest_input_size(depth, config.padding) for depth in axis_depths(config))


def context_margins(config: ModelConfig, in_shape: Sequence[int]) -> tuple[int, ...]:
    """Context consumed on each side, per axis: ``(in - out) // 2`` for the valid input shape ``in_shape``
    (0 for a same-padded network).

    >>> context_margins(cicek_config(), (116, 132, 132))
    (44, 44, 44)
    """
    in_shape = _check_shape(in_shape, config, "in_shape")
    return tuple((size - out) // 2 for size, out in zip(in_shape, output_shape(in_shape, config)))


def align_shape(config: ModelConfig) -> tuple[int, ...]:
    """Total pooling factor per axis: tiles offset by multiples of it give the whole-image output exactly.

    >>> align_shape(ModelConfig(dims=3, depth=3, flat_levels=1))
    (4, 8, 8)
    """
    return tuple(2**depth for depth in axis_depths(config))


def count_parameters(model: nn.Module, *, include_norm: bool = True) -> int:
    """Number of trainable parameters; ``include_norm=False`` leaves out the batch norms' scales and shifts, as
    Caffe counts (Cicek et al.'s 19,069,955 are convolution weights and biases only)."""
    norms = (nn.BatchNorm2d, nn.BatchNorm3d)
    skipped = set() if include_norm else {
        id(p) for module in model.modules() if isinstance(module, norms) for p in module.parameters()
    }
    return sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in skipped)
