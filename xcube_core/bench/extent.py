"""Scenes beyond one tile: wall time, peak memory and seam score of `generate_extent` (one run).

Prints per level the tiles, voxels and seconds, the process's peak resident memory, and the seam
score (border/interior ratios of occupancy, class histogram and continuity; `xcube_core.eval.seams`).
``--baseline`` also runs the same scene with tiles that ignore their neighbours, for comparison;
``--resample`` compares RePaint resampling rounds. ``--preview`` writes a PNG of the finest level.
"""

from __future__ import annotations

import json
import resource
import time


def add_arguments(parser) -> None:
    parser.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--extent", default="128x128", help="scene size in metres, XxY (default 128x128)")
    parser.add_argument("--prompt", default="a quiet suburban street lined with houses and oak trees")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps per level (default 25)")
    parser.add_argument("--levels", type=int, default=None, help="levels to make (default all)")
    parser.add_argument("--halo", type=int, default=None, help="finer-level halo in coarse voxels (default RF)")
    parser.add_argument("--resample", type=int, nargs="+", default=[1], help="RePaint rounds to compare")
    parser.add_argument("--baseline", action="store_true", help="also run tiles that ignore their neighbours")
    parser.add_argument("--band", type=int, default=1, help="half band width in coarse voxels (default 1)")
    parser.add_argument("--preview", default=None, help="write a PNG of the finest level here")
    parser.add_argument("--nna", type=int, default=0, metavar="N",
                        help="also 1-NNA of (up to) N of the scene's tiles vs N single-tile generations")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def _one(pipe, args, extent, resample, hold) -> dict:
    from xcube_core.eval.seams import seam_scores, tile_lines
    from xcube_core.tiling import extent_columns, generate_extent, merge_tiles, plan_tiles

    t0 = time.perf_counter()
    tiles = []
    for t in generate_extent(pipe, args.prompt, extent, seed=args.seed, steps=args.steps, num_levels=args.levels,
                             halo=args.halo, resample=resample, hold=hold):
        tiles.append(t)
        print(f"  level {t.index} tile {t.metadata['tile_index'] + 1}/{t.metadata['num_tiles']}: "
              f"{t.num_voxels} voxels, {t.seconds:.1f} s, {time.perf_counter() - t0:.0f} s so far", flush=True)
    wall = time.perf_counter() - t0
    levels = merge_tiles(tiles)
    cell = 2 ** pipe.levels[0].vae.config.num_down
    cols = extent_columns(extent, pipe.voxel_sizes[0], cell)
    plan = plan_tiles(cols, pipe.coarse_shape, pipe.coarse_shape[0] // 4, cell)
    borders, interiors = tile_lines(plan)
    out = {"resample": resample, "hold": hold, "wall_seconds": round(wall, 1), "tiles": len(plan.tiles()),
           "levels": []}
    for lv in levels:
        s = seam_scores(lv, borders, interiors, cols, args.band) if borders else None
        out["levels"].append({"level": lv.index, "voxels": lv.num_voxels, "seconds": round(lv.seconds, 1),
                              "seam_ratio": None if s is None else {k: round(v, 3) for k, v in s["ratio"].items()}})
    out["_levels"], out["_plan"] = levels, plan
    return out


def per_tile_nna(pipe, args, scene_level, plan) -> dict:
    """1-NNA (Chamfer) of the scene's tiles (each tile's native-size box, cut from the finished scene's
    finest level) vs single-tile generations with other seeds."""
    import torch

    from xcube_core.eval.metrics import distribution_metrics
    from xcube_core.eval.pointclouds import level_point_cloud
    from xcube_core.inpaint import crop, level_factor

    f = level_factor(pipe.voxel_sizes, scene_level.index)
    gen = torch.Generator().manual_seed(0)
    boxes = [plan.box(a, b) for a, b in plan.tiles()][: args.nna]
    cut = [level_point_cloud(crop(scene_level, box, f), 2048, generator=gen) for box in boxes]
    single = []
    for k in range(len(boxes)):
        levels = list(pipe.generate(args.prompt, seed=1000 + k, steps=args.steps, num_levels=scene_level.index + 1))
        single.append(level_point_cloud(levels[-1], 2048, generator=gen))
    m = distribution_metrics(torch.stack(cut), torch.stack(single))
    return {"n": len(boxes), "level": scene_level.index, **{k: round(v, 4) for k, v in m.items()}}


def run(args) -> int:
    import torch

    from xcube_core.cli.generate import _extent
    from xcube_core.pipeline import XCubePipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    extent = _extent(args.extent)
    pipe = XCubePipeline.from_pretrained(args.model)
    results = [_one(pipe, args, extent, r, True) for r in args.resample]
    if args.baseline:
        results.append(_one(pipe, args, extent, 1, False))
    if args.nna:
        report_nna = per_tile_nna(pipe, args, results[0]["_levels"][-1], results[0]["_plan"])
    if args.preview:
        from xcube_core.io.preview import save_preview

        save_preview(results[0]["_levels"][-1], args.preview)
    for r in results:
        r.pop("_levels"), r.pop("_plan")
    report = {"extent_m": list(extent), "steps": args.steps, "threads": torch.get_num_threads(),
              "peak_rss_gb": round(_peak_rss_gb(), 2), "runs": results}
    if args.nna:
        report["per_tile_1nna"] = report_nna
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"extent {extent[0]:g} m x {extent[1]:g} m, {args.steps} steps, {report['threads']} threads, "
          f"peak RSS {report['peak_rss_gb']} GB")
    if args.nna:
        print(f"per-tile quality: {report_nna}")
    for r in results:
        name = f"resample {r['resample']}" if r["hold"] else "baseline (tiles ignore neighbours)"
        print(f"{name}: {r['tiles']} tiles, {r['wall_seconds']} s")
        for lv in r["levels"]:
            print(f"  level {lv['level']}: {lv['voxels']} voxels, {lv['seconds']} s, seam ratio {lv['seam_ratio']}")
    return 0
