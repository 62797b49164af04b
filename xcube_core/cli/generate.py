"""`xcube generate "PROMPT"`: generate a scene and write every level as it finishes.

Per level L it writes OUT/level{L}.vdb (OpenVDB: density, normal, semantics), OUT/level{L}.{ply|glb|obj}
(a mesh coloured by semantic class) and OUT/level{L}.png (a shaded preview), then OUT/summary.json.
The coarse level is on disk within seconds while finer levels still compute.

--extent XxY (metres) builds a scene of any size from overlapping tiles of the model's native size
(each tile conditioned on what its neighbours already hold): every finished tile-level is written to
OUT/tiles/level{L}_x{A}_y{B}.vdb as it arrives, and each level's merged files when the level is done.

--layout FILE makes the scene follow a layout: a mesh (.obj .ply .glb .gltf .stl .off, classes from part
and material names) voxelised onto the model's coarsest grid, or a .vdb already at that resolution.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import pathlib
import time


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate a 3D scene from a text prompt (VDB + mesh + PNG per level)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prompt", help='what to generate, e.g. "a quiet suburban street lined with houses and oak trees"')
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("outputs/scene"), help="output folder (default outputs/scene)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same scene (default 0)")
    p.add_argument("--steps", type=int, default=None,
                   help="sampling steps per level, 1..1000 (default: the model's scheduler_config.json; 25 for "
                        "the shipped model)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale, 0..30 (default: the model's; 3 for the shipped model)")
    p.add_argument("--levels", type=int, default=None, help="stop after this many levels (default: all)")
    p.add_argument("--model", type=pathlib.Path, default=None, help="model folder (default: the shipped model)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto = bfloat16 where the hardware runs it fast (default)")
    p.add_argument("--mesh-format", choices=("ply", "glb", "obj", "none"), default="ply", help="mesh file type (default ply)")
    p.add_argument("--mesh-mode", choices=("smooth", "blocky"), default="smooth", help="mesh style (default smooth)")
    p.add_argument("--no-preview", action="store_true", help="skip the PNG previews")
    p.add_argument("--size", choices=("default", "large"), default="default",
                   help="large = 4x the X/Y extent (the default model: 256 m x 256 m, 1024 x 1024 finest "
                        "footprint at 0.25 m, millions of voxels; minutes on CPU)")
    p.add_argument("--scale", type=int, default=None, help="X/Y extent multiplier 1..8 (overrides --size)")
    p.add_argument("--condition", type=pathlib.Path, default=None, help="the same as --layout (kept for scripts)")
    p.add_argument("--layout", type=pathlib.Path, default=None,
                   help="layout-to-scene: a mesh (.obj/.ply/.glb/.gltf/.stl/.off) or a coarsest-level .vdb")
    fit = p.add_mutually_exclusive_group()
    fit.add_argument("--fit", action="store_true", help="scale the layout mesh uniformly to fill the model's box")
    fit.add_argument("--metric", action="store_true",
                     help="keep the layout's metres; it must lie in the model's box (default)")
    p.add_argument("--no-ground", action="store_true", help="do not add ground under a layout that has none")
    p.add_argument("--class-prior", type=class_prior_arg, default=None, metavar="NATS|keep",
                   help="how strongly finer levels keep each voxel's parent class: nats >= 0 added to that class "
                        "(default: the model's, 2 for the shipped model), or 'keep' to keep every class a layout "
                        "gives (its part names are then authoritative: a 'building' part gets no 'roof')")
    p.add_argument("--extent", type=_extent, default=None, metavar="XxY",
                   help="scene size in metres, e.g. 512x256 (tiles of the model's native size; each side <= 4096)")
    p.add_argument("--overlap", type=float, default=None,
                   help="metres shared by neighbouring tiles with --extent (default a quarter tile)")
    p.add_argument("--halo", type=int, default=None,
                   help="coarse voxels of context around a tile at finer levels (default: the U-Net's receptive field)")
    p.add_argument("--fine-tile", type=float, default=None, metavar="METRES",
                   help="with --extent: side of the boxes finer levels are made in, each plus the halo (default "
                        "256; larger boxes waste less time on halos and use more memory)")
    p.add_argument("--resample", type=int, default=1, help="RePaint resampling rounds per step, 1..20 (default 1)")
    p.set_defaults(func=run)


def class_prior_arg(text: str) -> float:
    """``--class-prior``: a number of nats >= 0, or 'keep' (infinite: the parent's class always wins)."""
    if text.strip().lower() in ("keep", "inf"):
        return math.inf
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of nats >= 0 or 'keep', got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of nats >= 0 or 'keep', got {text!r}")
    return value


def _extent(text: str) -> tuple[float, float]:
    parts = text.lower().replace("*", "x").split("x")
    try:
        x, y = (float(v) for v in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected XxY in metres, e.g. 512x256, got {text!r}") from None
    return x, y


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from xcube_core.errors import InvalidInputError
    from xcube_core.pipeline import XCubePipeline

    if not args.verbose:  # the per-level lines below say the same; keep the progress bar clean
        logging.getLogger("xcube_core.pipeline").setLevel(logging.WARNING)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError(f"--device {args.device}: no CUDA device here; use --device cpu")
    t0 = time.perf_counter()
    pipe = XCubePipeline.from_pretrained(args.model, device=args.device, precision=args.precision)
    load_s = time.perf_counter() - t0
    condition = None
    layout = args.layout or args.condition
    if layout is not None:
        from xcube_core.layout import load_layout

        condition = load_layout(layout, pipe.coarse_shape, pipe.voxel_sizes[0], pipe.class_names,
                                fit=args.fit, ground=not args.no_ground)
        if args.extent is not None:
            raise InvalidInputError("--layout fixes the scene to the model's box; drop --extent")
    pipe.validate(args.prompt, args.steps, args.guidance, args.levels, condition, args.class_prior)  # before output
    if args.extent is not None:
        from xcube_core.cli.extent import run_extent

        return run_extent(pipe, args, load_s)
    args.out.mkdir(parents=True, exist_ok=True)
    progress = StepProgress()

    summary = {"prompt": args.prompt, "seed": args.seed, "steps": args.steps, "guidance": args.guidance,
               "model_id": pipe.model_id, "device": str(pipe.device), "load_seconds": round(load_s, 3), "levels": []}
    start = time.perf_counter()
    for level in pipe.generate(args.prompt, seed=args.seed, steps=args.steps, guidance=args.guidance,
                               num_levels=args.levels, condition=condition, callback=progress,
                               scale=args.scale or (4 if args.size == "large" else 1), class_prior=args.class_prior):
        files = write_level_outputs(level, args.out, args.mesh_format, args.mesh_mode, not args.no_preview)
        info = {"level": level.index, "voxels": level.num_voxels, "voxel_size_m": level.voxel_size,
                "steps": level.metadata.get("steps"), "guidance": level.metadata.get("guidance"),
                "seconds": round(level.seconds, 3), "since_start_seconds": round(time.perf_counter() - start, 3),
                "files": files, "class_voxels": class_histogram(level)}
        summary["levels"].append(info)
        tqdm.write(f"level {level.index}: {level.num_voxels} voxels at {level.voxel_size:g} m "
                   f"in {level.seconds:.1f} s -> {', '.join(files)}")
    progress.close()
    summary["total_seconds"] = round(time.perf_counter() - start, 3)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {len(summary['levels'])} levels to {args.out} in {summary['total_seconds']:.1f} s "
          f"(+{load_s:.1f} s model load); summary: {args.out / 'summary.json'}")
    return 0


class StepProgress:
    """A tqdm bar of diffusion steps, as a `generate` callback ``(level, step, total)``; the bar is made
    on the first step, so that input errors print alone. ``describe(level)`` names each level's run."""

    def __init__(self, describe=lambda level: f"level {level}") -> None:
        self.describe, self.bar = describe, None

    def __call__(self, level: int, step: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=0, unit="step", dynamic_ncols=True)
        if step == 1:
            self.bar.reset(total=total)
            self.bar.set_description(self.describe(level))
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def write_level_outputs(level, out: pathlib.Path, mesh_format: str, mesh_mode: str, preview: bool) -> list[str]:
    """Write the .vdb, mesh and preview of one level; returns the file names."""
    from xcube_core.io.vdb import write_level

    stem = f"level{level.index}"
    files = [write_level(level, out / f"{stem}.vdb").name]
    if level.num_voxels and mesh_format != "none":
        from xcube_core.io.mesh import export_mesh, level_to_mesh

        files.append(export_mesh(level_to_mesh(level, mode=mesh_mode), out / f"{stem}.{mesh_format}").name)
    if level.num_voxels and preview:
        from xcube_core.io.preview import save_preview

        files.append(save_preview(level, out / f"{stem}.png").name)
    return files


def class_histogram(level) -> dict[str, int]:
    if level.semantics is None:
        return {}
    import torch

    counts = torch.bincount(level.semantics.clamp(min=0).long(), minlength=len(level.class_names))
    return {name: int(c) for name, c in zip(level.class_names, counts.tolist()) if c}
