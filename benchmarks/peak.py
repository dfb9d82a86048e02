"""This machine's matmul throughput in fp32 and bf16: the "peak" the other benchmarks compare against.

Usage: ``python benchmarks/peak.py [--quick] [--device cpu|cuda] [--n 4096]``; prints JSON lines.
"""

from __future__ import annotations

import argparse

import torch
from common import emit, environment, matmul_gflops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="n = 2048, 3 repeats")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--n", type=int, default=4096, help="matrix side")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n, repeats = (2048, 3) if args.quick else (args.n, args.repeats)
    emit({"benchmark": "peak", "environment": environment()})
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        gflops = matmul_gflops(dtype, n=n, repeats=repeats, device=args.device)
        emit({"benchmark": "peak", "dtype": name, "device": args.device, "n": n, "repeats": repeats,
              "gflop_per_s": round(gflops, 1)})


if __name__ == "__main__":
    main()
