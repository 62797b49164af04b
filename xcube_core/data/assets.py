"""Reading the user's assets: meshes (OBJ, PLY, GLB/GLTF, STL, OFF via trimesh) with their part names,
and point clouds (PLY, NPZ) with optional normals and labels; part names map to semantic classes."""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np

from xcube_core.classes import CLASS_NAMES
from xcube_core.data.hierarchy import UNKNOWN_CLASS
from xcube_core.errors import DataError

MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".stl", ".off")
POINT_SUFFIXES = (".ply", ".npz")

# substring of a part/material name -> class name; the first match wins (specific before general)
DEFAULT_CLASS_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("roof", "roof"), ("shingle", "roof"), ("tile", "roof"),
    ("lamp", "pole"), ("pole", "pole"), ("mast", "pole"), ("streetlight", "pole"),
    ("water", "water"), ("river", "water"), ("lake", "water"), ("pond", "water"),
    ("bush", "bush"), ("shrub", "bush"), ("hedge", "bush"),
    ("tree", "tree"), ("leaf", "tree"), ("leaves", "tree"), ("foliage", "tree"), ("trunk", "tree"),
    ("canopy", "tree"), ("branch", "tree"),
    ("car", "vehicle"), ("vehicle", "vehicle"), ("truck", "vehicle"), ("bus", "vehicle"),
    ("wheel", "vehicle"), ("van", "vehicle"),
    ("road", "road"), ("street", "road"), ("asphalt", "road"), ("pavement", "road"),
    ("sidewalk", "road"), ("path", "road"), ("parking", "road"),
    ("building", "building"), ("wall", "building"), ("facade", "building"), ("house", "building"),
    ("window", "building"), ("door", "building"), ("tower", "building"),
    ("ground", "ground"), ("terrain", "ground"), ("grass", "ground"), ("lawn", "ground"),
    ("soil", "ground"), ("field", "ground"),
)


def class_of_part(name: str, class_map: dict[str, str] | None = None) -> int:
    """Semantic class id of a part/material name (`UNKNOWN_CLASS` when nothing matches).

    Args:
        name: part, node or material name (case-insensitive).
        class_map: extra ``substring -> class name`` rules checked before the defaults.
    """
    low = name.lower()
    rules = list((class_map or {}).items()) + list(DEFAULT_CLASS_KEYWORDS)
    for key, cls in rules:
        if key.lower() in low:
            if cls not in CLASS_NAMES:
                raise ValueError(f"class map entry {key!r} -> {cls!r}: class must be one of {CLASS_NAMES}")
            return CLASS_NAMES.index(cls)
    return UNKNOWN_CLASS


@dataclasses.dataclass
class MeshData:
    """A triangle soup with a class per face.

    Attributes:
        vertices: Shape: (V, 3), float64, world units.
        faces: Shape: (F, 3), int64.
        face_class: Shape: (F,), int64 (`UNKNOWN_CLASS` where unknown) or None when no part matched.
        part_names: names of the parts that were found.
        up_axis: the file's up axis before conversion to +Z up ("z" or "y").
    """

    vertices: np.ndarray
    faces: np.ndarray
    face_class: np.ndarray | None
    part_names: list[str]
    up_axis: str = "z"


def _part_name(scene, node: str, geom_name: str, geom) -> str:
    material = getattr(getattr(geom, "visual", None), "material", None)
    return " ".join(str(v) for v in (node, geom_name, getattr(material, "name", None) or "") if v)


Y_UP_SUFFIXES = (".glb", ".gltf")  # glTF is +Y up by specification


def default_up_axis(path: str | os.PathLike) -> str:
    """"y" for glTF files (their spec says +Y up), "z" for everything else (our convention)."""
    return "y" if pathlib.Path(path).suffix.lower() in Y_UP_SUFFIXES else "z"


def load_mesh(path: str | os.PathLike, class_map: dict[str, str] | None = None,
              up_axis: str | None = None) -> MeshData:
    """Load a mesh or scene file, flattening the scene graph (transforms applied), in +Z-up world.

    Args:
        path: the file.
        class_map: extra part-name rules (see `class_of_part`).
        up_axis: the file's up axis, "z" or "y" (turned to +Z as Blender's importers do:
            (x, y, z) -> (x, -z, y)); None = `default_up_axis`.

    Raises:
        DataError: unreadable file, or no triangles in it.
    """
    import trimesh

    path = pathlib.Path(path)
    try:
        loaded = trimesh.load(str(path), process=False, split_objects=True, split_groups=True)
    except Exception as exc:  # trimesh raises many types for broken files
        raise DataError(f"{path}: cannot read mesh ({type(exc).__name__}: {exc})") from exc
    parts: list[tuple[str, object]] = []
    if isinstance(loaded, trimesh.Scene):
        for node in loaded.graph.nodes_geometry:
            transform, geom_name = loaded.graph[node]
            geom = loaded.geometry[geom_name]
            if not isinstance(geom, trimesh.Trimesh):
                continue
            mesh = geom.copy()
            mesh.apply_transform(transform)
            parts.append((_part_name(loaded, node, geom_name, geom), mesh))
    elif isinstance(loaded, trimesh.Trimesh):
        parts.append((_part_name(None, "", path.stem, loaded), loaded))
    verts, faces, classes, names, base = [], [], [], [], 0
    for name, mesh in parts:
        f = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
        if len(f) == 0:
            continue
        verts.append(np.asarray(mesh.vertices, dtype=np.float64))
        faces.append(f + base)
        classes.append(np.full(len(f), class_of_part(name, class_map), dtype=np.int64))
        names.append(name)
        base += len(mesh.vertices)
    if not faces:
        raise DataError(f"{path}: no triangles found (empty mesh or only points/lines)")
    face_class = np.concatenate(classes)
    vertices = np.concatenate(verts)
    up = up_axis or default_up_axis(path)
    if up == "y":
        vertices = np.stack([vertices[:, 0], -vertices[:, 2], vertices[:, 1]], axis=1)
    elif up != "z":
        raise ValueError(f"up_axis must be 'z' or 'y', got {up_axis!r}")
    return MeshData(vertices, np.concatenate(faces), face_class if (face_class >= 0).any() else None, names, up)


@dataclasses.dataclass
class PointData:
    """A point cloud. Shapes: points (N, 3) float64; normals (N, 3) float32 or None; labels (N,) int64 or None."""

    points: np.ndarray
    normals: np.ndarray | None
    labels: np.ndarray | None


def _first(container, keys):
    for k in keys:
        if k in container:
            return container[k]
    return None


def load_points(path: str | os.PathLike) -> PointData:
    """Load a PLY point cloud (properties nx/ny/nz, label/class/semantic optional) or an NPZ with
    ``points`` (or ``xyz``), optional ``normals`` and ``labels`` (or ``semantics``).

    Raises:
        DataError: unreadable file, missing points, or mismatched array lengths.
    """
    path = pathlib.Path(path)
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                pts, nrm, lab = (_first(z, k) for k in (("points", "xyz", "positions"), ("normals",),
                                                         ("labels", "semantics", "classes")))
                pts, nrm, lab = (None if a is None else np.array(a) for a in (pts, nrm, lab))
        else:
            pts, nrm, lab = _ply_points(path)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot read point cloud ({type(exc).__name__}: {exc})") from exc
    if pts is None or pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise DataError(f"{path}: expected a non-empty (N, 3) array of points, got "
                        f"{None if pts is None else pts.shape}")
    for name, arr, shape in (("normals", nrm, (len(pts), 3)), ("labels", lab, (len(pts),))):
        if arr is not None and arr.shape != shape:
            raise DataError(f"{path}: {name} has shape {arr.shape}, expected {shape}")
    if not np.isfinite(pts).all():
        raise DataError(f"{path}: points contain NaN or infinity")
    return PointData(pts.astype(np.float64), None if nrm is None else nrm.astype(np.float32),
                     None if lab is None else lab.astype(np.int64))


def _ply_points(path: pathlib.Path):
    import trimesh

    cloud = trimesh.load(str(path), process=False)
    pts = np.asarray(getattr(cloud, "vertices", np.zeros((0, 3))))
    raw = getattr(cloud, "metadata", {}).get("_ply_raw", {}).get("vertex", {}).get("data")
    nrm = lab = None
    # binary PLY: a structured array; ASCII PLY: a dict of (N, 1) arrays
    names = tuple(raw) if isinstance(raw, dict) else (getattr(getattr(raw, "dtype", None), "names", None) or ())
    if names:
        if all(n in names for n in ("nx", "ny", "nz")):
            nrm = np.stack([np.asarray(raw[n]).reshape(-1) for n in ("nx", "ny", "nz")], axis=1)
        key = _first({n: n for n in names}, ("label", "class", "semantic", "semantics", "scalar_label"))
        if key is not None:
            lab = np.asarray(raw[key]).reshape(-1)
    return pts, nrm, lab
