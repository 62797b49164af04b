"""Operators: Generate Scene, Refine Selection, Cancel, randomise the seed, test the connection.

Operators run on the main thread and return at once: they copy settings into a frozen
``JobConfig``, start a worker, and let the queue drain bring the results in.
"""

from __future__ import annotations

import math
import random

import bpy

from . import history, importers, jobs, local_server, local_server_ops, net, preferences


def _connection_config(context, kind: str, **extra) -> jobs.JobConfig:
    """Reads the preferences; raises ValueError (with a hint) for a bad address. While the local server
    this Blender started runs, its address and token are used instead of the preferences'."""
    prefs = preferences.get_preferences(context)
    local = local_server.connection()
    if local is not None:
        address, token = local
    else:
        address = preferences.parse_address(prefs.address if prefs else preferences.DEFAULT_ADDRESS)
        token = prefs.token if prefs else ""
    return jobs.JobConfig(
        kind=kind, address=address,
        token=token,
        connect_timeout=prefs.connect_timeout if prefs else 5.0,
        request_timeout=prefs.request_timeout if prefs else 0.0,
        **extra,
    )


def _start_generation(op, context, layout=None, edit=None, run=None, source: str | None = None) -> set[str]:
    """Starts a job (``run``, default a generation) from the panel's settings; ``layout`` is a
    ``layout.LayoutArrays`` (Refine Selection), ``edit`` an ``ops_extend.EditRequest``; ``source`` is
    what the history records (default: EDIT, LAYOUT or PROMPT from the arguments)."""
    settings = context.scene.xcube
    if settings.busy:
        op.report({"WARNING"}, "A generation is already running; press Cancel first")
        return {"CANCELLED"}
    prompt = settings.prompt.strip()
    if not prompt:
        _fail(settings, "The prompt is empty: describe the scene you want, then press Generate")
        op.report({"ERROR"}, settings.message)
        return {"CANCELLED"}
    prefs = preferences.get_preferences(context)
    try:
        if local_server_ops.defer_generation(context, settings, layout=layout, edit=edit, run=run, source=source):
            return {"FINISHED"}  # starts when the local server is ready
        out_dir = importers.output_directory(prefs.output_dir if prefs else "")
        config = _connection_config(
            context, "generate", scene_name=context.scene.name, prompt=prompt, seed=settings.seed,
            levels=settings.levels, steps=settings.steps, guidance=settings.guidance,
            want_mesh=settings.output in {"MESH", "BOTH"}, out_dir=out_dir,
            layout=layout, edit=edit,
            class_prior=math.inf if layout is not None and settings.keep_layout_classes else None,
        )
    except (ValueError, OSError) as exc:
        _fail(settings, f"{exc}. Open Edit > Preferences > Add-ons > XCube to fix it")
        op.report({"ERROR"}, settings.message)
        return {"CANCELLED"}
    job = jobs.Job(config, run or net.run_generate, net.describe_error)
    settings.job_id = job.id
    settings.collection_name = ""
    settings.status = "CONNECTING"
    settings.message = f"Connecting to {config.address}"
    settings.level = settings.step = settings.total_steps = settings.levels_done = 0
    settings.num_levels = settings.levels
    settings.progress = 0.0
    history.begin(settings, config, source or ("EDIT" if edit is not None else "LAYOUT" if layout is not None else "PROMPT"))
    jobs.start(job)
    return {"FINISHED"}


def _fail(settings, message: str) -> None:
    settings.status = "ERROR"
    settings.message = message


class XCUBE_OT_generate(bpy.types.Operator):
    """Generate a 3D scene from the prompt on the XCube server; levels appear as they arrive"""

    bl_idname = "xcube.generate"
    bl_label = "Generate Scene"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return context.scene is not None and not context.scene.xcube.busy

    def execute(self, context):
        return _start_generation(self, context)


class XCUBE_OT_refine_selection(bpy.types.Operator):
    """Send the selected meshes as a layout (the server voxelises them at the coarsest level; part and
    material names give classes) and generate a detailed scene that follows them"""

    bl_idname = "xcube.refine_selection"
    bl_label = "Refine Selection"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return context.scene is not None and not context.scene.xcube.busy

    def execute(self, context):
        from . import layout

        meshes = [o for o in context.selected_objects if o.type == "MESH"]
        if not meshes:
            _fail(context.scene.xcube, "Select one or more mesh objects (the blocked-out layout) first")
            self.report({"ERROR"}, context.scene.xcube.message)
            return {"CANCELLED"}
        arrays = layout.mesh_layout(meshes, context.evaluated_depsgraph_get())
        if arrays.num_faces == 0:
            _fail(context.scene.xcube, "The selected meshes have no faces; add faces or select other meshes")
            self.report({"ERROR"}, context.scene.xcube.message)
            return {"CANCELLED"}
        return _start_generation(self, context, layout=arrays)


class XCUBE_OT_cancel(bpy.types.Operator):
    """Stop the running generation here and on the server; the levels that arrived are kept"""

    bl_idname = "xcube.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return context.scene is not None and context.scene.xcube.busy

    def execute(self, context):
        settings = context.scene.xcube
        if not jobs.cancel(settings.job_id):
            settings.status = "CANCELLED"  # the worker is already gone (e.g. after reopening a file)
        settings.message = "Cancelling..."
        return {"FINISHED"}


class XCUBE_OT_randomize_seed(bpy.types.Operator):
    """Pick a new random seed"""

    bl_idname = "xcube.randomize_seed"
    bl_label = "Randomise Seed"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        context.scene.xcube.seed = random.randrange(0, 2**31 - 1)
        return {"FINISHED"}


class XCUBE_OT_test_connection(bpy.types.Operator):
    """Ask the server for its health and info (model, device, levels, queue)"""

    bl_idname = "xcube.test_connection"
    bl_label = "Test Connection"

    def execute(self, context):
        prefs = preferences.get_preferences(context)
        try:
            config = _connection_config(context, "info")
        except ValueError as exc:
            if prefs is not None:
                prefs.connection_status = f"Invalid address: {exc}"
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if prefs is not None:
            prefs.connection_status = f"Testing {config.address}..."
        jobs.start(jobs.Job(config, net.run_info, net.describe_error))
        return {"FINISHED"}
