"""Sparse neural-network layers on `xcube_core.sparse`: conv, pooling, upsampling, norm, attention.

Layers that keep topology take and return voxel features (N, C); layers that change it return
``(features, grid)``. Convolutions take an explicit `ConvolutionPlan`.
"""

from xcube_core.nn.conv import SparseConv3d, SparseConvTranspose3d, PlanCache
from xcube_core.nn.pool import SparseMaxPool3d, SparseAvgPool3d, SparseUpsample3d
from xcube_core.nn.norm import SparseGroupNorm
from xcube_core.nn.attention import (SparseSelfAttention, SparseCrossAttention, attention_windows, to_padded,
                                    from_padded)

__all__ = [
    "SparseConv3d", "SparseConvTranspose3d", "PlanCache", "SparseMaxPool3d", "SparseAvgPool3d",
    "SparseUpsample3d", "SparseGroupNorm", "SparseSelfAttention", "SparseCrossAttention", "attention_windows",
    "to_padded", "from_padded",
]
