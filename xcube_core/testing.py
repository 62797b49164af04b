"""Tiny seeded random-weight models for tests, benchmarks of overhead and `python -m server --tiny`.

Not a product model: its keep heads are biased so that untrained decoders still produce small,
non-trivial nested scenes (untrained logits would drop everything or nothing), and it keeps at most
a quarter of each level's box.
"""

from __future__ import annotations

import torch

from xcube_core.classes import CLASS_NAMES
from xcube_core.models.refine import RefineConfig, RefineNet
from xcube_core.models.unet import SparseUNet, UNetConfig
from xcube_core.models.vae import SparseStructureVAE, VAEConfig


def tiny_pipeline(seed: int = 0, device: str | torch.device = "cpu", known_inputs: bool = False):
    """A random-weight two-level `XCubePipeline` (16 m scene, 2 m and 1 m voxels); ``known_inputs``
    gives both U-Nets the in/outpainting inputs.

    The global torch RNG is left as it was: the library never seeds globally.
    """
    from xcube_core.models.text import HashTextEncoder
    from xcube_core.pipeline import XCubePipeline

    torch_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)  # restored below
        text = HashTextEncoder(dim=32)
        levels = [tiny_level((8, 8, 4), 2.0, dense=True, cond=False, ctx=text.dim, known_inputs=known_inputs),
                  tiny_level((16, 16, 8), 1.0, dense=False, cond=True, ctx=text.dim, known_inputs=known_inputs)]
    finally:
        torch.random.set_rng_state(torch_state)
    # Random weights barely look at the latent, so without a cap every seed would fill the same box:
    # keeping the top quarter of the keep logits makes seeds differ (each level says so in its metadata).
    return XCubePipeline(levels, text, f"tiny-{seed}", CLASS_NAMES, device, max_voxel_fraction=0.25)


def tiny_level(shape, voxel_size: float, dense: bool, cond: bool, ctx: int, known_inputs: bool = False):
    """One level's VAE, U-Net and refinement net at toy width, keep heads biased towards keeping.

    Args:
        shape: the level's grid shape (X, Y, Z) in voxels.
        voxel_size: metres.
        dense: a dense latent (the coarsest level) or a sparse one on the coarser level's grid.
        cond: whether the U-Net is conditioned on the coarser level's normals and classes.
        ctx: text token width.
        known_inputs: the U-Net takes a known latent and its mask (in/outpainting).
    """
    from xcube_core.pipeline import LevelModels

    channels = (8, 8, 16) if dense else (8, 16)  # level 1's latent lives on level 0's grid (2x coarser)
    vae = SparseStructureVAE(VAEConfig(grid_shape=shape, voxel_size=voxel_size, channels=channels,
                                       latent_channels=4, dense_latent=dense, sem_embed_dim=4))
    unet = SparseUNet(UNetConfig(latent_channels=4, grid_shape=vae.config.latent_shape, cond_normals=cond,
                                 cond_classes=len(CLASS_NAMES) if cond else 0, sem_embed_dim=4, pos_freqs=2,
                                 model_channels=8, channel_mult=(1, 2), cross_attention_levels=(1,),
                                 context_dim=ctx, heads=2, known_inputs=known_inputs))
    for head in vae.keep_heads:
        torch.nn.init.constant_(head.bias, 1.0)
    refine = RefineNet(RefineConfig(channels=8, blocks=1, sem_embed_dim=4, voxel_size=voxel_size))
    torch.nn.init.constant_(refine.keep.bias, 2.0)
    return LevelModels(vae, unet, refine, latent_scale=1.0)
