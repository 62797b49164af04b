"""`create_server`: the gRPC server with the XCube service, health checking, reflection and auth."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import logging
import os
import threading
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from xcube_client._proto import xcube_pb2 as pb
from xcube_client._proto import xcube_pb2_grpc as pb_grpc
from xcube_core.errors import InvalidInputError

from server import artifacts
from server.auth import TokenAuthInterceptor
from server.jobs import JobQueue, ModelHolder, Worker
from server.service import XCubeServicer, reject_waiting
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

    def __init__(self, grpc_server: grpc.Server, port: int, host: str, model: ModelHolder, jobs: JobQueue,
                 worker: Worker, health_servicer: health.HealthServicer) -> None:
        self.grpc_server = grpc_server
        self.port = port
        self.host = host
        self.model = model
        self.jobs = jobs
        self.worker = worker
        self.health = health_servicer
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
        reject_waiting(self.jobs.close())
        self.grpc_server.stop(grace).wait()
        current = self.worker.current
        if current is not None:
            current.cancel.set()
        self.worker.join(timeout=30)
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


def _bind(grpc_server: grpc.Server, host: str, port: int, tls_cert: Any, tls_key: Any) -> int:
    """Add the listening port (TLS when a certificate is given); returns the bound port."""
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    hint = "is another server using the port? Pick another with --port"
    try:
        if tls_cert is not None:
            creds = grpc.ssl_server_credentials([(_read_pem(tls_key, "key"), _read_pem(tls_cert, "certificate"))])
            bound = grpc_server.add_secure_port(bind, creds)
        else:
            bound = grpc_server.add_insecure_port(bind)
    except RuntimeError as exc:
        raise InvalidInputError(f"cannot listen on {bind}: {exc}; {hint}") from exc
    if not bound:
        raise InvalidInputError(f"cannot listen on {bind}; {hint}")
    return bound


def create_server(pipeline: Any, host: str = "127.0.0.1", port: int = 0, *, max_queue: int = 16,
                  token: str | None = None, tls_cert: Any = None, tls_key: Any = None,
                  limits: ServerLimits | None = None, supported_outputs: tuple[str, ...] | None = None,
                  cpu_threads: int | None = None) -> tuple[XCubeServer, int]:
    """Build, bind and start the server; the model loads in the background.

    Args:
        pipeline: an `XCubePipeline` (anything with ``.generate``) or a zero-argument factory that
            loads one (called once, in a background thread; health is NOT_SERVING until it returns).
        host: address to bind. Anything but loopback requires ``token``.
        port: TCP port; 0 picks a free one (returned).
        max_queue: waiting jobs beyond the running one; more answer RESOURCE_EXHAUSTED.
        token: if set, every call must send ``authorization: Bearer <token>``.
        tls_cert, tls_key: PEM certificate chain and private key (paths or bytes), both or neither.
        limits: request bounds (defaults: `ServerLimits`); ``max_queue`` overrides its field.
        supported_outputs: restrict output formats (default: all this installation can produce).
        cpu_threads: torch intra-op threads of the worker (default: torch's choice).

    Returns:
        ``(server, port)``: the started `XCubeServer` and the bound port.

    Raises:
        InvalidInputError: non-loopback host without a token, half a TLS pair, unreadable TLS files,
            or a port that cannot be bound.
    """
    _check_security(host, token, tls_cert, tls_key)
    if int(max_queue) < 1:
        raise InvalidInputError(f"--max-queue must be at least 1, got {max_queue}")
    limits = limits or ServerLimits()
    limits = ServerLimits(**{**limits.__dict__, "max_queue": int(max_queue)})
    outputs = supported_outputs or artifacts.available_outputs()

    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    label = {"device": "loading"}

    def on_ready(pipe: Any) -> None:
        label["device"] = device_label(pipe)
        for name in ("", SERVICE_NAME):
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    model = ModelHolder(pipeline, on_ready=on_ready)
    jobs = JobQueue(limits.max_queue)
    worker = Worker(jobs, model, lambda: label["device"], cpu_threads)
    servicer = XCubeServicer(model, jobs, worker, limits, outputs, lambda: label["device"], bool(token))

    concurrency = limits.max_queue + 8  # one handler thread per streaming call, plus room for info/health
    grpc_server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="xcube-rpc"),
        interceptors=[TokenAuthInterceptor(token)] if token else [],
        options=[("grpc.max_receive_message_length", 32 * 1024 * 1024), ("grpc.so_reuseport", 0)],
        maximum_concurrent_rpcs=concurrency,
    )
    pb_grpc.add_XCubeServicer_to_server(servicer, grpc_server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        grpc_server)

    bound = _bind(grpc_server, host, port, tls_cert, tls_key)
    server = XCubeServer(grpc_server, bound, host, model, jobs, worker, health_servicer)
    grpc_server.start()
    worker.start()
    model.start()
    log.info("listening on %s (%s, queue %d, outputs %s, auth %s, tls %s)", server.address,
             "loading model" if model.pipeline is None else label["device"], limits.max_queue,
             ",".join(outputs), "on" if token else "off", "on" if tls_cert is not None else "off")
    return server, bound
