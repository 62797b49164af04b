"""GridBatch topology vs set arithmetic on ijk, and bad input."""

from __future__ import annotations

import itertools

import pytest
import torch

from xcube_core.sparse import GridBatch, JaggedTensor
from tests.sparse.helpers import ijk_set, random_grid


@pytest.mark.parametrize("sizes", [(1,), (40,), (70, 5, 33)])
def test_from_ijk_dedups_sorts_and_indexes(sizes, generator, device):
    raw = [torch.randint(-5, 5, (n, 3), generator=generator) for n in sizes]
    grid = GridBatch.from_ijk([r.to(device) for r in raw])
    assert grid.device == device
    assert grid.grid_count == len(sizes)
    for b, r in enumerate(raw):
        expect = {tuple(v) for v in r.tolist()}
        assert ijk_set(grid, b) == expect
        assert grid.num_voxels[b] == len(expect)
        # ijk_to_index inverts ijk, per grid and cumulatively
        idx = grid.ijk_to_index(JaggedTensor([grid.ijk[i] for i in range(len(sizes))]))
        assert torch.equal(idx[b].cpu(), torch.arange(len(expect)))
    cum = grid.ijk_to_index(grid.ijk, cumulative=True)
    assert torch.equal(cum.jdata.cpu(), torch.arange(grid.total_voxels))


def test_ijk_to_index_missing_is_minus_one():
    grid = GridBatch.from_ijk(torch.tensor([[0, 0, 0], [1, 2, 3]]))
    idx = grid.ijk_to_index(torch.tensor([[1, 2, 3], [0, 0, 1], [0, 0, 0], [-7, 9, 0]]))
    assert idx.tolist() == [1, -1, 0, -1]


def test_coarsen_refine_dilate_match_set_arithmetic(generator, device):
    grid = random_grid((50, 20), box=9, low=-4, generator=generator).to(device)
    coarse, fine, dil = grid.coarsened_grid(2), grid.refined_grid(2), grid.dilated_grid(1)
    for b in range(2):
        s = ijk_set(grid, b)
        assert ijk_set(coarse, b) == {(i // 2, j // 2, k // 2) for i, j, k in s}
        kids = set(itertools.product(range(2), repeat=3))
        assert ijk_set(fine, b) == {(2 * i + a, 2 * j + c, 2 * k + d) for i, j, k in s for a, c, d in kids}
        nb = set(itertools.product((-1, 0, 1), repeat=3))
        assert ijk_set(dil, b) == {(i + a, j + c, k + d) for i, j, k in s for a, c, d in nb}
    # alignment: level origin stays half the voxel size through coarsen/refine
    assert torch.allclose(coarse.voxel_sizes, grid.voxel_sizes * 2)
    assert torch.allclose(coarse.origins, coarse.voxel_sizes / 2)
    assert torch.allclose(fine.origins, fine.voxel_sizes / 2)
    # every fine voxel's centre lies inside its parent voxel
    w_fine = fine.voxel_to_world(fine.ijk.jdata.float())
    parent_ijk = torch.div(fine.ijk.jdata.long(), 2, rounding_mode="floor")
    w_parent = grid.voxel_to_world(parent_ijk.float())
    assert bool(((w_fine - w_parent).abs() <= grid.voxel_sizes[0] / 2 + 1e-6).all())


def test_refined_grid_with_mask_and_pruned_grid(generator):
    grid = random_grid((30, 30), generator=generator)
    mask = torch.rand(grid.total_voxels, generator=generator) > 0.5
    fine = grid.refined_grid(2, mask=mask)
    kept = grid.pruned_grid(mask)
    assert fine.total_voxels == 8 * kept.total_voxels
    assert fine.coarsened_grid(2).is_same(kept)


def test_merged_and_conv_grid_and_cat(generator, device):
    a = random_grid((20, 10), generator=generator).to(device)
    b = random_grid((15, 12), generator=generator).to(device)
    m = a.merged_grid(b)
    for i in range(2):
        assert ijk_set(m, i) == ijk_set(a, i) | ijk_set(b, i)
    s2 = a.conv_grid(kernel_size=3, stride=2)
    for i in range(2):
        expect = {(o0, o1, o2) for (x, y, z) in ijk_set(a, i) for d in itertools.product((-1, 0, 1), repeat=3)
                  for o0, o1, o2 in [((x - d[0]) // 2, (y - d[1]) // 2, (z - d[2]) // 2)]
                  if (x - d[0]) % 2 == 0 and (y - d[1]) % 2 == 0 and (z - d[2]) % 2 == 0}
        assert ijk_set(s2, i) == expect
    cat = GridBatch.cat([a, b])
    assert cat.grid_count == 4 and ijk_set(cat, 3) == ijk_set(b, 1)
    assert ijk_set(cat[2], 0) == ijk_set(b, 0)


def test_points_builders_and_world_transform():
    pts = torch.tensor([[0.1, 0.1, 0.1], [0.9, 0.2, 0.05], [2.6, 0.0, 0.0]])
    grid = GridBatch.from_points(pts, voxel_sizes=0.5, origins=0.0)
    assert ijk_set(grid, 0) == {(0, 0, 0), (2, 0, 0), (5, 0, 0)}
    near = GridBatch.from_nearest_voxels_to_points(pts[:1], voxel_sizes=0.5, origins=0.0)
    assert ijk_set(near, 0) == set(itertools.product((0, 1), repeat=3))
    w = grid.voxel_to_world(grid.ijk)
    assert torch.allclose(grid.world_to_voxel(w).jdata, grid.ijk.jdata.float())
    dense = GridBatch.from_dense(2, (2, 3, 4), ijk_min=(1, 0, 0))
    assert dense.num_voxels.tolist() == [24, 24] and dense.bbox()[0].tolist() == [[1, 0, 0], [2, 2, 3]]


def test_empty_grids_are_valid_and_ops_return_empty():
    grid = GridBatch.from_ijk([torch.zeros(0, 3, dtype=torch.int32), torch.tensor([[0, 0, 0]])])
    assert grid.num_voxels.tolist() == [0, 1]
    assert grid.coarsened_grid(2).num_voxels.tolist() == [0, 1]
    assert grid.refined_grid(2).num_voxels.tolist() == [0, 8]
    empty = GridBatch.from_ijk(torch.zeros(0, 3, dtype=torch.int64))
    assert empty.total_voxels == 0 and empty.dilated_grid(1).total_voxels == 0


@pytest.mark.parametrize("bad, match", [
    (lambda: GridBatch.from_ijk(torch.zeros(4, 3)), "integer"),
    (lambda: GridBatch.from_ijk(torch.zeros(4, 2, dtype=torch.int64)), r"\(N, 3\)"),
    (lambda: GridBatch.from_ijk(torch.zeros(4, 3, dtype=torch.int64), voxel_sizes=-1.0), "> 0"),
    (lambda: GridBatch.from_ijk(torch.zeros(4, 3, dtype=torch.int64), voxel_sizes=(1.0, 2.0)), "3 values"),
    (lambda: GridBatch.from_ijk(torch.tensor([[70000, 0, 0]])), "limit"),
    (lambda: GridBatch.from_points(torch.tensor([[float("nan"), 0.0, 0.0]])), "NaN"),
    (lambda: GridBatch.from_ijk([]), "at least one"),
    (lambda: GridBatch.from_ijk(torch.zeros(2, 3, dtype=torch.int64)).pruned_grid(torch.ones(3, dtype=torch.bool)),
     "3 values"),
    (lambda: GridBatch.from_ijk(torch.zeros(2, 3, dtype=torch.int64)).dilated_grid(-1), "dilation"),
])
def test_bad_input_raises_clear_value_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_wrong_kind_raises_type_error():
    with pytest.raises(TypeError):
        GridBatch.from_ijk("0 0 0")
    with pytest.raises(TypeError):
        GridBatch()
