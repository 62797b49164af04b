"""Diffusion U-Net and refinement network: grid invariants, conditioning, gradients, learning."""

from __future__ import annotations

import torch

from xcube_core.diffusion.losses import v_prediction_loss
from xcube_core.diffusion.schedule import NoiseSchedule, sample_timesteps
from xcube_core.models.refine import RefineConfig, RefineNet
from xcube_core.models.unet import SparseUNet, UNetConfig
from xcube_core.sparse import GridBatch
from tests.models.test_vae import scene_level


def tiny_unet(cond: bool = False) -> SparseUNet:
    return SparseUNet(UNetConfig(latent_channels=4, grid_shape=(16, 16, 8), cond_normals=cond, cond_classes=9 if cond else 0,
                                 sem_embed_dim=4, pos_freqs=2, model_channels=8, channel_mult=(1, 2),
                                 cross_attention_levels=(0, 1), context_dim=6, heads=2))


def text(b: int, generator, device="cpu"):
    return (torch.randn(b, 3, 6, generator=generator).to(device), torch.ones(b, 3, dtype=torch.bool, device=device),
            torch.randn(b, 6, generator=generator).to(device))


def test_unet_output_lives_on_the_input_grid_for_unequal_batches(generator, device):
    grid, normals, sem = scene_level(device=device)
    batch = GridBatch.cat([grid, grid.pruned_grid(torch.arange(grid.total_voxels, device=device) % 2 == 0)])
    net = tiny_unet(cond=True).to(device)
    x = torch.randn(batch.total_voxels, 4, generator=generator).to(device)
    n = torch.randn(batch.total_voxels, 3, generator=generator).to(device)
    s = torch.randint(-1, 9, (batch.total_voxels,), generator=generator).to(device)
    t = torch.tensor([3, 700], device=device)
    out = net(x, batch, t, *text(2, generator, device), n, s)
    assert out.shape == x.shape
    # zero-initialised output layer: a fresh model predicts exactly 0; after a few steps every parameter learns
    assert float(out.detach().abs().max()) == 0.0
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(4):  # output, residual and attention branches open one zero-init layer per step
        opt.zero_grad()
        (net(x, batch, t, *text(2, generator, device), n, s) - 1.0).pow(2).mean().backward()
        opt.step()
    dead = [k for k, p in net.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not dead, f"no gradient reaches {dead}"
    # items do not leak into each other: changing item 1's input leaves item 0's output unchanged
    y = net(x, batch, t, *text(2, generator, device), n, s)
    x2 = x.clone()
    x2[batch.joffsets[1]:] += 5.0
    tok, mask, pooled = text(2, torch.Generator().manual_seed(1), device)
    ya = net(x, batch, t, tok, mask, pooled, n, s)
    yb = net(x2, batch, t, tok, mask, pooled, n, s)
    n0 = int(batch.joffsets[1])
    torch.testing.assert_close(ya[:n0], yb[:n0])
    assert not torch.allclose(ya[n0:], yb[n0:])
    assert y.shape == x.shape


def test_text_changes_the_prediction(generator, device):
    grid, _, _ = scene_level(device=device)
    net = tiny_unet()
    for p in net.parameters():  # leave the zero init so the text path is visible
        torch.nn.init.normal_(p, std=0.1, generator=generator)
    net.to(device)
    x = torch.randn(grid.total_voxels, 4, generator=generator).to(device)
    t = torch.tensor([10], device=device)
    a = net(x, grid, t, *text(1, torch.Generator().manual_seed(1), device))
    b = net(x, grid, t, *text(1, torch.Generator().manual_seed(2), device))
    assert (a - b).abs().mean() > 1e-3


def test_diffusion_loss_falls_well_below_its_start(generator):
    """Learning works: v-prediction loss on a fixed tiny set of latents drops to < 60 % of its start."""
    torch.manual_seed(0)
    grid = GridBatch.from_dense(2, (4, 4, 2))
    z = torch.randn(grid.total_voxels, 4, generator=generator).sign()  # structured (binary) latents
    net = SparseUNet(UNetConfig(latent_channels=4, grid_shape=(4, 4, 2), pos_freqs=2, model_channels=16,
                                channel_mult=(1, 2), cross_attention_levels=(), context_dim=6, heads=2))
    sched = NoiseSchedule()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    tok, mask, pooled = text(2, generator)
    jidx = grid.jidx.long()

    def loss_at(gen):
        t = sample_timesteps(2, 1000, gen)
        noise = torch.randn(z.shape, generator=gen)
        pred = net(sched.add_noise(z, noise, t, jidx), grid, t, tok, mask, pooled)
        return v_prediction_loss(pred, sched.get_velocity(z, noise, t, jidx), jidx, 2)

    with torch.no_grad():
        start = sum(float(loss_at(torch.Generator().manual_seed(i))) for i in range(16)) / 16
    for step in range(150):
        opt.zero_grad()
        loss_at(generator).backward()
        opt.step()
    with torch.no_grad():
        end = sum(float(loss_at(torch.Generator().manual_seed(i))) for i in range(16)) / 16
    assert end < 0.6 * start, (start, end)


def test_refine_grows_then_prunes_and_teacher_forcing_matches_target(generator, device):
    grid, normals, sem = scene_level(device=device)
    net = RefineNet(RefineConfig(channels=8, blocks=1, sem_embed_dim=4)).to(device)
    damaged = grid.pruned_grid((torch.rand(grid.total_voxels, generator=generator) > 0.2).to(device))
    keep = grid.ijk_to_index(damaged.ijk, cumulative=True).jdata
    out = net(damaged, normals[keep], sem[keep], target=grid, bounds=(16, 16, 8))
    # the grown candidates can restore voxels the damage removed, within one voxel
    assert out.grid.total_voxels > damaged.total_voxels
    assert bool(grid.coords_in_grid(out.grid.ijk).jdata.all())
    losses = RefineNet.losses(out, grid, normals, sem)
    losses["loss"].backward()
    assert all(torch.isfinite(v) for v in losses.values())
    free = net(damaged, normals[keep], sem[keep], bounds=(16, 16, 8))
    assert bool((free.grid.ijk.jdata >= 0).all())


def test_unet_self_attention_windows_follow_the_scene_not_the_grid(generator):
    # A grid wider than the native extent attends within native windows on the scene lattice: moving
    # the grid and telling the U-Net where it lies (origin) is the same as not moving it (no position
    # features here, as at the shipped finer levels); moving it without saying so moves the windows.
    net = SparseUNet(UNetConfig(latent_channels=4, grid_shape=(8, 8, 4), pos_freqs=0, model_channels=8,
                                channel_mult=(1, 2), cross_attention_levels=(1,), context_dim=6, heads=2))
    for p in net.parameters():  # open the zero-initialised layers so that attention reaches the output
        torch.nn.init.normal_(p, std=0.3, generator=generator)
    ijk = torch.randint(0, 24, (600, 3), generator=generator)
    ijk = torch.unique(ijk * torch.tensor([1, 1, 0]) + torch.tensor([0, 0, 1]) * (ijk[:, 2:] % 4), dim=0)
    x = torch.randn(ijk.shape[0], 4, generator=generator)
    ctx, t = text(1, generator), torch.tensor([500])
    shift = torch.tensor([12, 4, 0])  # a multiple of the U-Net's stride, not of the window

    def run(offset, origin=None):
        grid = GridBatch.from_ijk(ijk + offset)
        rows = grid.ijk_to_index(ijk + offset).long()  # each voxel's row in grid order
        xg = torch.empty_like(x)
        xg[rows] = x
        return net(xg, grid, t, *ctx, origin=origin)[rows]

    with torch.no_grad():
        here = run(torch.zeros(3, dtype=torch.long))
        torch.testing.assert_close(run(shift, origin=-shift), here, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(run(shift), here, atol=1e-3)
