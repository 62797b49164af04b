"""Generated stubs are current; the client needs neither torch nor numpy; the client CLI writes files."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests.deps import require
from fake_pipeline import FakePipeline

ROOT = pathlib.Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def test_regenerating_the_stubs_yields_the_committed_files():
    require("grpc_tools")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_proto
    finally:
        sys.path.pop(0)
    assert gen_proto.check() == [], "stubs differ from proto/: run `python scripts/gen_proto.py` and commit"


def test_client_imports_without_torch_or_numpy():
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "sys.modules['numpy'] = None\n"
        "import xcube_client, server.client\n"
        "from xcube_client import XCubeClient\n"
        "XCubeClient('127.0.0.1:1').close()\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_client_cli_writes_every_level(serve, tmp_path):
    server = serve(FakePipeline(), supported_outputs=("raw",))
    cmd = [sys.executable, "-m", "server.client", "--address", server.address, "generate", "a quiet village",
           "--out", str(tmp_path), "--steps", "2", "--outputs", "raw", "--seed", "5"]
    out = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    direct = list(FakePipeline().generate("a quiet village", seed=5, steps=2))
    for level in direct:
        meta = json.loads((tmp_path / f"level_{level.index}.json").read_text())
        assert meta["num_voxels"] == level.num_voxels and meta["files"]["ijk"]["shape"] == [level.num_voxels, 3]
        ijk = np.fromfile(tmp_path / f"level_{level.index}_ijk.bin", dtype="<i4").reshape(-1, 3)
        np.testing.assert_array_equal(ijk, level.ijk.numpy())


def test_client_cli_explains_an_unreachable_server():
    cmd = [sys.executable, "-m", "xcube_client", "--address", "127.0.0.1:1", "info"]
    out = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "server not reachable at 127.0.0.1:1, is `python -m server` running?" in out.stderr
    assert "Traceback" not in out.stderr


def test_server_cli_help_and_missing_gpu():
    help_out = subprocess.run([sys.executable, "-m", "server", "--help"], cwd=ROOT, env=ENV, capture_output=True,
                              text=True, timeout=60)
    assert help_out.returncode == 0
    for flag in ("--gpu", "--cpu", "--host", "--port", "--model", "--max-queue", "--token", "--tls-cert", "--tls-key"):
        assert flag in help_out.stdout
    gpu = subprocess.run([sys.executable, "-m", "server", "--gpu", "7"], cwd=ROOT, env=ENV, capture_output=True,
                         text=True, timeout=60)
    assert gpu.returncode != 0 and "--cpu" in gpu.stderr and "Traceback" not in gpu.stderr
    missing = subprocess.run([sys.executable, "-m", "server", "--model", "/no/such/model"], cwd=ROOT, env=ENV,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr


def test_python_m_server_stops_gracefully_on_sigterm():
    import re
    import signal
    import threading

    from xcube_client import XCubeClient

    code = ("import sys; sys.path.insert(0, 'tests/server'); import server.__main__ as m\n"
            "from fake_pipeline import FakePipeline\n"
            "m.pipeline_factory = lambda args, device: (lambda: FakePipeline(step_delay=0.01))\n"
            "sys.exit(m.main(['--cpu', '--port', '0', '--grace', '20']))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=ENV, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "listening on" in line:
                break
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", lines[-1]).group(1))
        client = XCubeClient(f"127.0.0.1:{port}")
        client.wait_until_serving(30)
        got, started = [], threading.Event()
        worker = threading.Thread(target=lambda: got.extend(client.generate(
            "finish me", steps=20, outputs=("raw",), progress=lambda *a: started.set())))
        worker.start()
        assert started.wait(10)
        proc.send_signal(signal.SIGTERM)
        worker.join(30)
        rest = proc.stderr.read()
        assert proc.wait(30) == 0, rest
        assert [lv.index for lv in got] == [0, 1, 2]  # the running job finished within the grace period
        assert "received SIGTERM" in rest and '"outcome": "OK"' in rest
        client.close()
    finally:
        proc.kill()
        proc.wait(10)


def _start_cli_server(args):
    import re

    proc = subprocess.Popen([sys.executable, "-m", "server", *args], cwd=ROOT, env=ENV, stderr=subprocess.PIPE,
                            text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        found = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if found:
            return proc, int(found.group(1))
    proc.wait(10)
    raise AssertionError("server did not start:\n" + "".join(lines))


def test_python_m_server_tiny_end_to_end():
    import signal

    from xcube_client import XCubeClient

    proc, port = _start_cli_server(["--cpu", "--tiny", "--port", "0", "--max-queue", "2", "--threads", "1"])
    try:
        client = XCubeClient(f"127.0.0.1:{port}")
        client.wait_until_serving(120)
        info = client.info()
        assert info.model_loaded and info.limits["max_queue"] == 2 and info.device == "cpu"
        (level,) = client.generate("a tiny test scene", steps=1, num_levels=1, outputs=("raw",))
        assert level.index == 0 and level.num_voxels == level.artifacts["ijk"].shape[0]
        client.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait(10)
