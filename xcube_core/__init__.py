"""xcube_core: sparse voxel hierarchies and latent diffusion for text-to-3D scenes.

Layers (imports point one way): ``sparse`` <- ``nn`` <- ``models`` <- ``diffusion`` /
``pipeline`` <- ``cli``. Nothing here imports ``server`` or ``bpy``.
"""

__version__ = "0.1.0"

from xcube_core.errors import XCubeError, InvalidInputError, ModelLoadError, CancelledError  # noqa: E402,F401
