"""The history of generations, stored in the .blend: ``Scene.xcube.history``.

Every generation adds one entry when it starts (prompt, seed, steps, guidance, levels, server,
source) and completes it as levels arrive (the collection, the model id) and when it ends (status,
duration). The collection is a pointer to the ID, so renaming it keeps the link and deleting it leaves
an entry that says so instead of breaking the list. Operators on an entry: select its collection,
re-run it, vary its seed (+1), or copy its settings back into the panel.
"""

from __future__ import annotations

import time

import bpy

SOURCE_ITEMS = (
    ("PROMPT", "Prompt", "Generated from the prompt"),
    ("LAYOUT", "Layout", "Refine Selection: generated from blocked-out meshes"),
    ("EDIT", "Edit", "An edit of an existing scene (extend, regenerate a region)"),
)
_STATUS_ICONS = {"DONE": "CHECKMARK", "ERROR": "ERROR", "CANCELLED": "CANCEL", "RUNNING": "SORTTIME"}
MAX_ENTRIES = 200
_STARTED: dict[str, float] = {}  # job id -> time.monotonic() at start (durations; not saved)


class XCUBE_PG_history_item(bpy.types.PropertyGroup):
    # `name` (inherited) holds the prompt, so the list filters by it.
    seed: bpy.props.IntProperty(name="Seed", min=0)
    steps: bpy.props.IntProperty(name="Steps", min=0)
    guidance: bpy.props.FloatProperty(name="Guidance", min=0.0)
    levels: bpy.props.IntProperty(name="Levels", min=0, description="Levels asked for (0 = all)")
    levels_done: bpy.props.IntProperty(name="Levels Received", min=0)
    output: bpy.props.StringProperty(name="Output", default="VOLUME")
    model_id: bpy.props.StringProperty(name="Model")
    server: bpy.props.StringProperty(name="Server")
    duration: bpy.props.FloatProperty(name="Duration", unit="TIME_ABSOLUTE", min=0.0)
    created: bpy.props.StringProperty(name="Created", description="Local time the generation started")
    source: bpy.props.EnumProperty(name="Source", items=SOURCE_ITEMS, default="PROMPT")
    status: bpy.props.StringProperty(name="Status", default="RUNNING")
    job_id: bpy.props.StringProperty(name="Job")
    collection: bpy.props.PointerProperty(name="Collection", type=bpy.types.Collection)
    collection_name: bpy.props.StringProperty(name="Collection Name", description="Its name when it was made")


def begin(settings, config, source: str = "PROMPT") -> None:
    """Adds the entry of a generation that just started (``config``: the job's ``JobConfig``)."""
    item = settings.history.add()
    item.name = config.prompt
    item.seed, item.steps, item.levels = config.seed, config.steps, config.levels
    item.guidance = config.guidance if config.guidance is not None else 0.0
    item.output = settings.output
    item.server = config.address
    item.source = source
    item.job_id = settings.job_id
    item.created = time.strftime("%Y-%m-%d %H:%M")
    _STARTED[settings.job_id] = time.monotonic()
    while len(settings.history) > MAX_ENTRIES:
        settings.history.remove(0)
    settings.history_index = len(settings.history) - 1


def _entry(settings, job_id: str):
    for item in reversed(settings.history):
        if item.job_id == job_id:
            return item
    return None


def on_level(settings, job_id: str, model_id: str = "") -> None:
    """A level arrived: link the collection, count it (main thread, from the queue drain)."""
    item = _entry(settings, job_id)
    if item is None:
        return
    collection = bpy.data.collections.get(settings.collection_name)
    if collection is not None and item.collection is None:
        item.collection = collection
        item.collection_name = collection.name
    item.levels_done = settings.levels_done
    if model_id:
        item.model_id = model_id
    _update_duration(item, job_id)


def on_end(settings, job_id: str) -> None:
    """The job ended (finished, failed or cancelled): keep its final status and duration."""
    item = _entry(settings, job_id)
    if item is None or item.status != "RUNNING":
        return
    item.status = settings.status if settings.status in {"DONE", "ERROR", "CANCELLED"} else "CANCELLED"
    item.levels_done = settings.levels_done
    _update_duration(item, job_id)
    _STARTED.pop(job_id, None)


def _update_duration(item, job_id: str) -> None:
    started = _STARTED.get(job_id)
    if started is not None:
        item.duration = time.monotonic() - started


@bpy.app.handlers.persistent
def on_load_post(*_args) -> None:
    """Entries of generations that were running when the file was saved end as interrupted."""
    for scene in bpy.data.scenes:
        settings = getattr(scene, "xcube", None)
        for item in settings.history if settings is not None else ():
            if item.status == "RUNNING" and item.job_id not in _STARTED:
                item.status = "CANCELLED"


def copy_to_settings(item, settings, seed_offset: int = 0) -> None:
    settings.prompt = item.name
    settings.seed = item.seed + seed_offset
    settings.steps, settings.guidance, settings.levels = item.steps, item.guidance, item.levels
    if item.output in {"VOLUME", "MESH", "BOTH"}:
        settings.output = item.output


def describe(item) -> str:
    """One line: seed, steps, levels, model, duration, collection."""
    coll = item.collection.name if item.collection is not None else f"{item.collection_name or '-'} (deleted)"
    if not item.collection_name:
        coll = "no collection"
    steps = item.steps or "default"
    return (f"seed {item.seed} · {steps} steps · guidance {item.guidance:g} · {item.levels_done} level(s) · "
            f"{item.model_id or 'model ?'} · {item.duration:.1f} s · {coll}")


class XCUBE_UL_history(bpy.types.UIList):
    bl_idname = "XCUBE_UL_history"

    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0, flt_flag=0):
        row = layout.row(align=True)
        row.label(text=item.name, icon=_STATUS_ICONS.get(item.status, "INFO"))
        row.label(text=f"#{item.seed}")
        if item.collection is None and item.collection_name:
            row.label(text="", icon="GHOST_DISABLED")


def _active(context):
    settings = context.scene.xcube
    if 0 <= settings.history_index < len(settings.history):
        return settings, settings.history[settings.history_index]
    return settings, None


class _HistoryOperator:
    @classmethod
    def poll(cls, context):
        return context.scene is not None and _active(context)[1] is not None


class XCUBE_OT_history_select(_HistoryOperator, bpy.types.Operator):
    """Select the objects of this generation's collection and make it the active collection"""

    bl_idname = "xcube.history_select"
    bl_label = "Select Collection"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        _, item = _active(context)
        collection = item.collection
        if collection is None:
            self.report({"WARNING"}, f"The collection '{item.collection_name}' was deleted; re-run to make it again")
            return {"CANCELLED"}
        for obj in context.view_layer.objects:
            obj.select_set(False)
        visible = [o for o in collection.all_objects if o.visible_get()]
        for obj in visible:
            obj.select_set(True)
        if visible:
            context.view_layer.objects.active = visible[-1]
        layer = _find_layer_collection(context.view_layer.layer_collection, collection)
        if layer is not None:
            context.view_layer.active_layer_collection = layer
        return {"FINISHED"}


def _find_layer_collection(layer, collection):
    if layer.collection == collection:
        return layer
    for child in layer.children:
        found = _find_layer_collection(child, collection)
        if found is not None:
            return found
    return None


class XCUBE_OT_history_copy(_HistoryOperator, bpy.types.Operator):
    """Copy this generation's prompt, seed, steps, guidance, levels and output back into the panel"""

    bl_idname = "xcube.history_copy"
    bl_label = "Copy to Panel"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        settings, item = _active(context)
        copy_to_settings(item, settings)
        return {"FINISHED"}


class XCUBE_OT_history_rerun(_HistoryOperator, bpy.types.Operator):
    """Generate again with this entry's settings (Vary Seed: the same prompt with the seed + 1)"""

    bl_idname = "xcube.history_rerun"
    bl_label = "Re-run"
    bl_options = {"REGISTER"}

    seed_offset: bpy.props.IntProperty(name="Seed Offset", default=0, min=0)

    @classmethod
    def poll(cls, context):
        return super().poll(context) and not context.scene.xcube.busy

    def execute(self, context):
        from . import operators

        settings, item = _active(context)
        if item.source == "LAYOUT":
            self.report({"WARNING"}, "A layout generation is re-run from its meshes: the settings were copied to "
                                     "the panel; select the meshes and press Refine Selection")
            copy_to_settings(item, settings, self.seed_offset)
            return {"CANCELLED"}
        copy_to_settings(item, settings, self.seed_offset)
        return operators._start_generation(self, context)


def draw(layout, context) -> None:
    """The history box of the main panel."""
    settings = context.scene.xcube
    box = layout.box()
    box.label(text=f"History ({len(settings.history)})", icon="TIME")
    if not len(settings.history):
        box.label(text="Generations appear here, saved with the file")
        return
    box.template_list("XCUBE_UL_history", "", settings, "history", settings, "history_index", rows=3)
    _, item = _active(context)
    if item is None:
        return
    from .panel import _wrap

    for line in _wrap(describe(item), 48):
        box.label(text=line)
    row = box.row(align=True)
    row.operator("xcube.history_select", text="Select", icon="RESTRICT_SELECT_OFF")
    row.operator("xcube.history_copy", text="Copy", icon="COPYDOWN")
    row = box.row(align=True)
    row.operator("xcube.history_rerun", text="Re-run", icon="FILE_REFRESH").seed_offset = 0
    row.operator("xcube.history_rerun", text="Vary Seed", icon="SHADERFX").seed_offset = 1

