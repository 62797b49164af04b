"""Sparse 3D diffusion U-Net in the ADM style ("Diffusion Models Beat GANs"), made sparse.

The output grid equals the input grid: the encoder coarsens with stride-2 convs onto
``grid.coarsened_grid(2)``, the decoder comes back with transposed convs onto the encoder's own grids
and concatenates the skips. Time and pooled text enter every res block through AdaGN; text tokens
enter through cross-attention at the configured resolutions; self-attention runs at the coarsest,
over the whole grid up to the native extent (``grid_shape``) and beyond it within native-sized windows
(`xcube_core.nn.attention_windows`): what the model saw in training, at a cost linear in the scene.
Input per voxel = noisy latent || coarser level's attributes (normals, semantic embedding) ||
Fourier position features || (``known_inputs``) the known clean latent times its mask, and the mask.
Output = v-prediction (same channels as the latent).

``known_inputs`` makes the U-Net an in/outpainting network, as the tile-by-tile scene generators do
(BlockFusion, NuiScene, WorldGrow): it *sees* which cells are held and their clean values instead of
only having them pasted into ``x_t`` (RePaint). The two channels come last so that a plain U-Net's
weights load into a widened one unchanged (``--init-from`` zero-fills new input channels); an empty
mask (all zeros) is plain generation.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from xcube_core.models.base import PretrainedMixin
from xcube_core.models.blocks import ConvBlock, ResBlock, position_features, timestep_embedding
from xcube_core.nn import (PlanCache, SparseConv3d, SparseConvTranspose3d, SparseCrossAttention, SparseSelfAttention,
                           attention_windows)
from xcube_core.sparse import GridBatch


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """Architecture of one level's diffusion U-Net.

    Attributes:
        latent_channels: channels of the latent being denoised.
        grid_shape: extent (voxels) of the latent grid, for position features.
        cond_normals: concatenate the coarser level's normals (3 channels).
        cond_classes: semantic classes of the coarser level (0 = none); embedded to sem_embed_dim.
        pos_freqs: Fourier frequencies per axis for position features (0 = none).
        model_channels, channel_mult, num_res_blocks: ADM widths and depth.
        cross_attention_levels: U-Net levels (indices into channel_mult) with text cross-attention.
        self_attention: self-attention in the middle block (coarsest resolution).
        context_dim: text token width (384 for MiniLM, 512 for CLIP ViT-B).
        known_inputs: take a known latent and its mask as extra inputs (in/outpainting).
    """

    latent_channels: int = 8
    grid_shape: tuple[int, int, int] = (16, 16, 8)
    cond_normals: bool = False
    cond_classes: int = 0
    sem_embed_dim: int = 8
    pos_freqs: int = 4
    model_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 1
    cross_attention_levels: tuple[int, ...] = (1, 2)
    self_attention: bool = True
    context_dim: int = 384
    heads: int = 4
    dropout: float = 0.0
    known_inputs: bool = False

    @property
    def known_channels(self) -> int:
        """Width of the ``known`` input: clean latent x mask, then the mask (0 without known inputs)."""
        return self.latent_channels + 1 if self.known_inputs else 0

    @property
    def in_channels(self) -> int:
        return (self.latent_channels + 3 * self.cond_normals + (self.sem_embed_dim if self.cond_classes else 0)
                + 6 * self.pos_freqs + self.known_channels)


class _Stage(nn.Module):
    """Res blocks (and optional cross-attention) at one resolution."""

    def __init__(self, in_ch: int, out_ch: int, n: int, emb_dim: int, cfg: UNetConfig, cross: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(in_ch if i == 0 else out_ch, out_ch, emb_dim, cfg.dropout)
                                    for i in range(n))
        self.cross = nn.ModuleList(SparseCrossAttention(out_ch, cfg.context_dim, cfg.heads) for _ in range(n)) \
            if cross else None

    def forward(self, h, grid, plans, emb, ctx, ctx_mask):
        for i, blk in enumerate(self.blocks):
            h = blk(h, grid, plans, emb)
            if self.cross is not None:
                h = self.cross[i](h, grid, ctx, ctx_mask)
        return h


class SparseUNet(nn.Module, PretrainedMixin):
    """v-prediction network for one level's latent diffusion (see module docstring)."""

    config_class = UNetConfig

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = cfg = config
        mc = cfg.model_channels
        widths = [mc * m for m in cfg.channel_mult]
        emb_dim = 4 * mc
        self.time_mlp = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.text_proj = nn.Linear(cfg.context_dim, emb_dim)
        self.sem_embed = nn.Embedding(cfg.cond_classes, cfg.sem_embed_dim) if cfg.cond_classes else None
        self.conv_in = SparseConv3d(cfg.in_channels, widths[0], 3)
        n_lvl = len(widths)
        self.down_stages = nn.ModuleList(
            _Stage(widths[i], widths[i], cfg.num_res_blocks, emb_dim, cfg, i in cfg.cross_attention_levels)
            for i in range(n_lvl))
        self.downsample = nn.ModuleList(SparseConv3d(widths[i], widths[i + 1], 2, 2) for i in range(n_lvl - 1))
        self.mid1 = ResBlock(widths[-1], widths[-1], emb_dim)
        self.mid_attn = SparseSelfAttention(widths[-1], cfg.heads) if cfg.self_attention else None
        self.mid_stride = 2 ** (n_lvl - 1)  # input voxels per middle-block voxel along an axis
        # a native scene's extent in middle-block voxels: self-attention windows beyond it
        self.attention_span = tuple(max(n // self.mid_stride, 1) for n in cfg.grid_shape[:2])
        self.windowed_attention = True  # False: over each whole grid, however large (before round 9; comparisons)
        self.mid_cross = SparseCrossAttention(widths[-1], cfg.context_dim, cfg.heads)
        self.mid2 = ResBlock(widths[-1], widths[-1], emb_dim)
        self.upsample = nn.ModuleList(SparseConvTranspose3d(widths[i + 1], widths[i], 2, 2) for i in range(n_lvl - 1))
        self.up_stages = nn.ModuleList(
            _Stage(2 * widths[i], widths[i], cfg.num_res_blocks, emb_dim, cfg, i in cfg.cross_attention_levels)
            for i in range(n_lvl))
        self.out = ConvBlock(widths[0], cfg.latent_channels)
        nn.init.zeros_(self.out.conv.weight)
        nn.init.zeros_(self.out.conv.bias)

    def input_features(self, x: torch.Tensor, grid: GridBatch, cond_normals: torch.Tensor | None,
                       cond_semantics: torch.Tensor | None, known: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        if known is not None and not cfg.known_inputs:
            raise ValueError("this U-Net takes no known latent (known_inputs=False); hold cells by replacement")
        feats = [x]
        if cfg.cond_normals:
            if cond_normals is None:
                raise ValueError("this U-Net is conditioned on the coarser level's normals; pass cond_normals (N, 3)")
            feats.append(cond_normals.to(x.dtype))
        if self.sem_embed is not None:
            if cond_semantics is None:
                raise ValueError("this U-Net is conditioned on coarser semantics; pass cond_semantics (N,)")
            s = cond_semantics.long()
            feats.append((self.sem_embed(s.clamp(min=0)) * (s >= 0)[:, None]).to(x.dtype))
        feats.append(position_features(grid, cfg.grid_shape, cfg.pos_freqs).to(x.dtype))
        if cfg.known_inputs:
            if known is None:  # nothing held: plain generation
                known = x.new_zeros(x.shape[0], cfg.known_channels)
            elif known.shape != (x.shape[0], cfg.known_channels):
                raise ValueError(f"known must have shape ({x.shape[0]}, {cfg.known_channels}) (clean latent x mask, "
                                 f"mask), got {tuple(known.shape)}")
            feats.append(known.to(x.dtype))
        return torch.cat(feats, dim=1)

    def forward(self, x: torch.Tensor, grid: GridBatch, t: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor, pooled: torch.Tensor, cond_normals: torch.Tensor | None = None,
                cond_semantics: torch.Tensor | None = None, plans: PlanCache | None = None,
                known: torch.Tensor | None = None, origin: torch.Tensor | None = None) -> torch.Tensor:
        """Predict v.

        Args:
            x: noisy latent. Shape: (N, latent_channels).
            grid: the latent grid (B grids).
            t: timesteps. Shape: (B,), int or float.
            context, context_mask, pooled: text tokens (B, T, D), mask (B, T) bool, pooled (B, D).
            cond_normals, cond_semantics: coarser level's attributes on ``grid`` ((N, 3), (N,)).
            plans: kernel maps to reuse (pass the same cache to every step of a sampling loop).
            known: with ``known_inputs``, ``known_latent_inputs(x0, mask)`` (N, latent_channels + 1);
                None = nothing held.
            origin: (3,) int, where the grid's voxel (0, 0, 0) lies in the scene (in its voxels), so
                that self-attention windows of grids larger than the native extent lie on the scene's
                lattice and overlapping windows of a tiled scene share them. None: the grid's own.
        Returns: (N, latent_channels).
        """
        if x.shape[0] != grid.total_voxels:
            raise ValueError(f"x has {x.shape[0]} rows, grid has {grid.total_voxels} voxels")
        if t.shape != (grid.grid_count,):
            raise ValueError(f"t must have shape ({grid.grid_count},), got {tuple(t.shape)}")
        cfg = self.config
        plans = PlanCache() if plans is None else plans
        emb = self.time_mlp(timestep_embedding(t, cfg.model_channels).to(x.dtype)) + self.text_proj(pooled.to(x.dtype))
        h = self.conv_in(self.input_features(x, grid, cond_normals, cond_semantics, known), plans.get(3, 1, grid))
        grids, skips, g = [grid], [], grid
        for i, stage in enumerate(self.down_stages):
            h = stage(h, g, plans, emb, context, context_mask)
            skips.append(h)
            if i < len(self.downsample):
                coarse = plans.coarsened(g, 2)
                h = self.downsample[i](h, plans.get(2, 2, g, coarse))
                g = coarse
                grids.append(g)
        h = self.mid1(h, g, plans, emb)
        if self.mid_attn is not None:
            windows = (attention_windows(g, self.attention_span, self.mid_stride, origin)
                       if self.windowed_attention else None)
            h = self.mid_attn(h, g, windows)
        h = self.mid_cross(h, g, context, context_mask)
        h = self.mid2(h, g, plans, emb)
        for i in reversed(range(len(self.up_stages))):
            if i < len(self.upsample):
                fine = grids[i]
                h = self.upsample[i](h, plans.get(2, 2, g, fine, transposed=True))
                g = fine
            h = self.up_stages[i](torch.cat([h, skips[i]], dim=1), g, plans, emb, context, context_mask)
        return self.out(h, g, plans)


def known_latent_inputs(x0: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The ``known`` input of a U-Net with ``known_inputs``: ``x0 * mask || mask``.

    Args:
        x0: clean (scaled) latent; rows outside ``mask`` are ignored. Shape: (N, C).
        mask: rows held. Shape: (N,), bool.
    Returns: (N, C + 1), x0's dtype.
    """
    m = mask.to(device=x0.device, dtype=x0.dtype)[:, None]
    return torch.cat([x0 * m, m], dim=1)
