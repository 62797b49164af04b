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
    verts, faces, normals = _blockwise_marching_cubes(ijk, sigma, iso, block)
    verts, faces, normals = _merge_edge_vertices(verts, faces, normals)
    colors = _vertex_colors(verts, ijk, class_colors(level.semantics, len(ijk)))
    world = verts * float(level.voxel_size) + np.asarray(level.origin, np.float64)
    return trimesh.Trimesh(vertices=world, faces=faces, vertex_normals=normals, vertex_colors=colors,
                           process=False)


def _merge_edge_vertices(verts: np.ndarray, faces: np.ndarray, normals: np.ndarray):
    """Weld the pieces of neighbouring blocks and drop degenerate triangles.

    Every marching-cubes vertex lies on a lattice edge: two coordinates are integers, the third is
    ``integer + t``. Keying vertices by (lattice point, edge axis) welds the copies that two blocks
    make of a vertex on their shared face exactly, with no tolerance.

    Returns:
        vertices (V, 3) float64, faces (F, 3) int64, unit normals (V, 3) float32.
    """
    # coordinates within 1e-4 of an integer are snapped, so that the two copies of a vertex (whose
    # float32 coordinates can differ in the last bits) always agree on their edge
    rounded = np.rint(verts)
    verts = np.where(np.abs(verts - rounded) < 1e-4, rounded, verts)
    base = np.floor(verts).astype(np.int64)
    frac = verts - base
    axis = np.where(frac[:, 0] > 0, 0, np.where(frac[:, 1] > 0, 1, np.where(frac[:, 2] > 0, 2, 3)))
    lo = base.min(axis=0)
    rel = base - lo
    ext = rel.max(axis=0) + 1
    if np.any(ext >= 1 << 20):
        raise InvalidInputError(f"level extent {tuple(int(e) for e in ext)} voxels is too large to mesh")
    key = (((rel[:, 0] << 20) | rel[:, 1]) << 20 | rel[:, 2]) * 4 + axis
    uniq, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    faces = inverse.reshape(-1)[faces]
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    used = np.zeros(len(uniq), bool)
    used[faces.reshape(-1)] = True  # drop vertices that only removed triangles used
    faces = (np.cumsum(used) - 1)[faces]
    verts, normals = verts[first][used], normals[first][used]
    normals = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    return verts, faces, normals.astype(np.float32)


def _blockwise_marching_cubes(ijk: np.ndarray, sigma: float, iso: float, block: int):
    """Marching cubes over the occupied blocks.

    Returns:
        index-space vertices (V, 3) float64, faces (F, 3) int64, gradient normals (V, 3) float32.
    """
    from scipy.ndimage import gaussian_filter
    from skimage.measure import marching_cubes

    radius = int(3.0 * sigma + 0.5) if sigma > 0 else 0
    halo = radius + 1
    if 2 * halo >= block:
        raise InvalidInputError(f"block ({block}) must exceed twice the filter halo ({halo}); raise block")
    size = block + 1 + 2 * halo  # block b samples [b*B - halo, b*B + B + halo]; its cells [b*B, b*B + B)
    blocks, members = _padded_block_members(ijk, block, halo)
    all_v, all_f, all_n, count = [], [], [], 0
    for b, idx in zip(blocks.tolist(), members):
        lo = np.asarray(b) * block - halo
        pts = ijk[idx] - lo
        occ = np.zeros((size, size, size), np.float32)
        occ[pts[:, 0], pts[:, 1], pts[:, 2]] = 1.0
        field = gaussian_filter(occ, sigma, truncate=3.0, mode="constant") if sigma > 0 else occ
        core = field[halo:halo + block + 1, halo:halo + block + 1, halo:halo + block + 1]
        if core.max() <= iso + 1e-6 or core.min() >= iso + 1e-6:
            continue
        # iso + 1e-6: with a raw 0/1 field an ambiguous face's saddle equals 0.5 exactly, and a tie
        # there is broken differently by the two cubes sharing the face (a crack)
        v, f, n, _ = marching_cubes(core, level=iso + 1e-6, gradient_direction="ascent")
        all_v.append(v.astype(np.float64) + (lo + halo))
        all_f.append(f.astype(np.int64) + count)
        all_n.append(n)
        count += len(v)
    if not all_v:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros((0, 3), np.float32)
    return np.concatenate(all_v), np.concatenate(all_f), np.concatenate(all_n)


def _padded_block_members(ijk: np.ndarray, block: int, halo: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Blocks whose halo-padded sample box holds voxels, and those voxels (rows of ijk) per block.

    Along each axis a voxel p lies in the padded box of blocks ceil((p - B - h) / B) .. floor((p + h) / B),
    one or two blocks since 2h < B; so each voxel is listed at most 8 times (usually once).
    """
    b_lo = -np.floor_divide(block + halo - ijk, block)
    b_hi = np.floor_divide(ijk + halo, block)
    two = b_hi != b_lo  # (N, 3)
    pairs_b, pairs_i = [], []
    for combo in np.array(np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij")).reshape(3, -1).T.astype(bool):
        ok = np.all(two | ~combo, axis=1)
        pairs_b.append(np.where(combo, b_hi, b_lo)[ok])
        pairs_i.append(np.flatnonzero(ok))
    bb, ii = np.concatenate(pairs_b), np.concatenate(pairs_i)
    lo = bb.min(axis=0)
    rel = bb - lo
    ext = rel.max(axis=0) + 1
    key = (rel[:, 0] * ext[1] + rel[:, 1]) * ext[2] + rel[:, 2]
    order = np.argsort(key, kind="stable")
    key, ii = key[order], ii[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    blocks = np.stack(np.unravel_index(key[starts], tuple(int(e) for e in ext)), axis=1) + lo
    return blocks, np.split(ii, starts[1:])


def _vertex_colors(points: np.ndarray, ijk: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """RGBA (V, 4) uint8: colour of the nearest occupied voxel to each index-space point."""
    lookup = VoxelLookup(ijk)
    best = np.full(len(points), -1, np.int64)
    # a vertex sits on a lattice edge: its two end samples are floor and ceil; try the nearer first
    for cand in (np.rint(points), np.floor(points), np.ceil(points)):
        todo = np.flatnonzero(best < 0)
        if len(todo) == 0:
            break
        c = cand[todo].astype(np.int64)
        row = lookup.index(c)
        hit = row >= 0
        best[todo[hit]] = row[hit]
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
