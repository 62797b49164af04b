"""Gather-GEMM-scatter sparse convolution with a memory-lean backward.

Forward, per kernel offset k: ``out[out_k] += x[in_k] @ W[k]``; the submanifold centre offset is one
dense matmul that also initialises the output. Backward recomputes the gathers instead of keeping
every gathered block alive, so training memory is O(N * C), not O(pairs * C).

Under CPU/CUDA autocast (bfloat16/float16) the matmuls run in the autocast dtype, as
``torch.matmul`` would, and the result has that dtype.
"""

from __future__ import annotations

import torch


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    dev = x.device.type
    if dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev) and x.dtype in (torch.float32, torch.bfloat16,
                                                                                  torch.float16):
        return torch.get_autocast_dtype(dev)
    return x.dtype


class _SparseConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, plan) -> torch.Tensor:
        ctx.plan = plan
        ctx.save_for_backward(x, weight)
        return _forward(x, weight, plan)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        plan = ctx.plan
        grad_out = grad_out.contiguous()
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = torch.zeros_like(x) if need_x else None
        grad_w = torch.zeros_like(weight) if need_w else None
        for k in range(plan.num_offsets):
            if k != plan.center and plan.counts[k] == 0:
                continue
            in_k, out_k = plan.pairs(k)
            g = grad_out if k == plan.center else grad_out.index_select(0, out_k)
            if need_x:
                gx = g @ weight[k].t()
                if k == plan.center:
                    grad_x += gx
                else:
                    grad_x.index_add_(0, in_k, gx)
            if need_w:
                xin = x if k == plan.center else x.index_select(0, in_k)
                grad_w[k] = xin.t() @ g
        return grad_x, grad_w, None


def _forward(x: torch.Tensor, weight: torch.Tensor, plan) -> torch.Tensor:
    n_out = plan.target_grid.total_voxels
    if plan.center is not None:
        out = x @ weight[plan.center]
    else:
        out = x.new_zeros(n_out, weight.shape[2])
    for k in range(plan.num_offsets):
        if k == plan.center or plan.counts[k] == 0:
            continue
        in_k, out_k = plan.pairs(k)
        out.index_add_(0, out_k, x.index_select(0, in_k) @ weight[k])
    return out


def sparse_conv(x: torch.Tensor, weight: torch.Tensor, plan) -> torch.Tensor:
    """Sparse convolution of features ``x`` (N_in, C_in) with ``weight`` (K, C_in, C_out) along ``plan``."""
    dtype = _compute_dtype(x)
    with torch.autocast(x.device.type, enabled=False):
        return _SparseConvFn.apply(x.to(dtype), weight.to(dtype), plan)
