"""`ConvolutionPlan`: the kernel map of one sparse convolution, built once and reused.

For a forward convolution, output voxel o (on ``target_grid``) reads input voxel o * stride + d (on
``source_grid``) for every kernel offset d in [lo, lo + k)^3, lo = -((k - 1) // 2): the same
cross-correlation as ``torch.nn.functional.conv3d`` with padding (k - 1) // 2. A transposed plan
scatters input voxel i into output i * stride + d, like ``conv_transpose3d``.

The map is stored as (input row, output row) pairs grouped by kernel offset. A submanifold plan
(same grid in and out, stride 1, odd k) looks up only half the offsets, since the pairs of -d are
those of +d swapped, and handles the centre offset as a plain matmul.
"""

from __future__ import annotations

import torch

from xcube_core.sparse import keys as K
from xcube_core.sparse.grid import GridBatch
from xcube_core.sparse.jagged import JaggedTensor
from xcube_core.sparse.ops.topology import cube_offsets


# Plans whose grids are full boxes run torch's dense conv3d (same result, faster); tests switch it off
# to check the sparse kernels on dense grids too.
DENSE_FAST_PATH = True


def _kernel3(kernel_size) -> tuple[int, int, int]:
    ks = (kernel_size,) * 3 if isinstance(kernel_size, int) else tuple(int(k) for k in kernel_size)
    if len(ks) != 3 or min(ks) < 1:
        raise ValueError(f"kernel_size must be an int >= 1 or 3 of them, got {kernel_size!r}")
    return ks


def kernel_offsets(kernel_size: tuple[int, int, int], device="cpu") -> torch.Tensor:
    """Offsets d of every kernel tap, x-major like a (kx, ky, kz) weight. Returns (K, 3) int64."""
    axes = [torch.arange(-((k - 1) // 2), k - ((k - 1) // 2), device=device) for k in kernel_size]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


class ConvolutionPlan:
    """Kernel map between two grids. Build with `from_grid_batch`; run with `execute`."""

    def __init__(self, source_grid: GridBatch, target_grid: GridBatch, kernel_size, stride: int,
                 transposed: bool, in_idx: torch.Tensor, out_idx: torch.Tensor, counts: list[int],
                 center: int | None) -> None:
        self.source_grid = source_grid
        self.target_grid = target_grid
        self.kernel_size = kernel_size
        self.stride = stride
        self.transposed = transposed
        self.in_idx = in_idx        # (P,) int64 rows of the input
        self.out_idx = out_idx      # (P,) int64 rows of the output
        self.counts = counts        # pairs per kernel offset (K,)
        self.center = center        # offset handled as identity (submanifold), else None
        self.dense_layout = None    # (source box, target box) when both grids are full boxes
        self.backend_plans: dict = {}  # the same map re-expressed for another backend (e.g. "fvdb"), built once
        self._starts = [0]
        for c in counts:
            self._starts.append(self._starts[-1] + c)
        self._bounds: dict[int, list[list[int]]] = {}
        from xcube_core.sparse.ops.conv import TILE_ROWS

        self.tile_bounds(TILE_ROWS)  # the execution schedule is part of the plan: build it now

    @classmethod
    def from_grid_batch(cls, kernel_size, stride: int, source_grid: GridBatch,
                        target_grid: GridBatch | None = None, transposed: bool = False) -> "ConvolutionPlan":
        """Build the kernel map.

        Args:
            kernel_size: int or 3 ints.
            stride: int >= 1. For a forward plan the target is coarser by ``stride``; transposed, finer.
            source_grid: grid of the input features.
            target_grid: grid of the outputs. Default: ``source_grid`` for stride 1 (submanifold),
                ``source_grid.conv_grid(k, stride)`` for a forward strided plan; a transposed strided
                plan needs it given (usually the fine grid the features came from).
            transposed: build the map of a transposed convolution.
        """
        ks = _kernel3(kernel_size)
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be an int >= 1, got {stride!r}")
        if not isinstance(source_grid, GridBatch):
            raise TypeError(f"source_grid must be a GridBatch, got {type(source_grid).__name__}")
        if target_grid is None:
            if stride == 1:
                target_grid = source_grid
            elif transposed:
                raise ValueError("a strided transposed plan needs target_grid (the finer grid to write)")
            else:
                target_grid = source_grid.conv_grid(ks[0], stride)
        if target_grid.grid_count != source_grid.grid_count:
            raise ValueError(f"source has {source_grid.grid_count} grids, target {target_grid.grid_count}")
        if target_grid.device != source_grid.device:
            raise ValueError(f"source on {source_grid.device}, target on {target_grid.device}")
        # Query grid Q is scanned, lookup grid L searched: L-voxel = Q-voxel * stride + d.
        q, l = (source_grid, target_grid) if transposed else (target_grid, source_grid)
        submanifold = (stride == 1 and all(k % 2 == 1 for k in ks) and q.is_same(l))
        offsets = kernel_offsets(ks, source_grid.device)
        q_rows, l_rows, counts, center = _build_pairs(q.keys, l.keys, offsets, stride, submanifold)
        in_idx, out_idx = (q_rows, l_rows) if transposed else (l_rows, q_rows)
        plan = cls(source_grid, target_grid, ks, stride, transposed, in_idx, out_idx, counts, center)
        from xcube_core.sparse.ops.conv_dense import dense_layout

        plan.dense_layout = dense_layout(plan) if DENSE_FAST_PATH else None  # full boxes: dense kernels
        return plan

    @property
    def num_offsets(self) -> int:
        return len(self.counts)

    @property
    def num_pairs(self) -> int:
        return self._starts[-1] + (self.target_grid.total_voxels if self.center is not None else 0)

    def pairs(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(input rows, output rows) of kernel offset k."""
        if k == self.center:
            ar = torch.arange(self.source_grid.total_voxels, device=self.in_idx.device)
            return ar, ar
        s, e = self._starts[k], self._starts[k + 1]
        return self.in_idx[s:e], self.out_idx[s:e]

    def tile_bounds(self, tile: int) -> list[list[int]]:
        """Pair ranges of every offset per tile of ``tile`` output rows.

        Pairs of one offset are sorted by output row, so tile t of offset k is
        ``in_idx[b[k][t]:b[k][t + 1]]`` with ``b = tile_bounds(tile)``. Returns K lists of n_tiles + 1 ints.
        """
        if tile not in self._bounds:
            n_out = self.target_grid.total_voxels
            edges = torch.arange(0, n_out + tile, tile, device=self.out_idx.device).clamp_(max=n_out)
            if edges.numel() < 2:
                edges = torch.zeros(2, dtype=torch.int64, device=self.out_idx.device)
            rows = []
            for k in range(self.num_offsets):
                s, e = self._starts[k], self._starts[k + 1]
                rows.append(torch.searchsorted(self.out_idx[s:e], edges) + s)
            self._bounds[tile] = torch.stack(rows).tolist() if rows else []
        return self._bounds[tile]

    def execute(self, data, weight: torch.Tensor, bias: torch.Tensor | None = None):
        """Run the convolution.

        Args:
            data: input features on ``source_grid``. Shape: (N_in, C_in), or a JaggedTensor.
            weight: Shape: (K, C_in, C_out) with K = kx * ky * kz in `kernel_offsets` order.
            bias: optional (C_out,).
        Returns: features on ``target_grid``, (N_out, C_out), same container as ``data``.
        """
        from xcube_core.sparse.ops.conv import sparse_conv, sparse_conv_table
        from xcube_core.sparse.ops.conv_table import use_table

        x = data.jdata if isinstance(data, JaggedTensor) else data
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            raise ValueError(f"data must be (N, C) features, got {getattr(x, 'shape', type(x))}")
        if x.shape[0] != self.source_grid.total_voxels:
            raise ValueError(f"data has {x.shape[0]} rows, source grid has {self.source_grid.total_voxels} voxels")
        if weight.dim() != 3 or weight.shape[0] != self.num_offsets or weight.shape[1] != x.shape[1]:
            raise ValueError(f"weight must be ({self.num_offsets}, {x.shape[1]}, C_out), got {tuple(weight.shape)}")
        if self.dense_layout is not None:
            from xcube_core.sparse.ops.conv_dense import dense_conv

            out = dense_conv(x, weight, self, self.dense_layout)
        elif use_table(self, weight.shape[2]):
            out = sparse_conv_table(x, weight, self)
        else:
            out = sparse_conv(x, weight, self)
        if bias is not None:
            out = out + bias.to(out.dtype)
        return self.target_grid.jagged_like(out) if isinstance(data, JaggedTensor) else out


def _build_pairs(q_keys, l_keys, offsets, stride, submanifold):
    """Pairs (q_row, l_row) with l = q * stride + d for every offset d, grouped by offset.

    Offsets come in columns of kz taps that differ only in dk (x-major order), whose keys are
    consecutive integers. One binary search per column finds the first tap; since keys are unique,
    the row of tap m + 1 is the row of tap m plus one if tap m was found, so the rest of the column
    costs a gather and a compare: a 3^3 submanifold map needs 4 searches instead of 13.
    """
    from xcube_core.sparse.ops.conv import TILE_ROWS, run_chunks

    n_off = offsets.shape[0]
    kz = int(offsets[:, 2].max() - offsets[:, 2].min()) + 1 if n_off else 1
    if stride == 1:
        base = q_keys
    else:
        base = K.pack(K.unpack(q_keys).to(torch.int64) * stride, K.unpack_batch(q_keys))
    deltas = [K.pack_offset(*d) for d in offsets.tolist()]
    empty = q_keys.new_zeros(0)
    q_rows: list = [empty] * n_off
    l_rows: list = [empty] * n_off
    center = n_off // 2 if submanifold else None
    todo = set(range(center) if submanifold else range(n_off))
    if l_keys.numel() and q_keys.numel():
        cols = [(col, [m for m in range(kz) if col + m in todo]) for col in range(0, n_off, kz)]
        cols = [(col, wanted) for col, wanted in cols if wanted]

        def work(c0: int, c1: int) -> dict:
            found = {}
            for col, wanted in cols[c0:c1]:
                q0 = base + deltas[col]
                pos = torch.searchsorted(l_keys, q0)
                for m in range(max(wanted) + 1):
                    pc = pos.clamp(max=l_keys.numel() - 1)
                    hit = l_keys.index_select(0, pc) == (q0 + m if m else q0)
                    if m in wanted:
                        rows = hit.nonzero().squeeze(1)
                        found[col + m] = (rows, pc.index_select(0, rows))
                    if m < max(wanted):
                        pos += hit
            return found

        # Columns are independent: with several torch threads they run on pinned one-thread workers,
        # like the conv tiles (OpenMP regions of ~100 small ops stall on shared cores).
        big = q_keys.device.type == "cpu" and q_keys.numel() >= TILE_ROWS * 8  # else threads cost more
        workers = torch.get_num_threads() if big else 1
        for part in run_chunks(work, len(cols), workers):
            for k, (qr, lr) in part.items():
                q_rows[k], l_rows[k] = qr, lr
    if submanifold:
        # Offset d and its mirror -d (index n_off - 1 - k) share pairs with roles swapped.
        for k in range(center):
            q_rows[n_off - 1 - k], l_rows[n_off - 1 - k] = l_rows[k], q_rows[k]
    counts = [int(r.numel()) for r in q_rows]
    return torch.cat(q_rows), torch.cat(l_rows), counts, center
