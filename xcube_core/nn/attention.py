"""Attention within each grid: self-attention over its voxels, cross-attention to its text tokens.

Voxels are padded per grid to (B, L_max, C) so one fused `scaled_dot_product_attention` call serves
the batch; use at coarse resolutions only (cost grows with L_max^2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xcube_core.nn.linear import VoxelLinear
from xcube_core.sparse import GridBatch


def to_padded(x: torch.Tensor, grid: GridBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) voxel features -> (B, L_max, C) padded features and (B, L_max) bool mask of real rows."""
    counts = grid.num_voxels
    b, lmax = grid.grid_count, int(counts.max()) if counts.numel() else 0
    jidx = grid.jidx.long()
    pos = torch.arange(x.shape[0], device=x.device) - grid.joffsets[jidx]
    out = x.new_zeros(b, max(lmax, 1), x.shape[1])
    out[jidx, pos] = x
    mask = torch.zeros(b, max(lmax, 1), dtype=torch.bool, device=x.device)
    mask[jidx, pos] = True
    return out, mask


def from_padded(padded: torch.Tensor, grid: GridBatch) -> torch.Tensor:
    jidx = grid.jidx.long()
    pos = torch.arange(grid.total_voxels, device=padded.device) - grid.joffsets[jidx]
    return padded[jidx, pos]


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

    def forward(self, x: torch.Tensor, grid: GridBatch) -> torch.Tensor:
        padded, mask = to_padded(self.norm(x), grid)
        return x + from_padded(self._attend(padded, padded, mask), grid)


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
