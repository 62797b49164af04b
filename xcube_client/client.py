"""`XCubeClient`: talk to `python -m server` from any Python (Blender, Houdini, scripts).

Needs only the standard library, ``grpcio``, ``grpcio-health-checking`` and ``protobuf``. Every gRPC failure is turned into an
``xcube_client.errors`` exception with a message that says what to do; results are plain dataclasses.

Example:
    >>> client = XCubeClient("127.0.0.1:50051")
    >>> for level in client.generate("a small harbour town", outputs=("vdb",)):
    ...     level.write("out/")
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from xcube_client._proto import xcube_pb2 as pb
from xcube_client._proto import xcube_pb2_grpc as pb_grpc
from xcube_client.errors import (
    GenerationCancelledError,
    IntegrityError,
    InvalidAddressError,
    ServerError,
    ServerUnavailableError,
    XCubeClientError,
    error_class,
)
from xcube_client.scene import EditRegion, LayoutMesh, fill_request
from xcube_client.types import (
    OUTPUT_NAMES,
    Artifact,
    ConditionGrid,
    GeneratedLevel,
    ServerInfo,
    int_bytes,
    safe_extension,
    safe_name,
)

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "127.0.0.1:50051"
_FORMAT_TO_PROTO = {"vdb": pb.OUTPUT_FORMAT_VDB, "mesh": pb.OUTPUT_FORMAT_MESH, "raw": pb.OUTPUT_FORMAT_RAW}
_PROTO_TO_FORMAT = {v: k for k, v in _FORMAT_TO_PROTO.items()}


def parse_address(address: str) -> str:
    """Validate ``host:port`` (IPv6 as ``[::1]:50051``); returns it stripped.

    Raises:
        InvalidAddressError: (a ValueError) for URLs (``http://...``), a missing or non-numeric port,
            or an empty host.
    """
    text = str(address).strip()
    if "://" in text:
        rest = text.split("://", 1)[1].rstrip("/")
        raise InvalidAddressError(f"server address must be host:port, not a URL: got {address!r}; try {rest!r}")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidAddressError(f"server address must be host:port with a port in 1..65535, e.g. {DEFAULT_ADDRESS!r}; "
                         f"got {address!r}")
    return text


def _whole_number(name: str, value, most: int) -> int:
    """``value`` as an int in 0..most, else a ValueError naming the argument (before anything is sent)."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            if float(value) != int(value):
                raise ValueError
            value = int(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{name} must be a whole number in 0..{most}, got {value!r}") from None
    if not 0 <= value <= most:
        raise ValueError(f"{name} must be in 0..{most}, got {value}")
    return value


# what the transport says, in the words a user needs (matched against grpc's details, lower-cased)
_TLS_HINTS = (
    (("not in peer certificate", "hostname", "subject alt", "peer name"),
     "the server's TLS certificate does not name the host {host!r}; connect with a name the certificate "
     "lists, or make a certificate for this one"),
    (("certificate verify failed", "certificate_verify_failed", "unable to get local issuer", "self signed",
      "self-signed"),
     "the server's TLS certificate is not trusted; pass its certificate or CA (--tls-ca / root_certificates)"),
    (("ssl", "tls", "handshake", "wrong_version_number", "wrong version number"),
     "the TLS handshake failed: is the server using TLS (--tls-cert) and this client too (--tls-ca), "
     "or neither?"),
)
_DROPPED = ("socket closed", "connection reset", "broken pipe", "rst_stream", "stream removed", "goaway",
            "eof", "connection aborted", "end of tcp stream")


class XCubeClient:
    """A client of the XCube server.

    Args:
        address: ``host:port`` of ``python -m server`` (default 127.0.0.1:50051).
        token: the server's ``--token``; sent as ``authorization: Bearer <token>`` on every call.
        timeout: seconds for ``info()`` and ``health()`` calls (``generate`` has its own).
        tls: connect with TLS (use when the server runs with --tls-cert/--tls-key).
        root_certificates: PEM bytes of the CA/self-signed certificate to trust (implies ``tls``).

    Thread safety: one client may be used from several threads; ``cancel()`` may be called from any
    thread and stops every ``generate`` running on this client.
    """

    def __init__(self, address: str = DEFAULT_ADDRESS, token: str | None = None, timeout: float = 10.0,
                 *, tls: bool = False, root_certificates: bytes | None = None) -> None:
        self.address = parse_address(address)
        self.timeout = float(timeout)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024),
                   ("grpc.max_send_message_length", 64 * 1024 * 1024)]
        if tls or root_certificates:
            creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(self.address, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(self.address, options=options)
        self._stub = pb_grpc.XCubeStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)  # grpcio-health-checking's generated stubs
        self._lock = threading.Lock()
        self._calls: set[Any] = set()
        self._cancelled: set[int] = set()

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Cancel running calls and close the channel."""
        self.cancel()
        self._channel.close()

    def __enter__(self) -> XCubeClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- unary calls ---------------------------------------------------------------------------------
    def health(self, service: str = "") -> str:
        """Standard gRPC health: "SERVING" once the model is loaded, "NOT_SERVING" while it loads.

        Raises:
            ServerUnavailableError: the server is not reachable.
        """
        try:
            reply = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout,
                                       metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._translate(exc) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def wait_until_serving(self, timeout: float = 60.0, interval: float = 0.2) -> None:
        """Block until ``health()`` is SERVING (the model loaded).

        Raises:
            ServerUnavailableError: not SERVING within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        last = "UNREACHABLE"
        while time.monotonic() < deadline:
            try:
                last = self.health()
                if last == "SERVING":
                    return
            except ServerUnavailableError:
                last = "UNREACHABLE"
            time.sleep(interval)
        raise ServerUnavailableError(f"server at {self.address} is not serving after {timeout:.0f} s "
                                     f"(last health: {last}); check the server's log")

    def info(self) -> ServerInfo:
        """Version, model, device, limits and supported outputs of the server."""
        try:
            msg = self._stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._translate(exc) from None
        lim = msg.limits
        limits = {f.name: getattr(lim, f.name) for f in lim.DESCRIPTOR.fields}
        return ServerInfo(
            server_version=msg.server_version, api_version=msg.api_version, model_id=msg.model_id,
            model_loaded=msg.model_loaded, num_levels=msg.num_levels, voxel_sizes=tuple(msg.voxel_sizes),
            coarse_shape=tuple(msg.coarse_shape), class_names=tuple(msg.class_names), device=msg.device,
            limits=limits, supported_outputs=tuple(_PROTO_TO_FORMAT.get(o, str(o)) for o in msg.supported_outputs),
            queue_length=msg.queue_length, busy=msg.busy, auth_required=msg.auth_required,
        )

    # -- generate --------------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Cancel every ``generate`` running on this client (the server stops within one step)."""
        with self._lock:
            calls = list(self._calls)
            self._cancelled.update(id(c) for c in calls)
        for call in calls:
            call.cancel()

    def generate(self, prompt: str, *, seed: int = 0, steps: int = 0, guidance: float | None = None,
                 num_levels: int = 0, outputs: Sequence[str] = ("vdb",), condition: ConditionGrid | None = None,
                 progress: Callable[[int, int, int], None] | None = None,
                 queued: Callable[[int, int], None] | None = None,
                 timeout: float | None = None, client_tag: str = "", layout_mesh: LayoutMesh | None = None,
                 edit: EditRegion | None = None, extent_m: Sequence[float] | None = None,
                 resample: int = 0, class_prior: float | None = None) -> Iterator[GeneratedLevel]:
        """Generate a scene; yields each level (coarsest first) as soon as it has fully arrived.

        Args:
            prompt: the text.
            seed: random seed (>= 0).
            steps: diffusion steps per level; 0 = the server's default.
            guidance: classifier-free guidance scale; None = the server's default.
            num_levels: levels to generate; 0 = all.
            outputs: any of "vdb", "mesh", "raw".
            condition: optional coarse layout (layout-to-scene).
            progress: called as ``progress(level, step, total)`` from the iterating thread.
            queued: called as ``queued(position, queue_length)`` while waiting in the server's queue.
            timeout: deadline in seconds for the whole call (None = no deadline).
            client_tag: short ASCII tag that appears in the server's log line.
            layout_mesh: optional layout triangles the server voxelises (instead of ``condition``).
            edit: regenerate a box of an existing scene; the levels that arrive are the edited levels.
            extent_m: (X, Y) metres: a tiled scene; each tile-level arrives as its own level
                (``metadata["tile"]``, ``metadata["region_m"]``).
            resample: RePaint rounds per step for edits and tiles (0 = the server's default).
            class_prior: nats >= 0 favouring each voxel's parent class at finer levels; ``math.inf``
                keeps every class a layout gives; None = the model's own.

        Raises:
            ValueError: an unknown output name or a malformed condition (before anything is sent).
            XCubeClientError: a subclass per failure (see ``xcube_client.errors``).
        """
        request = self._build_request(prompt, seed, steps, guidance, num_levels, outputs, condition, client_tag)
        fill_request(request, layout_mesh, edit, extent_m, resample)
        if class_prior is not None:
            if isinstance(class_prior, bool) or not isinstance(class_prior, (int, float)) or not class_prior >= 0:
                raise ValueError(f"class_prior must be a number of nats >= 0 (math.inf keeps every parent's "
                                 f"class) or None, got {class_prior!r}")
            request.class_prior = float(class_prior)
        call = self._stub.Generate(request, timeout=timeout, metadata=self._metadata)
        with self._lock:
            self._calls.add(call)
        seen = [0]  # events received: a failure after the first is a failure mid-stream
        try:
            yield from self._consume(call, progress, queued, seen)
        except grpc.RpcError as exc:
            raise self._translate(exc, cancelled_by_us=id(call) in self._cancelled, mid_stream=seen[0] > 0) from None
        finally:
            with self._lock:
                self._calls.discard(call)
                self._cancelled.discard(id(call))
            call.cancel()  # no-op when finished; stops the server job when the caller stopped iterating

    def _build_request(self, prompt, seed, steps, guidance, num_levels, outputs, condition, client_tag):
        if isinstance(outputs, str):
            outputs = (outputs,)
        seed = _whole_number("seed", seed, (1 << 63) - 1)
        steps = _whole_number("steps", steps, (1 << 32) - 1)
        num_levels = _whole_number("num_levels", num_levels, (1 << 32) - 1)
        prompt = str(prompt).replace("\r\n", "\n").replace("\r", "\n")  # pasted Windows line ends
        wanted = []
        for name in outputs:
            key = str(name).lower()
            if key not in _FORMAT_TO_PROTO:
                raise ValueError(f"unknown output {name!r}; expected any of {OUTPUT_NAMES}")
            wanted.append(_FORMAT_TO_PROTO[key])
        request = pb.GenerateRequest(prompt=str(prompt), seed=int(seed), steps=int(steps),
                                     num_levels=int(num_levels), outputs=wanted, client_tag=str(client_tag))
        if guidance is not None:
            request.guidance = float(guidance)
        if condition is not None:
            ijk, rows = int_bytes(condition.ijk, 3, "condition.ijk")
            request.condition.ijk.CopyFrom(pb.RawArray(dtype="int32", shape=[rows, 3], data=ijk))
            request.condition.voxel_size = float(condition.voxel_size)
            if condition.semantics is not None:
                sem, n = int_bytes(condition.semantics, 1, "condition.semantics")
                request.condition.semantics.CopyFrom(pb.RawArray(dtype="int32", shape=[n], data=sem))
        return request

    def _consume(self, call, progress, queued, seen=None) -> Iterator[GeneratedLevel]:
        level: pb.LevelStart | None = None
        buffers: list[_Buffer] = []
        error: pb.Error | None = None
        for event in call:
            if seen is not None:
                seen[0] += 1
            kind = event.WhichOneof("event")
            if kind == "progress" and progress is not None:
                progress(event.progress.level, event.progress.step, event.progress.total)
            elif kind == "queued" and queued is not None:
                queued(event.queued.position, event.queued.queue_length)
            elif kind == "level_start":
                level = event.level_start
                buffers = [_Buffer() for _ in level.artifacts]
            elif kind == "chunk":
                self._add_chunk(level, buffers, event.chunk)
            elif kind == "level_end":
                if level is None or event.level_end.index != level.index:
                    raise IntegrityError("stream out of order: level_end without its level_start")
                yield _assemble(level, buffers, event.request_id)
                level, buffers = None, []
            elif kind == "finished":
                return
            elif kind == "error":
                error = event.error
        if error is not None:  # normally the status (RpcError) carries the error; be safe
            cls = error_class(error.code)
            raise cls(error.message, code=error.code, details=error.message, field=error.field)
        raise ServerError(f"server at {self.address} ended the stream without finishing; check its log")

    @staticmethod
    def _add_chunk(level, buffers, chunk) -> None:
        if level is None or chunk.level != level.index or chunk.artifact >= len(buffers):
            raise IntegrityError(f"unexpected chunk for level {chunk.level} artifact {chunk.artifact}")
        buf = buffers[chunk.artifact]
        if chunk.offset != buf.size:
            raise IntegrityError(f"chunk of level {chunk.level} artifact {chunk.artifact} at offset "
                                 f"{chunk.offset}, expected {buf.size}: chunks lost or reordered")
        buf.append(chunk.data)

    # -- errors --------------------------------------------------------------------------------------
    def _translate(self, exc: grpc.RpcError, cancelled_by_us: bool = False, mid_stream: bool = False) -> XCubeClientError:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        name = code.name if code is not None else "UNKNOWN"
        details = (exc.details() if hasattr(exc, "details") else str(exc)) or ""
        field = ""
        if name == "INVALID_ARGUMENT":
            for key, value in (exc.trailing_metadata() or ()) if hasattr(exc, "trailing_metadata") else ():
                if key == "xcube-field":
                    field = value
        cls = error_class(name)
        if name == "UNAVAILABLE":
            msg = self._unavailable_message(details, mid_stream)
        elif name == "UNAUTHENTICATED":
            msg = (f"server at {self.address} refused the request: {details}; "
                   "pass the token the server was started with (--token)")
        elif name == "CANCELLED":
            msg = "generation cancelled by this client" if cancelled_by_us else f"generation cancelled: {details}"
            cls = GenerationCancelledError
        elif name == "DEADLINE_EXCEEDED":
            msg = f"the call to {self.address} took longer than its timeout ({details})"
        elif name == "RESOURCE_EXHAUSTED":
            msg = f"server at {self.address} is busy: {details}"
        elif name == "ABORTED":
            msg = f"server at {self.address} ended the stream: {details}"
        else:
            msg = details or f"server at {self.address} failed with {name}"
        return cls(msg, code=name, details=details, field=field)


    def _unavailable_message(self, details: str, mid_stream: bool) -> str:
        low = details.lower()
        if "loading" in low and "model" in low:
            return f"server at {self.address} is still loading its model; retry when health() is SERVING"
        if "shutting down" in low or "shut down" in low:
            return f"server at {self.address} is shutting down: {details}"
        host = self.address.rpartition(":")[0].strip("[]")
        if "failed to connect" in low and any(n in low for n in ("socket closed", "connection reset", "eof")):
            return (f"the server at {self.address} accepted the connection and closed it at once: if it uses TLS "
                    f"(--tls-cert), connect with TLS too (--tls-ca / root_certificates); or it is not an XCube "
                    f"server ({details})")
        for needles, hint in _TLS_HINTS:
            if any(n in low for n in needles):
                return f"cannot connect to {self.address}: {hint.format(host=host)} ({details})"
        if mid_stream or any(n in low for n in _DROPPED):
            return (f"the connection to {self.address} was lost mid-stream (the server stopped or the network "
                    f"dropped); check the server's log and retry ({details or 'connection lost'})")
        return (f"server not reachable at {self.address}, is `python -m server` running? "
                f"({details or 'connection failed'})")


class _Buffer:
    """Chunks of one artifact, joined once at the end (one copy instead of one per chunk)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def append(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)


def _assemble(level: pb.LevelStart, buffers: list[_Buffer], request_id: str) -> GeneratedLevel:
    """Turn a received level into a GeneratedLevel, verifying every artifact's size and SHA-256."""
    artifacts = {}
    for info, parts in zip(level.artifacts, buffers):
        buf = b"".join(parts.parts)
        if not safe_name(info.name):
            raise IntegrityError(f"level {level.index}: artifact name {info.name!r} is not a plain identifier")
        if len(buf) != info.size:
            raise IntegrityError(f"level {level.index} artifact {info.name!r}: got {len(buf)} bytes, "
                                 f"expected {info.size}")
        digest = hashlib.sha256(buf).hexdigest()
        if digest != info.sha256:
            raise IntegrityError(f"level {level.index} artifact {info.name!r}: SHA-256 mismatch "
                                 f"(got {digest[:12]}..., expected {info.sha256[:12]}...)")
        artifacts[info.name] = Artifact(
            name=info.name, format=_PROTO_TO_FORMAT.get(info.format, "raw"), media_type=info.media_type,
            file_extension=safe_extension(info.file_extension), data=buf, sha256=digest,
            dtype=info.dtype, shape=tuple(int(s) for s in info.shape),
        )
    try:
        metadata = json.loads(level.metadata_json) if level.metadata_json else {}
    except json.JSONDecodeError:
        metadata = {"raw": level.metadata_json}
    origin = tuple(float(v) for v in level.origin)
    return GeneratedLevel(
        index=level.index, num_levels=level.num_levels, num_voxels=level.num_voxels,
        voxel_size=level.voxel_size, origin=origin if len(origin) == 3 else (0.0, 0.0, 0.0),
        class_names=tuple(level.class_names), seconds=level.seconds, metadata=metadata,
        artifacts=artifacts, request_id=request_id,
    )
