"""Scenes beyond one tile: wall time, peak memory and seam score of `generate_extent` (one run).

Prints per level the tiles, voxels and seconds, the process's peak resident memory, and the seam
score (border/interior ratios of occupancy, class histogram and continuity; `xcube_core.eval.seams`).
``--baseline`` also runs the same scene with tiles that ignore their neighbours, for comparison;
``--resample`` compares RePaint resampling rounds; ``--global-attention`` also runs it with the
U-Nets' self-attention over each whole window, however large (before round 9; the default splits
windows beyond the native scene into native-sized ones), and prints the time ratio per level.
``--preview`` writes a PNG of the finest level.

``--scenes K`` takes the seam score over K scenes (seeds ``seed .. seed+K-1``), their bands pooled
(`xcube_core.eval.seams.pooled_seam_scores`): one scene's ratio is noisy and biased low, so a
seam is what stays under 1 when scenes are pooled; each scene's own ratios are printed beside it.

``--nna N`` scores per-tile quality: 1-NNA (Chamfer) of N native-size boxes cut from the scene (or
from ``--nna-scenes K`` scenes, seeds ``seed .. seed+K-1``) against N single-tile generations. Boxes
of one scene share its layout, style and density, so they are each other's nearest neighbours more
often than independent tiles are: with ``--data-style`` the same protocol is run on procedural data
(boxes cut from K sites of the same extent against N independent windows), which is what the data
distribution itself scores, the measure's floor.
"""

from __future__ import annotations

import dataclasses
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
    parser.add_argument("--overlap", type=float, default=None,
                        help="level-0 overlap of neighbouring tiles in metres (default: generate_extent's)")
    parser.add_argument("--halo", type=int, default=None, help="finer-level halo in coarse voxels (default RF)")
    parser.add_argument("--fine-tile", type=float, default=None, metavar="METRES",
                        help="side of the boxes finer levels are made in (default: generate_extent's)")
    parser.add_argument("--resample", type=int, nargs="+", default=[1], help="RePaint rounds to compare")
    parser.add_argument("--baseline", action="store_true", help="also run tiles that ignore their neighbours")
    parser.add_argument("--global-attention", action="store_true",
                        help="also run the scene with self-attention over each whole window (before round 9) "
                             "and print the windowed / global time ratio per level")
    parser.add_argument("--band", type=int, default=1, help="half band width in coarse voxels (default 1)")
    parser.add_argument("--preview", default=None, help="write a PNG of the finest level here")
    parser.add_argument("--scenes", type=int, default=1, metavar="K",
                        help="seam score over K scenes (seeds SEED..SEED+K-1), their bands pooled; each scene's "
                             "own score is printed too (default 1)")
    parser.add_argument("--nna", type=int, default=0, metavar="N",
                        help="also 1-NNA of (up to) N native-size boxes cut from the scene vs N single-tile generations")
    parser.add_argument("--nna-boxes", choices=("tiles", "grid"), default="tiles",
                        help="with --nna: cut the scene's own level-0 tiles (their windows, which overlap their "
                             "neighbours by the overlap), or a 64 m grid from the corner without overlap (boxes "
                             "that straddle tiles) (default tiles)")
    parser.add_argument("--nna-scenes", type=int, default=1, metavar="K",
                        help="with --nna: cut the N boxes from K scenes (seeds SEED..SEED+K-1, N/K boxes each, "
                             "in raster order; the --scenes scenes are reused) instead of one (default 1)")
    parser.add_argument("--compare-scale", action="store_true",
                        help="with --nna: also make the scene in one piece with --scale and score its tiles "
                             "against the same single-tile generations (square extents of 2..8 boxes)")
    parser.add_argument("--data-style", default=None, metavar="STYLE",
                        help="also score a scene tiled from procedural data scenes of STYLE (or 'mixed'), each "
                             "keeping its tile's share: what a model matching the data tile by tile scores at "
                             "level 0 without conditioning (the seam score's reference); with --nna also the "
                             "per-tile 1-NNA of boxes cut the same way from procedural sites of STYLE and the "
                             "extent against independent scenes of STYLE (the per-tile measure's floor)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def _one(pipe, args, extent, resample, hold, seed=None) -> dict:
    from xcube_core.eval.seams import seam_scores
    from xcube_core.tiling import generate_extent, merge_tiles

    t0 = time.perf_counter()
    tiles = []
    seed = args.seed if seed is None else seed
    for t in generate_extent(pipe, args.prompt, extent, seed=seed, steps=args.steps, num_levels=args.levels,
                             overlap_m=args.overlap, halo=args.halo, fine_tile_m=args.fine_tile,
                             resample=resample, hold=hold):
        tiles.append(t)
        print(f"  level {t.index} tile {t.metadata['tile_index'] + 1}/{t.metadata['num_tiles']}: "
              f"{t.num_voxels} voxels, {t.seconds:.1f} s, {time.perf_counter() - t0:.0f} s so far", flush=True)
    wall = time.perf_counter() - t0
    levels = merge_tiles(tiles)
    cols, plan, _, _ = _plan_lines(pipe, extent, args.overlap)
    out = {"resample": resample, "hold": hold, "wall_seconds": round(wall, 1), "tiles": len(plan.tiles()),
           "levels": []}
    for lv in levels:
        borders, interiors = _level_lines(pipe, args, extent, lv.index)
        s = seam_scores(lv, borders, interiors, cols, args.band) if borders else None
        out["levels"].append({"level": lv.index, "voxels": lv.num_voxels, "seconds": round(lv.seconds, 1),
                              "seam_ratio": None if s is None else _rounded(s["ratio"])})
    out["_levels"], out["_plan"] = levels, plan
    return out


def _level_lines(pipe, args, extent, index: int):
    """(border lines, interior lines) of one level: its seams lie where its own tiles meet (level 0:
    the native tiles; finer levels: the fine boxes)."""
    return _plan_lines(pipe, extent, args.overlap, args.fine_tile if index else False)[2:]


def _rounded(ratio: dict) -> dict:
    return {k: round(v, 3) for k, v in ratio.items()}


def per_tile_nna(pipe, args, pieces, singles=None):
    """1-NNA (Chamfer) of native-size boxes cut from finished scenes' finest levels (``pieces``: a list
    of (level, box)) vs single-tile generations with other seeds. Returns (report, single-tile clouds)
    so that other scenes can be compared against the same singles."""
    import torch

    from xcube_core.eval.metrics import distribution_metrics
    from xcube_core.eval.pointclouds import level_point_cloud
    from xcube_core.inpaint import crop, level_factor

    index = pieces[0][0].index
    f = level_factor(pipe.voxel_sizes, index)
    gen = torch.Generator().manual_seed(0)
    cut = [level_point_cloud(crop(level, box, f), 2048, generator=gen) for level, box in pieces]
    if singles is None:
        single = []
        for k in range(len(pieces)):
            levels = list(pipe.generate(args.prompt, seed=1000 + k, steps=args.steps, num_levels=index + 1))
            single.append(level_point_cloud(levels[-1], 2048, generator=gen))
        singles = torch.stack(single)
    m = distribution_metrics(torch.stack(cut), singles[: len(cut)])
    return {"n": len(pieces), "level": index, **{k: round(v, 4) for k, v in m.items()}}, singles


def spread_boxes(scenes, boxes, n):
    """(scene, box) pairs: ceil(n / len(scenes)) boxes of each scene in raster order, n in all."""
    per = -(-n // len(scenes))
    return [(scene, box) for scene in scenes for box in boxes[:per]][:n]


def _data_scene(pipe, args, index: int, columns=None):
    """Level 0 of procedural test scene ``index`` of ``--data-style`` at the model's coarsest voxel,
    ``columns`` wide (default: the model's box)."""
    from xcube_core.data.procedural.scene import SceneConfig, generate_scene, split_seed

    v0, shape = pipe.voxel_sizes[0], pipe.coarse_shape
    cx, cy = columns if columns is not None else shape[:2]
    config = SceneConfig(extent=(cx * v0, cy * v0), height=shape[2] * v0, voxel_size=v0)
    style = None if args.data_style == "mixed" else args.data_style
    return generate_scene(split_seed("test", index), config, num_levels=1, style=style).levels[-1]


def data_per_tile_nna(pipe, args, cols, boxes) -> dict:
    """The per-tile protocol on procedural data: boxes cut from ``--nna-scenes`` sites ``cols`` columns
    wide (level 0 of the model's voxel, test-split seeds that follow ``--seed``) against as many independent
    scenes of the model's box; what the data distribution itself scores (1-NNA above 50 % from boxes
    sharing a site)."""
    import torch

    from xcube_core.eval.metrics import distribution_metrics
    from xcube_core.eval.pointclouds import level_point_cloud
    from xcube_core.inpaint import crop

    # sites follow --seed like the model's scenes
    sites = [_data_scene(pipe, args, 5000 + args.seed + k, cols) for k in range(args.nna_scenes)]
    pieces = spread_boxes(sites, boxes, args.nna)
    gen = torch.Generator().manual_seed(0)
    cut = torch.stack([level_point_cloud(crop(level, box, 1), 2048, generator=gen) for level, box in pieces])
    ref = torch.stack([level_point_cloud(_data_scene(pipe, args, 1000 + k), 2048, generator=gen)
                       for k in range(len(pieces))])
    m = distribution_metrics(cut, ref)
    return {"style": args.data_style, "sites": len(sites), "n": len(pieces), **{k: round(v, 4) for k, v in m.items()}}


def _plan_lines(pipe, extent, overlap_m=None, fine_tile_m=False):
    """(columns, tile plan, border lines, interior lines) of the tiled plan of ``extent``: level 0's
    tiles, or (``fine_tile_m`` not False) the boxes of the finer levels."""
    from xcube_core.eval.seams import tile_lines
    from xcube_core.tiling import extent_columns, fine_columns, plan_tiles, tile_overlap

    cell = 2 ** pipe.levels[0].vae.config.num_down
    cols = extent_columns(extent, pipe.voxel_sizes[0], cell)
    if fine_tile_m is False:
        plan = plan_tiles(cols, pipe.coarse_shape, tile_overlap(pipe, overlap_m), cell)
    else:
        plan = plan_tiles(cols, (fine_columns(pipe, fine_tile_m, cell),) * 2, 0, cell)
    return (cols, plan, *tile_lines(plan))


def _seams_on_plan_lines(pipe, args, level, extent) -> dict | None:
    """The seam score of any scene on the lines where the tiled plan puts its borders: for a scene made
    in one piece this is the score of a scene without seams (the metric's own noise)."""
    from xcube_core.eval.seams import seam_scores

    cols, _, borders, interiors = _plan_lines(pipe, extent, args.overlap)
    if not borders:
        return None
    level = dataclasses.replace(level, metadata={**level.metadata, "extent_m": list(extent),
                                                 "extent_columns": list(cols)})
    return _rounded(seam_scores(level, borders, interiors, cols, args.band)["ratio"])


def scaled_scene(pipe, args, extent) -> tuple[dict, object, list]:
    """The same scene made in one piece with ``generate(scale=S)`` (a larger dense latent; the position
    features run beyond their trained range), and its native-size tiles on a grid, for comparison."""
    from xcube_core.errors import InvalidInputError

    box_m = [n * pipe.voxel_sizes[0] for n in pipe.coarse_shape[:2]]
    scale = round(extent[0] / box_m[0])
    if scale < 2 or extent[0] != extent[1] or abs(extent[0] - scale * box_m[0]) > 1e-6:
        raise InvalidInputError(f"--compare-scale needs a square extent of 2..8 model boxes ({box_m[0]:g} m "
                                f"each), got {extent[0]:g} x {extent[1]:g} m")
    t0 = time.perf_counter()
    levels = list(pipe.generate(args.prompt, seed=args.seed, steps=args.steps, num_levels=args.levels, scale=scale))
    wall = time.perf_counter() - t0
    return ({"scale": scale, "wall_seconds": round(wall, 1), "voxels": levels[-1].num_voxels}, levels[-1],
            native_boxes(pipe, (scale * pipe.coarse_shape[0], scale * pipe.coarse_shape[1])))


def data_tiled_seams(pipe, args, extent) -> dict:
    """The level-0 seam score of ``--scenes`` scenes tiled from procedural data scenes (test-split seeds,
    one per tile, the model's box and coarsest voxel), each keeping the share its tile owns."""
    from xcube_core.eval.seams import pooled_seam_scores, seam_scores
    from xcube_core.inpaint import concat, crop, translated

    cols, plan, borders, interiors = _plan_lines(pipe, extent, args.overlap)
    v0 = pipe.voxel_sizes[0]
    tiles = plan.tiles()
    scenes = []
    for j in range(args.scenes):
        parts = []
        for k, (a, b) in enumerate(tiles):
            lv = _data_scene(pipe, args, j * len(tiles) + k)
            box = plan.box(a, b)
            parts.append(crop(translated(lv, (box.x0, box.y0), 1), plan.owned(a, b), 1))
        scene = concat(parts, parts[0])
        scene.metadata = {"extent_m": [c * v0 for c in cols], "extent_columns": list(cols)}
        scenes.append(scene)
    out = {"style": args.data_style, "tiles": len(tiles),
           "seam_ratio": _rounded(pooled_seam_scores(scenes, borders, interiors, cols, args.band)["ratio"])}
    if len(scenes) > 1:
        out["per_scene"] = [_rounded(seam_scores(lv, borders, interiors, cols, args.band)["ratio"]) for lv in scenes]
    return out


def native_boxes(pipe, cols):
    """The scene's native-size boxes on a grid from its corner, without overlap (so that no two cut
    tiles share voxels, which would make them each other's nearest neighbours in 1-NNA)."""
    from xcube_core.inpaint import Box

    w, h = pipe.coarse_shape[:2]
    return [Box(i * w, j * h, (i + 1) * w, (j + 1) * h) for j in range(cols[1] // h) for i in range(cols[0] // w)]


def run(args) -> int:
    import torch

    from xcube_core.cli.generate import _extent
    from xcube_core.pipeline import XCubePipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    extent = _extent(args.extent)
    from xcube_core.errors import InvalidInputError

    for flag in ("scenes", "nna_scenes"):  # before any work
        if getattr(args, flag) < 1:
            raise InvalidInputError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.data_style:
        from xcube_core.data.procedural.names import STYLES

        if args.data_style != "mixed" and args.data_style not in STYLES:
            raise InvalidInputError(f"--data-style must be 'mixed' or one of {', '.join(STYLES)}, "
                                    f"got {args.data_style!r}")
    pipe = XCubePipeline.from_pretrained(args.model)
    results = [_one(pipe, args, extent, r, True) for r in args.resample]
    if args.baseline:
        results.append(_one(pipe, args, extent, 1, False))
    if args.global_attention:
        pipe.set_windowed_attention(False)
        results.append({**_one(pipe, args, extent, args.resample[0], True), "attention": "global"})
        pipe.set_windowed_attention(True)
    # more scenes with the first run's settings, other seeds: for the pooled seam score and per-tile boxes
    more = max(args.scenes, args.nna_scenes if args.nna else 1)
    runs = [results[0]]
    for k in range(1, more):
        print(f"scene {k + 1}/{more} (seed {args.seed + k})", flush=True)
        runs.append(_one(pipe, args, extent, args.resample[0], True, seed=args.seed + k))
    scenes = [r["_levels"] for r in runs]
    if args.scenes > 1:
        from xcube_core.eval.seams import pooled_seam_scores

        pooled = {"scenes": args.scenes, "seeds": [args.seed, args.seed + args.scenes - 1], "levels": []}
        for i, lv in enumerate(scenes[0]):
            borders, interiors = _level_lines(pipe, args, extent, lv.index)
            if borders:  # each scene's own ratio is the one its run already took
                s = pooled_seam_scores([sc[i] for sc in scenes[: args.scenes]], borders, interiors,
                                       results[0]["_plan"].extent, args.band)
                pooled["levels"].append({"level": lv.index, "seam_ratio": _rounded(s["ratio"]),
                                         "per_scene": [r["levels"][i]["seam_ratio"] for r in runs[: args.scenes]]})
    if args.nna:
        plan = results[0]["_plan"]
        boxes = (native_boxes(pipe, plan.extent) if args.nna_boxes == "grid"
                 else [plan.box(a, b) for a, b in plan.tiles()])
        finest = [s[-1] for s in scenes[: args.nna_scenes]]
        report_nna, singles = per_tile_nna(pipe, args, spread_boxes(finest, boxes, args.nna))
        report_nna["scenes"] = len(finest)
        if args.compare_scale:
            scaled, level, scale_boxes = scaled_scene(pipe, args, extent)
            scaled["per_tile_1nna"] = per_tile_nna(pipe, args, [(level, b) for b in scale_boxes[: args.nna]],
                                                   singles)[0]
            scaled["seam_ratio_on_tile_lines"] = _seams_on_plan_lines(pipe, args, level, extent)
    if args.data_style:
        data_ref = data_tiled_seams(pipe, args, extent)
        if args.nna:
            data_ref["per_tile_1nna"] = data_per_tile_nna(pipe, args, plan.extent, boxes)
    if args.preview:
        from xcube_core.io.preview import save_preview

        save_preview(results[0]["_levels"][-1], args.preview)
    for r in results:
        r.pop("_levels"), r.pop("_plan")
    report = {"extent_m": list(extent), "steps": args.steps, "threads": torch.get_num_threads(),
              "peak_rss_gb": round(_peak_rss_gb(), 2), "runs": results}
    if args.scenes > 1:
        report["pooled_seams"] = pooled
    if args.nna:
        report["per_tile_1nna"] = report_nna
        if args.compare_scale:
            report["scale"] = scaled
    if args.data_style:
        report["data_tiles"] = data_ref
    if args.global_attention:  # the first run against the global-attention run, level by level
        report["windowed_over_global_seconds"] = {
            str(lv["level"]): round(lv["seconds"] / max(ref["seconds"], 1e-9), 3)
            for lv, ref in zip(results[0]["levels"], results[-1]["levels"])}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"extent {extent[0]:g} m x {extent[1]:g} m, {args.steps} steps, {report['threads']} threads, "
          f"peak RSS {report['peak_rss_gb']} GB")
    if args.nna:
        print(f"per-tile quality: {report_nna}")
        if args.compare_scale:
            print(f"one piece with --scale {scaled['scale']} ({scaled['wall_seconds']} s): "
                  f"per-tile quality {scaled['per_tile_1nna']}; seam ratio on the tiles' border lines "
                  f"{scaled['seam_ratio_on_tile_lines']}")
    if args.data_style:
        print(f"data tiles ({data_ref['style']}, {data_ref['tiles']} procedural scenes, each keeping its tile's "
              f"share, level 0{_over(args.scenes)}): seam ratio {data_ref['seam_ratio']}")
        for k, r in enumerate(data_ref.get("per_scene", [])):
            print(f"  data scene {k + 1}: seam ratio {r}")
        if args.nna:
            print(f"per-tile quality of the data itself (boxes of {data_ref['per_tile_1nna']['sites']} procedural "
                  f"site(s) vs independent scenes, level 0): {data_ref['per_tile_1nna']}")
    for r in results:
        name = f"resample {r['resample']}" if r["hold"] else "baseline (tiles ignore neighbours)"
        if r.get("attention"):
            name += f", {r['attention']} self-attention"
        print(f"{name}: {r['tiles']} tiles, {r['wall_seconds']} s")
        for lv in r["levels"]:
            print(f"  level {lv['level']}: {lv['voxels']} voxels, {lv['seconds']} s, seam ratio {lv['seam_ratio']}")
    for level, ratio in report.get("windowed_over_global_seconds", {}).items():
        print(f"level {level}: windowed / global self-attention time {ratio}")
    if args.scenes > 1:
        for lv in pooled["levels"]:
            print(f"level {lv['level']}{_over(args.scenes)}, seeds {pooled['seeds'][0]}..{pooled['seeds'][1]}: "
                  f"seam ratio {lv['seam_ratio']}")
            for k, r in enumerate(lv["per_scene"]):
                print(f"  seed {args.seed + k}: seam ratio {r}")
    return 0


def _over(k: int) -> str:
    return f", {k} scenes pooled" if k > 1 else ""
