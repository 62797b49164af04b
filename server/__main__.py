"""Run the XCube inference server: ``python -m server --gpu 0`` (or ``--cpu``).

One worker per device runs one job at a time (``--gpu 0,1``: two workers); further requests wait in
one bounded FIFO queue shared by the workers (full -> RESOURCE_EXHAUSTED). Every level is streamed as soon as it exists. Health reports
NOT_SERVING until the model has loaded. SIGTERM / Ctrl-C stop gracefully: new calls are refused,
waiting jobs are told to retry elsewhere, the running job gets --grace seconds, then is cancelled
(its client gets UNAVAILABLE); a second signal exits at once.

Flow control: at most --max-streams-per-client Generate streams per client address; a stream whose
client reads nothing for --send-timeout seconds is cut (ABORTED) and its job cancelled. Health and
GetServerInfo always have threads of their own.

Security: the server listens on 127.0.0.1 by default. Listening on any other address requires
--token (clients send it as metadata 'authorization: Bearer <token>'); without --tls-cert/--tls-key
the token travels unencrypted, so a warning is logged. No request can name a file on this machine.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

log = logging.getLogger("xcube.server")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    dev = p.add_mutually_exclusive_group()
    dev.add_argument("--gpu", type=_device_list, metavar="N[,M...]",
                     help="run on CUDA device N; a list (0,1) runs one worker per device on one shared queue "
                          "(default: cuda:0 when a GPU is present, else the CPU)")
    dev.add_argument("--cpu", action="store_true", help="run on the CPU (slow, but works everywhere)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="with --cpu: N workers (each its own model copy) on one shared queue (default %(default)s)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default %(default)s, this machine only); another address "
                        "such as 0.0.0.0 requires --token")
    p.add_argument("--port", type=_port, default=50051, help="TCP port 0..65535 (default %(default)s; 0 = any free port)")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--model", metavar="PATH", default=None,
                       help="model folder (safetensors + config) to serve; default: the model shipped "
                            "with the package")
    model.add_argument("--tiny", action="store_true",
                       help="serve a random-weight tiny model (fast, meaningless scenes): for testing clients")
    p.add_argument("--max-queue", type=int, default=16, metavar="N",
                   help="jobs that may wait behind the running one; more get RESOURCE_EXHAUSTED (default %(default)s)")
    p.add_argument("--token", default=os.environ.get("XCUBE_TOKEN"), metavar="T",
                   help="require this token on every call (default: $XCUBE_TOKEN); needed for non-loopback --host")
    p.add_argument("--tls-cert", metavar="C", default=None, help="PEM certificate chain: serve over TLS (with --tls-key)")
    p.add_argument("--tls-key", metavar="K", default=None, help="PEM private key matching --tls-cert")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="torch CPU threads for the worker (default with --cpu: cores - 1, leaving one core to "
                        "gRPC and encoding; on a GPU: torch's choice). Too many threads on a busy CPU stall OpenMP")
    p.add_argument("--grace", type=float, default=10.0,
                   help="seconds a running job may finish after SIGTERM/Ctrl-C before it is cancelled (default %(default)s)")
    p.add_argument("--parent-pid", type=int, default=0, metavar="PID",
                   help="shut down when process PID ends (the Blender add-on passes its own, so a server it "
                        "started never outlives Blender, even after a crash)")
    p.add_argument("--send-timeout", type=float, default=30.0, metavar="S",
                   help="cut a Generate stream whose client has read nothing for S seconds (default %(default)s)")
    p.add_argument("--max-streams-per-client", type=int, default=4, metavar="N",
                   help="Generate streams one client address may have open at once (default %(default)s; "
                        "behind a load balancer every client shares the balancer's address: raise it there)")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return p


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number in 0..65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 0..65535 (0 = any free port), got {value}")
    return value


def _device_list(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected device numbers such as 0 or 0,1; got {text!r}") from None
    if not ids or len(set(ids)) != len(ids) or min(ids) < 0:
        raise argparse.ArgumentTypeError(f"expected distinct device numbers such as 0 or 0,1; got {text!r}")
    return ids


def resolve_devices(args: argparse.Namespace) -> list[str]:
    """One device per worker: ``["cuda:0", "cuda:1"]`` or ``["cpu"] * --workers``; exits with a hint
    when a --gpu device does not exist."""
    import torch

    if args.workers < 1:
        raise SystemExit(f"python -m server: error: --workers must be at least 1, got {args.workers}")
    if args.cpu:
        return ["cpu"] * args.workers
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if args.gpu is None:
        return ["cuda:0"] if count else ["cpu"] * args.workers
    if args.workers != 1:
        raise SystemExit("python -m server: error: --workers is for --cpu; with --gpu list the devices (--gpu 0,1)")
    missing = [g for g in args.gpu if not 0 <= g < count]
    if missing:
        found = f"{count} CUDA device(s) (0..{count - 1})" if count else "no CUDA device"
        raise SystemExit(f"python -m server: error: --gpu {missing[0]} is not available: this machine has "
                         f"{found}. Run with --cpu, or pick an existing --gpu.")
    return [f"cuda:{g}" for g in args.gpu]


def resolve_device(args: argparse.Namespace) -> str:
    """The first worker's device (``"cuda:N"`` or ``"cpu"``)."""
    return resolve_devices(args)[0]


def cpu_threads(args: argparse.Namespace, device: str) -> int | None:
    """--threads, or on the CPU one less than the cores, shared by the workers (measured: a 2-core box
    serving 4 clients ran 5x faster with 1 torch thread than with 2)."""
    if args.threads:
        return args.threads
    workers = max(1, getattr(args, "workers", 1) or 1)
    return max(1, ((os.cpu_count() or 2) - 1) // workers) if device == "cpu" else None


def pipeline_factory(args: argparse.Namespace, device: str):
    """A zero-argument loader for the background thread (imports torch models only there)."""
    def load():
        from xcube_core.pipeline import XCubePipeline

        if args.tiny:
            return XCubePipeline.tiny(device=device)
        return XCubePipeline.from_pretrained(args.model, device=device)

    return load


def parent_alive(pid: int) -> bool:
    """True while process ``pid`` exists (POSIX: signal 0 reaches it; Windows: it has no exit code yet)."""
    if os.name != "nt":
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # it exists, owned by someone else
            return True
        return True
    import ctypes

    kernel32 = ctypes.windll.kernel32
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return False
    code = ctypes.c_ulong()
    ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
    kernel32.CloseHandle(handle)
    return bool(ok) and code.value == 259  # STILL_ACTIVE


def watch_parent(pid: int, stop: threading.Event) -> None:
    """Sets ``stop`` when process ``pid`` ends (checked every half second)."""
    while not stop.wait(0.5):
        if not parent_alive(pid):
            log.info("parent process %d ended, shutting down", pid)
            stop.set()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.model is not None and not os.path.exists(args.model):
        print(f"python -m server: error: --model {args.model!r} does not exist; pass the folder that holds "
              "the model's config and safetensors, or leave --model out for the shipped model", file=sys.stderr)
        return 2
    devices = resolve_devices(args)

    from xcube_core.errors import XCubeError

    from server.app import create_server
    from server.flow import FlowLimits

    if args.send_timeout <= 0 or args.max_streams_per_client < 1:
        print("python -m server: error: --send-timeout must be > 0 and --max-streams-per-client >= 1", file=sys.stderr)
        return 2
    flow = FlowLimits(max_streams_per_client=args.max_streams_per_client, send_timeout=args.send_timeout)
    try:
        server, _ = create_server([pipeline_factory(args, d) for d in devices], host=args.host, port=args.port,
                                  max_queue=args.max_queue, token=args.token, tls_cert=args.tls_cert,
                                  tls_key=args.tls_key, cpu_threads=cpu_threads(args, devices[0]), flow=flow)
    except XCubeError as exc:
        print(f"python -m server: error: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001
        name = signal.Signals(signum).name
        if stop.is_set():  # the second Ctrl-C / SIGTERM: do not wait for the grace period
            log.warning("received %s again, exiting now without waiting for running jobs", name)
            logging.shutdown()
            os._exit(130)
        log.info("received %s, shutting down (grace %.0f s; send it again to exit at once)", name, args.grace)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.parent_pid:
        threading.Thread(target=watch_parent, args=(args.parent_pid, stop), name="parent-watch", daemon=True).start()
    while not server.model.wait(0.5) and not stop.is_set():
        pass
    if server.model.error is not None:
        print(f"python -m server: error: the model failed to load: {server.model.error}", file=sys.stderr)
        server.stop(0)
        return 1
    while not stop.wait(0.5):
        pass
    server.stop(args.grace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
