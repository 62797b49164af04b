"""Sparse structure VAE, one per level (XCube §3.1, in our words).

Encoder: sparse 3x3x3 convs alternating with 2x max pooling, from the level's grid down to the
latent grid; a head gives mean and log-variance (reparameterised). For the coarsest level the latent
is *dense* (every cell of a fixed box, e.g. 16x16x8), so diffusion there runs on a fixed grid.

Decoder: structure prediction after Neural Kernel Surface Reconstruction. Starting on the latent grid
it repeats: (early-dilate the grid by one voxel at coarse steps, so it can grow) -> res blocks ->
per-voxel keep/drop logits -> prune -> subdivide 2x with a transposed conv; at the level's resolution
heads predict normals and semantic classes. In training the next grid follows the ground truth
(teacher forcing); in sampling it follows the logits.

Loss = sum over decoder steps of BCE(structure) + L1(normals) + CE(semantics) + kl_weight * KL.
``losses`` also reports each step's BCE (``structure_s0`` = the coarsest step, ...), detached, so a
training log shows which step carries the structure loss.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from xcube_core.models.base import PretrainedMixin
from xcube_core.models.blocks import ConvBlock, ResBlock
from xcube_core.nn import PlanCache, SparseConv3d, SparseConvTranspose3d
from xcube_core.nn.linear import VoxelLinear
from xcube_core.sparse import GridBatch


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Architecture of one level's VAE.

    Attributes:
        grid_shape: extent of the level in voxels (X, Y, Z); voxels lie in [0, grid_shape).
        voxel_size: the level's voxel size in metres.
        num_classes: semantic classes (0 disables the semantic head and input).
        channels: encoder widths from the level's resolution down to the latent (len = num_down + 1);
            the decoder mirrors them.
        latent_channels: channels of the latent X_l.
        dense_latent: latent on the dense box grid_shape / 2**num_down (coarsest level) instead of on
            the sparse coarsened grid.
        dilate_steps: number of coarse decoder steps that early-dilate their grid by one voxel.
        blocks: res blocks per resolution.
        kl_weight: weight of KL(q(X|G) || N(0, I)).
        position_features: give the encoder each voxel's position inside its latent voxel
            ((ijk mod 2**num_down), scaled to [-1, 1]). Convolutions are translation invariant and
            max pooling forgets which child a feature came from, so without them a wall one voxel
            off inside its latent cell encodes identically: the decoder must guess the layer.
    """

    grid_shape: tuple[int, int, int] = (64, 64, 32)
    voxel_size: float = 1.0
    num_classes: int = 9
    sem_embed_dim: int = 8
    channels: tuple[int, ...] = (16, 32, 64)
    latent_channels: int = 8
    dense_latent: bool = True
    dilate_steps: int = 1
    blocks: int = 1
    kl_weight: float = 0.03
    normal_weight: float = 1.0
    semantic_weight: float = 1.0
    position_features: bool = False

    @property
    def num_down(self) -> int:
        return len(self.channels) - 1

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        f = 2 ** self.num_down
        return tuple(-(-s // f) for s in self.grid_shape)

    @property
    def in_channels(self) -> int:
        return 4 + (self.sem_embed_dim if self.num_classes else 0) + 3 * self.position_features


@dataclasses.dataclass
class DecodedLevel:
    """Decoder output: the grid at the level's resolution and its attributes and per-step logits."""

    grid: GridBatch
    normals: torch.Tensor            # (N, 3) unit
    semantic_logits: torch.Tensor | None  # (N, num_classes)
    step_grids: list[GridBatch]      # grid on which each step's keep logits live
    step_logits: list[torch.Tensor]  # (N_s,) keep logits per step
    budget_dropped: int = 0          # voxels ``max_voxels`` removed (over all steps) when sampling

    @property
    def semantics(self) -> torch.Tensor | None:
        return None if self.semantic_logits is None else self.semantic_logits.argmax(dim=1)


def attribute_features(normals: torch.Tensor | None, semantics: torch.Tensor | None, n: int,
                       sem_embed: nn.Embedding | None, device) -> torch.Tensor:
    """Per-voxel input features: [1, normal xyz, semantic embedding] (unknown class -1 -> zeros)."""
    ones = torch.ones(n, 1, device=device)
    nrm = normals.float() if normals is not None else torch.zeros(n, 3, device=device)
    feats = [ones, nrm]
    if sem_embed is not None:
        if semantics is None:
            feats.append(torch.zeros(n, sem_embed.embedding_dim, device=device))
        else:
            s = semantics.long()
            emb = sem_embed(s.clamp(min=0))
            feats.append(emb * (s >= 0).to(emb.dtype)[:, None])
    return torch.cat(feats, dim=1)


class SparseStructureVAE(nn.Module, PretrainedMixin):
    """Per-level sparse structure VAE (see module docstring)."""

    config_class = VAEConfig

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.sem_embed = nn.Embedding(config.num_classes, config.sem_embed_dim) if config.num_classes else None
        # encoder: fine -> coarse
        self.enc_in = SparseConv3d(config.in_channels, c[0], 3)
        self.enc_blocks = nn.ModuleList(
            nn.ModuleList(ResBlock(c[i] if j == 0 else c[i], c[i]) for j in range(config.blocks))
            for i in range(len(c))
        )
        self.enc_proj = nn.ModuleList(VoxelLinear(c[i], c[i + 1]) for i in range(len(c) - 1))
        self.enc_dense = ResBlock(c[-1], c[-1]) if config.dense_latent else None
        self.enc_out = ConvBlock(c[-1], 2 * config.latent_channels)
        # decoder: coarse -> fine; step s works at width c[-1 - s]
        self.dec_in = SparseConv3d(config.latent_channels, c[-1], 3)
        steps = config.num_down + 1
        self.dec_blocks = nn.ModuleList(
            nn.ModuleList(ResBlock(c[-1 - s], c[-1 - s]) for _ in range(config.blocks + (s == 0)))
            for s in range(steps)
        )
        self.keep_heads = nn.ModuleList(VoxelLinear(c[-1 - s], 1) for s in range(steps))
        self.up = nn.ModuleList(SparseConvTranspose3d(c[-1 - s], c[-2 - s], 2, 2) for s in range(steps - 1))
        self.normal_head = VoxelLinear(c[0], 3)
        self.semantic_head = VoxelLinear(c[0], config.num_classes) if config.num_classes else None

    # --- encoder ------------------------------------------------------------------------------
    def encoder_parameters(self) -> list[nn.Parameter]:
        """The parameters that map a grid to its posterior (what fixes the latent space)."""
        parts = [self.sem_embed, self.enc_in, self.enc_blocks, self.enc_proj, self.enc_dense, self.enc_out]
        return [p for m in parts if m is not None for p in m.parameters()]

    def latent_grid_for(self, grid: GridBatch, grid_shape: tuple[int, int, int] | None = None) -> GridBatch:
        """The grid the latent of ``grid`` lives on (dense box, or the coarsened grid).

        ``grid_shape`` overrides the level's box (e.g. a larger scene than the model was trained on).
        """
        cfg = self.config
        if cfg.dense_latent:
            f = 2 ** cfg.num_down
            vs = grid.voxel_sizes * f
            shape = cfg.latent_shape if grid_shape is None else tuple(-(-s // f) for s in grid_shape)
            return GridBatch.from_dense(grid.grid_count, shape, voxel_sizes=vs[0],
                                        origins=grid.origins[0] + (f - 1) * 0.5 * grid.voxel_sizes[0],
                                        device=grid.device)
        return grid.coarsened_grid(2 ** cfg.num_down)

    def encode(self, grid: GridBatch, normals: torch.Tensor | None, semantics: torch.Tensor | None):
        """Posterior q(X | G, A). Returns (mean, logvar, latent grid); mean/logvar (N_lat, C_lat)."""
        plans = PlanCache()
        x = attribute_features(normals, semantics, grid.total_voxels, self.sem_embed, grid.device)
        if self.config.position_features:
            f = 2 ** self.config.num_down
            sub = torch.remainder(grid.ijk.jdata, f).to(x.dtype)  # position inside the latent voxel
            x = torch.cat([x, (sub + 0.5) * (2.0 / f) - 1.0], dim=1)
        h = self.enc_in(x, plans.get(3, 1, grid))
        g = grid
        for i, blocks in enumerate(self.enc_blocks):
            for blk in blocks:
                h = blk(h, g, plans)
            if i < len(self.enc_proj):
                h, g = g.max_pool(2, self.enc_proj[i](h))
        if self.enc_dense is not None:
            dense = self.latent_grid_for(grid)
            h = dense.inject_from(g, h, default_value=0.0)
            g = dense
            h = self.enc_dense(h, g, plans)
        mean, logvar = self.enc_out(h, g, plans).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0), g

    # --- decoder ------------------------------------------------------------------------------
    def decode(self, latent: torch.Tensor, latent_grid: GridBatch, target: GridBatch | None = None,
               keep_threshold: float = 0.0, max_voxels: int | None = None,
               grid_shape: tuple[int, int, int] | None = None, keep_support: bool | None = None,
               parent_semantics: torch.Tensor | None = None, class_prior: float = 0.0) -> DecodedLevel:
        """Structure-predicting decoder.

        Args:
            latent: (N_lat, C_lat) on ``latent_grid``.
            target: ground-truth grid at the level's resolution for teacher forcing (training).
            keep_threshold: logit above which a voxel is kept when sampling.
            max_voxels: memory bound on voxels at the level's resolution when sampling (keeps the
                top logits; see `decode_budget`); coarser steps get max_voxels / 8 per step up. How
                many it removed is ``DecodedLevel.budget_dropped``.
            grid_shape: the level's box (voxels stay in [0, grid_shape)); default the config's.
            keep_support: sampling keeps every voxel of ``latent_grid`` and at least one child of
                every kept voxel at each subdivision (its highest logit), so no voxel of the coarser
                level is left without children (an "orphan": a hole in the finer level). The data
                guarantee this by construction (a finer level coarsens to the coarser one), so it is
                a prior, not a guess. Default: on for a sparse latent (which lives on the coarser
                level's grid), off for a dense one.
            parent_semantics: (N_lat,) long, the coarser level's class of each latent voxel (-1 for
                unknown); with ``class_prior`` > 0 it is added (in nats) to the semantic logits of
                its descendants. In the data 98 % of 0.25 m voxels share their 1 m parent's class,
                so the coarser level's label is a strong prior where the decoder is unsure.
        """
        cfg = self.config
        plans = PlanCache()
        g = latent_grid
        h = self.dec_in(latent, plans.get(3, 1, g))
        step_grids, step_logits = [], []
        dropped = 0
        steps = cfg.num_down + 1
        support = (not cfg.dense_latent) if keep_support is None else keep_support
        parents = latent_grid
        for s in range(steps):
            if s < cfg.dilate_steps:
                grown = self._within_bounds(g.dilated_grid(1), steps - 1 - s, grid_shape)
                h, g = grown.inject_from(g, h, 0.0), grown
            for blk in self.dec_blocks[s]:
                h = blk(h, g, plans)
            logits = self.keep_heads[s](h).squeeze(1)
            step_grids.append(g)
            step_logits.append(logits)
            if target is not None:
                factor = 2 ** (steps - 1 - s)
                gt = target.coarsened_grid(factor) if factor > 1 else target
                keep = gt.coords_in_grid(g.ijk).jdata
            else:
                keep = logits > keep_threshold
                if support:
                    keep = keep | _orphan_rescue(g, logits, parents, first=s == 0)
                budget = None if max_voxels is None else max(1, max_voxels // 8 ** (steps - 1 - s))
                wanted = int(keep.sum())
                if budget is not None and wanted > budget:
                    keep = torch.zeros_like(keep)
                    keep[torch.topk(logits, budget).indices] = True  # exactly `budget`, ties included
                    dropped += wanted - int(keep.sum())
            kept = g.pruned_grid(keep)
            parents = kept
            h = h[keep]
            if s < steps - 1:
                fine = kept.refined_grid(2)
                h = self.up[s](h, plans.get(2, 2, kept, fine, transposed=True))
                g = fine
            else:
                g = kept
        normals = F.normalize(self.normal_head(h).float(), dim=1, eps=1e-6)
        sem = self.semantic_head(h).float() if self.semantic_head is not None else None
        if sem is not None and parent_semantics is not None and class_prior > 0 and g.total_voxels:
            sem = _add_parent_prior(sem, g, latent_grid, parent_semantics, class_prior, 2 ** cfg.num_down)
        return DecodedLevel(g, normals, sem, step_grids, step_logits, dropped)

    def _within_bounds(self, grid: GridBatch, levels_up: int, grid_shape=None) -> GridBatch:
        """Drop voxels outside the level's box [0, grid_shape) seen ``levels_up`` halvings coarser."""
        f = 2 ** levels_up
        shape = self.config.grid_shape if grid_shape is None else grid_shape
        hi = torch.tensor([-(-s // f) for s in shape], device=grid.device)
        ijk = grid.ijk.jdata
        inside = ((ijk >= 0) & (ijk < hi)).all(dim=1)
        return grid if bool(inside.all()) else grid.pruned_grid(inside)

    # --- training -----------------------------------------------------------------------------
    def forward(self, grid: GridBatch, normals: torch.Tensor, semantics: torch.Tensor | None,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Reconstruction losses for a batch (teacher-forced decode of a sampled posterior)."""
        mean, logvar, lat_grid = self.encode(grid, normals, semantics)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype) \
            if generator is not None else torch.randn_like(mean)
        z = mean + torch.exp(0.5 * logvar) * noise
        dec = self.decode(z, lat_grid, target=grid)
        return self.losses(dec, grid, normals, semantics, mean, logvar, lat_grid)

    def losses(self, dec: DecodedLevel, grid, normals, semantics, mean, logvar, lat_grid) -> dict:
        cfg = self.config
        structure = 0.0
        per_step = {}
        steps = len(dec.step_grids)
        for s, (g, logit) in enumerate(zip(dec.step_grids, dec.step_logits)):
            factor = 2 ** (steps - 1 - s)
            gt = grid.coarsened_grid(factor) if factor > 1 else grid
            occ = gt.coords_in_grid(g.ijk).jdata.float()
            step_bce = F.binary_cross_entropy_with_logits(logit.float(), occ)
            per_step[f"structure_s{s}"] = step_bce.detach()  # coarsest step first: each step's share
            structure = structure + step_bce
        # teacher forcing makes dec.grid == grid: align attributes by coordinates
        idx = grid.ijk_to_index(dec.grid.ijk, cumulative=True).jdata
        n_loss = (dec.normals - normals[idx].float()).abs().sum(1).mean()
        out = {"structure": structure, **per_step, "normal": n_loss}
        total = structure + cfg.normal_weight * n_loss
        if dec.semantic_logits is not None and semantics is not None:
            tgt = semantics[idx].long()
            s_loss = F.cross_entropy(dec.semantic_logits, tgt, ignore_index=-1) if bool((tgt >= 0).any()) \
                else dec.semantic_logits.sum() * 0.0
            out["semantic"] = s_loss
            total = total + cfg.semantic_weight * s_loss
        kl = 0.5 * (mean.float() ** 2 + logvar.float().exp() - 1.0 - logvar.float()).sum(1)
        kl = (torch.zeros(lat_grid.grid_count, device=kl.device).index_add_(0, lat_grid.jidx.long(), kl)
              / lat_grid.num_voxels.clamp(min=1)).mean()
        out["kl"] = kl
        out["loss"] = total + cfg.kl_weight * kl
        return out

    @torch.no_grad()
    def reconstruct(self, grid: GridBatch, normals, semantics) -> DecodedLevel:
        """Encode to the posterior mean and decode by prediction (no teacher forcing)."""
        mean, _, lat_grid = self.encode(grid, normals, semantics)
        return self.decode(mean, lat_grid)


def _orphan_rescue(grid: GridBatch, logits: torch.Tensor, parents: GridBatch, first: bool) -> torch.Tensor:
    """(N,) bool: voxels to keep so that no voxel of ``parents`` loses all its descendants.

    At the first step ``grid`` is the (dilated) latent grid itself and every voxel of ``parents`` is
    kept; later, ``grid`` is the 2x subdivision of ``parents`` and the best-scoring child of every
    parent is marked (the caller ORs this with the thresholded logits).
    """
    if first:
        return parents.coords_in_grid(grid.ijk).jdata
    score = logits.float()[:, None]
    best, _ = grid.max_pool(2, score, coarse_grid=parents)  # each parent's best child logit
    ones = torch.ones_like(best)
    # back to the children, with a 1/0 column for "has a parent in ``parents``" (refine fills 0)
    back, _ = parents.refine(2, torch.cat([best, ones], dim=1), fine_grid=grid)
    return (back[:, 1] > 0) & (score[:, 0] >= back[:, 0])


def _add_parent_prior(logits: torch.Tensor, grid: GridBatch, parents: GridBatch, parent_classes: torch.Tensor,
                      prior: float, factor: int) -> torch.Tensor:
    """``logits`` (N, C) plus ``prior`` on the class of each voxel's ancestor in ``parents``."""
    # nearest upsampling carries each parent's class to its descendants; shifted by one so that a
    # voxel without a parent (refine fills 0) and an unknown class (-1) both come out as -1
    shifted = (parent_classes.to(logits.device).float() + 1.0)[:, None]
    cls = parents.refine(factor, shifted, fine_grid=grid)[0][:, 0].round().long() - 1
    ok = (cls >= 0) & (cls < logits.shape[1])
    bonus = torch.zeros_like(logits)
    bonus[ok, cls[ok]] = prior
    return logits + bonus
