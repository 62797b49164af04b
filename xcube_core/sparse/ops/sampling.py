"""Trilinear sampling and splatting between world points and voxel data."""

from __future__ import annotations

import torch

from xcube_core.sparse import keys as K
from xcube_core.sparse.jagged import JaggedTensor
from xcube_core.sparse.ops.features import gather_rows
from xcube_core.sparse.ops.topology import cube_offsets


def trilinear_corners(grid, points: JaggedTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Voxel index (-1 if inactive) and weight of the 8 voxels around each point.

    Returns: idx (M, 8) int64 into the batch's voxels, w (M, 8) float.
    """
    b = points.jidx.long().to(grid.device)
    x = (points.jdata.float() - grid.origins[b]) / grid.voxel_sizes[b]
    base = torch.floor(x)
    frac = x - base
    corners = cube_offsets(0, 1, grid.device)  # (8, 3)
    ijk = base.to(torch.int64)[:, None, :] + corners[None]
    K.check_ijk(ijk.reshape(-1, 3), "points (in voxel units)")
    idx = K.lookup(grid.keys, K.pack(ijk.reshape(-1, 3), b.repeat_interleave(8))).view(-1, 8)
    cf = corners.to(frac.dtype)
    w = torch.where(cf[None] > 0, frac[:, None, :], 1.0 - frac[:, None, :]).prod(dim=2)
    return idx, w


def sample_trilinear(grid, points: JaggedTensor, data: torch.Tensor) -> torch.Tensor:
    """Interpolated data (M, *) at points; inactive corners contribute 0."""
    idx, w = trilinear_corners(grid, points)
    vals = gather_rows(data, idx.reshape(-1)).view(idx.shape[0], 8, *data.shape[1:])
    w = w.to(data.dtype).view(idx.shape[0], 8, *([1] * (data.dim() - 1)))
    return (vals * w).sum(dim=1)


def splat_trilinear(grid, points: JaggedTensor, values: torch.Tensor) -> torch.Tensor:
    """Voxel data (N, *) accumulated from point values with trilinear weights."""
    idx, w = trilinear_corners(grid, points)
    contrib = values[:, None] * w.to(values.dtype).view(idx.shape[0], 8, *([1] * (values.dim() - 1)))
    contrib = contrib.reshape(-1, *values.shape[1:])
    idx = idx.reshape(-1)
    keep = idx >= 0
    out = values.new_zeros((grid.total_voxels,) + tuple(values.shape[1:]))
    return out.index_add(0, idx[keep], contrib[keep])
