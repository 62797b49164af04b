"""Threads and the main-thread queue.

A worker thread owns the network: it runs one job (a generation or a connection test) and puts plain
event objects on one queue. Only the main thread touches ``bpy``: it drains that queue from a
``bpy.app.timers`` callback, and tests (timers do not fire while a background script blocks) call
``drain_events`` / ``wait_for_jobs`` themselves. No ``context`` and no ``bpy`` data ever reach a
thread; a job gets a frozen ``JobConfig`` of plain values.

This queue knows nothing of networking or of the UI: each `Job` gets the function that describes
its failures (``net.describe_error``), and the add-on's ``register`` installs the function that
applies events on the main thread (``handlers.handle``) with `install_handler`.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import bpy

log = logging.getLogger(__name__)

TIMER_INTERVAL = 0.1  # seconds between drains while something runs


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """Everything a worker needs, copied from preferences and settings on the main thread."""

    kind: str  # "generate" or "info"
    address: str
    token: str = ""
    connect_timeout: float = 5.0
    request_timeout: float = 0.0
    scene_name: str = ""
    prompt: str = ""
    seed: int = 0
    levels: int = 0
    steps: int = 0
    guidance: float | None = None
    want_mesh: bool = False  # ask for the server's (coloured) mesh of every level
    out_dir: str = ""
    # Layout-to-scene: the selected meshes (``layout.LayoutArrays``), voxelised by the server, or None.
    layout: Any = None
    # Extend Scene / Regenerate Region: an ``xcube_client.scene.EditRegion`` (built on the worker from
    # ``edit_levels`` raw files and ``edit_box``), or None.
    edit: Any = None
    # nats favouring each voxel's parent class at finer levels; inf keeps a layout's classes; None = model's
    class_prior: float | None = None


@dataclasses.dataclass
class Event:
    """Something a worker reports; ``handlers.handle`` applies it on the main thread."""

    job_id: str
    kind: str  # "status", "queued", "progress", "level", "finished", "error", "info", "done"
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


ErrorDescriber = Callable[[BaseException, JobConfig, int], "tuple[str, str]"]
EventHandler = Callable[[Event], None]
FailureHandler = Callable[[Event, Exception], None]


class Job:
    """One unit of network work on its own daemon thread.

    Args:
        config: the frozen inputs.
        run: ``run(config, job) -> Iterator[Event]``; it runs on the worker thread, must check
            ``job.cancelled`` and may register a cancel hook with ``job.on_cancel``.
        describe_error: ``describe_error(exc, config, levels_received) -> (code, message)`` for a
            failure of ``run``; the result is posted as an "error" event.
    """

    def __init__(self, config: JobConfig, run: Callable[[JobConfig, "Job"], Iterator[Event]],
                 describe_error: ErrorDescriber) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.config = config
        self._run_fn = run
        self._describe_error = describe_error
        self._cancel = threading.Event()
        self._cancel_hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._main, name=f"xcube-{config.kind}-{self.id}", daemon=True)
        self.finished = threading.Event()
        self.state: dict[str, Any] = {"levels": 0}  # worker-side facts, e.g. levels received so far

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Registers a callable (e.g. a gRPC call's ``cancel``) run when the job is cancelled."""
        with self._lock:
            self._cancel_hooks.append(hook)
            run_now = self._cancel.is_set()
        if run_now:
            _safe_call(hook)

    def cancel(self) -> None:
        """Asks the job to stop; safe from any thread, returns at once."""
        with self._lock:
            self._cancel.set()
            hooks = list(self._cancel_hooks)
        for hook in hooks:
            _safe_call(hook)

    def post(self, event_kind: str, **data: Any) -> None:
        """Queues an event of this job for the main thread (callable from the worker)."""
        _EVENTS.put(Event(self.id, event_kind, data))

    def _main(self) -> None:
        try:
            for event in self._run_fn(self.config, self):
                _EVENTS.put(event)
        except BaseException as exc:  # noqa: BLE001 - nothing may escape a worker thread
            try:
                code, message = self._describe_error(exc, self.config, self.state.get("levels", 0))
            except Exception as inner:  # noqa: BLE001 - a broken describer must still end the job
                code, message = "INTERNAL", f"Unexpected error: {exc!r} (describing it failed: {inner!r})"
            log.warning("xcube job %s failed: %s (%s)", self.id, message, code)
            self.post("error", code=code, message=message, kind=self.config.kind)
        finally:
            self.post("done", kind=self.config.kind)
            self.finished.set()


def _safe_call(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001
        log.exception("xcube cancel hook failed")


_EVENTS: "queue.Queue[Event]" = queue.Queue()
_JOBS: dict[str, Job] = {}
_HANDLER: "tuple[EventHandler, FailureHandler] | None" = None


def install_handler(handle: EventHandler | None, on_failure: FailureHandler | None = None) -> None:
    """Sets what applies events on the main thread (``None`` removes it, e.g. on unregister).

    Args:
        handle: ``handle(event)`` applies one event to Blender data.
        on_failure: ``on_failure(event, exc)`` when ``handle`` raised (the job is shown as failed).
    """
    global _HANDLER
    _HANDLER = None if handle is None else (handle, on_failure or (lambda event, exc: None))


def start(job: Job) -> Job:
    """Starts ``job``'s thread and makes sure the queue is drained (main thread)."""
    _JOBS[job.id] = job
    job.thread.start()
    ensure_timer()
    return job


def get(job_id: str) -> Job | None:
    return _JOBS.get(job_id)


def active_jobs() -> list[Job]:
    return list(_JOBS.values())


def cancel(job_id: str) -> bool:
    """Cancels a running job; False if it is not running."""
    job = _JOBS.get(job_id)
    if job is None:
        return False
    job.cancel()
    return True


def drain_events(max_events: int | None = None) -> int:
    """Applies queued worker events on the main thread; returns how many were applied.

    Public so that tests and scripts in background mode (where timers never fire) can pump the queue.
    Never raises for a failing handler (it is logged and shown as the job's error).

    Raises:
        RuntimeError: no handler is installed (the add-on is not registered).
    """
    if _HANDLER is None:
        raise RuntimeError("no event handler installed: register the add-on (jobs.install_handler) first")
    handle, on_failure = _HANDLER
    count = 0
    while max_events is None or count < max_events:
        try:
            event = _EVENTS.get_nowait()
        except queue.Empty:
            break
        count += 1
        if event.kind == "done":
            _JOBS.pop(event.job_id, None)
        try:
            handle(event)
        except Exception as exc:  # noqa: BLE001 - Blender must keep working
            log.exception("xcube: applying %s failed", event.kind)
            on_failure(event, exc)
    return count


def wait_for_jobs(timeout: float = 60.0, poll: float = 0.02) -> bool:
    """Drains events until no job runs and the queue is empty (for tests and scripts).

    Returns:
        True if everything finished within ``timeout`` seconds, False otherwise.
    """
    deadline = time.monotonic() + timeout
    while True:
        drain_events()
        if not _JOBS and _EVENTS.empty():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)


def cancel_all(join_timeout: float = 2.0) -> None:
    """Cancels every job and waits briefly for the threads (used by ``unregister``)."""
    jobs = list(_JOBS.values())
    for job in jobs:
        job.cancel()
    for job in jobs:
        job.thread.join(join_timeout)
    _JOBS.clear()
    while not _EVENTS.empty():
        try:
            _EVENTS.get_nowait()
        except queue.Empty:
            break


def _timer() -> float | None:
    try:
        drain_events()
    except Exception:  # noqa: BLE001 - a timer that raises is unregistered by Blender
        log.exception("xcube: draining the queue failed")
    if _JOBS or not _EVENTS.empty():
        return TIMER_INTERVAL
    return None  # stop; `start` registers it again


def ensure_timer() -> None:
    if not bpy.app.timers.is_registered(_timer):
        bpy.app.timers.register(_timer, first_interval=TIMER_INTERVAL, persistent=True)


def stop_timer() -> None:
    if bpy.app.timers.is_registered(_timer):
        bpy.app.timers.unregister(_timer)
