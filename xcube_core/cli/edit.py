"""`xcube edit SCENE_DIR --box X0 Y0 X1 Y1`: regenerate a region of a generated scene.

Reads SCENE_DIR/level{L}.vdb, regenerates the X/Y box (metres, full height) with a new prompt and/or
seed, and writes a new scene folder (same files as `xcube generate`). Every voxel outside the box is
copied unchanged, at every level; inside, each level is sampled with everything around it held
fixed, so the new content continues the old at the border. A box wider than the model's tile (64 m
for the shipped model) is regenerated tile by tile.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

from xcube_core.cli.generate import class_prior_arg


def register(sub) -> None:
    p = sub.add_parser("edit", help="regenerate a box of a generated scene with a new prompt and/or seed",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scene", type=pathlib.Path, help="scene folder written by `xcube generate` (level0.vdb, ...)")
    p.add_argument("--box", type=float, nargs=4, required=True, metavar=("X0", "Y0", "X1", "Y1"),
                   help="the region in metres (scene coordinates), e.g. --box 10 10 30 40")
    p.add_argument("--prompt", default=None, help="what the region should become (default: the scene's prompt)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the scene's seed + 1)")
    p.add_argument("--out", type=pathlib.Path, default=None, help="new scene folder (default SCENE-edit)")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps per level, 1..1000 (default 25)")
    p.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale, 0..30 (default 3)")
    p.add_argument("--resample", type=int, default=1, help="RePaint resampling rounds per step, 1..20 (default 1)")
    p.add_argument("--halo", type=int, default=None,
                   help="coarse voxels of context around the box at finer levels (default: U-Net receptive field)")
    p.add_argument("--class-prior", type=class_prior_arg, default=None, metavar="NATS|keep",
                   help="how strongly finer levels keep each voxel's parent class (default: the model's)")
    p.add_argument("--model", type=pathlib.Path, default=None, help="model folder (default: the shipped model)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto", help="default auto")
    p.add_argument("--mesh-format", choices=("ply", "glb", "obj", "none"), default="ply", help="mesh file type")
    p.add_argument("--mesh-mode", choices=("smooth", "blocky"), default="smooth", help="mesh style")
    p.add_argument("--no-preview", action="store_true", help="skip the PNG previews")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from xcube_core.cli.generate import StepProgress, class_histogram, write_level_outputs
    from xcube_core.errors import InvalidInputError
    from xcube_core.inpaint import edit_region
    from xcube_core.io.scene import read_scene
    from xcube_core.pipeline import XCubePipeline

    levels = read_scene(args.scene)
    meta = levels[0].metadata
    prompt = args.prompt if args.prompt is not None else meta.get("prompt")
    if not prompt:
        raise InvalidInputError(f"{args.scene} records no prompt; pass --prompt")
    seed = args.seed if args.seed is not None else int(meta.get("seed", 0)) + 1
    out = args.out or args.scene.with_name(args.scene.name + "-edit")
    if out.resolve() == args.scene.resolve():
        raise InvalidInputError("--out must differ from the scene folder (the edit writes a new scene)")
    pipe = XCubePipeline.from_pretrained(args.model, device=args.device, precision=args.precision)
    progress = StepProgress()

    edits = edit_region(pipe, levels, args.box, prompt, seed=seed, steps=args.steps, guidance=args.guidance,
                        resample=args.resample, halo=args.halo, class_prior=args.class_prior, callback=progress)
    first = next(edits)  # validates everything before the output folder is made
    out.mkdir(parents=True, exist_ok=True)
    summary = {"scene": str(args.scene), "box_m": args.box, "prompt": prompt, "seed": seed, "levels": []}
    start = time.perf_counter()
    for level in [first, *edits]:
        files = write_level_outputs(level, out, args.mesh_format, args.mesh_mode, not args.no_preview)
        summary["levels"].append({"level": level.index, "voxels": level.num_voxels, "files": files,
                                  "class_voxels": class_histogram(level)})
        tqdm.write(f"level {level.index}: {level.num_voxels} voxels -> {', '.join(files)}")
    progress.close()
    summary["total_seconds"] = round(time.perf_counter() - start, 3)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote the edited scene to {out}; summary: {out / 'summary.json'}")
    return 0
