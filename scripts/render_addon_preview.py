#!/usr/bin/env python
"""Render a scene generated through the Blender add-on (headless Cycles), e.g. for the README picture.

Everything is real: the add-on zip from `xcube addon build --no-wheels` installed by Blender's
extension installer, an in-process gRPC server on a free loopback port, the pipeline, Cycles.

Usage:
    python scripts/render_addon_preview.py --out docs/images/addon.png                 # shipped model, materials
    python scripts/render_addon_preview.py --tiny --out /tmp/tiny.png --samples 8      # random tiny model
    python scripts/render_addon_preview.py --model runs/x/export --prompt "a harbour town" --output BOTH
    python scripts/render_addon_preview.py --shading COLORS --out /tmp/colours.png     # flat class colours
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
log = logging.getLogger("render_addon_preview")
ADDON = "bl_ext.xcube_preview.xcube"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=pathlib.Path, help="PNG to write")
    p.add_argument("--prompt", default="a small town with houses, trees and a road")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    src.add_argument("--tiny", action="store_true", help="the random-weight tiny test model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=0, help="diffusion steps per level (0 = server default)")
    p.add_argument("--levels", type=int, default=0, help="levels to generate (0 = all)")
    p.add_argument("--output", choices=("VOLUME", "MESH", "BOTH"), default="MESH",
                   help="what the add-on creates; the finest level is rendered")
    p.add_argument("--shading", choices=("MATERIALS", "COLORS"), default="MATERIALS",
                   help="the panel's switch: render materials per class (default) or flat class colours")
    p.add_argument("--samples", type=int, default=32, help="Cycles samples")
    p.add_argument("--size", type=int, nargs=2, default=(960, 540), metavar=("W", "H"))
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the generation")
    p.add_argument("--blend", type=pathlib.Path, default=None, help="also save the .blend here")
    return p.parse_args(argv)


def load_pipeline(args):
    from xcube_core.pipeline import XCubePipeline

    return XCubePipeline.tiny(seed=args.seed) if args.tiny else XCubePipeline.from_pretrained(args.model)


def install_addon(workdir: pathlib.Path):
    """Builds the add-on zip and installs it through Blender's extension installer; returns the package."""
    import bpy

    from xcube_core.cli.addon import build_addon

    zip_path = build_addon(workdir / "build", wheels=False)
    repo = bpy.context.preferences.extensions.repos.new(
        name="xcube_preview", module="xcube_preview", custom_directory=str(workdir / "repo"), source="USER")
    result = bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo=repo.module,
                                                      enable_on_install=True)
    if result != {"FINISHED"}:
        raise RuntimeError(f"Blender did not install {zip_path}: {result}")
    return importlib.import_module(ADDON)


def frame_scene(objects, size) -> None:
    """Adds a camera looking down at ``objects`` from the south-west at 35 degrees, a sun and a sky."""
    import bpy
    from mathutils import Vector

    corners = [obj.matrix_world @ Vector(c) for obj in objects for c in obj.bound_box]
    lo = Vector([min(c[i] for c in corners) for i in range(3)])
    hi = Vector([max(c[i] for c in corners) for i in range(3)])
    centre, radius = (lo + hi) / 2, (hi - lo).length / 2
    scene = bpy.context.scene
    cam = bpy.data.objects.new("Preview camera", bpy.data.cameras.new("Preview camera"))
    cam.data.lens = 35.0
    scene.collection.objects.link(cam)
    direction = Vector((-1.0, -1.2, 0.9)).normalized()
    fov = 2 * math.atan(cam.data.sensor_width / (2 * cam.data.lens)) * min(1.0, size[1] / size[0])
    cam.location = centre + direction * (radius / math.sin(fov / 2)) * 1.05
    cam.rotation_euler = (centre - cam.location).to_track_quat("-Z", "Y").to_euler()
    scene.camera = cam
    sun = bpy.data.objects.new("Preview sun", bpy.data.lights.new("Preview sun", "SUN"))
    sun.data.energy = 1.6
    sun.data.angle = math.radians(8)
    sun.rotation_euler = (math.radians(50), 0.0, math.radians(35))
    scene.collection.objects.link(sun)
    world = scene.world or bpy.data.worlds.new("Preview world")
    scene.world = world
    background = world.node_tree.nodes.get("Background") if world.node_tree else None
    if background is not None:
        background.inputs["Color"].default_value = (0.62, 0.72, 0.86, 1.0)
        background.inputs["Strength"].default_value = 0.5
    else:
        world.color = (0.62, 0.72, 0.86)


def render(pipeline, args) -> pathlib.Path:
    import bpy

    from server.app import create_server

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="xcube_preview_"))
    addon = install_addon(workdir)
    bpy.ops.wm.read_homefile(use_empty=True)  # no default cube in the picture
    server, _ = create_server(pipeline, "127.0.0.1", 0)
    try:
        if not server.wait_until_ready(120):
            raise RuntimeError("the server's model did not load")
        prefs = bpy.context.preferences.addons[ADDON].preferences
        prefs.address, prefs.output_dir = server.address, str(workdir / "levels")
        settings = bpy.context.scene.xcube
        settings.prompt, settings.seed, settings.steps = args.prompt, args.seed, args.steps
        settings.levels, settings.output, settings.shading = args.levels, args.output, args.shading
        t0 = time.monotonic()
        bpy.ops.xcube.generate()
        if not addon.jobs.wait_for_jobs(args.timeout) or settings.status != "DONE":
            raise RuntimeError(f"generation did not finish: {settings.status}: {settings.message}")
        log.info("generated %d levels in %.1f s", settings.levels_done, time.monotonic() - t0)
    finally:
        server.stop(grace=0)
    collection = bpy.data.collections[settings.collection_name]
    visible = [o for o in collection.objects if not o.hide_render]
    frame_scene(visible, args.size)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = args.samples
    scene.render.resolution_x, scene.render.resolution_y = args.size
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    # AgX washes flat class colours out under a sun; the materials are made for Blender's default (AgX).
    scene.view_settings.view_transform = "Standard" if args.shading == "COLORS" else "AgX"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    scene.render.filepath = str(args.out.resolve())
    t0 = time.monotonic()
    bpy.ops.render.render(write_still=True)
    log.info("rendered %s in %.1f s (%d samples, %dx%d)", args.out, time.monotonic() - t0, args.samples,
             *args.size)
    if args.blend:
        bpy.ops.wm.save_as_mainfile(filepath=str(args.blend.resolve()))
    return args.out


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    pipeline = load_pipeline(args)  # torch first, then bpy
    print(render(pipeline, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
