"""Execution backends of the sparse engine.

* `torch_backend` (the default, everywhere): gather-GEMM-scatter in plain PyTorch, CPU and CUDA.
* `fvdb` (optional): a thin adapter to fvdb-core 0.6.0 when ``import fvdb`` works (CUDA only in
  practice). It converts grids and features between our voxel order and fVDB's, and runs
  convolutions through ``fvdb.ConvolutionPlan``.

`conv_backend_for(x)` names the backend for features ``x``, and `execute_conv` runs a plan on it
(``nn``'s convolutions call it): CUDA features go through fVDB when it imports and agrees with the
torch backend (see `fvdb.convolution_for`), everything else through the torch backend. Nothing
switches at import time.
"""

from __future__ import annotations

import torch

from xcube_core.sparse.backends import fvdb as fvdb_backend
from xcube_core.sparse.backends import torch_backend

__all__ = ["available_backends", "conv_backend_for", "execute_conv", "fvdb_backend", "torch_backend"]


def available_backends() -> list[str]:
    """Names of the backends usable in this process, default first."""
    return ["torch"] + (["fvdb"] if fvdb_backend.is_available() else [])


def conv_backend_for(x: torch.Tensor) -> str:
    """``"fvdb"`` for CUDA features when fVDB imports, else ``"torch"``."""
    return "fvdb" if x.is_cuda and fvdb_backend.is_available() else "torch"


def execute_conv(plan, data, weight: torch.Tensor, bias: torch.Tensor | None = None):
    """``plan.execute(data, weight, bias)`` on the backend `conv_backend_for` picks (same contract).

    Full dense boxes stay on the torch backend's dense path (cuDNN on CUDA).
    """
    x = data.jdata if hasattr(data, "jdata") else data
    if plan.dense_layout is None and conv_backend_for(x) == "fvdb":
        fconv = fvdb_backend.convolution_for(plan)
        if fconv is not None:
            return fconv.execute(data, weight, bias)
    return plan.execute(data, weight, bias)
