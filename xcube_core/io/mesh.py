"""Meshes of a `Level`: a smooth surface or blocky voxels, coloured by semantic class; PLY/OBJ/GLB export.

* :func:`smooth_mesh`: marching cubes (scikit-image) on a Gaussian-smoothed occupancy field, computed
  block by block over the occupied ``block^3`` boxes only (plus a halo as wide as the filter), so a
  512^3 level is never densified. Blocks share their boundary samples, which get bit-identical field
  values, so the pieces stitch into one watertight surface once duplicate vertices are merged.
* :func:`blocky_mesh`: the exposed faces of the voxels (a face is exposed when the neighbour across it
  is empty), two triangles each, found with vectorised lookups. Vertices are not shared between faces,
  so each face keeps its flat normal and class colour; merging positions gives a closed surface.

Both return a `trimesh.Trimesh` in metres (+Z up) with outward normals and per-vertex colours
(`xcube_core.classes.CLASS_COLORS`).
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Any

import numpy as np

from xcube_core.errors import InvalidInputError
from xcube_core.io.voxels import VoxelLookup, class_colors, to_numpy

logger = logging.getLogger(__name__)

MODES = ("smooth", "blocky")
FORMATS = (".ply", ".obj", ".glb")


def level_to_mesh(level: Any, mode: str = "smooth", **kwargs: Any):
    """Mesh a level. ``mode`` is ``"smooth"`` (marching cubes) or ``"blocky"`` (voxel faces)."""
    if mode == "smooth":
        return smooth_mesh(level, **kwargs)
    if mode == "blocky":
        return blocky_mesh(level, **kwargs)
    raise InvalidInputError(f"mesh mode must be one of {MODES}, got {mode!r}")


# ------------------------------------------------------------------------------------------ blocky


def _face_table() -> tuple[np.ndarray, np.ndarray]:
    """Corner offsets (6, 4, 3) of each voxel face, counter-clockwise seen from outside, and normals."""
    corners, normals = [], []
    for axis in range(3):
        u, v = (axis + 1) % 3, (axis + 2) % 3
        for sign in (1, -1):
            quad = []
            for cu, cv in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                c = np.zeros(3)
                c[axis], c[u], c[v] = 0.5 * sign, 0.5 * cu, 0.5 * cv
                quad.append(c)
            corners.append(quad if sign > 0 else quad[::-1])  # e_u x e_v = e_axis
            n = np.zeros(3)
            n[axis] = sign
            normals.append(n)
    return np.asarray(corners), np.asarray(normals)


def blocky_mesh(level: Any):
    """The exposed voxel faces of a level as a triangle mesh.

    Args:
        level: a `Level` (ijk, voxel_size, origin, optional semantics).

    Returns:
        `trimesh.Trimesh` with 4 vertices per face (flat normals, class colours per vertex).
    """
    import trimesh

    ijk = to_numpy(level.ijk, np.int64).reshape(-1, 3)
    if len(ijk) == 0:
        return trimesh.Trimesh(vertices=np.zeros((0, 3)), faces=np.zeros((0, 3), np.int64))
    colors = class_colors(level.semantics, len(ijk))
    lookup = VoxelLookup(ijk)
    corners, normals = _face_table()
    verts, vnorm, vcol = [], [], []
    for f in range(6):
        exposed = np.flatnonzero(~lookup.contains(ijk + normals[f].astype(np.int64)))
        # (F, 4, 3) corner positions in index space
        verts.append((ijk[exposed, None, :] + corners[f][None]).reshape(-1, 3))
        vnorm.append(np.broadcast_to(normals[f], (len(exposed) * 4, 3)))
        vcol.append(np.repeat(colors[exposed], 4, axis=0))
    v = np.concatenate(verts) if verts else np.zeros((0, 3))
    quads = np.arange(len(v)).reshape(-1, 4)
    faces = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]], axis=0)
    world = v * float(level.voxel_size) + np.asarray(level.origin, np.float64)
    vc = np.concatenate(vcol)
    rgba = np.concatenate([vc, np.full((len(vc), 1), 255, np.uint8)], axis=1)
    return trimesh.Trimesh(vertices=world, faces=faces, vertex_normals=np.concatenate(vnorm),
                           vertex_colors=rgba, process=False)


# ------------------------------------------------------------------------------------------ smooth


def smooth_mesh(level: Any, sigma: float = 0.7, iso: float = 0.3, block: int = 32):
    """A smooth, watertight surface around the level's voxels.

    The field is the voxel occupancy (1 at active voxel centres, 0 elsewhere) blurred by a Gaussian of
    ``sigma`` voxels, meshed at ``iso``. With ``sigma = 0`` and ``iso = 0.5`` the surface passes half
    way between occupied and empty voxel centres. The defaults keep one-voxel-thin walls.

    Args:
        level: a `Level`.
        sigma: Gaussian standard deviation in voxels (0 = no smoothing).
        iso: iso value in (0, 1).
        block: edge of the processing blocks in voxels.

    Returns:
        `trimesh.Trimesh` in metres with outward vertex normals and class colours (may be empty).
    """
    import trimesh

    if not 0.0 < iso < 1.0:
        raise InvalidInputError(f"iso must lie in (0, 1), got {iso}")
    if sigma < 0:
        raise InvalidInputError(f"sigma must be >= 0, got {sigma}")
    ijk = to_numpy(level.ijk, np.int64).reshape(-1, 3)
    if len(ijk) == 0:
        return trimesh.Trimesh(vertices=np.zeros((0, 3)), faces=np.zeros((0, 3), np.int64))
    verts, faces = _blockwise_marching_cubes(ijk, sigma, iso, block)
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=False)
    mesh.merge_vertices(digits_vertex=5)
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.remove_unreferenced_vertices()
    index_space = np.asarray(mesh.vertices)
    mesh.vertices = index_space * float(level.voxel_size) + np.asarray(level.origin, np.float64)
    colors = _vertex_colors(index_space, ijk, class_colors(level.semantics, len(ijk)))
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=colors)
    _ = mesh.vertex_normals  # computed from the (outward) faces and cached for export
    return mesh


def _blockwise_marching_cubes(ijk: np.ndarray, sigma: float, iso: float, block: int):
    """Marching cubes over the occupied blocks; returns index-space vertices (V, 3) and faces (F, 3)."""
    from scipy.ndimage import gaussian_filter
    from skimage.measure import marching_cubes

    radius = int(3.0 * sigma + 0.5) if sigma > 0 else 0
    halo = radius + 1
    bxyz = np.floor_divide(ijk, block)
    keys, inv = np.unique(bxyz, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    order = np.argsort(inv, kind="stable")
    cuts = np.searchsorted(inv[order], np.arange(len(keys) + 1))
    members = {tuple(k): order[cuts[i]:cuts[i + 1]] for i, k in enumerate(keys.tolist())}
    offsets = np.array(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij")).reshape(3, -1).T
    todo = np.unique((keys[:, None, :] + offsets[None]).reshape(-1, 3), axis=0)
    all_v, all_f, count = [], [], 0
    size = block + 1 + 2 * halo  # samples [b*B - halo, b*B + B + halo]
    for b in todo.tolist():
        lo = np.asarray(b) * block - halo
        near = [members[k] for k in (tuple(np.asarray(b) + o) for o in offsets.tolist()) if k in members]
        if not near:
            continue
        pts = ijk[np.concatenate(near)] - lo
        pts = pts[np.all((pts >= 0) & (pts < size), axis=1)]
        if len(pts) == 0:
            continue
        occ = np.zeros((size, size, size), np.float64)
        occ[pts[:, 0], pts[:, 1], pts[:, 2]] = 1.0
        field = gaussian_filter(occ, sigma, truncate=3.0, mode="constant") if sigma > 0 else occ
        core = field[halo:halo + block + 1, halo:halo + block + 1, halo:halo + block + 1]
        if core.max() <= iso or core.min() >= iso:
            continue
        v, f, _, _ = marching_cubes(core, level=iso, gradient_direction="ascent")
        all_v.append(v + (lo + halo))
        all_f.append(f + count)
        count += len(v)
    if not all_v:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    return np.concatenate(all_v), np.concatenate(all_f)


def _vertex_colors(points: np.ndarray, ijk: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """RGBA (V, 4) uint8: colour of the nearest occupied voxel to each index-space point."""
    lookup = VoxelLookup(ijk)
    base = np.floor(points).astype(np.int64)
    best = np.full(len(points), -1, np.int64)
    best_d = np.full(len(points), np.inf)
    for c in np.array(np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij")).reshape(3, -1).T:
        cand = base + c
        row = lookup.index(cand)
        d = np.sum((cand - points) ** 2, axis=1)
        better = (row >= 0) & (d < best_d)
        best[better], best_d[better] = row[better], d[better]
    missing = best < 0
    if missing.any():
        from scipy.spatial import cKDTree

        best[missing] = cKDTree(ijk).query(points[missing])[1]
    rgb = colors[best]
    return np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], axis=1)


# ------------------------------------------------------------------------------------------ export


def export_mesh(mesh: Any, path: str | os.PathLike) -> pathlib.Path:
    """Write a mesh as PLY, OBJ or GLB (chosen by the file suffix), with colours and normals.

    Raises:
        InvalidInputError: unknown suffix.
    """
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InvalidInputError(f"mesh file must end in one of {FORMATS}, got {path.name!r}")
    if len(mesh.faces) == 0:
        logger.warning("the mesh is empty; writing an empty %s", suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".obj":
        data = mesh.export(file_type="obj", include_normals=True, include_color=True)
    elif suffix == ".ply":
        data = mesh.export(file_type="ply", encoding="binary", vertex_normal=True)
    else:
        data = mesh.export(file_type="glb", include_normals=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path
