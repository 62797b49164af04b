"""Requests beyond one tile: layout meshes, region edits and scene extents (see proto `LayoutMesh`,
`EditRegion`, `GenerateRequest.extent_m`).

``check_*`` run at request time in the style of `server.validation`: every size is refused by
arithmetic on the declared shapes before any bytes are decoded, and each failure names its field.
``run_pipeline`` runs on the worker: it picks the pipeline call a validated request asks for.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from server.validation import RequestFieldError, decode_array
from xcube_client._proto import xcube_pb2 as pb


@dataclasses.dataclass(frozen=True)
class LayoutArrays:
    vertices: np.ndarray
    faces: np.ndarray
    face_classes: np.ndarray | None
    fit: bool
    ground: bool


@dataclasses.dataclass
class EditParams:
    levels: list
    box_m: tuple[float, float, float, float]
    halo: int | None
    grow: bool = False


def _rows(arr: pb.RawArray, field: str, limit: int, what: str) -> int:
    """The declared row count of an array, refused above ``limit`` before decoding."""
    if not arr.shape:
        raise RequestFieldError(f"{field}.shape", "is required")
    n = int(arr.shape[0])
    if not 1 <= n <= limit:
        raise RequestFieldError(field, f"must hold 1..{limit} {what}, got {n}")
    return n


def check_layout_mesh(msg: pb.LayoutMesh, limits, model) -> LayoutArrays:
    if not (msg.HasField("vertices") and msg.HasField("faces")):
        raise RequestFieldError("layout_mesh", "needs vertices and faces")
    n_v = _rows(msg.vertices, "layout_mesh.vertices", 3 * limits.max_layout_faces, "vertices")
    n_f = _rows(msg.faces, "layout_mesh.faces", limits.max_layout_faces, "faces (send a mesh with polygons)")
    verts = decode_array(msg.vertices, "layout_mesh.vertices", {"float32": "<f4"}, (n_v, 3))
    faces = decode_array(msg.faces, "layout_mesh.faces", {"int32": "<i4"}, (n_f, 3))
    bad = int((~np.isfinite(verts).all(axis=1)).sum())
    if bad:
        raise RequestFieldError("layout_mesh.vertices", f"{bad} vertices are not finite numbers (NaN or inf)")
    if faces.min() < 0 or faces.max() >= n_v:
        raise RequestFieldError("layout_mesh.faces", f"indices must be in 0..{n_v - 1}")
    classes = None
    if msg.HasField("face_classes"):
        classes = decode_array(msg.face_classes, "layout_mesh.face_classes", {"int32": "<i4"}, (n_f,))
        if ((classes < -1) | (classes >= len(model.class_names))).any():
            raise RequestFieldError("layout_mesh.face_classes", f"class ids must be in -1..{len(model.class_names) - 1}")
    if classes is None and msg.HasField("face_parts"):
        classes = _classes_of_parts(msg, n_f, model)
    return LayoutArrays(verts, faces, classes, bool(msg.fit), not msg.no_ground)


def _classes_of_parts(msg: pb.LayoutMesh, n_faces: int, model) -> np.ndarray:
    """Face classes from part names (the data layer's `class_of_part`), in the model's class ids."""
    from xcube_core.classes import CLASS_NAMES
    from xcube_core.data.assets import class_of_part

    names = list(msg.part_names)
    if not 1 <= len(names) <= 4096 or any(len(n) > 256 for n in names):
        raise RequestFieldError("layout_mesh.part_names", "must hold 1..4096 names of at most 256 characters")
    parts = decode_array(msg.face_parts, "layout_mesh.face_parts", {"int32": "<i4"}, (n_faces,))
    if parts.min() < 0 or parts.max() >= len(names):
        raise RequestFieldError("layout_mesh.face_parts", f"indices must be in 0..{len(names) - 1}")
    ids = []
    for name in names:
        c = class_of_part(name)
        ids.append(model.class_names.index(CLASS_NAMES[c]) if c >= 0 and CLASS_NAMES[c] in model.class_names else -1)
    return np.asarray(ids, dtype=np.int64)[parts]


def check_edit(msg: pb.EditRegion, limits, model) -> EditParams:
    import torch

    from xcube_core.level import Level

    if not 1 <= len(msg.levels) <= model.num_levels:
        raise RequestFieldError("edit.levels", f"must hold 1..{model.num_levels} levels, got {len(msg.levels)}")
    declared = [int(lv.ijk.shape[0]) if lv.ijk.shape else 0 for lv in msg.levels]
    if sum(declared) > limits.max_scene_voxels:
        raise RequestFieldError("edit.levels", f"hold {sum(declared)} voxels; the limit is {limits.max_scene_voxels} "
                                               "(send only the part of the scene around the box)")
    levels = []
    for i, (lv, n) in enumerate(zip(msg.levels, declared)):
        field = f"edit.levels[{i}]"
        want = model.voxel_sizes[i]
        if not (math.isfinite(lv.voxel_size) and math.isclose(lv.voxel_size, want, rel_tol=1e-5)):
            raise RequestFieldError(f"{field}.voxel_size", f"must be {want} m (ServerInfo.voxel_sizes[{i}])")
        ijk = decode_array(lv.ijk, f"{field}.ijk", {"int32": "<i4"}, (n, 3))
        normals = decode_array(lv.normals, f"{field}.normals", {"float32": "<f4"}, (n, 3))
        sem = None
        if lv.HasField("semantics"):
            sem = decode_array(lv.semantics, f"{field}.semantics", {"int32": "<i4"}, (n,))
            if ((sem < -1) | (sem >= len(model.class_names))).any():
                raise RequestFieldError(f"{field}.semantics", f"class ids must be in -1..{len(model.class_names) - 1}")
            sem = torch.from_numpy(sem.astype(np.int64))
        if n and np.unique(ijk, axis=0).shape[0] != n:
            raise RequestFieldError(f"{field}.ijk", "contains duplicate voxels")
        levels.append(Level(index=i, ijk=torch.from_numpy(ijk.copy()), voxel_size=float(want),
                            normals=torch.from_numpy(normals.copy()), semantics=sem, class_names=model.class_names))
    box = (msg.x0, msg.y0, msg.x1, msg.y1)
    if not all(math.isfinite(v) for v in box) or not (msg.x1 > msg.x0 and msg.y1 > msg.y0):
        raise RequestFieldError("edit.x0", f"the box must be finite with x1 > x0 and y1 > y0, got {list(box)}")
    if len(msg.scene_extent_m):
        ext = list(msg.scene_extent_m)
        if len(ext) != 2 or not all(math.isfinite(v) and 0 < v <= limits.max_extent_m for v in ext):
            raise RequestFieldError("edit.scene_extent_m", f"must be (X, Y) in (0, {limits.max_extent_m}] m")
        cols = [math.ceil(v / model.voxel_sizes[0] - 1e-9) for v in ext]
        levels[0].metadata["extent_columns"] = cols
    return EditParams(levels, box, int(msg.halo) or None, bool(msg.grow))


def check_extent(values, limits) -> tuple[float, float] | None:
    values = list(values)
    if not values:
        return None
    if len(values) != 2 or not all(math.isfinite(v) and 0 < v <= limits.max_extent_m for v in values):
        raise RequestFieldError("extent_m", f"must be two numbers (X, Y) in (0, {limits.max_extent_m:g}] metres, "
                                            f"got {values}")
    return values[0], values[1]


def check_scene_request(req: pb.GenerateRequest, limits, model) -> dict:
    """The new request fields, checked; returns JobParams keyword arguments."""
    out = {"layout": None, "edit": None, "extent": check_extent(req.extent_m, limits),
           "resample": int(req.resample) or 1}
    if not 1 <= out["resample"] <= 20:
        raise RequestFieldError("resample", f"must be in 1..20 (or 0 for 1), got {req.resample}")
    chosen = [name for name, on in (("condition", req.HasField("condition")), ("layout_mesh", req.HasField("layout_mesh")),
                                    ("edit", req.HasField("edit")), ("extent_m", out["extent"] is not None)) if on]
    if len(chosen) > 1:
        raise RequestFieldError(chosen[1], f"cannot be combined with {chosen[0]}; send one of them")
    if req.HasField("layout_mesh"):
        out["layout"] = check_layout_mesh(req.layout_mesh, limits, model)
    if req.HasField("edit"):
        out["edit"] = check_edit(req.edit, limits, model)
    return out


def run_pipeline(pipeline, p, callback, cancel):
    """The level iterator a validated request asks for (plain, layout mesh, edit or extent)."""
    common = dict(seed=p.seed, steps=p.steps, guidance=p.guidance, class_prior=p.class_prior, callback=callback,
                  cancel=cancel)
    if p.edit is not None:
        from xcube_core.inpaint import edit_region

        return edit_region(pipeline, p.edit.levels, p.edit.box_m, p.prompt, resample=p.resample,
                           halo=p.edit.halo, grow=p.edit.grow, **common)
    if p.extent is not None:
        from xcube_core.tiling import generate_extent

        return generate_extent(pipeline, p.prompt, p.extent, num_levels=p.num_levels, resample=p.resample, **common)
    condition = p.condition
    if p.layout is not None:
        from xcube_core.layout import layout_from_triangles

        lay = p.layout
        condition = layout_from_triangles(lay.vertices, lay.faces, lay.face_classes, pipeline.coarse_shape,
                                          pipeline.voxel_sizes[0], pipeline.class_names, fit=lay.fit,
                                          ground=lay.ground)
    return pipeline.generate(p.prompt, num_levels=p.num_levels, condition=condition, **common)
