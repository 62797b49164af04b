"""The sparse voxel engine: fVDB's vocabulary on a pure-PyTorch backend (CPU and CUDA).

``GridBatch`` is immutable topology, ``JaggedTensor`` holds features, ``ConvolutionPlan`` is an explicit,
reusable kernel map. When ``import fvdb`` works, `backends.fvdb` converts to and from fVDB objects.
"""

from xcube_core.sparse.jagged import JaggedTensor
from xcube_core.sparse.grid import GridBatch
from xcube_core.sparse.conv_plan import ConvolutionPlan, kernel_offsets

__all__ = ["JaggedTensor", "GridBatch", "ConvolutionPlan", "kernel_offsets"]
