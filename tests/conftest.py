"""Shared test setup: caches inside the repo's ignored .cache/, fixed torch threads, seeded generators."""

from __future__ import annotations

import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
_CACHE = ROOT / ".cache"
os.environ.setdefault("XDG_CACHE_HOME", str(_CACHE / "xdg"))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(_CACHE / "inductor"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# Test tensors are small: one thread avoids OpenMP barrier stalls when the cores are shared
# (measured: a tiny pipeline level took 14 s with 2 threads on a loaded machine, 0.3 s with 1).
torch.set_num_threads(int(os.environ.get("XCUBE_TEST_THREADS", "1")))


@pytest.fixture
def generator() -> torch.Generator:
    """A seeded CPU generator; tests never seed torch globally."""
    return torch.Generator().manual_seed(0)


_DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="needs CUDA"))]


@pytest.fixture(params=_DEVICES)
def device(request) -> torch.device:
    """Each device a test should pass on: the CPU always, CUDA where a GPU is present (skipped otherwise)."""
    return torch.device(request.param)
