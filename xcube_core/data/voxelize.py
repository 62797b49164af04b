"""Meshes -> aligned sparse voxel hierarchies.

A finest voxel is active iff a triangle intersects its closed cube: the engine's exact voxeliser
(`xcube_core.sparse.ops.mesh`, also behind `GridBatch.from_mesh`). This module adds the attributes:
a voxel's normal is the area-weighted mean of the unit normals of the (split) triangles that touch
it, its class the area-weighted majority of their part classes.
"""

from __future__ import annotations

import logging
import pathlib
import time

import numpy as np
import torch

from xcube_core.data import normalize
from xcube_core.data.assets import MeshData, load_mesh
from xcube_core.data.hierarchy import UNKNOWN_CLASS, VoxelSample, build_hierarchy, key_to_ijk
from xcube_core.errors import DataError
from xcube_core.level import Level
from xcube_core.sparse.ops.mesh import triangle_overlaps

logger = logging.getLogger(__name__)

def _reduce(keys, normal_sum, votes):
    """Merge rows with equal voxel keys: sums of area-weighted normals and of class votes."""
    uk, inv = torch.unique(keys, return_inverse=True)
    ns = torch.zeros(len(uk), 3, dtype=normal_sum.dtype).index_add_(0, inv, normal_sum)
    vt = None if votes is None else torch.zeros(len(uk), votes.shape[1], dtype=votes.dtype).index_add_(0, inv, votes)
    return uk, ns, vt


def voxelize_triangles(tris: np.ndarray | torch.Tensor, shape, face_class=None, progress=None):
    """Finest-level voxels of a triangle soup already in voxel coordinates, with normals and classes.

    The voxels are the engine's exact ones (`xcube_core.sparse.ops.mesh.triangle_overlaps`); this adds
    the attributes of the (split) triangles touching each voxel.

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
    has_cls = face_class is not None
    cls = torch.as_tensor(face_class if has_cls else np.zeros(len(tris)), dtype=torch.int64)
    classes = torch.unique(cls) if has_cls else torch.zeros(1, dtype=torch.int64)
    parts = []
    for chunk in triangle_overlaps(tris, shape, progress):
        p = chunk.pieces
        normal = torch.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], dim=1)  # unit normal * 2 area
        votes = None
        if has_cls:
            votes = torch.zeros(len(chunk.piece), len(classes), dtype=torch.float64)
            col = torch.searchsorted(classes, cls[chunk.source[chunk.piece]])
            votes[torch.arange(len(chunk.piece)), col] = normal.norm(dim=1)[chunk.piece]
        parts.append(_reduce(chunk.keys, normal[chunk.piece], votes))
    if not parts:
        empty_sem = torch.zeros(0, dtype=torch.int64) if has_cls else None
        return torch.zeros(0, 3, dtype=torch.int32), torch.zeros(0, 3), empty_sem
    keys, ns, votes = _reduce(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
                              torch.cat([p[2] for p in parts]) if has_cls else None)
    normals = torch.nn.functional.normalize(ns, dim=1, eps=1e-20).to(torch.float32)
    return key_to_ijk(keys), normals, _winning_class(votes, classes) if has_cls else None


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
