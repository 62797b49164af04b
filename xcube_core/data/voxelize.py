"""Meshes -> aligned sparse voxel hierarchies (exact triangle/voxel overlap, vectorised in torch).

A finest voxel is active iff a triangle intersects its closed cube (the separating-axis test of
Akenine-Möller: 3 box axes, the triangle normal, 9 edge cross products), so the surface is covered
without holes. Large triangles are first split 1 -> 4 until their edges are at most a few voxels,
which keeps the candidate voxels (each triangle's bounding box) few. A voxel's normal is the
area-weighted mean of the unit normals of the (sub-)triangles that touch it, its class the
area-weighted majority of their part classes.
"""

from __future__ import annotations

import logging
import pathlib
import time

import numpy as np
import torch

from xcube_core.data import normalize
from xcube_core.data.assets import MeshData, load_mesh
from xcube_core.data.hierarchy import (UNKNOWN_CLASS, VoxelSample, build_hierarchy, ijk_to_key, key_to_ijk)
from xcube_core.errors import DataError
from xcube_core.level import Level

logger = logging.getLogger(__name__)

MAX_EDGE = 3.0  # voxels; longer triangles are split before the overlap test
_CHUNK_CANDIDATES = 1 << 21  # candidate voxels tested per chunk
_CHUNK_PIECES = 1 << 21  # split triangles held at once


def split_large_triangles(tris: torch.Tensor, cls: torch.Tensor, max_edge: float = MAX_EDGE):
    """Split triangles 1 -> 4 at edge midpoints until no edge is longer than ``max_edge``.

    Args:
        tris: Shape: (T, 3, 3), float64 (triangle, vertex, xyz) in voxel units.
        cls: Shape: (T,), int64.

    Returns:
        ``(tris, cls)`` covering exactly the same surface.
    """
    done_t, done_c = [], []
    while tris.shape[0]:
        edge = (tris - tris.roll(1, dims=1)).norm(dim=2).amax(dim=1)
        big = edge > max_edge
        done_t.append(tris[~big])
        done_c.append(cls[~big])
        if not bool(big.any()):
            break
        t = tris[big]
        v0, v1, v2 = t[:, 0], t[:, 1], t[:, 2]
        m01, m12, m20 = (v0 + v1) / 2, (v1 + v2) / 2, (v2 + v0) / 2
        tris = torch.cat([torch.stack(s, 1) for s in ((v0, m01, m20), (m01, v1, m12), (m20, m12, v2),
                                                       (m01, m12, m20))])
        cls = cls[big].repeat(4)
    return torch.cat(done_t), torch.cat(done_c)


def _box_dims(tris: torch.Tensor, shape: torch.Tensor):
    """Voxel bounding box of each triangle clipped to the grid: (lo, dims), each (T, 3) int64."""
    lo = torch.minimum(tris.amin(dim=1).floor().long().clamp(min=0), shape - 1)
    hi = torch.minimum(tris.amax(dim=1).floor().long().clamp(min=0), shape - 1)
    return lo, hi - lo + 1


class _TriangleTables:
    """Per-triangle separating-axis data (float32), relative to the centre of each triangle's first
    bounding-box voxel ``b = lo + 1/2``, so testing the voxel at ``lo + o`` needs only ``o``.

    For an axis ``a`` the triangle projects onto ``[pmin, pmax]`` and a cube of centre ``c`` onto
    ``a.c +- r``; they overlap iff ``pmin - r <= a.c <= pmax + r``. For the axes ``e x X, e x Y,
    e x Z`` of an edge ``e``, the three ``a.c`` are the components of ``c x e``; with ``c = b + o`` the
    test becomes ``lower - b x e <= o x e <= upper - b x e``. The plane axis is the triangle normal.
    """

    def __init__(self, tris: torch.Tensor, lo: torch.Tensor) -> None:
        base = lo.to(torch.float64) + 0.5
        v = (tris - base[:, None, :]).to(torch.float32)               # (T, 3, 3), relative to b
        self.edges = v.roll(-1, dims=1) - v                          # (T, 3 edges, 3)
        # projections of the 3 vertices on the 9 edge axes: (v_k x e_j) -> (T, 3 edges, 3 comps, 3 verts)
        proj = torch.stack([torch.cross(v[:, k:k + 1].expand_as(self.edges), self.edges, dim=2)
                            for k in range(3)], dim=3)
        e = self.edges.abs()
        radius = 0.5 * torch.stack([e[..., 1] + e[..., 2], e[..., 0] + e[..., 2], e[..., 0] + e[..., 1]], dim=2)
        self.lower = proj.amin(dim=3) - radius                       # (T, 3, 3)
        self.upper = proj.amax(dim=3) + radius
        self.normal = torch.cross(self.edges[:, 0], self.edges[:, 1], dim=1)  # |n| = 2 area
        d = (self.normal * v[:, 0]).sum(1)
        rn = 0.5 * self.normal.abs().sum(1)
        self.plane_lower, self.plane_upper = d - rn, d + rn

    def overlap(self, off: tuple[int, int, int], idx: torch.Tensor | None) -> torch.Tensor:
        """Which triangles (all, or ``idx``) touch the voxel at ``lo + off``. Shape: (T,) or (K,) bool."""
        def pick(t):
            return t if idx is None else t[idx]

        o = torch.tensor(off, dtype=torch.float32)
        n = pick(self.normal)
        no = n[:, 0] * o[0] + n[:, 1] * o[1] + n[:, 2] * o[2]
        ok = (no >= pick(self.plane_lower)) & (no <= pick(self.plane_upper))
        e = pick(self.edges)
        w = torch.cross(o.expand_as(e), e, dim=2)                    # o x e: (T, 3, 3)
        inside = (w >= pick(self.lower)) & (w <= pick(self.upper))
        return ok & inside.flatten(1).all(dim=1)


def _reduce(keys, normal_sum, votes):
    """Merge rows with equal voxel keys: sums of area-weighted normals and of class votes."""
    uk, inv = torch.unique(keys, return_inverse=True)
    ns = torch.zeros(len(uk), 3, dtype=normal_sum.dtype).index_add_(0, inv, normal_sum)
    vt = None if votes is None else torch.zeros(len(uk), votes.shape[1], dtype=votes.dtype).index_add_(0, inv, votes)
    return uk, ns, vt


def voxelize_triangles(tris: np.ndarray | torch.Tensor, shape, face_class=None, progress=None):
    """Finest-level voxels of a triangle soup already in voxel coordinates.

    Args:
        tris: Shape: (F, 3, 3), float, voxel units (voxel (i, j, k) spans [i, i + 1) etc.).
        shape: grid size (3,); triangles outside [0, shape) are clipped away.
        face_class: Shape: (F,), int64 class per face (`UNKNOWN_CLASS` allowed) or None.
        progress: optional callable ``(done_fraction)`` for progress reports.

    Returns:
        ``(ijk, normals, semantics)``: Shapes (N, 3) int32 sorted, (N, 3) float32 unit (zero where
        opposite faces cancel), (N,) int64 or None.
    """
    tris = torch.as_tensor(np.asarray(tris), dtype=torch.float64)
    shape_t = torch.as_tensor(list(shape), dtype=torch.int64)
    has_cls = face_class is not None
    cls = torch.as_tensor(face_class if has_cls else np.zeros(len(tris)), dtype=torch.int64)
    area2 = torch.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0], dim=1).norm(dim=1)
    keep = (tris.amax(dim=1) >= 0).all(1) & (tris.amin(dim=1) < shape_t).all(1) & (area2 > 1e-12)
    tris, cls = tris[keep], cls[keep]  # NaN vertices fail the comparisons and are dropped too
    classes = torch.unique(cls) if has_cls else torch.zeros(1, dtype=torch.int64)
    # how many pieces each face becomes once split to MAX_EDGE: 4 ** ceil(log2(edge / MAX_EDGE))
    edge = (tris - tris.roll(1, dims=1)).norm(dim=2).amax(dim=1)
    pieces = 4.0 ** torch.log2(edge / MAX_EDGE).ceil().clamp(min=0)
    parts = []
    for a, b in _chunks(pieces, _CHUNK_PIECES):  # split and test a bounded number of pieces at a time
        sub, sub_cls = split_large_triangles(tris[a:b], cls[a:b])
        for c, d in _chunks(_box_dims(sub, shape_t)[1].prod(dim=1), _CHUNK_CANDIDATES):
            parts.append(_voxelize_chunk(sub[c:d], sub_cls[c:d], classes, shape_t, has_cls))
        if progress is not None:
            progress(b / max(1, len(tris)))
    if not parts:
        empty_sem = torch.zeros(0, dtype=torch.int64) if has_cls else None
        return torch.zeros(0, 3, dtype=torch.int32), torch.zeros(0, 3), empty_sem
    keys, ns, votes = _reduce(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
                              torch.cat([p[2] for p in parts]) if has_cls else None)
    normals = torch.nn.functional.normalize(ns, dim=1, eps=1e-20).to(torch.float32)
    return key_to_ijk(keys), normals, _winning_class(votes, classes) if has_cls else None


def _chunks(weights: torch.Tensor, budget: int) -> list[tuple[int, int]]:
    """Consecutive ranges [a, b) whose summed ``weights`` stay near ``budget`` (one row at least)."""
    if len(weights) == 0:
        return []
    cum = torch.cumsum(weights.to(torch.float64), 0)
    n = int(cum[-1].item() // budget) + 1
    cuts = torch.searchsorted(cum, torch.arange(1, n, dtype=torch.float64) * budget).tolist()
    bounds = sorted({0, *[min(c + 1, len(weights)) for c in cuts], len(weights)})
    return list(zip(bounds[:-1], bounds[1:]))


def _winning_class(votes: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Class with the largest touching area per voxel; unknown parts only win where nothing known
    touches the voxel. votes: (M, C) float64 area per class column; classes: (C,) sorted ids."""
    known = classes >= 0
    if not bool(known.any()):
        return torch.full((len(votes),), UNKNOWN_CLASS, dtype=torch.int64)
    v = votes.clone()
    v[:, ~known] = -1.0
    best = classes[v.argmax(dim=1)]
    best[votes[:, known].sum(1) <= 0] = UNKNOWN_CLASS
    return best


def _voxelize_chunk(tris, cls, classes, shape_t, has_cls):
    """Test every triangle against each voxel of its bounding box, one box offset at a time."""
    lo, dims = _box_dims(tris, shape_t)
    tables = _TriangleTables(tris, lo)
    keys, tri_hits = [], []
    dmax = dims.amax(dim=0).tolist()
    for off in ((a, b, c) for a in range(dmax[0]) for b in range(dmax[1]) for c in range(dmax[2])):
        active = (dims > torch.tensor(off)).all(dim=1)
        count = int(active.sum())
        if count == 0:
            continue
        if count > len(tris) // 2:  # most triangles take part: test all, no gathers
            tri = torch.nonzero(active & tables.overlap(off, None)).squeeze(1)
        else:
            idx = torch.nonzero(active).squeeze(1)
            tri = idx[tables.overlap(off, idx)]
        keys.append(ijk_to_key(lo[tri] + torch.tensor(off)))
        tri_hits.append(tri)
    keys, tri = torch.cat(keys), torch.cat(tri_hits)
    votes = None
    if has_cls:
        votes = torch.zeros(len(tri), len(classes), dtype=torch.float64)
        area2 = tables.normal.norm(dim=1).to(torch.float64)
        votes[torch.arange(len(tri)), torch.searchsorted(classes, cls[tri])] = area2[tri]
    return _reduce(keys, tables.normal[tri].to(torch.float64), votes)  # n = unit normal * 2 area


def voxelize_mesh(mesh: MeshData, num_levels: int = 3, mode: str = "unit_box", resolution: int = 512,
                  voxel_size: float = 0.1, progress=None) -> VoxelSample:
    """A mesh as an aligned hierarchy of ``num_levels`` sparse grids.

    Args:
        mesh: triangles with optional per-face classes (see `load_mesh`).
        num_levels: L; the finest level is ``resolution`` (unit box) or ``voxel_size`` (metric).
        mode: "unit_box" (objects: fit into [0, 1]^3) or "metric" (scenes: keep metres).
        resolution: unit-box grid size per axis at the finest level.
        voxel_size: metric finest voxel size in metres.
        progress: optional callable ``(done_fraction)``.
    """
    start = time.perf_counter()
    v = mesh.vertices
    finite = v[np.isfinite(v).all(axis=1)]
    if len(finite) == 0:
        raise DataError("mesh has no finite vertices")
    norm = normalize.fit(finite.min(0), finite.max(0), mode, num_levels, resolution, voxel_size)
    tris = norm.to_voxel(v)[mesh.faces]
    ijk, normals, sem = voxelize_triangles(tris, norm.shape, mesh.face_class, progress)
    if len(ijk) == 0:
        raise DataError("mesh has no triangle area inside the grid (degenerate or empty)")
    finest = Level(index=num_levels - 1, ijk=ijk, voxel_size=norm.voxel_size, normals=normals, semantics=sem)
    meta = {"kind": "mesh", "normalization": norm.as_metadata(), "grid_shape": list(norm.shape),
            "num_faces": int(len(mesh.faces)), "parts": mesh.part_names[:64], "up_axis_in_file": mesh.up_axis,
            "has_semantics": sem is not None}
    levels = build_hierarchy(finest, num_levels)
    meta["seconds"] = time.perf_counter() - start
    return VoxelSample(levels=levels, caption="", metadata=meta)


def voxelize_mesh_file(path, num_levels: int = 3, mode: str = "unit_box", resolution: int = 512,
                       voxel_size: float = 0.1, class_map=None, caption: str = "",
                       up_axis: str | None = None) -> VoxelSample:
    """Load and voxelise one mesh file. Raises `DataError` (naming the file) for broken/empty files.

    ``up_axis`` is the file's up axis ("z" or "y"; None: "y" for glTF, else "z").
    """
    mesh = load_mesh(path, class_map, up_axis)
    try:
        sample = voxelize_mesh(mesh, num_levels, mode, resolution, voxel_size)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc
    sample.caption = caption
    sample.metadata["source"] = pathlib.Path(path).name
    return sample
