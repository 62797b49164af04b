"""Assemble trained per-level runs into one pipeline folder (what `XCubePipeline.from_pretrained` loads).

    python -m xcube_core.train.assemble --runs .cache/runs --out xcube_core/assets/default_model

    python -m xcube_core.train.assemble --base xcube_core/assets/default_model \
        --replace level0/unet=.cache/runs/diffusion0/model --out .cache/models/candidate

The first form expects RUNS/vae{i}/model, RUNS/diffusion{i}/model and optionally RUNS/refine{i}/model for levels
0, 1, ... (any number); the latent scale and text encoder come from the diffusion model's saved
config, the noise schedule and sampler defaults from its scheduler_config.json. Writes the pipeline
folder: pipeline.json, recipe.json (the per-level architecture, to retrain it with
``xcube train --recipe OUT``) and level{i}/{vae,unet,refine}/. The second form copies a pipeline
folder and swaps single networks for newly trained ones, keeping everything else: the other
networks, the latent scales, and each U-Net's sampler defaults (``scheduler_config.json``: the
guidance interval and steps were measured for the shipped model, a fine-tuning run does not know them).
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


def replace_parts(base: pathlib.Path, out: pathlib.Path, parts: dict[str, pathlib.Path], model_id: str | None,
                  dtype: torch.dtype | None = None) -> pathlib.Path:
    """Copy pipeline folder ``base`` to ``out`` with ``parts`` (``"level{i}/{vae,unet,refine}"`` ->
    model folder) swapped in; each swapped network's config also goes into ``recipe.json``.

    Raises:
        ModelLoadError: ``base`` is not a pipeline, a part is not one of its networks, or a model
            folder holds another class of network than the base.

    A swapped U-Net brings the latent scale its training measured (on the same VAE, but perhaps other
    data) into ``pipeline.json``: the scale belongs to the latents the U-Net learned.
    """
    if not (base / PIPELINE_FILE).is_file():
        raise ModelLoadError(f"--base {base} has no {PIPELINE_FILE}; pass a pipeline folder")
    missing = [str(v) for v in parts.values() if not all((v / f).is_file() for f in ("config.json", "model.safetensors"))]
    if missing:  # before anything is copied
        raise ModelLoadError(f"no config.json + model.safetensors in {', '.join(missing)}")
    if out.resolve() != base.resolve():
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(base, out)
    meta = json.loads((out / PIPELINE_FILE).read_text())
    recipe = json.loads((out / "recipe.json").read_text()) if (out / "recipe.json").is_file() else None
    for key, src in parts.items():
        level, _, name = key.partition("/")
        dest = out / key
        if not (level.startswith("level") and level[5:].isdigit() and name in ("vae", "unet", "refine")
                and (dest / "config.json").is_file()):
            raise ModelLoadError(f"--replace {key}: not a network of {base} (expected e.g. level0/unet)")
        new, old = (json.loads((d / "config.json").read_text()) for d in (src, dest))
        if new.get("class") != old.get("class"):
            raise ModelLoadError(f"--replace {key}: {src} holds a {new.get('class')}, {base} a {old.get('class')}")
        i = int(level[5:])
        scale = new.get("extra", {}).get("latent_scale")
        if name == "unet" and scale is not None:  # the scale its training measured on its data goes with it
            meta["levels"][i]["latent_scale"] = float(scale)
        sched = (dest / SCHEDULER_FILE).read_bytes() if (dest / SCHEDULER_FILE).is_file() else None
        _copy_part(src, dest, dtype)
        if sched is not None:
            (dest / SCHEDULER_FILE).write_bytes(sched)
        if recipe is not None:  # the new config, in the order the recipe already lists its fields
            before = recipe["levels"][i].get(name, {})
            ordered = {k: new["config"][k] for k in before if k in new["config"]}
            recipe["levels"][i][name] = {**ordered, **new["config"]}
    if recipe is not None:
        atomic_write_text(out / "recipe.json", json.dumps(recipe, indent=2) + "\n")
    if model_id:
        meta["model_id"] = model_id
    atomic_write_text(out / PIPELINE_FILE, json.dumps(meta, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=pathlib.Path, help="folder with vae0/, diffusion0/, ... runs")
    p.add_argument("--base", type=pathlib.Path, help="pipeline folder to copy, with --replace")
    p.add_argument("--replace", action="append", default=[], metavar="LEVEL/PART=MODEL_DIR",
                   help="with --base: swap one network, e.g. level0/unet=.cache/runs/diffusion0/model (repeatable)")
    p.add_argument("--out", type=pathlib.Path, required=True, help="pipeline folder to write")
    p.add_argument("--model-id", default=None, help="name recorded in the model and outputs "
                   "(default xcube-custom; with --base, the base's)")
    p.add_argument("--float16", action="store_true", help="store weights as float16 (half the size)")
    p.add_argument("--no-refine", action="store_true",
                   help="leave the refinement nets out (when `xcube eval vae --refine` shows they do not help)")
    p.add_argument("--class-prior", type=float, default=0.0,
                   help="nats added to the parent level's class in finer levels' semantic logits (0 = off)")
    args = p.parse_args(argv)
    if (args.runs is None) == (args.base is None):
        p.error("pass either --runs (assemble runs) or --base with --replace (swap networks)")
    if args.base is not None and not args.replace:
        p.error("--base needs at least one --replace LEVEL/PART=MODEL_DIR")
    dtype = torch.float16 if args.float16 else None
    try:
        if args.base is not None:
            pairs = [r.partition("=") for r in args.replace]
            if any(not k or not v for k, _, v in pairs):
                p.error(f"--replace takes LEVEL/PART=MODEL_DIR, got {args.replace}")
            parts = {k: pathlib.Path(v) for k, _, v in pairs}
            out = replace_parts(args.base, args.out, parts, args.model_id, dtype)
        else:
            out = assemble(args.runs, args.out, args.model_id or "xcube-custom", refine=not args.no_refine,
                           dtype=dtype, class_prior=args.class_prior)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"assembled {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
