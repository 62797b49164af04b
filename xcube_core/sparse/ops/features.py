"""Row gather/scatter helpers that move voxel features between topologies."""

from __future__ import annotations

import torch


def gather_rows(x: torch.Tensor, idx: torch.Tensor, default_value: float = 0.0) -> torch.Tensor:
    """``x[idx]`` with ``default_value`` where idx == -1. x (N, *), idx (M,) int64 -> (M, *)."""
    valid = idx >= 0
    out = x.index_select(0, idx.clamp(min=0))
    if not bool(valid.all()):
        shape = (-1,) + (1,) * (x.dim() - 1)
        out = torch.where(valid.view(shape), out, torch.full_like(out, default_value))
    return out


def scatter_reduce_rows(x: torch.Tensor, idx: torch.Tensor, num_out: int, reduce: str) -> torch.Tensor:
    """Reduce rows of ``x`` (N, *) into ``num_out`` rows by target ``idx`` (N,) (-1 rows dropped).

    ``reduce`` is "sum", "mean" or "amax"; outputs that receive nothing are 0.
    """
    valid = idx >= 0
    if not bool(valid.all()):
        x, idx = x[valid], idx[valid]
    shape = (num_out,) + tuple(x.shape[1:])
    index = idx.view((-1,) + (1,) * (x.dim() - 1)).expand_as(x)
    out = x.new_zeros(shape)
    if reduce == "sum":
        return out.scatter_add(0, index, x)
    return out.scatter_reduce(0, index, x, reduce, include_self=False)
