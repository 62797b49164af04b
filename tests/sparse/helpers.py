"""Random grids and dense references shared by the engine tests."""

from __future__ import annotations

import torch

from xcube_core.sparse import GridBatch


def random_grid(sizes=(60, 25), box=8, generator=None, low=0) -> GridBatch:
    """A batch of grids with roughly ``sizes`` voxels each in [low, low + box)^3."""
    ijk = [torch.randint(low, low + box, (n, 3), generator=generator) for n in sizes]
    return GridBatch.from_ijk(ijk)


def densify(grid: GridBatch, data: torch.Tensor, b: int, box: int, low: int = 0) -> torch.Tensor:
    """Grid b's features as a dense (C, box, box, box) CPU tensor (zeros where inactive)."""
    ijk = grid.ijk[b].long().cpu() - low
    x = data[grid.joffsets[b]: grid.joffsets[b + 1]].cpu()
    dense = torch.zeros((x.shape[1], box, box, box), dtype=data.dtype)
    dense[:, ijk[:, 0], ijk[:, 1], ijk[:, 2]] = x.t()
    return dense


def at_voxels(dense: torch.Tensor, grid: GridBatch, b: int, low: int = 0) -> torch.Tensor:
    """Read a dense (C, X, Y, Z) CPU tensor at grid b's voxels -> (N_b, C) on the CPU."""
    ijk = grid.ijk[b].long().cpu() - low
    return dense[:, ijk[:, 0], ijk[:, 1], ijk[:, 2]].t()


def ijk_set(grid: GridBatch, b: int) -> set[tuple[int, int, int]]:
    return {tuple(v) for v in grid.ijk[b].cpu().tolist()}


def clip_reference(triangles, voxel: float, shape) -> set:
    """Voxels (corners on multiples of ``voxel``) whose cube keeps a non-empty piece of a triangle after
    Sutherland-Hodgman clipping against its 6 faces: an exact test independent of the separating-axis
    code under test. triangles: (T, 3, 3) array-like in metres; shape: grid size clipping the result."""
    import numpy as np

    out = set()
    for tri in np.asarray(triangles, dtype=np.float64):
        lo = np.clip(np.floor(tri.min(0) / voxel).astype(int), 0, shape)
        hi = np.clip(np.floor(tri.max(0) / voxel).astype(int) + 1, 0, shape)
        for ijk in np.ndindex(*(hi - lo)):
            cell = np.asarray(ijk) + lo
            poly = list(tri)
            for axis in range(3):
                for bound, sign in ((cell[axis] * voxel, 1.0), ((cell[axis] + 1) * voxel, -1.0)):
                    poly = _clip(poly, axis, bound, sign)
            if poly:
                out.add(tuple(int(c) for c in cell))
    return out


def _clip(poly, axis, bound, sign):
    """Keeps the part of a convex polygon with sign * (p[axis] - bound) >= 0."""
    out = []
    for a, b in zip(poly, poly[1:] + poly[:1]):
        da, db = sign * (a[axis] - bound), sign * (b[axis] - bound)
        if da >= 0:
            out.append(a)
        if (da >= 0) != (db >= 0):
            out.append(a + (b - a) * (da / (da - db)))
    return out
