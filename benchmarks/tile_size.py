"""Inference time per output pixel against the tile side: the measurement behind ``predict.MAX_AUTO_TILE``.

Larger tiles recompute less context (the FLOPs per output pixel fall towards the whole-image limit), but on a CPU
their feature maps (hundreds of MB at the top level) outgrow the caches and the time per FLOP rises. For each
width and tile side this runs :class:`biounet.inference.predict.TorchPredictor` with its defaults (channels-last, fused,
the precision given) on one random tile, once to warm up and then ``--repeats`` times, and reports the fastest
pass (this 2-core VM's timings vary by 10-15 % from pass to pass).

Usage: ``python benchmarks/tile_size.py [--bases 64 16] [--precision bf16|fp32|auto] [--tiles 572 892 ...]
[--repeats 3]``; prints JSON lines.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import emit, environment

from biounet.core.device import resolve_precision
from biounet.core.flops import conv_flops
from biounet.core.model import ModelConfig, UNet, output_size
from biounet.inference.predict import TorchPredictor

TILES = (572, 892, 1212, 1532, 1852, 2236)


def bench(base: int, precision: str, tile: int, repeats: int) -> dict:
    torch.manual_seed(0)
    config = ModelConfig(base_channels=base)
    predictor = TorchPredictor(UNet(config), precision=precision)
    batch = np.random.default_rng(0).random((1, 1, tile, tile), dtype=np.float32)
    predictor(batch)  # the first pass of a shape also creates the oneDNN primitives
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor(batch)
        times.append(time.perf_counter() - start)
    seconds = min(times)
    out = output_size(tile)
    return {"benchmark": "tile_size", "base_channels": base, "precision": precision, "in_tile": tile,
            "out_tile": out, "seconds": round(seconds, 3), "us_per_output_px": round(seconds / out**2 * 1e6, 4),
            "mflop_per_output_px": round(conv_flops(config, tile) / out**2 / 1e6, 3),
            "gflop_per_s": round(conv_flops(config, tile) / seconds / 1e9, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bases", type=int, nargs="+", default=[64, 16])
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--tiles", type=int, nargs="+", default=list(TILES))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    precision = resolve_precision(args.precision, torch.device("cpu"))
    emit({"benchmark": "tile_size", "environment": environment()})
    for base in args.bases:
        for tile in args.tiles:
            emit(bench(base, precision, tile, args.repeats))


if __name__ == "__main__":
    main()
