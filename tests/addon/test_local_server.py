"""The local server started from Blender: a real `python -m server --tiny` child process, driven by the
add-on's operators in real Blender (bpy 5.0.1), reached over loopback gRPC with its generated token."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time

import pytest

bpy = pytest.importorskip("bpy")

from addon_support import ADDON_MODULE  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
START_TIMEOUT = 180.0  # a loaded 2-core CI box imports torch slowly


def _prefs():
    return bpy.context.preferences.addons[ADDON_MODULE].preferences


@pytest.fixture
def local(addon, settings, monkeypatch):
    """Preferences for a tiny local server run by this test's Python; the server is stopped afterwards."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    prefs = _prefs()
    prefs.local_python, prefs.local_port, prefs.local_device = sys.executable, 0, "CPU"
    prefs.local_tiny, prefs.local_model, prefs.local_autostart = True, "", False
    yield addon
    addon.local_server.shutdown()
    addon.local_server._CURRENT = None  # later tests see a panel without a local server
    addon.local_server._REFUSED["message"] = ""
    addon.local_server_ops._PENDING.clear()
    prefs.local_autostart = False


def _tick_until(addon, states, timeout=START_TIMEOUT):
    """Runs the add-on's timer step (as Blender's UI would) until the state is one of ``states``;
    returns the intervals it asked for."""
    intervals = []
    deadline = time.monotonic() + timeout
    while addon.local_server.snapshot().state not in states:
        assert time.monotonic() < deadline, f"still {addon.local_server.snapshot()}"
        intervals.append(addon.local_server_ops.tick())
        addon.jobs.drain_events()
        time.sleep(0.05)
    return intervals


def _draw_preferences_labels() -> list[str]:
    """The label texts of the preferences drawn into the UI tests' recording layout."""
    from test_ui import RecordingLayout

    log: list = []
    prefs = _prefs()

    class Proxy:
        layout = RecordingLayout(log)

        def __getattr__(self, name):
            return getattr(prefs, name)

    type(prefs).draw(Proxy(), bpy.context)
    return [e[1] for e in log if e[0] == "label"]


def _ignore_cancel(levels):
    from xcube_client.errors import GenerationCancelledError

    try:
        yield from levels
    except GenerationCancelledError:
        return


def _cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().decode().split("\0")


def test_start_ready_generate_stop_with_the_tiny_model(local, settings):
    from xcube_client.client import XCubeClient
    from xcube_client.errors import AuthenticationError
    from xcube_core.io.vdb import read_level
    from xcube_core.pipeline import XCubePipeline

    ls, ops = local.local_server, local.local_server_ops
    assert bpy.ops.xcube.server_start() == {"FINISHED"}
    # The operator returned before the server was ready: Blender's UI keeps running while it starts,
    # and the timer keeps asking to be called again until it is.
    assert ls.snapshot().state in {ls.STARTING, ls.LOADING}
    assert bpy.app.timers.is_registered(ops._timer)
    intervals = _tick_until(local, {ls.READY, ls.BUSY, ls.CRASHED, ls.FAILED})
    snap = ls.snapshot()
    assert snap.state == ls.READY, snap
    assert intervals and all(i == ops.FAST for i in intervals)
    assert ops.tick() == ops.SLOW  # running: a slow tick keeps the status line fresh
    host, port = snap.address.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0

    cmd = _cmdline(snap.pid)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and "--tiny" in cmd and "--cpu" in cmd
    assert snap.token and not any(snap.token in arg for arg in cmd)  # the token is not visible in `ps`
    with pytest.raises(AuthenticationError):
        XCubeClient(snap.address).info()  # without the generated token the server refuses

    settings.levels, settings.steps, settings.seed, settings.output = 0, 2, 5, "VOLUME"
    assert bpy.ops.xcube.generate() == {"FINISHED"}
    assert local.jobs.wait_for_jobs(120), settings.message
    assert settings.status == "DONE", settings.message
    assert settings.history[-1].server == snap.address  # Generate used the local server
    direct = list(XCubePipeline.tiny().generate(settings.prompt, seed=5, steps=2, guidance=settings.guidance))
    volumes = sorted((o for o in bpy.data.collections[settings.collection_name].objects if o.type == "VOLUME"),
                     key=lambda o: o["xcube_level"])
    assert len(volumes) == len(direct)
    for obj, level in zip(volumes, direct):
        stored = read_level(obj.data.filepath)
        assert {tuple(v) for v in stored.ijk.tolist()} == {tuple(v) for v in level.ijk.tolist()}

    # A long generation from another client: the status line says busy, then ready again.
    import threading

    client = XCubeClient(snap.address, token=snap.token)
    runner = threading.Thread(target=lambda: [_ for _ in _ignore_cancel(client.generate("busy", steps=1000))])
    runner.start()
    _tick_until(local, {ls.BUSY}, timeout=60)
    client.cancel()
    runner.join(30)
    _tick_until(local, {ls.READY}, timeout=60)
    client.close()

    proc = ls.current().proc
    assert bpy.ops.xcube.server_stop() == {"FINISHED"}
    _tick_until(local, {ls.STOPPED}, timeout=30)
    assert proc.poll() is not None
    assert ls.connection() is None


def test_wrong_python_and_taken_port_are_refused_with_what_to_do(local):
    ls = local.local_server
    before = ls.current()
    _prefs().local_python = "/nonexistent/venv/bin/python"
    with pytest.raises(RuntimeError, match="does not exist.*pick the python of the environment"):
        bpy.ops.xcube.server_start()
    # The refusal also stays in the status line of the panel, where the user looks.
    assert ls.snapshot().state == ls.FAILED and "does not exist" in ls.snapshot().message
    from test_ui import _draw_panel

    shown = " ".join(e[1] for e in _draw_panel() if e[0] == "label")
    assert "Could not start" in shown and "does not exist" in shown
    _prefs().local_python = sys.executable
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        _prefs().local_port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="already in use.*pick another port, or 0"):
            bpy.ops.xcube.server_start()
    _prefs().local_port = 0
    _prefs().local_tiny, _prefs().local_model = False, "/nonexistent/model"
    with pytest.raises(RuntimeError, match="model folder '/nonexistent/model' does not exist"):
        bpy.ops.xcube.server_start()
    assert ls.current() is before  # nothing was started


def test_python_without_xcube_fails_with_a_hint(local, tmp_path):
    """A Python that cannot import the server (here: this one, isolated from every site folder)."""
    ls = local.local_server
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} -I -S \"$@\"\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    _prefs().local_python = str(fake)
    assert bpy.ops.xcube.server_start() == {"FINISHED"}
    _tick_until(local, {ls.FAILED, ls.READY, ls.CRASHED}, timeout=60)
    snap = ls.snapshot()
    assert snap.state == ls.FAILED and "has no XCube installed" in snap.message
    assert "server" in snap.message and ".venv/bin/python" in snap.message


def test_a_server_that_dies_is_reported_as_crashed_with_its_log(local, tmp_path):
    ls = local.local_server
    empty = tmp_path / "empty_model"
    empty.mkdir()
    _prefs().local_tiny, _prefs().local_model = False, str(empty)  # exists, but holds no model
    assert bpy.ops.xcube.server_start() == {"FINISHED"}
    _tick_until(local, {ls.CRASHED, ls.READY, ls.FAILED})
    snap = ls.snapshot()
    assert snap.state == ls.CRASHED, snap
    assert "model" in snap.message and "exit code 1" in snap.message and snap.log_tail
    # The panel shows it where the user looks, with the log tail in the preferences.
    from test_ui import _draw_panel

    labels = [e for e in _draw_panel() if e[0] == "label"]
    assert any(e[2] == "ERROR" and "Crashed" in e[1] for e in labels)
    assert _draw_preferences_labels()[-4:] == [line[-110:] for line in snap.log_tail[-4:]]

    # Killed while running: also a crash, with the signal in the message.
    _prefs().local_tiny = True
    assert bpy.ops.xcube.server_start() == {"FINISHED"}
    _tick_until(local, {ls.READY, ls.CRASHED, ls.FAILED})
    os.kill(ls.snapshot().pid, signal.SIGKILL)
    _tick_until(local, {ls.CRASHED}, timeout=30)
    assert "exited with code -9" in ls.snapshot().message and "Start again" in ls.snapshot().message


def test_generate_starts_the_local_server_when_asked_to(local, settings):
    ls = local.local_server
    _prefs().local_autostart = True
    settings.levels, settings.steps = 1, 1
    assert bpy.ops.xcube.generate() == {"FINISHED"}
    assert settings.status == "CONNECTING" and "Starting the local server" in settings.message
    _tick_until(local, {ls.READY, ls.CRASHED, ls.FAILED})
    assert ls.snapshot().state == ls.READY
    local.local_server_ops.tick()  # the waiting generation starts
    assert local.jobs.wait_for_jobs(120)
    assert settings.status == "DONE", settings.message
    assert settings.history[-1].server == ls.snapshot().address


def test_the_server_stops_with_blender_and_with_its_parent(tmp_path):
    """atexit: a Blender session that started a server ends it on quit; --parent-pid: a server whose
    parent died (e.g. Blender crashed) exits by itself."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    script = textwrap.dedent(f"""
        import sys, time
        import bpy  # noqa: F401 - the add-on's modules need Blender
        sys.path.insert(0, {str(ROOT)!r})
        from blender_addon import local_server as ls
        server = ls.start(ls.LaunchConfig(python=sys.executable, tiny=True))
        deadline = time.monotonic() + {START_TIMEOUT}
        while ls.snapshot().state not in (ls.READY, ls.CRASHED, ls.FAILED) and time.monotonic() < deadline:
            time.sleep(0.1)
        print("STATE", ls.snapshot().state, server.proc.pid if server.proc else 0, flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         timeout=START_TIMEOUT + 60)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("STATE"))
    _, state, pid = line.split()
    assert state == "READY", out.stderr[-2000:]
    # Gone the moment the session ended: atexit stopped and reaped it (the --parent-pid watchdog alone
    # would take at least half a second more).
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)

    parent = subprocess.Popen(["sleep", "300"])
    child = subprocess.Popen([sys.executable, "-m", "server", "--tiny", "--cpu", "--port", "0", "--parent-pid",
                              str(parent.pid)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)
        assert child.poll() is None
        parent.kill()
        parent.wait()
        child.wait(60)
        assert b"parent process" in child.stderr.read()
    finally:
        for proc in (parent, child):
            if proc.poll() is None:
                proc.kill()


def test_stop_while_the_python_is_still_being_checked_leaves_no_process(local):
    """Stop pressed right after Start (before the process exists): nothing keeps running."""
    ls = local.local_server
    server = ls.start(ls.LaunchConfig(python=sys.executable, tiny=True))
    assert ls.stop() is True
    server.thread.join(START_TIMEOUT)
    assert not server.thread.is_alive()
    assert ls.snapshot().state == ls.STOPPED
    assert server.proc is None or server.proc.poll() is not None


def test_detect_python_finds_the_active_environment(local, tmp_path, monkeypatch):
    """An active virtual environment whose python can run the server is found; one without XCube is not."""
    broken = tmp_path / "broken"
    (broken / "bin").mkdir(parents=True)
    fake = broken / "bin" / "python"
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} -I -S \"$@\"\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(broken / "bin"))
    monkeypatch.setenv("VIRTUAL_ENV", str(broken))
    # only the environment variables count here: not a checkout's own .venv beside the add-on or cwd
    monkeypatch.setattr(local.local_server_ops, "search_roots", lambda: (str(tmp_path),))
    _prefs().local_python = ""
    with pytest.raises(RuntimeError, match="No Python with XCube found .*broken/bin/python"):
        bpy.ops.xcube.server_detect_python()
    assert _prefs().local_python == ""
    env = tmp_path / "venv"
    (env / "bin").mkdir(parents=True)
    good = env / "bin" / "python"
    good.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")  # (a bare symlink would lose the venv)
    good.chmod(good.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("VIRTUAL_ENV", str(env))
    assert bpy.ops.xcube.server_detect_python() == {"FINISHED"}
    assert _prefs().local_python == str(env / "bin" / "python")


def test_generate_waiting_for_a_server_that_cannot_start_says_why(local, settings, tmp_path):
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} -I -S \"$@\"\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    _prefs().local_python, _prefs().local_autostart = str(fake), True
    assert bpy.ops.xcube.generate() == {"FINISHED"}
    assert settings.status == "CONNECTING"
    _tick_until(local, {local.local_server.FAILED}, timeout=60)
    local.local_server_ops.tick()
    assert settings.status == "ERROR" and not settings.busy
    assert "The local server did not start" in settings.message and "has no XCube installed" in settings.message
    assert not local.jobs.active_jobs()
