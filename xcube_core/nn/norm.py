"""GroupNorm with statistics per grid (each scene in a batch normalised on its own voxels)."""

from __future__ import annotations

import torch
from torch import nn

from xcube_core.sparse import GridBatch


def grid_group_stats(x: torch.Tensor, jidx: torch.Tensor, num_grids: int, groups: int, eps: float):
    """Mean and inverse std per (grid, group). x (N, C). Returns two (B, G) tensors (float32)."""
    n, c = x.shape
    xg = x.float().view(n, groups, c // groups)
    s1 = x.new_zeros(num_grids, groups, dtype=torch.float32).index_add_(0, jidx, xg.sum(2))
    s2 = x.new_zeros(num_grids, groups, dtype=torch.float32).index_add_(0, jidx, (xg * xg).sum(2))
    cnt = torch.bincount(jidx, minlength=num_grids).clamp(min=1).to(torch.float32)[:, None] * (c // groups)
    mean = s1 / cnt
    var = (s2 / cnt - mean * mean).clamp(min=0.0)
    return mean, torch.rsqrt(var + eps)


class SparseGroupNorm(nn.Module):
    """GroupNorm over the voxels of each grid separately. Input/output (N, C)."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"num_channels {num_channels} is not divisible by num_groups {num_groups}")
        self.num_groups, self.num_channels, self.eps = num_groups, num_channels, eps
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None

    def forward(self, x: torch.Tensor, grid: GridBatch) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"expected (N, {self.num_channels}) features, got {tuple(x.shape)}")
        jidx = grid.jidx.long()
        mean, inv = grid_group_stats(x, jidx, grid.grid_count, self.num_groups, self.eps)
        n, c = x.shape
        g = self.num_groups
        y = (x.float().view(n, g, c // g) - mean[jidx][..., None]) * inv[jidx][..., None]
        y = y.view(n, c).to(x.dtype)
        if self.weight is not None:
            y = y * self.weight.to(y.dtype) + self.bias.to(y.dtype)
        return y
