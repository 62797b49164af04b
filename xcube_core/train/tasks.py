"""Training tasks of the XCube models: per-level VAE, diffusion U-Net and refinement network.

Each task implements `xcube_core.train.task.TrainTask` for one level of a recipe
(`recipes.DEFAULT_RECIPE`, or the one given with ``-o recipe=FILE_OR_MODEL_DIR`` / ``--recipe``).
Diffusion and refinement train on a frozen, already trained VAE of the same level (``vae_path``).
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Any

import torch

from xcube_core.errors import DataError, InvalidInputError, ModelLoadError
from xcube_core.models.base import config_from_dict, config_to_dict
from xcube_core.models.refine import RefineNet
from xcube_core.models.unet import SparseUNet
from xcube_core.models.vae import SparseStructureVAE
from xcube_core.sparse import GridBatch, JaggedTensor
from xcube_core.diffusion.scheduler_config import SchedulerConfig, save_scheduler_config
from xcube_core.train.recipes import DEFAULT_RECIPE, TEXT_ENCODER, LevelRecipe, load_recipe

logger = logging.getLogger(__name__)

COND_DROP = 0.1          # classifier-free guidance: text dropped 10% of the time
SCALE_ITEMS = 8          # training items used to measure the latent scale


@dataclasses.dataclass
class Batch:
    """One batch after cropping: per loaded data level a grid, normals (N, 3) and semantics (N,)."""

    grids: list[GridBatch]
    normals: list[torch.Tensor]
    semantics: list[torch.Tensor]
    captions: list[str]


class _LevelTask:
    name = "base"
    model_part = "vae"  # the recipe field whose config the task's network is built from
    # options of the task itself (not model fields), with their help; model fields come on top
    own_options: dict[str, str] = {
        "crop": "training crop in voxels of the level's grid (X = Y), or null for whole scenes",
        "recipe": "recipe JSON file or model folder to build the level from (xcube train --recipe)",
    }

    def __init__(self, level: int, data_dir: pathlib.Path | None, overrides: dict) -> None:
        overrides = dict(overrides)
        source = overrides.pop("recipe", None)
        self.recipes, self.text_encoder_config = load_recipe(source) if source else (DEFAULT_RECIPE, TEXT_ENCODER)
        if level not in self.recipes:
            where = f"recipe {source}" if source else "the default recipe"
            raise InvalidInputError(f"level must be one of {sorted(self.recipes)} in {where}, got {level}; "
                                    "fix: pass --recipe FILE with more levels")
        self.level = level
        self.data_dir = data_dir
        self.recipe: LevelRecipe = self.recipes[level]
        self.overrides = self._apply_options(overrides)

    @classmethod
    def valid_options(cls, level: int = 0, recipes: dict[int, LevelRecipe] | None = None) -> dict[str, str]:
        """Every ``-o KEY`` the task accepts: its own options and its network's config fields."""
        recipes = recipes or DEFAULT_RECIPE
        part = getattr(recipes.get(level, recipes[0]), cls.model_part)
        fields = {f.name: f"{cls.model_part} config field (default {getattr(part, f.name)!r})"
                  for f in dataclasses.fields(part)}
        return {**fields, **cls.own_options}

    def _apply_options(self, overrides: dict) -> dict:
        """Check every option against the valid ones and apply model fields to the recipe.

        Returns the task's own options (crop is applied here too). An unknown key, or a value of the
        wrong type, is an error that lists the valid keys: options never pass silently.
        """
        valid = self.valid_options(self.level, self.recipes)
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            listing = "\n".join(f"  {k}: {v}" for k, v in sorted(valid.items()))
            raise InvalidInputError(f"unknown {self.name} option(s) {unknown}; valid -o keys:\n{listing}")
        part = getattr(self.recipe, self.model_part)
        model_keys = {f.name for f in dataclasses.fields(part)} - set(self.own_options)
        model_over = {k: overrides.pop(k) for k in list(overrides) if k in model_keys}
        if model_over:
            self.recipe = dataclasses.replace(self.recipe, **{self.model_part: _typed_replace(part, model_over)})
        if "crop" in overrides:
            crop = overrides.pop("crop")
            if crop is not None and (not isinstance(crop, int) or isinstance(crop, bool) or crop < 8):
                raise InvalidInputError(f"-o crop={crop!r}: expected an integer >= 8 or null")
            self.recipe = dataclasses.replace(self.recipe, crop=crop)
        return overrides

    # --- data ---------------------------------------------------------------------------------
    def build_dataset(self, split: str):
        from xcube_core.data.dataset import VoxelDataset

        if self.data_dir is None or not self.data_dir.is_dir():
            raise DataError(f"data directory {self.data_dir} does not exist; make one with "
                            "`xcube data procedural --out DIR --count N`")
        ds = VoxelDataset(self.data_dir, split=split, levels=self.recipe.data_levels, dilation=False)
        if len(ds) == 0:
            raise DataError(f"{self.data_dir} has no '{split}' samples; generate them with --split {split}")
        return ds

    def collate(self, items: list) -> Any:
        from xcube_core.data.dataset import collate_voxel_batch

        return collate_voxel_batch(items)

    def prepare(self, batch: dict, generator: torch.Generator) -> Batch:
        """Crop (per item, aligned to the coarsest loaded level) and unwrap a collated batch."""
        grids = batch["grids"]
        normals = [n.jdata for n in batch["normals"]]
        sems = [s.jdata for s in batch["semantics"]]
        if self.recipe.crop is not None:
            grids, normals, sems = crop_batch(grids, normals, sems, self.recipe.crop, generator)
        return Batch(grids, normals, sems, list(batch["captions"]))

    def config(self) -> dict:
        recipe = config_to_dict(self.recipe)
        if self.recipe.scheduler == SchedulerConfig():
            # recorded only when it differs from the default, so checkpoints written before the
            # recipe had a scheduler still resume (their task config is compared key by key)
            recipe.pop("scheduler")
        if not recipe["unet"].get("known_inputs", False):
            recipe["unet"].pop("known_inputs", None)  # likewise for U-Nets without known inputs
        return {"task": self.name, "level": self.level, "recipe": recipe,
                "overrides": {k: str(v) for k, v in self.overrides.items()}}

    def _frozen_vae(self) -> SparseStructureVAE:
        path = self.overrides.get("vae_path")
        if not path:
            raise InvalidInputError(f"the {self.name} task needs the trained VAE of level {self.level}: "
                                    "pass -o vae_path=DIR (the VAE run's exported model folder)")
        vae = SparseStructureVAE.from_pretrained(path)
        want = self.recipe.vae
        same_geometry = (tuple(vae.config.grid_shape), vae.config.voxel_size, vae.config.dense_latent) == \
            (tuple(want.grid_shape), want.voxel_size, want.dense_latent)
        if not same_geometry:
            raise ModelLoadError(f"{path} holds a VAE of another geometry than level {self.level} "
                                 f"(grid {vae.config.grid_shape} at {vae.config.voxel_size} m vs "
                                 f"{want.grid_shape} at {want.voxel_size} m)")
        # the trained VAE's own config is what the networks downstream must fit (it may differ
        # from the recipe's defaults in widths or loss weights)
        self.recipe = dataclasses.replace(self.recipe, vae=vae.config)
        vae.requires_grad_(False)
        return vae


def crop_batch(grids: list[GridBatch], normals: list[torch.Tensor], sems: list[torch.Tensor], window: int,
               generator: torch.Generator):
    """Cut an X/Y window of ``window`` voxels of the finest grid from every item, all levels alike.

    The window starts on a multiple of the coarsest level's voxel, so the levels stay nested, and
    coordinates are shifted to start at 0.
    """
    ratio = int(round(float(grids[0].voxel_sizes[0, 0]) / float(grids[-1].voxel_sizes[0, 0])))
    stride = max(ratio, 1) * 4  # also keep 2 coarsenings below the coarsest level aligned
    b = grids[-1].grid_count
    hi = grids[-1].bbox()[:, 1, :2].long() + 1  # extent per item
    n_start = ((hi - window).clamp(min=0) // stride + 1)
    start = (torch.rand(b, 2, generator=generator) * n_start).long() * stride  # (B, 2) finest voxels
    out_g, out_n, out_s = [], [], []
    for lvl, g in enumerate(grids):
        f = int(round(float(g.voxel_sizes[0, 0]) / float(grids[-1].voxel_sizes[0, 0])))
        lo = (start // f)[g.jidx.long()]
        ijk = g.ijk.jdata.long()
        keep = ((ijk[:, :2] >= lo) & (ijk[:, :2] < lo + window // f)).all(dim=1)
        shift = torch.zeros_like(ijk)
        shift[:, :2] = lo
        moved = (ijk - shift)[keep]
        jidx = g.jidx[keep]
        counts = torch.bincount(jidx.long(), minlength=b)
        if bool((counts == 0).any()):
            raise DataError("a crop came out empty; the scenes are smaller than the crop window")
        offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        new = GridBatch.from_ijk(JaggedTensor.from_data_and_offsets(moved, offsets), g.voxel_sizes, g.origins)
        out_g.append(new)  # a per-item shift keeps the key order, so attributes stay aligned
        out_n.append(normals[lvl][keep])
        out_s.append(sems[lvl][keep])
    return out_g, out_n, out_s


def _as_float(value):
    """``value`` as a float when it is an int or a numeric string (YAML 1.1 reads ``1e-4`` as text)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _typed_replace(config, changes: dict):
    """``config`` with ``changes`` applied, each value checked against the field's default type
    (an integer or a number YAML read as text is accepted for a float field: ``-o guidance_scale=3``,
    ``-o beta_start=1e-4``)."""
    current = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    changes = {k: _as_float(v) if isinstance(current.get(k), float) else v for k, v in changes.items()}
    merged = config_from_dict(type(config), {**config_to_dict(config), **changes})
    for key in changes:
        old, new = getattr(config, key), getattr(merged, key)
        ok = isinstance(new, type(old)) and not (isinstance(new, bool) and not isinstance(old, bool))
        if not ok:
            raise InvalidInputError(f"-o {key}={changes[key]!r}: expected a {type(old).__name__} like {old!r}")
    return merged


class VAETask(_LevelTask):
    name = "vae"
    own_options = {
        **_LevelTask.own_options,
        "freeze_encoder": "train only the decoder (true/false, default false): the latent space stays the one "
                          "the level's diffusion U-Net was trained on, so a decoder fine-tune ships without "
                          "retraining diffusion",
    }

    def __init__(self, level, data_dir, overrides) -> None:
        super().__init__(level, data_dir, overrides)
        self.freeze_encoder = self.overrides.get("freeze_encoder", False)
        if not isinstance(self.freeze_encoder, bool):
            raise InvalidInputError(f"-o freeze_encoder={self.freeze_encoder!r}: expected true or false")

    def build_model(self) -> SparseStructureVAE:
        model = SparseStructureVAE(self.recipe.vae)
        if self.freeze_encoder:
            for p in model.encoder_parameters():
                p.requires_grad_(False)
        return model

    def loss(self, model, batch, generator):
        b = self.prepare(batch, generator)
        out = model(b.grids[-1], b.normals[-1], b.semantics[-1], generator=generator)
        logs = {k: float(v.detach()) for k, v in out.items() if k != "loss"}
        logs["voxels"] = float(b.grids[-1].total_voxels)
        return out["loss"], logs

    def export(self, model, out_dir: pathlib.Path) -> None:
        model.save_pretrained(out_dir, extra={"task": self.name, "level": self.level})


RECAPTION_POOL = 8  # rewordings per scene for -o recaption (a fixed pool, so text embeddings stay cached)
RECAPTION_CACHE = 8192  # prompts the text encoder keeps when recaptioning (about 40 KB each)


class DiffusionTask(_LevelTask):
    name = "diffusion"
    model_part = "unet"
    own_options = {
        **_LevelTask.own_options,
        "vae_path": "the trained VAE of this level (a model folder, e.g. a VAE run's model/) [required]",
        "text_encoder": f"text encoder name (default {TEXT_ENCODER['name']!r}, or the recipe's), or a config "
                        "mapping, e.g. '{name: hash, dim: 384}' where MiniLM is not installed",
        "posterior": "diffuse posterior 'mean' (default) or 'sample'",
        "latent_scale": "latent scale (default: measured as 1 / std over training scenes)",
        "recaption": f"probability in [0, 1] that a training caption is replaced by another wording of the "
                     f"scene's stored facts, one of {RECAPTION_POOL} per scene (procedural scenes only; caption "
                     "augmentation, default 0)",
        **{f.name: f"noise schedule / sampler default (recipe value {getattr(SchedulerConfig(), f.name)!r} "
                   "by default), saved as scheduler_config.json with the model"
           for f in dataclasses.fields(SchedulerConfig)},
    }

    def _apply_options(self, overrides: dict) -> dict:
        rest = super()._apply_options(overrides)
        sched = {k: rest.pop(k) for k in list(rest) if k in {f.name for f in dataclasses.fields(SchedulerConfig)}}
        if sched:
            try:
                new = _typed_replace(self.recipe.scheduler, sched)
            except ValueError as exc:
                raise InvalidInputError(f"scheduler option(s) {sched}: {exc}") from exc
            self.recipe = dataclasses.replace(self.recipe, scheduler=new)
        return rest

    def __init__(self, level, data_dir, overrides) -> None:
        super().__init__(level, data_dir, overrides)
        from xcube_core.models.text import build_text_encoder

        self.vae = self._frozen_vae()
        if self.recipe.unet.latent_channels != self.vae.config.latent_channels:  # the U-Net denoises the VAE's latent
            self.recipe = dataclasses.replace(self.recipe, unet=dataclasses.replace(
                self.recipe.unet, latent_channels=self.vae.config.latent_channels))
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        text_opt = self.overrides.get("text_encoder", self.text_encoder_config["name"])
        # a name, or a full config such as {name: hash, dim: 384} (a stand-in of the right width)
        text_cfg = dict(text_opt) if isinstance(text_opt, dict) else {"name": str(text_opt)}
        self.text = build_text_encoder(text_cfg)
        self.text_config = self.text.config()
        self.schedule = self.recipe.scheduler.noise_schedule()
        # "mean" (default): diffuse posterior means. With our weak KL most of a posterior sample's
        # variance is encoder noise (measured: 76 % at level 0, 93 % at level 1), which the U-Net
        # cannot learn from; the decoder reads means well (it is what reconstruction uses).
        self.posterior = str(self.overrides.pop("posterior", "mean"))
        if self.posterior not in ("mean", "sample"):
            raise InvalidInputError(f"posterior must be 'mean' or 'sample', got {self.posterior!r}")
        self.latent_scale = float(self.overrides.get("latent_scale", 0) or self._measure_latent_scale())
        self.recaption = self.overrides.get("recaption", 0.0)
        if isinstance(self.recaption, bool) or not isinstance(self.recaption, (int, float)) \
                or not 0.0 <= self.recaption <= 1.0:
            raise InvalidInputError(f"-o recaption={self.recaption!r}: expected a probability in [0, 1]")
        if self.recaption:  # keep every reworded caption's embedding: MiniLM costs more than a U-Net step
            self.text.cache_size = max(self.text.cache_size, RECAPTION_CACHE)

    def config(self) -> dict:
        return {**super().config(), "latent_scale": self.latent_scale, "text_encoder": self.text_config,
                "posterior": self.posterior}

    @torch.no_grad()
    def _measure_latent_scale(self) -> float:
        """1 / std of what the U-Net diffuses (posterior means or samples) over a few training scenes."""
        ds = self.build_dataset("train")
        items = [ds[i] for i in range(min(SCALE_ITEMS, len(ds)))]
        gen = torch.Generator().manual_seed(0)
        b = self.prepare(self.collate(items), gen)
        mean, logvar, _ = self.vae.encode(b.grids[-1], b.normals[-1], b.semantics[-1])
        z = mean.float()
        if self.posterior == "sample":
            z = z + torch.exp(0.5 * logvar.float()) * torch.randn(mean.shape, generator=gen)
        std = float(z.std())
        scale = float(f"{1.0 / max(std, 1e-6):.4g}")  # rounded: stable across thread counts
        logger.info("latent std %.4g -> scale %.4g", std, scale)
        return scale

    def build_model(self) -> SparseUNet:
        # token width follows the text encoder in use (384 for MiniLM)
        return SparseUNet(dataclasses.replace(self.recipe.unet, context_dim=self.text.dim))

    def latents(self, b: Batch, generator, files: list[str] | None = None) -> tuple[torch.Tensor, GridBatch]:
        """Scaled posterior means (or samples) of the batch and the latent grid they live on."""
        with torch.no_grad():
            mean, logvar, grid = self._posterior(b, files)
            z = mean.float()
            if self.posterior == "sample":
                z = z + torch.exp(0.5 * logvar.float()) * torch.randn(mean.shape, generator=generator)
        return z * self.latent_scale, grid

    def _posterior(self, b: Batch, files: list[str] | None):
        """Posterior (mean, logvar) of the frozen VAE. Uncropped dense latents are the same every
        epoch, so they are computed once per file and kept (about 130 KB a scene)."""
        cacheable = files is not None and self.recipe.crop is None and self.recipe.vae.dense_latent
        if cacheable and all(f in self._cache for f in files):
            grid = self.vae.latent_grid_for(b.grids[-1])
            mean = torch.cat([self._cache[f][0] for f in files])
            logvar = torch.cat([self._cache[f][1] for f in files])
            return mean, logvar, grid
        mean, logvar, grid = self.vae.encode(b.grids[-1], b.normals[-1], b.semantics[-1])
        if cacheable:
            for f, m, lv in zip(files, mean.float().chunk(len(files)), logvar.float().chunk(len(files))):
                self._cache[f] = (m.clone(), lv.clone())
        return mean.float(), logvar.float(), grid

    def loss(self, model, batch, generator):
        from xcube_core.diffusion.guidance import drop_prompts
        from xcube_core.diffusion.losses import v_prediction_loss
        from xcube_core.diffusion.schedule import sample_timesteps

        b = self.prepare(batch, generator)
        z, grid = self.latents(b, generator, batch.get("files"))
        cond_n, cond_s = coarse_condition(b, grid) if self.recipe.unet.cond_normals else (None, None)
        captions, _ = drop_prompts(self._recaptioned(b.captions, batch.get("metadata"), generator), COND_DROP,
                                   generator)
        emb = self.text.encode(captions)
        n_items = grid.grid_count
        t = sample_timesteps(n_items, self.schedule.num_train_timesteps, generator)
        noise = torch.randn(z.shape, generator=generator)
        jidx = grid.jidx.long()
        x_t = self.schedule.add_noise(z, noise, t, jidx)
        target = self.schedule.training_target(z, noise, t, jidx)  # v or eps, as the recipe's schedule says
        stats = {"latent_voxels": float(grid.total_voxels)}
        if not self.recipe.unet.known_inputs:
            pred = model(x_t, grid, t, emb.tokens, emb.mask, emb.pooled, cond_n, cond_s)
            return v_prediction_loss(pred.float(), target, jidx, n_items), stats
        # in/outpainting U-Net: held cells are in x_t as sampling puts them (their clean latent
        # noised to t) and in the known inputs; the loss counts only the cells it must make
        from xcube_core.models.unet import known_latent_inputs
        from xcube_core.train.known_masks import sample_known_masks

        held = sample_known_masks(grid.ijk.jdata, jidx, n_items, generator).to(z.device)
        pred = model(x_t, grid, t, emb.tokens, emb.mask, emb.pooled, cond_n, cond_s,
                     known=known_latent_inputs(z, held))
        free = ~held
        loss = v_prediction_loss(pred.float()[free], target[free], jidx[free], n_items)
        return loss, {**stats, "held_fraction": float(held.float().mean())}

    def _recaptioned(self, captions: list[str], metadata: list[dict] | None, generator) -> list[str]:
        """Each caption, or with probability ``recaption`` one of RECAPTION_POOL rewordings of its scene."""
        if not self.recaption or not metadata:
            return captions
        from xcube_core.data.procedural.captions import recaption

        draw = torch.rand(len(captions), generator=generator) < self.recaption
        variants = torch.randint(0, RECAPTION_POOL, (len(captions),), generator=generator)
        return [recaption(c, m, int(k)) if d else c
                for c, m, d, k in zip(captions, metadata, draw.tolist(), variants.tolist())]

    def export(self, model, out_dir: pathlib.Path) -> None:
        model.save_pretrained(out_dir, extra={"task": self.name, "level": self.level,
                                              "latent_scale": self.latent_scale, "text_encoder": self.text_config})
        save_scheduler_config(self.recipe.scheduler, out_dir)  # inference uses what training used


def coarse_condition(b: Batch, latent_grid: GridBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """The coarser data level's normals and semantics at the latent grid's voxels (zeros / -1 if absent)."""
    coarse = b.grids[0]
    idx = coarse.ijk_to_index(latent_grid.ijk, cumulative=True).jdata
    ok = idx >= 0
    cond_n = torch.where(ok[:, None], b.normals[0][idx.clamp(min=0)].float(), torch.zeros(()))
    cond_s = torch.where(ok, b.semantics[0][idx.clamp(min=0)].long(), torch.full((), -1))
    return cond_n, cond_s


class RefineTask(_LevelTask):
    """Refinement trained on VAE decodings of noised posteriors (the errors diffusion makes)."""

    name = "refine"
    model_part = "refine"
    own_options = {
        **_LevelTask.own_options,
        "vae_path": "the trained VAE of this level (a model folder, e.g. a VAE run's model/) [required]",
    }

    def __init__(self, level, data_dir, overrides) -> None:
        super().__init__(level, data_dir, overrides)
        self.vae = self._frozen_vae()

    def build_model(self) -> RefineNet:
        return RefineNet(self.recipe.refine)

    def loss(self, model, batch, generator):
        b = self.prepare(batch, generator)
        grid, normals, sems = b.grids[-1], b.normals[-1], b.semantics[-1]
        lo, hi = self.recipe.refine.noise_std
        with torch.no_grad():
            mean, logvar, lat = self.vae.encode(grid, normals, sems)
            sigma = lo + (hi - lo) * torch.rand(lat.grid_count, generator=generator)
            noise = torch.randn(mean.shape, generator=generator)
            z = mean + sigma[lat.jidx.long()][:, None] * torch.exp(0.5 * logvar) * noise
            dec = self.vae.decode(z, lat, max_voxels=2 * grid.total_voxels)
        if dec.grid.total_voxels == 0:
            raise DataError("the frozen VAE decoded an empty grid; train the VAE longer first")
        out = model(dec.grid, dec.normals, dec.semantics, target=grid)
        res = RefineNet.losses(out, grid, normals, sems)
        logs = {k: float(v.detach()) for k, v in res.items() if k != "loss"}
        logs["decoded_voxels"] = float(dec.grid.total_voxels)
        return res["loss"], logs

    def export(self, model, out_dir: pathlib.Path) -> None:
        model.save_pretrained(out_dir, extra={"task": self.name, "level": self.level})


def _factory(cls):
    def make(level: int, data_dir: pathlib.Path | None, overrides: dict):
        return cls(level, data_dir, overrides)

    return make


TASKS = {"vae": _factory(VAETask), "diffusion": _factory(DiffusionTask), "refine": _factory(RefineTask)}
