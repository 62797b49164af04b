"""Sparse (transposed) convolution vs torch's dense conv3d / conv_transpose3d on the densified grid."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xcube_core.sparse import ConvolutionPlan, GridBatch
from xcube_core.nn import SparseConv3d, SparseConvTranspose3d
from tests.sparse.helpers import at_voxels, densify, random_grid

BOX = 8


@pytest.fixture(autouse=True, params=["table", "gather-scatter"])
def conv_path(request, monkeypatch):
    """Run every conv test through both execution paths (narrow-layer table and per-offset GEMMs)."""
    from xcube_core.sparse.ops import conv_table

    if request.param == "gather-scatter":
        monkeypatch.setattr(conv_table, "MAX_TABLE_CHANNELS", 0)
        monkeypatch.setattr(conv_table, "MIN_FILL_WIDE", 2.0)
    return request.param


def dense_weight(w: torch.Tensor, k: int) -> torch.Tensor:
    """(K, Cin, Cout) -> torch conv3d layout (Cout, Cin, k, k, k)."""
    return w.reshape(k, k, k, w.shape[1], w.shape[2]).permute(4, 3, 0, 1, 2)


@pytest.mark.parametrize("sizes", [(1,), (120,), (90, 3, 40)])
@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_submanifold_conv_matches_dense(sizes, kernel, generator, device):
    grid = random_grid(sizes, box=BOX, generator=generator).to(device)
    x = torch.randn(grid.total_voxels, 3, generator=generator, dtype=torch.float64)
    w = torch.randn(kernel ** 3, 3, 4, generator=generator, dtype=torch.float64)
    y = ConvolutionPlan.from_grid_batch(kernel, 1, grid).execute(x.to(device), w.to(device)).cpu()
    for b in range(len(sizes)):
        ref = F.conv3d(densify(grid, x, b, BOX)[None], dense_weight(w, kernel), padding=kernel // 2)[0]
        torch.testing.assert_close(y[grid.joffsets[b]: grid.joffsets[b + 1]], at_voxels(ref, grid, b))


@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 2), (3, 1)])
def test_generative_conv_to_conv_grid_matches_dense(kernel, stride, generator, device):
    grid = random_grid((70, 30), box=BOX, generator=generator).to(device)
    target = grid.conv_grid(kernel, stride)
    x = torch.randn(grid.total_voxels, 2, generator=generator, dtype=torch.float64)
    w = torch.randn(kernel ** 3, 2, 3, generator=generator, dtype=torch.float64)
    plan = ConvolutionPlan.from_grid_batch(kernel, stride, grid, target)
    y = plan.execute(x.to(device), w.to(device)).cpu()
    pad = (kernel - 1) // 2
    for b in range(2):
        # pad generously so outputs at negative coordinates are representable: shift by `s`
        s = 2
        dense = F.pad(densify(grid, x, b, BOX), (s * stride,) * 6)
        ref = F.conv3d(dense[None], dense_weight(w, kernel), stride=stride, padding=pad)[0]
        got = y[target.joffsets[b]: target.joffsets[b + 1]]
        torch.testing.assert_close(got, at_voxels(ref, target, b, low=-s))
        # the conv grid is exactly the support of the dense output of an all-ones input
        occ = F.conv3d(F.pad(densify(grid, torch.ones_like(x[:, :1]), b, BOX), (s * stride,) * 6)[None],
                       torch.ones(1, 1, kernel, kernel, kernel, dtype=x.dtype), stride=stride, padding=pad)[0, 0]
        assert int((occ > 0).sum()) == target.num_voxels[b]


@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 1)])
def test_transposed_conv_matches_dense(kernel, stride, generator, device):
    fine = random_grid((80, 25), box=BOX, generator=generator).to(device)
    coarse = fine.coarsened_grid(stride) if stride > 1 else fine
    x = torch.randn(coarse.total_voxels, 3, generator=generator, dtype=torch.float64)
    w = torch.randn(kernel ** 3, 3, 2, generator=generator, dtype=torch.float64)
    plan = ConvolutionPlan.from_grid_batch(kernel, stride, coarse, fine, transposed=True)
    y = plan.execute(x.to(device), w.to(device)).cpu()
    cbox = BOX // stride
    pad = (kernel - 1) // 2
    for b in range(2):
        wt = w.reshape(kernel, kernel, kernel, 3, 2).permute(3, 4, 0, 1, 2)  # (Cin, Cout, k, k, k)
        ref = F.conv_transpose3d(densify(coarse, x, b, cbox)[None], wt, stride=stride, padding=pad)[0]
        ref = F.pad(ref, (0, BOX - ref.shape[-1]) * 3)
        torch.testing.assert_close(y[fine.joffsets[b]: fine.joffsets[b + 1]], at_voxels(ref, fine, b))


def test_gradcheck_conv_and_transposed(generator, device):
    grid = random_grid((12, 6), box=4, generator=generator).to(device)

    def leaf(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(device).requires_grad_()

    x, w = leaf(grid.total_voxels, 2), leaf(27, 2, 2)
    plan = ConvolutionPlan.from_grid_batch(3, 1, grid)
    assert torch.autograd.gradcheck(lambda a, b: plan.execute(a, b), (x, w))
    coarse = grid.coarsened_grid(2)
    xc, w8 = leaf(coarse.total_voxels, 2), leaf(8, 2, 3)
    tplan = ConvolutionPlan.from_grid_batch(2, 2, coarse, grid, transposed=True)
    assert torch.autograd.gradcheck(lambda a, b: tplan.execute(a, b), (xc, w8))


def test_modules_and_bfloat16_autocast(generator, device):
    grid = random_grid((200,), box=10, generator=generator).to(device)
    conv = SparseConv3d(16, 16).to(device)
    x = torch.randn(grid.total_voxels, 16, generator=generator).to(device)
    plan = ConvolutionPlan.from_grid_batch(3, 1, grid)
    ref = conv(x, plan)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        low = conv(x, plan)
    assert low.dtype == torch.bfloat16
    rel = (low.float() - ref).norm() / ref.norm()
    assert rel < 2e-2
    with pytest.raises(ValueError, match="plan"):
        SparseConvTranspose3d(16, 16)(x, plan)


def test_conv_on_empty_and_bad_weights(generator):
    grid = GridBatch.from_ijk([torch.zeros(0, 3, dtype=torch.int64), torch.tensor([[1, 1, 1]])])
    plan = ConvolutionPlan.from_grid_batch(3, 1, grid)
    y = plan.execute(torch.ones(1, 2), torch.ones(27, 2, 3))
    assert y.shape == (1, 3) and torch.allclose(y, torch.full((1, 3), 2.0))
    with pytest.raises(ValueError, match="weight"):
        plan.execute(torch.ones(1, 2), torch.ones(26, 2, 3))
    with pytest.raises(ValueError, match="rows"):
        plan.execute(torch.ones(5, 2), torch.ones(27, 2, 3))


@pytest.mark.parametrize("kernel, stride, transposed", [(3, 1, False), (1, 1, False), (2, 2, False), (2, 2, True)])
def test_dense_box_fast_path_matches_the_sparse_kernels(kernel, stride, transposed, generator, monkeypatch):
    """Full boxes run torch's dense conv3d; the result and gradients equal the sparse kernel map's."""
    from xcube_core.sparse import conv_plan

    fine = GridBatch.from_dense(2, (4, 6, 2), ijk_min=(2, 0, 4))
    coarse = fine.coarsened_grid(2)
    src, tgt = (fine, fine) if stride == 1 else ((coarse, fine) if transposed else (fine, coarse))
    x = torch.randn(src.total_voxels, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    w = torch.randn(kernel ** 3, 3, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    plan = ConvolutionPlan.from_grid_batch(kernel, stride, src, tgt, transposed=transposed)
    assert plan.dense_layout is not None
    y = plan.execute(x, w)
    gx, gw = torch.autograd.grad(y.pow(2).sum(), (x, w))
    monkeypatch.setattr(conv_plan, "DENSE_FAST_PATH", False)
    sparse = ConvolutionPlan.from_grid_batch(kernel, stride, src, tgt, transposed=transposed)
    assert sparse.dense_layout is None
    ys = sparse.execute(x, w)
    gxs, gws = torch.autograd.grad(ys.pow(2).sum(), (x, w))
    torch.testing.assert_close(y, ys)
    torch.testing.assert_close(gx, gxs)
    torch.testing.assert_close(gw, gws)
    # a box with a hole is not dense
    holed = fine.pruned_grid(torch.arange(fine.total_voxels) != 3)
    assert ConvolutionPlan.from_grid_batch(3, 1, holed).dense_layout is None
