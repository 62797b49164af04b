"""`xcube train --init-from` and typed task options: runs start from shipped weights, options never pass silently."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from xcube_core.errors import InvalidInputError, ModelLoadError
from xcube_core.models.vae import SparseStructureVAE, VAEConfig
from xcube_core.sparse import GridBatch
from xcube_core.train.init_from import load_init_weights, resolve_init_dir
from xcube_core.train.tasks import DiffusionTask, VAETask

from .test_tasks import data_dir  # noqa: F401 (fixture)

SMALL = VAEConfig(grid_shape=(16, 16, 8), voxel_size=1.0, num_classes=3, channels=(4, 8), latent_channels=2,
                  dense_latent=False)


def _grid(seed: int = 0, n: int = 80) -> tuple[GridBatch, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ijk = torch.unique(torch.randint(0, 8, (n, 3), generator=g), dim=0)
    grid = GridBatch.from_ijk(ijk, voxel_sizes=1.0)
    normals = torch.nn.functional.normalize(torch.randn(grid.total_voxels, 3, generator=g), dim=1)
    return grid, normals, torch.randint(0, 3, (grid.total_voxels,), generator=g)


def test_pipeline_run_and_model_folders_resolve_to_the_task_part(tmp_path):
    model = SparseStructureVAE(SMALL)
    model.save_pretrained(tmp_path / "pipe" / "level1" / "vae")
    (tmp_path / "pipe" / "pipeline.json").write_text(json.dumps({"levels": [{}, {}]}))
    model.save_pretrained(tmp_path / "run" / "model")
    assert resolve_init_dir(tmp_path / "pipe", "vae", 1) == tmp_path / "pipe" / "level1" / "vae"
    assert resolve_init_dir(tmp_path / "run", "vae", 0) == tmp_path / "run" / "model"
    assert resolve_init_dir(tmp_path / "run" / "model", "vae", 0) == tmp_path / "run" / "model"
    with pytest.raises(ModelLoadError, match="no unet for level 1"):
        resolve_init_dir(tmp_path / "pipe", "diffusion", 1)
    with pytest.raises(ModelLoadError, match="not a folder"):
        resolve_init_dir(tmp_path / "missing", "vae", 0)


def test_loaded_weights_equal_the_source_and_a_grown_input_layer_computes_the_same(tmp_path):
    torch.manual_seed(0)
    src = SparseStructureVAE(SMALL)
    src.save_pretrained(tmp_path / "src")
    # same architecture: every tensor copied
    same = SparseStructureVAE(SMALL)
    report = load_init_weights(same, tmp_path / "src")
    assert not report.reinitialised and not report.grown
    for (name, a), b in zip(src.state_dict().items(), same.state_dict().values()):
        assert torch.equal(a, b), name
    # the encoder given position features: its input conv grows and the encoding is unchanged
    wider = SparseStructureVAE(dataclasses.replace(SMALL, position_features=True))
    report = load_init_weights(wider, tmp_path / "src")
    assert report.grown == ["enc_in.weight"] and not report.reinitialised
    grid, normals, sems = _grid()
    with torch.no_grad():
        m0, lv0, _ = src.encode(grid, normals, sems)
        m1, lv1, _ = wider.encode(grid, normals, sems)
    torch.testing.assert_close(m1, m0)
    torch.testing.assert_close(lv1, lv0)


def test_another_network_class_is_refused(tmp_path):
    from xcube_core.models.refine import RefineConfig, RefineNet

    RefineNet(RefineConfig(num_classes=3, channels=4, blocks=1)).save_pretrained(tmp_path / "refine")
    with pytest.raises(ModelLoadError, match="RefineNet"):
        load_init_weights(SparseStructureVAE(SMALL), tmp_path / "refine")


def test_trainer_starts_from_the_given_weights(data_dir, tmp_path):  # noqa: F811
    from xcube_core.train.config import TrainConfig
    from xcube_core.train.trainer import Trainer

    task = VAETask(0, data_dir, {})
    torch.manual_seed(123)
    task.build_model().save_pretrained(tmp_path / "shipped")
    start = SparseStructureVAE.from_pretrained(tmp_path / "shipped").state_dict()
    seen = {}

    def on_step(step, loss):  # the first step starts from exactly the shipped weights
        seen.setdefault("first", step)

    cfg = TrainConfig(max_steps=1, batch_size=2, lr=1e-9, ckpt_every=1, ema_decay=0.0, precision="fp32",
                      export_at_end=True, warmup_steps=0)
    trainer = Trainer(task, cfg, tmp_path / "run", progress=False, tensorboard=False, on_step=on_step,
                      init_from=tmp_path / "shipped")
    result = trainer.fit()
    out = SparseStructureVAE.from_pretrained(result.export_dir).state_dict()
    moved = max(float((out[k].float() - start[k].float()).abs().max()) for k in start)
    assert moved < 1e-5  # lr 1e-9: the exported weights are the shipped ones, not a fresh init
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert saved["init_from"]["loaded"] == len(start)


def test_unknown_or_ill_typed_options_are_errors_that_list_the_valid_keys(data_dir):  # noqa: F811
    with pytest.raises(InvalidInputError, match="(?s)bogus.*valid -o keys.*kl_weight"):
        VAETask(0, data_dir, {"bogus": 1})
    with pytest.raises(InvalidInputError, match="kl_weight='abc'.*float"):
        VAETask(0, data_dir, {"kl_weight": "abc"})
    with pytest.raises(InvalidInputError, match="crop"):
        VAETask(0, data_dir, {"crop": "big"})
    with pytest.raises(InvalidInputError, match="posterior.*vae_path|vae_path"):
        DiffusionTask(0, data_dir, {"kl_weight": 1.0})  # a VAE field is no diffusion option


def test_every_listed_option_reaches_the_model_config(data_dir):  # noqa: F811
    task = VAETask(1, data_dir, {"kl_weight": 0.001, "latent_channels": 4, "position_features": True, "crop": 32})
    cfg = task.recipe.vae
    assert (cfg.kl_weight, cfg.latent_channels, cfg.position_features, task.recipe.crop) == (0.001, 4, True, 32)
    model = task.build_model()
    assert model.config == cfg and model.enc_in.weight.shape[1] == cfg.in_channels
