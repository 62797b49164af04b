"""Request parts beyond one tile: a layout mesh, a region edit, a scene extent (see the proto's
`LayoutMesh`, `EditRegion` and `GenerateRequest.extent_m`). Plain data; arrays are little-endian bytes,
sequences of rows, or array-likes with ``astype``/``tobytes`` (numpy), as in `ConditionGrid`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from xcube_client._proto import xcube_pb2 as pb
from xcube_client.types import float_bytes, int_bytes


@dataclasses.dataclass
class LayoutMesh:
    """Triangles the server voxelises onto its coarsest grid (layout-to-scene).

    Attributes:
        vertices: (V, 3) metres, +Z up (float32 bytes, rows, or an array).
        faces: (F, 3) vertex indices.
        face_classes: optional (F,) class ids (-1 = unknown), indices into ``info().class_names``.
        fit: scale the layout uniformly into the model's box instead of keeping metres.
        ground: add ground under a layout that has none.
        part_names, face_parts: instead of face_classes, names of parts (objects, materials) and the
            part index of each face; the server maps the names to classes.
    """

    vertices: Any
    faces: Any
    face_classes: Any = None
    fit: bool = False
    ground: bool = True
    part_names: Sequence[str] = ()
    face_parts: Any = None


@dataclasses.dataclass
class SceneLevel:
    """One level of an existing scene: ijk (N, 3) ints, normals (N, 3) floats, semantics (N,) or None."""

    ijk: Any
    normals: Any
    voxel_size: float
    semantics: Any = None


@dataclasses.dataclass
class EditRegion:
    """Regenerate ``box`` = (x0, y0, x1, y1) metres of ``levels`` (coarsest first); see the proto."""

    levels: Sequence[SceneLevel]
    box: tuple[float, float, float, float]
    halo: int = 0
    scene_extent_m: tuple[float, float] | None = None
    grow: bool = False


def _raw(kind: str, values: Any, columns: int, what: str) -> pb.RawArray:
    data, rows = (float_bytes if kind == "float32" else int_bytes)(values, columns, what)
    return pb.RawArray(dtype=kind, shape=[rows, columns] if columns > 1 else [rows], data=data)


def fill_request(request: pb.GenerateRequest, layout_mesh: LayoutMesh | None, edit: EditRegion | None,
                 extent_m: Sequence[float] | None, resample: int) -> None:
    """Put the optional scene parts into ``request``."""
    if layout_mesh is not None:
        m = request.layout_mesh
        m.vertices.CopyFrom(_raw("float32", layout_mesh.vertices, 3, "layout_mesh.vertices"))
        m.faces.CopyFrom(_raw("int32", layout_mesh.faces, 3, "layout_mesh.faces"))
        if layout_mesh.face_classes is not None:
            m.face_classes.CopyFrom(_raw("int32", layout_mesh.face_classes, 1, "layout_mesh.face_classes"))
        m.fit, m.no_ground = bool(layout_mesh.fit), not layout_mesh.ground
        if layout_mesh.face_parts is not None:
            m.part_names.extend(str(n) for n in layout_mesh.part_names)
            m.face_parts.CopyFrom(_raw("int32", layout_mesh.face_parts, 1, "layout_mesh.face_parts"))
    if edit is not None:
        e = request.edit
        e.x0, e.y0, e.x1, e.y1 = (float(v) for v in edit.box)
        e.halo, e.grow = int(edit.halo), bool(edit.grow)
        if edit.scene_extent_m is not None:
            e.scene_extent_m.extend(float(v) for v in edit.scene_extent_m)
        for i, lv in enumerate(edit.levels):
            msg = e.levels.add()
            msg.ijk.CopyFrom(_raw("int32", lv.ijk, 3, f"edit.levels[{i}].ijk"))
            msg.normals.CopyFrom(_raw("float32", lv.normals, 3, f"edit.levels[{i}].normals"))
            msg.voxel_size = float(lv.voxel_size)
            if lv.semantics is not None:
                msg.semantics.CopyFrom(_raw("int32", lv.semantics, 1, f"edit.levels[{i}].semantics"))
    if extent_m is not None:
        request.extent_m.extend(float(v) for v in extent_m)
    request.resample = int(resample)
