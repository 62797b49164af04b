"""Layouts from real assets: any mesh as the coarsest level of a scene (layout-to-scene).

A layout is triangles (metres, +Z up) with optional per-face classes. They are voxelised to the
model's coarsest grid by the one exact voxeliser of the data layer (`voxelize_triangles`), so the
CLI, the API and the server (which receives triangles on the wire) produce the same grid:

* ``fit=False`` (metric): world coordinates are kept; the layout must lie in ``[0, grid * voxel)``
  metres, the box the model generates (errors say by how much it does not);
* ``fit=True``: the layout is scaled uniformly and moved so that it fills the box.

Classes come from part and material names (`xcube_core.data.assets.class_of_part`) when read from a
file. Where the model knows a ``ground`` class and the layout has no ground, a ground layer is added
at the bottom of every column that has nothing there. Vertices are rounded to float32 first, as they
travel on the wire.
"""

from __future__ import annotations

import pathlib
from typing import Sequence

import numpy as np
import torch

from xcube_core.errors import InvalidInputError
from xcube_core.level import Level

LAYOUT_MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".stl", ".off")
MAX_LAYOUT_FACES = 5_000_000


def check_triangles(vertices, faces, face_class=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate an indexed triangle mesh; returns float32 vertices, int64 faces, int64 classes or None."""
    v = np.asarray(vertices)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3 or not np.issubdtype(v.dtype, np.number):
        raise InvalidInputError(f"layout vertices must be numbers of shape (V, 3), got {v.dtype} {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer):
        raise InvalidInputError(f"layout faces must be integers of shape (F, 3), got {f.dtype} {f.shape}")
    if len(f) == 0:
        raise InvalidInputError("the layout mesh has no faces; select or export a mesh with polygons")
    if len(f) > MAX_LAYOUT_FACES:
        raise InvalidInputError(f"the layout mesh has {len(f)} faces; the limit is {MAX_LAYOUT_FACES} (decimate it)")
    v = v.astype(np.float32)
    bad = int((~np.isfinite(v).all(axis=1)).sum())
    if bad:
        raise InvalidInputError(f"the layout mesh has {bad} vertices that are not finite numbers (NaN or inf); "
                                "clean the mesh (e.g. Blender's Merge by Distance / Delete Loose)")
    if f.min() < 0 or f.max() >= len(v):
        raise InvalidInputError(f"layout face indices must be in 0..{len(v) - 1}, got {int(f.min())}..{int(f.max())}")
    cls = None
    if face_class is not None:
        cls = np.asarray(face_class).astype(np.int64).reshape(-1)
        if cls.shape != (len(f),):
            raise InvalidInputError(f"layout face classes need one id per face ({len(f)}), got {cls.shape[0]}")
    return v, f.astype(np.int64), cls


def _to_voxels(tris: np.ndarray, shape: Sequence[int], voxel_size: float, fit: bool) -> np.ndarray:
    box = np.asarray(shape, dtype=np.float64) * voxel_size
    lo, hi = tris.reshape(-1, 3).min(0).astype(np.float64), tris.reshape(-1, 3).max(0).astype(np.float64)
    if fit:
        size = np.maximum(hi - lo, 1e-9)
        scale = float(np.min(box / size)) * (1 - 1e-6)
        return (tris.astype(np.float64) - lo) * scale / voxel_size
    if (lo < 0).any() or (hi > box).any():
        raise InvalidInputError(
            f"the layout spans {np.round(lo, 2).tolist()}..{np.round(hi, 2).tolist()} m but the model makes "
            f"[0, 0, 0]..{box.tolist()} m: move it inside that box, or use --fit to scale it in")
    return tris.astype(np.float64) / voxel_size


def layout_from_triangles(vertices, faces, face_class, coarse_shape: Sequence[int], voxel_size: float,
                          class_names: Sequence[str], *, fit: bool = False, ground: bool = True) -> Level:
    """Voxelise a layout mesh onto the coarsest grid. Returns a level-0 `Level`.

    Args:
        vertices: Shape: (V, 3), metres, +Z up.
        faces: Shape: (F, 3), int, F >= 1.
        face_class: Shape: (F,), class ids (-1 = unknown) or None.
        coarse_shape, voxel_size: the model's level-0 grid.
        fit: scale the layout uniformly into the box instead of keeping metres.
        ground: add ground under columns with nothing at the bottom when the layout has none.
    """
    from xcube_core.data.voxelize import voxelize_triangles

    v, f, cls = check_triangles(vertices, faces, face_class)
    if cls is not None and (cls.max() >= len(class_names) or cls.min() < -1):
        raise InvalidInputError(f"layout face classes must be in -1..{len(class_names) - 1}")
    tris = _to_voxels(v[f], coarse_shape, voxel_size, fit)
    ijk, normals, sem = voxelize_triangles(tris, coarse_shape, cls)
    if len(ijk) == 0:
        raise InvalidInputError("the layout mesh has no triangle area inside the grid (degenerate faces?)")
    if ground and "ground" in class_names:
        ijk, normals, sem = _add_ground(ijk, normals, sem, coarse_shape, list(class_names).index("ground"))
    return Level(index=0, ijk=ijk.to(torch.int32), voxel_size=float(voxel_size), normals=_unit(normals),
                 semantics=sem, class_names=tuple(class_names), metadata={"source": "layout", "fit": bool(fit)})


def _unit(normals: torch.Tensor) -> torch.Tensor:
    """Voxels where opposite faces cancel get an up normal."""
    zero = normals.norm(dim=1) < 1e-6
    out = normals.clone()
    out[zero] = torch.tensor([0.0, 0.0, 1.0])
    return out


def _add_ground(ijk, normals, sem, shape, ground_id: int):
    if sem is not None and bool((sem == ground_id).any()):
        return ijk, normals, sem
    taken = torch.zeros(shape[0], shape[1], dtype=torch.bool)
    bottom = ijk[:, 2] == 0
    taken[ijk[bottom, 0].long(), ijk[bottom, 1].long()] = True
    xs, ys = torch.nonzero(~taken, as_tuple=True)
    add = torch.stack([xs, ys, torch.zeros_like(xs)], 1).to(ijk.dtype)
    sem = torch.full((len(ijk),), -1, dtype=torch.int64) if sem is None else sem
    return (torch.cat([ijk, add]), torch.cat([normals, torch.tensor([[0.0, 0.0, 1.0]]).expand(len(add), 3)]),
            torch.cat([sem, torch.full((len(add),), ground_id, dtype=torch.int64)]))


def load_layout(path, coarse_shape: Sequence[int], voxel_size: float, class_names: Sequence[str], *,
                fit: bool = False, ground: bool = True, up_axis: str | None = None) -> Level:
    """A layout file as a level-0 `Level`: a mesh (.obj .ply .glb .gltf .stl .off) voxelised as in
    `layout_from_triangles`, or a .vdb already at the coarsest resolution."""
    from xcube_core.pipeline import check_condition

    path = pathlib.Path(path)
    if not path.is_file():
        raise InvalidInputError(f"layout {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".vdb":
        from xcube_core.io.vdb import read_level

        level = read_level(path)
        check_condition(level, tuple(coarse_shape), voxel_size)
        return level
    if suffix not in LAYOUT_MESH_SUFFIXES:
        raise InvalidInputError(f"layout {path.name}: use a mesh ({' '.join(LAYOUT_MESH_SUFFIXES)}) or a .vdb")
    from xcube_core.data.assets import load_mesh

    mesh = load_mesh(path, up_axis=up_axis)
    try:
        level = layout_from_triangles(mesh.vertices, mesh.faces, mesh.face_class, coarse_shape, voxel_size,
                                      class_names, fit=fit, ground=ground)
    except InvalidInputError as exc:
        raise InvalidInputError(f"layout {path.name}: {exc}") from exc
    level.metadata["parts"] = mesh.part_names[:64]
    return level
