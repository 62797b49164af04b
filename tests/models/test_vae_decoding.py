"""Sampling-time priors of the sparse-latent VAE decoder: no orphans, and the parent's class as a prior."""

from __future__ import annotations

import pytest
import torch

from xcube_core.models.vae import SparseStructureVAE, VAEConfig
from xcube_core.sparse import GridBatch

CFG = VAEConfig(grid_shape=(32, 32, 32), voxel_size=0.25, num_classes=4, channels=(4, 8, 8), latent_channels=2,
                dense_latent=False, dilate_steps=1)


def _model_and_latent(seed: int, keep_bias: float):
    torch.manual_seed(seed)
    vae = SparseStructureVAE(CFG).eval()
    for head in vae.keep_heads:  # a pessimistic decoder: most voxels scored "drop"
        torch.nn.init.constant_(head.bias, keep_bias)
    g = torch.Generator().manual_seed(seed)
    lat_ijk = torch.unique(torch.randint(0, 8, (60, 3), generator=g), dim=0)
    lat = GridBatch.from_ijk(lat_ijk, voxel_sizes=1.0, origins=0.5)
    z = torch.randn(lat.total_voxels, CFG.latent_channels, generator=g)
    return vae, lat, z


def _orphans(decoded: GridBatch, latent_grid: GridBatch) -> int:
    parents = decoded.coarsened_grid(4)
    return int((~parents.coords_in_grid(latent_grid.ijk).jdata).sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_keep_support_leaves_no_latent_voxel_without_children(seed):
    vae, lat, z = _model_and_latent(seed, keep_bias=-1.0)
    with torch.no_grad():
        free = vae.decode(z, lat, keep_support=False)
        kept = vae.decode(z, lat, keep_support=True)
    assert _orphans(free.grid, lat) > 0  # the reference decoder does leave holes here
    assert _orphans(kept.grid, lat) == 0
    # the rescue only adds voxels: everything the free decoder kept inside the support is still there
    in_support = lat.coords_in_grid(free.grid.ijk.jagged_like(torch.div(free.grid.ijk.jdata, 4,
                                                                        rounding_mode="floor"))).jdata
    assert bool(kept.grid.coords_in_grid(free.grid.ijk).jdata[in_support].all())
    # every kept voxel nests in the latent grid
    up = torch.div(kept.grid.ijk.jdata, 4, rounding_mode="floor")
    assert bool(lat.coords_in_grid(kept.grid.ijk.jagged_like(up)).jdata.all())


def test_rescued_child_is_the_best_scoring_one():
    from xcube_core.models.vae import _orphan_rescue

    parents = GridBatch.from_ijk(torch.tensor([[0, 0, 0], [3, 3, 3]]), voxel_sizes=1.0)
    children = parents.refined_grid(2)
    logits = torch.full((children.total_voxels,), -5.0)
    logits[3] = -1.0          # best child of the first parent
    logits[8 + 6] = -0.5      # best child of the second
    keep = _orphan_rescue(children, logits, parents, first=False)
    assert keep.nonzero().flatten().tolist() == [3, 14]


def test_parent_class_prior_moves_unsure_voxels_to_the_parent_class():
    vae, lat, z = _model_and_latent(0, keep_bias=3.0)
    parent_cls = torch.randint(0, 4, (lat.total_voxels,), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        plain = vae.decode(z, lat)
        strong = vae.decode(z, lat, parent_semantics=parent_cls, class_prior=1e3)
        off = vae.decode(z, lat, parent_semantics=parent_cls, class_prior=0.0)
    up = torch.div(strong.grid.ijk.jdata, 4, rounding_mode="floor")
    idx = lat.ijk_to_index(strong.grid.ijk.jagged_like(up), cumulative=True).jdata
    inside = idx >= 0  # early dilation also decodes a halo outside the parents (the pipeline drops it)
    assert bool(inside.any()) and bool((~inside).any())
    assert torch.equal(strong.semantics[inside], parent_cls[idx[inside]])
    assert torch.equal(strong.semantics[~inside], plain.semantics[~inside])
    assert torch.equal(off.semantics, plain.semantics)
    assert not torch.equal(plain.semantics[inside], parent_cls[idx[inside]])  # the untrained decoder disagrees
    # unknown parents (-1) get no prior
    unknown = torch.full_like(parent_cls, -1)
    with torch.no_grad():
        none = vae.decode(z, lat, parent_semantics=unknown, class_prior=1e3)
    assert torch.equal(none.semantics, plain.semantics)
