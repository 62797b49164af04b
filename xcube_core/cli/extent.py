"""`xcube generate --extent XxY`: stream a tiled scene to disk tile by tile (see `xcube_core.tiling`).

Every tile-level is written to ``OUT/tiles/`` as it finishes. When a level is done its tiles are merged
into ``OUT/levelN.vdb`` (plus mesh and preview): in memory while the level is small, else from the
tile files one at a time (a 1 km scene's 0.25 m level has about 24 M voxels; a merged in-memory copy
and its mesh would not fit a laptop), in which case that level's mesh and preview are skipped.
"""

from __future__ import annotations

import json
import pathlib
import time

import torch

# voxels of one level kept in memory for a merged Level (mesh, preview); beyond, the level is merged
# from its tile files (VDB only)
MERGE_IN_MEMORY_VOXELS = 8_000_000


class _LevelTiles:
    """The tiles of the level being made: files, counts and (while small) the tiles themselves."""

    def __init__(self, index: int, limit: int) -> None:
        self.index, self.limit = index, limit
        self.tiles: list | None = []
        self.files: list[pathlib.Path] = []
        self.voxels, self.seconds, self.like = 0, 0.0, None
        self.classes: torch.Tensor | None = None

    def add(self, tile, path: pathlib.Path) -> None:
        self.files.append(path)
        self.voxels += tile.num_voxels
        self.seconds += tile.seconds
        if self.like is None:  # an empty copy: the file's voxel size, attributes and metadata
            from xcube_core.inpaint import select
            from xcube_core.tiling import TILE_KEYS

            self.like = select(tile, torch.zeros(tile.num_voxels, dtype=torch.bool))
            self.like.metadata = {k: v for k, v in tile.metadata.items() if k not in TILE_KEYS}
        if tile.semantics is not None:
            counts = torch.bincount(tile.semantics.clamp(min=0).long(), minlength=len(tile.class_names))
            self.classes = counts if self.classes is None else self.classes + counts
        if self.tiles is not None:
            self.tiles.append(tile)
            if self.voxels > self.limit:  # from now on the tile files are the level
                self.tiles = None

    def class_voxels(self) -> dict[str, int]:
        """Voxels per class over the level's tiles (as `class_histogram` of the merged level)."""
        if self.classes is None:
            return {}
        return {n: int(c) for n, c in zip(self.like.class_names, self.classes.tolist()) if c}


def run_extent(pipe, args, load_s: float) -> int:
    from tqdm import tqdm

    from xcube_core.cli.generate import StepProgress, write_level_outputs
    from xcube_core.inpaint import check_resample
    from xcube_core.io.vdb import write_level
    from xcube_core.tiling import extent_columns, fine_columns, generate_extent

    extent_columns(args.extent, pipe.voxel_sizes[0], 1)  # input errors before any output
    fine_columns(pipe, args.fine_tile, 1)
    check_resample(args.resample)
    out: pathlib.Path = args.out
    (out / "tiles").mkdir(parents=True, exist_ok=True)
    state = {"tile": 0}
    progress = StepProgress(lambda level: f"level {level} tile {state['tile'] + 1}")

    summary = {"prompt": args.prompt, "seed": args.seed, "steps": args.steps, "guidance": args.guidance,
               "model_id": pipe.model_id, "device": str(pipe.device), "extent_m": list(args.extent),
               "load_seconds": round(load_s, 3), "levels": [], "tiles": []}
    start = time.perf_counter()

    def finish_level(done: _LevelTiles) -> None:
        info = {"level": done.index, "voxels": done.voxels, "voxel_size_m": done.like.voxel_size,
                "tiles": len(done.files), "seconds": round(done.seconds, 3), "class_voxels": done.class_voxels()}
        if done.tiles is not None:
            from xcube_core.tiling import merge_tiles

            level = merge_tiles(done.tiles)[0]
            files = write_level_outputs(level, out, args.mesh_format, args.mesh_mode, not args.no_preview)
        else:
            files = [_merge_from_files(done, out).name]
            info["note"] = (f"{done.voxels} voxels (over {MERGE_IN_MEMORY_VOXELS}): merged from the tile files; "
                            "no mesh or preview of the whole level (export a part with `xcube export`)")
        info.update(since_start_seconds=round(time.perf_counter() - start, 3), files=files)
        summary["levels"].append(info)
        extra = f" ({info['note']})" if "note" in info else ""
        tqdm.write(f"level {done.index}: {done.voxels} voxels in {len(done.files)} tiles -> {', '.join(files)}{extra}")

    current: _LevelTiles | None = None
    for tile in generate_extent(pipe, args.prompt, args.extent, seed=args.seed, steps=args.steps,
                                guidance=args.guidance, num_levels=args.levels, overlap_m=args.overlap,
                                halo=args.halo, fine_tile_m=args.fine_tile, class_prior=args.class_prior,
                                resample=args.resample, callback=progress):
        if current is not None and current.index != tile.index:
            finish_level(current)
            current = None
        if current is None:
            current = _LevelTiles(tile.index, MERGE_IN_MEMORY_VOXELS)
        a, b = tile.metadata["tile"]
        path = write_level(tile, out / "tiles" / f"level{tile.index}_x{a}_y{b}.vdb")
        current.add(tile, path)
        state["tile"] = (tile.metadata["tile_index"] + 1) % tile.metadata["num_tiles"]
        summary["tiles"].append({"level": tile.index, "tile": [a, b], "voxels": tile.num_voxels,
                                 "region_m": tile.metadata["region_m"], "seconds": round(tile.seconds, 3),
                                 "file": f"tiles/{path.name}"})
        del tile
    if current is not None:
        finish_level(current)
    progress.close()
    summary["total_seconds"] = round(time.perf_counter() - start, 3)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {len(summary['levels'])} levels ({len(summary['tiles'])} tile-levels) to {out} in "
          f"{summary['total_seconds']:.1f} s (+{load_s:.1f} s model load); summary: {out / 'summary.json'}")
    return 0


def _merge_from_files(done: _LevelTiles, out: pathlib.Path) -> pathlib.Path:
    """``OUT/levelN.vdb`` from the level's tile files, read back one at a time."""
    from xcube_core.io.vdb import read_level, write_level_parts

    return write_level_parts((read_level(f) for f in done.files), done.like, out / f"level{done.index}.vdb")
