"""Shutdown and status fidelity, client messages, several workers, busy-aware health (issue 13)."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest
from fake_pipeline import FakePipeline
from helpers import wait_for as _wait_for

from xcube_client import ServerUnavailableError, XCubeClient

ROOT = pathlib.Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
FAKE_MAIN = ("import sys; sys.path.insert(0, 'tests/server'); import server.__main__ as m\n"
             "from fake_pipeline import FakePipeline\n"
             "m.pipeline_factory = lambda args, device: (lambda: FakePipeline(step_delay={delay}))\n"
             "sys.exit(m.main({argv!r}))\n")



def _start(argv: list[str], delay: float = 0.01):
    """`python -m server` over FakePipeline in a child process; returns (process, port)."""
    code = FAKE_MAIN.format(delay=delay, argv=argv)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=ENV, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        found = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if found:
            return proc, int(found.group(1))
    proc.wait(10)
    raise AssertionError("server did not start")


def _request_lines(text: str) -> list[dict]:
    return [json.loads(m) for m in re.findall(r"request (\{.*\})", text)]


# -- 10: shutdown and status fidelity -----------------------------------------------------------------

def test_sigterm_gives_the_running_job_an_error_event_and_unavailable():
    """Before: the running job was cut without an Error event and logged as 'client went away'."""
    proc, port = _start(["--cpu", "--port", "0", "--grace", "0.5"], delay=0.05)
    try:
        client = XCubeClient(f"127.0.0.1:{port}")
        client.wait_until_serving(30)
        started, outcome = threading.Event(), {}

        def run():
            try:
                list(client.generate("a long job", steps=1000, outputs=("raw",), progress=lambda *a: started.set()))
            except Exception as exc:  # noqa: BLE001 - asserted below
                outcome["error"] = exc

        worker = threading.Thread(target=run)
        worker.start()
        assert started.wait(20)
        proc.send_signal(signal.SIGTERM)
        worker.join(30)
        rest = proc.stderr.read()
        assert proc.wait(30) == 0, rest
        error = outcome["error"]
        assert isinstance(error, ServerUnavailableError) and "shut down during this job" in str(error), error
        lines = _request_lines(rest)
        assert [line["outcome"] for line in lines] == ["UNAVAILABLE"], rest
        assert "went away" not in rest
        client.close()
    finally:
        proc.kill()
        proc.wait(10)


def test_second_signal_exits_at_once():
    proc, port = _start(["--cpu", "--port", "0", "--grace", "120"], delay=0.05)
    try:
        client = XCubeClient(f"127.0.0.1:{port}")
        client.wait_until_serving(30)
        started = threading.Event()
        worker = threading.Thread(target=lambda: _swallow(lambda: list(client.generate(
            "a long job", steps=1000, outputs=("raw",), progress=lambda *a: started.set()))), daemon=True)
        worker.start()
        assert started.wait(20)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert proc.poll() is None  # the first Ctrl-C waits for the running job (grace 120 s)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 130
        assert time.monotonic() - t0 < 15
        assert "exiting now" in proc.stderr.read()
        client.close()
    finally:
        proc.kill()
        proc.wait(10)


def _swallow(fn):
    try:
        fn()
    except Exception:  # noqa: BLE001 - the server goes away under it on purpose
        pass


def test_deadline_is_logged_as_deadline_exceeded(serve, caplog):
    server = serve(FakePipeline(step_delay=0.01), supported_outputs=("raw",))
    client = XCubeClient(server.address)
    with caplog.at_level(logging.INFO, logger="xcube.server"):
        with pytest.raises(Exception) as info:
            list(client.generate("slow", steps=1000, outputs=("raw",), timeout=0.5))
        assert info.value.code == "DEADLINE_EXCEEDED"
        _wait_for(lambda: _request_lines(caplog.text), what="the request line")
    assert [line["outcome"] for line in _request_lines(caplog.text)] == ["DEADLINE_EXCEEDED"]
    client.close()


def test_port_out_of_range_is_refused():
    for port in ("70000", "-1"):
        out = subprocess.run([sys.executable, "-m", "server", "--cpu", "--port", port], cwd=ROOT, env=ENV,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and "0..65535" in out.stderr and "Traceback" not in out.stderr, out.stderr


# -- several workers on one queue --------------------------------------------------------------------------

def test_two_workers_share_one_queue(serve):
    gate = threading.Event()
    fakes = [FakePipeline(voxels=(20,), gate=gate), FakePipeline(voxels=(20,), gate=gate)]
    server = serve(fakes, max_queue=3, supported_outputs=("raw",))
    assert len(server.workers) == 2
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(
        len(list(XCubeClient(server.address).generate(f"job {i}", seed=i, steps=1, outputs=("raw",), timeout=30)))))
        for i in range(3)]
    for t in threads:
        t.start()
    # two jobs run at once (one per worker), the third waits in the shared queue
    _wait_for(lambda: all(w.busy.is_set() for w in server.workers) and len(server.jobs) == 1,
              what="both workers busy and one job waiting")
    assert fakes[0].calls == 1 and fakes[1].calls == 1
    assert XCubeClient(server.address).info().busy is True
    gate.set()
    for t in threads:
        t.join(30)
    assert results == [1, 1, 1] and fakes[0].calls + fakes[1].calls == 3


def test_python_m_server_cpu_workers_2():
    proc, port = _start(["--cpu", "--workers", "2", "--port", "0", "--threads", "1"])
    try:
        client = XCubeClient(f"127.0.0.1:{port}")
        client.wait_until_serving(30)
        got = []
        threads = [threading.Thread(target=lambda i=i: got.append(len(list(client.generate(
            f"scene {i}", steps=20, outputs=("raw",), timeout=60))))) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert got == [3, 3]
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(30) == 0
        assert {t for t in re.findall(r'"id": "\w+"', rest)} and rest.count('"outcome": "OK"') == 2
        client.close()
    finally:
        proc.kill()
        proc.wait(10)


def test_gpu_list_is_parsed_and_checked():
    out = subprocess.run([sys.executable, "-m", "server", "--gpu", "0,7"], cwd=ROOT, env=ENV, capture_output=True,
                         text=True, timeout=180)  # imports torch: slow on a loaded box
    assert out.returncode != 0 and "is not available" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "server", "--gpu", "0,x"], cwd=ROOT, env=ENV, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "device numbers" in out.stderr


# -- health tells a balancer when to route elsewhere -------------------------------------------------------

def test_service_health_is_not_serving_while_the_queue_is_full(serve):
    gate = threading.Event()
    server = serve(FakePipeline(voxels=(20,), gate=gate), max_queue=1, supported_outputs=("raw",))
    client = XCubeClient(server.address)
    assert client.health("xcube.v1.XCube") == "SERVING"
    threads = [threading.Thread(target=lambda i=i: _swallow(lambda: list(XCubeClient(server.address).generate(
        f"job {i}", steps=1, outputs=("raw",), timeout=30)))) for i in range(2)]
    threads[0].start()
    _wait_for(server.worker.busy.is_set, what="a running job")
    threads[1].start()
    _wait_for(lambda: len(server.jobs) == 1, what="a full queue")
    assert client.health("xcube.v1.XCube") == "NOT_SERVING"  # a balancer takes it out of rotation
    assert client.health("") == "SERVING"                     # the process itself is fine
    gate.set()
    for t in threads:
        t.join(30)
    _wait_for(lambda: client.health("xcube.v1.XCube") == "SERVING", what="the service to serve again")
    client.close()


# -- 11: what the client tells its user ---------------------------------------------------------------------

def _make_cert(tmp_path, san: str):
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=somewhere.example", "-addext", f"subjectAltName={san}"],
                   check=True, capture_output=True)
    return cert, key


def test_tls_failures_are_not_reported_as_server_not_running(serve, tmp_path):
    cert, key = _make_cert(tmp_path, "DNS:somewhere.example")
    server = serve(FakePipeline(), tls_cert=str(cert), tls_key=str(key), supported_outputs=("raw",))
    mismatch = XCubeClient(server.address, root_certificates=cert.read_bytes(), timeout=5)
    with pytest.raises(ServerUnavailableError) as info:
        mismatch.info()
    assert "not running" not in str(info.value) and "is `python -m server` running" not in str(info.value)
    assert "certificate" in str(info.value) and "127.0.0.1" in str(info.value), str(info.value)
    mismatch.close()
    plain = XCubeClient(server.address, timeout=5)  # plaintext to a TLS port
    with pytest.raises(ServerUnavailableError) as info:
        plain.info()
    assert "is `python -m server` running" not in str(info.value) and "TLS" in str(info.value), str(info.value)
    plain.close()


def test_server_dying_mid_stream_is_reported_as_such():
    proc = subprocess.Popen([sys.executable, "tests/server/serve_fake.py", "0.05"], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(proc.stdout.readline())
        client = XCubeClient(f"127.0.0.1:{port}")
        client.wait_until_serving(30)
        with pytest.raises(ServerUnavailableError) as info:
            list(client.generate("die under me", steps=1000, outputs=("raw",),
                                 progress=lambda level, step, total: step == 3 and proc.kill()))
        assert "mid-stream" in str(info.value) and "is `python -m server` running" not in str(info.value)
        client.close()
    finally:
        proc.kill()
        proc.wait(10)


def test_client_names_bad_arguments_before_sending(serve, tmp_path):
    fake = FakePipeline()
    server = serve(fake, supported_outputs=("raw",))
    client = XCubeClient(server.address)
    with pytest.raises(ValueError, match=r"^seed must be in 0\.\."):
        list(client.generate("x", seed=-1, outputs=("raw",)))
    with pytest.raises(ValueError, match="^steps"):
        list(client.generate("x", steps=-3, outputs=("raw",)))
    (level,) = client.generate("pasted\r\nfrom windows", steps=1, num_levels=1, outputs=("raw",))
    assert level.metadata["prompt"] == "pasted\nfrom windows"
    client.close()
    cli = [sys.executable, "-m", "xcube_client", "--address", server.address, "generate", "x", "--outputs", "raw"]
    out = subprocess.run(cli + ["--out", str(tmp_path), "--seed", "-1"], cwd=ROOT, env=ENV, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1 and "seed must be in 0.." in out.stderr and "Traceback" not in out.stderr
    a_file = tmp_path / "taken.txt"
    a_file.write_text("not a folder")
    calls = fake.calls
    out = subprocess.run(cli + ["--out", str(a_file)], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "is a file, not a folder" in out.stderr
    assert fake.calls == calls  # refused before the server generated anything
