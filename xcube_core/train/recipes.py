"""Model recipes as data: the per-level architecture, read from JSON, for any number of levels.

A *recipe* says, per model level, which data levels a task loads, the VAE / U-Net / refinement net
configs, the training crop and the diffusion noise schedule with its sampler defaults. It is plain
JSON (``recipe.json``)::

    {"format": 1, "text_encoder": {"name": "minilm"},
     "levels": [{"data_levels": [0], "crop": null, "vae": {...}, "unet": {...}, "refine": {...},
                 "scheduler": {...}}, ...]}

Missing network fields take their dataclass defaults, so a recipe file only needs what differs.
``xcube train ... --recipe FILE_OR_MODEL_DIR`` trains from one (a third level at 0.125 m is one more
entry in ``levels``); the assembler writes the recipe of the runs it assembles into the pipeline folder,
so ``--recipe MODEL_DIR`` retrains exactly the architecture of a shipped model. A pipeline folder
written before recipes were saved (the shipped v1) is read back from its networks' ``config.json``.

``data_levels[-1]`` is the level's own grid and, for levels > 0, ``data_levels[0]`` the coarser data
level whose attributes condition its diffusion (it must have the previous model level's voxel size).

The default recipe (:data:`DEFAULT_RECIPE_DATA`), sized to train on 2 CPU cores, after XCube's
ShapeNet configuration scaled down, on ``xcube data procedural`` data (3 levels: 1 m, 0.5 m, 0.25 m):

* level 0 — 1 m voxels: VAE to a *dense* 16 x 16 x 8 latent (8 channels, KL 0.03); a diffusion U-Net
  on that dense grid with position features and text cross-attention.
* level 1 — 0.25 m voxels: VAE whose *sparse* latent (8 channels, KL 0.001, sub-cell position inputs)
  lives on the 1 m grid that level 0 decodes; its U-Net takes the latent || level-0 normals ||
  level-0 semantic embedding.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import pathlib
from typing import Any

from xcube_core.classes import NUM_CLASSES
from xcube_core.diffusion.scheduler_config import SchedulerConfig
from xcube_core.errors import InvalidInputError
from xcube_core.fileio import atomic_write_text
from xcube_core.models.base import config_from_dict, config_to_dict
from xcube_core.models.refine import RefineConfig
from xcube_core.models.unet import UNetConfig
from xcube_core.models.vae import VAEConfig

__all__ = ["DEFAULT_RECIPE", "DEFAULT_RECIPE_DATA", "RECIPE_FILE", "LevelRecipe", "Recipe", "load_recipe",
           "recipe_from_dict", "recipe_to_dict", "save_recipe", "TEXT_ENCODER"]

RECIPE_FILE = "recipe.json"
RECIPE_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class LevelRecipe:
    """How one model level is built and trained.

    Attributes:
        data_levels: data hierarchy levels to load (last = this level's grid).
        crop: training crop of this level's grid in voxels (X = Y), a multiple of the latent stride;
            None trains on whole scenes. The convolutions are translation invariant, so crops teach
            the same local structure at a fraction of the cost.
        scheduler: the diffusion noise schedule and sampler defaults of this level.
    """

    data_levels: tuple[int, ...]
    vae: VAEConfig
    unet: UNetConfig
    refine: RefineConfig
    crop: int | None = None
    scheduler: SchedulerConfig = SchedulerConfig()


Recipe = dict[int, LevelRecipe]
"""A whole model's recipe: model level -> its recipe (levels 0..L-1)."""

DEFAULT_RECIPE_DATA: dict[str, Any] = {
    "format": RECIPE_FORMAT,
    "text_encoder": {"name": "minilm"},
    "levels": [
        {   # level 0: 1 m, 64 x 64 x 32 box, dense 16 x 16 x 8 latent
            "data_levels": [0], "crop": None,
            "vae": {"grid_shape": [64, 64, 32], "voxel_size": 1.0, "num_classes": NUM_CLASSES,
                    "channels": [16, 32, 64], "latent_channels": 8, "dense_latent": True, "dilate_steps": 1,
                    # v2: the same two encoder fixes as level 1 (docs/default-model.md, round 3)
                    "kl_weight": 0.001, "position_features": True},
            # v4: the known latent and its mask as inputs, trained on the masks tiles and edits hold
            # (docs/default-model.md, round 5)
            "unet": {"latent_channels": 8, "grid_shape": [16, 16, 8], "pos_freqs": 4, "model_channels": 32,
                     "channel_mult": [1, 2, 4], "cross_attention_levels": [1, 2], "context_dim": 384,
                     "known_inputs": True},
            "refine": {"num_classes": NUM_CLASSES, "channels": 16, "blocks": 2, "voxel_size": 1.0},
            # v2: no guidance at the noisiest 30 % of the steps (level-0 1-NNA 59 % -> 57 %, v1: 70 % -> 54 %,
            # prompt control kept; docs/default-model.md, round 3)
            "scheduler": {"guidance_interval": [0.0, 0.7]},
        },
        {   # level 1: 0.25 m, 256 x 256 x 128 box, sparse latent on level 0's 1 m grid
            "data_levels": [0, 2], "crop": 128,
            "vae": {"grid_shape": [256, 256, 128], "voxel_size": 0.25, "num_classes": NUM_CLASSES,
                    "channels": [8, 16, 32], "latent_channels": 8, "dense_latent": False, "dilate_steps": 1,
                    # v2: KL 0.1 -> 0.001 and sub-cell position inputs (IoU 0.40 -> 0.88, docs/default-model.md)
                    "kl_weight": 0.001, "position_features": True},
            "unet": {"latent_channels": 8, "grid_shape": [64, 64, 32], "cond_normals": True,
                     "cond_classes": NUM_CLASSES, "pos_freqs": 0, "model_channels": 32, "channel_mult": [1, 2, 4],
                     "cross_attention_levels": [2], "context_dim": 384},
            "refine": {"num_classes": NUM_CLASSES, "channels": 8, "blocks": 1, "voxel_size": 0.25},
            # v8: no guidance (an empty interval): from a true level 0, level 1 unguided, guided at 3 and
            # unconditional score alike (IoU 0.684 / 0.679 / 0.684), at half the U-Net passes
            # (docs/default-model.md, round 9)
            "scheduler": {"guidance_interval": [0.0, 0.0]},
        },
    ],
}
"""The default model's recipe as JSON-able data (``recipe_from_dict`` builds the typed form)."""

_PARTS = {"vae": VAEConfig, "unet": UNetConfig, "refine": RefineConfig, "scheduler": SchedulerConfig}


def _typed(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise InvalidInputError(f"recipe {where}: expected a mapping of {cls.__name__} fields, got {data!r}")
    try:
        return config_from_dict(cls, data)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"recipe {where}: {exc}") from exc


def _level_from_dict(data: Any, i: int) -> LevelRecipe:
    if not isinstance(data, dict):
        raise InvalidInputError(f"recipe levels[{i}]: expected a mapping, got {type(data).__name__}")
    known = {"data_levels", "crop", *_PARTS}
    unknown = sorted(set(data) - known)
    if unknown or "data_levels" not in data or "vae" not in data or "unet" not in data:
        raise InvalidInputError(f"recipe levels[{i}]: needs data_levels, vae and unet (optional: crop, refine, "
                                f"scheduler); unknown keys {unknown}")
    dl = data["data_levels"]
    if not isinstance(dl, (list, tuple)) or not dl or not all(isinstance(x, int) and x >= 0 for x in dl):
        raise InvalidInputError(f"recipe levels[{i}].data_levels: expected a list of data level indices, got {dl!r}")
    if i > 0 and len(dl) < 2:
        raise InvalidInputError(f"recipe levels[{i}].data_levels={list(dl)}: a level > 0 loads the coarser data "
                                "level that conditions it first, e.g. [0, 2]")
    crop = data.get("crop")
    if crop is not None and (not isinstance(crop, int) or isinstance(crop, bool) or crop < 8):
        raise InvalidInputError(f"recipe levels[{i}].crop={crop!r}: expected an integer >= 8 or null")
    vae = _typed(VAEConfig, data["vae"], f"levels[{i}].vae")
    refine = _typed(RefineConfig, data.get("refine", {"num_classes": vae.num_classes,
                                                      "voxel_size": vae.voxel_size}), f"levels[{i}].refine")
    return LevelRecipe(tuple(dl), vae, _typed(UNetConfig, data["unet"], f"levels[{i}].unet"), refine, crop,
                       _typed(SchedulerConfig, data.get("scheduler", {}), f"levels[{i}].scheduler"))


def recipe_from_dict(data: Any) -> tuple[Recipe, dict]:
    """``(recipe, text_encoder_config)`` from the JSON form (see the module docstring).

    Raises:
        InvalidInputError: wrong structure, unknown fields, or levels that do not nest (each level's
            voxel size times ``2 ** num_down`` must equal the previous level's).
    """
    if not isinstance(data, dict) or not isinstance(data.get("levels"), list) or not data["levels"]:
        raise InvalidInputError("a recipe is a mapping with a non-empty 'levels' list (see xcube_core.train.recipes)")
    if data.get("format", RECIPE_FORMAT) != RECIPE_FORMAT:
        raise InvalidInputError(f"recipe format {data.get('format')!r} is not supported (expected {RECIPE_FORMAT})")
    levels = {i: _level_from_dict(lv, i) for i, lv in enumerate(data["levels"])}
    for i in range(1, len(levels)):
        cfg, prev = levels[i].vae, levels[i - 1].vae
        if cfg.dense_latent or abs(cfg.voxel_size * 2 ** cfg.num_down - prev.voxel_size) > 1e-9:
            raise InvalidInputError(
                f"recipe level {i}: a level > 0 has a sparse latent on level {i - 1}'s grid, so its voxel size "
                f"{cfg.voxel_size} m x 2^{cfg.num_down} (len(channels) - 1) must equal {prev.voxel_size} m")
    text = data.get("text_encoder", DEFAULT_RECIPE_DATA["text_encoder"])
    if not isinstance(text, dict) or "name" not in text:
        raise InvalidInputError(f"recipe text_encoder: expected a mapping with a 'name', got {text!r}")
    return levels, dict(text)


def recipe_to_dict(recipe: Recipe, text_encoder: dict | None = None) -> dict:
    """The JSON form of ``recipe`` (levels in order)."""
    levels = []
    for i in sorted(recipe):
        lv = config_to_dict(recipe[i])
        levels.append({"data_levels": lv["data_levels"], "crop": lv["crop"],
                       **{part: lv[part] for part in _PARTS}})
    return {"format": RECIPE_FORMAT, "text_encoder": dict(text_encoder or TEXT_ENCODER), "levels": levels}


def save_recipe(recipe: Recipe, directory: str | pathlib.Path, text_encoder: dict | None = None) -> pathlib.Path:
    """Write ``directory/recipe.json``; returns its path."""
    path = pathlib.Path(directory) / RECIPE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(recipe_to_dict(recipe, text_encoder), indent=2) + "\n")
    return path


def load_recipe(source: str | pathlib.Path) -> tuple[Recipe, dict]:
    """``(recipe, text_encoder_config)`` from a recipe JSON/YAML file, a folder holding ``recipe.json``,
    or a pipeline folder without one (read back from its networks' ``config.json``).

    Raises:
        InvalidInputError: the source does not exist, does not parse, or is not a valid recipe.
    """
    path = pathlib.Path(source)
    if path.is_dir():
        if (path / RECIPE_FILE).is_file():
            path = path / RECIPE_FILE
        elif (path / "pipeline.json").is_file():
            return _recipe_from_pipeline_folder(path)
        else:
            raise InvalidInputError(f"--recipe {source}: the folder holds neither {RECIPE_FILE} nor pipeline.json; "
                                    "fix: pass a recipe file or a pipeline folder")
    if not path.is_file():
        raise InvalidInputError(f"--recipe {source} does not exist; fix: pass a recipe JSON file or a model folder")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # OSError, json/yaml errors
        raise InvalidInputError(f"cannot read recipe {path}: {exc}") from exc
    return recipe_from_dict(data)


def _recipe_from_pipeline_folder(root: pathlib.Path) -> tuple[Recipe, dict]:
    """A recipe rebuilt from the networks of a pipeline folder that predates ``recipe.json``.

    Networks' configs are exact; data levels and crops (training settings no network records) come
    from the default recipe's level of the same voxel size.
    """
    from xcube_core.diffusion.scheduler_config import load_scheduler_config

    meta = json.loads((root / "pipeline.json").read_text(encoding="utf-8"))
    data = copy.deepcopy(DEFAULT_RECIPE_DATA)
    data["text_encoder"] = meta.get("text_encoder") or data["text_encoder"]
    levels = []
    for i in range(len(meta.get("levels", []))):
        d = root / f"level{i}"
        parts = {p: json.loads((d / p / "config.json").read_text(encoding="utf-8"))["config"]
                 for p in ("vae", "unet", "refine") if (d / p / "config.json").is_file()}
        if "vae" not in parts or "unet" not in parts:
            raise InvalidInputError(f"{d}: needs vae/ and unet/ with config.json to read a recipe from")
        same = [lv for lv in DEFAULT_RECIPE_DATA["levels"] if lv["vae"]["voxel_size"] == parts["vae"]["voxel_size"]]
        if not same:
            raise InvalidInputError(f"{d}: no recipe.json and no default level at {parts['vae']['voxel_size']} m "
                                    "to take data_levels and crop from; fix: write a recipe.json for this model")
        sched = config_to_dict(load_scheduler_config(d / "unet"))
        levels.append({"data_levels": same[0]["data_levels"], "crop": same[0]["crop"], "scheduler": sched, **parts})
    data["levels"] = levels
    return recipe_from_dict(data)


DEFAULT_RECIPE, TEXT_ENCODER = recipe_from_dict(DEFAULT_RECIPE_DATA)
"""The default recipe, typed: model level -> :class:`LevelRecipe`; and its text encoder config."""
