"""Execution backends of the sparse engine.

* `torch_backend` (the default, everywhere): gather-GEMM-scatter in plain PyTorch, CPU and CUDA.
* `fvdb` (optional): a thin adapter to fvdb-core 0.6.0 when ``import fvdb`` works (CUDA only in
  practice). It converts grids and features between our voxel order and fVDB's, and runs
  convolutions through ``fvdb.ConvolutionPlan``.

`conv_backend_for(x)` names the backend a caller would pick for features ``x``; nothing switches
implicitly at import time.
"""

from __future__ import annotations

import torch

from xcube_core.sparse.backends import fvdb as fvdb_backend
from xcube_core.sparse.backends import torch_backend

__all__ = ["available_backends", "conv_backend_for", "fvdb_backend", "torch_backend"]


def available_backends() -> list[str]:
    """Names of the backends usable in this process, default first."""
    return ["torch"] + (["fvdb"] if fvdb_backend.is_available() else [])


def conv_backend_for(x: torch.Tensor) -> str:
    """``"fvdb"`` for CUDA features when fVDB imports, else ``"torch"``."""
    return "fvdb" if x.is_cuda and fvdb_backend.is_available() else "torch"
