"""Attention within each grid: self-attention over its voxels, cross-attention to its text tokens.

Voxels are padded per grid to (B, L_max, C) so one fused `scaled_dot_product_attention` call serves
the batch; use at coarse resolutions only (cost grows with L_max^2). Self-attention may instead run
within *windows* (any grouping of the voxels, e.g. `attention_windows`), padded the same way: a grid
far larger than the model's native scene then costs in proportion to its voxels, not their square.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xcube_core.nn.linear import VoxelLinear
from xcube_core.sparse import GridBatch


def to_padded(x: torch.Tensor, grid: GridBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) voxel features -> (B, L_max, C) padded features and (B, L_max) bool mask of real rows."""
    return _pad(x, _grid_rows(grid), grid.grid_count)


def from_padded(padded: torch.Tensor, grid: GridBatch) -> torch.Tensor:
    return padded[_grid_rows(grid)]


def _grid_rows(grid: GridBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(grid, position within it) of every voxel (voxels are stored grid by grid)."""
    jidx = grid.jidx.long()
    return jidx, torch.arange(grid.total_voxels, device=jidx.device) - grid.joffsets[jidx]


def _group_rows(group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(group, position within it) of every row for group ids 0..G-1 in any order, and G."""
    num = int(group.max()) + 1 if group.numel() else 1
    order = torch.argsort(group, stable=True)
    counts = torch.bincount(group, minlength=num)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.empty_like(group)
    pos[order] = torch.arange(group.numel(), device=group.device) - starts[group[order]]
    return group, pos, num


def _pad(x: torch.Tensor, rows: tuple[torch.Tensor, torch.Tensor], num: int) -> tuple[torch.Tensor, torch.Tensor]:
    group, pos = rows
    lmax = max(int(pos.max()) + 1 if pos.numel() else 0, 1)
    out = x.new_zeros(num, lmax, x.shape[1])
    out[group, pos] = x
    mask = torch.zeros(num, lmax, dtype=torch.bool, device=x.device)
    mask[group, pos] = True
    return out, mask


def attention_windows(grid: GridBatch, span: tuple[int, int], stride: int = 1,
                      origin: torch.Tensor | None = None) -> torch.Tensor | None:
    """Per voxel, the id (0..G-1) of its self-attention window; None when no grid needs windows.

    A grid whose X or Y extent exceeds ``span`` voxels is cut along X and Y into windows of ``span``
    voxels on a fixed lattice: voxel ``ijk`` lies at ``ijk * stride + origin`` (e.g. scene latent
    cells, so that overlapping parts of neighbouring grids share windows) and windows start at
    multiples of ``span * stride`` there. Smaller grids stay whole, each one window.
    """
    ij, b = grid.ijk.jdata[:, :2].long(), grid.jidx.long()
    if ij.shape[0] == 0:
        return None
    box = grid.bbox().long()  # (B, 2, 3) inclusive bounds per grid
    size = torch.tensor(span, device=ij.device)
    large = ((box[:, 1, :2] - box[:, 0, :2] + 1) > size).any(dim=1)
    if not bool(large.any()):
        return None
    at = ij * stride + (0 if origin is None else origin[:2].to(ij.device).long())
    cell = torch.div(at, size * stride, rounding_mode="floor")
    cell = torch.where(large[b][:, None], cell, 0)
    key = torch.cat([b[:, None], cell], dim=1)
    return torch.unique(key, dim=0, return_inverse=True)[1]


class _Attention(nn.Module):
    def __init__(self, channels: int, context_dim: int, heads: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} not divisible by heads {heads}")
        self.heads = heads
        self.q = VoxelLinear(channels, channels, bias=False)
        self.kv = nn.Linear(context_dim, 2 * channels, bias=False)
        self.out = VoxelLinear(channels, channels)
        nn.init.zeros_(self.out.weight)  # start as identity in the residual stream (ADM's zero-init)
        nn.init.zeros_(self.out.bias)

    def _attend(self, q_in: torch.Tensor, ctx: torch.Tensor, ctx_mask: torch.Tensor) -> torch.Tensor:
        b, lq, c = q_in.shape
        h = self.heads
        q = self.q(q_in).view(b, lq, h, c // h).transpose(1, 2)
        k, v = self.kv(ctx).view(b, ctx.shape[1], 2, h, c // h).permute(2, 0, 3, 1, 4)
        attn_mask = ctx_mask[:, None, None, :]  # (B, 1, 1, Lk): True = attend
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out(y.transpose(1, 2).reshape(b, lq, c))


class SparseSelfAttention(_Attention):
    """Multi-head self-attention among the voxels of each grid. (N, C) -> (N, C) residual update."""

    def __init__(self, channels: int, heads: int = 4) -> None:
        super().__init__(channels, channels, heads)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor, grid: GridBatch, windows: torch.Tensor | None = None) -> torch.Tensor:
        """``windows``: (N,) window id per voxel (`attention_windows`); None attends within each grid."""
        if windows is None:
            rows, num = _grid_rows(grid), grid.grid_count
        else:
            group, pos, num = _group_rows(windows)
            rows = (group, pos)
        padded, mask = _pad(self.norm(x), rows, num)
        return x + self._attend(padded, padded, mask)[rows]


class SparseCrossAttention(_Attention):
    """Voxels of grid b attend to the context tokens of item b (e.g. text). (N, C) -> (N, C)."""

    def __init__(self, channels: int, context_dim: int, heads: int = 4) -> None:
        super().__init__(channels, context_dim, heads)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor, grid: GridBatch, context: torch.Tensor,
                context_mask: torch.Tensor) -> torch.Tensor:
        """context (B, T, D) and context_mask (B, T) bool; rows with no valid token get no update."""
        if context.shape[0] != grid.grid_count:
            raise ValueError(f"context has {context.shape[0]} items, grid has {grid.grid_count}")
        padded, _ = to_padded(self.norm(x), grid)
        # A fully masked row would give NaN; let it attend to token 0 and zero its update.
        safe = context_mask.clone()
        empty = ~safe.any(dim=1)
        safe[empty, 0] = True
        y = self._attend(padded, context.to(padded.dtype), safe)
        y = y * (~empty).to(y.dtype)[:, None, None]
        return x + from_padded(y, grid)
