"""Layouts from real meshes: coverage and class plausibility of the finest level (one run).

For a mesh file voxelised as the scene's layout (`xcube_core.layout.load_layout`), generates the scene
and prints:

* **coverage**: the share of layout voxels (level 0) that get children at the finest level;
* **plausibility**: over layout voxels whose class the user gave (part/material names, plus
  ``--class-map`` rules), the share of their finest-level descendants that keep that class.
"""

from __future__ import annotations

import json
import time

from xcube_core.cli.generate import class_prior_arg


def add_arguments(parser) -> None:
    parser.add_argument("mesh", help="layout mesh (.obj .ply .glb .gltf .stl .off)")
    parser.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--prompt", default="a small town with houses, trees and a road")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--fit", action="store_true", help="scale the mesh into the model's box")
    parser.add_argument("--up", choices=("z", "y"), default=None, help="the file's up axis (default by format)")
    parser.add_argument("--class-map", nargs="*", default=[], metavar="NAME=CLASS",
                        help="extra part-name rules, e.g. Temple=building Floor=ground")
    parser.add_argument("--no-ground", action="store_true", help="do not add ground")
    parser.add_argument("--class-prior", type=class_prior_arg, default=None, metavar="NATS|keep",
                        help="nats favouring each voxel's parent class at finer levels, or 'keep' (default: the model's)")
    parser.add_argument("--threads", type=int, default=None)


def descendants_agreement(layout, finest, factor: int):
    """(coverage, plausibility, counts) of a layout level and the finest level made on it."""
    import torch

    parents = torch.div(finest.ijk.long(), factor, rounding_mode="floor")
    grid = layout.grid()
    idx = grid.ijk_to_index(parents).long()
    order = grid.ijk_to_index(layout.ijk).long()
    has_child = torch.zeros(grid.total_voxels, dtype=torch.bool)
    has_child[idx[idx >= 0]] = True
    coverage = float(has_child[order].float().mean())
    cls = torch.full((grid.total_voxels,), -1, dtype=torch.long)
    if layout.semantics is not None:
        cls[order] = layout.semantics.long()
    parent_cls = cls[idx.clamp(min=0)]
    given = (idx >= 0) & (parent_cls >= 0)
    keep = finest.semantics.long()[given] == parent_cls[given]
    return coverage, float(keep.float().mean()) if bool(given.any()) else float("nan"), int(given.sum())


def run(args) -> int:
    import torch

    from xcube_core.data.assets import load_mesh
    from xcube_core.layout import layout_from_triangles
    from xcube_core.pipeline import XCubePipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = XCubePipeline.from_pretrained(args.model)
    rules = dict(rule.split("=", 1) for rule in args.class_map)
    mesh = load_mesh(args.mesh, rules, args.up)
    t0 = time.perf_counter()
    layout = layout_from_triangles(mesh.vertices, mesh.faces, mesh.face_class, pipe.coarse_shape,
                                   pipe.voxel_sizes[0], pipe.class_names, fit=args.fit, ground=not args.no_ground)
    vox_s = time.perf_counter() - t0
    levels = list(pipe.generate(args.prompt, seed=args.seed, steps=args.steps, condition=layout,
                                class_prior=args.class_prior))
    factor = round(pipe.voxel_sizes[0] / pipe.voxel_sizes[-1])
    coverage, plausible, given = descendants_agreement(layout, levels[-1], factor)
    report = {"mesh": args.mesh, "faces": int(len(mesh.faces)), "parts": mesh.part_names[:8],
              "layout_voxels": layout.num_voxels, "classes_given": int((layout.semantics >= 0).sum())
              if layout.semantics is not None else 0, "voxelise_seconds": round(vox_s, 2),
              "finest_voxels": levels[-1].num_voxels, "coverage": round(coverage, 4),
              "plausibility": round(plausible, 4), "children_with_given_class": given,
              "generate_seconds": round(sum(lv.seconds for lv in levels), 1),
              "class_prior": "model default" if args.class_prior is None else
              ("keep" if args.class_prior == float("inf") else args.class_prior)}
    print(json.dumps(report) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))
    return 0
