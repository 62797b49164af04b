"""Region edits: the seam score where regenerated voxels meet the old ones (one run).

Makes ``--scenes`` single-tile scenes (seeds 0..N-1), regenerates ``--box`` in each with
`xcube_core.inpaint.edit_region` (seed 1000 + k, ``--edit-prompt`` or the same prompt), and scores
bands across the box's edges against bands inside and beside it (`xcube_core.eval.seams.box_seam_scores`).
The same lines scored on the unedited scenes are the metric's floor for these scenes (no seam there).
Prints the ratios per level, pooled over the scenes, and the seconds an edit took.
"""

from __future__ import annotations

import dataclasses
import json
import time


def add_arguments(parser) -> None:
    parser.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--prompt", default="a quiet suburban street lined with houses and oak trees")
    parser.add_argument("--edit-prompt", default=None, help="prompt of the regenerated box (default: --prompt)")
    parser.add_argument("--box", type=float, nargs=4, default=(16.0, 16.0, 48.0, 48.0),
                        metavar=("X0", "Y0", "X1", "Y1"), help="box to regenerate in metres (default the middle "
                        "32 m x 32 m of the 64 m tile)")
    parser.add_argument("--scenes", type=int, default=8, help="scenes to edit (seeds 0..N-1; default 8)")
    parser.add_argument("--levels", type=int, default=1, help="levels to make and score (default 1: the "
                        "coarsest, where the layout is decided)")
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps per level (default 25)")
    parser.add_argument("--band", type=int, default=2, help="half band width in coarse voxels (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")


def _with_extent(level, cols, voxel_size):
    meta = {**level.metadata, "extent_m": [c * voxel_size for c in cols], "extent_columns": list(cols)}
    return dataclasses.replace(level, metadata=meta)


def run(args) -> int:
    import torch

    from xcube_core.errors import InvalidInputError
    from xcube_core.eval.seams import box_seam_scores
    from xcube_core.inpaint import Box, concat, edit_region, level_factor, region_columns, translated
    from xcube_core.pipeline import XCubePipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.scenes < 1:
        raise InvalidInputError(f"--scenes must be >= 1, got {args.scenes}")
    pipe = XCubePipeline.from_pretrained(args.model)
    if not 1 <= args.levels <= pipe.num_levels:
        raise InvalidInputError(f"--levels must be in 1..{pipe.num_levels}, got {args.levels}")
    v0 = pipe.voxel_sizes[0]
    cols = tuple(pipe.coarse_shape[:2])
    box = region_columns(args.box, v0, Box(0, 0, cols[0], cols[1]))  # refuses a box outside the tile
    edited, unedited, seconds = [], [], []  # per scene, its levels
    for k in range(args.scenes):
        scene = list(pipe.generate(args.prompt, seed=k, steps=args.steps, num_levels=args.levels))
        t0 = time.perf_counter()
        edited.append(list(edit_region(pipe, scene, args.box, args.edit_prompt or args.prompt, seed=1000 + k,
                                       steps=args.steps)))
        seconds.append(time.perf_counter() - t0)
        unedited.append(scene)
        print(f"  scene {k + 1}/{args.scenes}: edit {seconds[-1]:.1f} s", flush=True)

    def pooled(scenes, i):  # level i of every scene, scene k moved k tiles along Y, scored at once
        f = level_factor(pipe.voxel_sizes, i)
        level = concat([translated(s[i], (0, k * cols[1]), f) for k, s in enumerate(scenes)], scenes[0][i])
        r = box_seam_scores(_with_extent(level, cols, v0), box, cols, args.band, copies=len(scenes))["ratio"]
        return {n: round(v, 3) for n, v in r.items()}

    report = {"box_m": list(args.box), "scenes": args.scenes, "steps": args.steps, "band": args.band,
              "edit_seconds": round(sum(seconds) / len(seconds), 2),
              "levels": [{"level": i, "edited": pooled(edited, i), "unedited": pooled(unedited, i)}
                         for i in range(args.levels)]}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"box {list(args.box)} m regenerated in {args.scenes} scenes, {args.steps} steps, "
          f"{report['edit_seconds']} s an edit (seam ratios pooled over the scenes; 1 = no seam)")
    for row in report["levels"]:
        print(f"  level {row['level']}: edited {row['edited']}; same lines unedited {row['unedited']}")
    return 0

