"""Backends: the tiled torch path vs a naive reference, the kernel-map search vs brute force, and the
fVDB adapter's conversions against a small fake ``fvdb`` (the real one: tests/sparse/test_fvdb_routing.py)."""

from __future__ import annotations

import sys

import pytest
import torch

from xcube_core.sparse import ConvolutionPlan, GridBatch, JaggedTensor, kernel_offsets
from xcube_core.sparse.backends import available_backends, conv_backend_for
from xcube_core.sparse.backends import fvdb as fvdb_backend
from xcube_core.compat.thread_pinning import one_thread_hooks
from xcube_core.sparse.ops import conv as conv_ops
from tests.sparse.fake_fvdb import _FakeGridBatch, fake_fvdb  # noqa: F401 (fixture)
from tests.sparse.helpers import random_grid


# --- torch backend: tiling and kernel maps ------------------------------------------------------
def _plans(generator):
    fine = random_grid((150, 40, 1), box=9, generator=generator)
    coarse = fine.coarsened_grid(2)
    return [
        ConvolutionPlan.from_grid_batch(3, 1, fine),                             # submanifold
        ConvolutionPlan.from_grid_batch(3, 1, fine, fine.dilated_grid(1)),       # generative, stride 1
        ConvolutionPlan.from_grid_batch(3, 2, fine),                             # strided
        ConvolutionPlan.from_grid_batch(2, 2, coarse, fine, transposed=True),    # transposed
        ConvolutionPlan.from_grid_batch((3, 1, 2), 1, fine),                     # non-cubic, even axis
    ]


def _brute_pairs(plan) -> list[set[tuple[int, int]]]:
    """Per offset, {(in_row, out_row)} from coordinates alone (dict lookups, no searching)."""
    def rows(grid):
        return {(int(b), *map(int, v)): r for r, (b, v) in enumerate(zip(grid.jidx.tolist(), grid.ijk.jdata.tolist()))}
    src, dst = rows(plan.source_grid), rows(plan.target_grid)
    out = []
    for k, d in enumerate(kernel_offsets(plan.kernel_size).tolist()):
        pairs = set()
        if plan.transposed:   # input i writes output i * s + d
            for (b, *ijk), r in src.items():
                o = dst.get((b, *(c * plan.stride + dd for c, dd in zip(ijk, d))))
                if o is not None:
                    pairs.add((r, o))
        else:                 # output o reads input o * s + d
            for (b, *ijk), o in dst.items():
                i = src.get((b, *(c * plan.stride + dd for c, dd in zip(ijk, d))))
                if i is not None:
                    pairs.add((i, o))
        out.append(pairs)
    return out


def test_kernel_map_matches_brute_force_and_is_sorted(generator):
    for plan in _plans(generator):
        ref = _brute_pairs(plan)
        for k in range(plan.num_offsets):
            i, o = plan.pairs(k)
            assert set(zip(i.tolist(), o.tolist())) == ref[k], (plan.kernel_size, plan.stride, k)
            if k != plan.center:  # tiling relies on both sides being sorted within an offset
                assert bool((o[1:] > o[:-1]).all()) and bool((i[1:] > i[:-1]).all())


def _naive_conv(x, w, plan):
    out = x.new_zeros(plan.target_grid.total_voxels, w.shape[2])
    for k in range(plan.num_offsets):
        i, o = plan.pairs(k)
        out.index_add_(0, o, x[i] @ w[k])
    return out


@pytest.mark.parametrize("tile", [1, 5, 64, 1 << 20])
def test_tiled_forward_and_backward_match_naive(tile, generator):
    for plan in _plans(generator):
        x = torch.randn(plan.source_grid.total_voxels, 3, generator=generator, dtype=torch.float64)
        w = torch.randn(plan.num_offsets, 3, 2, generator=generator, dtype=torch.float64)
        g = torch.randn(plan.target_grid.total_voxels, 2, generator=generator, dtype=torch.float64)
        ref_x, ref_w = x.clone().requires_grad_(), w.clone().requires_grad_()
        ref = _naive_conv(ref_x, ref_w, plan)
        ref.backward(g)
        got = conv_ops._forward(x, w, plan, tile)
        torch.testing.assert_close(got, ref.detach())
        gx, gw = conv_ops._backward(x, w, g, plan, (True, True), tile)
        torch.testing.assert_close(gx, ref_x.grad)
        torch.testing.assert_close(gw, ref_w.grad)
        assert conv_ops._backward(x, w, g, plan, (False, True), tile)[0] is None


@pytest.mark.skipif(one_thread_hooks() is None, reason="needs GNU OpenMP + MKL (Linux torch wheels)")
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_tiles_on_worker_threads_match_naive(dtype, generator):
    threads = torch.get_num_threads()
    for plan in _plans(generator):
        x = torch.randn(plan.source_grid.total_voxels, 4, generator=generator, dtype=torch.float64)
        w = torch.randn(plan.num_offsets, 4, 3, generator=generator, dtype=torch.float64)
        g = torch.randn(plan.target_grid.total_voxels, 3, generator=generator, dtype=torch.float64)
        ref_x, ref_w = x.clone().requires_grad_(), w.clone().requires_grad_()
        ref = _naive_conv(ref_x, ref_w, plan)
        ref.backward(g)
        def close(a, b):
            if dtype == torch.float64:
                torch.testing.assert_close(a, b)
            else:  # bf16 inputs: about 3 significant digits, checked on the whole tensor
                assert float((a.double() - b).norm() / b.norm()) < 1e-2
        got = conv_ops._forward(x.to(dtype), w.to(dtype), plan, 7, 3)  # 3 workers over 7-row tiles
        close(got.double(), ref.detach())
        gx, gw = conv_ops._backward(x.to(dtype), w.to(dtype), g.to(dtype), plan, (True, True), 7, 3)
        close(gx.double(), ref_x.grad)
        close(gw.double(), ref_w.grad)
    assert torch.get_num_threads() == threads  # workers pin themselves, not the process


@pytest.mark.skipif(one_thread_hooks() is None, reason="needs GNU OpenMP + MKL (Linux torch wheels)")
def test_kernel_map_on_worker_threads_equals_single_thread(generator):
    grid = GridBatch.from_ijk(torch.randint(0, 60, (90_000, 3), generator=generator))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ConvolutionPlan.from_grid_batch(3, 1, grid)
        torch.set_num_threads(2)  # >= 65536 voxels: columns go to 2 pinned workers
        two = ConvolutionPlan.from_grid_batch(3, 1, grid)
    finally:
        torch.set_num_threads(threads)
    assert one.counts == two.counts
    assert torch.equal(one.in_idx, two.in_idx) and torch.equal(one.out_idx, two.out_idx)


def test_bfloat16_weight_grad_accumulates_in_float32(generator):
    grid = random_grid((300,), box=10, generator=generator)
    plan = ConvolutionPlan.from_grid_batch(3, 1, grid)
    x = torch.randn(grid.total_voxels, 8, generator=generator)
    w = (torch.randn(27, 8, 8, generator=generator) * 0.1).requires_grad_()
    plan.execute(x, w).square().sum().backward()
    ref = w.grad.clone()
    w.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = plan.execute(x, w)
    assert y.dtype == torch.bfloat16
    y.float().square().sum().backward()
    assert w.grad.dtype == torch.float32
    assert float((w.grad - ref).norm() / ref.norm()) < 3e-2


# --- fVDB adapter: unavailable here ---------------------------------------------------------------
def test_fvdb_reports_unavailable_without_fvdb(monkeypatch):
    monkeypatch.setitem(sys.modules, "fvdb", None)  # makes `import fvdb` raise ImportError
    assert not fvdb_backend.is_available()
    assert available_backends() == ["torch"]
    assert conv_backend_for(torch.zeros(1, 1)) == "torch"
    with pytest.raises(RuntimeError, match="fVDB is not importable"):
        fvdb_backend.to_fvdb(GridBatch.from_ijk(torch.zeros(1, 3, dtype=torch.int64)))


# --- fVDB adapter: against a fake fvdb with the 0.6.0 API surface (tests/sparse/fake_fvdb.py) -----
def _batch(generator):
    return GridBatch.from_ijk([torch.randint(-6, 10, (70, 3), generator=generator),
                               torch.randint(0, 5, (20, 3), generator=generator)],
                              voxel_sizes=[[0.5, 0.5, 0.5], [0.25, 0.25, 0.5]])


def test_round_trip_keeps_voxels_sizes_and_origins(fake_fvdb, generator):
    grid = _batch(generator)
    assert fvdb_backend.is_available() and available_backends() == ["torch", "fvdb"]
    assert conv_backend_for(torch.zeros(1, 1)) == "torch"  # CPU tensors stay on torch
    fgrid = fvdb_backend.to_fvdb(grid)
    assert isinstance(fgrid, _FakeGridBatch) and fgrid.total_voxels == grid.total_voxels
    back = fvdb_backend.from_fvdb(fgrid)
    assert back.is_same(grid)
    torch.testing.assert_close(back.voxel_sizes, grid.voxel_sizes)
    torch.testing.assert_close(back.origins, grid.origins)  # half-voxel default travels explicitly


def test_voxel_order_permutes_features_both_ways(fake_fvdb, generator):
    grid = _batch(generator)
    fgrid = fvdb_backend.to_fvdb(grid)
    order = fvdb_backend.VoxelOrder.between(grid, fgrid)
    assert not torch.equal(order.to_fvdb, torch.arange(grid.total_voxels))  # the orders really differ
    # fVDB row r holds our voxel to_fvdb[r]: same coordinates, same grid
    assert torch.equal(fgrid.ijk.jdata, grid.ijk.jdata[order.to_fvdb])
    assert torch.equal(fgrid.ijk.jidx, grid.jidx[order.to_fvdb])
    feats = torch.randn(grid.total_voxels, 4, generator=generator)
    assert torch.equal(order.features_to_ours(order.features_to_fvdb(feats)), feats)
    assert torch.equal(order.to_ours[order.to_fvdb], torch.arange(grid.total_voxels))


def test_voxel_order_rejects_different_topology(fake_fvdb, generator):
    grid = _batch(generator)
    other = fvdb_backend.to_fvdb(grid.dilated_grid(1))
    with pytest.raises(ValueError, match="grids differ"):
        fvdb_backend.VoxelOrder.between(grid, other)
    shifted = GridBatch.from_ijk([grid.ijk[0].long() + 1, grid.ijk[1].long()])
    with pytest.raises(ValueError, match="not the same topology"):
        fvdb_backend.VoxelOrder.between(grid, fvdb_backend.to_fvdb(shifted))


@pytest.mark.parametrize("target", ["same", "dilated"])
def test_fvdb_convolution_matches_torch_plan(fake_fvdb, target, generator):
    grid = _batch(generator)
    plan = ConvolutionPlan.from_grid_batch(3, 1, grid, None if target == "same" else grid.dilated_grid(1))
    x = torch.randn(grid.total_voxels, 3, generator=generator, dtype=torch.float64)
    w = torch.randn(27, 3, 2, generator=generator, dtype=torch.float64)
    bias = torch.randn(2, generator=generator, dtype=torch.float64)
    fconv = fvdb_backend.FVDBConvolution.from_plan(plan)
    torch.testing.assert_close(fconv.execute(x, w, bias), plan.execute(x, w, bias))
    jagged = fconv.execute(grid.jagged_like(x), w)
    assert isinstance(jagged, JaggedTensor) and torch.equal(jagged.joffsets, plan.target_grid.joffsets)
    with pytest.raises(ValueError, match="data must be"):
        fconv.execute(x[:-1], w)


def test_weight_layout_errors_are_clear():
    with pytest.raises(ValueError, match="weight must be"):
        fvdb_backend.weight_to_fvdb(torch.zeros(26, 2, 2), (3, 3, 3))
    with pytest.raises(ValueError, match="weight_map"):
        fvdb_backend.weight_to_fvdb(torch.zeros(27, 2, 2), (3, 3, 3), "sideways")
