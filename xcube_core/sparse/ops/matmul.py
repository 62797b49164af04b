"""``rows @ weight`` with the row count rounded up to a few shape buckets on the CPU in low precision.

Why: on the CPU, bfloat16/float16 matmuls run through oneDNN, which compiles (JIT) and caches one
primitive per distinct shape (PyTorch's ideep layer keeps its own per-shape cache on top). A sparse
conv multiplies one block per kernel offset, and the block's row count is that offset's pair count,
which differs for every scene: a server generating scene after scene with new seeds filled those
caches with primitives it never used again (the tiny model: 359 -> 601 MB RSS over 60 seeds, flat
with a fixed seed, and flat in float32, which uses MKL and caches nothing). Padding the rows to the
next bucket (8 per octave, at most 12.5 % extra rows, never below 64) makes shapes repeat, so the
caches stop growing after a few scenes. float32 and CUDA are untouched.
"""

from __future__ import annotations

import torch

_LOW = (torch.bfloat16, torch.float16)


def bucket_rows(n: int) -> int:
    """The smallest bucket >= ``n``: a multiple of 2^(bit_length(n) - 4), at least 64."""
    if n <= 64:
        return 64
    step = 1 << max(0, n.bit_length() - 4)
    return -(-n // step) * step


def needs_bucket(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in _LOW


def mm_rows(x: torch.Tensor, weight: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """``x[index] @ weight`` (or ``x @ weight``), shape (n, C_out), through a bucketed row count.

    Shape: x (N, C_in), weight (C_in, C_out), index (n,) int64 -> (n, C_out).
    """
    n = x.shape[0] if index is None else index.shape[0]
    if not needs_bucket(x) or n == 0:
        rows = x if index is None else x.index_select(0, index)
        return torch.mm(rows, weight)
    m = bucket_rows(n)
    rows = x.new_empty(m, x.shape[1])
    if index is None:
        rows[:n].copy_(x)
    else:
        torch.index_select(x, 0, index, out=rows[:n])
    rows[n:].zero_()
    return torch.mm(rows, weight)[:n]


def linear_rows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for per-voxel rows, through a bucketed row count on the CPU in
    low precision (also under CPU autocast, where ``F.linear`` would cast to bfloat16 itself).

    Shape: x (N, C_in), weight (C_out, C_in), bias (C_out,) -> (N, C_out).
    """
    dtype = torch.get_autocast_dtype("cpu") if x.device.type == "cpu" and torch.is_autocast_enabled("cpu") \
        else x.dtype
    n = x.shape[0]
    if x.device.type != "cpu" or dtype not in _LOW or x.dim() != 2 or n == 0 or bucket_rows(n) == n:
        return torch.nn.functional.linear(x, weight, bias)
    rows = x.new_zeros(bucket_rows(n), x.shape[1])
    rows[:n].copy_(x)
    return torch.nn.functional.linear(rows, weight, bias)[:n]
