"""`GridBatch.occupancy_normals` against a dense torch reference (a 3x3x3 convolution of occupancy)."""

from __future__ import annotations

import itertools

import torch

from xcube_core.level import Level
from xcube_core.sparse import GridBatch
from tests.sparse.helpers import random_grid


def _dense_reference(grid: GridBatch, b: int, box: int) -> torch.Tensor:
    """Minus the sum of unit directions to occupied 26-neighbours, by conv3d on a dense box (N_b, 3)."""
    ijk = grid.ijk[b].long().cpu() + 1  # one voxel of empty padding
    occ = torch.zeros(1, 1, box + 2, box + 2, box + 2, dtype=torch.float64)
    occ[0, 0, ijk[:, 0], ijk[:, 1], ijk[:, 2]] = 1
    kernel = torch.zeros(3, 1, 3, 3, 3, dtype=torch.float64)
    for d in itertools.product((-1, 0, 1), repeat=3):
        if any(d):
            u = torch.tensor(d, dtype=torch.float64)
            kernel[:, 0, d[0] + 1, d[1] + 1, d[2] + 1] = -u / u.norm()
    field = torch.nn.functional.conv3d(occ, kernel, padding=1)[0]  # cross-correlation: sums occ[x + d]
    acc = field[:, ijk[:, 0], ijk[:, 1], ijk[:, 2]].t()
    norm = acc.norm(dim=1, keepdim=True)
    return torch.where(norm > 1e-6, acc / norm.clamp(min=1e-6), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))


def test_occupancy_normals_match_the_dense_reference(device, generator):
    grid = random_grid(sizes=(200, 40, 1), box=9, generator=generator).to(device)
    got = grid.occupancy_normals()
    assert got.jdata.device == device and got.jdata.dtype == torch.float32
    for b in range(grid.grid_count):
        assert torch.allclose(got[b].cpu().double(), _dense_reference(grid, b, 9), atol=1e-5)


def test_a_slab_faces_out_and_a_lone_voxel_points_up(device):
    ijk = torch.tensor([(i, j, k) for i in range(6) for j in range(6) for k in range(3)], device=device)
    grid = GridBatch.from_ijk([ijk, torch.tensor([[4, 4, 4]], device=device)])
    n0 = grid.occupancy_normals()[0]
    top = grid.ijk[0][:, 2] == 2
    centre = top & (grid.ijk[0][:, 0] - 2.5).abs().lt(2) & (grid.ijk[0][:, 1] - 2.5).abs().lt(2)
    assert int(centre.sum()) == 16
    assert torch.allclose(n0[centre], torch.tensor([0.0, 0.0, 1.0], device=device).expand(16, 3), atol=1e-6)
    assert torch.equal(grid.occupancy_normals()[1].cpu(), torch.tensor([[0.0, 0.0, 1.0]]))


def test_level_orders_attributes_like_its_grid(device, generator):
    ijk = torch.randperm(512, generator=generator)[:60]
    ijk = torch.stack([ijk // 64, ijk // 8 % 8, ijk % 8], dim=1).to(torch.int32)  # unsorted, unique
    normals = torch.nn.functional.normalize(torch.randn(60, 3, generator=generator), dim=1)
    sem = torch.randint(0, 5, (60,), generator=generator)
    level = Level(index=0, ijk=ijk, voxel_size=0.5, normals=normals, semantics=sem)
    grid, n, s = level.grid_attributes(device)
    rows = grid.ijk_to_index(ijk.to(device))
    assert torch.equal(n[rows].cpu(), normals) and torch.equal(s[rows].cpu(), sem)
    assert Level(index=0, ijk=ijk, voxel_size=0.5).grid_attributes(device)[1:] == (None, None)
    est = level.occupancy_normals()
    assert torch.equal(est, grid.occupancy_normals().jdata[rows].cpu())
