"""`create_server`: the gRPC server with the XCube service, health checking, reflection and auth."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import logging
import os
import threading
import time
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from xcube_client._proto import xcube_pb2 as pb
from xcube_client._proto import xcube_pb2_grpc as pb_grpc
from xcube_core.errors import InvalidInputError

from server import artifacts
from server.auth import TokenAuthInterceptor
from server.flow import FlowLimits, GuardInterceptor
from server.jobs import JobQueue, ModelGroup, ModelHolder, Worker
from server.service import Flow, XCubeServicer, reject_waiting
from server.validation import ServerLimits

log = logging.getLogger("xcube.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["XCube"].full_name  # "xcube.v1.XCube"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost"."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def device_label(pipeline: Any) -> str:
    """e.g. ``"cuda:0 (NVIDIA H100)"`` or ``"cpu"``."""
    device = str(getattr(pipeline, "device", "cpu"))
    if device.startswith("cuda"):
        try:
            import torch

            return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
        except Exception:  # noqa: BLE001 - the label is cosmetic
            return device
    return device


def _read_pem(value: str | bytes | os.PathLike, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        with open(value, "rb") as f:
            return f.read()
    except OSError as exc:
        raise InvalidInputError(f"cannot read the TLS {what} {os.fspath(value)!r}: {exc.strerror}") from exc


class XCubeServer:
    """A running server: ``port``, ``address``, ``wait_until_ready()``, ``stop()``."""

    def __init__(self, grpc_server: grpc.Server, port: int, host: str, model: ModelGroup, jobs: JobQueue,
                 workers: list[Worker], health_servicer: health.HealthServicer,
                 servicer: XCubeServicer | None = None) -> None:
        self.grpc_server = grpc_server
        self.port = port
        self.host = host
        self.model = model
        self.jobs = jobs
        self.workers = workers
        self.worker = workers[0]
        self.health = health_servicer
        self.servicer = servicer
        self._stopped = threading.Event()

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Wait for the model; True when it loaded, False on failure or timeout."""
        return self.model.wait(timeout) and self.model.pipeline is not None

    def stop(self, grace: float | None = 5.0) -> None:
        """Graceful shutdown: refuse new calls, reject waiting jobs, let the running job finish for
        up to ``grace`` seconds, then cancel it (the pipeline stops within one step)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        if self.servicer is not None:
            self.servicer.shutting_down.set()
        reject_waiting(self.jobs.close())
        grace = 0.0 if grace is None else float(grace)
        # new calls are refused at once; running streams get grace + 5 s to end (+ 5 s: the
        # cancelled jobs still send their Error event and status after the grace)
        done = self.grpc_server.stop(grace + 5.0)
        deadline = time.monotonic() + grace
        while any(w.busy.is_set() for w in self.workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        for worker in self.workers:
            current = worker.current
            if current is not None:  # its handler turns this into UNAVAILABLE "shut down during this job"
                current.cancel.set()
        done.wait()
        if self.servicer is not None:
            self.servicer.flow.watchdog.stop()
        for worker in self.workers:
            worker.join(timeout=30)
        log.info("server on %s stopped", self.address)

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self.grpc_server.wait_for_termination(timeout)


def _check_security(host: str, token: str | None, tls_cert: Any, tls_key: Any) -> None:
    if not is_loopback(host) and not token:
        raise InvalidInputError(f"refusing to listen on {host!r} without --token: anyone who can reach this "
                                "machine could use it. Pass --token (and ideally --tls-cert/--tls-key), "
                                "or bind 127.0.0.1")
    if (tls_cert is None) != (tls_key is None):
        raise InvalidInputError("TLS needs both --tls-cert and --tls-key (PEM files); got only one")
    if not is_loopback(host) and tls_cert is None:
        log.warning("listening on %s without TLS: the token and the scenes travel unencrypted; "
                    "pass --tls-cert/--tls-key on untrusted networks", host)


def _check_tls_pair(cert: bytes, key: bytes) -> None:
    """Raise InvalidInputError unless ``cert``/``key`` are PEM and belong together (checked with the
    standard library before gRPC sees them, whose only message would be a failed bind)."""
    import ssl
    import tempfile

    for data, what, flag in ((cert, "--tls-cert", b"CERTIFICATE-----"), (key, "--tls-key", b"PRIVATE KEY-----")):
        if b"-----BEGIN " not in data or flag not in data:
            raise InvalidInputError(f"{what} is not a PEM {'certificate' if what == '--tls-cert' else 'private key'} "
                                    f"(expected a '-----BEGIN ...{flag.decode()}' block); convert it with openssl")
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        with open(cert_path, "wb") as f:
            f.write(cert)
        with open(os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(key)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_path, key_path)
        except ssl.SSLError as exc:
            raise InvalidInputError(f"--tls-cert/--tls-key are not a usable PEM pair ({exc.reason or exc}); "
                                    "check that the key belongs to the certificate") from None


def _bind(grpc_server: grpc.Server, host: str, port: int, tls_cert: Any, tls_key: Any) -> int:
    """Add the listening port (TLS when a certificate is given); returns the bound port."""
    if not 0 <= int(port) <= 65535:
        raise InvalidInputError(f"--port must be in 0..65535 (0 = any free port), got {port}")
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    hint = "is another server using the port? Pick another with --port"
    creds = None
    if tls_cert is not None:
        cert, key = _read_pem(tls_cert, "certificate"), _read_pem(tls_key, "key")
        _check_tls_pair(cert, key)
        creds = grpc.ssl_server_credentials([(key, cert)])
    try:
        bound = grpc_server.add_secure_port(bind, creds) if creds is not None else grpc_server.add_insecure_port(bind)
    except RuntimeError as exc:
        raise InvalidInputError(f"cannot listen on {bind}: {exc}; {hint}") from exc
    if not bound:
        raise InvalidInputError(f"cannot listen on {bind}; {hint}")
    return bound


def create_server(pipeline: Any, host: str = "127.0.0.1", port: int = 0, *, max_queue: int = 16,
                  token: str | None = None, tls_cert: Any = None, tls_key: Any = None,
                  limits: ServerLimits | None = None, supported_outputs: tuple[str, ...] | None = None,
                  cpu_threads: int | None = None, flow: FlowLimits | None = None) -> tuple[XCubeServer, int]:
    """Build, bind and start the server; the model loads in the background.

    Args:
        pipeline: an `XCubePipeline` (anything with ``.generate``) or a zero-argument factory that
            loads one (called once, in a background thread; health is NOT_SERVING until it returns);
            or a list of them: one worker per entry (one per device), all on one shared queue.
        host: address to bind. Anything but loopback requires ``token``.
        port: TCP port; 0 picks a free one (returned).
        max_queue: waiting jobs beyond the running ones; more answer RESOURCE_EXHAUSTED.
        token: if set, every call must send ``authorization: Bearer <token>``.
        tls_cert, tls_key: PEM certificate chain and private key (paths or bytes), both or neither.
        limits: request bounds (defaults: `ServerLimits`); ``max_queue`` overrides its field.
        supported_outputs: restrict output formats (default: all this installation can produce).
        cpu_threads: torch intra-op threads of each worker (default: torch's choice).
        flow: stream limits and the send timeout (default: `FlowLimits` sized for the queue).

    Returns:
        ``(server, port)``: the started `XCubeServer` and the bound port.

    Raises:
        InvalidInputError: non-loopback host without a token, half a TLS pair, unreadable or non-PEM
            TLS files, a port outside 0..65535, or a port that cannot be bound.
    """
    _check_security(host, token, tls_cert, tls_key)
    if int(max_queue) < 1:
        raise InvalidInputError(f"--max-queue must be at least 1, got {max_queue}")
    limits = limits or ServerLimits()
    limits = ServerLimits(**{**limits.__dict__, "max_queue": int(max_queue)})
    outputs = supported_outputs or artifacts.available_outputs()
    sources = list(pipeline) if isinstance(pipeline, (list, tuple)) else [pipeline]
    if not sources:
        raise InvalidInputError("create_server needs at least one pipeline")
    flow = (flow or FlowLimits()).sized_for(limits.max_queue, len(sources))

    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    labels = ["loading"] * len(sources)
    state = {"ready": False, "full": False}

    def publish() -> None:
        """"" = the model is loaded; "xcube.v1.XCube" = loaded AND the queue has room (a balancer
        checking that name takes a loading or saturated server out of rotation)."""
        serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
        health_servicer.set("", serving if state["ready"] else not_serving)
        health_servicer.set(SERVICE_NAME, serving if state["ready"] and not state["full"] else not_serving)

    def on_ready_for(i: int):
        def on_ready(pipe: Any) -> None:
            labels[i] = device_label(pipe)
            state["ready"] = all(h.pipeline is not None for h in holders)
            publish()
        return on_ready

    def on_queue_change(waiting: int) -> None:
        full = waiting >= limits.max_queue
        if full != state["full"]:
            state["full"] = full
            publish()

    holders = [ModelHolder(src, on_ready=on_ready_for(i)) for i, src in enumerate(sources)]
    model = ModelGroup(holders)
    jobs = JobQueue(limits.max_queue, on_change=on_queue_change)
    workers = [Worker(jobs, holder, (lambda i=i: labels[i]), cpu_threads, index=i) for i, holder in enumerate(holders)]
    label = lambda: ", ".join(dict.fromkeys(labels))  # noqa: E731 - "cuda:0 (...), cuda:1 (...)" or "cpu"
    service_flow = Flow(flow)
    servicer = XCubeServicer(model, jobs, workers[0], limits, outputs, label, bool(token), flow=service_flow,
                             workers=workers)

    guard = GuardInterceptor(service_flow.admission, flow.max_other_streams)
    grpc_server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=flow.pool_size, thread_name_prefix="xcube-rpc"),
        interceptors=[TokenAuthInterceptor(token), guard] if token else [guard],
        options=[("grpc.max_receive_message_length", 32 * 1024 * 1024), ("grpc.so_reuseport", 0)],
        # no maximum_concurrent_rpcs: it counts health and info too; streams are bounded in `flow`
    )
    pb_grpc.add_XCubeServicer_to_server(servicer, grpc_server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        grpc_server)

    bound = _bind(grpc_server, host, port, tls_cert, tls_key)
    server = XCubeServer(grpc_server, bound, host, model, jobs, workers, health_servicer, servicer)
    grpc_server.start()
    service_flow.watchdog.start()
    for worker in workers:
        worker.start()
    model.start()
    log.info("listening on %s (%s, %d worker(s), queue %d, outputs %s, auth %s, tls %s, streams %d total / %d "
             "per client, send timeout %g s)", server.address, "loading model" if model.pipeline is None else label(),
             len(workers), limits.max_queue, ",".join(outputs), "on" if token else "off",
             "on" if tls_cert is not None else "off", flow.max_streams, flow.max_streams_per_client, flow.send_timeout)
    return server, bound
