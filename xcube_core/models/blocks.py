"""Building blocks shared by the VAE, the diffusion U-Net and the refinement network.

Every block works on voxel features (N, C) of one `GridBatch` and takes a `PlanCache`, so each kernel
map is built once per forward pass and shared by all blocks on the same grid.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from xcube_core.nn import PlanCache, SparseConv3d, SparseGroupNorm
from xcube_core.nn.linear import VoxelLinear
from xcube_core.sparse import GridBatch


def group_count(channels: int) -> int:
    """Largest of 32, 16, 8, 4, 2, 1 groups that divides ``channels`` with >= 4 channels a group."""
    for g in (32, 16, 8, 4, 2):
        if channels % g == 0 and channels // g >= 4:
            return g
    return 1


class ConvBlock(nn.Module):
    """GroupNorm -> SiLU -> submanifold conv (the ADM pre-activation order)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.norm = SparseGroupNorm(group_count(in_ch), in_ch)
        self.conv = SparseConv3d(in_ch, out_ch, kernel_size)

    def forward(self, x: torch.Tensor, grid: GridBatch, plans: PlanCache) -> torch.Tensor:
        return self.conv(F.silu(self.norm(x, grid)), plans.get(self.conv.kernel_size, 1, grid))


class ResBlock(nn.Module):
    """Residual block with optional AdaGN conditioning: GN(h) * (1 + scale) + shift (ADM).

    Args:
        emb_dim: size of the per-item conditioning vector (time + pooled text); 0 for none.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_norm = SparseGroupNorm(group_count(in_ch), in_ch)
        self.conv1 = SparseConv3d(in_ch, out_ch, 3)
        self.out_norm = SparseGroupNorm(group_count(out_ch), out_ch)
        self.conv2 = SparseConv3d(out_ch, out_ch, 3)
        nn.init.zeros_(self.conv2.weight)  # residual branch starts at zero
        self.emb = nn.Linear(emb_dim, 2 * out_ch) if emb_dim else None
        self.skip = VoxelLinear(in_ch, out_ch) if in_ch != out_ch else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, grid: GridBatch, plans: PlanCache,
                emb: torch.Tensor | None = None) -> torch.Tensor:
        plan = plans.get(3, 1, grid)
        h = self.conv1(F.silu(self.in_norm(x, grid)), plan)
        h = self.out_norm(h, grid)
        if self.emb is not None:
            if emb is None:
                raise ValueError("this ResBlock is conditioned; pass emb (B, emb_dim)")
            scale, shift = self.emb(F.silu(emb)).chunk(2, dim=1)
            b = grid.jidx.long()
            h = h * (1 + scale[b].to(h.dtype)) + shift[b].to(h.dtype)
        h = self.conv2(self.dropout(F.silu(h)), plan)
        return (x if self.skip is None else self.skip(x)) + h


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (B,) timesteps -> (B, dim) float32 (ADM / DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def position_features(grid: GridBatch, extent: tuple[int, int, int], num_freqs: int) -> torch.Tensor:
    """Fourier features of voxel positions normalised by the level's extent. Returns (N, 6 * num_freqs)."""
    if num_freqs == 0:
        return grid.ijk.jdata.new_zeros(grid.total_voxels, 0, dtype=torch.float32)
    u = (grid.ijk.jdata.float() + 0.5) / torch.tensor(extent, dtype=torch.float32, device=grid.device)
    freqs = (2.0 ** torch.arange(num_freqs, device=grid.device, dtype=torch.float32)) * math.pi
    ang = (u[:, :, None] * freqs).reshape(u.shape[0], -1)
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)
