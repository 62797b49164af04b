"""Layout meshes for the server: the selected meshes' world-space triangles and part names.

Runs on the main thread (it reads bpy data). The server voxelises the triangles onto its coarsest grid
with the project's one exact voxeliser and maps the part names (object and material names, e.g.
"Road.001", "Roof tiles") to semantic classes, so the add-on holds no voxeliser of its own.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class LayoutArrays:
    """Indexed triangles in metres (+Z up) with a part per face."""

    vertices: np.ndarray    # (V, 3) float32
    faces: np.ndarray       # (F, 3) int32
    face_parts: np.ndarray  # (F,) int32 indices into part_names
    part_names: tuple[str, ...]

    @property
    def num_faces(self) -> int:
        return int(len(self.faces))


def mesh_layout(objects, depsgraph) -> LayoutArrays:
    """World-space triangles of the evaluated meshes (modifiers applied), one part per object/material."""
    verts, faces, parts, names = [], [], [], []
    base = 0
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
            mat = np.empty(n_tri, dtype=np.int64)
            mesh.loop_triangles.foreach_get("material_index", mat)
            matrix = np.array(evaluated.matrix_world, dtype=np.float64)
            co = co.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3]
            materials = [m.name if m is not None else "" for m in mesh.materials] or [""]
            first = len(names)
            names.extend(f"{obj.name} {m}".strip() for m in materials)
            verts.append(co.astype(np.float32))
            faces.append(tri.reshape(-1, 3) + base)
            parts.append(first + np.clip(mat, 0, len(materials) - 1))
            base += n_vert
        finally:
            evaluated.to_mesh_clear()
    if not faces:
        return LayoutArrays(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), np.zeros(0, np.int32), ())
    return LayoutArrays(np.concatenate(verts), np.concatenate(faces).astype(np.int32),
                        np.concatenate(parts).astype(np.int32), tuple(names))
