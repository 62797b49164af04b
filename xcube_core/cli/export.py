"""`xcube export` and `xcube import-vdb`: turn OpenVDB levels into meshes and previews, and bring a
user's own `.vdb` into xcube's formats.

Examples::

    xcube export level_2.vdb --to level_2.glb                   # smooth, coloured surface
    xcube export level_2.vdb --to blocks.ply --mode blocky      # voxel cubes
    xcube export level_2.vdb --to level_2.png                   # shaded preview image
    xcube import-vdb cloud.vdb --out imported/ --grid density --threshold 0.1 --mesh glb
"""

from __future__ import annotations

import argparse
import logging
import pathlib

from xcube_core.errors import InvalidInputError

log = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (".glb", ".ply", ".obj", ".png", ".vdb")


def register(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    exp = sub.add_parser(
        "export", help="convert a level .vdb into a mesh (GLB/PLY/OBJ) or a PNG preview",
        description="Convert a level .vdb (written by xcube, or any .vdb with a scalar density grid) into "
        "a mesh (.glb, .ply, .obj; chosen by the suffix), a shaded preview (.png) or a normalised "
        ".vdb.\n\n" + __doc__.split("Examples::", 1)[1], formatter_class=fmt)
    exp.add_argument("level", type=pathlib.Path, metavar="LEVEL.vdb", help="the .vdb file to read")
    exp.add_argument("--to", dest="outputs", type=pathlib.Path, action="append", required=True,
                     metavar="FILE", help=f"output file, suffix one of {', '.join(OUTPUT_SUFFIXES)}; "
                     "repeat for several outputs")
    _add_mesh_options(exp)
    _add_density_options(exp)
    exp.set_defaults(func=run_export)

    imp = sub.add_parser(
        "import-vdb", help="read your own .vdb and write it as an xcube level (+ preview, mesh)",
        description="Read a .vdb from any tool (Blender, Houdini, ...): pick a scalar float grid as "
        "density (default: 'density', else the first float grid), keep the voxels whose value exceeds "
        "--threshold (for a level set: the voxels inside the surface), and write into --out DIR: NAME.safetensors (xcube's level format, usable as a "
        "condition or training sample), NAME.vdb (xcube's grid layout), NAME.png (preview) and, with "
        "--mesh, a mesh.", formatter_class=fmt)
    imp.add_argument("file", type=pathlib.Path, metavar="FILE.vdb", help="the .vdb file to import")
    imp.add_argument("--out", type=pathlib.Path, required=True, metavar="DIR", help="output folder")
    imp.add_argument("--name", default=None, help="base name of the outputs (default: the file's stem)")
    imp.add_argument("--mesh", choices=("glb", "ply", "obj"), default=None, help="also write a mesh")
    imp.add_argument("--list", action="store_true", help="only list the file's grids and exit")
    _add_mesh_options(imp)
    _add_density_options(imp)
    imp.set_defaults(func=run_import)


def _add_mesh_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=("smooth", "blocky"), default="smooth",
                        help="smooth: marching cubes on the blurred occupancy; blocky: voxel cubes")
    parser.add_argument("--sigma", type=float, default=0.7, help="smooth mode: blur in voxels (0 = none)")
    parser.add_argument("--iso", type=float, default=0.3, help="smooth mode: iso level in (0, 1)")


def _add_density_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grid", default=None, metavar="NAME",
                        help="scalar grid to use as density (default: 'density', else the first float grid)")
    parser.add_argument("--threshold", type=float, default=0.0,
                        help="keep voxels whose density exceeds this value (default 0)")


def _read(path: pathlib.Path, args: argparse.Namespace):
    from xcube_core.errors import DataError
    from xcube_core.io import vdb

    if not path.is_file():
        raise DataError(f"{path}: no such file; pass the path of a .vdb file")
    grid = args.grid or vdb.guess_density_grid(path)
    level = vdb.read_level(path, density_grid=grid, threshold=args.threshold)
    log.info("read %s: grid %r, %d voxels of %.4g m", path, grid, level.num_voxels, level.voxel_size)
    return level


def _check_outputs(outputs: list[pathlib.Path]) -> None:
    for out in outputs:
        if out.suffix.lower() not in OUTPUT_SUFFIXES:
            raise InvalidInputError(f"--to {out}: unknown suffix {out.suffix!r}; use one of "
                                    f"{', '.join(OUTPUT_SUFFIXES)}")


def _write_outputs(level, outputs: list[pathlib.Path], args: argparse.Namespace) -> None:
    from xcube_core.io import mesh as meshes
    from xcube_core.io import preview, vdb

    _check_outputs(outputs)
    mesh = None
    for out in outputs:
        out.parent.mkdir(parents=True, exist_ok=True)
        suffix = out.suffix.lower()
        if suffix == ".png":
            preview.save_preview(level, out)
        elif suffix == ".vdb":
            vdb.write_level(level, out)
        else:
            if mesh is None:
                kwargs = {"sigma": args.sigma, "iso": args.iso} if args.mode == "smooth" else {}
                mesh = meshes.level_to_mesh(level, args.mode, **kwargs)
            meshes.export_mesh(mesh, out)
        print(f"wrote {out}")


def run_export(args: argparse.Namespace) -> int:
    _check_outputs(list(args.outputs))
    level = _read(args.level, args)
    _write_outputs(level, list(args.outputs), args)
    return 0


def run_import(args: argparse.Namespace) -> int:
    from xcube_core.data.hierarchy import VoxelSample
    from xcube_core.data.storage import save_sample
    from xcube_core.io import vdb

    if args.list:
        for g in vdb.list_grids(args.file):
            print(f"{g['name'] or '<unnamed>'}\t{g['type']}\t{g['class']}\tvoxel size {g['voxel_size']}")
        return 0
    level = _read(args.file, args)
    if level.num_voxels == 0:
        raise InvalidInputError(f"{args.file}: no voxel of the density grid exceeds --threshold "
                                f"{args.threshold}; lower it or pick another --grid")
    if level.normals is None:
        level.normals = level.occupancy_normals()
    name = args.name or args.file.stem
    args.out.mkdir(parents=True, exist_ok=True)
    sample_path = args.out / f"{name}.safetensors"
    save_sample(VoxelSample(levels=[level], caption="",
                            metadata={"kind": "imported_vdb", "source": str(args.file)}), sample_path)
    print(f"wrote {sample_path} ({level.num_voxels} voxels, voxel size {level.voxel_size:.4g} m)")
    outputs = [args.out / f"{name}.vdb", args.out / f"{name}.png"]
    if args.mesh:
        outputs.append(args.out / f"{name}.{args.mesh}")
    if outputs[0].resolve() == args.file.resolve():
        outputs = outputs[1:]
    _write_outputs(level, outputs, args)
    return 0
