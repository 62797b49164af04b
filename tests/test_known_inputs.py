"""U-Nets trained with known inputs (in/outpainting): the widened network starts as the plain one,
the training masks are what sampling holds, the loss counts only the cells to make, and sampling
feeds the held latent to the network while every voxel outside an edit stays bit-identical."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from xcube_core.inpaint import KnownLatent, edit_region
from xcube_core.models.unet import SparseUNet, UNetConfig, known_latent_inputs
from xcube_core.pipeline import LevelSettings, XCubePipeline
from xcube_core.tiling import generate_extent
from xcube_core.train.init_from import load_init_weights
from xcube_core.train.known_masks import sample_known_masks
from tests.models.test_unet_refine import text, tiny_unet
from tests.models.test_vae import scene_level
from tests.test_inpaint import _in_box, _records


def _randomised(net: SparseUNet, seed: int) -> SparseUNet:
    g = torch.Generator().manual_seed(seed)
    for p in net.parameters():  # leave the zero init so every input path is visible
        torch.nn.init.normal_(p, std=0.1, generator=g)
    return net


def test_a_widened_unet_computes_what_the_plain_one_did_until_it_learns_the_known_inputs(tmp_path):
    g = torch.Generator().manual_seed(0)
    plain = _randomised(tiny_unet(), 1)
    plain.save_pretrained(tmp_path / "plain")
    wide = SparseUNet(dataclasses.replace(plain.config, known_inputs=True))
    report = load_init_weights(wide, tmp_path / "plain")
    assert report.grown == ["conv_in.weight"] and not report.reinitialised
    grid, _, _ = scene_level()
    x = torch.randn(grid.total_voxels, 4, generator=g)
    t = torch.tensor([300])
    ctx = text(1, torch.Generator().manual_seed(2))
    held = torch.rand(grid.total_voxels, generator=g) < 0.5
    known = known_latent_inputs(torch.randn(grid.total_voxels, 4, generator=g), held)
    with torch.no_grad():
        ref = plain(x, grid, t, *ctx)
        torch.testing.assert_close(wide(x, grid, t, *ctx), ref)              # nothing held
        torch.testing.assert_close(wide(x, grid, t, *ctx, known=known), ref)  # new channels start at zero
        torch.nn.init.normal_(wide.conv_in.weight, std=0.1, generator=g)
        moved = wide(x, grid, t, *ctx, known=known)
        empty = wide(x, grid, t, *ctx, known=known_latent_inputs(known[:, :4], torch.zeros_like(held)))
        torch.testing.assert_close(wide(x, grid, t, *ctx), empty)  # None = an empty mask
    assert (moved - empty).abs().mean() > 1e-3  # once trained, the network sees what is held
    assert known.shape == (grid.total_voxels, 5) and torch.equal(known[:, 4], held.float())
    assert torch.equal(known[~held, :4], torch.zeros(int((~held).sum()), 4))
    with pytest.raises(ValueError, match="known must have shape"):
        wide(x, grid, t, *ctx, known=known[:, :4])
    with pytest.raises(ValueError, match="known_inputs=False"):
        plain(x, grid, t, *ctx, known=known)


def test_training_masks_hold_whole_columns_around_one_free_box_as_tiles_and_edits_do():
    """What tiling holds (bands owned by earlier tiles along some sides) and what an edit holds
    (everything around the region) are both the complement of one box of columns."""
    # two items of a dense 16 x 16 x 8 latent, the second shifted: masks are drawn per item's extent
    xs, ys, zs = torch.meshgrid(torch.arange(16), torch.arange(16), torch.arange(8), indexing="ij")
    one = torch.stack([xs.flatten(), ys.flatten(), zs.flatten()], 1)
    ijk = torch.cat([one, one + torch.tensor([100, -50, 0])])
    jidx = torch.repeat_interleave(torch.arange(2), len(one))
    kinds = {"none": 0, "beside": 0, "inside": 0}
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        held = sample_known_masks(ijk, jidx, 2, gen)
        for b in range(2):
            m = held[jidx == b].view(16, 16, 8)
            assert torch.equal(m, m[:, :, :1].expand_as(m))  # whole columns, full height
            cols = m[:, :, 0]
            free = torch.nonzero(~cols)
            assert len(free)  # always something to make
            (x0, y0), (x1, y1) = free.min(0).values.tolist(), free.max(0).values.tolist()
            assert len(free) == (x1 - x0 + 1) * (y1 - y0 + 1)  # the free columns are one box
            if not bool(cols.any()):
                kinds["none"] += 1
            elif min(x0, y0) == 0 or max(x1, y1) == 15:  # a tile or extension: held bands on some sides
                kinds["beside"] += 1
            else:  # an edit: held all around
                kinds["inside"] += 1
    # the draw follows MASK_KINDS (0.2 nothing / 0.5 strips / 0.3 around a box) over 400 items
    assert 50 <= kinds["none"] <= 110 and kinds["beside"] >= 160 and kinds["inside"] >= 60
    again = sample_known_masks(ijk, jidx, 2, torch.Generator().manual_seed(5))
    assert torch.equal(again, sample_known_masks(ijk, jidx, 2, torch.Generator().manual_seed(5)))


def test_known_input_loss_counts_only_the_cells_to_make(monkeypatch, tmp_path):
    from xcube_core.data.procedural.scene import SceneConfig, generate_scene
    from xcube_core.data.storage import manifest_row, save_sample, write_manifest
    from xcube_core.train import known_masks, tasks

    rows = []
    for seed in range(2):
        sample = generate_scene(seed, SceneConfig(extent=(24.0, 24.0), height=16.0, voxel_size=0.25), num_levels=3)
        rows.append(manifest_row(sample, f"train_{seed}.safetensors", "train",
                                 save_sample(sample, tmp_path / f"train_{seed}.safetensors")))
    write_manifest(rows, tmp_path)
    vae_task = tasks.VAETask(0, tmp_path, {})
    vae_task.export(vae_task.build_model(), tmp_path / "vae0")
    task = tasks.DiffusionTask(0, tmp_path, {"vae_path": str(tmp_path / "vae0"), "text_encoder": "hash",
                                            "known_inputs": True})
    net = _randomised(task.build_model(), 3)
    assert net.config.known_inputs
    ds = task.build_dataset("train")
    batch = task.collate([ds[0], ds[1]])
    seen = {}

    def held_half(ijk, jidx, n, gen):
        seen["held"] = ijk[:, 0] < int(ijk[:, 0].max()) // 2
        return seen["held"]

    monkeypatch.setattr(known_masks, "sample_known_masks", held_half)

    class Garbage(torch.nn.Module):  # the same network, with nonsense wherever a cell is held
        def forward(self, *args, known=None):
            seen["known"] = known
            out = net(*args, known=known)
            return torch.where(known[:, -1:] > 0, torch.full_like(out, 1e4), out)

    loss, logs = task.loss(net, batch, torch.Generator().manual_seed(0))
    garbage, _ = task.loss(Garbage(), batch, torch.Generator().manual_seed(0))
    torch.testing.assert_close(garbage, loss)  # held cells never count
    assert torch.equal(seen["known"][:, -1] > 0, seen["held"]) and 0.3 < logs["held_fraction"] < 0.7
    loss.backward()
    assert net.conv_in.weight.grad is not None and torch.isfinite(loss)


@pytest.fixture(scope="module")
def known_pipe() -> XCubePipeline:
    from xcube_core.testing import tiny_pipeline

    pipe = tiny_pipeline(seed=0, known_inputs=True)
    for lv in pipe.levels:  # random known-input weights so that what is held changes the prediction
        torch.nn.init.normal_(lv.unet.conv_in.weight, std=0.3, generator=torch.Generator().manual_seed(1))
    return pipe


def test_sampling_feeds_the_held_latent_to_the_network(known_pipe, monkeypatch):
    text_emb = known_pipe.text_encoder.encode(["a farm", ""])
    unet = known_pipe.levels[0].unet
    calls = []
    original = unet.forward

    def spy(*args, known=None, **kw):
        calls.append(None if known is None else known.clone())
        return original(*args, known=known, **kw)

    monkeypatch.setattr(unet, "forward", spy)
    n = 2 * 2 * 1
    held = torch.tensor([True, False, False, True])
    x0 = torch.randn(n, 4, generator=torch.Generator().manual_seed(9))
    known_pipe._generate_level(0, None, text_emb, torch.Generator().manual_seed(4),
                               LevelSettings(steps=2, guidance=3.0), known=KnownLatent(held, x0))
    want = torch.cat([known_latent_inputs(x0, held)] * 2)  # the guided batch: both halves hold it
    assert len(calls) == 2 and all(c is not None and torch.equal(c, want) for c in calls)
    calls.clear()
    known_pipe._generate_level(0, None, text_emb, torch.Generator().manual_seed(4), LevelSettings(steps=2, guidance=3.0))
    assert calls == [None, None]  # nothing held: plain generation


def test_edits_and_tiles_with_a_known_input_model_keep_what_exists(known_pipe):
    scene = list(known_pipe.generate("a quiet street", seed=1, steps=2))
    edited = list(edit_region(known_pipe, scene, (4.0, 2.0, 10.0, 12.0), "a pond", seed=7, steps=2))
    outside = lambda c: ~_in_box(2, 1, 5, 6)(c)  # noqa: E731
    for old, new in zip(scene, edited):
        assert _records(new, outside) == _records(old, outside)
    tiles = list(generate_extent(known_pipe, "a park", (40, 24), seed=1, steps=2, fine_tile_m=16))
    again = list(generate_extent(known_pipe, "a park", (40, 24), seed=1, steps=2, fine_tile_m=16))
    assert all(torch.equal(a.ijk, b.ijk) and torch.equal(a.normals, b.normals) for a, b in zip(tiles, again))
