"""Sparse convolution for narrow layers: one wide GEMM, then a gather-sum over a neighbour table.

With few channels (C <= 32) a per-offset gather-GEMM-scatter runs 27 tiny, memory-bound GEMMs and
27 serial scatter-adds per conv. Here ``Y = x @ [W_0 | ... | W_K-1]`` is one (N_in, K * C_out) GEMM;
output row o sums ``Y[in_k(o), k]`` over its K taps, read through a dense (N_out, K) table whose
missing taps point at a zero row. No scatter anywhere: in the backward pass every (input,
tap) row of Y fed at most one output row, so its gradient is a gather through the inverse table. It costs K / (mean taps) more multiply-adds, which is cheap at these widths.
"""

from __future__ import annotations

import torch

from xcube_core.sparse.ops.matmul import mm_rows, needs_bucket

# Use the table when (N_in * K * C_out) elements of Y stay below this (about 256 MB in float32).
MAX_TABLE_ELEMENTS = 64 * 1024 * 1024
MAX_TABLE_CHANNELS = 32
# Wider layers use the table when at least this fraction of the K taps per output exist.
MIN_FILL_WIDE = 0.5


def neighbour_tables(plan) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward table (N_out * K,) and inverse table (N_in * K,) of the plan, built once per plan.

    ``table[o * K + k]`` is the row of ``Y`` (viewed as (N_in * K + 1, C_out)) that output o reads
    through tap k, or the zero row N_in * K. ``inverse[i * K + k]`` is the output row that input i
    feeds through tap k, or N_out (a zero row appended to the gradient).
    """
    tables = getattr(plan, "_neighbour_tables", None)
    if tables is None:
        n_in, n_out, k_all = plan.source_grid.total_voxels, plan.target_grid.total_voxels, plan.num_offsets
        dev = plan.in_idx.device
        counts = torch.tensor(plan.counts, device=dev)
        kk = torch.repeat_interleave(torch.arange(k_all, device=dev), counts)
        in_rows, out_rows = plan.in_idx, plan.out_idx
        if plan.center is not None:
            ar = torch.arange(n_in, device=dev)
            in_rows, out_rows = torch.cat([in_rows, ar]), torch.cat([out_rows, ar])
            kk = torch.cat([kk, torch.full_like(ar, plan.center)])
        y_rows = in_rows * k_all + kk
        table = torch.full((n_out * k_all,), n_in * k_all, dtype=torch.int64, device=dev)
        table[out_rows * k_all + kk] = y_rows
        inverse = torch.full((n_in * k_all,), n_out, dtype=torch.int64, device=dev)
        inverse[y_rows] = out_rows
        tables = (table, inverse)
        plan._neighbour_tables = tables  # derived from the plan's own pairs; lives and dies with it
    return tables


def use_table(plan, c_out: int) -> bool:
    """Table path for narrow layers, and for dense-ish neighbourhoods (where it wastes no work)."""
    n = plan.source_grid.total_voxels * plan.num_offsets * c_out
    if n > MAX_TABLE_ELEMENTS:
        return False
    fill = plan.num_pairs / max(1, plan.target_grid.total_voxels * plan.num_offsets)
    return c_out <= MAX_TABLE_CHANNELS or fill >= MIN_FILL_WIDE


class TableConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, plan) -> torch.Tensor:
        k_all, c_in, c_out = weight.shape
        w_flat = weight.permute(1, 0, 2).reshape(c_in, k_all * c_out)
        n_in = x.shape[0]
        y = x.new_empty(n_in * k_all + 1, c_out)
        if needs_bucket(x):  # low precision on the CPU: a bucketed row count (see sparse/ops/matmul.py)
            y[:-1].view(n_in, k_all * c_out).copy_(mm_rows(x, w_flat))
        else:
            torch.mm(x, w_flat, out=y[:-1].view(n_in, k_all * c_out))
        y[-1].zero_()
        table, _ = neighbour_tables(plan)
        ctx.plan = plan
        ctx.save_for_backward(x, weight)
        n_out = table.numel() // k_all
        return y.index_select(0, table).view(n_out, k_all, c_out).sum(dim=1)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        k_all, c_in, c_out = weight.shape
        _, inverse = neighbour_tables(ctx.plan)
        n_in = x.shape[0]
        g = grad_out.to(x.dtype)
        g_ext = torch.cat([g, g.new_zeros(1, c_out)])
        # each (input, tap) row of Y fed exactly one output row (or none): gather, no scatter-add
        grad_y = g_ext.index_select(0, inverse)
        gy = grad_y.view(n_in, k_all * c_out)
        w_flat = weight.permute(1, 0, 2).reshape(c_in, k_all * c_out)
        grad_x = gy @ w_flat.t() if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = (x.t() @ gy).view(c_in, k_all, c_out).permute(1, 0, 2).contiguous()
        return grad_x, grad_w, None
