"""Jobs, the bounded FIFO queue, the per-device worker thread and the background model loader.

Threads: gRPC handler threads validate requests and `submit` jobs; ONE worker thread per device takes
them in order and runs the pipeline; each job streams its results back to its handler thread through
its own `events` queue. Cancel is a `threading.Event` the pipeline checks every diffusion step.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from xcube_core.errors import CancelledError, ModelLoadError, ResourceExhaustedError

from server.status import ServerUnavailable
from server.scene_requests import run_pipeline
from server.validation import JobParams

log = logging.getLogger("xcube.server")


@dataclasses.dataclass(eq=False)
class Job:
    """One Generate request on its way through the queue and the worker.

    ``events`` carries ``(kind, payload)`` from the worker to the handler thread: ``("queued", (pos,
    length))``, ``("started", seconds_queued)``, ``("progress", (level, step, total))``,
    ``("level", Level)``, ``("finished", None)``, ``("error", exception)``.
    """

    id: str
    params: JobParams
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    events: queue.Queue = dataclasses.field(default_factory=queue.Queue)
    created: float = dataclasses.field(default_factory=time.monotonic)
    device: str = ""  # set by the worker that runs it


    def emit(self, kind: str, payload: Any = None) -> None:
        self.events.put((kind, payload))


class JobQueue:
    """A bounded FIFO of waiting jobs. ``max_size`` counts waiting jobs, not the running one."""

    def __init__(self, max_size: int, on_change: Callable[[int], None] | None = None) -> None:
        if max_size < 1:
            raise ValueError(f"max queue size must be >= 1, got {max_size}")
        self.max_size = max_size
        self.on_change = on_change  # called with the number of waiting jobs after every change
        self._jobs: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._jobs)

    def submit(self, job: Job) -> int:
        """Append ``job``; returns its position (jobs ahead of it).

        Raises:
            ResourceExhaustedError: the queue is full.
            ServerUnavailable: the server is shutting down.
        """
        with self._cond:
            if self._closed:
                raise ServerUnavailable("the server is shutting down; retry on another server or later")
            if len(self._jobs) >= self.max_size:
                raise ResourceExhaustedError(f"the queue is full ({self.max_size} jobs waiting); retry later")
            self._jobs.append(job)
            position = len(self._jobs) - 1
            job.emit("queued", (position, len(self._jobs)))
            self._changed()
            self._cond.notify()
            return position

    def take(self) -> Job | None:
        """Block until a job is waiting and return it; None once the queue is closed and empty."""
        with self._cond:
            while not self._jobs and not self._closed:
                self._cond.wait()
            if not self._jobs:
                return None
            job = self._jobs.popleft()
            self._announce_positions()
            return job

    def discard(self, job: Job) -> bool:
        """Remove a waiting job (its client went away); True if it was waiting."""
        with self._cond:
            try:
                self._jobs.remove(job)
            except ValueError:
                return False
            self._announce_positions()
            return True

    def close(self) -> list[Job]:
        """Refuse new jobs, wake the worker, and return the jobs that were still waiting."""
        with self._cond:
            self._closed = True
            waiting = list(self._jobs)
            self._jobs.clear()
            self._cond.notify_all()
            return waiting

    def _announce_positions(self) -> None:
        for position, job in enumerate(self._jobs):
            job.emit("queued", (position, len(self._jobs)))
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(len(self._jobs))


class ModelHolder:
    """Loads the pipeline once, in a background thread; the worker and servicer ask it for the model."""

    def __init__(self, pipeline_or_factory: Any, on_ready: Callable[[Any], None] | None = None) -> None:
        self._ready = threading.Event()
        self._pipeline = None
        self._error: BaseException | None = None
        self._on_ready = on_ready
        if hasattr(pipeline_or_factory, "generate"):
            self._factory = lambda: pipeline_or_factory
        elif callable(pipeline_or_factory):
            self._factory = pipeline_or_factory
        else:
            raise TypeError("create_server needs an XCubePipeline (anything with .generate) or a "
                            f"zero-argument factory returning one; got {type(pipeline_or_factory).__name__}")
        self._thread = threading.Thread(target=self._load, name="xcube-model-loader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _load(self) -> None:
        t0 = time.monotonic()
        try:
            pipeline = self._factory()
            if not hasattr(pipeline, "generate"):
                raise ModelLoadError(f"the pipeline factory returned {type(pipeline).__name__}, not a pipeline")
            self._pipeline = pipeline
            log.info("model %s loaded on %s in %.1f s", getattr(pipeline, "model_id", "?"),
                     getattr(pipeline, "device", "?"), time.monotonic() - t0)
            if self._on_ready is not None:
                self._on_ready(pipeline)
        except BaseException as exc:  # noqa: BLE001 - reported to every request and the log
            self._error = exc
            log.error("model failed to load: %s", exc, exc_info=exc)
        finally:
            self._ready.set()

    @property
    def pipeline(self):
        """The loaded pipeline or None (still loading or failed)."""
        return self._pipeline

    @property
    def error(self) -> BaseException | None:
        return self._error

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until loading ended (success or failure); True if it ended."""
        return self._ready.wait(timeout)

    def require(self):
        """The pipeline, or raise ServerUnavailable (loading) / ModelLoadError (failed)."""
        if self._pipeline is not None:
            return self._pipeline
        if self._error is not None:
            raise ModelLoadError(str(self._error) or type(self._error).__name__)
        raise ServerUnavailable("the model is still loading; retry when health reports SERVING")


class ModelGroup:
    """The models of all workers (one per device), seen as one: ready when every one has loaded.

    ``pipeline`` and ``require()`` answer with the first worker's model: all serve the same model,
    so validation and GetServerInfo may ask any of them.
    """

    def __init__(self, holders: list[ModelHolder]) -> None:
        if not holders:
            raise ValueError("ModelGroup needs at least one model")
        self.holders = holders

    def start(self) -> None:
        for holder in self.holders:
            holder.start()

    @property
    def pipeline(self):
        return self.holders[0].pipeline if all(h.pipeline is not None for h in self.holders) else None

    @property
    def error(self) -> BaseException | None:
        return next((h.error for h in self.holders if h.error is not None), None)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for holder in self.holders:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not holder.wait(left):
                return False
            if holder.error is not None:
                return True  # one failure decides; the others need not be awaited
        return True

    def require(self):
        for holder in self.holders:
            if holder.error is not None:
                return holder.require()
        for holder in self.holders:
            holder.require()
        return self.holders[0].pipeline


class Worker(threading.Thread):
    """Consumes the job queue in order on one device; never dies on a failed job."""

    def __init__(self, jobs: JobQueue, model: ModelHolder, device_label: Callable[[], str],
                 cpu_threads: int | None = None, index: int = 0) -> None:
        super().__init__(name=f"xcube-worker-{index}" if index else "xcube-worker", daemon=True)
        self.cpu_threads = cpu_threads
        self.jobs = jobs
        self.model = model
        self.device_label = device_label
        self.busy = threading.Event()
        self.current: Job | None = None

    def run(self) -> None:
        if self.cpu_threads:  # OpenMP thread counts are per calling thread: set them here
            import torch

            torch.set_num_threads(self.cpu_threads)
        while True:
            job = self.jobs.take()
            if job is None:
                return
            if job.cancel.is_set():
                job.emit("error", CancelledError("cancelled while queued"))
                continue
            self.current = job
            self.busy.set()
            try:
                self._run_job(job)
            finally:
                self.current = None
                self.busy.clear()

    def _run_job(self, job: Job) -> None:
        p = job.params
        job.device = self.device_label()
        job.emit("started", time.monotonic() - job.created)
        try:
            pipeline = self.model.require()
            callback = lambda level, step, total: job.emit("progress", (level, step, total))  # noqa: E731
            levels = run_pipeline(pipeline, p, callback, job.cancel)
            for level in levels:
                job.emit("level", _to_cpu(level))
            job.emit("finished")
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to its request
            job.emit("error", exc)
            if _release_cuda_memory_if_oom(exc):
                log.warning("out of memory in request %s; released cached GPU memory", job.id)


def _to_cpu(level):
    for name in ("ijk", "normals", "semantics"):
        value = getattr(level, name, None)
        if value is not None and hasattr(value, "detach"):
            setattr(level, name, value.detach().cpu())
    return level


def _release_cuda_memory_if_oom(exc: BaseException) -> bool:
    from server.status import _is_out_of_memory

    if not _is_out_of_memory(exc):
        return False
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort
        pass
    return True
