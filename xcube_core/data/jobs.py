"""Dataset-building jobs run by ``xcube data``: many samples in parallel processes, one file each,
with progress, a merged manifest, and broken inputs skipped and reported instead of crashing."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import logging
import os
import pathlib
from typing import Any, Callable, Iterable

from xcube_core.data.assets import MESH_SUFFIXES, POINT_SUFFIXES
from xcube_core.data.storage import MANIFEST, manifest_row, read_manifest, save_sample, write_manifest
from xcube_core.errors import XCubeError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Task:
    """One sample to build: ``kind`` ("scene", "object", "asset"), output file name and arguments."""

    kind: str
    file: str
    args: dict[str, Any]
    split: str | None = None


@dataclasses.dataclass
class Result:
    task: Task
    row: dict[str, Any] | None = None
    error: str | None = None


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one thread per process: processes, not threads, use the cores


def build_one(task: Task, out_dir: str) -> Result:
    """Build and save one sample; any failure becomes ``Result.error`` (the worker never raises)."""
    try:
        if task.kind == "scene":
            from xcube_core.data.procedural import SceneConfig, generate_scene

            a = dict(task.args)
            a["config"] = SceneConfig(**a.pop("config"))
            sample = generate_scene(**a)
        elif task.kind == "object":
            from xcube_core.data.procedural import generate_object

            sample = generate_object(**task.args)
        elif task.kind == "asset":
            sample = voxelize_any(**task.args)
        else:
            raise ValueError(f"unknown task kind {task.kind!r}")
        sample.metadata["split"] = task.split
        nbytes = save_sample(sample, pathlib.Path(out_dir) / task.file)
        return Result(task, row=manifest_row(sample, task.file, task.split, nbytes))
    except XCubeError as exc:
        return Result(task, error=str(exc))
    except Exception as exc:  # the skip-and-report boundary: one bad input never stops the run
        logger.debug("task %s failed", task, exc_info=True)
        return Result(task, error=f"{type(exc).__name__}: {exc}")


def voxelize_any(path: str, **kw):
    """Voxelise a mesh or point-cloud file by its suffix (a PLY without faces is a point cloud)."""
    from xcube_core.data.points import voxelize_points_file
    from xcube_core.data.voxelize import voxelize_mesh_file

    suffix = pathlib.Path(path).suffix.lower()
    class_map = kw.pop("class_map", None)
    up_axis = kw.pop("up_axis", None)
    if suffix == ".npz" or (suffix == ".ply" and _ply_is_points(path)):
        if kw.get("mode") is None:
            kw["mode"] = "metric"
        return voxelize_points_file(path, **kw)
    if kw.get("mode") is None:
        kw["mode"] = "unit_box"
    return voxelize_mesh_file(path, class_map=class_map, up_axis=up_axis, **kw)


def _ply_is_points(path: str) -> bool:
    """True when a PLY header declares no faces (or zero of them)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096).split(b"end_header")[0].decode("ascii", "replace")
    except OSError:
        return False
    for line in head.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "element" and parts[1] == "face":
            return parts[2] == "0"
    return True


def find_inputs(inputs: Iterable[str]) -> list[pathlib.Path]:
    """Files given directly, plus supported mesh/point files found recursively in given folders."""
    suffixes = set(MESH_SUFFIXES) | set(POINT_SUFFIXES)
    found: list[pathlib.Path] = []
    for item in inputs:
        p = pathlib.Path(item)
        if p.is_dir():
            found.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in suffixes))
        else:
            found.append(p)
    return found


def unique_names(paths: list[pathlib.Path]) -> list[str]:
    """Output file names ``<stem>.safetensors``, suffixed ``_2``, ``_3``... where stems repeat."""
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        stem = p.stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(f"{stem}.safetensors" if seen[stem] == 1 else f"{stem}_{seen[stem]}.safetensors")
    return names


def run_tasks(tasks: list[Task], out_dir: str | os.PathLike, workers: int = 2,
              progress: Callable[[Result], None] | None = None, flush_every: int = 50) -> tuple[list, list]:
    """Build ``tasks`` in ``workers`` processes (0 or 1: in this process), merging the rows into the
    folder's manifest (rows of the same file are replaced), flushed every ``flush_every`` samples.

    Returns:
        ``(rows, failures)``: manifest rows built now, and ``(input, error)`` pairs.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    existing = {r["file"]: r for r in read_manifest(out)} if (out / MANIFEST).exists() else {}
    rows, failures = [], []

    def record(res: Result) -> None:
        if res.row is not None:
            rows.append(res.row)
            existing[res.row["file"]] = res.row
        else:
            failures.append((res.task.args.get("path", res.task.file), res.error))
            logger.debug("skipped %s: %s", res.task.args.get("path", res.task.file), res.error)
        if progress is not None:
            progress(res)
        if len(rows) % flush_every == 0 and res.row is not None:
            write_manifest(list(existing.values()), out)

    try:
        if workers <= 1:
            _init_worker()
            for t in tasks:
                record(build_one(t, str(out)))
        else:
            with cf.ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
                futures = [pool.submit(build_one, t, str(out)) for t in tasks]
                for fut in cf.as_completed(futures):
                    record(fut.result())
    finally:
        write_manifest(list(existing.values()), out)
    return rows, failures


def load_captions(path: str | None) -> dict[str, str]:
    """A JSON object mapping input file stems (or names) to captions; {} when ``path`` is None."""
    if path is None:
        return {}
    data = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{file stem: caption}}, got {type(data).__name__}")
    return {str(k): str(v) for k, v in data.items()}
