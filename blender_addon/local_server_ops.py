"""Blender side of the local server: Start / Stop / Detect operators, the status timer, the drawing of
the preferences section, and Generate waiting for a server it started (main thread only).

The process itself lives in ``local_server`` (plain Python). A ``bpy.app.timers`` tick redraws the
panel and preferences while the state changes and, once the server is ready, starts the generations
that were waiting for it. Tests call ``tick()`` themselves (timers do not fire in background mode).
"""

from __future__ import annotations

import logging
import os
import types

import bpy

from . import local_server, preferences

log = logging.getLogger(__name__)

FAST, SLOW = 0.25, 1.0  # tick intervals while the state changes / while it runs
_PENDING: list[tuple[str, object]] = []  # (scene name, layout triangles or None) waiting for READY
_LAST = {"state": None}


def launch_config(prefs) -> local_server.LaunchConfig:
    return local_server.LaunchConfig(
        python=prefs.local_python, port=prefs.local_port, device=prefs.local_device, gpu=prefs.local_gpu,
        model=bpy.path.abspath(prefs.local_model) if prefs.local_model else "", tiny=prefs.local_tiny)


def search_roots() -> tuple[str, ...]:
    """Folders near which Detect looks for a ``.venv``: the add-on's, the working folder, the .blend's."""
    here = os.path.dirname(os.path.abspath(__file__))
    return tuple(p for p in (here, os.getcwd(), bpy.path.abspath("//") if bpy.data.filepath else "") if p)


def detect_python(prefs) -> tuple[str, list[str]]:
    """Looks for a Python with XCube (see ``local_server.detect_pythons``); sets it when found."""
    found, tried = local_server.find_python(search_roots())
    if found and prefs is not None:
        prefs.local_python = found
    return found, tried


def start_from_preferences(prefs) -> local_server.LocalServer:
    """Starts the server from the preferences (raises ValueError with what to fix) and the timer.
    Without a Python set, it looks for one first."""
    if not prefs.local_python.strip():
        detect_python(prefs)
    server = local_server.start(launch_config(prefs))
    ensure_timer()
    return server


def defer_generation(context, settings, **start_kwargs) -> bool:
    """Generate with "Start on Generate": starts the local server when it is not running and queues
    the generation until it is ready (with ``start_kwargs`` of ``operators._start_generation``: layout,
    edit, run, source). True when the generation was deferred (the caller stops).

    Raises:
        ValueError: the server cannot be started (bad Python path, taken port, ...).
    """
    prefs = preferences.get_preferences(context)
    snap = local_server.snapshot()
    waiting = snap.state in {local_server.STARTING, local_server.LOADING}
    if not waiting and (prefs is None or not prefs.local_autostart or snap.running):
        return False
    if not waiting:
        start_from_preferences(prefs)
        snap = local_server.snapshot()
    _PENDING.append((context.scene.name, start_kwargs))
    settings.status = "CONNECTING"
    settings.message = f"Starting the local server on {snap.address}; the generation starts when it is ready"
    ensure_timer()
    return True


def _run_pending(snap: local_server.Snapshot) -> None:
    from . import operators

    pending = list(_PENDING)
    _PENDING.clear()
    for scene_name, start_kwargs in pending:
        scene = bpy.data.scenes.get(scene_name)
        if scene is None:
            continue
        settings = scene.xcube
        if not snap.running:
            settings.status = "ERROR"
            settings.message = f"The local server did not start: {snap.message}"
            continue
        settings.status = "IDLE"
        ctx = types.SimpleNamespace(scene=scene, preferences=bpy.context.preferences)
        operators._start_generation(_Reporter(), ctx, **start_kwargs)


class _Reporter:
    """Stands in for an operator's ``report`` when a deferred generation starts from the timer."""

    @staticmethod
    def report(kind, message):
        log.warning("xcube: %s", message)


def tick() -> float | None:
    """One timer step: redraw on a state change, start waiting generations; the next interval or None."""
    snap = local_server.snapshot()
    if snap.state != _LAST["state"]:
        _LAST["state"] = snap.state
        from . import handlers

        handlers.redraw()
    if _PENDING and snap.state not in {local_server.STARTING, local_server.LOADING}:
        _run_pending(snap)
    if _PENDING or snap.state in {local_server.STARTING, local_server.LOADING, local_server.STOPPING}:
        return FAST
    return SLOW if snap.running else None


def _timer() -> float | None:
    try:
        return tick()
    except Exception:  # noqa: BLE001 - a timer that raises is unregistered by Blender
        log.exception("xcube: local server tick failed")
        return SLOW


def ensure_timer() -> None:
    if not bpy.app.timers.is_registered(_timer):
        bpy.app.timers.register(_timer, first_interval=FAST, persistent=True)


def unregister() -> None:
    """Stops the server the add-on started (the add-on is disabled or Blender quits)."""
    if bpy.app.timers.is_registered(_timer):
        bpy.app.timers.unregister(_timer)
    _PENDING.clear()
    local_server.shutdown()


_STATE_ICONS = {
    local_server.READY: "CHECKMARK", local_server.BUSY: "SORTTIME", local_server.CRASHED: "ERROR",
    local_server.FAILED: "ERROR", local_server.STARTING: "SORTTIME", local_server.LOADING: "SORTTIME",
}


def draw_status(layout, snap: local_server.Snapshot | None = None, log_lines: int = 0) -> None:
    """The status line (and, with ``log_lines``, the log tail) of the local server."""
    from .panel import _wrap

    snap = snap or local_server.snapshot()
    icon = _STATE_ICONS.get(snap.state, "INFO")
    for i, line in enumerate(_wrap(f"Local server: {snap.label}. {snap.message}", 60)):
        layout.label(text=line, icon=icon if i == 0 else "BLANK1")
    if log_lines and snap.log_tail:
        box = layout.box()
        for line in snap.log_tail[-log_lines:]:
            box.label(text=line[-110:])


def draw_preferences(prefs, layout) -> None:
    box = layout.box()
    box.label(text="Local server", icon="CONSOLE")
    row = box.row(align=True)
    row.prop(prefs, "local_python")
    row.operator("xcube.server_detect_python", text="", icon="VIEWZOOM")
    if not prefs.local_python:
        box.label(text="Set the python of your XCube environment, or press the magnifier to find it", icon="INFO")
    else:
        try:
            local_server.validate_python(prefs.local_python)
        except ValueError as exc:
            box.label(text=str(exc), icon="ERROR")
    row = box.row(align=True)
    row.prop(prefs, "local_device", expand=True)
    if prefs.local_device == "GPU":
        row.prop(prefs, "local_gpu")
    row = box.row(align=True)
    row.prop(prefs, "local_port")
    row.prop(prefs, "local_tiny")
    sub = box.row()
    sub.enabled = not prefs.local_tiny
    sub.prop(prefs, "local_model")
    box.prop(prefs, "local_autostart")
    snap = local_server.snapshot()
    row = box.row(align=True)
    row.operator("xcube.server_start", icon="PLAY")
    row.operator("xcube.server_stop", icon="SNAP_FACE")
    draw_status(box, snap, log_lines=4)


class XCUBE_OT_server_start(bpy.types.Operator):
    """Start the local XCube server (python -m server) with the settings above; Blender keeps working"""

    bl_idname = "xcube.server_start"
    bl_label = "Start"

    @classmethod
    def poll(cls, context):
        return not local_server.snapshot().running

    def execute(self, context):
        prefs = preferences.get_preferences(context)
        if prefs is None:
            self.report({"ERROR"}, "Enable the XCube add-on first")
            return {"CANCELLED"}
        try:
            server = start_from_preferences(prefs)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Starting the local server on {server.address}")
        return {"FINISHED"}


class XCUBE_OT_server_stop(bpy.types.Operator):
    """Stop the local XCube server this Blender started (never any other process)"""

    bl_idname = "xcube.server_stop"
    bl_label = "Stop"

    @classmethod
    def poll(cls, context):
        return local_server.snapshot().running

    def execute(self, context):
        local_server.stop()
        ensure_timer()
        return {"FINISHED"}


class XCUBE_OT_server_detect_python(bpy.types.Operator):
    """Look for a Python environment with XCube installed (active venv/conda, .venv folders, PATH)"""

    bl_idname = "xcube.server_detect_python"
    bl_label = "Detect Python"

    def execute(self, context):
        found, tried = detect_python(preferences.get_preferences(context))
        if found:
            self.report({"INFO"}, f"Using {found}")
            return {"FINISHED"}
        self.report({"ERROR"}, f"No Python with XCube found (tried {', '.join(tried) or 'nothing'}); set the path "
                               "to the python of the environment where XCube is installed")
        return {"CANCELLED"}

