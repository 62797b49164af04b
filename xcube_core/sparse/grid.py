"""`GridBatch`: an immutable batch of sparse voxel grids (topology only), after fVDB's GridBatch.

The structure is one sorted int64 key per voxel (see `keys.py`) plus per-grid offsets, voxel sizes
and origins. Features live outside, in `JaggedTensor`s (or flat (N, C) tensors) aligned with the
grid's voxel order, which is the key order: sorted by grid, then i, then j, then k.
Methods coerce their inputs once and delegate to the functional layer in `ops/`.
"""

from __future__ import annotations

from typing import Sequence

import torch

from xcube_core.sparse import keys as K
from xcube_core.sparse.jagged import JaggedTensor
from xcube_core.sparse.ops import features as F
from xcube_core.sparse.ops import topology as T

Data = torch.Tensor | JaggedTensor


def _as_jagged(x, what: str, *, rows: int | None = None) -> JaggedTensor:
    if isinstance(x, JaggedTensor):
        return x
    if isinstance(x, torch.Tensor):
        return JaggedTensor(x)
    if isinstance(x, (list, tuple)) and not x:
        raise ValueError(f"{what} needs at least one grid; got an empty list")
    if isinstance(x, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in x):
        return JaggedTensor(list(x))
    raise TypeError(f"{what} must be a torch.Tensor, a list of tensors or a JaggedTensor, got {type(x).__name__}")


def _per_grid_vec3(value, num_grids: int, what: str, device, *, positive: bool) -> torch.Tensor:
    """Coerce a scalar, a 3-vector or a (B, 3) array into (B, 3) float32 on ``device``."""
    t = torch.as_tensor(value, dtype=torch.float32).to(device)
    if t.dim() == 0:
        t = t.expand(3)
    if t.dim() == 1:
        if t.numel() != 3:
            raise ValueError(f"{what} must be a scalar, 3 values or ({num_grids}, 3); got {tuple(t.shape)}")
        t = t.expand(num_grids, 3)
    if t.shape != (num_grids, 3):
        raise ValueError(f"{what} must be a scalar, 3 values or ({num_grids}, 3); got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} must be finite, got {t.tolist()}")
    if positive and bool((t <= 0).any()):
        raise ValueError(f"{what} must be > 0, got {t.tolist()}")
    return t.contiguous().clone()


def _factor3(factor, what: str) -> torch.Tensor:
    t = torch.as_tensor(factor, dtype=torch.int64).flatten()
    if t.numel() == 1:
        t = t.expand(3)
    if t.numel() != 3 or bool((t < 1).any()):
        raise ValueError(f"{what} must be a positive int or 3 positive ints, got {factor!r}")
    return t.clone()


class GridBatch:
    """A batch of B sparse grids. Build with the ``from_*`` classmethods; never mutated in place."""

    __slots__ = ("_keys", "_offsets", "_voxel_sizes", "_origins", "_jidx")

    def __init__(self, *args, **kwargs) -> None:
        raise TypeError("build a GridBatch with GridBatch.from_ijk / from_points / from_dense / ...")

    @classmethod
    def _make(cls, keys: torch.Tensor, voxel_sizes: torch.Tensor, origins: torch.Tensor) -> "GridBatch":
        g = object.__new__(cls)
        g._keys = keys
        g._offsets = T.offsets_from_keys(keys, voxel_sizes.shape[0])
        g._voxel_sizes = voxel_sizes
        g._origins = origins
        g._jidx = None
        return g

    def _derive(self, keys: torch.Tensor, voxel_sizes=None, origins=None) -> "GridBatch":
        return GridBatch._make(
            keys,
            self._voxel_sizes if voxel_sizes is None else voxel_sizes,
            self._origins if origins is None else origins,
        )

    # --- builders -----------------------------------------------------------------------------
    @classmethod
    def from_ijk(cls, ijk, voxel_sizes=1.0, origins=None) -> "GridBatch":
        """Grids whose active voxels are the given integer coordinates (duplicates merged).

        Args:
            ijk: (N, 3) int tensor (one grid), a list of them, or a JaggedTensor.
            voxel_sizes: voxel edge in world units: scalar, 3 values or (B, 3). Must be > 0.
            origins: world position of voxel (0,0,0)'s centre; default half the voxel size.
        """
        jt = _as_jagged(ijk, "ijk")
        K.check_ijk(jt.jdata)
        if jt.num_tensors > K.MAX_GRIDS:
            raise ValueError(f"at most {K.MAX_GRIDS} grids per batch, got {jt.num_tensors}")
        vs = _per_grid_vec3(voxel_sizes, jt.num_tensors, "voxel_sizes", jt.device, positive=True)
        org = vs * 0.5 if origins is None else _per_grid_vec3(origins, jt.num_tensors, "origins", jt.device,
                                                                positive=False)
        return cls._make(T.keys_from_ijk(jt.jdata, jt.jidx), vs, org)

    @classmethod
    def from_points(cls, points, voxel_sizes=1.0, origins=None) -> "GridBatch":
        """Grids of the voxels that contain at least one point. points: (N, 3) float per grid."""
        jt = _as_jagged(points, "points")
        vs, org = cls._world_frame(jt, voxel_sizes, origins)
        ijk = torch.round((jt.jdata.float() - org[jt.jidx.long()]) / vs[jt.jidx.long()]).to(torch.int64)
        return cls.from_ijk(jt.jagged_like(ijk), vs, org)

    @classmethod
    def from_nearest_voxels_to_points(cls, points, voxel_sizes=1.0, origins=None) -> "GridBatch":
        """Grids of the 8 voxels nearest to every point (what trilinear sampling at the points reads)."""
        jt = _as_jagged(points, "points")
        vs, org = cls._world_frame(jt, voxel_sizes, origins)
        base = torch.floor((jt.jdata.float() - org[jt.jidx.long()]) / vs[jt.jidx.long()]).to(torch.int64)
        corners = T.cube_offsets(0, 1, base.device)
        ijk = (base[:, None, :] + corners[None]).reshape(-1, 3)
        b = jt.jidx.long().repeat_interleave(8)
        K.check_ijk(ijk)
        return cls._make(T.keys_from_ijk(ijk, b), vs, org)

    @classmethod
    def from_dense(cls, num_grids: int, dense_dims: Sequence[int], ijk_min=(0, 0, 0), voxel_sizes=1.0,
                   origins=None, mask: torch.Tensor | None = None, device="cpu") -> "GridBatch":
        """``num_grids`` grids, each with every voxel of a dense box ``ijk_min + [0, dense_dims)``.

        ``mask`` (X, Y, Z) bool keeps only some voxels of the box.
        """
        dims = [int(d) for d in dense_dims]
        if len(dims) != 3 or min(dims) < 1 or num_grids < 1:
            raise ValueError(f"from_dense needs num_grids >= 1 and 3 dims >= 1, got {num_grids}, {dense_dims}")
        ax = [torch.arange(d, device=device) for d in dims]
        ijk = torch.stack(torch.meshgrid(*ax, indexing="ij"), dim=-1).reshape(-1, 3)
        if mask is not None:
            if tuple(mask.shape) != tuple(dims):
                raise ValueError(f"mask must have shape {tuple(dims)}, got {tuple(mask.shape)}")
            ijk = ijk[mask.to(device).reshape(-1).bool()]
        ijk = ijk + torch.as_tensor(ijk_min, dtype=torch.int64, device=device)
        return cls.from_ijk([ijk] * num_grids, voxel_sizes, origins)

    @classmethod
    def from_mesh(cls, vertices, faces, voxel_sizes=1.0, origins=None) -> "GridBatch":
        """Grids of the voxels whose closed cube a triangle mesh's surface touches (exact
        triangle/box overlap, so voxels clipped only at an edge or corner are included).

        vertices: (V, 3) float per grid; faces: (F, 3) int per grid. See `ops.mesh`.
        """
        from xcube_core.sparse.ops.mesh import world_mesh_voxels

        vj, fj = _as_jagged(vertices, "vertices"), _as_jagged(faces, "faces")
        if vj.num_tensors != fj.num_tensors:
            raise ValueError(f"vertices and faces name {vj.num_tensors} vs {fj.num_tensors} meshes")
        vs, org = cls._world_frame(vj, voxel_sizes, origins)
        ijk = [world_mesh_voxels(vj[b], fj[b].long(), vs[b], org[b]) for b in range(vj.num_tensors)]
        return cls.from_ijk(ijk, vs, org)

    @staticmethod
    def _world_frame(jt: JaggedTensor, voxel_sizes, origins):
        if jt.jdata.dim() != 2 or jt.jdata.shape[1] != 3 or not jt.jdata.dtype.is_floating_point:
            raise ValueError(f"points must be float (N, 3) per grid, got {jt.dtype} {jt.eshape}")
        if not bool(torch.isfinite(jt.jdata).all()):
            raise ValueError("points contain NaN or infinite values")
        vs = _per_grid_vec3(voxel_sizes, jt.num_tensors, "voxel_sizes", jt.device, positive=True)
        org = vs * 0.5 if origins is None else _per_grid_vec3(origins, jt.num_tensors, "origins", jt.device,
                                                                positive=False)
        return vs, org

    @staticmethod
    def cat(grids: Sequence["GridBatch"]) -> "GridBatch":
        """One batch holding the grids of all ``grids`` in order."""
        grids = list(grids)
        if not grids:
            raise ValueError("GridBatch.cat needs at least one GridBatch")
        keys, start = [], 0
        for g in grids:
            keys.append(g._keys + (start << (3 * K.AXIS_BITS)))
            start += g.grid_count
        if start > K.MAX_GRIDS:
            raise ValueError(f"at most {K.MAX_GRIDS} grids per batch, got {start}")
        return GridBatch._make(torch.cat(keys), torch.cat([g._voxel_sizes for g in grids]),
                               torch.cat([g._origins for g in grids]))

    # --- properties ---------------------------------------------------------------------------
    @property
    def grid_count(self) -> int:
        return self._voxel_sizes.shape[0]

    def __len__(self) -> int:
        return self.grid_count

    @property
    def total_voxels(self) -> int:
        return self._keys.numel()

    @property
    def num_voxels(self) -> torch.Tensor:
        """Voxels per grid. Shape: (B,), int64."""
        return self._offsets[1:] - self._offsets[:-1]

    @property
    def joffsets(self) -> torch.Tensor:
        return self._offsets

    @property
    def jidx(self) -> torch.Tensor:
        """Grid index of every voxel. Shape: (N,), int32."""
        if self._jidx is None:
            self._jidx = K.unpack_batch(self._keys).to(torch.int32)
        return self._jidx

    @property
    def ijk(self) -> JaggedTensor:
        """Voxel coordinates in grid order. Shape: (N, 3) int32 per grid."""
        return JaggedTensor.from_data_and_offsets(K.unpack(self._keys), self._offsets)

    @property
    def keys(self) -> torch.Tensor:
        """The structure itself: sorted int64 key per voxel (see keys.py)."""
        return self._keys

    @property
    def voxel_sizes(self) -> torch.Tensor:
        return self._voxel_sizes

    @property
    def origins(self) -> torch.Tensor:
        return self._origins

    @property
    def device(self) -> torch.device:
        return self._keys.device

    @property
    def nbytes(self) -> int:
        """Bytes of the grid structure (keys + offsets + per-grid transforms)."""
        return sum(t.numel() * t.element_size() for t in (self._keys, self._offsets, self._voxel_sizes,
                                                          self._origins))

    def bbox(self) -> torch.Tensor:
        """Inclusive ijk bounds per grid. Shape: (B, 2, 3), int32; empty grids give zeros."""
        ijk, b = K.unpack(self._keys).long(), self.jidx.long()
        lo = torch.zeros(self.grid_count, 3, dtype=torch.int64, device=self.device)
        hi = torch.zeros_like(lo)
        if ijk.numel():
            lo.fill_(K.COORD_LIMIT).scatter_reduce_(0, b[:, None].expand(-1, 3), ijk, "amin")
            hi.fill_(-K.COORD_LIMIT).scatter_reduce_(0, b[:, None].expand(-1, 3), ijk, "amax")
            empty = self.num_voxels == 0
            lo[empty] = 0
            hi[empty] = 0
        return torch.stack([lo, hi], dim=1).to(torch.int32)

    def __repr__(self) -> str:
        return (f"GridBatch(grid_count={self.grid_count}, num_voxels={self.num_voxels.tolist()}, "
                f"voxel_sizes={self._voxel_sizes[:, 0].tolist()}, device={self.device})")

    # --- batching and devices -----------------------------------------------------------------
    def grid_at(self, i: int) -> "GridBatch":
        return self[i]

    def __getitem__(self, index) -> "GridBatch":
        idx = torch.arange(self.grid_count)[index]
        idx = idx.reshape(-1).tolist()
        if not idx:
            raise ValueError(f"index {index!r} selects no grid")
        parts = []
        for new_b, b in enumerate(idx):
            lo, hi = int(self._offsets[b]), int(self._offsets[b + 1])
            parts.append((self._keys[lo:hi] & ((1 << (3 * K.AXIS_BITS)) - 1)) | (new_b << (3 * K.AXIS_BITS)))
        sel = torch.tensor(idx, device=self.device)
        return GridBatch._make(torch.cat(parts), self._voxel_sizes[sel], self._origins[sel])

    def to(self, device) -> "GridBatch":
        return GridBatch._make(self._keys.to(device), self._voxel_sizes.to(device), self._origins.to(device))

    def cpu(self) -> "GridBatch":
        return self.to("cpu")

    def jagged_like(self, data: torch.Tensor) -> JaggedTensor:
        """Wrap (N, *) voxel data in this grid's layout."""
        if data.shape[0] != self.total_voxels:
            raise ValueError(f"data has {data.shape[0]} rows, grid has {self.total_voxels} voxels")
        return JaggedTensor.from_data_and_offsets(data, self._offsets.to(data.device))

    def is_same(self, other: "GridBatch") -> bool:
        """True if both hold the same voxels in the same grids (transforms not compared)."""
        return self._keys.shape == other._keys.shape and bool(torch.equal(self._keys, other._keys))

    # --- indexing and transforms --------------------------------------------------------------
    def _query_keys(self, ijk) -> tuple[torch.Tensor, JaggedTensor]:
        jt = _as_jagged(ijk, "ijk")
        if jt.num_tensors != self.grid_count:
            raise ValueError(f"ijk has {jt.num_tensors} items but the batch has {self.grid_count} grids")
        K.check_ijk(jt.jdata)
        return K.pack(jt.jdata, jt.jidx.to(self.device)), jt

    def ijk_to_index(self, ijk, cumulative: bool = False):
        """Index of each coordinate in its grid's voxel order, -1 where not active.

        Args:
            ijk: (N, 3) int per grid (JaggedTensor, list or a tensor for a single grid).
            cumulative: index into the whole batch's voxels instead of the grid's own.
        Returns: same container as ``ijk``, int64.
        """
        q, jt = self._query_keys(ijk)
        idx = K.lookup(self._keys, q)
        if not cumulative:
            idx = torch.where(idx >= 0, idx - self._offsets[jt.jidx.long()], idx)
        return idx if isinstance(ijk, torch.Tensor) else jt.jagged_like(idx)

    def occupancy_normals(self) -> JaggedTensor:
        """Outward unit normals estimated from occupancy (26-neighbourhood; see `ops.normals`).

        Returns: (N, 3) float32 per grid, in grid order; (0, 0, 1) where the neighbourhood is symmetric.
        """
        from xcube_core.sparse.ops.normals import occupancy_normals

        return self.jagged_like(occupancy_normals(self._keys))

    def coords_in_grid(self, ijk):
        idx = self.ijk_to_index(ijk, cumulative=True)
        return (idx >= 0) if isinstance(idx, torch.Tensor) else idx.jagged_like(idx.jdata >= 0)

    def voxel_to_world(self, ijk):
        """World positions of (fractional) voxel coordinates: ijk * voxel_size + origin."""
        jt = _as_jagged(ijk, "ijk")
        b = jt.jidx.long()
        out = jt.jdata.float() * self._voxel_sizes[b] + self._origins[b]
        return out if isinstance(ijk, torch.Tensor) else jt.jagged_like(out)

    def world_to_voxel(self, points):
        """Fractional voxel coordinates of world points: (p - origin) / voxel_size."""
        jt = _as_jagged(points, "points")
        b = jt.jidx.long()
        out = (jt.jdata.float() - self._origins[b]) / self._voxel_sizes[b]
        return out if isinstance(points, torch.Tensor) else jt.jagged_like(out)

    # --- topology ---------------------------------------------------------------------------
    def coarsened_grid(self, coarsening_factor=2) -> "GridBatch":
        """Parents of the active voxels (ijk // f): voxel size × f, centres stay aligned."""
        f = _factor3(coarsening_factor, "coarsening_factor").to(self.device)
        vs = self._voxel_sizes * f.float()
        org = self._origins + (f.float() - 1.0) * 0.5 * self._voxel_sizes
        return self._derive(T.coarsened_keys(self._keys, f), vs, org)

    def refined_grid(self, subdiv_factor=2, mask: Data | None = None) -> "GridBatch":
        """Children of the (masked) active voxels: voxel size / f, nested inside their parents."""
        f = _factor3(subdiv_factor, "subdiv_factor").to(self.device)
        keys = self._keys if mask is None else self._keys[self._mask(mask)]
        if keys.numel():
            K.check_ijk(K.unpack(keys[[0, -1]]).long() * f)
        vs = self._voxel_sizes / f.float()
        org = self._origins - (f.float() - 1.0) * 0.5 * vs
        return self._derive(T.refined_keys(keys, f), vs, org)

    def dilated_grid(self, dilation: int = 1) -> "GridBatch":
        """Active voxels plus every voxel within ``dilation`` (Chebyshev distance) of one."""
        if not isinstance(dilation, int) or not 0 <= dilation <= K.COORD_MARGIN // 2:
            raise ValueError(f"dilation must be an int in [0, {K.COORD_MARGIN // 2}], got {dilation!r}")
        return self._derive(T.dilated_keys(self._keys, dilation) if dilation else self._keys)

    def pruned_grid(self, mask: Data) -> "GridBatch":
        """The voxels where ``mask`` (N,) bool is true."""
        return self._derive(self._keys[self._mask(mask)])

    def merged_grid(self, other: "GridBatch") -> "GridBatch":
        """Union of two batches' voxels, grid by grid (same grid count and voxel sizes)."""
        if other.grid_count != self.grid_count:
            raise ValueError(f"merged_grid: {self.grid_count} vs {other.grid_count} grids")
        if not torch.allclose(other._voxel_sizes.to(self.device), self._voxel_sizes):
            raise ValueError("merged_grid: voxel sizes differ; coarsen or refine one grid first")
        return self._derive(T.merged_keys(self._keys, other._keys.to(self.device)))

    def conv_grid(self, kernel_size: int = 3, stride: int = 1) -> "GridBatch":
        """Output topology of a (non-submanifold) convolution.

        Output voxel o is active when an input voxel lies at o * stride + d for a kernel offset d in
        [lo, lo + kernel_size) with lo = -((kernel_size - 1) // 2) (the offsets `ConvolutionPlan` uses).
        """
        if not (isinstance(kernel_size, int) and isinstance(stride, int) and kernel_size >= 1 and stride >= 1):
            raise ValueError(f"kernel_size and stride must be ints >= 1, got {kernel_size!r}, {stride!r}")
        lo = -((kernel_size - 1) // 2)
        return self._derive(T.conv_output_keys(self._keys, kernel_size, stride, lo),
                            self._voxel_sizes * stride,
                            self._origins + (stride - 1) * 0.5 * self._voxel_sizes)

    def _mask(self, mask: Data) -> torch.Tensor:
        m = mask.jdata if isinstance(mask, JaggedTensor) else mask
        if not isinstance(m, torch.Tensor):
            raise TypeError(f"mask must be a bool tensor or JaggedTensor, got {type(mask).__name__}")
        m = m.reshape(-1)
        if m.numel() != self.total_voxels:
            raise ValueError(f"mask has {m.numel()} values, grid has {self.total_voxels} voxels")
        if m.dtype != torch.bool:
            raise ValueError(f"mask must be bool, got {m.dtype}")
        return m.to(self.device)

    # --- features -----------------------------------------------------------------------------
    def max_pool(self, pool_factor, data: Data, coarse_grid: "GridBatch | None" = None):
        """Max over each parent's children. Returns (coarse data, coarse grid); empty parents get 0."""
        return self._pool(pool_factor, data, coarse_grid, "amax")

    def avg_pool(self, pool_factor, data: Data, coarse_grid: "GridBatch | None" = None):
        """Mean over each parent's active children. Returns (coarse data, coarse grid)."""
        return self._pool(pool_factor, data, coarse_grid, "mean")

    def _pool(self, pool_factor, data, coarse_grid, reduce):
        f = _factor3(pool_factor, "pool_factor").to(self.device)
        coarse = self.coarsened_grid(f) if coarse_grid is None else coarse_grid
        x = self._data(data)
        parent = torch.div(K.unpack(self._keys).long(), f, rounding_mode="floor")
        pidx = K.lookup(coarse._keys, K.pack(parent, K.unpack_batch(self._keys)))
        out = F.scatter_reduce_rows(x, pidx, coarse.total_voxels, reduce)
        return self._wrap_like(data, out, coarse), coarse

    def refine(self, subdiv_factor, data: Data, mask: Data | None = None, fine_grid: "GridBatch | None" = None):
        """Nearest upsampling: each child takes its parent's value. Returns (fine data, fine grid)."""
        f = _factor3(subdiv_factor, "subdiv_factor").to(self.device)
        fine = self.refined_grid(f, mask) if fine_grid is None else fine_grid
        x = self._data(data)
        parent = torch.div(K.unpack(fine._keys).long(), f, rounding_mode="floor")
        pidx = K.lookup(self._keys, K.pack(parent, K.unpack_batch(fine._keys)))
        return self._wrap_like(data, F.gather_rows(x, pidx), fine), fine

    def inject_from(self, src_grid: "GridBatch", src: Data, default_value: float = 0.0):
        """Values of ``src`` (on ``src_grid``) at this grid's voxels; ``default_value`` where absent."""
        if src_grid.grid_count != self.grid_count:
            raise ValueError(f"inject_from: {src_grid.grid_count} vs {self.grid_count} grids")
        x = src_grid._data(src)
        idx = K.lookup(src_grid._keys, self._keys.to(src_grid.device))
        return self._wrap_like(src, F.gather_rows(x, idx, default_value), self)

    def sample_trilinear(self, points, voxel_data: Data):
        """Trilinear interpolation of voxel data at world points; missing corners count as 0."""
        from xcube_core.sparse.ops.sampling import sample_trilinear

        pts = _as_jagged(points, "points")
        out = sample_trilinear(self, pts, self._data(voxel_data))
        return out if isinstance(points, torch.Tensor) else pts.jagged_like(out)

    def splat_trilinear(self, points, points_data: Data):
        """Scatter point values onto the voxels around each point with trilinear weights (summed)."""
        from xcube_core.sparse.ops.sampling import splat_trilinear

        pts = _as_jagged(points, "points")
        vals = points_data.jdata if isinstance(points_data, JaggedTensor) else points_data
        out = splat_trilinear(self, pts, vals)
        return out if isinstance(points_data, torch.Tensor) else self.jagged_like(out)

    def _data(self, data: Data) -> torch.Tensor:
        x = data.jdata if isinstance(data, JaggedTensor) else data
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"voxel data must be a tensor or JaggedTensor, got {type(data).__name__}")
        if x.shape[0] != self.total_voxels:
            raise ValueError(f"voxel data has {x.shape[0]} rows, grid has {self.total_voxels} voxels")
        return x

    @staticmethod
    def _wrap_like(like: Data, out: torch.Tensor, grid: "GridBatch") -> Data:
        return grid.jagged_like(out) if isinstance(like, JaggedTensor) else out
