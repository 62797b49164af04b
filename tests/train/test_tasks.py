"""The XCube training tasks on a tiny procedural dataset: crops keep the hierarchy, losses run."""

from __future__ import annotations

import pytest
import torch

from xcube_core.data.procedural.scene import SceneConfig, generate_scene
from xcube_core.data.storage import manifest_row, save_sample, write_manifest
from xcube_core.errors import InvalidInputError
from xcube_core.models.vae import SparseStructureVAE
from xcube_core.train.recipes import DEFAULT_RECIPE
from xcube_core.train.tasks import DiffusionTask, RefineTask, VAETask, crop_batch


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Two small scenes (24 m x 24 m at 0.25 m, 3 levels) in the dataset layout."""
    root = tmp_path_factory.mktemp("scenes")
    rows = []
    for seed in range(2):
        sample = generate_scene(seed, SceneConfig(extent=(24.0, 24.0), height=16.0, voxel_size=0.25), num_levels=3)
        name = f"train_{seed}.safetensors"
        rows.append(manifest_row(sample, name, "train", save_sample(sample, root / name)))
    write_manifest(rows, root)
    return root


def test_crop_keeps_levels_nested_and_starts_at_zero(data_dir):
    task = VAETask(1, data_dir, {"crop": 32})
    ds = task.build_dataset("train")
    batch = task.collate([ds[0], ds[1]])
    grids, normals, sems = crop_batch([g for g in batch["grids"]], [n.jdata for n in batch["normals"]],
                                      [s.jdata for s in batch["semantics"]], 32, torch.Generator().manual_seed(3))
    coarse, fine = grids
    for b in range(2):
        ijk = fine.ijk[b]
        assert int(ijk[:, :2].min()) >= 0 and int(ijk[:, :2].max()) < 32
    # every cropped fine voxel's parent (4x coarser) is a cropped coarse voxel
    parents = torch.div(fine.ijk.jdata.long(), 4, rounding_mode="floor")
    assert bool(coarse.coords_in_grid(fine.ijk.jagged_like(parents)).jdata.all())
    assert normals[1].shape == (fine.total_voxels, 3) and sems[1].shape == (fine.total_voxels,)


def test_each_task_computes_a_finite_loss_with_gradients(data_dir, tmp_path):
    gen = torch.Generator().manual_seed(0)
    vae_task = VAETask(0, data_dir, {})
    ds = vae_task.build_dataset("train")
    batch = vae_task.collate([ds[0], ds[1]])
    vae = vae_task.build_model()
    loss, logs = vae_task.loss(vae, batch, gen)
    loss.backward()
    assert torch.isfinite(loss) and {"structure", "normal", "semantic", "kl"} <= set(logs)
    vae_task.export(vae, tmp_path / "vae0")
    assert SparseStructureVAE.from_pretrained(tmp_path / "vae0").config == DEFAULT_RECIPE[0].vae

    diff = DiffusionTask(0, data_dir, {"vae_path": str(tmp_path / "vae0"), "text_encoder": "hash"})
    assert diff.latent_scale > 0 and diff.config()["latent_scale"] == diff.latent_scale
    unet = diff.build_model()
    loss, _ = diff.loss(unet, batch, gen)
    loss.backward()
    assert torch.isfinite(loss)
    # the cached posterior of a whole-scene dense latent equals a fresh encoding
    b = diff.prepare(batch, gen)
    cached = diff._posterior(b, batch["files"])
    fresh = diff._posterior(b, None)
    torch.testing.assert_close(cached[0], fresh[0])
    assert cached[2].is_same(fresh[2])

    ref = RefineTask(0, data_dir, {"vae_path": str(tmp_path / "vae0")})
    net = ref.build_model()
    for head in ref.vae.keep_heads:  # an untrained VAE may decode nothing; keep everything instead
        torch.nn.init.constant_(head.bias, 5.0)
    loss, logs = ref.loss(net, batch, gen)
    loss.backward()
    assert torch.isfinite(loss) and logs["decoded_voxels"] > 0


def test_freeze_encoder_trains_the_decoder_only(data_dir):
    """-o freeze_encoder=true: an optimiser step moves decoder weights and leaves every encoder weight
    (what fixes the latent space the level's diffusion was trained on) bit-identical."""
    from xcube_core.train.config import TrainConfig
    from xcube_core.train.trainer import _build_optimizer

    task = VAETask(0, data_dir, {"freeze_encoder": True})
    assert task.config()["overrides"]["freeze_encoder"] == "True"
    vae = task.build_model()
    encoder = {id(p) for p in vae.encoder_parameters()}
    before = {n: p.detach().clone() for n, p in vae.named_parameters()}
    opt, names = _build_optimizer(vae, TrainConfig(lr=1e-2))
    assert names and not any(id(p) in encoder for g in opt.param_groups for p in g["params"])
    ds = task.build_dataset("train")
    loss, _ = task.loss(vae, task.collate([ds[0], ds[1]]), torch.Generator().manual_seed(0))
    loss.backward()
    opt.step()
    moved = {n for n, p in vae.named_parameters() if not torch.equal(p, before[n])}
    enc_names = {n for n, p in vae.named_parameters() if id(p) in encoder}
    assert moved and not moved & enc_names and enc_names
    with pytest.raises(InvalidInputError, match="freeze_encoder"):
        VAETask(0, data_dir, {"freeze_encoder": "yes"})


def test_tasks_need_a_vae_and_a_known_level(data_dir):
    with pytest.raises(InvalidInputError, match="vae_path"):
        DiffusionTask(0, data_dir, {})
    with pytest.raises(InvalidInputError, match="level"):
        VAETask(5, data_dir, {})


def test_recaption_writes_fresh_captions_from_the_scene_facts(data_dir, tmp_path):
    """-o recaption=1 replaces every training caption by another wording of the scene's own facts (same
    style, same tree density); 0 keeps the stored ones; out-of-range values are errors."""
    from xcube_core.data.procedural.captions import _TREE_COUNT, _TREE_KIND, STYLE_PHRASES

    VAETask(0, data_dir, {}).export(VAETask(0, data_dir, {}).build_model(), tmp_path / "vae0")
    opts = {"vae_path": str(tmp_path / "vae0"), "text_encoder": "hash"}
    task = DiffusionTask(0, data_dir, {**opts, "recaption": 1.0})
    ds = task.build_dataset("train")
    batch = task.collate([ds[0], ds[1]])
    gen = torch.Generator().manual_seed(0)
    drawn = [task._recaptioned(batch["captions"], batch["metadata"], gen) for _ in range(16)]
    for i, meta in enumerate(batch["metadata"]):
        seen = {d[i] for d in drawn}
        assert 2 < len(seen) <= 8  # new wording, from a fixed pool of 8 per scene
        places = STYLE_PHRASES[meta["style"]]
        assert all(any(p in c for p in places) for c in seen)
        density = meta["tree_density"]
        if density in ("some", "many"):
            words = _TREE_COUNT[density] + _TREE_KIND.get(meta.get("dominant_tree"), ())
            assert all(any(w in c for w in words) for c in seen)
    keep = DiffusionTask(0, data_dir, opts)
    assert keep._recaptioned(batch["captions"], batch["metadata"], gen) == batch["captions"]
    # not a procedural scene: the stored caption stays
    assert task._recaptioned(["a chair"], [{"kind": "mesh"}], gen) == ["a chair"]
    with pytest.raises(InvalidInputError, match="recaption"):
        DiffusionTask(0, data_dir, {**opts, "recaption": 1.5})
