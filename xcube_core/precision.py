"""Mixed precision: bfloat16 autocast where the hardware does it fast, float32 otherwise.

Detected, not assumed: on CPU we look for AMX-BF16 / AVX512-BF16 in the CPU flags; on CUDA we ask
torch whether bf16 is supported.
"""

from __future__ import annotations

import contextlib
import functools
import pathlib

import torch

PRECISIONS = ("auto", "bf16", "fp32")


@functools.lru_cache(maxsize=None)
def cpu_has_fast_bf16() -> bool:
    """True when this CPU runs bfloat16 matmuls natively (AMX-BF16 or AVX512-BF16)."""
    try:
        flags = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def resolve_precision(device: torch.device, precision: str = "auto") -> str:
    """'bf16' or 'fp32' for ``device`` (``auto`` picks bf16 only where it is fast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def autocast_context(device: torch.device, precision: str = "auto"):
    """An autocast context for ``device`` in the resolved precision (a no-op for fp32)."""
    if resolve_precision(device, precision) == "bf16" and device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
