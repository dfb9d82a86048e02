"""Analytic floating-point operation counts of a :class:`~biounet.core.model.UNet` forward pass on one tile.

The count is ``2 * multiply-accumulates`` of every convolution, up-convolution and the final 1x1 convolution, at
the spatial sizes the valid (or same-padded) convolutions really produce. Bias additions, ReLU, pooling,
cropping, concatenation and softmax are not counted (together well under 1 % of the total). Benchmarks divide
this count by the measured time to report "useful" GFLOP/s.
"""

from __future__ import annotations

from typing import NamedTuple

from biounet.core.model import ModelConfig, output_size


class ConvCost(NamedTuple):
    """One convolution of the network: its name, channels, kernel side, output side, and FLOPs (2 * MACs)."""

    name: str
    in_channels: int
    out_channels: int
    kernel: int
    out_side: int
    flops: int


def conv_costs(config: ModelConfig, in_tile: int) -> list[ConvCost]:
    """Every convolution of ``UNet(config)`` on one ``(1, in_channels, in_tile, in_tile)`` tile, in forward order.

    Parameters
    ----------
    config : ModelConfig
        The architecture.
    in_tile : int
        Input tile side in pixels; must be a valid input size (see :func:`biounet.core.model.output_size`).

    Returns
    -------
    costs : list of ConvCost
        For a k x k convolution producing an ``s x s`` map, ``flops = 2 * c_in * c_out * k**2 * s**2``; for the
        2x2 stride-2 up-convolution each output pixel receives one kernel tap, so ``flops = 2 * c_in * c_out * s**2``.

    Raises
    ------
    ValueError
        If ``in_tile`` is not a valid input size for ``config`` (the message names the nearest valid sizes).
    """
    output_size(in_tile, config.depth, config.padding)  # validates in_tile, naming the nearest valid sizes
    shrink = 2 if config.padding == "valid" else 0  # a valid 3x3 convolution loses one pixel on each side
    widths = [config.base_channels * 2**level for level in range(config.depth + 1)]
    costs: list[ConvCost] = []

    def double_conv(name: str, c_in: int, c_out: int, side: int) -> int:
        for index, channels in enumerate((c_in, c_out)):
            side -= shrink
            costs.append(ConvCost(f"{name}.conv{index + 1}", channels, c_out, 3, side,
                                  2 * channels * c_out * 9 * side * side))
        return side

    side = in_tile
    skip_channels: list[int] = []
    for level in range(config.depth + 1):
        c_in = config.in_channels if level == 0 else widths[level - 1]
        side = double_conv(f"encoder{level}", c_in, widths[level], side)
        if level < config.depth:
            skip_channels.append(widths[level])
            side //= 2
    channels = widths[config.depth]
    for step, level in enumerate(reversed(range(config.depth))):
        up_out = widths[1] if config.variant == "release" and level == 0 else widths[level]
        side *= 2
        costs.append(ConvCost(f"upsampler{step}", channels, up_out, 2, side, 2 * channels * up_out * side * side))
        side = double_conv(f"decoder{step}", skip_channels[level] + up_out, widths[level], side)
        channels = widths[level]
    costs.append(ConvCost("head", channels, config.num_classes, 1, side,
                          2 * channels * config.num_classes * side * side))
    return costs


def conv_flops(config: ModelConfig, in_tile: int) -> int:
    """FLOPs (2 * multiply-accumulates) of one forward pass of ``UNet(config)`` on one square tile.

    Parameters
    ----------
    config : ModelConfig
        The architecture.
    in_tile : int
        Input tile side in pixels; must be a valid input size.

    Returns
    -------
    flops : int
        Sum of :func:`conv_costs` over all convolutions, for a batch of one tile.

    Examples
    --------
    >>> conv_flops(ModelConfig(depth=1, base_channels=2), 20)
    47376
    """
    return sum(cost.flops for cost in conv_costs(config, in_tile))
