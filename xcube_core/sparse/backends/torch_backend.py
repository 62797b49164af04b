"""The default backend: pure PyTorch on any device (see `xcube_core.sparse.ops.conv`)."""

from __future__ import annotations

import torch

name = "torch"


def is_available() -> bool:
    """Always true: the torch backend is what the engine is written in."""
    return True


def execute_conv(plan, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Run ``plan`` on features ``x`` (N_in, C_in) with ``weight`` (K, C_in, C_out); see `ConvolutionPlan.execute`."""
    return plan.execute(x, weight, bias)
