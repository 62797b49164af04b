"""One safetensors file per `VoxelSample`, a JSONL manifest, atomic writes and clear load errors.

File layout (tensors): ``ijk_{l}`` int16 (int32 when a coordinate does not fit), ``normals_{l}``
float16, ``semantics_{l}`` uint8 (255 = unknown) for every level ``l`` (0 = coarsest). The safetensors
metadata holds one JSON entry ``xcube`` with format, version, caption, voxel sizes, origins, class
names and the sample metadata. Writes go to a temporary file in the same folder and are moved into
place with ``os.replace``, so an interrupted run never leaves a half-written sample behind.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Iterable

import torch

from xcube_core.data.hierarchy import UNKNOWN_CLASS, VoxelSample
from xcube_core.fileio import atomic_write_bytes
from xcube_core.errors import DataError
from xcube_core.level import Level

FORMAT = "xcube-sample"
VERSION = 1
MANIFEST = "manifest.jsonl"
_UNKNOWN_U8 = 255


def _ijk_dtype(ijk: torch.Tensor) -> torch.dtype:
    if ijk.numel() == 0:
        return torch.int16
    lo, hi = int(ijk.min()), int(ijk.max())
    return torch.int16 if -(2 ** 15) <= lo and hi < 2 ** 15 else torch.int32


def sample_to_tensors(sample: VoxelSample) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and safetensors metadata that `save_sample` writes."""
    tensors: dict[str, torch.Tensor] = {}
    for lvl in sample.levels:
        tensors[f"ijk_{lvl.index}"] = lvl.ijk.to(_ijk_dtype(lvl.ijk)).contiguous()
        if lvl.normals is not None:
            tensors[f"normals_{lvl.index}"] = lvl.normals.to(torch.float16).contiguous()
        if lvl.semantics is not None:
            sem = lvl.semantics.to(torch.int64)
            if bool(((sem < UNKNOWN_CLASS) | (sem >= _UNKNOWN_U8)).any()):
                raise ValueError(f"semantics of level {lvl.index} must be in [-1, 255), got "
                                 f"[{int(sem.min())}, {int(sem.max())}]")
            tensors[f"semantics_{lvl.index}"] = torch.where(sem < 0, _UNKNOWN_U8, sem).to(torch.uint8)
    header = {
        "format": FORMAT, "version": VERSION, "caption": sample.caption,
        "num_levels": sample.num_levels,
        "voxel_sizes": [float(lvl.voxel_size) for lvl in sample.levels],
        "origins": [list(lvl.origin) for lvl in sample.levels],
        "class_names": list(sample.class_names),
        "metadata": sample.metadata,
    }
    return tensors, {"xcube": json.dumps(header, sort_keys=True)}


def save_sample(sample: VoxelSample, path: str | os.PathLike) -> int:
    """Write ``sample`` atomically to ``path`` (a ``.safetensors`` file).

    Returns:
        The file size in bytes.
    """
    from safetensors.torch import save

    tensors, meta = sample_to_tensors(sample)
    data = save(tensors, metadata=meta)
    atomic_write_bytes(path, data)
    return len(data)


def _read(path: pathlib.Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("xcube")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise
    except Exception as exc:  # safetensors raises several types for truncated/garbled files
        raise DataError(f"{path}: not a readable safetensors sample ({type(exc).__name__}: {exc}); "
                        "delete it and re-run the data command") from exc
    if raw is None:
        raise DataError(f"{path}: no 'xcube' metadata entry; expected a file written by save_sample")
    try:
        header = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: corrupt 'xcube' metadata JSON ({exc})") from exc
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise DataError(f"{path}: expected format {FORMAT!r} version {VERSION}, got "
                        f"{header.get('format')!r} version {header.get('version')!r}")
    return tensors, header


def _level_from(path, tensors, header, index: int) -> Level:
    ijk = tensors.get(f"ijk_{index}")
    if ijk is None or ijk.ndim != 2 or ijk.shape[1] != 3:
        raise DataError(f"{path}: level {index} has no ijk of shape (N, 3), got "
                        f"{None if ijk is None else tuple(ijk.shape)}")
    n = ijk.shape[0]
    normals, semantics = tensors.get(f"normals_{index}"), tensors.get(f"semantics_{index}")
    if normals is not None and tuple(normals.shape) != (n, 3):
        raise DataError(f"{path}: normals_{index} has shape {tuple(normals.shape)}, expected ({n}, 3)")
    if semantics is not None and tuple(semantics.shape) != (n,):
        raise DataError(f"{path}: semantics_{index} has shape {tuple(semantics.shape)}, expected ({n},)")
    sem = None
    if semantics is not None:
        sem = semantics.to(torch.int64)
        sem[sem == _UNKNOWN_U8] = UNKNOWN_CLASS
    return Level(index=index, ijk=ijk.to(torch.int32), voxel_size=float(header["voxel_sizes"][index]),
                 origin=tuple(header["origins"][index]),
                 normals=None if normals is None else normals.to(torch.float32), semantics=sem,
                 class_names=tuple(header["class_names"]))


def load_sample(path: str | os.PathLike, levels: Iterable[int] | None = None) -> VoxelSample:
    """Read a sample written by `save_sample`.

    Args:
        path: the ``.safetensors`` file.
        levels: which level indices to load (default all).

    Raises:
        DataError: the file is truncated, garbled or not a sample (the message names the file).
        FileNotFoundError: the file does not exist.
    """
    path = pathlib.Path(path)
    tensors, header = _read(path)
    try:
        num = int(header["num_levels"])
        wanted = list(range(num)) if levels is None else list(levels)
        bad = [i for i in wanted if not 0 <= i < num]
        if bad:
            raise DataError(f"{path}: has {num} levels, asked for levels {bad}")
        out = [_level_from(path, tensors, header, i) for i in wanted]
        return VoxelSample(levels=out, caption=str(header["caption"]), metadata=dict(header["metadata"]))
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: incomplete sample header ({type(exc).__name__}: {exc})") from exc


def manifest_row(sample: VoxelSample, file: str, split: str | None, num_bytes: int) -> dict[str, Any]:
    """One manifest line: file (relative to the manifest), split, caption, sizes and key facts."""
    keep = ("kind", "style", "seed", "source", "mean_building_height", "height_class", "tree_count",
            "tree_density", "tree_fraction", "has_water", "vehicle_count", "building_count", "object")
    return {"file": file, "split": split, "caption": sample.caption,
            "num_voxels": [lvl.num_voxels for lvl in sample.levels], "bytes": int(num_bytes),
            **{k: sample.metadata[k] for k in keep if k in sample.metadata}}


def write_manifest(rows: list[dict[str, Any]], root: str | os.PathLike, name: str = MANIFEST) -> pathlib.Path:
    """Atomically write ``rows`` (sorted by file) as JSON lines into ``root/name``."""
    path = pathlib.Path(root) / name
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in sorted(rows, key=lambda r: r["file"]))
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a manifest; ``path`` may be the manifest file or the folder holding ``manifest.jsonl``.

    Raises:
        DataError: a line is not valid JSON or lacks ``file``.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / MANIFEST
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{n}: not valid JSON ({exc})") from exc
        if not isinstance(row, dict) or "file" not in row:
            raise DataError(f"{path}:{n}: a manifest row needs a 'file' entry")
        rows.append(row)
    return rows
