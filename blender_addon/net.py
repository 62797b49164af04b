"""The worker side: talks to the server through ``xcube_client`` and yields ``jobs.Event`` objects.

Runs on worker threads only, so nothing here touches ``bpy``. The client is the vendored copy
(``_vendor/xcube_client`` inside the built extension) or, when the add-on runs from a source
checkout, the repository's own ``xcube_client``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator

from .jobs import Event, Job, JobConfig

log = logging.getLogger(__name__)

_VENDOR_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_vendor")


def client_module():
    """Imports ``xcube_client`` (vendored copy first), or raises ImportError with what to do."""
    if os.path.isdir(_VENDOR_DIR) and _VENDOR_DIR not in sys.path:
        sys.path.insert(0, _VENDOR_DIR)
    try:
        import xcube_client.client as client_mod
        import xcube_client.errors  # noqa: F401
        import xcube_client.scene  # noqa: F401
        import xcube_client.types  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"the XCube client could not be loaded ({exc}); reinstall the extension built by "
            "`xcube addon build`, which bundles xcube_client, grpcio and protobuf"
        ) from exc
    return client_mod


def make_client(config: JobConfig):
    client_mod = client_module()
    return client_mod.XCubeClient(config.address, token=config.token or None, timeout=config.connect_timeout)


def run_info(config: JobConfig, job: Job) -> Iterator[Event]:
    """Test connection: health and server info, as one "info" event with a readable summary."""
    client = make_client(config)
    try:
        health = client.health()
        info = client.info()
    finally:
        client.close()
    lines = [
        f"Connected to {config.address}: {health}",
        f"Server {info.server_version} ({info.api_version}) on {info.device}",
        f"Model {info.model_id or '(loading)'}: {info.num_levels} levels, coarse grid "
        f"{' x '.join(str(s) for s in info.coarse_shape)} at {info.voxel_sizes[0] if info.voxel_sizes else 0:g} m",
        f"Queue: {info.queue_length} waiting{', busy' if info.busy else ''}",
    ]
    yield Event(job.id, "info", {"ok": health == "SERVING", "text": "\n".join(lines),
                                 "health": health, "model_id": info.model_id})


def run_generate(config: JobConfig, job: Job) -> Iterator[Event]:
    """Generation: status, queue position, progress, then one "level" event per written .vdb file."""
    client = make_client(config)
    job.on_cancel(client.cancel)
    state = job.state  # describe_error reads state["levels"] (mid-stream failures)
    try:
        yield Event(job.id, "status", {"status": "CONNECTING", "message": f"Connecting to {config.address}"})
        info = client.info()
        outputs = output_names(config, info)
        if job.cancelled:
            return
        for level in _generate(client, config, job, outputs):
            if job.cancelled:
                client.cancel()
            yield level_event(config, job, level)
        yield Event(job.id, "finished", {"levels": state["levels"]})
    finally:
        client.close()


def output_names(config: JobConfig, info) -> tuple[str, ...]:
    """VDB always; raw arrays (kept for Extend Scene / Regenerate Region) and meshes where served."""
    wanted = ("vdb", "raw", "mesh") if config.want_mesh else ("vdb", "raw")
    return tuple(name for name in wanted if name == "vdb" or name in info.supported_outputs)


def level_event(config: JobConfig, job: Job, level, replace: bool = False) -> Event:
    """Writes a received level (VDB, and its raw arrays for later edits) and describes it."""
    path = _write_level(config, job, level)
    raw_path = _write_raw(config, job, level)
    job.state["levels"] += 1
    return Event(job.id, "level", {
        "index": level.index, "num_levels": level.num_levels, "vdb_path": path,
        "voxel_size": level.voxel_size, "num_voxels": level.num_voxels,
        "class_names": tuple(level.class_names), "seconds": level.seconds,
        "mesh": _read_mesh(config, job, level), "raw_path": raw_path,
        "metadata": dict(level.metadata), "replace": replace,
        "model_id": str((level.metadata or {}).get("model_id", "")),
    })


def _write_raw(config: JobConfig, job: Job, level) -> str:
    """The level's arrays as ``.npz`` (what Extend Scene / Regenerate Region send back), or ""."""
    import numpy as np

    arts = level.artifacts
    if "ijk" not in arts:
        return ""
    path = os.path.join(config.out_dir, f"{job.id}_level{level.index}.npz")
    arrays = {"ijk": np.frombuffer(arts["ijk"].data, "<i4").reshape(-1, 3)}
    if "normals" in arts:
        arrays["normals"] = np.frombuffer(arts["normals"].data, "<f4").reshape(-1, 3)
    if "semantics" in arts:
        arrays["semantics"] = np.frombuffer(arts["semantics"].data, "<i4")
    np.savez(path, voxel_size=np.float64(level.voxel_size), **arrays)
    return path


def _layout_mesh(config: JobConfig):
    if config.layout is None:
        return None
    scene = sys.modules["xcube_client.scene"]
    lay = config.layout
    return scene.LayoutMesh(lay.vertices, lay.faces, part_names=lay.part_names, face_parts=lay.face_parts)


def _generate(client, config: JobConfig, job: Job, outputs):
    # A cancel that lands before the call is registered with the client is caught here: every
    # server event runs one of these callbacks on this thread, which re-issues the cancel.
    def on_progress(level: int, step: int, total: int) -> None:
        if job.cancelled:
            client.cancel()
        job.post("progress", level=level, step=step, total=total)

    def on_queued(position: int, length: int) -> None:
        if job.cancelled:
            client.cancel()
        job.post("queued", position=position, queue_length=length)

    return client.generate(
        config.prompt, seed=config.seed, steps=config.steps, guidance=config.guidance,
        num_levels=config.levels, outputs=outputs, progress=on_progress, layout_mesh=_layout_mesh(config),
        edit=config.edit, queued=on_queued, timeout=config.request_timeout or None, client_tag="blender",
        class_prior=config.class_prior,
    )


def _write_level(config: JobConfig, job: Job, level) -> str:
    data = level.vdb
    if data is None:
        raise RuntimeError(f"level {level.index} arrived without a VDB file; update the server")
    path = os.path.join(config.out_dir, f"{job.id}_level{level.index}.vdb")
    tmp = path + ".part"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    return path


def _read_mesh(config: JobConfig, job: Job, level):
    """The server's mesh of ``level`` parsed into arrays (and kept on disk), or None."""
    from . import classify, ply

    data = level.mesh
    if not data:
        return None
    path = os.path.join(config.out_dir, f"{job.id}_level{level.index}.ply")
    with open(path, "wb") as fh:
        fh.write(data)
    try:
        mesh = ply.read_ply(data)
        mesh.face_classes = classify.level_face_classes(mesh, level)
        return mesh
    except ValueError as exc:
        log.warning("xcube: the server's mesh of level %d is not usable (%s); using Volume to Mesh",
                    level.index, exc)
        return None


class LayoutError(ValueError):
    """The selected meshes cannot serve as a layout (outside the scene box, too many voxels)."""


_HINTS = {
    "UNAVAILABLE": "Start the server (`python -m server --cpu` or `--gpu 0`) and check the address in "
                   "the add-on preferences, then press Generate again",
    "INVALID_ARGUMENT": "Fix the setting named above and press Generate again",
    "RESOURCE_EXHAUSTED": "The server's queue is full or it ran out of memory: wait a moment and retry, "
                          "or generate fewer levels",
    "UNAUTHENTICATED": "Enter the server's --token in the add-on preferences",
    "DEADLINE_EXCEEDED": "Raise the Generate Timeout in the add-on preferences (0 = no limit)",
    "CANCELLED": "The levels that arrived are kept; press Generate to start again",
    "DATA_LOSS": "A download was corrupt; press Generate again",
    "ADDRESS": "Open Edit > Preferences > Add-ons > XCube and fix the server address",
    "LAYOUT": "Adjust the selected meshes and press Refine Selection again",
    "CLIENT": "Reinstall the extension built by `xcube addon build`",
}


def describe_error(exc: BaseException, config: JobConfig, levels_received: int = 0) -> tuple[str, str]:
    """Turns any worker failure into ``(code, message)``: what happened and what to do about it.

    Errors are mapped by type (as the server maps its errors to status codes), never by their text:
    the client's errors by their ``code``, `LayoutError` to LAYOUT, anything else unexpected to INTERNAL.
    """
    errors = sys.modules.get("xcube_client.errors")
    if errors is not None and isinstance(exc, errors.XCubeClientError):
        code = exc.code
        what = str(exc)
        if code == "ADDRESS":
            return code, f"Invalid server address: {what}. {_HINTS['ADDRESS']}."
        if code == "UNAVAILABLE" and "loading" in (exc.details or str(exc)) and not levels_received:
            return code, ("The server is still loading its model. Wait a few seconds (Test Connection in the "
                          "preferences shows SERVING when it is ready) and press Generate again.")
        if code == "UNAVAILABLE" and levels_received:
            what = (f"The server at {config.address} stopped answering after {levels_received} level(s) "
                    f"arrived ({exc.details or 'connection lost'})")
            return code, f"{what}. Restart the server; the levels that arrived are kept."
        if code == "INVALID_ARGUMENT" and exc.field:
            what = f"The server rejected '{exc.field}': {exc.details or exc}"
        elif code == "CANCELLED":
            what = "Cancelled"
        return code, f"{what}. {_HINTS.get(code, 'See the server log for details')}."
    if isinstance(exc, ImportError):
        return "CLIENT", f"{exc}."
    if isinstance(exc, LayoutError):
        text = str(exc)
        return "LAYOUT", f"{text[:1].upper()}{text[1:]}. {_HINTS['LAYOUT']}."
    if isinstance(exc, OSError):
        return "IO", f"Could not write the level to disk: {exc}. Check the Output Folder in the preferences."
    return "INTERNAL", f"Unexpected error: {exc!r}. See the system console for details."
