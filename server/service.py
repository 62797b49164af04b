"""The XCube servicer: thin. Validate, queue, relay the worker's events as the stream, log one line."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import grpc

from xcube_client._proto import xcube_pb2 as pb
from xcube_client._proto import xcube_pb2_grpc as pb_grpc
from xcube_core.errors import CancelledError, ResourceExhaustedError

from server import artifacts
from server.flow import Admission, FlowLimits, SendWatchdog, cancel_call, client_key
from server.jobs import Job, JobQueue, ModelHolder, Worker
from server.memory import release_free_memory
from server.status import ServerUnavailable, clip, status_for
from server.validation import FORMAT_BY_NAME, ModelFacts, ServerLimits, validate_request

log = logging.getLogger("xcube.server")
API_VERSION = "xcube.v1"


def server_version() -> str:
    from xcube_core import __version__

    return __version__


class RequestRecord:
    """Facts for the one structured log line per request."""

    def __init__(self, request_id: str, peer: str, prompt: str, tag: str) -> None:
        self.t0 = time.monotonic()
        self.finished = False
        self.fields = {"event": "generate", "id": request_id, "peer": clip(peer, 100), "prompt_chars": len(prompt),
                       "tag": tag, "levels": [], "queued_s": None}

    def finish(self, outcome: str, message: str = "") -> None:
        self.finished = True
        self.fields.update(outcome=outcome, total_s=round(time.monotonic() - self.t0, 4))
        if message:
            self.fields["message"] = message[:200]
        log.info("request %s", json.dumps(self.fields, sort_keys=False))


class Flow:
    """The servicer's flow control: Generate admission and the send watchdog (see `server.flow`)."""

    def __init__(self, limits: FlowLimits) -> None:
        self.limits = limits
        self.admission = Admission(limits.max_streams, limits.max_streams_per_client)
        self.watchdog = SendWatchdog(limits.send_timeout)


class XCubeServicer(pb_grpc.XCubeServicer):
    """Implements xcube.v1.XCube over one `ModelHolder` and one worker."""

    def __init__(self, model: ModelHolder, jobs: JobQueue, worker: Worker, limits: ServerLimits,
                 supported_outputs: tuple[str, ...], device_label: Callable[[], str], auth_required: bool,
                 *, flow: Flow | None = None, workers: list[Worker] | None = None) -> None:
        self.model = model
        self.jobs = jobs
        self.worker = worker
        self.workers = workers or [worker]
        self.flow = flow or Flow(FlowLimits())
        self.shutting_down = threading.Event()
        self.limits = limits
        self.supported_outputs = supported_outputs
        self.device_label = device_label
        self.auth_required = auth_required

    # -- GetServerInfo -------------------------------------------------------------------------------
    def GetServerInfo(self, request, context):  # noqa: N802 - gRPC naming
        lim = self.limits
        pipe = self.model.pipeline
        info = pb.ServerInfo(
            server_version=server_version(), api_version=API_VERSION, model_loaded=pipe is not None,
            device=self.device_label(), queue_length=len(self.jobs),
            busy=all(w.busy.is_set() for w in self.workers),
            auth_required=self.auth_required,
            supported_outputs=[FORMAT_BY_NAME[n] for n in self.supported_outputs],
        )
        max_levels = 0
        if pipe is not None:
            facts = ModelFacts.of(pipe)
            max_levels = facts.num_levels
            info.model_id = str(getattr(pipe, "model_id", ""))
            info.num_levels = facts.num_levels
            info.voxel_sizes.extend(facts.voxel_sizes)
            info.coarse_shape.extend(facts.coarse_shape)
            info.class_names.extend(facts.class_names)
        info.limits.CopyFrom(pb.Limits(
            max_prompt_length=lim.max_prompt_length, min_steps=lim.min_steps, max_steps=lim.max_steps,
            default_steps=lim.default_steps, max_levels=max_levels, min_guidance=lim.min_guidance,
            max_guidance=lim.max_guidance, default_guidance=lim.default_guidance, max_queue=lim.max_queue,
            max_condition_voxels=lim.max_condition_voxels, chunk_bytes=lim.chunk_bytes,
            max_layout_faces=lim.max_layout_faces, max_scene_voxels=lim.max_scene_voxels,
            max_extent_m=lim.max_extent_m))
        return info

    # -- Generate --------------------------------------------------------------------------------------
    def Generate(self, request, context) -> Iterator[pb.GenerateEvent]:  # noqa: N802
        """Admission (per client and in total), then the stream under the send watchdog."""
        key = client_key(context.peer())
        try:
            self.flow.admission.enter(key)
        except ResourceExhaustedError as exc:
            # DEBUG: a flood of refusals must not flood the log
            log.debug("request %s", json.dumps({"event": "generate", "id": "", "peer": clip(context.peer(), 100),
                                                "outcome": "RESOURCE_EXHAUSTED", "message": str(exc)}))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        state: dict = {}
        stream = self.flow.watchdog.add(lambda waited: self._cut_stalled(context, state, waited))
        try:
            for event in self._generate(request, context, state):
                stream.sending()
                yield event
                stream.sent()
        finally:
            self.flow.watchdog.remove(stream)
            self.flow.admission.leave(key)
            state.clear()
            release_free_memory()  # this stream's encoded levels were freed on this thread's arena

    def _cut_stalled(self, context, state: dict, waited: float) -> None:
        """Watchdog: this stream's client has not read for ``waited`` s; end the call, free the job."""
        message = (f"stream cut: the client read nothing for {waited:.0f} s (the server's send timeout is "
                   f"{self.flow.watchdog.timeout:g} s); read the stream as it arrives")
        job, record = state.get("job"), state.get("record")
        if job is not None:
            job.cancel.set()
            self._on_rpc_done(job)
        if record is not None and not record.finished:
            record.finish(grpc.StatusCode.ABORTED.name, message)
        cancel_call(context, grpc.StatusCode.ABORTED, message)

    def _generate(self, request, context, state: dict) -> Iterator[pb.GenerateEvent]:
        rid = uuid.uuid4().hex[:12]
        tag = request.client_tag if len(request.client_tag) <= 128 and request.client_tag.isprintable() else ""
        record = state["record"] = RequestRecord(rid, context.peer(), request.prompt, tag)
        job = None
        try:
            pipeline = self.model.require()
            params = validate_request(request, self.limits, ModelFacts.of(pipeline), self.supported_outputs)
            job = state["job"] = Job(rid, params)
            context.add_callback(lambda: self._on_rpc_done(job))
            self.jobs.submit(job)
            yield from self._relay(job, record, context)
        except Exception as exc:  # noqa: BLE001 - mapped to a status in one place
            if job is not None:
                job.cancel.set()
            if isinstance(exc, CancelledError) and self.shutting_down.is_set():
                exc = ServerUnavailable("the server shut down during this job; retry on another server or later")
            elif isinstance(exc, CancelledError) and not context.is_active():
                exc = CancelledError("cancelled by the client or its deadline")
            code, message, field = status_for(exc, rid)
            if code == grpc.StatusCode.CANCELLED and _deadline_passed(context):
                code = grpc.StatusCode.DEADLINE_EXCEEDED
            if not record.finished:
                record.finish(code.name, message)
            if field:
                context.set_trailing_metadata((("xcube-field", field),))
            context.set_code(code)
            context.set_details(message)
            if context.is_active():
                yield pb.GenerateEvent(request_id=rid, error=pb.Error(code=code.name, message=message, field=field))
        finally:  # also on GeneratorExit: gRPC drops the stream when its client went away mid-send
            if job is not None:
                job.cancel.set()
            if not record.finished:
                if _deadline_passed(context):
                    record.finish(grpc.StatusCode.DEADLINE_EXCEEDED.name, "the client's deadline passed")
                else:
                    record.finish("CANCELLED", "the client went away")

    def _on_rpc_done(self, job: Job) -> None:
        """RPC ended (finished, client cancel, deadline, shutdown): stop the job, free its slot."""
        job.cancel.set()
        if self.jobs.discard(job):
            job.emit("error", CancelledError("cancelled while queued"))

    def _relay(self, job: Job, record: RequestRecord, context) -> Iterator[pb.GenerateEvent]:
        p = job.params
        level_seconds: list[float] = []
        while True:
            kind, payload = job.events.get()
            if kind == "queued":
                yield pb.GenerateEvent(request_id=job.id, queued=pb.Queued(position=payload[0],
                                                                           queue_length=payload[1]))
            elif kind == "started":
                record.fields["queued_s"] = round(payload, 4)
                yield pb.GenerateEvent(request_id=job.id, started=pb.Started(device=job.device or self.device_label(),
                                                                             queued_seconds=payload))
            elif kind == "progress":
                level, step, total = payload
                yield pb.GenerateEvent(request_id=job.id, progress=pb.Progress(level=level, step=step, total=total))
            elif kind == "level":
                t0 = time.monotonic()
                blobs = artifacts.level_blobs(payload, p.outputs)
                encode_s = time.monotonic() - t0
                level_seconds.append(float(payload.seconds))
                record.fields["levels"].append({"index": payload.index, "voxels": payload.num_voxels,
                                                "seconds": round(float(payload.seconds), 4),
                                                "encode_s": round(encode_s, 4),
                                                "bytes": sum(len(b.data) for b in blobs)})
                yield from artifacts.level_events(payload, blobs, p.num_levels, job.id, self.limits.chunk_bytes)
            elif kind == "finished":
                total = time.monotonic() - job.created
                record.finish("OK")
                yield pb.GenerateEvent(request_id=job.id, finished=pb.Finished(
                    num_levels=len(level_seconds), total_seconds=total, level_seconds=level_seconds))
                return
            elif kind == "error":
                raise payload if isinstance(payload, Exception) else RuntimeError(repr(payload))
            if not context.is_active() and not job.cancel.is_set():
                job.cancel.set()


def _deadline_passed(context) -> bool:
    """True when the call had a deadline and it has passed (time_remaining is huge without one)."""
    try:
        return context.time_remaining() is not None and context.time_remaining() <= 0
    except Exception:  # noqa: BLE001 - a context without a deadline
        return False


def reject_waiting(jobs: list[Job]) -> None:
    """Tell jobs that were still waiting at shutdown to go elsewhere."""
    for job in jobs:
        job.cancel.set()
        job.emit("error", ServerUnavailable("the server is shutting down; retry later"))
