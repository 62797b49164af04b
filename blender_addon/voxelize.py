"""Layout-to-scene: turn the selected meshes into a coarse voxel grid (the condition of a generation).

``mesh_triangles`` reads world-space triangles on the main thread (bpy); ``voxelize_triangles`` is
plain numpy and runs on the worker once the server has said how coarse its level 0 is.

Voxel ``(i, j, k)`` spans ``[i*v, (i+1)*v) x [j*v, (j+1)*v) x [k*v, (k+1)*v)`` metres (its centre is
``(ijk + 0.5) * v``, the project's origin = half a voxel convention), so a world point ``p`` lies in
voxel ``floor(p / v)``. A voxel is active when the surface of a selected mesh passes through it
(an exact triangle/cube overlap test), or (``fill=True``) when its centre lies inside a closed mesh.
"""

from __future__ import annotations

import numpy as np


def mesh_triangles(objects, depsgraph) -> np.ndarray:
    """World-space triangles of the evaluated meshes (modifiers applied).

    Args:
        objects: Blender objects; those that are not meshes (or have no faces) are skipped.
        depsgraph: the evaluated dependency graph (``context.evaluated_depsgraph_get()``).

    Returns:
        Triangle corners in metres. Shape: (T, 3, 3), float32.
    """
    chunks = []
    for obj in objects:
        if obj.type != "MESH":
            continue
        evaluated = obj.evaluated_get(depsgraph)
        mesh = evaluated.to_mesh()
        try:
            mesh.calc_loop_triangles()
            n_tri, n_vert = len(mesh.loop_triangles), len(mesh.vertices)
            if n_tri == 0:
                continue
            co = np.empty(n_vert * 3, dtype=np.float64)
            mesh.vertices.foreach_get("co", co)
            tri = np.empty(n_tri * 3, dtype=np.int64)
            mesh.loop_triangles.foreach_get("vertices", tri)
            matrix = np.array(evaluated.matrix_world, dtype=np.float64)
            co = co.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3]
            chunks.append(co[tri.reshape(-1, 3)].astype(np.float32))
        finally:
            evaluated.to_mesh_clear()
    if not chunks:
        return np.zeros((0, 3, 3), dtype=np.float32)
    return np.concatenate(chunks, axis=0)


def _overlaps(tris: np.ndarray, centres: np.ndarray, half: float) -> np.ndarray:
    """Triangle vs axis-aligned cube overlap by the separating axis theorem (Akenine-Moller).

    Args:
        tris: one triangle per test. Shape: (M, 3, 3), float64.
        centres: the cube centre of each test. Shape: (M, 3), float64.
        half: half the cube edge.

    Returns:
        True where triangle and cube touch or intersect. Shape: (M,), bool.
    """
    v = tris - centres[:, None, :]
    ok = np.all(v.min(axis=1) <= half, axis=1) & np.all(v.max(axis=1) >= -half, axis=1)  # cube faces
    edges = (v[:, 1] - v[:, 0], v[:, 2] - v[:, 1], v[:, 0] - v[:, 2])
    normal = np.cross(edges[0], edges[1])  # triangle plane
    ok &= np.abs(np.einsum("mk,mk->m", normal, v[:, 0])) <= half * np.abs(normal).sum(axis=1)
    for unit in np.eye(3):  # the 9 axes: cube edge x triangle edge
        for edge in edges:
            axis = np.cross(unit, edge)
            p = np.einsum("mk,mik->mi", axis, v)
            r = half * np.abs(axis).sum(axis=1)
            ok &= (p.min(axis=1) <= r) & (p.max(axis=1) >= -r)
    return ok


def _surface_voxels(tris: np.ndarray, voxel: float, bounds: np.ndarray, budget: int = 1 << 21) -> np.ndarray:
    """Every voxel in ``[0, bounds)`` that a triangle passes through. (T, 3, 3) -> (N, 3) int64.

    Candidates are the voxels of each triangle's bounding box, tested exactly with ``_overlaps``;
    triangles are processed in chunks of about ``budget`` candidates.
    """
    # Nudge by a hair so a face lying exactly on a voxel boundary belongs to the voxel above it,
    # the same half-open convention as floor(p / v).
    tris = tris + 1e-6 * voxel
    half = 0.5 * voxel * (1.0 - 1e-6)
    lo = np.clip(np.floor(tris.min(axis=1) / voxel).astype(np.int64), 0, bounds)
    hi = np.clip(np.floor(tris.max(axis=1) / voxel).astype(np.int64) + 1, 0, bounds)
    dims = np.maximum(hi - lo, 0)
    counts = dims.prod(axis=1)
    out = []
    start = 0
    while start < len(tris):
        stop = start + max(1, int(np.searchsorted(np.cumsum(counts[start:]), budget, side="right")))
        cnt = counts[start:stop]
        tri_id = np.repeat(np.arange(start, stop), cnt)
        local = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        d = dims[tri_id]
        ijk = lo[tri_id] + np.stack([local // (d[:, 1] * d[:, 2]), (local // d[:, 2]) % d[:, 1], local % d[:, 2]], 1)
        hit = _overlaps(tris[tri_id], (ijk + 0.5) * voxel, half)
        out.append(ijk[hit])
        start = stop
    return np.concatenate(out) if out else np.zeros((0, 3), dtype=np.int64)


def _inside_mask(triangles: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Whether each point is inside the closed surface: parity of +Z ray crossings.

    Shapes: triangles (T, 3, 3), centres (P, 3) -> (P,) bool.
    """
    a, b, c = (triangles[:, i, :2].astype(np.float64) for i in range(3))
    z = triangles[:, :, 2].astype(np.float64)
    det = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
    keep = np.abs(det) > 1e-12  # triangles seen edge-on from above never count
    a, b, c, z, det = a[keep], b[keep], c[keep], z[keep], det[keep]
    inside = np.zeros(len(centres), dtype=bool)
    for start in range(0, len(centres), 4096):
        p = centres[start:start + 4096, None, :]  # (P, 1, 3)
        w0 = ((b[:, 1] - c[:, 1]) * (p[..., 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (p[..., 1] - c[:, 1])) / det
        w1 = ((c[:, 1] - a[:, 1]) * (p[..., 0] - c[:, 0]) + (a[:, 0] - c[:, 0]) * (p[..., 1] - c[:, 1])) / det
        w2 = 1.0 - w0 - w1
        hit = (w0 >= 0) & (w1 >= 0) & (w2 > 0)  # half-open on one edge: shared edges count once
        zi = w0 * z[:, 0] + w1 * z[:, 1] + w2 * z[:, 2]
        crossings = (hit & (zi > p[..., 2])).sum(axis=1)
        inside[start:start + 4096] = crossings % 2 == 1
    return inside


def voxelize_triangles(triangles: np.ndarray, voxel_size: float, shape: tuple[int, int, int],
                       fill: bool = False) -> np.ndarray:
    """Active voxels of a triangle soup on a grid of ``shape`` voxels of ``voxel_size`` metres.

    Args:
        triangles: world-space triangles, metres. Shape: (T, 3, 3), float.
        voxel_size: edge of a voxel in metres (> 0).
        shape: (X, Y, Z) grid resolution; voxels outside ``[0, shape)`` are dropped.
        fill: also activate voxels whose centre lies inside a closed mesh.

    Returns:
        Unique voxel coordinates, sorted. Shape: (N, 3), int32.
    """
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
    tris = np.asarray(triangles, dtype=np.float64).reshape(-1, 3, 3)
    bounds = np.asarray(shape, dtype=np.int64)
    if len(tris) == 0:
        return np.zeros((0, 3), dtype=np.int32)
    ijk = _surface_voxels(tris, float(voxel_size), bounds)
    if fill:
        lo = np.clip(np.floor(tris.reshape(-1, 3).min(0) / voxel_size).astype(np.int64), 0, bounds)
        hi = np.clip(np.floor(tris.reshape(-1, 3).max(0) / voxel_size).astype(np.int64) + 1, 0, bounds)
        if np.all(hi > lo):
            axes = [np.arange(lo[d], hi[d]) for d in range(3)]
            cand = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
            ijk = np.concatenate([ijk, cand[_inside_mask(tris, (cand + 0.5) * voxel_size)]])
    ok = np.all((ijk >= 0) & (ijk < bounds), axis=1)
    return np.unique(ijk[ok], axis=0).astype(np.int32)
