"""Training throughput: steps/s and fraction of the matmul peak at the paper's 572 px tile.

For base 16, 32 and 64 (``--quick``: 16 only), in fp32 and bf16 (autocast), one training step is the forward
pass of :class:`biounet.core.model.UNet` (channels_last, train mode, batch 1), the pixel-wise cross-entropy
(:func:`biounet.training.loss.weighted_cross_entropy`), the backward pass and a plain Adam step. FLOPs per step are taken
as 3x the analytic forward count (:func:`biounet.core.flops.conv_flops`: the backward pass computes the gradients
of both the inputs and the weights, each about one forward); the peak is measured in the same process.

The FLOP count is that of the convolutions only; batch normalisation (the fast recipe's network, ``--batch-norm
on``) adds memory-bound work that is not counted, so its fraction of the peak is lower for the same step.

The kernel ceiling: every convolution and up-convolution of the network is run alone, at the shape it has in the
step, forward and backward (gradients of input and weights) in the step's precision and layout, best of
``--repeats``; the sum of their times is what a step would take if it did nothing but call the convolution
library (oneDNN on the CPU). ``kernel_fraction_of_peak`` is the step's FLOPs over that time and the matmul peak
(how fast the library's convolutions at these shapes can be), ``fraction_of_kernel_ceiling`` the ceiling's time
over the step's (how much of the step is spent outside them: ReLU, pooling, concatenation, batch norm, the loss,
Adam). ``--compile`` also times the step through ``torch.compile`` (its compile time reported apart).

Usage: ``python benchmarks/training.py [--quick] [--device cpu|cuda] [--steps 10] [--tile 572] [--batch-norm
both|on|off] [--no-ceiling] [--compile]``; prints JSON lines.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time

import torch
from common import emit, environment, peak_gflops, peak_rss_mb, reset_peak_rss, synchronize

from biounet.core.flops import conv_flops
from biounet.core.model import ModelConfig, UNet
from biounet.training.loss import weighted_cross_entropy


def convolution_shapes(model: torch.nn.Module, image: torch.Tensor) -> list[tuple[torch.nn.Module, torch.Size]]:
    """Every convolution and up-convolution of ``model`` with the shape of its input in a forward pass."""
    seen: list[tuple[torch.nn.Module, torch.Size]] = []
    hooks = [module.register_forward_hook(lambda m, inputs, _: seen.append((m, inputs[0].shape)))
             for module in model.modules() if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    with torch.no_grad():
        model(image)
    for hook in hooks:
        hook.remove()
    return seen


def kernel_ceiling(model: torch.nn.Module, image: torch.Tensor, precision: str, device: torch.device, *,
                   repeats: int = 3) -> float:
    """Seconds of the step's convolutions run alone, forward and backward (see the module docstring)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    total = 0.0
    for index, (module, shape) in enumerate(convolution_shapes(model, image)):
        layer = copy.deepcopy(module).to(device, dtype)
        x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        x.requires_grad_(index > 0)  # the first convolution's input (the image) needs no gradient
        out = layer(x)
        grad = torch.ones_like(out)
        best = float("inf")
        for _ in range(repeats + 1):  # the first pass creates the primitives
            synchronize(device)
            start = time.perf_counter()
            layer(x).backward(grad)
            synchronize(device)
            best = min(best, time.perf_counter() - start)
        total += best
    return total


def bench(base: int, precision: str, *, tile: int, steps: int, device: torch.device, peak: float,
          batch_norm: bool = False, ceiling: bool = True, compile: bool = False) -> dict:
    torch.manual_seed(0)
    config = ModelConfig(base_channels=base, batch_norm=batch_norm)
    model = UNet(config).to(device).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    out = model.output_size(tile)
    image = torch.randn(1, 1, tile, tile, device=device).contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 2, (1, out, out), device=device)
    weights = torch.ones(1, out, out, device=device)
    cast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if precision == "bf16"
            else contextlib.nullcontext())

    network = torch.compile(model) if compile else model

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with cast:
            logits = network(image)
        loss = weighted_cross_entropy(logits.float(), target, weights)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    warm_up = time.perf_counter()
    step()  # warm-up: kernel selection, optimizer state allocation (and compilation)
    step()
    warm_up = time.perf_counter() - warm_up
    reset_peak_rss()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    synchronize(device)
    seconds = time.perf_counter() - start
    flops = 3 * conv_flops(config, tile) * steps
    extra: dict[str, float] = {}
    if compile:
        extra["compile_and_two_steps_s"] = round(warm_up, 1)
    if ceiling:
        kernels = kernel_ceiling(model, image, precision, device)
        extra.update(kernel_seconds_per_step=round(kernels, 4),
                     kernel_fraction_of_peak=round(flops / steps / kernels / 1e9 / peak, 3),
                     fraction_of_kernel_ceiling=round(kernels * steps / seconds, 3))
    return {
        "benchmark": "training", "base_channels": base, "precision": precision, "batch_norm": batch_norm,
        "device": str(device),
        "tile": tile, "out_tile": out, "batch": 1, "steps": steps, "seconds": round(seconds, 3),
        "steps_per_s": round(steps / seconds, 3), "gflop_per_step": round(flops / steps / 1e9, 1),
        "gflop_per_s": round(flops / seconds / 1e9, 1), "fraction_of_peak": round(flops / seconds / 1e9 / peak, 3),
        "compiled": compile, "peak_rss_mb": round(peak_rss_mb()), "last_loss": round(loss, 4), **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="base 16 only, 3 steps")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--tile", type=int, default=572)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--bases", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--batch-norm", choices=("both", "on", "off"), default="both",
                        help="networks with batch norm (the fast recipe's), without (the paper's), or both")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the kernel ceiling")
    parser.add_argument("--compile", action="store_true", help="also time the step through torch.compile")
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    args = parser.parse_args()
    device = torch.device(args.device)
    bases, steps = ([16], 3) if args.quick else (args.bases, args.steps)
    peaks = peak_gflops(quick=args.quick, device=args.device)
    emit({"benchmark": "training", "environment": environment(), "peak_gflop_per_s": peaks})
    norms = {"both": (False, True), "on": (True,), "off": (False,)}[args.batch_norm]
    for base in bases:
        for batch_norm in norms:
            for precision in args.precisions:
                for compile in (False, True) if args.compile else (False,):
                    emit(bench(base, precision, tile=args.tile, steps=steps, device=device, peak=peaks[precision],
                               batch_norm=batch_norm, ceiling=not args.no_ceiling and not compile,
                               compile=compile))


if __name__ == "__main__":
    main()
