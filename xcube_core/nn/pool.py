"""Pooling and nearest upsampling between a grid and its coarsened/refined grid."""

from __future__ import annotations

from torch import nn

from xcube_core.sparse import GridBatch


class SparseMaxPool3d(nn.Module):
    """Max over each parent's active children: (data, grid) -> (coarse data, coarse grid)."""

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, data, grid: GridBatch, coarse_grid: GridBatch | None = None):
        return grid.max_pool(self.factor, data, coarse_grid)


class SparseAvgPool3d(SparseMaxPool3d):
    """Mean over each parent's active children."""

    def forward(self, data, grid: GridBatch, coarse_grid: GridBatch | None = None):
        return grid.avg_pool(self.factor, data, coarse_grid)


class SparseUpsample3d(nn.Module):
    """Nearest upsampling to the children of (masked) voxels, or onto a given finer grid."""

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, data, grid: GridBatch, mask=None, fine_grid: GridBatch | None = None):
        return grid.refine(self.factor, data, mask=mask, fine_grid=fine_grid)
