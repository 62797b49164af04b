"""Flow control: admission of Generate streams, a send deadline per stream, and guarded handlers.

Why: gRPC Python runs every call on a handler thread of one pool, and a streaming handler blocks in
its send while the client does not read (HTTP/2 flow control). A few clients that open `Generate` and
never read would otherwise hold every thread, and health and `GetServerInfo` would starve with them.

* `Admission`: at most ``max_streams`` Generate streams in total and ``max_streams_per_client`` per
  client address. A call over either bound is refused at once with RESOURCE_EXHAUSTED; the total is
  also checked in `GuardInterceptor`, before the call is handed to a pool thread.
* `SendWatchdog`: every stream marks the time it started a send; one watchdog thread cuts a stream
  whose send has been blocked for more than ``send_timeout`` seconds (its client stopped reading):
  the call ends with ABORTED and a message saying why, its job is cancelled, its thread freed.
* `GuardInterceptor`: other long-lived streams (health Watch, reflection) are capped too, so the
  thread pool always has threads left for unary calls (health Check, GetServerInfo); and a request
  that is not valid protobuf answers INVALID_ARGUMENT instead of gRPC's INTERNAL.

The pool is sized `max_streams + max_other_streams + unary_threads`, so unary calls never wait for
a stream to end.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator

import grpc

from xcube_core.errors import ResourceExhaustedError

log = logging.getLogger("xcube.server")

GENERATE_METHOD = "/xcube.v1.XCube/Generate"


@dataclasses.dataclass(frozen=True)
class FlowLimits:
    """Bounds on concurrent streams and how long a send may block (documented in docs/server.md)."""

    max_streams: int = 0             # concurrent Generate streams; 0 = max_queue + workers + 4
    max_streams_per_client: int = 4  # ... from one client address (IP, without the port)
    max_other_streams: int = 4       # concurrent health Watch / reflection streams
    unary_threads: int = 8           # pool threads that only unary calls can use
    send_timeout: float = 30.0       # seconds a single send may wait for the client to read

    def sized_for(self, max_queue: int, workers: int) -> FlowLimits:
        """These limits with ``max_streams`` filled in: every running and waiting job has a stream,
        plus 4 for streams that are still finishing their last sends."""
        if self.max_streams:
            return self
        return dataclasses.replace(self, max_streams=max_queue + workers + 4)

    @property
    def pool_size(self) -> int:
        return self.max_streams + self.max_other_streams + self.unary_threads


def client_key(peer: str) -> str:
    """The client's address without its port: ``ipv4:1.2.3.4:5678`` -> ``ipv4:1.2.3.4``."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rsplit(":", 1)[0]
    return peer  # unix sockets and the like: one key per peer string


class Admission:
    """Counts concurrent Generate streams, in total and per client address."""

    def __init__(self, max_total: int, max_per_client: int) -> None:
        self.max_total = max_total
        self.max_per_client = max_per_client
        self._lock = threading.Lock()
        self._by_client: collections.Counter[str] = collections.Counter()
        self._total = 0

    @property
    def total(self) -> int:
        return self._total

    def full(self) -> bool:
        return self._total >= self.max_total

    def enter(self, key: str) -> None:
        """Take a slot for ``key``.

        Raises:
            ResourceExhaustedError: the server or this client already has its maximum of streams.
        """
        with self._lock:
            if self._total >= self.max_total:
                raise ResourceExhaustedError(f"the server already serves {self.max_total} Generate streams; "
                                             "retry later")
            if self._by_client[key] >= self.max_per_client:
                raise ResourceExhaustedError(f"this client already has {self.max_per_client} Generate streams "
                                             "open (the per-client limit); wait for one to finish")
            self._total += 1
            self._by_client[key] += 1

    def leave(self, key: str) -> None:
        with self._lock:
            self._total -= 1
            self._by_client[key] -= 1
            if self._by_client[key] <= 0:
                del self._by_client[key]


class StreamSend:
    """One stream's send clock: `sending()` before a yield, `sent()` after it."""

    def __init__(self, on_stall: Callable[[float], None]) -> None:
        self.on_stall = on_stall
        self.since: float | None = None
        self.stalled = False

    def sending(self) -> None:
        self.since = time.monotonic()

    def sent(self) -> None:
        self.since = None


class SendWatchdog:
    """One thread that cuts streams whose current send has waited longer than ``timeout`` seconds."""

    def __init__(self, timeout: float, interval: float | None = None) -> None:
        self.timeout = float(timeout)
        self.interval = interval or min(1.0, max(0.05, self.timeout / 4))
        self._streams: set[StreamSend] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="xcube-send-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def add(self, on_stall: Callable[[float], None]) -> StreamSend:
        stream = StreamSend(on_stall)
        with self._lock:
            self._streams.add(stream)
        return stream

    def remove(self, stream: StreamSend) -> None:
        with self._lock:
            self._streams.discard(stream)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            with self._lock:
                stalled = [s for s in self._streams
                           if not s.stalled and s.since is not None and now - s.since > self.timeout]
                for s in stalled:
                    s.stalled = True
            for s in stalled:
                try:
                    s.on_stall(now - (s.since or now))
                except Exception:  # noqa: BLE001 - the watchdog must survive any one stream
                    log.exception("cutting a stalled stream failed")


def cancel_call(context, code: grpc.StatusCode, details: str) -> None:
    """End a call from any thread with ``code`` and ``details``.

    gRPC core sends the status as trailers followed by RST_STREAM, so it reaches the client even when
    the stream's flow-control window is full (queued messages are dropped). Falls back to the public
    `cancel()` (status CANCELLED) where the call object is not reachable.
    """
    call = getattr(getattr(context, "_rpc_event", None), "call", None)
    try:
        if call is not None:
            call.cancel(code.value[0], details)
            return
    except Exception:  # noqa: BLE001 - fall back to the public API
        pass
    context.cancel()


# -- the interceptor -------------------------------------------------------------------------------

class BadRequest:
    """Stands in for a request that could not be parsed; the guarded behaviour answers INVALID_ARGUMENT."""

    def __init__(self, message: str) -> None:
        self.message = message


def _safe_deserializer(deserialize, type_name: str):
    if deserialize is None:
        return None

    def parse(data: bytes):
        try:
            return deserialize(data)
        except Exception as exc:  # noqa: BLE001 - DecodeError, invalid UTF-8, truncated input...
            reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            return BadRequest(f"request: not a valid {type_name} message ({len(data)} bytes): {reason}")

    return parse


def _check_request(request, context) -> None:
    if isinstance(request, BadRequest):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)


def _checked_iterator(requests, context) -> Iterator:
    for request in requests:
        _check_request(request, context)
        yield request


class GuardInterceptor(grpc.ServerInterceptor):
    """Malformed requests -> INVALID_ARGUMENT; Generate over the total refused before a thread is
    taken; other server streams (health Watch, reflection) capped at ``max_other_streams``."""

    def __init__(self, admission: Admission, max_other_streams: int) -> None:
        self.admission = admission
        self.max_other_streams = max_other_streams
        self._other = threading.BoundedSemaphore(max_other_streams)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if method == GENERATE_METHOD and self.admission.full():
            return _refusing(handler, f"the server already serves {self.admission.max_total} Generate "
                                      "streams; retry later")
        return self._guarded(handler, method)

    def _guarded(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        type_name = method.rsplit("/", 1)[-1] + " request"
        des = _safe_deserializer(handler.request_deserializer, type_name)
        ser = handler.response_serializer
        limit_stream = handler.response_streaming and method != GENERATE_METHOD
        if handler.request_streaming and handler.response_streaming:
            inner = handler.stream_stream

            def stream_stream(requests, context):
                yield from self._capped(lambda: inner(_checked_iterator(requests, context), context), context)
            return grpc.stream_stream_rpc_method_handler(stream_stream, des, ser)
        if handler.request_streaming:
            inner_su = handler.stream_unary
            return grpc.stream_unary_rpc_method_handler(
                lambda requests, context: inner_su(_checked_iterator(requests, context), context), des, ser)
        if handler.response_streaming:
            inner_us = handler.unary_stream

            def unary_stream(request, context):
                _check_request(request, context)
                if limit_stream:
                    yield from self._capped(lambda: inner_us(request, context), context)
                else:
                    yield from inner_us(request, context)
            return grpc.unary_stream_rpc_method_handler(unary_stream, des, ser)
        inner_uu = handler.unary_unary

        def unary_unary(request, context):
            _check_request(request, context)
            return inner_uu(request, context)
        return grpc.unary_unary_rpc_method_handler(unary_unary, des, ser)

    def _capped(self, start: Callable[[], Iterator], context) -> Iterator:
        if not self._other.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"too many open watch/reflection streams (limit {self.max_other_streams}); retry later")
        try:
            yield from start()
        finally:
            self._other.release()


def _refusing(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    def refuse(request, context):
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)

    # no request deserializer: the refused request is never parsed
    return grpc.unary_stream_rpc_method_handler(refuse, None, handler.response_serializer)
