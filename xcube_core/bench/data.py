"""Data-layer speed: voxelising a ~1M-triangle mesh into a 512^3 hierarchy, and generating procedural
scenes (default 64 m x 64 m at 0.25 m, 3 levels). Reports wall and CPU seconds (median of --repeat)
and the machine load, because wall time on a shared machine depends on what else runs."""

from __future__ import annotations

import json
import os
import statistics
import time


def add_arguments(parser) -> None:
    parser.add_argument("--shape", choices=("torus", "sphere"), default="torus",
                        help="test mesh: torus (1000 x 500 sections = 1,000,000 triangles) or icosphere "
                        "(8 subdivisions = 1,310,720 triangles)")
    parser.add_argument("--resolution", type=int, default=512, help="finest grid size (default 512)")
    parser.add_argument("--levels", type=int, default=3, help="hierarchy depth (default 3)")
    parser.add_argument("--scenes", type=int, default=7,
                        help="procedural scenes to time (seed i, style i mod 7; default one per style)")
    parser.add_argument("--repeat", type=int, default=1, help="mesh voxelisation repeats (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _mesh(shape: str):
    import numpy as np
    import trimesh

    from xcube_core.data.assets import MeshData

    if shape == "torus":
        m = trimesh.creation.torus(1.0, 0.35, major_sections=1000, minor_sections=500)
    else:
        m = trimesh.creation.icosphere(subdivisions=8)
    return MeshData(np.asarray(m.vertices, dtype=np.float64), np.asarray(m.faces, dtype=np.int64), None, [shape])


def run(args) -> int:
    import torch

    from xcube_core.data.procedural import STYLES, generate_scene
    from xcube_core.data.voxelize import voxelize_mesh

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    mesh = _mesh(args.shape)
    runs = [_timed(lambda: voxelize_mesh(mesh, args.levels, "unit_box", args.resolution))
            for _ in range(max(1, args.repeat))]
    sample = runs[0][0]
    scenes = [_timed(lambda s=s: generate_scene(s, num_levels=args.levels, style=STYLES[s % len(STYLES)]))
              for s in range(args.scenes)]
    result = {
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_average_1min": [load_before, os.getloadavg()[0]],
        "mesh": {"shape": args.shape, "triangles": int(len(mesh.faces)), "resolution": args.resolution,
                 "levels": args.levels, "voxels_per_level": [lvl.num_voxels for lvl in sample.levels],
                 "wall_s": statistics.median(r[1] for r in runs), "cpu_s": statistics.median(r[2] for r in runs)},
        "scene": {"count": len(scenes), "styles": [s[0].metadata["style"] for s in scenes],
                  "voxels_per_level_mean": [statistics.mean(s[0].levels[i].num_voxels for s in scenes)
                                            for i in range(args.levels)] if scenes else [],
                  "wall_s": statistics.median(s[1] for s in scenes) if scenes else None,
                  "cpu_s": statistics.median(s[2] for s in scenes) if scenes else None},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    m, s = result["mesh"], result["scene"]
    print(f"xcube bench data: torch threads {result['torch_threads']} of {result['cpu_count']} cores, "
          f"load average {load_before:.1f} -> {result['load_average_1min'][1]:.1f}")
    print(f"{'job':54}{'wall':>9}{'cpu':>9}  voxels per level (coarse -> fine)")
    mesh_label = f"{m['shape']} {m['triangles']:,} triangles -> {m['resolution']}^3, {m['levels']} levels"
    print(f"{mesh_label:54}{m['wall_s']:8.2f}s{m['cpu_s']:8.2f}s  "
          + ", ".join(f"{v:,}" for v in m["voxels_per_level"]))
    if scenes:
        scene_label = f"procedural scene 64 m @ 0.25 m (median of {s['count']} styles)"
        print(f"{scene_label:54}{s['wall_s']:8.2f}s{s['cpu_s']:8.2f}s  "
              + ", ".join(f"{v:,.0f}" for v in s["voxels_per_level_mean"]))
    return 0
