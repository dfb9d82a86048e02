"""Shared helpers of the benchmark scripts: JSON-lines output, matmul peak, peak resident memory.

The scripts are run as ``python benchmarks/<name>.py`` (this folder is then on ``sys.path``); they are not tests.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch


def emit(record: dict[str, Any]) -> None:
    """Print one JSON line to stdout (flushed, so a long run shows progress)."""
    print(json.dumps(record, default=str), flush=True)


def environment() -> dict[str, Any]:
    """What the numbers depend on: torch, threads, CPU flags, host load."""
    flags = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = line
                break
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "avx512f": " avx512f" in flags,
        "avx512_bf16": " avx512_bf16" in flags,
        "amx_bf16": " amx_bf16" in flags,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0],
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(dtype: torch.dtype, *, n: int = 4096, repeats: int = 5, device: str = "cpu") -> float:
    """Best-of-``repeats`` GFLOP/s of an ``n x n`` by ``n x n`` ``torch.matmul`` (2 n^3 FLOPs) in ``dtype``."""
    dev = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dev, dtype)
    b = torch.randn(n, n, generator=gen).to(dev, dtype)
    out = torch.empty(n, n, dtype=dtype, device=dev)
    torch.matmul(a, b, out=out)  # warm-up: kernel selection, page faults
    best = float("inf")
    for _ in range(repeats):
        synchronize(dev)
        start = time.perf_counter()
        torch.matmul(a, b, out=out)
        synchronize(dev)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def peak_gflops(*, quick: bool, device: str = "cpu") -> dict[str, float]:
    """fp32 and bf16 matmul peaks, measured now (in the same process as the benchmark that divides by them)."""
    n, repeats = (2048, 3) if quick else (4096, 5)
    return {
        "fp32": matmul_gflops(torch.float32, n=n, repeats=repeats, device=device),
        "bf16": matmul_gflops(torch.bfloat16, n=n, repeats=repeats, device=device),
        "matmul_n": n,
    }


def reset_peak_rss() -> bool:
    """Reset this process's peak resident set size (Linux ``/proc/self/clear_refs``); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB since the last :func:`reset_peak_rss` (``VmHWM``), else since
    start (``resource.getrusage``)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
