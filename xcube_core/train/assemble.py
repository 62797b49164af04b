"""Assemble trained per-level runs into one pipeline folder (what `XCubePipeline.from_pretrained` loads).

    python -m xcube_core.train.assemble --runs .cache/runs --out xcube_core/assets/default_model

Expects RUNS/vae{i}/model, RUNS/diffusion{i}/model and optionally RUNS/refine{i}/model for levels
0, 1, ...; the latent scale and text encoder come from the diffusion model's saved config.
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
from xcube_core.models.base import atomic_write_text
from xcube_core.pipeline import PIPELINE_FILE


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


def assemble(runs: pathlib.Path, out: pathlib.Path, model_id: str, refine: bool = True,
             dtype: torch.dtype | None = None, class_prior: float = 0.0) -> pathlib.Path:
    levels, text = [], None
    i = 0
    while (runs / f"vae{i}" / "model").is_dir():
        unet_dir = runs / f"diffusion{i}" / "model"
        if not unet_dir.is_dir():
            raise ModelLoadError(f"{unet_dir} is missing: train `xcube train diffusion --level {i}` first")
        extra = json.loads((unet_dir / "config.json").read_text()).get("extra", {})
        if "latent_scale" not in extra:
            raise ModelLoadError(f"{unet_dir}/config.json has no latent_scale; export it with xcube train")
        text = text or extra.get("text_encoder")
        dest = out / f"level{i}"
        parts = [("vae", runs / f"vae{i}" / "model"), ("unet", unet_dir)]
        if refine:
            parts.append(("refine", runs / f"refine{i}" / "model"))
        shutil.rmtree(dest / "refine", ignore_errors=True)
        for name, src in parts:
            if src.is_dir():
                shutil.rmtree(dest / name, ignore_errors=True)
                (dest / name).mkdir(parents=True)
                shutil.copy2(src / "config.json", dest / name / "config.json")
                copy_weights(src / "model.safetensors", dest / name / "model.safetensors", dtype)
        levels.append({"latent_scale": float(extra["latent_scale"]), **({"class_prior": class_prior} if i else {})})
        i += 1
    if not levels:
        raise ModelLoadError(f"no trained levels under {runs} (expected {runs}/vae0/model ...)")
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
