"""Time to first level and to the full scene with a model (default: the shipped one), on this machine.

Also the large preset (``--large``: 4x the X/Y extent, 1024 x 1024 finest footprint with the default
model): wall time, voxels and the process's peak resident memory. Prompts are fixed; seeds vary.
"""

from __future__ import annotations

import json
import resource
import statistics
import time

PROMPTS = (
    "a quiet suburban street lined with houses and oak trees",
    "a dense downtown block with tall glass towers",
    "a city park with a pond and many trees",
)


def add_arguments(parser) -> None:
    parser.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--runs", type=int, default=3, help="scenes to generate (default 3)")
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps per level (default 25)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--large", action="store_true", help="also run the large preset once (scale 4)")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # kB on Linux


def run(args) -> int:
    import torch

    from xcube_core.pipeline import XCubePipeline
    from xcube_core.precision import resolve_precision

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    pipe = XCubePipeline.from_pretrained(args.model, precision=args.precision)
    load_s = time.perf_counter() - t0
    pipe.text_encoder.encode(["warm-up"])
    rows = []
    for i in range(args.runs):
        rows.append(_one(pipe, PROMPTS[i % len(PROMPTS)], i, args.steps, 1))
    result = {
        "model_id": pipe.model_id, "threads": torch.get_num_threads(),
        "precision": resolve_precision(pipe.device, args.precision), "steps": args.steps,
        "load_seconds": round(load_s, 2),
        "first_level_seconds_median": round(statistics.median(r["first_level_s"] for r in rows), 3),
        "full_scene_seconds_median": round(statistics.median(r["total_s"] for r in rows), 3),
        "runs": rows,
    }
    if args.large:
        result["large"] = _one(pipe, PROMPTS[0], 0, args.steps, 4)
        result["large"]["peak_rss_gb"] = round(_peak_rss_gb(), 2)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"model {pipe.model_id}, {result['threads']} threads, {result['precision']}, {args.steps} steps, "
          f"load {load_s:.1f} s")
    print(f"{'prompt':58s} {'first level':>12s} {'full scene':>11s}  voxels per level")
    for r in rows + ([result["large"]] if args.large else []):
        print(f"{r['prompt'][:56]:58s} {r['first_level_s']:11.2f}s {r['total_s']:10.2f}s  {r['voxels']}"
              + (f"  (scale {r['scale']}, peak RSS {r['peak_rss_gb']} GB)" if r['scale'] > 1 else ""))
    print(f"median: first level {result['first_level_seconds_median']} s, "
          f"full scene {result['full_scene_seconds_median']} s (targets: <= 2 s and <= 30 s)")
    return 0


def _one(pipe, prompt: str, seed: int, steps: int, scale: int) -> dict:
    start = time.perf_counter()
    first, voxels = None, []
    for level in pipe.generate(prompt, seed=seed, steps=steps, scale=scale):
        first = first or time.perf_counter() - start
        voxels.append(level.num_voxels)
    return {"prompt": prompt, "seed": seed, "scale": scale, "first_level_s": round(first, 3),
            "total_s": round(time.perf_counter() - start, 3), "voxels": voxels}
