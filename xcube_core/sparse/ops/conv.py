"""Gather-GEMM-scatter sparse convolution, tiled, with a memory-lean backward.

Forward, per kernel offset k: ``out[out_k] += x[in_k] @ W[k]``; the submanifold centre offset is one
dense matmul that also initialises the output. The pairs of every offset are sorted by output row
and by input row (keys + delta is monotonic), so on CPU the work is cut into tiles of ``TILE_ROWS``
rows: inside a tile every offset gathers, multiplies and scatter-adds a block that stays in cache,
instead of streaming one (pairs_k, C) block per offset through main memory three times (3x faster
with one thread on 400k voxels, 64->64; see docs/benchmarks.md, "Sparse engine").

Tiles own disjoint rows (output rows forward, input rows for the input gradient), so with several
torch threads they are spread over worker threads that each run torch with ONE OpenMP/MKL thread:
many small ops inside OpenMP parallel regions stall on barriers when cores are shared. CUDA runs
whole offsets (one tile): tiling would only multiply kernel launches.

Backward recomputes the gathers instead of keeping every gathered block alive, so training memory is
O(N * C), not O(pairs * C). Under CPU/CUDA autocast (bfloat16/float16) the matmuls run in the autocast
dtype, as ``torch.matmul`` would, and the result has that dtype; each output tile sums its offsets in
float32 and weight gradients are accumulated in float32.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

from xcube_core.compat.thread_pinning import one_thread_hooks, pin_one_thread
from xcube_core.sparse.ops.matmul import mm_rows

# Rows per tile on CPU: (TILE_ROWS, C) blocks of a few hundred KB sit in L2/L3 for C <= 128.
TILE_ROWS = 8192


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    dev = x.device.type
    if dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev) and x.dtype in (torch.float32, torch.bfloat16,
                                                                                  torch.float16):
        return torch.get_autocast_dtype(dev)
    return x.dtype


def _schedule(x: torch.Tensor, plan) -> tuple[int, int]:
    """(rows per tile, worker threads) for features ``x``."""
    if x.device.type != "cpu":
        return max(plan.target_grid.total_voxels, plan.source_grid.total_voxels, 1), 1
    workers = torch.get_num_threads() if one_thread_hooks() is not None and not torch.is_grad_enabled() else 1
    return TILE_ROWS, max(1, workers)


# --- worker threads with one OpenMP / MKL thread each (see xcube_core.compat.thread_pinning) ----
def run_chunks(fn, n_items: int, workers: int) -> list:
    """[fn(i0, i1) for contiguous item ranges]; with several workers, on threads pinned to one
    OpenMP/MKL thread each (sequential where the per-thread hooks are missing)."""
    workers = min(workers, n_items)
    if workers <= 1 or one_thread_hooks() is None:
        return [fn(0, n_items)]
    ranges = [(n_items * w // workers, n_items * (w + 1) // workers) for w in range(workers)]

    def call(r):
        with torch.no_grad():  # grad mode is thread-local: workers must not record graphs
            return fn(*r)

    with ThreadPoolExecutor(workers, initializer=pin_one_thread) as pool:
        return list(pool.map(call, ranges))



def _bounds(plan, tile: int, by: str) -> list[list[int]]:
    """Per-offset pair ranges of each tile of output (``by="out"``) or input (``"in"``) rows."""
    if by == "out":
        return plan.tile_bounds(tile)
    key = ("in", tile)  # same sortedness on the input side (see test_backends.py)
    if key not in plan._bounds:
        n = plan.source_grid.total_voxels
        dev = plan.in_idx.device
        edges = torch.arange(0, n + tile, tile, device=dev).clamp_(max=n)
        edges = edges if edges.numel() >= 2 else torch.zeros(2, dtype=torch.int64, device=dev)
        rows = [torch.searchsorted(plan.in_idx[plan._starts[k]:plan._starts[k + 1]], edges) + plan._starts[k]
                for k in range(plan.num_offsets)]
        plan._bounds[key] = torch.stack(rows).tolist() if rows else []
    return plan._bounds[key]


def _segments(plan, bounds, t: int):
    """[(k, in_rows, out_rows)] of tile t, centre excluded."""
    segs = []
    for k in range(plan.num_offsets):
        s, e = bounds[k][t], bounds[k][t + 1]
        if e > s:
            segs.append((k, plan.in_idx[s:e], plan.out_idx[s:e]))
    return segs


# --- autograd ----------------------------------------------------------------------------------
class _SparseConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, plan) -> torch.Tensor:
        ctx.plan = plan
        ctx.save_for_backward(x, weight)
        return _forward(x, weight, plan, *_schedule(x, plan))

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad[:2]
        return (*_backward(x, weight, grad_out.contiguous(), ctx.plan, needs, *_schedule(x, ctx.plan)), None)


def _forward(x: torch.Tensor, weight: torch.Tensor, plan, tile: int = TILE_ROWS, workers: int = 1) -> torch.Tensor:
    """out (N_out, C_out) = sum_k scatter(out_k, gather(x, in_k) @ weight[k]), tiles over output rows."""
    x = x.contiguous()
    n_out = plan.target_grid.total_voxels
    out = x.new_empty(n_out, weight.shape[2])
    bounds = _bounds(plan, tile, "out")
    low = x.dtype in (torch.bfloat16, torch.float16)

    def work(t0: int, t1: int) -> None:
        acc = torch.empty(min(tile, n_out), out.shape[1], dtype=torch.float32, device=x.device) if low else None
        for t in range(t0, t1):
            a, b = t * tile, min(n_out, (t + 1) * tile)
            o = acc[: b - a] if low else out[a:b]
            if plan.center is not None:
                if low:
                    o.copy_(mm_rows(x[a:b], weight[plan.center]))
                else:
                    torch.mm(x[a:b], weight[plan.center], out=o)
            else:
                o.zero_()
            for k, in_k, out_k in _segments(plan, bounds, t):
                y = mm_rows(x, weight[k], in_k)
                if low:  # bf16/fp16 products, float32 sum: one rounding per output
                    o.index_add_(0, out_k - a, y.float())
                else:
                    out.index_add_(0, out_k, y)
            if low:
                out[a:b].copy_(o)

    run_chunks(work, (n_out + tile - 1) // tile, workers)
    return out


def _backward(x, weight, g, plan, needs, tile: int = TILE_ROWS, workers: int = 1):
    """Gradients of `_forward` w.r.t. x (N_in, C_in) and weight (K, C_in, C_out), tiles over input rows."""
    need_x, need_w = needs
    n_in = plan.source_grid.total_voxels
    grad_x = torch.zeros_like(x) if need_x else None
    acc = torch.float32 if weight.dtype in (torch.bfloat16, torch.float16) else weight.dtype
    w_t = weight.transpose(1, 2)  # (K, C_out, C_in)
    c = plan.center
    bounds = _bounds(plan, tile, "in")

    low = x.dtype in (torch.bfloat16, torch.float16)

    def work(t0: int, t1: int):
        gw = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        # Low precision: each tile's input gradient is summed in float32 with tile-local rows (a bf16
        # index_add_ also rewrites rows it does not index, which would race between workers).
        buf = torch.empty(min(tile, n_in), x.shape[1], dtype=torch.float32, device=x.device) if low else None
        for t in range(t0, t1):
            a, b = t * tile, min(n_in, (t + 1) * tile)
            gx = (buf[: b - a].zero_() if low else grad_x[a:b]) if need_x else None
            if c is not None:  # centre: row r of x feeds row r of out
                if need_x:
                    gx += (g[a:b] @ w_t[c]).to(gx.dtype)
                if need_w:
                    gw[c] += (x[a:b].t() @ g[a:b]).to(acc)
            for k, in_k, out_k in _segments(plan, bounds, t):
                gk = g.index_select(0, out_k)
                if need_x:  # this tile's input rows only: disjoint across workers
                    if low:
                        gx.index_add_(0, in_k - a, (gk @ w_t[k]).float())
                    else:
                        grad_x.index_add_(0, in_k, gk @ w_t[k])
                if need_w:
                    gw[k] += (x.index_select(0, in_k).t() @ gk).to(acc)
            if low and need_x:
                grad_x[a:b].copy_(gx)
        return gw

    partial = run_chunks(work, (n_in + tile - 1) // tile, workers)
    grad_w = None
    if need_w:
        grad_w = partial[0]
        for p in partial[1:]:
            grad_w += p
        grad_w = grad_w.to(weight.dtype)
    return grad_x, grad_w


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
