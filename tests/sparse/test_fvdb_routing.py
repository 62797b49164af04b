"""`nn` convolutions run through fVDB on CUDA when it imports, with the torch backend as the fallback.

CPU: the routing, the one-time orientation check and the fallback, against `fake_fvdb` (its transposed
kernel is mirrored on purpose). GPU: the real fVDB must agree numerically with the torch backend,
forward and transposed, values and gradients (skipped only where fVDB is not installed or no GPU).
"""

from __future__ import annotations

import logging

import pytest
import torch

import xcube_core.sparse.backends as backends
from xcube_core.nn import SparseConv3d, SparseConvTranspose3d
from xcube_core.sparse import ConvolutionPlan, GridBatch
from xcube_core.sparse.backends import fvdb as fvdb_backend
from tests.deps import require
from tests.sparse.fake_fvdb import fake_fvdb  # noqa: F401 (fixture)

CONFIGS = [(3, 1, False), (3, 2, False), (2, 2, True), (3, 2, True)]  # (kernel, stride, transposed)


def _plan(kernel, stride, transposed, device, generator):
    fine = GridBatch.from_ijk(torch.randint(0, 12, (300, 3), generator=generator).to(device))
    if transposed:
        coarse = fine.coarsened_grid(stride)
        return ConvolutionPlan.from_grid_batch(kernel, stride, coarse, fine, transposed=True)
    return ConvolutionPlan.from_grid_batch(kernel, stride, fine)


@pytest.fixture
def route_to_fvdb(monkeypatch, fake_fvdb):  # noqa: F811
    """CPU features take the CUDA route (the only thing fVDB changes is who computes)."""
    monkeypatch.setattr(backends, "conv_backend_for", lambda x: "fvdb")
    return fake_fvdb


@pytest.mark.parametrize("kernel, stride, transposed", CONFIGS)
def test_nn_convs_route_through_fvdb_and_agree(route_to_fvdb, kernel, stride, transposed, generator):
    plan = _plan(kernel, stride, transposed, "cpu", generator)
    conv = (SparseConvTranspose3d if transposed else SparseConv3d)(3, 2, kernel, stride).double()
    x = torch.randn(plan.source_grid.total_voxels, 3, generator=generator, dtype=torch.float64)
    got = conv(x, plan)
    fconv = plan.backend_plans["fvdb"]
    assert isinstance(fconv, fvdb_backend.FVDBConvolution)
    assert fconv.weight_map == ("flipped" if transposed else "as_is")  # the fake mirrors transposed taps
    torch.testing.assert_close(got, plan.execute(x, conv.weight, conv.bias))
    assert conv(x, plan) is not None and plan.backend_plans["fvdb"] is fconv  # built once per plan


def test_a_disagreeing_fvdb_falls_back_to_torch_with_a_warning(route_to_fvdb, monkeypatch, generator, caplog):
    real_execute = route_to_fvdb.ConvolutionPlan.execute
    monkeypatch.setattr(route_to_fvdb.ConvolutionPlan, "execute",
                        lambda self, data, w: type(data).from_data_and_offsets(
                            real_execute(self, data, w).jdata + 1.0, self.dst.joffsets))
    plan = _plan(3, 1, False, "cpu", generator)
    conv = SparseConv3d(3, 2).double()
    x = torch.randn(plan.source_grid.total_voxels, 3, generator=generator, dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger=fvdb_backend.__name__):
        got = conv(x, plan)
    assert plan.backend_plans["fvdb"] is None and "disagrees" in caplog.text
    torch.testing.assert_close(got, plan.execute(x, conv.weight, conv.bias))


def test_cpu_features_never_touch_fvdb(fake_fvdb, generator):  # noqa: F811
    plan = _plan(3, 1, False, "cpu", generator)
    SparseConv3d(3, 2)(torch.randn(plan.source_grid.total_voxels, 3, generator=generator), plan)
    assert plan.backend_plans == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fVDB runs on CUDA")
@pytest.mark.parametrize("kernel, stride, transposed", CONFIGS)
def test_real_fvdb_agrees_with_the_torch_backend(kernel, stride, transposed, generator):
    require("fvdb")
    fvdb_backend.weight_map_for.cache_clear()
    plan = _plan(kernel, stride, transposed, "cuda", generator)
    fconv = fvdb_backend.convolution_for(plan)
    assert fconv is not None, "fVDB disagrees with the torch backend in both kernel orientations"
    x = torch.randn(plan.source_grid.total_voxels, 8, generator=generator).cuda().requires_grad_()
    w = torch.randn(plan.num_offsets, 8, 4, generator=generator).cuda().requires_grad_()
    g = torch.randn(plan.target_grid.total_voxels, 4, generator=generator).cuda()
    ours = plan.execute(x, w)
    gx, gw = torch.autograd.grad(ours, (x, w), g)
    theirs = fconv.execute(x, w)
    fx, fw = torch.autograd.grad(theirs, (x, w), g)
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fx, gx, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fw, gw, rtol=1e-4, atol=1e-3)
