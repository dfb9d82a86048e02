"""Where and in which precision the network runs: device names, native bf16 detection, and bf16 autocast."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
"""What ``--precision`` takes; ``auto`` resolves to one of :data:`COMPUTE_PRECISIONS`."""
COMPUTE_PRECISIONS: tuple[str, ...] = PRECISIONS[1:]


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else the CPU; ``"cuda"`` without a GPU is an error. ``"mps"`` (Apple
    GPUs) is taken where this torch build has it, never chosen by ``auto``.

    Raises
    ------
    ValueError
        If ``name`` is not ``auto``, ``cpu``, ``cuda[:N]`` or ``mps``, or names a device this machine lacks.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("device 'mps' requested but this torch build or machine has no MPS (Apple GPU); use "
                             "--device cpu")
        return torch.device("mps")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu, cuda[:N] or mps, got {name!r}")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """True where oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(name: str, device: torch.device) -> str:
    """``"auto"`` is bf16 on CUDA with bf16 support or on a CPU with native bf16, fp32 otherwise.

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`PRECISIONS`.
    """
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {name!r}")
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type != "cpu":  # mps: bf16 autocast support varies, fp32 is safe
        return "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast for ``precision == "bf16"``, a no-op otherwise."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
