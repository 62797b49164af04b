"""Surface voxelisation of triangle meshes by dense barycentric sampling (vectorised)."""

from __future__ import annotations

import torch


def surface_points(vertices: torch.Tensor, faces: torch.Tensor, spacing: float) -> torch.Tensor:
    """Points on every triangle on a barycentric lattice whose step is at most ``spacing``.

    vertices (V, 3) float, faces (F, 3) int64. Returns (P, 3) float.
    """
    if faces.numel() == 0:
        return vertices.new_zeros(0, 3)
    if int(faces.min()) < 0 or int(faces.max()) >= vertices.shape[0]:
        raise ValueError(f"faces index vertices outside [0, {vertices.shape[0]})")
    tri = vertices[faces]  # (F, 3, 3)
    edges = torch.stack([tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 1], tri[:, 0] - tri[:, 2]], 1)
    longest = edges.norm(dim=2).max(dim=1).values
    n = torch.clamp(torch.ceil(longest / spacing), min=1).to(torch.int64)
    out = []
    for steps in torch.unique(n).tolist():
        t = tri[n == steps]
        a = torch.arange(steps + 1, device=vertices.device)
        u, v = torch.meshgrid(a, a, indexing="ij")
        keep = (u + v) <= steps
        bu = (u[keep].to(t.dtype) / steps)[None, :, None]
        bv = (v[keep].to(t.dtype) / steps)[None, :, None]
        pts = t[:, None, 0] * (1 - bu - bv) + t[:, None, 1] * bu + t[:, None, 2] * bv
        out.append(pts.reshape(-1, 3))
    return torch.cat(out)


def surface_voxels(vertices: torch.Tensor, faces: torch.Tensor, voxel_size: torch.Tensor,
                   origin: torch.Tensor) -> torch.Tensor:
    """Integer coordinates (P, 3) int64 of voxels the surface passes through (may repeat)."""
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {tuple(faces.shape)}")
    spacing = float(voxel_size.min()) * 0.5
    pts = surface_points(vertices, faces, spacing)
    return torch.round((pts - origin) / voxel_size).to(torch.int64)
