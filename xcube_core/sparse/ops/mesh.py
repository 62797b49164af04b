"""Exact surface voxelisation of triangles: the engine's one voxeliser (vectorised torch, any device).

A voxel is active iff a triangle intersects its closed cube (the separating-axis test of
Akenine-Möller: 3 box axes, the triangle normal, 9 edge cross products), so the surface is covered
without holes, including voxels a triangle only clips at an edge or a corner. Large triangles are
first split 1 -> 4 until their edges are at most ``MAX_EDGE`` voxels, which keeps the candidate
voxels (each piece's bounding box) few; candidates are tested in bounded chunks.

Coordinates here are *voxel units with corners on integers*: voxel ``(i, j, k)`` spans
``[i, i + 1) x [j, j + 1) x [k, k + 1)``. `GridBatch.from_mesh` maps world vertices into this frame
(the grid's origin is the centre of voxel 0); the data layer does the same for its normalised meshes.
"""

from __future__ import annotations

from typing import Callable, Iterator, NamedTuple

import torch

from xcube_core.sparse import keys as K

MAX_EDGE = 3.0  # voxels; longer triangles are split before the overlap test
CHUNK_CANDIDATES = 1 << 21  # candidate (piece, voxel) pairs tested per chunk
CHUNK_PIECES = 1 << 21  # split triangles held at once


class Overlaps(NamedTuple):
    """One chunk of (voxel, triangle piece) overlaps.

    Attributes:
        pieces: split triangles of this chunk. Shape: (P, 3, 3), float64, voxel units.
        source: the input triangle each piece came from. Shape: (P,), int64.
        keys: `xcube_core.sparse.keys` of the touched voxels (one row per overlap). Shape: (M,), int64.
        piece: the piece of each overlap. Shape: (M,), int64 (indexes ``pieces``).
    """

    pieces: torch.Tensor
    source: torch.Tensor
    keys: torch.Tensor
    piece: torch.Tensor


def split_large_triangles(tris: torch.Tensor, max_edge: float = MAX_EDGE) -> tuple[torch.Tensor, torch.Tensor]:
    """Split triangles 1 -> 4 at edge midpoints until no edge is longer than ``max_edge``.

    Args:
        tris: Shape: (T, 3, 3), float (triangle, vertex, xyz) in voxel units.

    Returns:
        ``(pieces, source)``: Shapes (P, 3, 3) covering exactly the same surface, and (P,) int64 the
        input triangle of each piece.
    """
    source = torch.arange(len(tris), device=tris.device)
    done_t, done_s = [], []
    while tris.shape[0]:
        edge = (tris - tris.roll(1, dims=1)).norm(dim=2).amax(dim=1)
        big = edge > max_edge
        done_t.append(tris[~big])
        done_s.append(source[~big])
        if not bool(big.any()):
            break
        t = tris[big]
        v0, v1, v2 = t[:, 0], t[:, 1], t[:, 2]
        m01, m12, m20 = (v0 + v1) / 2, (v1 + v2) / 2, (v2 + v0) / 2
        tris = torch.cat([torch.stack(s, 1) for s in ((v0, m01, m20), (m01, v1, m12), (m20, m12, v2),
                                                       (m01, m12, m20))])
        source = source[big].repeat(4)
    if not done_t:
        return tris, source
    return torch.cat(done_t), torch.cat(done_s)


def _box_dims(tris: torch.Tensor, shape: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
        v = (tris.to(torch.float64) - base[:, None, :]).to(torch.float32)  # (T, 3, 3), relative to b
        self.edges = v.roll(-1, dims=1) - v                                 # (T, 3 edges, 3)
        # projections of the 3 vertices on the 9 edge axes: (v_k x e_j) -> (T, 3 edges, 3 comps, 3 verts)
        proj = torch.stack([torch.cross(v[:, k:k + 1].expand_as(self.edges), self.edges, dim=2)
                            for k in range(3)], dim=3)
        e = self.edges.abs()
        radius = 0.5 * torch.stack([e[..., 1] + e[..., 2], e[..., 0] + e[..., 2], e[..., 0] + e[..., 1]], dim=2)
        self.lower = proj.amin(dim=3) - radius                              # (T, 3, 3)
        self.upper = proj.amax(dim=3) + radius
        self.normal = torch.cross(self.edges[:, 0], self.edges[:, 1], dim=1)  # |n| = 2 area
        d = (self.normal * v[:, 0]).sum(1)
        rn = 0.5 * self.normal.abs().sum(1)
        self.plane_lower, self.plane_upper = d - rn, d + rn

    def overlap(self, off: tuple[int, int, int], idx: torch.Tensor | None) -> torch.Tensor:
        """Which triangles (all, or ``idx``) touch the voxel at ``lo + off``. Shape: (T,) or (K,) bool."""
        def pick(t):
            return t if idx is None else t[idx]

        o = torch.tensor(off, dtype=torch.float32, device=self.normal.device)
        n = pick(self.normal)
        no = n[:, 0] * o[0] + n[:, 1] * o[1] + n[:, 2] * o[2]
        ok = (no >= pick(self.plane_lower)) & (no <= pick(self.plane_upper))
        e = pick(self.edges)
        w = torch.cross(o.expand_as(e), e, dim=2)                           # o x e: (T, 3, 3)
        inside = (w >= pick(self.lower)) & (w <= pick(self.upper))
        return ok & inside.flatten(1).all(dim=1)


def _chunks(weights: torch.Tensor, budget: int) -> list[tuple[int, int]]:
    """Consecutive ranges [a, b) whose summed ``weights`` stay near ``budget`` (one row at least)."""
    if len(weights) == 0:
        return []
    cum = torch.cumsum(weights.to(torch.float64).cpu(), 0)
    n = int(cum[-1].item() // budget) + 1
    cuts = torch.searchsorted(cum, torch.arange(1, n, dtype=torch.float64) * budget).tolist()
    bounds = sorted({0, *[min(c + 1, len(weights)) for c in cuts], len(weights)})
    return list(zip(bounds[:-1], bounds[1:]))


def _overlap_chunk(tris: torch.Tensor, shape: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Test every triangle against each voxel of its bounding box, one box offset at a time.

    Returns ``(keys (M,), tri (M,))``: one row per (voxel, triangle) overlap.
    """
    lo, dims = _box_dims(tris, shape)
    tables = _TriangleTables(tris, lo)
    keys, tri_hits = [], []
    dmax = dims.amax(dim=0).tolist()
    for off in ((a, b, c) for a in range(dmax[0]) for b in range(dmax[1]) for c in range(dmax[2])):
        o = torch.tensor(off, device=tris.device)
        active = (dims > o).all(dim=1)
        count = int(active.sum())
        if count == 0:
            continue
        if count > len(tris) // 2:  # most triangles take part: test all, no gathers
            tri = torch.nonzero(active & tables.overlap(off, None)).squeeze(1)
        else:
            idx = torch.nonzero(active).squeeze(1)
            tri = idx[tables.overlap(off, idx)]
        keys.append(K.pack(lo[tri] + o))
        tri_hits.append(tri)
    return torch.cat(keys), torch.cat(tri_hits)


def _check_triangles(tris: torch.Tensor, shape) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(tris, torch.Tensor):
        raise TypeError(f"triangles must be a torch.Tensor, got {type(tris).__name__}")
    if tris.dim() != 3 or tris.shape[1:] != (3, 3):
        raise ValueError(f"triangles must have shape (T, 3, 3), got {tuple(tris.shape)}")
    shape_t = torch.as_tensor(list(shape), dtype=torch.int64, device=tris.device)
    if shape_t.shape != (3,) or bool((shape_t < 1).any()):
        raise ValueError(f"shape must be 3 positive voxel counts, got {list(shape)}")
    if int(shape_t.max()) > K.COORD_LIMIT:
        raise ValueError(f"shape {list(shape)} exceeds the engine's coordinate limit {K.COORD_LIMIT}; "
                         "use a larger voxel size or split the mesh")
    return tris.to(torch.float64), shape_t


def triangle_overlaps(tris: torch.Tensor, shape, progress: Callable[[float], None] | None = None
                      ) -> Iterator[Overlaps]:
    """Every (voxel, triangle piece) overlap of a triangle soup in the grid ``[0, shape)``, by chunks.

    Args:
        tris: Shape: (T, 3, 3), float, voxel units (voxel ``(i, j, k)`` spans ``[i, i + 1)`` etc.).
            Triangles wholly outside the grid, degenerate ones and ones with NaN vertices are dropped.
        shape: grid size per axis (3 ints); the part of a triangle outside it is clipped away.
        progress: optional callable ``(done_fraction)``.

    Yields:
        `Overlaps` chunks; ``source`` indexes the rows of ``tris``. A voxel can appear in several
        chunks (reduce by key to merge).
    """
    tris, shape_t = _check_triangles(tris, shape)
    area2 = torch.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0], dim=1).norm(dim=1)
    keep = (tris.amax(dim=1) >= 0).all(1) & (tris.amin(dim=1) < shape_t).all(1) & (area2 > 1e-12)
    kept = torch.nonzero(keep).squeeze(1)  # NaN vertices fail the comparisons and are dropped too
    tris = tris[kept]
    # how many pieces each triangle becomes once split to MAX_EDGE: 4 ** ceil(log2(edge / MAX_EDGE))
    edge = (tris - tris.roll(1, dims=1)).norm(dim=2).amax(dim=1)
    pieces = 4.0 ** torch.log2(edge / MAX_EDGE).ceil().clamp(min=0)
    for a, b in _chunks(pieces, CHUNK_PIECES):  # split and test a bounded number of pieces at a time
        sub, src = split_large_triangles(tris[a:b])
        for c, d in _chunks(_box_dims(sub, shape_t)[1].prod(dim=1), CHUNK_CANDIDATES):
            keys, piece = _overlap_chunk(sub[c:d], shape_t)
            yield Overlaps(sub[c:d], kept[a + src[c:d]], keys, piece)
        if progress is not None:
            progress(b / max(1, len(tris)))


def surface_voxels(tris: torch.Tensor, shape) -> torch.Tensor:
    """The voxels of ``[0, shape)`` that the triangles' surface touches (see `triangle_overlaps`).

    Returns:
        Shape: (N, 3), int32, unique, sorted by (i, j, k).
    """
    found = [torch.unique(o.keys) for o in triangle_overlaps(tris, shape)]
    if not found:
        return torch.zeros(0, 3, dtype=torch.int32, device=tris.device)
    return K.unpack(torch.unique(torch.cat(found)))


def world_mesh_voxels(vertices: torch.Tensor, faces: torch.Tensor, voxel_size: torch.Tensor,
                      origin: torch.Tensor) -> torch.Tensor:
    """Voxels of a grid (voxel size, origin = centre of voxel 0) that a world-space mesh's surface touches.

    Args:
        vertices: Shape: (V, 3), float. faces: Shape: (F, 3), integer indices into ``vertices``.
        voxel_size, origin: Shape: (3,).

    Returns:
        Shape: (N, 3), int32, unique and sorted.
    """
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {tuple(faces.shape)}")
    if vertices.dim() != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must have shape (V, 3), got {tuple(vertices.shape)}")
    if faces.numel() == 0:
        return torch.zeros(0, 3, dtype=torch.int32, device=vertices.device)
    if int(faces.min()) < 0 or int(faces.max()) >= vertices.shape[0]:
        raise ValueError(f"faces index vertices outside [0, {vertices.shape[0]})")
    if not bool(torch.isfinite(vertices).all()):
        raise ValueError("vertices must be finite (found NaN or inf)")
    # corners on integers: voxel i spans [i, i + 1) once the centre of voxel 0 sits at 0.5
    unit = (vertices.to(torch.float64) - origin.to(torch.float64)) / voxel_size.to(torch.float64) + 0.5
    tris = unit[faces.long()]
    lo = tris.reshape(-1, 3).amin(dim=0).floor()
    shape = (tris.reshape(-1, 3).amax(dim=0).floor() - lo + 1).long().tolist()
    ijk = surface_voxels(tris - lo, shape)
    return (ijk.to(torch.int64) + lo.long()).to(torch.int32)
