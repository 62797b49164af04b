"""The semantic class of every face of a server mesh, from the level's raw voxels (numpy, no bpy).

Runs on the worker thread. A vertex takes the class of its nearest active voxel centre, found exactly:
the voxel containing it when active, else the nearest of its 3x3x3 neighbourhood when that is within
1.5 voxels (nothing outside can be nearer), else by brute force. A face takes the class most of its
three vertices have (the first vertex's on a three-way tie).
"""

from __future__ import annotations

import numpy as np

_NEIGHBOURS = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)


def _keys(ijk: np.ndarray, lo: np.ndarray, dims: np.ndarray) -> np.ndarray:
    rel = ijk - lo
    return (rel[:, 0] * dims[1] + rel[:, 1]) * dims[2] + rel[:, 2]


def _lookup(cells, offset, lo, dims, sorted_keys, order, out, rows) -> np.ndarray:
    """Writes the voxel row of each active ``cells + offset`` into ``out[rows]``; returns the rows
    whose cell is not active."""
    cand = cells + offset
    inside = np.all((cand >= lo) & (cand < lo + dims), axis=1)
    key = np.where(inside, _keys(np.where(inside[:, None], cand, lo), lo, dims), -1)
    pos = np.clip(np.searchsorted(sorted_keys, key), 0, len(sorted_keys) - 1)
    hit = inside & (sorted_keys[pos] == key)
    out[rows[hit]] = order[pos[hit]]
    return rows[~hit]


def vertex_classes(points: np.ndarray, ijk: np.ndarray, semantics: np.ndarray, voxel_size: float,
                   origin) -> np.ndarray:
    """Class id of the nearest active voxel of each world-space point.

    Args:
        points: (V, 3) float, metres.
        ijk: (N, 3) int, the level's active voxels; N >= 1.
        semantics: (N,) int, class id per voxel.
        voxel_size: metres.
        origin: world position of voxel (0, 0, 0)'s centre.

    Returns:
        (V,) int32.
    """
    ijk = np.asarray(ijk, dtype=np.int64).reshape(-1, 3)
    semantics = np.asarray(semantics).reshape(-1).astype(np.int32)
    if len(ijk) == 0 or len(ijk) != len(semantics):
        raise ValueError(f"need one class per voxel and at least one voxel; got {len(ijk)} voxels and "
                         f"{len(semantics)} classes")
    index_space = (np.asarray(points, dtype=np.float64) - np.asarray(origin, dtype=np.float64)) / voxel_size
    lo = ijk.min(0) - 1
    dims = ijk.max(0) + 2 - lo
    keys = _keys(ijk, lo, dims)
    order = np.argsort(keys)
    sorted_keys = keys[order]
    best = np.full(len(index_space), -1, np.int64)
    centre = np.rint(index_space).astype(np.int64)
    # The containing voxel is the nearest lattice point: when it is active, it is the answer.
    todo = _lookup(centre, np.zeros(3, np.int64), lo, dims, sorted_keys, order, best, np.arange(len(best)))
    # Else the nearest active voxel among the 26 around it.
    best_dist = np.full(len(todo), np.inf)
    found = np.full(len(todo), -1, np.int64)
    for offset in _NEIGHBOURS:
        cand = centre[todo] + offset
        rows = np.full(len(todo), -1, np.int64)
        _lookup(cand, np.zeros(3, np.int64), lo, dims, sorted_keys, order, rows, np.arange(len(todo)))
        dist = np.sum((cand - index_space[todo]) ** 2, axis=1)
        better = (rows >= 0) & (dist < best_dist)
        found[better], best_dist[better] = rows[better], dist[better]
    # Cells outside the 3x3x3 lie at least 1.5 voxels away: a farther find may not be the nearest.
    found[best_dist > 1.5**2] = -1
    best[todo] = found
    missing = np.flatnonzero(best < 0)
    chunk = max(1, 4_000_000 // len(ijk))  # brute force for the rest, ~100 MB at a time
    for start in range(0, len(missing), chunk):
        rows = missing[start:start + chunk]
        d = np.sum((index_space[rows, None, :] - ijk[None, :, :]) ** 2, axis=2)
        best[rows] = np.argmin(d, axis=1)
    return semantics[best]


def face_classes(faces: np.ndarray, per_vertex: np.ndarray) -> np.ndarray:
    """(F,) int32: the majority class of each triangle's vertices (first vertex on a tie)."""
    c = per_vertex[np.asarray(faces, dtype=np.int64)]
    if len(c) == 0:
        return np.zeros(0, np.int32)
    return np.where(c[:, 1] == c[:, 2], c[:, 1], c[:, 0]).astype(np.int32)


def level_face_classes(mesh, level) -> np.ndarray | None:
    """Class per face of ``mesh`` (``ply.PlyMesh``) from a received level's raw ``ijk``/``semantics``
    arrays; None when the level came without them."""
    arts = getattr(level, "artifacts", {}) or {}
    if "ijk" not in arts or "semantics" not in arts or not len(mesh.faces):
        return None
    ijk = np.frombuffer(arts["ijk"].data, dtype="<i4").reshape(-1, 3)
    semantics = np.frombuffer(arts["semantics"].data, dtype="<i4")
    if len(ijk) == 0:
        return None
    origin = level.origin if level.origin else (level.voxel_size / 2,) * 3
    return face_classes(mesh.faces, vertex_classes(mesh.vertices, ijk, semantics, level.voxel_size, origin))
