"""`xcube bench io`: write and read a large level as OpenVDB (file and bytes), mesh it, preview it.

The level is a two-voxel-thick spherical shell (a surface, like generated scenes) with radial normals
and height-banded classes; ``--voxels 1000000`` spans a ~400^3 box inside a 512^3 grid. Each step runs
``--repeat`` times and the best and median wall times are reported, with voxels per second and the best process CPU seconds (the meaningful number on a shared machine).
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("--voxels", type=int, default=1_000_000, help="voxels of the level (default 1M)")
    parser.add_argument("--voxel-size", type=float, default=0.1, help="voxel size in metres")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per step (default 3)")
    parser.add_argument("--mesh-voxels", type=int, default=1_000_000,
                        help="voxels of the level used for meshing (default 1M; 0 skips meshing)")
    parser.add_argument("--preview-voxels", type=int, default=300_000,
                        help="voxels of the level used for the preview (default 300k; 0 skips it)")


def shell_level(num_voxels: int, voxel_size: float = 0.1):
    """A spherical shell of about ``num_voxels`` voxels (thickness 2) as a `Level`."""
    import torch

    from xcube_core.classes import NUM_CLASSES
    from xcube_core.level import Level

    radius = max(2.0, float(np.sqrt(max(num_voxels, 1) / (8 * np.pi))))
    c = int(np.ceil(radius)) + 2
    r = np.arange(-c, c + 1)
    jj, kk = np.meshgrid(r, r, indexing="ij")
    parts = []
    for i in r:  # one slab at a time: memory stays O(c^2)
        d = np.sqrt(i * i + jj * jj + kk * kk)
        m = (d >= radius - 1) & (d < radius + 1)
        parts.append(np.stack([np.full(int(m.sum()), i), jj[m], kk[m]], axis=1))
    ijk = np.concatenate(parts).astype(np.int32) + c
    centred = (ijk - c).astype(np.float32)
    normals = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-6)
    semantics = (ijk[:, 2] * NUM_CLASSES // (2 * c + 1)).astype(np.int64)
    return Level(index=2, ijk=torch.from_numpy(ijk), voxel_size=voxel_size,
                 normals=torch.from_numpy(normals), semantics=torch.from_numpy(semantics),
                 metadata={"prompt": "benchmark shell", "seed": 0, "model_id": "bench"})


def _time(fn: Callable[[], Any], repeat: int) -> tuple[list[tuple[float, float]], Any]:
    """Run ``fn`` ``repeat`` times; return [(wall s, process CPU s)] and the last result."""
    times, out = [], None
    for _ in range(max(1, repeat)):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        times.append((time.perf_counter() - w0, time.process_time() - c0))
    return times, out


def _row(name: str, times: list[tuple[float, float]], voxels: int, note: str = "") -> dict[str, Any]:
    best = min(t[0] for t in times)
    cpu = min(t[1] for t in times)
    return {"step": name, "best_s": round(best, 4),
            "median_s": round(statistics.median(t[0] for t in times), 4), "cpu_s": round(cpu, 4),
            "voxels": voxels, "mvox_per_s": round(voxels / best / 1e6, 2) if best > 0 else None,
            "note": note}


def run(args) -> int:
    import pathlib
    import tempfile

    from xcube_core.io import mesh, preview, vdb
    from xcube_core.io.openvdb_locator import import_openvdb, openvdb_version

    vdbmod = import_openvdb()
    level = shell_level(args.voxels, args.voxel_size)
    n = level.num_voxels
    rows = []
    with tempfile.TemporaryDirectory(prefix="xcube-bench-io-") as tmp:
        path = pathlib.Path(tmp) / "level.vdb"
        times, grids = _time(lambda: vdb.level_to_grids(level), args.repeat)
        rows.append(_row("build grids (density+normal+semantics)", times, n))
        times, _ = _time(lambda: vdbmod.write(str(path), grids), args.repeat)
        rows.append(_row("openvdb.write of those grids", times, n))
        del grids
        times, _ = _time(lambda: vdb.write_level(level, path), args.repeat)
        rows.append(_row("write_level -> .vdb file", times, n, f"{path.stat().st_size / 1e6:.1f} MB"))
        times, data = _time(lambda: vdb.level_to_bytes(level), args.repeat)
        rows.append(_row("level_to_bytes", times, n))
        times, back = _time(lambda: vdb.read_level(path), args.repeat)
        rows.append(_row("read_level <- .vdb file", times, n))
        if back.num_voxels != n:
            raise RuntimeError(f"round trip returned {back.num_voxels} voxels, wrote {n}")
        times, _ = _time(lambda: vdb.level_from_bytes(data), args.repeat)
        rows.append(_row("level_from_bytes", times, n))
    rows += _mesh_rows(args, mesh, preview)
    if args.json:
        print(json.dumps({"benchmark": "io", "openvdb": openvdb_version(), "voxels": n, "rows": rows}))
    else:
        _print_table(rows, n, openvdb_version())
    return 0


def _mesh_rows(args, mesh, preview) -> list[dict[str, Any]]:
    rows = []
    if args.mesh_voxels > 0:
        lvl = shell_level(args.mesh_voxels, args.voxel_size)
        for mode in ("smooth", "blocky"):
            times, m = _time(lambda: mesh.level_to_mesh(lvl, mode), 1)
            rows.append(_row(f"{mode} mesh", times, lvl.num_voxels, f"{len(m.faces)} triangles"))
    if args.preview_voxels > 0:
        lvl = shell_level(args.preview_voxels, args.voxel_size)
        times, _ = _time(lambda: preview.render_preview(lvl), max(1, args.repeat))
        rows.append(_row("preview 800x600 (2x supersampled)", times, lvl.num_voxels))
    return rows


def _print_table(rows: list[dict[str, Any]], n: int, version: str) -> None:
    print(f"xcube bench io: level of {n} voxels, OpenVDB {version}")
    print(f"{'step':40s} {'voxels':>9s} {'best s':>7s} {'median s':>8s} {'CPU s':>6s} {'Mvox/s':>6s}  note")
    for r in rows:
        print(f"{r['step']:40s} {r['voxels']:9d} {r['best_s']:7.3f} {r['median_s']:8.3f} {r['cpu_s']:6.3f} "
              f"{r['mvox_per_s'] or 0:6.2f}  {r['note']}")
