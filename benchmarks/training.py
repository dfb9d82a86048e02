"""Training throughput: steps/s and fraction of the matmul peak at the paper's 572 px tile.

For base 16, 32 and 64 (``--quick``: 16 only), in fp32 and bf16 (autocast), one training step is the forward
pass of :class:`biounet.model.UNet` (channels_last, train mode, batch 1), the pixel-wise cross-entropy
(:func:`biounet.loss.weighted_cross_entropy`), the backward pass and a plain Adam step. FLOPs per step are taken
as 3x the analytic forward count (:func:`biounet.flops.conv_flops`: the backward pass computes the gradients
of both the inputs and the weights, each about one forward); the peak is measured in the same process.

The FLOP count is that of the convolutions only; batch normalisation (the fast recipe's network, ``--batch-norm
on``) adds memory-bound work that is not counted, so its fraction of the peak is lower for the same step.

Usage: ``python benchmarks/training.py [--quick] [--device cpu|cuda] [--steps 10] [--tile 572] [--batch-norm
both|on|off]``; prints JSON lines.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
from common import emit, environment, peak_gflops, peak_rss_mb, reset_peak_rss, synchronize

from biounet.flops import conv_flops
from biounet.loss import weighted_cross_entropy
from biounet.model import ModelConfig, UNet


def bench(base: int, precision: str, *, tile: int, steps: int, device: torch.device, peak: float,
          batch_norm: bool = False) -> dict:
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

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with cast:
            logits = model(image)
        loss = weighted_cross_entropy(logits.float(), target, weights)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    step()  # warm-up: kernel selection, optimizer state allocation
    reset_peak_rss()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    synchronize(device)
    seconds = time.perf_counter() - start
    flops = 3 * conv_flops(config, tile) * steps
    return {
        "benchmark": "training", "base_channels": base, "precision": precision, "batch_norm": batch_norm,
        "device": str(device),
        "tile": tile, "out_tile": out, "batch": 1, "steps": steps, "seconds": round(seconds, 3),
        "steps_per_s": round(steps / seconds, 3), "gflop_per_step": round(flops / steps / 1e9, 1),
        "gflop_per_s": round(flops / seconds / 1e9, 1), "fraction_of_peak": round(flops / seconds / 1e9 / peak, 3),
        "peak_rss_mb": round(peak_rss_mb()), "last_loss": round(loss, 4),
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
    args = parser.parse_args()
    device = torch.device(args.device)
    bases, steps = ([16], 3) if args.quick else (args.bases, args.steps)
    peaks = peak_gflops(quick=args.quick, device=args.device)
    emit({"benchmark": "training", "environment": environment(), "peak_gflop_per_s": peaks})
    norms = {"both": (False, True), "on": (True,), "off": (False,)}[args.batch_norm]
    for base in bases:
        for batch_norm in norms:
            for precision in ("fp32", "bf16"):
                emit(bench(base, precision, tile=args.tile, steps=steps, device=device, peak=peaks[precision],
                           batch_norm=batch_norm))


if __name__ == "__main__":
    main()
