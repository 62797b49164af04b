"""Refinement network: a small structure-prediction net that fixes a decoded level (XCube §3.3).

Errors of a coarse level propagate down the hierarchy, so after each VAE decoder a light network
looks at the decoded grid and attributes, grows the grid by one voxel (so it can add missing
voxels), and predicts keep/drop logits, a normal correction and semantic logits. It is trained on
decodings of *noised* posteriors, i.e. on the kind of errors diffusion samples make.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from xcube_core.models.base import PretrainedMixin
from xcube_core.models.blocks import ConvBlock, ResBlock
from xcube_core.models.vae import attribute_features
from xcube_core.nn import PlanCache, SparseConv3d
from xcube_core.nn.linear import VoxelLinear
from xcube_core.sparse import GridBatch


@dataclasses.dataclass(frozen=True)
class RefineConfig:
    """Architecture of one level's refinement network.

    Attributes:
        num_classes: semantic classes (0 = none).
        channels: width of the res blocks.
        blocks: number of res blocks.
        grow: voxels to dilate the decoded grid by before predicting keep/drop.
        noise_std: range of posterior noise (in latent std units) used to make training inputs.
    """

    num_classes: int = 9
    sem_embed_dim: int = 8
    channels: int = 16
    blocks: int = 2
    grow: int = 1
    noise_std: tuple[float, float] = (0.0, 1.0)
    voxel_size: float = 1.0

    @property
    def in_channels(self) -> int:
        return 4 + (self.sem_embed_dim if self.num_classes else 0)


@dataclasses.dataclass
class Refined:
    grid: GridBatch
    normals: torch.Tensor
    semantic_logits: torch.Tensor | None
    candidate_grid: GridBatch          # the grown grid the keep logits live on
    keep_logits: torch.Tensor          # (N_candidate,)

    @property
    def semantics(self) -> torch.Tensor | None:
        return None if self.semantic_logits is None else self.semantic_logits.argmax(dim=1)


class RefineNet(nn.Module, PretrainedMixin):
    """Refines (grid, normals, semantics) of one decoded level (see module docstring)."""

    config_class = RefineConfig

    def __init__(self, config: RefineConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.sem_embed = nn.Embedding(cfg.num_classes, cfg.sem_embed_dim) if cfg.num_classes else None
        self.conv_in = SparseConv3d(cfg.in_channels + 1, cfg.channels, 3)
        self.blocks = nn.ModuleList(ResBlock(cfg.channels, cfg.channels) for _ in range(cfg.blocks))
        self.head = ConvBlock(cfg.channels, cfg.channels)
        self.keep = VoxelLinear(cfg.channels, 1)
        self.normal = VoxelLinear(cfg.channels, 3)
        self.semantic = VoxelLinear(cfg.channels, cfg.num_classes) if cfg.num_classes else None
        nn.init.zeros_(self.normal.weight)
        nn.init.zeros_(self.normal.bias)

    def forward(self, grid: GridBatch, normals: torch.Tensor, semantics: torch.Tensor | None,
                target: GridBatch | None = None, keep_threshold: float = 0.0,
                bounds: tuple[int, int, int] | None = None) -> Refined:
        """Refine a decoded level; with ``target`` the output grid is the target (teacher forcing).

        ``bounds`` (X, Y, Z) keeps grown voxels inside the level's box [0, bounds).
        """
        plans = PlanCache()
        cand = grid.dilated_grid(self.config.grow) if self.config.grow else grid
        if bounds is not None:
            ijk = cand.ijk.jdata
            inside = ((ijk >= 0) & (ijk < torch.tensor(bounds, device=ijk.device))).all(dim=1)
            cand = cand.pruned_grid(inside)
        feats = attribute_features(normals, semantics, grid.total_voxels, self.sem_embed, grid.device)
        # one extra channel marks the voxels the decoder produced (vs the grown halo)
        feats = torch.cat([feats, torch.ones(grid.total_voxels, 1, device=grid.device)], dim=1)
        x = cand.inject_from(grid, feats, 0.0)
        h = self.conv_in(x, plans.get(3, 1, cand))
        for blk in self.blocks:
            h = blk(h, cand, plans)
        h = self.head(h, cand, plans)
        logits = self.keep(h).squeeze(1).float()
        keep = target.coords_in_grid(cand.ijk).jdata if target is not None else logits > keep_threshold
        out_grid = cand.pruned_grid(keep)
        h = h[keep]
        prior_n = cand.inject_from(grid, normals.float(), 0.0)[keep]
        n = F.normalize(prior_n + self.normal(h).float(), dim=1, eps=1e-6)
        sem = self.semantic(h).float() if self.semantic is not None else None
        return Refined(out_grid, n, sem, cand, logits)

    @staticmethod
    def losses(out: Refined, target: GridBatch, normals: torch.Tensor,
               semantics: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """BCE on keep logits vs the target grid + L1 normals + CE semantics on kept target voxels."""
        occ = target.coords_in_grid(out.candidate_grid.ijk).jdata.float()
        structure = F.binary_cross_entropy_with_logits(out.keep_logits, occ)
        idx = target.ijk_to_index(out.grid.ijk, cumulative=True).jdata
        n_loss = (out.normals - normals[idx].float()).abs().sum(1).mean() if idx.numel() else structure * 0
        res = {"structure": structure, "normal": n_loss}
        total = structure + n_loss
        if out.semantic_logits is not None and semantics is not None and idx.numel():
            tgt = semantics[idx].long()
            s = F.cross_entropy(out.semantic_logits, tgt, ignore_index=-1) if bool((tgt >= 0).any()) \
                else out.semantic_logits.sum() * 0
            res["semantic"] = s
            total = total + s
        res["loss"] = total
        return res
