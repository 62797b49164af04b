"""Sparse convolution modules and an explicit per-forward cache of plans."""

from __future__ import annotations

import math

import torch
from torch import nn

from xcube_core.sparse import ConvolutionPlan, GridBatch
from xcube_core.sparse.backends import execute_conv


class PlanCache:
    """Builds each kernel map once per (source, target, kernel, stride, transposed).

    Pass one instance down a network's forward, or reuse it across the forwards of a sampling loop on
    the same grid (every diffusion step); it lives as long as the grids it was built on.
    """

    def __init__(self) -> None:
        self._plans: dict[tuple, ConvolutionPlan] = {}
        self._coarse: dict[tuple, tuple[GridBatch, GridBatch]] = {}

    def coarsened(self, grid: GridBatch, factor: int = 2) -> GridBatch:
        """``grid.coarsened_grid(factor)``, built once, so plans on it are found again next call."""
        key = (id(grid), factor)
        hit = self._coarse.get(key)
        if hit is None:
            hit = (grid, grid.coarsened_grid(factor))  # keep the source alive: its id stays unique
            self._coarse[key] = hit
        return hit[1]

    def get(self, kernel_size: int, stride: int, source: GridBatch, target: GridBatch | None = None,
            transposed: bool = False) -> ConvolutionPlan:
        key = (id(source), id(target), kernel_size, stride, transposed)
        plan = self._plans.get(key)
        if plan is None:
            plan = ConvolutionPlan.from_grid_batch(kernel_size, stride, source, target, transposed)
            # Keep the grids alive with the plan so their ids stay unique while cached.
            self._plans[key] = plan
        return plan


class _SparseConvBase(nn.Module):
    transposed = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 bias: bool = True) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be >= 1, got {in_channels} -> {out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = kernel_size, stride
        k = kernel_size ** 3
        self.weight = nn.Parameter(torch.empty(k, in_channels, out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        bound = 1.0 / math.sqrt(in_channels * k)  # torch.nn.Conv3d's default (kaiming_uniform, a=sqrt(5))
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, data, plan: ConvolutionPlan):
        if plan.transposed != self.transposed or plan.stride != self.stride or \
                plan.kernel_size != (self.kernel_size,) * 3:
            raise ValueError(
                f"{type(self).__name__}(k={self.kernel_size}, s={self.stride}) got a plan with "
                f"k={plan.kernel_size}, s={plan.stride}, transposed={plan.transposed}"
            )
        return execute_conv(plan, data, self.weight, self.bias)  # fVDB for CUDA features when it imports

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"


class SparseConv3d(_SparseConvBase):
    """Sparse 3D convolution; submanifold when the plan's source and target grids are the same."""


class SparseConvTranspose3d(_SparseConvBase):
    """Sparse transposed 3D convolution (scatters each input voxel to input * stride + d)."""

    transposed = True
