"""Gather-GEMM-scatter sparse convolution, tiled over output rows, with a memory-lean backward.

Forward, per kernel offset k: ``out[out_k] += x[in_k] @ W[k]``; the submanifold centre offset is one
dense matmul that also initialises the output. The pairs of every offset are sorted by output row
(and by input row: keys + delta is monotonic), so the work is cut into tiles of ``TILE_ROWS`` output
rows: inside a tile every offset gathers, multiplies and scatter-adds a block that stays in cache,
instead of streaming one (pairs_k, C) block per offset through main memory three times. Measured with
one thread (400k voxels, 64->64): 3x faster than whole offsets, 0.67x spconv's time (see
docs/benchmarks.md); multi-threaded CPU runs and CUDA use whole offsets (see `_tile_rows`).

Backward walks the same tiles and recomputes the gathers instead of keeping every gathered block
alive, so training memory is O(N * C), not O(pairs * C).

Under CPU/CUDA autocast (bfloat16/float16) the matmuls run in the autocast dtype, as
``torch.matmul`` would, and the result has that dtype. Weight gradients of low-precision runs are
accumulated over tiles in float32.
"""

from __future__ import annotations

import torch

# Output rows per tile on CPU: (TILE_ROWS, C) blocks of a few hundred KB sit in L2/L3 for C <= 128.
TILE_ROWS = 8192


def _tile_rows(x: torch.Tensor, plan) -> int:
    """Tile only single-threaded CPU runs; otherwise one tile (whole offsets).

    Tiling issues ~26 small ops per tile. With one thread that is cheap and wins 3x (cache-resident
    blocks). With several OpenMP threads every op is a parallel region, and on oversubscribed cores
    (measured on the shared 2-core box) the barriers made 8192-row tiles 3x slower than whole offsets;
    on GPUs tiles only multiply kernel launches. See docs/benchmarks.md, "Sparse engine".
    """
    if x.device.type == "cpu" and torch.get_num_threads() == 1:
        return TILE_ROWS
    return max(plan.target_grid.total_voxels, 1)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    dev = x.device.type
    if dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev) and x.dtype in (torch.float32, torch.bfloat16,
                                                                                  torch.float16):
        return torch.get_autocast_dtype(dev)
    return x.dtype


def _tiles(plan, tile: int):
    """Yield (row_start, row_end, [(k, in_rows, out_rows), ...]) per output tile, centre excluded."""
    bounds = plan.tile_bounds(tile)  # [K][n_tiles + 1] python ints into each offset's pair range
    n_out = plan.target_grid.total_voxels
    for t in range((n_out + tile - 1) // tile):
        segs = []
        for k in range(plan.num_offsets):
            s, e = bounds[k][t], bounds[k][t + 1]
            if e > s:
                segs.append((k, plan.in_idx[s:e], plan.out_idx[s:e]))
        yield t * tile, min(n_out, (t + 1) * tile), segs


class _SparseConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, plan) -> torch.Tensor:
        ctx.plan = plan
        ctx.save_for_backward(x, weight)
        return _forward(x, weight, plan, _tile_rows(x, plan))

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad[:2]
        return (*_backward(x, weight, grad_out.contiguous(), ctx.plan, needs, _tile_rows(x, ctx.plan)), None)


def _forward(x: torch.Tensor, weight: torch.Tensor, plan, tile: int = TILE_ROWS) -> torch.Tensor:
    """out (N_out, C_out) = sum_k scatter(out_k, gather(x, in_k) @ weight[k])."""
    x = x.contiguous()
    out = x.new_empty(plan.target_grid.total_voxels, weight.shape[2])
    if x.dtype in (torch.bfloat16, torch.float16):
        return _forward_low_precision(x, weight, plan, tile, out)
    for a, b, segs in _tiles(plan, tile):
        if plan.center is not None:
            torch.mm(x[a:b], weight[plan.center], out=out[a:b])
        else:
            out[a:b].zero_()
        for k, in_k, out_k in segs:
            out.index_add_(0, out_k, torch.mm(x.index_select(0, in_k), weight[k]))
    return out


def _forward_low_precision(x, weight, plan, tile, out):
    """bf16/fp16 matmuls, but each output tile sums its offsets in a float32 buffer (one rounding)."""
    acc = torch.empty(min(tile, out.shape[0]), out.shape[1], dtype=torch.float32, device=x.device)
    for a, b, segs in _tiles(plan, tile):
        o = acc[: b - a]
        if plan.center is not None:
            o.copy_(torch.mm(x[a:b], weight[plan.center]))
        else:
            o.zero_()
        for k, in_k, out_k in segs:
            o.index_add_(0, out_k - a, torch.mm(x.index_select(0, in_k), weight[k]).float())
        out[a:b].copy_(o)
    return out


def _backward(x, weight, g, plan, needs, tile: int = TILE_ROWS):
    """Gradients of `_forward` w.r.t. x (N_in, C_in) and weight (K, C_in, C_out), tile by tile."""
    need_x, need_w = needs
    grad_x = torch.zeros_like(x) if need_x else None
    acc = torch.float32 if weight.dtype in (torch.bfloat16, torch.float16) else weight.dtype
    grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
    w_t = weight.transpose(1, 2)  # (K, C_out, C_in)
    c = plan.center
    for a, b, segs in _tiles(plan, tile):
        if c is not None:
            if need_x:
                grad_x[a:b] += g[a:b] @ w_t[c]
            if need_w:
                grad_w[c] += (x[a:b].t() @ g[a:b]).to(acc)
        for k, in_k, out_k in segs:
            gk = g.index_select(0, out_k)
            if need_x:
                grad_x.index_add_(0, in_k, gk @ w_t[k])
            if need_w:
                grad_w[k] += (x.index_select(0, in_k).t() @ gk).to(acc)
    return grad_x, (grad_w.to(weight.dtype) if need_w else None)


def sparse_conv(x: torch.Tensor, weight: torch.Tensor, plan) -> torch.Tensor:
    """Sparse convolution of features ``x`` (N_in, C_in) with ``weight`` (K, C_in, C_out) along ``plan``."""
    dtype = _compute_dtype(x)
    with torch.autocast(x.device.type, enabled=False):
        return _SparseConvFn.apply(x.to(dtype), weight.to(dtype), plan)


def sparse_conv_table(x: torch.Tensor, weight: torch.Tensor, plan) -> torch.Tensor:
    """`sparse_conv` through one wide GEMM and a neighbour table (narrow layers; see conv_table.py)."""
    from xcube_core.sparse.ops.conv_table import TableConvFn

    dtype = _compute_dtype(x)
    with torch.autocast(x.device.type, enabled=False):
        return TableConvFn.apply(x.to(dtype).contiguous(), weight.to(dtype), plan)
