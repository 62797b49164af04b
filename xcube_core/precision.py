"""Mixed precision: bfloat16 autocast where the hardware does it natively, float32 otherwise.

Detected, not assumed: on CPU we look for AVX512-BF16 / AMX-BF16 in the CPU flags (or ask oneDNN where
there is no /proc/cpuinfo); on CUDA we ask torch whether bf16 is supported. Training
(`xcube_core.train`) and inference (`XCubePipeline`) resolve "auto" through this one module.
"""

from __future__ import annotations

import contextlib
import functools
import pathlib

import torch

from xcube_core.errors import InvalidInputError

PRECISIONS = ("auto", "bf16", "fp32")


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 instructions (``avx512_bf16`` or ``amx_bf16`` in /proc/cpuinfo)."""
    try:
        flags = pathlib.Path("/proc/cpuinfo").read_text(errors="ignore").split()
    except OSError:
        flags = []
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return True
    try:  # non-Linux: ask oneDNN
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and not flags
    except Exception:
        return False


def resolve_precision(device: torch.device, precision: str = "auto") -> str:
    """'bf16' or 'fp32' for ``device`` (``auto`` picks bf16 only where the hardware has it)."""
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision {precision!r}: expected one of {PRECISIONS}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def autocast_context(device: torch.device, precision: str = "auto"):
    """An autocast context for ``device`` in the resolved precision (a no-op for fp32)."""
    if resolve_precision(device, precision) == "bf16" and device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
