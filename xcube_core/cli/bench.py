"""`xcube bench NAME`: benchmarks that print ratios measured in one run (never test assertions).

Each benchmark lives in ``xcube_core.bench.<name>`` (or registers under the ``xcube.bench`` entry
points, like the server's) and exposes ``add_arguments(parser)`` and
``run(args) -> int``; results go to ``docs/benchmarks.md`` by hand with the command that printed them.
"""

from __future__ import annotations

import importlib
import importlib.util

BENCHMARKS = {
    "sparse": "sparse convolution, kernel maps, grid build and memory vs spconv and the GEMM floor",
    "data": "voxelising a large mesh and a procedural scene",
    "io": "writing and reading large levels as OpenVDB",
    "generate": "time to first level and full scene with the shipped model",
    "extent": "tiled scenes beyond one tile: wall time, peak memory, seam score",
    "edit": "region edits: seam score where regenerated voxels meet the old ones",
    "layout": "layouts from real meshes: coverage and class plausibility of the finest level",
}
# Packages above xcube_core (the gRPC server) add benchmarks through this entry-point group, so the
# library never imports them: `server = "server.bench"` in pyproject.toml gives `xcube bench server`.
ENTRY_POINT_GROUP = "xcube.bench"


def _benchmark_modules():
    """(name, help, module) of every benchmark: the library's own, then registered plugins."""
    from importlib.metadata import entry_points

    for name, help_text in BENCHMARKS.items():
        module_name = f"xcube_core.bench.{name}"
        if importlib.util.find_spec(module_name) is not None:
            yield name, help_text, importlib.import_module(module_name)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in BENCHMARKS:
            module = ep.load()
            yield ep.name, (module.__doc__ or ep.name).strip().splitlines()[0], module


def register(sub) -> None:
    parser = sub.add_parser("bench", help="run a benchmark and print a table (or --json)",
                            description=__doc__)
    bench_sub = parser.add_subparsers(dest="bench", metavar="NAME")
    for name, help_text, module in _benchmark_modules():
        p = bench_sub.add_parser(name, help=help_text, description=module.__doc__)
        p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
