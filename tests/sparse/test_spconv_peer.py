"""Our submanifold and strided convs vs spconv 2.3.8 (CPU) on the same grid and weights."""

from __future__ import annotations

import pytest
import torch

from xcube_core.sparse import ConvolutionPlan
from tests.deps import require
from tests.sparse.helpers import random_grid

spconv = require("spconv.pytorch")


def _spconv_tensor(grid, x, box):
    ijk = grid.ijk.jdata.int()
    idx = torch.cat([grid.jidx.int()[:, None], ijk], dim=1)
    return spconv.SparseConvTensor(x, idx, [box, box, box], grid.grid_count)


def _spconv_weight(w, k):
    # ours (K, Cin, Cout) with K x-major -> spconv (Cout, kx, ky, kz, Cin)
    return w.reshape(k, k, k, w.shape[1], w.shape[2]).permute(4, 0, 1, 2, 3).contiguous()


def test_submanifold_conv_matches_spconv(generator):
    grid = random_grid((400, 150), box=12, generator=generator)
    x = torch.randn(grid.total_voxels, 16, generator=generator)
    w = torch.randn(27, 16, 8, generator=generator) * 0.1
    ours = ConvolutionPlan.from_grid_batch(3, 1, grid).execute(x, w)
    layer = spconv.SubMConv3d(16, 8, 3, bias=False, indice_key="s")
    layer.weight.data.copy_(_spconv_weight(w, 3))
    out = layer(_spconv_tensor(grid, x, 12))
    # spconv keeps the input's row order for submanifold convs
    torch.testing.assert_close(out.features, ours, atol=1e-4, rtol=1e-4)


def test_strided_conv_matches_spconv(generator):
    grid = random_grid((300,), box=12, generator=generator)
    x = torch.randn(grid.total_voxels, 8, generator=generator)
    w = torch.randn(8, 8, 4, generator=generator) * 0.1
    plan = ConvolutionPlan.from_grid_batch(2, 2, grid)
    ours = plan.execute(x, w)
    layer = spconv.SparseConv3d(8, 4, 2, stride=2, bias=False)
    layer.weight.data.copy_(_spconv_weight(w, 2))
    out = layer(_spconv_tensor(grid, x, 12))
    # map spconv's output rows to ours through their coordinates
    idx = plan.target_grid.ijk_to_index(out.indices[:, 1:].long())
    assert bool((idx >= 0).all()) and out.features.shape[0] == plan.target_grid.total_voxels
    torch.testing.assert_close(out.features, ours[idx], atol=1e-4, rtol=1e-4)
