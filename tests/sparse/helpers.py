"""Random grids and dense references shared by the engine tests."""

from __future__ import annotations

import torch

from xcube_core.sparse import GridBatch


def random_grid(sizes=(60, 25), box=8, generator=None, low=0) -> GridBatch:
    """A batch of grids with roughly ``sizes`` voxels each in [low, low + box)^3."""
    ijk = [torch.randint(low, low + box, (n, 3), generator=generator) for n in sizes]
    return GridBatch.from_ijk(ijk)


def densify(grid: GridBatch, data: torch.Tensor, b: int, box: int, low: int = 0) -> torch.Tensor:
    """Grid b's features as a dense (C, box, box, box) tensor (zeros where inactive)."""
    ijk = grid.ijk[b].long() - low
    x = data[grid.joffsets[b]: grid.joffsets[b + 1]]
    dense = torch.zeros((x.shape[1], box, box, box), dtype=data.dtype)
    dense[:, ijk[:, 0], ijk[:, 1], ijk[:, 2]] = x.t()
    return dense


def at_voxels(dense: torch.Tensor, grid: GridBatch, b: int, low: int = 0) -> torch.Tensor:
    """Read a dense (C, X, Y, Z) tensor at grid b's voxels -> (N_b, C)."""
    ijk = grid.ijk[b].long() - low
    return dense[:, ijk[:, 0], ijk[:, 1], ijk[:, 2]].t()


def ijk_set(grid: GridBatch, b: int) -> set[tuple[int, int, int]]:
    return {tuple(v) for v in grid.ijk[b].tolist()}
