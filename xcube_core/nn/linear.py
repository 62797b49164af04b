"""`VoxelLinear`: an `nn.Linear` over per-voxel rows (N, C) whose row count is bucketed on the CPU in
bfloat16/float16, so oneDNN's per-shape primitive caches stop growing scene after scene (see
`xcube_core.sparse.ops.matmul`). Same parameters and state-dict keys as `nn.Linear`."""

from __future__ import annotations

import torch
from torch import nn

from xcube_core.sparse.ops.matmul import linear_rows


class VoxelLinear(nn.Linear):
    """`nn.Linear` for voxel features. Shape: (N, C_in) -> (N, C_out)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_rows(x, self.weight, self.bias)
