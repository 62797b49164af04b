"""Pooling, upsampling, injection, trilinear sampling, GroupNorm and attention vs dense references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xcube_core.sparse import GridBatch, JaggedTensor
from xcube_core.nn import SparseCrossAttention, SparseGroupNorm, SparseSelfAttention, attention_windows
from tests.sparse.helpers import at_voxels, densify, random_grid

BOX = 8


def test_max_and_avg_pool_match_dense(generator, device):
    grid = random_grid((150, 40), box=BOX, generator=generator).to(device)
    x = (torch.randn(grid.total_voxels, 3, generator=generator, dtype=torch.float64) + 5.0).to(device)  # > 0
    mx, coarse = grid.max_pool(2, x)
    av, _ = grid.avg_pool(2, JaggedTensor.from_data_and_offsets(x, grid.joffsets))
    mx, av = mx.cpu(), av.jdata.cpu()
    av = JaggedTensor.from_data_and_offsets(av, coarse.joffsets.cpu())
    for b in range(2):
        d = densify(grid, x, b, BOX)
        occ = densify(grid, torch.ones_like(x[:, :1]), b, BOX)
        torch.testing.assert_close(mx[coarse.joffsets[b]: coarse.joffsets[b + 1]], at_voxels(F.max_pool3d(d, 2), coarse, b))
        mean = F.avg_pool3d(d, 2) / F.avg_pool3d(occ, 2).clamp(min=1e-9)  # mean over active children
        torch.testing.assert_close(av[b], at_voxels(mean, coarse, b))


def test_refine_copies_parent_and_inject_reads_other_grid(generator, device):
    grid = random_grid((40, 10), box=BOX, generator=generator).to(device)
    x = torch.randn(grid.total_voxels, 2, generator=generator).to(device)
    y, fine = grid.refine(2, x)
    for b in range(2):
        ref = densify(grid, x, b, BOX).repeat_interleave(2, 1).repeat_interleave(2, 2).repeat_interleave(2, 3)
        torch.testing.assert_close(y[fine.joffsets[b]: fine.joffsets[b + 1]].cpu(), at_voxels(ref, fine, b))
    keep = torch.arange(grid.total_voxels, device=device) % 3 == 0
    sub = grid.pruned_grid(keep)
    z = grid.inject_from(sub, sub.inject_from(grid, x), default_value=-1.0)
    torch.testing.assert_close(z[keep], x[keep])
    assert bool((z[~keep] == -1.0).all())


def test_sample_and_splat_trilinear_match_dense(generator, device):
    grid = random_grid((300,), box=6, generator=generator)
    x = torch.randn(grid.total_voxels, 2, generator=generator, dtype=torch.float64)
    pts = torch.rand(50, 3, generator=generator, dtype=torch.float64) * 4 + 0.5  # world, voxel 1, origin .5
    got = grid.to(device).sample_trilinear(pts.float().to(device), x.to(device)).cpu()
    dense = densify(grid, x, 0, 6)
    u = pts - 0.5
    base, frac = torch.floor(u).long(), u - torch.floor(u)
    ref = torch.zeros(50, 2, dtype=torch.float64)
    for c in range(8):
        o = torch.tensor([(c >> 2) & 1, (c >> 1) & 1, c & 1])
        w = torch.where(o.bool(), frac, 1 - frac).prod(1)
        i = base + o
        ref += w[:, None] * dense[:, i[:, 0], i[:, 1], i[:, 2]].t()
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    # splat is the adjoint of sample: <sample(x), v> == <x, splat(v)>
    v = torch.randn(50, 2, generator=generator, dtype=torch.float64)
    lhs = (got.double() * v).sum()
    rhs = (x * grid.to(device).splat_trilinear(pts.float().to(device), v.to(device)).cpu()).sum()
    torch.testing.assert_close(lhs, rhs, atol=1e-5, rtol=1e-5)


def test_group_norm_per_grid(generator, device):
    grid = random_grid((50, 9), box=BOX, generator=generator)
    x = torch.randn(grid.total_voxels, 8, generator=generator) * 3 + 1
    norm = SparseGroupNorm(2, 8).to(device)
    y = norm(x.to(device), grid.to(device)).cpu()
    for b in range(2):
        xb = x[grid.joffsets[b]: grid.joffsets[b + 1]]
        ref = F.group_norm(xb.t()[None], 2, eps=1e-5)[0].t()  # (1, C, N): stats over one grid
        torch.testing.assert_close(y[grid.joffsets[b]: grid.joffsets[b + 1]], ref, atol=1e-4, rtol=1e-4)


def test_attention_is_per_grid(generator, device):
    grid = random_grid((30, 12), box=BOX, generator=generator).to(device)
    x = torch.randn(grid.total_voxels, 8, generator=generator).to(device)
    attn = SparseSelfAttention(8, heads=2)
    torch.nn.init.normal_(attn.out.weight, generator=generator)
    attn.to(device)
    y = attn(x, grid)
    # changing grid 1 must not change grid 0's output
    x2 = x.clone()
    x2[grid.joffsets[1]:] += 1.0
    y2 = attn(x2, grid)
    n0 = int(grid.joffsets[1])
    torch.testing.assert_close(y[:n0], y2[:n0])
    # and each grid alone gives the same result as in the batch
    alone = attn(x[:n0], grid[0])
    torch.testing.assert_close(alone, y[:n0], atol=1e-5, rtol=1e-5)
    cross = SparseCrossAttention(8, context_dim=6, heads=2)
    torch.nn.init.normal_(cross.out.weight, generator=generator)
    cross.to(device)
    ctx = torch.randn(2, 5, 6, generator=generator).to(device)
    mask = torch.tensor([[True, True, False, False, False], [False] * 5], device=device)
    z = cross(x, grid, ctx, mask)
    torch.testing.assert_close(z[n0:], x[n0:])  # no tokens -> no update
    ctx2 = ctx.clone()
    ctx2[0, 2:] = 100.0  # masked tokens are ignored
    torch.testing.assert_close(cross(x, grid, ctx2, mask), z)


def test_attention_windows_lie_on_the_lattice_and_leave_small_grids_whole(generator):
    big = torch.randint(0, 10, (200, 3), generator=generator)  # spans 10 > 4 along X and Y
    small = torch.randint(20, 24, (40, 3), generator=generator)  # fits one window (not on the lattice)
    grid = GridBatch.from_ijk([big, small])
    assert attention_windows(GridBatch.from_ijk([small]), (4, 4)) is None
    ids = attention_windows(grid, (4, 4), stride=2, origin=torch.tensor([6, -2, 0]))
    ijk, b = grid.ijk.jdata.long(), grid.jidx.long()
    cell = torch.div(ijk[:, :2] * 2 + torch.tensor([6, -2]), 8, rounding_mode="floor")
    key = torch.where((b == 0)[:, None], cell, -99)  # the small grid is one window whatever its cells
    expected = {tuple(k) + (int(j),) for k, j in zip(key.tolist(), b.tolist())}
    assert len(set(ids.tolist())) == len(expected)
    for w in ids.unique():  # a window is exactly one lattice cell of one grid
        rows = ids == w
        assert len({tuple(k) + (int(j),) for k, j in zip(key[rows].tolist(), b[rows].tolist())}) == 1


def test_windowed_attention_equals_attention_on_each_window_alone(generator, device):
    grid = random_grid((300, 80), box=12, generator=generator).to(device)
    x = torch.randn(grid.total_voxels, 8, generator=generator).to(device)
    attn = SparseSelfAttention(8, heads=2)
    torch.nn.init.normal_(attn.out.weight, generator=generator)
    attn.to(device)
    ids = attention_windows(grid, (5, 5))
    y = attn(x, grid, ids)
    for w in ids.unique():  # reference: each window as a grid of its own, plain (global) attention
        rows = ids == w
        alone = attn(x[rows], GridBatch.from_ijk(grid.ijk.jdata[rows]))
        torch.testing.assert_close(y[rows], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(y, attn(x, grid))  # and windows do change the result of a large grid
