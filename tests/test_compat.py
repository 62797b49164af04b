"""Environment workarounds (`xcube_core.compat`): the normal path and the tested fallback of each."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest
import torch

from xcube_core.compat import thread_pinning
from xcube_core.sparse.ops import conv as conv_ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT}


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)


def test_torchvision_schema_fallback_makes_torchvision_importable():
    """Force the fallback (the real compiled ops refuse to load) in a fresh interpreter: torchvision
    imports, and its ops exist as schemas."""
    code = ("import torch\n"
            "from xcube_core.compat import torchvision_ops as t\n"
            "t._load_real_torchvision_ops = lambda: False\n"
            "t.ensure_torchvision_importable()\n"
            "t.ensure_torchvision_importable()\n"
            "assert t._SHIM_LIBRARY is not None\n"
            "import torchvision\n"
            "print('OK', hasattr(torch.ops.torchvision, 'nms'))\n")
    result = _run(code)
    assert result.returncode == 0 and "OK True" in result.stdout, result.stderr[-2000:]


def test_nothing_is_patched_at_import_time():
    code = ("import torch, xcube_core.models.text, xcube_core.compat.torchvision_ops as t\n"
            "print('LIB', t._SHIM_LIBRARY is None)\n")
    result = _run(code)
    assert result.returncode == 0 and "LIB True" in result.stdout, result.stderr[-2000:]


def test_without_per_thread_hooks_work_runs_unsplit_on_the_caller(monkeypatch):
    def no_library(*args, **kwargs):
        raise OSError("not loaded")

    monkeypatch.setattr(ctypes, "CDLL", no_library)  # e.g. macOS / Windows torch builds
    assert thread_pinning.one_thread_hooks() is None
    with pytest.raises(RuntimeError, match="unavailable"):
        thread_pinning.pin_one_thread()
    calls = []
    out = conv_ops.run_chunks(lambda a, b: calls.append((a, b)) or (b - a), 10, workers=4)
    assert out == [10] and calls == [(0, 10)]


@pytest.mark.skipif(thread_pinning.one_thread_hooks() is None, reason="needs GNU OpenMP + MKL (Linux torch wheels)")
def test_pinned_workers_split_the_work_and_leave_the_process_setting_alone():
    threads = torch.get_num_threads()
    out = conv_ops.run_chunks(lambda a, b: (a, b), 10, workers=3)
    assert out == [(0, 3), (3, 6), (6, 10)] and torch.get_num_threads() == threads
