"""Recipes are data: JSON round trip, v1 folders read back, a third level by configuration alone,
and the assembler recording recipe + schedule in the pipeline folder."""

from __future__ import annotations

import dataclasses

import copy
import json

import pytest
import torch

from xcube_core.cli import main
from xcube_core.data.procedural.scene import SceneConfig, generate_scene
from xcube_core.data.storage import manifest_row, save_sample, write_manifest
from xcube_core.diffusion.scheduler_config import SCHEDULER_FILE, load_scheduler_config
from xcube_core.errors import InvalidInputError
from xcube_core.models.unet import SparseUNet
from xcube_core.models.vae import SparseStructureVAE
from xcube_core.pipeline import DEFAULT_MODEL_DIR, XCubePipeline
from xcube_core.train.assemble import assemble, replace_parts
from xcube_core.train.recipes import (
    DEFAULT_RECIPE,
    DEFAULT_RECIPE_DATA,
    load_recipe,
    recipe_from_dict,
    recipe_to_dict,
    save_recipe,
)
from xcube_core.train.tasks import DiffusionTask, VAETask

QUIET = ["--no-progress", "--no-tensorboard", "--device", "cpu", "--fp32"]

# three levels: 1 m (dense latent), 0.25 m (latent on the 1 m grid), 0.125 m (latent on the 0.25 m grid)
TINY3 = {
    "text_encoder": {"name": "hash"},
    "levels": [
        {"data_levels": [0], "crop": None,
         "vae": {"grid_shape": [16, 16, 8], "voxel_size": 1.0, "channels": [8, 8], "latent_channels": 4,
                 "sem_embed_dim": 4},
         "unet": {"latent_channels": 4, "grid_shape": [8, 8, 4], "pos_freqs": 2, "model_channels": 8,
                  "channel_mult": [1, 2], "cross_attention_levels": [1], "heads": 2, "sem_embed_dim": 4}},
        {"data_levels": [0, 2], "crop": None,
         "vae": {"grid_shape": [64, 64, 32], "voxel_size": 0.25, "channels": [8, 8, 8], "latent_channels": 4,
                 "dense_latent": False, "sem_embed_dim": 4},
         "unet": {"latent_channels": 4, "grid_shape": [16, 16, 8], "cond_normals": True, "cond_classes": 9,
                  "pos_freqs": 0, "model_channels": 8, "channel_mult": [1, 2], "cross_attention_levels": [1],
                  "heads": 2, "sem_embed_dim": 4}},
        {"data_levels": [2, 3], "crop": 64,
         "vae": {"grid_shape": [128, 128, 64], "voxel_size": 0.125, "channels": [8, 8], "latent_channels": 4,
                 "dense_latent": False, "sem_embed_dim": 4},
         "unet": {"latent_channels": 4, "grid_shape": [64, 64, 32], "cond_normals": True, "cond_classes": 9,
                  "pos_freqs": 0, "model_channels": 8, "channel_mult": [1, 2], "cross_attention_levels": [1],
                  "heads": 2, "sem_embed_dim": 4},
         "scheduler": {"prediction_type": "epsilon", "num_inference_steps": 3}},
    ],
}


@pytest.fixture(scope="module")
def data4(tmp_path_factory):
    """Two 16 m scenes with 4 data levels (1, 0.5, 0.25, 0.125 m), in train and val."""
    root = tmp_path_factory.mktemp("scenes4")
    rows = []
    for split, seed in (("train", 0), ("train", 1), ("val", 2)):
        sample = generate_scene(seed, SceneConfig(extent=(16.0, 16.0), height=8.0, voxel_size=0.125), num_levels=4)
        name = f"{split}_{seed}.safetensors"
        rows.append(manifest_row(sample, name, split, save_sample(sample, root / name)))
    write_manifest(rows, root)
    return root


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipe") / "tiny3.json"
    path.write_text(json.dumps(TINY3))
    return path


def test_default_recipe_is_data_and_round_trips(tmp_path):
    recipe, text = recipe_from_dict(recipe_to_dict(DEFAULT_RECIPE))
    assert recipe == DEFAULT_RECIPE and text == DEFAULT_RECIPE_DATA["text_encoder"]
    save_recipe(DEFAULT_RECIPE, tmp_path)
    assert load_recipe(tmp_path)[0] == DEFAULT_RECIPE == load_recipe(tmp_path / "recipe.json")[0]


def test_the_shipped_folder_recipe_agrees_with_its_networks():
    recipe, text = load_recipe(DEFAULT_MODEL_DIR)
    assert sorted(recipe) == [0, 1] and text["name"] == "minilm-l6-v2"
    for i in (0, 1):
        shipped = json.loads((DEFAULT_MODEL_DIR / f"level{i}" / "vae" / "config.json").read_text())["config"]
        assert recipe[i].vae.channels == tuple(shipped["channels"])
        # v1's level-1 VAE predates the round-2 recipe (KL 0.001, position features): read, not defaulted
        assert recipe[i].vae == dataclasses.replace(DEFAULT_RECIPE[i].vae, kl_weight=shipped["kl_weight"],
                                                    position_features=shipped.get("position_features", False))
        assert recipe[i].unet == DEFAULT_RECIPE[i].unet
        assert recipe[i].data_levels == DEFAULT_RECIPE[i].data_levels


def test_bad_recipes_are_errors_that_say_what_is_wrong(tmp_path):
    bad = copy.deepcopy(TINY3)
    bad["levels"][2]["vae"]["channels"] = [8, 8, 8]  # 0.125 m x 4 = 0.5 m, not level 1's 0.25 m
    with pytest.raises(InvalidInputError, match="must equal 0.25 m"):
        recipe_from_dict(bad)
    bad = copy.deepcopy(TINY3)
    bad["levels"][0]["vae"]["chanels"] = [8, 8]
    with pytest.raises(InvalidInputError, match="chanels"):
        recipe_from_dict(bad)
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_recipe(tmp_path / "nope.json")
    with pytest.raises(InvalidInputError, match="level must be one of \\[0, 1\\]"):
        VAETask(2, None, {})


def test_a_third_level_by_configuration_alone_trains_and_feeds_its_diffusion(data4, recipe_file, tmp_path):
    out = tmp_path / "vae2"
    code = main(["train", "vae", "--level", "2", "--recipe", str(recipe_file), "--data", str(data4),
                 "--out", str(out), "--max-steps", "2", "--batch-size", "1", "--log-every", "1",
                 "--val-every", "2", "--val-batches", "1", *QUIET])
    assert code == 0
    vae = SparseStructureVAE.from_pretrained(out / "model")
    assert vae.config == recipe_from_dict(TINY3)[0][2].vae
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"structure_s0", "structure_s1", "loss"} <= set(rows[0])
    assert any("val_loss" in r and "val_structure_s1" in r for r in rows)
    # the diffusion task of level 2 runs on it, conditioned on data level 2 (0.25 m), with the recipe's schedule
    task = DiffusionTask(2, data4, {"recipe": str(recipe_file), "vae_path": str(out / "model")})
    assert task.schedule.config.prediction_type == "epsilon"
    ds = task.build_dataset("train")
    batch = task.collate([ds[0]])
    assert [float(g.voxel_sizes[0, 0]) for g in batch["grids"]] == [0.25, 0.125]
    loss, _ = task.loss(task.build_model(), batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)


def test_assembled_folder_records_recipe_and_schedule(data4, recipe_file, tmp_path):
    runs = tmp_path / "runs"
    for level in (0, 1):
        vae_task = VAETask(level, data4, {"recipe": str(recipe_file)})
        vae_task.export(vae_task.build_model(), runs / f"vae{level}" / "model")
        opts = {"recipe": str(recipe_file), "vae_path": str(runs / f"vae{level}" / "model")}
        if level == 1:
            opts.update(prediction_type="epsilon", guidance_scale=2)
        diff = DiffusionTask(level, data4, opts)
        diff.export(diff.build_model(), runs / f"diffusion{level}" / "model")
    assert load_scheduler_config(runs / "diffusion1" / "model").prediction_type == "epsilon"
    out = assemble(runs, tmp_path / "pipe", "tiny-assembled")
    recipe, text = load_recipe(out)
    assert sorted(recipe) == [0, 1] and text["name"] == "hash"
    assert recipe[1].scheduler.prediction_type == "epsilon" and recipe[1].scheduler.guidance_scale == 2.0
    assert recipe[0].vae == recipe_from_dict(TINY3)[0][0].vae
    assert (out / "level1" / "unet" / SCHEDULER_FILE).is_file()
    pipe = XCubePipeline.from_pretrained(out)
    assert pipe.levels[1].scheduler.prediction_type == "epsilon" and pipe.levels[0].scheduler.guidance_scale == 3.0


def test_schedule_options_are_typed_and_reach_the_exported_model(data4, recipe_file, tmp_path):
    vae_task = VAETask(0, data4, {"recipe": str(recipe_file)})
    vae_task.export(vae_task.build_model(), tmp_path / "vae0")
    opts = {"recipe": str(recipe_file), "vae_path": str(tmp_path / "vae0")}
    task = DiffusionTask(0, data4, {**opts, "beta_start": "1e-4", "beta_end": 0.012, "num_train_timesteps": 500,
                                    "sampler": "ddpm", "guidance_scale": 4})
    assert task.schedule.num_train_timesteps == 500 and task.schedule.config.beta_end == 0.012
    task.export(task.build_model(), tmp_path / "unet0")
    saved = load_scheduler_config(tmp_path / "unet0")
    assert (saved.sampler, saved.guidance_scale, saved.beta_start) == ("ddpm", 4.0, 1e-4)
    assert task.config()["recipe"]["scheduler"]["num_train_timesteps"] == 500  # recorded: resume compares it
    with pytest.raises(InvalidInputError, match="prediction_type"):
        DiffusionTask(0, data4, {**opts, "prediction_type": "x0"})
    with pytest.raises(InvalidInputError, match="num_train_timesteps"):
        DiffusionTask(0, data4, {**opts, "num_train_timesteps": "many"})
    # each level's recipe records its own sampling defaults (level 1: never guided, since v8)
    assert VAETask(1, data4, {}).config()["recipe"]["scheduler"]["guidance_interval"] == [0.0, 0.0]
    assert VAETask(0, data4, {}).config()["recipe"]["scheduler"]["guidance_interval"] == [0.0, 0.7]


def test_replacing_one_network_keeps_the_rest_and_the_sampler_defaults(data4, recipe_file, tmp_path):
    """`assemble --base PIPE --replace level0/unet=DIR`: a fine-tuned network swapped into a copy of a
    pipeline; every other file stays byte-identical, the U-Net keeps the base's sampler defaults and
    the recipe records the new architecture."""
    from xcube_core.errors import ModelLoadError
    from xcube_core.train.assemble import main as assemble_main

    runs = tmp_path / "runs"
    for level in (0, 1):
        vae_task = VAETask(level, data4, {"recipe": str(recipe_file)})
        vae_task.export(vae_task.build_model(), runs / f"vae{level}" / "model")
        diff = DiffusionTask(level, data4, {"recipe": str(recipe_file), "vae_path": str(runs / f"vae{level}" / "model"),
                                            "latent_scale": 1.5})
        diff.export(diff.build_model(), runs / f"diffusion{level}" / "model")
    base = assemble(runs, tmp_path / "base", "tiny-base")
    sched = base / "level0" / "unet" / SCHEDULER_FILE
    sched.write_text(sched.read_text().replace('"guidance_scale": 3.0', '"guidance_scale": 4.5'))
    known = DiffusionTask(0, data4, {"recipe": str(recipe_file), "vae_path": str(runs / "vae0" / "model"),
                                     "latent_scale": 1.5, "known_inputs": True})
    known.export(known.build_model(), tmp_path / "known0")
    out = tmp_path / "swapped"
    assert assemble_main(["--base", str(base), "--replace", f"level0/unet={tmp_path / 'known0'}",
                          "--out", str(out), "--model-id", "tiny-known"]) == 0
    before = {p.relative_to(base): p.read_bytes() for p in base.rglob("*") if p.is_file()}
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    changed = {str(k) for k in before if before[k] != after[k]}
    assert changed == {"pipeline.json", "recipe.json", "level0/unet/config.json", "level0/unet/model.safetensors"}
    pipe = XCubePipeline.from_pretrained(out)
    assert pipe.levels[0].unet.config.known_inputs and pipe.levels[0].scheduler.guidance_scale == 4.5
    assert load_recipe(out)[0][0].unet.known_inputs and not load_recipe(out)[0][1].unet.known_inputs
    assert json.loads((out / "pipeline.json").read_text())["model_id"] == "tiny-known"
    source = SparseUNet.from_pretrained(tmp_path / "known0").state_dict()
    assert all(torch.equal(v, source[k]) for k, v in pipe.levels[0].unet.state_dict().items())
    kept = SparseUNet.from_pretrained(base / "level1" / "unet").state_dict()
    assert all(torch.equal(v, kept[k]) for k, v in pipe.levels[1].unet.state_dict().items())
    with pytest.raises(ModelLoadError, match="not a network"):
        replace_parts(base, tmp_path / "x", {"level5/unet": tmp_path / "known0"}, None)
    with pytest.raises(ModelLoadError, match="holds a SparseUNet"):
        replace_parts(base, tmp_path / "x", {"level0/vae": tmp_path / "known0"}, None)
    other = DiffusionTask(0, data4, {"recipe": str(recipe_file), "vae_path": str(runs / "vae0" / "model"),
                                     "latent_scale": 2.0})
    other.export(other.build_model(), tmp_path / "other0")
    # a U-Net trained on other data measured another latent scale: it brings it along
    rescaled = replace_parts(base, tmp_path / "x", {"level0/unet": tmp_path / "other0"}, None)
    assert [lv["latent_scale"] for lv in json.loads((rescaled / "pipeline.json").read_text())["levels"]] == [2.0, 1.5]
    assert XCubePipeline.from_pretrained(rescaled).levels[0].latent_scale == 2.0
