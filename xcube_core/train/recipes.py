"""The default model's per-level architecture ("recipe"), sized to train on 2 CPU cores.

Data (``xcube data procedural``, 3 levels): 1 m (64 x 64 x 32), 0.5 m and 0.25 m (256 x 256 x 128).
Model levels, after XCube's ShapeNet configuration scaled down:

* level 0 — 1 m voxels: VAE to a *dense* 16 x 16 x 8 latent (8 channels, KL 0.03); a diffusion U-Net
  on that dense grid with position features and text cross-attention.
* level 1 — 0.25 m voxels: VAE whose *sparse* latent (8 channels) lives on the 1 m grid that level 0
  decodes; its U-Net takes the latent || level-0 normals || level-0 semantic embedding.

A recipe names which data levels a task loads: ``data_levels[-1]`` is the level's own grid and, for
level 1, ``data_levels[0]`` the coarser level whose attributes condition its diffusion.
"""

from __future__ import annotations

import dataclasses

from xcube_core.classes import NUM_CLASSES
from xcube_core.models.refine import RefineConfig
from xcube_core.models.unet import UNetConfig
from xcube_core.models.vae import VAEConfig

TEXT_ENCODER = {"name": "minilm"}


@dataclasses.dataclass(frozen=True)
class LevelRecipe:
    """How one model level is built and trained.

    Attributes:
        data_levels: data hierarchy levels to load (last = this level's grid).
        crop: training crop of this level's grid in voxels (X = Y), a multiple of the latent stride;
            None trains on whole scenes. The convolutions are translation invariant, so crops teach
            the same local structure at a fraction of the cost.
    """

    data_levels: tuple[int, ...]
    vae: VAEConfig
    unet: UNetConfig
    refine: RefineConfig
    crop: int | None = None


DEFAULT_RECIPE: dict[int, LevelRecipe] = {
    0: LevelRecipe(
        data_levels=(0,),
        vae=VAEConfig(grid_shape=(64, 64, 32), voxel_size=1.0, num_classes=NUM_CLASSES, channels=(16, 32, 64),
                      latent_channels=8, dense_latent=True, dilate_steps=1, kl_weight=0.03),
        unet=UNetConfig(latent_channels=8, grid_shape=(16, 16, 8), pos_freqs=4, model_channels=32,
                        channel_mult=(1, 2, 4), cross_attention_levels=(1, 2), context_dim=384),
        refine=RefineConfig(num_classes=NUM_CLASSES, channels=16, blocks=2, voxel_size=1.0),
    ),
    1: LevelRecipe(
        data_levels=(0, 2),
        vae=VAEConfig(grid_shape=(256, 256, 128), voxel_size=0.25, num_classes=NUM_CLASSES, channels=(8, 16, 32),
                      latent_channels=8, dense_latent=False, dilate_steps=1, kl_weight=0.1),
        unet=UNetConfig(latent_channels=8, grid_shape=(64, 64, 32), cond_normals=True, cond_classes=NUM_CLASSES,
                        pos_freqs=0, model_channels=32, channel_mult=(1, 2, 4), cross_attention_levels=(2,),
                        context_dim=384),
        refine=RefineConfig(num_classes=NUM_CLASSES, channels=8, blocks=1, voxel_size=0.25),
        crop=128,
    ),
}
