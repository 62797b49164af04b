"""A small reader for the binary PLY meshes the server sends (numpy, no bpy; runs on the worker).

Supports ``format binary_little_endian 1.0`` with a ``vertex`` element (``x y z`` and optional
``red green blue [alpha]`` as uchar) and a ``face`` element whose only property is a vertex index
list. That is what ``xcube_core.io.mesh`` writes; anything else raises ``ValueError`` and the add-on
falls back to a Volume to Mesh modifier.
"""

from __future__ import annotations

import dataclasses

import numpy as np

_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


@dataclasses.dataclass
class PlyMesh:
    """Attributes: vertices (N, 3) float32 metres; faces (M, 3) int32 triangles; colors (N, 4) float32
    sRGB in 0..1 or None; face_classes (M,) int32 or None."""

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray | None = None
    face_classes: np.ndarray | None = None  # (M,) int32 class id per face, filled in by net (classify.py)


def _header(data: bytes) -> tuple[list[tuple[str, int, list]], int]:
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise ValueError("not a PLY file (no 'ply' magic or 'end_header')")
    elements: list[tuple[str, int, list]] = []
    for line in data[:end].decode("ascii", "replace").splitlines()[1:]:
        words = line.split()
        if not words or words[0] in {"comment", "obj_info"}:
            continue
        if words[0] == "format" and words[1] != "binary_little_endian":
            raise ValueError(f"PLY format {words[1]!r} is not supported (binary_little_endian only)")
        if words[0] == "element":
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            elements[-1][2].append(words[1:])
    return elements, end + len(b"end_header\n")


def read_ply(data: bytes) -> PlyMesh:
    """Parses a binary little-endian PLY (see the module docstring).

    Raises:
        ValueError: a layout this reader does not handle, or truncated data.
    """
    elements, offset = _header(data)
    vertices = faces = colors = None
    for name, count, props in elements:
        if name == "vertex":
            dtype = np.dtype([(p[1], "<" + _TYPES[p[0]]) for p in props if p[0] != "list"])
            if len(dtype.names) != len(props):
                raise ValueError("PLY vertex lists are not supported")
            rec = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
            offset += dtype.itemsize * count
            vertices = np.stack([rec["x"], rec["y"], rec["z"]], axis=1).astype(np.float32)
            if {"red", "green", "blue"} <= set(dtype.names):
                alpha = rec["alpha"] if "alpha" in dtype.names else np.full(count, 255, np.uint8)
                colors = np.stack([rec["red"], rec["green"], rec["blue"], alpha], 1).astype(np.float32) / 255.0
        elif name == "face":
            if len(props) != 1 or props[0][0] != "list":
                raise ValueError("PLY faces must have exactly one vertex index list property")
            count_t, index_t = "<" + _TYPES[props[0][1]], "<" + _TYPES[props[0][2]]
            dtype = np.dtype([("n", count_t), ("v", index_t, (3,))])
            rec = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
            if count and not np.all(rec["n"] == 3):
                raise ValueError("PLY faces must all be triangles")
            offset += dtype.itemsize * count
            faces = rec["v"].astype(np.int32)
        else:
            raise ValueError(f"PLY element {name!r} is not supported")
    if vertices is None:
        raise ValueError("PLY has no vertex element")
    faces = np.zeros((0, 3), np.int32) if faces is None else faces
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError("PLY face indices out of range")
    return PlyMesh(vertices, faces, colors)
