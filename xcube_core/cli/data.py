"""`xcube data procedural` and `xcube data voxelize`: build training sets of aligned voxel hierarchies.

Examples::

    xcube data procedural --out data/scenes --count 2000 --split train --levels 3
    xcube data procedural --out data/scenes --count 200 --split val --style downtown
    xcube data procedural --out data/objects --count 500 --objects --resolution 128
    xcube data voxelize assets/*.glb --out data/assets --levels 3 --resolution 512
    xcube data voxelize scans/ --out data/scans --mode metric --voxel-size 0.1
    xcube data info data/scenes

Every sample is one .safetensors file in --out, listed in --out/manifest.jsonl (merged with what is
already there). Broken or empty inputs are skipped and listed at the end; they never stop a run.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from xcube_core.errors import InvalidInputError


def register(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    data = sub.add_parser("data", help="build datasets: procedural scenes, or voxelise meshes/point clouds",
                          description=__doc__, formatter_class=fmt)
    dsub = data.add_subparsers(dest="data_command", metavar="JOB")
    _register_procedural(dsub, fmt)
    _register_voxelize(dsub, fmt)
    info = dsub.add_parser("info", help="summarise a dataset folder (counts per split, style, voxels)",
                           description="Read DIR/manifest.jsonl and print counts per split and style, "
                           "mean voxels per level and a few captions.")
    info.add_argument("dir", type=pathlib.Path, metavar="DIR")
    info.set_defaults(func=run_info)
    data.set_defaults(func=lambda args: data.print_help() or 2)


def _register_procedural(dsub, fmt) -> None:
    from xcube_core.data.procedural.names import OBJECT_KINDS, SPLITS, STYLES

    p = dsub.add_parser(
        "procedural", help="generate seeded outdoor scenes (or single objects) with captions",
        formatter_class=fmt,
        description="Generate procedural outdoor scenes in metres (+Z up): ground and roads, buildings "
        "(flat/gabled/hipped/pyramid roofs), trees and bushes, vehicles, poles, water, each with a "
        "semantic class, a caption written from its parameters, and L nested levels. Sample i of a "
        "split uses seed split_base + start + i (train 0.., val 10M.., test 20M..), so splits never "
        "overlap and a run can be repeated or extended exactly.")
    p.add_argument("--out", type=pathlib.Path, required=True, metavar="DIR", help="output folder")
    p.add_argument("--count", type=int, required=True, help="number of samples to generate")
    p.add_argument("--split", choices=SPLITS, default="train", help="which seed range (default train)")
    p.add_argument("--start", type=int, default=0, help="index of the first sample (to extend a set)")
    p.add_argument("--levels", type=int, default=3, help="hierarchy depth L (default 3)")
    p.add_argument("--style", choices=STYLES, default=None, help="only this style (default: random mix)")
    p.add_argument("--extent", type=float, nargs=2, default=(64.0, 64.0), metavar=("X", "Y"),
                   help="scene size in metres (default 64 64)")
    p.add_argument("--height", type=float, default=32.0, help="scene height in metres (default 32)")
    p.add_argument("--voxel-size", type=float, default=0.25, help="finest voxel in metres (default 0.25)")
    p.add_argument("--context", type=float, default=32.0, metavar="M",
                   help="metres of site laid out around each scene on every side; the scene is a window "
                   "cut from it at a random offset, so streets and tree cover run on past its borders "
                   "like a tile of a larger scene (default 32; 0 = scenes laid out for their own frame)")
    p.add_argument("--objects", action="store_true",
                   help=f"single objects in a unit box instead of scenes ({', '.join(OBJECT_KINDS)})")
    p.add_argument("--resolution", type=int, default=128, help="--objects: finest grid size (default 128)")
    p.add_argument("--workers", type=int, default=2, help="parallel processes (default 2; 1 = in-process)")
    p.set_defaults(func=run_procedural)


def _register_voxelize(dsub, fmt) -> None:
    p = dsub.add_parser(
        "voxelize", help="voxelise meshes / point clouds into aligned hierarchies",
        formatter_class=fmt,
        description="Voxelise meshes (OBJ, PLY, GLB/GLTF, STL, OFF) with the exact triangle/voxel overlap "
        "test, or point clouds (PLY without faces, NPZ with points/normals/labels), into L nested levels "
        "with area-weighted normals and, where part or material names say what a part is (roof, tree, "
        "car, road, ...), semantic classes. Folders are searched recursively.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files or folders")
    p.add_argument("--out", type=pathlib.Path, required=True, metavar="DIR", help="output folder")
    p.add_argument("--levels", type=int, default=3, help="hierarchy depth L (default 3)")
    p.add_argument("--resolution", type=int, default=512,
                   help="unit-box mode: finest grid size per axis (default 512)")
    p.add_argument("--mode", choices=("unit_box", "metric"), default=None,
                   help="unit_box: fit each asset into [0,1]^3 (default for meshes); metric: keep metres "
                   "with --voxel-size (default for point clouds)")
    p.add_argument("--voxel-size", type=float, default=0.1, help="metric mode: finest voxel in metres")
    p.add_argument("--class-map", type=pathlib.Path, default=None, metavar="JSON",
                   help='extra part-name rules, e.g. {"glass": "building", "lawn": "ground"}')
    p.add_argument("--up-axis", choices=("z", "y"), default=None,
                   help="the meshes' up axis, turned to +Z (default: y for .glb/.gltf as their spec says, "
                   "z otherwise)")
    p.add_argument("--caption", default="", help="caption for every sample")
    p.add_argument("--captions", default=None, metavar="JSON",
                   help="captions per input: a JSON object {file stem: caption}; a sidecar FILE.txt "
                   "next to an input is used too")
    p.add_argument("--split", default=None, help="split name recorded in the manifest (e.g. train)")
    p.add_argument("--workers", type=int, default=2, help="parallel processes (default 2; 1 = in-process)")
    p.set_defaults(func=run_voxelize)


def _progress_bar(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="sample", file=sys.stderr, dynamic_ncols=True)


def _finish(rows: list, failures: list, out: pathlib.Path) -> int:
    for name, err in failures:
        print(f"skipped {name}: {str(err).removeprefix(f'{name}: ')}", file=sys.stderr)
    print(f"wrote {len(rows)} samples to {out} (manifest {out / 'manifest.jsonl'}); "
          f"{len(failures)} skipped")
    return 0 if rows or not failures else 2


def _check_sizes(levels: int, resolution: int, voxel_size: float) -> None:
    m = 2 ** (levels - 1)
    if resolution < m or resolution % m:
        raise InvalidInputError(f"--resolution must be a multiple of 2**(levels-1) = {m} with {levels} levels, "
                                f"got {resolution}; try {max(m, round(resolution / m) * m)}")
    if not voxel_size > 0:
        raise InvalidInputError(f"--voxel-size must be > 0 metres, got {voxel_size}")


def run_procedural(args) -> int:
    from xcube_core.data.jobs import Task, run_tasks
    from xcube_core.data.procedural.scene import split_seed

    if args.count < 1:
        raise InvalidInputError(f"--count must be >= 1, got {args.count}")
    if not 1 <= args.levels <= 8:
        raise InvalidInputError(f"--levels must be in 1..8, got {args.levels}")
    _check_sizes(args.levels, args.resolution if args.objects else 2 ** (args.levels - 1), args.voxel_size)
    if min(args.extent) <= 0 or args.height <= 0:
        raise InvalidInputError(f"--extent and --height must be > 0 metres, got {args.extent} and {args.height}")
    if args.context < 0:
        raise InvalidInputError(f"--context must be >= 0 metres, got {args.context}")
    tasks = []
    for i in range(args.start, args.start + args.count):
        seed = split_seed(args.split, i)
        name = f"{args.split}_{i:07d}.safetensors"
        if args.objects:
            tasks.append(Task("object", name, {"seed": seed, "resolution": args.resolution,
                                               "num_levels": args.levels}, args.split))
        else:
            config = {"extent": tuple(args.extent), "height": args.height, "voxel_size": args.voxel_size,
                      "context": args.context}
            tasks.append(Task("scene", name, {"seed": seed, "config": config, "num_levels": args.levels,
                                              "style": args.style}, args.split))
    with _progress_bar(len(tasks), f"procedural {args.split}") as bar:
        rows, failures = run_tasks(tasks, args.out, args.workers, progress=lambda r: bar.update(1))
    return _finish(rows, failures, args.out)


def run_voxelize(args) -> int:
    from xcube_core.data.jobs import Task, find_inputs, load_captions, run_tasks, unique_names

    if not 1 <= args.levels <= 8:
        raise InvalidInputError(f"--levels must be in 1..8, got {args.levels}")
    _check_sizes(args.levels, args.resolution, args.voxel_size)
    paths = find_inputs(args.inputs)
    if not paths:
        raise InvalidInputError(f"no mesh or point-cloud files found in {args.inputs}")
    try:
        captions = load_captions(args.captions)
        class_map = load_captions(args.class_map) if args.class_map else None
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read captions/class map: {exc}") from exc
    tasks = []
    for path, name in zip(paths, unique_names(paths)):
        sidecar = path.with_suffix(".txt")
        caption = captions.get(path.stem, captions.get(path.name, args.caption))
        if not caption and sidecar.is_file():
            caption = sidecar.read_text(encoding="utf-8").strip()
        tasks.append(Task("asset", name, {
            "path": str(path), "num_levels": args.levels, "mode": args.mode, "resolution": args.resolution,
            "voxel_size": args.voxel_size, "class_map": class_map, "caption": caption,
            "up_axis": args.up_axis}, args.split))
    with _progress_bar(len(tasks), "voxelize") as bar:
        rows, failures = run_tasks(tasks, args.out, args.workers, progress=lambda r: bar.update(1))
    return _finish(rows, failures, args.out)


def run_info(args) -> int:
    from collections import Counter

    from xcube_core.data.storage import read_manifest

    rows = read_manifest(args.dir)
    print(f"{len(rows)} samples in {args.dir}")
    for key in ("split", "style", "kind"):
        counts = Counter(str(r.get(key)) for r in rows)
        print(f"  by {key}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    if rows:
        levels = max(len(r["num_voxels"]) for r in rows)
        means = [sum(r["num_voxels"][i] for r in rows if len(r["num_voxels"]) > i) / len(rows)
                 for i in range(levels)]
        print("  mean voxels per level: " + ", ".join(f"{m:,.0f}" for m in means))
        print("  mean file size: {:.2f} MB".format(sum(r.get("bytes", 0) for r in rows) / len(rows) / 1e6))
        for r in rows[:5]:
            print(f"  {r['file']}: {r.get('caption', '')!r}")
    return 0
