"""Extend Scene and Regenerate Region: edits of the active generated scene on the server.

Both send the scene's levels (the raw arrays saved when they arrived) and a box; the server regenerates
the box with everything else held, and the edited levels replace the old ones as they arrive. Extend
Scene puts the box beside the scene (+X/-X/+Y/-Y, three quarters of a model tile wide per tile, which
is how far tiles advance) and lets the scene grow; Regenerate Region takes the box from the selected
object's world bounds.
"""

from __future__ import annotations

import dataclasses
import sys

import bpy
import mathutils
import numpy as np

from . import jobs, net

SIDE_ITEMS = (
    ("+X", "+X", "Add tiles beyond the scene's +X edge"),
    ("-X", "-X", "Add tiles beyond the scene's -X edge"),
    ("+Y", "+Y", "Add tiles beyond the scene's +Y edge"),
    ("-Y", "-Y", "Add tiles beyond the scene's -Y edge"),
)


def scene_collection(context):
    """The generated scene the user means: the active object's, else the last job's collection."""
    obj = context.active_object
    if obj is not None and obj.get("xcube_level") is not None and obj.users_collection:
        return obj.users_collection[0]
    name = context.scene.xcube.collection_name
    return bpy.data.collections.get(name) if name else None


def level_files(collection) -> list[str]:
    """The raw file of each level 0, 1, ... of a scene (its newest objects); raises ValueError when
    a level has none (scenes from before the add-on kept them)."""
    newest: dict[int, str] = {}
    for obj in collection.objects:
        index, raw = obj.get("xcube_level"), obj.get("xcube_raw", "")
        if index is not None and raw:
            newest[int(index)] = raw
    if not newest or sorted(newest) != list(range(len(newest))):
        raise ValueError("this scene has no saved levels to edit; generate it again with this add-on version")
    return [newest[i] for i in range(len(newest))]


def remove_level(collection, index: int) -> None:
    """Deletes the objects of level ``index`` (an edited level replaces them)."""
    for obj in [o for o in collection.objects if o.get("xcube_level") == index]:
        bpy.data.objects.remove(obj, do_unlink=True)


def world_box(obj) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) metres of an object's world-space bounding box."""
    corners = np.array([obj.matrix_world @ mathutils.Vector(c) for c in obj.bound_box])
    lo, hi = corners.min(0), corners.max(0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def extend_box(side: str, tiles: int, level0: np.ndarray, voxel: float, native: tuple[int, int]):
    """The box beside the scene's ``side``: the scene's bounds are its level-0 voxels' (at least one
    tile from 0), as the server computes them."""
    lo = np.minimum(level0[:, :2].min(0), 0) if len(level0) else np.zeros(2, np.int64)
    hi = np.maximum(level0[:, :2].max(0) + 1, lo + np.asarray(native)) if len(level0) else np.asarray(native)
    x0, y0, x1, y1 = (float(v) * voxel for v in (lo[0], lo[1], hi[0], hi[1]))
    width = tiles * (native[0] - native[0] // 4) * voxel
    return {"+X": (x1, y0, x1 + width, y1), "-X": (x0 - width, y0, x0, y1),
            "+Y": (x0, y1, x1, y1 + width), "-Y": (x0, y0 - width, x1, y0)}[side]


def run_edit(config: jobs.JobConfig, job: jobs.Job):
    """Worker: load the scene's levels, send the edit, write each edited level as it arrives."""
    client = net.make_client(config)
    job.on_cancel(client.cancel)
    try:
        yield jobs.Event(job.id, "status", {"status": "CONNECTING", "message": f"Connecting to {config.address}"})
        info = client.info()
        scene = sys.modules["xcube_client.scene"]
        levels = []
        for path in config.edit.levels:
            with np.load(path) as raw:
                levels.append(scene.SceneLevel(raw["ijk"], raw["normals"], float(raw["voxel_size"]),
                                               raw["semantics"] if "semantics" in raw else None))
        request = config.edit
        box = request.box
        if request.side:
            box = extend_box(request.side, request.tiles, np.asarray(levels[0].ijk), levels[0].voxel_size,
                             tuple(info.coarse_shape[:2]))
        edit = scene.EditRegion(levels, box, grow=bool(request.side))
        outputs = net.output_names(config, info)
        config = dataclasses.replace(config, edit=edit)
        for level in net._generate(client, config, job, outputs):
            yield net.level_event(config, job, level, replace=True)
        yield jobs.Event(job.id, "finished", {"levels": job.state["levels"]})
    finally:
        client.close()


@dataclasses.dataclass(frozen=True)
class EditRequest:
    """What the main thread hands the worker: the levels' raw files, and a box in metres (Regenerate
    Region) or a side and a tile count (Extend Scene; the box is made on the worker, which knows the
    server's tile size)."""

    levels: tuple[str, ...]
    box: tuple[float, float, float, float] | None = None
    side: str = ""
    tiles: int = 1


def _start_edit(op, context, request: EditRequest, collection) -> set[str]:
    from . import operators

    result = operators._start_generation(op, context, edit=request, run=run_edit)
    if result == {"FINISHED"}:
        context.scene.xcube.collection_name = collection.name
    return result


class XCUBE_OT_extend_scene(bpy.types.Operator):
    """Add tiles along an edge of the active generated scene; the grown levels stream in as they finish"""

    bl_idname = "xcube.extend_scene"
    bl_label = "Extend Scene"
    bl_options = {"REGISTER"}

    side: bpy.props.EnumProperty(name="Side", items=SIDE_ITEMS, default="+X")
    tiles: bpy.props.IntProperty(name="Tiles", description="How many tile widths to add", default=1, min=1, max=8)

    @classmethod
    def poll(cls, context):
        return context.scene is not None and not context.scene.xcube.busy

    def execute(self, context):
        collection = scene_collection(context)
        try:
            if collection is None:
                raise ValueError("select an object of a generated scene (or generate one) first")
            files = tuple(level_files(collection))
        except ValueError as exc:
            return _refuse(self, context, str(exc))
        return _start_edit(self, context, EditRequest(files, side=self.side, tiles=self.tiles), collection)


class XCUBE_OT_regenerate_region(bpy.types.Operator):
    """Regenerate the part of the active generated scene under the selected box or mesh (new prompt/seed);
    everything outside it stays exactly as it is"""

    bl_idname = "xcube.regenerate_region"
    bl_label = "Regenerate Region"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return context.scene is not None and not context.scene.xcube.busy

    def execute(self, context):
        boxes = [o for o in context.selected_objects if o.get("xcube_level") is None and o.type == "MESH"]
        try:
            if not boxes:
                raise ValueError("select a box or mesh object over the part of the scene to regenerate")
            collection = scene_collection(context)
            if collection is None:
                name = context.scene.xcube.collection_name
                raise ValueError(f"no generated scene found{f' ({name})' if name else ''}; generate one first")
            files = tuple(level_files(collection))
        except ValueError as exc:
            return _refuse(self, context, str(exc))
        return _start_edit(self, context, EditRequest(files, world_box(boxes[0])), collection)


def _refuse(op, context, message: str) -> set[str]:
    settings = context.scene.xcube
    settings.status = "ERROR"
    settings.message = message[:1].upper() + message[1:]
    op.report({"ERROR"}, settings.message)
    return {"CANCELLED"}
