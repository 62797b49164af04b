"""Assemble trained per-level runs into one pipeline folder (what `XCubePipeline.from_pretrained` loads).

    python -m xcube_core.train.assemble --runs .cache/runs --out xcube_core/assets/default_model

Expects RUNS/vae{i}/model, RUNS/diffusion{i}/model and optionally RUNS/refine{i}/model for levels
0, 1, ... (any number); the latent scale and text encoder come from the diffusion model's saved
config, the noise schedule and sampler defaults from its scheduler_config.json. Writes the pipeline
folder: pipeline.json, recipe.json (the per-level architecture, to retrain it with
``xcube train --recipe OUT``) and level{i}/{vae,unet,refine}/.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys

import torch

from xcube_core.classes import CLASS_NAMES
from xcube_core.errors import ModelLoadError
from xcube_core.diffusion.scheduler_config import (
    SCHEDULER_FILE,
    SchedulerConfig,
    load_scheduler_config,
    save_scheduler_config,
)
from xcube_core.models.base import atomic_write_text, config_to_dict
from xcube_core.pipeline import PIPELINE_FILE
from xcube_core.train.recipes import DEFAULT_RECIPE_DATA, TEXT_ENCODER, recipe_from_dict, save_recipe


def copy_weights(src: pathlib.Path, dst: pathlib.Path, dtype: torch.dtype | None) -> None:
    """Copy a safetensors file, storing floating tensors as ``dtype`` (metadata kept).

    Loading casts them back to the model's dtype (``load_state_dict`` copies), so float16 storage
    halves the shipped size at a 1e-3 relative rounding of the weights.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as fh:
        meta = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(tensors, str(dst), metadata=meta)


def _copy_part(src: pathlib.Path, dst: pathlib.Path, dtype: torch.dtype | None) -> None:
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    shutil.copy2(src / "config.json", dst / "config.json")
    copy_weights(src / "model.safetensors", dst / "model.safetensors", dtype)
    if (src / SCHEDULER_FILE).is_file():
        shutil.copy2(src / SCHEDULER_FILE, dst / SCHEDULER_FILE)


def _level_recipe(runs: pathlib.Path, i: int, dest: pathlib.Path) -> dict:
    """The JSON recipe of assembled level ``dest``: network configs as shipped, data levels and crop
    from the diffusion run's ``train_config.json`` (else the default recipe's level of that voxel size)."""
    parts = {p: json.loads((dest / p / "config.json").read_text())["config"]
             for p in ("vae", "unet", "refine") if (dest / p / "config.json").is_file()}
    trained = {}
    for run in (f"diffusion{i}", f"vae{i}"):
        cfg = runs / run / "train_config.json"
        if cfg.is_file():
            trained = json.loads(cfg.read_text()).get("task_config", {}).get("recipe", {})
            break
    if "data_levels" not in trained:
        same = [lv for lv in DEFAULT_RECIPE_DATA["levels"] if lv["vae"]["voxel_size"] == parts["vae"]["voxel_size"]]
        if not same:
            raise ModelLoadError(f"level {i}: no train_config.json in {runs}/diffusion{i} to read data_levels from")
        trained = same[0]
    if "refine" not in parts:
        parts["refine"] = trained.get("refine", {"voxel_size": parts["vae"]["voxel_size"]})
    sched = config_to_dict(load_scheduler_config(dest / "unet"))
    return {"data_levels": trained["data_levels"], "crop": trained.get("crop"), "scheduler": sched, **parts}


def assemble(runs: pathlib.Path, out: pathlib.Path, model_id: str, refine: bool = True,
             dtype: torch.dtype | None = None, class_prior: float = 0.0) -> pathlib.Path:
    """Copy RUNS/{vae,diffusion,refine}{i}/model into OUT/level{i}/{vae,unet,refine} for i = 0, 1, ...
    and write ``pipeline.json`` and ``recipe.json`` (the architecture, schedule and sampler defaults).

    Raises:
        ModelLoadError: a level's diffusion run is missing or was not exported by ``xcube train``.
    """
    levels, text, recipe_levels = [], None, []
    i = 0
    while (runs / f"vae{i}" / "model").is_dir():
        unet_dir = runs / f"diffusion{i}" / "model"
        if not unet_dir.is_dir():
            raise ModelLoadError(f"{unet_dir} is missing: train `xcube train diffusion --level {i}` first")
        extra = json.loads((unet_dir / "config.json").read_text()).get("extra", {})
        if "latent_scale" not in extra:
            raise ModelLoadError(f"{unet_dir}/config.json has no latent_scale; export it with xcube train")
        if not (unet_dir / SCHEDULER_FILE).is_file():
            print(f"note: {unet_dir} has no {SCHEDULER_FILE} (exported before schedules were saved); "
                  "recording the default schedule it was trained with", file=sys.stderr)
        text = text or extra.get("text_encoder")
        dest = out / f"level{i}"
        parts = [("vae", runs / f"vae{i}" / "model"), ("unet", unet_dir)]
        if refine:
            parts.append(("refine", runs / f"refine{i}" / "model"))
        shutil.rmtree(dest / "refine", ignore_errors=True)
        for name, src in parts:
            if src.is_dir():
                _copy_part(src, dest / name, dtype)
        if not (dest / "unet" / SCHEDULER_FILE).is_file():
            save_scheduler_config(SchedulerConfig(), dest / "unet")
        levels.append({"latent_scale": float(extra["latent_scale"]), **({"class_prior": class_prior} if i else {})})
        recipe_levels.append(_level_recipe(runs, i, dest))
        i += 1
    if not levels:
        raise ModelLoadError(f"no trained levels under {runs} (expected {runs}/vae0/model ...)")
    recipe, _ = recipe_from_dict({"levels": recipe_levels, "text_encoder": text or TEXT_ENCODER})
    save_recipe(recipe, out, text or TEXT_ENCODER)
    meta = {"format": 1, "model_id": model_id, "class_names": list(CLASS_NAMES), "text_encoder": text,
            "levels": levels}
    atomic_write_text(out / PIPELINE_FILE, json.dumps(meta, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=pathlib.Path, required=True, help="folder with vae0/, diffusion0/, ... runs")
    p.add_argument("--out", type=pathlib.Path, required=True, help="pipeline folder to write")
    p.add_argument("--model-id", default="xcube-custom", help="name recorded in the model and outputs")
    p.add_argument("--float16", action="store_true", help="store weights as float16 (half the size)")
    p.add_argument("--no-refine", action="store_true",
                   help="leave the refinement nets out (when `xcube eval vae --refine` shows they do not help)")
    p.add_argument("--class-prior", type=float, default=0.0,
                   help="nats added to the parent level's class in finer levels' semantic logits (0 = off)")
    args = p.parse_args(argv)
    try:
        out = assemble(args.runs, args.out, args.model_id, refine=not args.no_refine,
                       dtype=torch.float16 if args.float16 else None, class_prior=args.class_prior)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"assembled {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
