"""`xcube generate --extent XxY`: stream a tiled scene to disk tile by tile (see `xcube_core.tiling`)."""

from __future__ import annotations

import json
import pathlib
import time


def run_extent(pipe, args, load_s: float) -> int:
    from tqdm import tqdm

    from xcube_core.cli.generate import StepProgress, class_histogram, write_level_outputs
    from xcube_core.io.vdb import write_level
    from xcube_core.inpaint import check_resample
    from xcube_core.tiling import extent_columns, generate_extent, merge_tiles

    extent_columns(args.extent, pipe.voxel_sizes[0], 1)  # input errors before any output
    check_resample(args.resample)
    out: pathlib.Path = args.out
    (out / "tiles").mkdir(parents=True, exist_ok=True)
    state = {"tile": 0}
    progress = StepProgress(lambda level: f"level {level} tile {state['tile'] + 1}")

    summary = {"prompt": args.prompt, "seed": args.seed, "steps": args.steps, "guidance": args.guidance,
               "model_id": pipe.model_id, "device": str(pipe.device), "extent_m": list(args.extent),
               "load_seconds": round(load_s, 3), "levels": [], "tiles": []}
    start = time.perf_counter()
    pending: list = []

    def finish_level(tiles: list) -> None:
        level = merge_tiles(tiles)[0]
        files = write_level_outputs(level, out, args.mesh_format, args.mesh_mode, not args.no_preview)
        summary["levels"].append({"level": level.index, "voxels": level.num_voxels, "voxel_size_m": level.voxel_size,
                                  "tiles": len(tiles), "seconds": round(level.seconds, 3),
                                  "since_start_seconds": round(time.perf_counter() - start, 3), "files": files,
                                  "class_voxels": class_histogram(level)})
        tqdm.write(f"level {level.index}: {level.num_voxels} voxels in {len(tiles)} tiles -> {', '.join(files)}")

    for tile in generate_extent(pipe, args.prompt, args.extent, seed=args.seed, steps=args.steps,
                                guidance=args.guidance, num_levels=args.levels, overlap_m=args.overlap,
                                halo=args.halo, resample=args.resample, callback=progress):
        if pending and pending[-1].index != tile.index:
            finish_level(pending)
            pending = []
        pending.append(tile)
        a, b = tile.metadata["tile"]
        name = write_level(tile, out / "tiles" / f"level{tile.index}_x{a}_y{b}.vdb").name
        state["tile"] = (tile.metadata["tile_index"] + 1) % tile.metadata["num_tiles"]
        summary["tiles"].append({"level": tile.index, "tile": [a, b], "voxels": tile.num_voxels,
                                 "region_m": tile.metadata["region_m"], "seconds": round(tile.seconds, 3),
                                 "file": f"tiles/{name}"})
    if pending:
        finish_level(pending)
    progress.close()
    summary["total_seconds"] = round(time.perf_counter() - start, 3)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {len(summary['levels'])} levels ({len(summary['tiles'])} tile-levels) to {out} in "
          f"{summary['total_seconds']:.1f} s (+{load_s:.1f} s model load); summary: {out / 'summary.json'}")
    return 0
