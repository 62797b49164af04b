"""Sparse structure VAE: grid invariants, gradients, and that it learns (overfits one scene)."""

from __future__ import annotations

import torch

from xcube_core.data.procedural.scene import SceneConfig, generate_scene
from xcube_core.models.vae import SparseStructureVAE, VAEConfig
from xcube_core.sparse import GridBatch


def scene_level(seed: int = 3, level: int = 0, device="cpu"):
    """A real procedural scene, small: 16 m x 16 m x 8 m, level 0 at 1 m (16 x 16 x 8 voxels)."""
    sample = generate_scene(seed, SceneConfig(extent=(16.0, 16.0), height=8.0, voxel_size=0.5), num_levels=2)
    return sample.levels[level].grid_attributes(device)


def tiny_vae(dense: bool = True) -> SparseStructureVAE:
    return SparseStructureVAE(VAEConfig(grid_shape=(16, 16, 8), voxel_size=1.0, channels=(16, 32), latent_channels=4,
                                        dense_latent=dense, sem_embed_dim=4, kl_weight=1e-3))


def voxel_iou(a: GridBatch, b: GridBatch) -> float:
    inter = int(a.coords_in_grid(b.ijk).jdata.sum())
    return inter / (a.total_voxels + b.total_voxels - inter)


def test_teacher_forced_decode_reproduces_the_target_and_gradients_reach_every_parameter(generator, device):
    grid, normals, sem = scene_level(device=device)
    for dense in (True, False):
        vae = tiny_vae(dense).to(device)
        opt = torch.optim.SGD(vae.parameters(), lr=1e-2)
        for _ in range(2):  # residual branches start at zero (ADM init): one step opens them
            opt.zero_grad()
            vae(grid, normals, sem, generator=torch.Generator(device).manual_seed(0))["loss"].backward()
            opt.step()
        missing = [n for n, p in vae.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
        assert not missing, f"no gradient reaches {missing}"
        mean, _, lat = vae.encode(grid, normals, sem)
        dec = vae.decode(mean, lat, target=grid)
        assert dec.grid.is_same(grid)
        assert dec.normals.shape == (grid.total_voxels, 3)
        if dense:
            assert lat.total_voxels == 8 * 8 * 4  # the dense latent box


def test_sampled_decode_stays_in_the_level_box_and_nests(generator, device):
    grid, normals, sem = scene_level(device=device)
    vae = tiny_vae(dense=True)
    for head in vae.keep_heads:
        torch.nn.init.constant_(head.bias, 3.0)  # keep (almost) everything: the worst case for bounds
    vae.to(device)
    dec = vae.decode(torch.randn(8 * 8 * 4, 4, generator=generator).to(device), vae.latent_grid_for(grid))
    ijk = dec.grid.ijk.jdata.cpu()
    assert bool((ijk >= 0).all()) and bool((ijk < torch.tensor([16, 16, 8])).all())
    # each step's grid lies inside the previous step's (subdivided) grid
    for coarse, fine in zip(dec.step_grids, dec.step_grids[1:]):
        assert bool(coarse.coords_in_grid(fine.coarsened_grid(2).ijk).jdata.all())


def test_vae_overfits_one_procedural_scene(generator):
    """Learning works: one real scene reconstructed (no teacher forcing) to voxel IoU >= 0.95."""
    torch.manual_seed(0)
    grid, normals, sem = scene_level()
    vae = tiny_vae(dense=True)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    iou = 0.0
    for step in range(400):
        opt.zero_grad()
        vae(grid, normals, sem, generator=generator)["loss"].backward()
        opt.step()
        if step % 25 == 24:
            iou = voxel_iou(vae.reconstruct(grid, normals, sem).grid, grid)
            if iou >= 0.95:
                break
    assert iou >= 0.95, f"IoU {iou:.3f} after {step + 1} steps"


def test_structure_loss_is_logged_per_decoder_step_and_sums_to_the_total(generator):
    import torch.nn.functional as F

    grid, normals, sem = scene_level()
    vae = tiny_vae(dense=False)
    out = vae(grid, normals, sem, generator=generator)
    steps = vae.config.num_down + 1
    parts = [out[f"structure_s{s}"] for s in range(steps)]
    assert f"structure_s{steps}" not in out
    torch.testing.assert_close(sum(parts), out["structure"].detach())
    # step 0 is the coarsest: its BCE equals a hand-computed one on the latent grid's first logits
    mean, logvar, lat = vae.encode(grid, normals, sem)
    dec = vae.decode(mean, lat, target=grid)
    coarse_gt = grid.coarsened_grid(2 ** (steps - 1))
    ref = F.binary_cross_entropy_with_logits(dec.step_logits[0].float(),
                                             coarse_gt.coords_in_grid(dec.step_grids[0].ijk).jdata.float())
    res = vae.losses(dec, grid, normals, sem, mean, logvar, lat)
    torch.testing.assert_close(res["structure_s0"], ref.detach())
