"""Main-thread side of the queue: applies worker events to the scene, the panel and the status bar."""

from __future__ import annotations

import logging

import bpy

from . import history, importers, jobs, preferences
from .jobs import Event

log = logging.getLogger(__name__)


def settings_for_job(job_id: str):
    """The ``Scene.xcube`` settings that started ``job_id`` (None if that scene is gone)."""
    for scene in bpy.data.scenes:
        settings = getattr(scene, "xcube", None)
        if settings is not None and settings.job_id == job_id:
            return scene, settings
    return None, None


def set_status_bar(text: str | None) -> None:
    """Shows ``text`` in every window's status bar (None restores Blender's own)."""
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", ()):
        try:
            window.workspace.status_text_set(text)
        except (AttributeError, RuntimeError, TypeError):
            pass


def redraw() -> None:
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", ()):
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "PREFERENCES"}:
                area.tag_redraw()


def _progress_fraction(settings) -> float:
    total = max(1, settings.total_steps)
    within = min(1.0, settings.step / total)
    if settings.num_levels > 0:
        return min(1.0, (settings.level + within) / settings.num_levels)
    return within


def _on_level(scene, settings, event: Event) -> None:
    data = event.data
    collection = bpy.data.collections.get(settings.collection_name) if settings.collection_name else None
    if collection is None:
        collection = importers.ensure_collection(scene, settings.prompt)
        settings.collection_name = collection.name
    if data.get("replace"):  # an edit: the new level replaces the old one
        from . import ops_extend

        ops_extend.remove_level(collection, data["index"])
    importers.import_level(
        collection, index=data["index"], vdb_path=data["vdb_path"], output=settings.output,
        class_names=data.get("class_names", ()), mesh=data.get("mesh"), shading=settings.shading,
        tags={"prompt": settings.prompt, "seed": settings.seed, "voxel_size": data["voxel_size"],
              "num_voxels": data["num_voxels"], "job": event.job_id, "raw": data.get("raw_path", "")},
    )
    settings.levels_done += 1
    settings.num_levels = data["num_levels"]
    settings.level = data["index"]
    settings.step = settings.total_steps
    settings.progress = (data["index"] + 1) / max(1, data["num_levels"])
    settings.message = (f"Level {data['index'] + 1}/{data['num_levels']} arrived: "
                        f"{data['num_voxels']} voxels of {data['voxel_size']:g} m")


def _on_info(event: Event, ok: bool, text: str) -> None:
    prefs = preferences.get_preferences()
    if prefs is not None:
        prefs.connection_status = text
    log.info("xcube test connection: %s", text.replace("\n", " | "))
    set_status_bar(f"XCube: {text.splitlines()[0]}" if text else None)


def handle(event: Event) -> None:
    """Applies one worker event (main thread only)."""
    if event.data.get("kind") == "info" or event.kind == "info":
        if event.kind == "info":
            _on_info(event, event.data["ok"], event.data["text"])
        elif event.kind == "error":
            _on_info(event, False, f"Connection failed: {event.data['message']}")
        redraw()
        return
    scene, settings = settings_for_job(event.job_id)
    if settings is None:
        log.debug("xcube: event %s for a job no scene owns", event.kind)
        return
    kind, data = event.kind, event.data
    if kind == "status":
        settings.status = data["status"]
        settings.message = data["message"]
    elif kind == "queued":
        settings.status = "QUEUED"
        settings.message = f"Queued on the server: {data['position']} job(s) ahead"
    elif kind == "progress":
        settings.status = "RUNNING"
        settings.level, settings.step, settings.total_steps = data["level"], data["step"], data["total"]
        settings.progress = _progress_fraction(settings)
        levels = f"/{settings.num_levels}" if settings.num_levels else ""
        settings.message = f"Level {data['level'] + 1}{levels}, step {data['step']}/{data['total']}"
    elif kind == "level":
        _on_level(scene, settings, event)
    elif kind == "finished":
        settings.status = "DONE"
        settings.progress = 1.0
        settings.message = f"Done: {data['levels']} level(s) in collection '{settings.collection_name}'"
    elif kind == "error" and not (data["code"] == "CANCELLED" and settings.status == "ERROR"):
        settings.status = "CANCELLED" if data["code"] == "CANCELLED" else "ERROR"
        settings.message = data["message"]
    elif kind == "done" and settings.busy:  # ended without finished/error (cancelled early)
        settings.status = "CANCELLED"
        settings.message = "Cancelled"
    if kind == "level":
        history.on_level(settings, event.job_id, data.get("model_id", ""))
    elif kind in {"finished", "error", "done"} and not settings.busy:
        history.on_end(settings, event.job_id)
    _update_status_bar(settings)
    redraw()


def _update_status_bar(settings) -> None:
    if settings.status in {"ERROR", "CANCELLED"}:
        set_status_bar(f"XCube: {settings.message}")
    elif settings.busy:
        set_status_bar(f"XCube: {settings.message} ({settings.progress * 100:.0f}%)")
    else:
        set_status_bar(None)


@bpy.app.handlers.persistent
def on_load_post(*_args) -> None:
    """A file saved while a job ran reopens without that job: show it as interrupted, not busy."""
    for scene in bpy.data.scenes:
        settings = getattr(scene, "xcube", None)
        if settings is not None and settings.busy and jobs.get(settings.job_id) is None:
            settings.status = "CANCELLED"
            settings.message = ("Interrupted: the file was saved while a generation ran; "
                                "the levels that arrived are kept. Press Generate to start again")


def handle_internal_error(event: Event, exc: Exception) -> None:
    """An event could not be applied (e.g. Blender could not read a volume): stop and say so."""
    message = f"Could not apply '{event.kind}': {exc}. The job was stopped; press Generate to retry."
    jobs.cancel(event.job_id)
    _, settings = settings_for_job(event.job_id)
    if settings is not None:
        settings.status = "ERROR"
        settings.message = message
        _update_status_bar(settings)
    else:
        set_status_bar(f"XCube: {message}")
