"""The local XCube server: a ``python -m server`` child process that the add-on starts, watches and stops.

It never touches ``bpy`` (the gRPC client comes through ``net.client_module``), so its threads are
safe. The main thread calls ``start`` / ``stop``; both return at once. A watcher thread follows the
process: it keeps the last lines of its log and asks the server's gRPC health (through
``xcube_client``) until the model is loaded, then polls ``GetServerInfo`` for "busy". The UI reads one
``Snapshot`` of that state.

Safety: the server binds 127.0.0.1 only; its token is generated here for each start and reaches the
child through the ``XCUBE_TOKEN`` environment variable (never on the command line, so ``ps`` does
not show it); the child gets ``--parent-pid`` so it exits even if Blender crashes; and ``stop`` only
ever signals the ``Popen`` object this module created.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
LOG_LINES = 200
STOP_GRACE = 5.0  # seconds the server may take to shut down after SIGTERM before it is killed

# States shown in the preferences and the panel.
STOPPED, STARTING, LOADING, READY, BUSY, STOPPING, CRASHED, FAILED = (
    "STOPPED", "STARTING", "LOADING", "READY", "BUSY", "STOPPING", "CRASHED", "FAILED")
RUNNING_STATES = {STARTING, LOADING, READY, BUSY}
LABELS = {
    STOPPED: "Stopped", STARTING: "Starting", LOADING: "Loading model", READY: "Ready", BUSY: "Busy",
    STOPPING: "Stopping", CRASHED: "Crashed", FAILED: "Could not start",
}

_PROBE = ("import importlib.util as u, sys; missing = [m for m in ('server', 'xcube_core', 'xcube_client', 'torch', "
          "'grpc') if u.find_spec(m) is None]; print('XCUBE-PROBE', sys.version.split()[0], ','.join(missing))")


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
    """How to run the server; copied from the preferences on the main thread."""

    python: str
    port: int = 0  # 0 = a free port
    device: str = "CPU"  # "CPU" or "GPU"
    gpu: int = 0
    model: str = ""  # model folder; "" = the model shipped with the package
    tiny: bool = False  # the random-weight test model (fast, meaningless scenes)


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What the UI shows: state, a message saying what to do, the log tail, where to connect."""

    state: str = STOPPED
    message: str = ""
    log_tail: tuple[str, ...] = ()
    address: str = ""
    token: str = ""
    pid: int = 0

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def label(self) -> str:
        return LABELS.get(self.state, self.state.title())


# -- validation (main thread; fast, no processes) --------------------------------------------------

def validate_python(path: str) -> str:
    """Checks that ``path`` names an executable file; returns its absolute path.

    Raises:
        ValueError: what is wrong and what to pick instead.
    """
    value = os.path.expanduser((path or "").strip())
    hint = "pick the python of the environment where XCube is installed, e.g. <project>/.venv/bin/python"
    if not value:
        raise ValueError(f"No Python is set for the local server: {hint} (or press Detect)")
    if os.path.isdir(value):
        found = _python_in(value)
        if found is None:
            raise ValueError(f"'{value}' is a folder without bin/python or Scripts/python.exe: {hint}")
        value = found
    if not os.path.isfile(value):
        raise ValueError(f"The Python '{value}' does not exist: {hint}")
    if not os.access(value, os.X_OK):
        raise ValueError(f"The Python '{value}' is not executable: {hint}")
    return os.path.abspath(value)


def _python_in(folder: str) -> str | None:
    for rel in ("bin/python", "bin/python3", "Scripts/python.exe", ".venv/bin/python", ".venv/Scripts/python.exe"):
        candidate = os.path.join(folder, rel)
        if os.path.isfile(candidate):
            return candidate
    return None


def check_port(port: int) -> int:
    """Returns a port the server can bind on 127.0.0.1: ``port`` itself if free, a free one for 0.

    Raises:
        ValueError: the port is taken or out of range, with what to do.
    """
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"The port {port} must be 0 (any free port) or 1..65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, int(port)))
        except OSError as exc:
            raise ValueError(f"Port {port} on {HOST} is already in use ({exc.strerror}), maybe by another "
                             "server: pick another port, or 0 for any free port") from None
        return sock.getsockname()[1]


def validate_model(folder: str) -> str:
    """"" for the shipped model, else the absolute folder; raises ValueError if it does not exist."""
    value = os.path.expanduser((folder or "").strip())
    if not value:
        return ""
    if not os.path.isdir(value):
        raise ValueError(f"The model folder '{value}' does not exist: pick the folder that holds the model's "
                         "config.json and .safetensors files, or leave it empty for the shipped model")
    return os.path.abspath(value)


def detect_pythons(start_dirs: tuple[str, ...] = ()) -> list[str]:
    """Likely Pythons with XCube, best first: an active venv/conda, ``.venv`` folders next to
    ``start_dirs`` (and their parents), then ``python3`` on PATH. Only existing files are returned."""
    found: list[str] = []
    for env in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        if os.environ.get(env):
            found.append(_python_in(os.environ[env]) or "")
    for start in start_dirs:
        folder = os.path.abspath(start)
        for _ in range(4):
            found.append(_python_in(os.path.join(folder, ".venv")) or "")
            folder = os.path.dirname(folder)
    found.append(shutil.which("python3") or shutil.which("python") or "")
    unique: list[str] = []
    for path in found:
        if path and os.path.isfile(path) and path not in unique:
            unique.append(path)
    return unique


def probe_python(python: str, timeout: float = 30.0) -> str:
    """Checks that ``python`` can import the server; returns "" when it can, else a message with a fix."""
    try:
        out = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=timeout,
                             env=_child_env(""), cwd=_neutral_cwd())
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"Could not run '{python}': {exc}. Pick another Python in the preferences"
    match = re.search(r"XCUBE-PROBE (\S+) ?(\S*)", out.stdout)
    if out.returncode != 0 or match is None:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"'{python}' is not a working Python ({tail[0]}). Pick another Python in the preferences"
    if match.group(2):
        return (f"The Python at '{python}' (version {match.group(1)}) has no XCube installed (missing "
                f"{match.group(2).replace(',', ', ')}). Pick the Python of the environment where XCube is "
                "installed (e.g. <project>/.venv/bin/python), or run `pip install -e .` in it")
    return ""


def find_python(start_dirs: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """The first of ``detect_pythons`` that can run the server, and the ones tried: ``("", tried)``
    when none can."""
    tried = []
    for python in detect_pythons(start_dirs):
        if not probe_python(python):
            return python, tried
        tried.append(python)
    return "", tried


def _neutral_cwd() -> str:
    """The child's working folder: not Blender's, so what it imports does not depend on where Blender
    was started."""
    return tempfile.gettempdir()


def _child_env(token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONHOME", "XCUBE_TOKEN"}}
    env["PYTHONUNBUFFERED"] = "1"
    if token:
        env["XCUBE_TOKEN"] = token
    return env


def command(config: LaunchConfig, port: int) -> list[str]:
    """The server's command line (without the token, which travels in the environment)."""
    cmd = [config.python, "-m", "server", "--host", HOST, "--port", str(port), "--parent-pid", str(os.getpid())]
    cmd += ["--cpu"] if config.device == "CPU" else ["--gpu", str(config.gpu)]
    if config.tiny:
        cmd.append("--tiny")
    elif config.model:
        cmd += ["--model", config.model]
    return cmd


# -- the process -------------------------------------------------------------------------------------

class LocalServer:
    """One started server process and its watcher thread (see the module docstring)."""

    def __init__(self, config: LaunchConfig, port: int, poll: float = 0.25) -> None:
        self.config = config
        self.port = port
        self.token = secrets.token_urlsafe(24)
        self.address = f"{HOST}:{port}"
        self.proc: subprocess.Popen | None = None
        self._poll = poll
        self._lock = threading.Lock()
        self._log: collections.deque[str] = collections.deque(maxlen=LOG_LINES)
        self._state, self._message = STARTING, f"Starting the local server on {self.address}"
        self._stopping = threading.Event()
        self.thread = threading.Thread(target=self._main, name="xcube-local-server", daemon=True)

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(self._state, self._message, tuple(self._log), self.address, self.token,
                            self.proc.pid if self.proc else 0)

    def log_lines(self) -> list[str]:
        with self._lock:
            return list(self._log)

    def _set(self, state: str, message: str) -> None:
        with self._lock:
            if self._state != state:
                log.info("xcube local server: %s (%s)", state, message)
            self._state, self._message = state, message

    def start(self) -> None:
        self.thread.start()

    def _main(self) -> None:
        problem = probe_python(self.config.python)
        if problem:
            self._set(FAILED, problem)
            return
        if self._stopping.is_set():
            self._set(STOPPED, "Stopped")
            return
        try:
            self.proc = subprocess.Popen(command(self.config, self.port), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                         errors="replace", env=_child_env(self.token), cwd=_neutral_cwd())
        except OSError as exc:
            self._set(FAILED, f"Could not start '{self.config.python}': {exc}. Pick another Python")
            return
        threading.Thread(target=self._read_log, name="xcube-local-server-log", daemon=True).start()
        self._set(STARTING, f"Starting the local server on {self.address} (pid {self.proc.pid})")
        try:
            self._watch()
        except Exception as exc:  # noqa: BLE001 - e.g. the client cannot load: never leave an unwatched child
            log.exception("xcube local server: watching failed")
            self._stopping.set()
            _reap_after_terminate(self.proc)
            self._set(FAILED, f"Could not watch the local server ({exc}); it was stopped. Reinstall the extension "
                              "built by `xcube addon build`")

    def _read_log(self) -> None:
        for line in self.proc.stdout:
            with self._lock:
                self._log.append(line.rstrip())
        self.proc.stdout.close()

    def _watch(self) -> None:
        from . import net

        client_mod = net.client_module()
        client = client_mod.XCubeClient(self.address, token=self.token, timeout=2.0)
        try:
            while self.proc.poll() is None and not self._stopping.is_set():
                self._check(client)
                self._stopping.wait(self._poll if self._state in {STARTING, LOADING} else 4 * self._poll)
        finally:
            client.close()
        if self._stopping.is_set():  # also when stop() came before the process existed
            _reap_after_terminate(self.proc)
        code = self.proc.wait()
        time.sleep(0.05)  # let the log reader take the last lines
        if self._stopping.is_set():
            self._set(STOPPED, f"Stopped (exit code {code})")
        else:
            self._set(CRASHED, explain_exit(code, self.log_lines(), self.config))

    def _check(self, client) -> None:
        errors = sys.modules["xcube_client.errors"]
        try:
            health = client.health()
            if health != "SERVING":
                self._set(LOADING, "Loading the model (the first start can take a minute)")
                return
            info = client.info()
        except errors.XCubeClientError as exc:
            if self._state in {READY, BUSY}:
                self._set(STARTING, f"Not answering ({exc.code}); waiting")
            return
        busy = info.busy or info.queue_length > 0
        text = f"{info.model_id} on {info.device} at {self.address}"
        if busy:
            self._set(BUSY, f"Generating ({info.queue_length} waiting): {text}")
        else:
            self._set(READY, f"Ready: {text}")

    def stop(self, wait: bool = False) -> None:
        """Asks the server to shut down (SIGTERM), kills it after ``STOP_GRACE`` s; returns at once
        unless ``wait``."""
        self._stopping.set()
        with self._lock:
            if self._state in RUNNING_STATES:
                self._state, self._message = STOPPING, "Stopping the local server"
        proc = self.proc
        if proc is None or proc.poll() is not None:
            if proc is None and not self.thread.is_alive():
                self._set(STOPPED, "Stopped")
            return
        proc.terminate()
        if wait:
            _reap(proc)
        else:
            threading.Thread(target=_reap, args=(proc,), name="xcube-local-server-stop", daemon=True).start()


def _reap_after_terminate(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
    _reap(proc)


def _reap(proc: subprocess.Popen) -> None:
    try:
        proc.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        log.warning("xcube local server (pid %d) did not stop in %.0f s; killing it", proc.pid, STOP_GRACE)
        proc.kill()
        proc.wait(5)


_EXIT_HINTS = (
    ("No module named", "The Python '{python}' cannot run the XCube server ({match}). Pick the Python of the "
                        "environment where XCube is installed"),
    ("cannot listen on", "The port is taken ({match}). Set the port to 0 (any free port) or pick another"),
    ("--model", "The model folder is not usable ({match}). Pick the folder with the model's config.json, "
                "or leave it empty for the shipped model"),
    ("model failed to load", "{Match}. Pick a model folder written by the trainer, or leave it empty for the "
                             "shipped model"),
    ("is not available", "{match}. Pick CPU or another GPU in the preferences"),
    ("out of memory", "The server ran out of memory ({match}). Use a smaller model or the CPU"),
)


def explain_exit(code: int, lines: list[str], config: LaunchConfig) -> str:
    """A crash message with what to do, from the exit code and the last log lines."""
    for needle, template in _EXIT_HINTS:
        for line in reversed(lines):
            if needle in line:
                match = line.split("error: ", 1)[-1].strip()[:160]
                text = template.format(python=config.python, match=match, Match=match[:1].upper() + match[1:])
                return f"{text} (exit code {code})."
    last = lines[-1].strip()[:160] if lines else "no output"
    return (f"The local server exited with code {code} ({last}). See its log below, fix the cause and press "
            "Start again")


# -- the one server of this Blender session ----------------------------------------------------------

_CURRENT: LocalServer | None = None


def current() -> LocalServer | None:
    return _CURRENT


_REFUSED = {"message": ""}  # why the last Start was refused (shown until the next Start)


def snapshot() -> Snapshot:
    snap = _CURRENT.snapshot() if _CURRENT is not None else Snapshot()
    if _REFUSED["message"] and not snap.running and snap.state != STOPPING:
        return Snapshot(FAILED, _REFUSED["message"], snap.log_tail)
    return snap


def start(config: LaunchConfig, poll: float = 0.25) -> LocalServer:
    """Validates ``config`` and starts the server in the background; returns at once.

    Raises:
        ValueError: a bad Python path, a taken port, a missing model folder or a server already running;
            the message says what to do.
    """
    global _CURRENT
    if _CURRENT is not None and _CURRENT.snapshot().state in RUNNING_STATES | {STOPPING}:
        raise ValueError(f"The local server is already running on {_CURRENT.address}; press Stop first")
    try:
        python = validate_python(config.python)
        model = "" if config.tiny else validate_model(config.model)
        port = check_port(config.port)
    except ValueError as exc:
        _REFUSED["message"] = str(exc)
        raise
    _REFUSED["message"] = ""
    config = dataclasses.replace(config, python=python, model=model)
    _CURRENT = LocalServer(config, port, poll)
    _CURRENT.start()
    return _CURRENT


def stop(wait: bool = False) -> bool:
    """Stops the server this module started; False if none runs."""
    if _CURRENT is None or _CURRENT.snapshot().state not in RUNNING_STATES:
        return False
    _CURRENT.stop(wait=wait)
    return True


def connection() -> tuple[str, str] | None:
    """``(address, token)`` of the running local server, or None."""
    snap = snapshot()
    return (snap.address, snap.token) if snap.running else None


def shutdown() -> None:
    """Stops the server and waits (Blender quits, or the add-on is disabled)."""
    if _CURRENT is not None:
        _CURRENT.stop(wait=True)
        _CURRENT.thread.join(STOP_GRACE + 6)


atexit.register(shutdown)
