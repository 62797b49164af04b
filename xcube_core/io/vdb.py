"""A `Level` as an OpenVDB volume (`.vdb` file or bytes) and back, on the real OpenVDB library.

Grids written per level (all in one index space and transform):

* ``density``: FloatGrid, grid class FOG_VOLUME, 1.0 in every active voxel, background 0, so Blender's
  Volume to Mesh (threshold 0.5) and every renderer see the occupied voxels.
* ``normal``: Vec3SGrid (vector type COVARIANT_NORMALIZE), unit normal per voxel, background (0, 0, 0).
* ``semantics``: FloatGrid holding the class id per voxel, background -1 ("no class"), with a
  ``class_names`` metadata entry (JSON list).

Transform: linear, uniform voxel size ``level.voxel_size`` and translation ``level.origin``, so the centre
of voxel ijk lies at ``ijk * voxel_size + origin`` in metres (+Z up), as in `Level.world_points`.

Metadata (on every grid and on the file): ``xcube_level`` (int), ``xcube_voxel_size`` (float),
``class_names`` (JSON), ``prompt``, ``seed``, ``model_id`` (when the level's metadata has them),
``xcube_metadata`` (the level's whole metadata dict as JSON) and ``xcube_format`` (1).
"""

from __future__ import annotations

import json
import logging
import numbers
import os
import pathlib
import tempfile
import time
from typing import Any

import numpy as np
import torch

from xcube_core.classes import CLASS_NAMES
from xcube_core.errors import DataError, InvalidInputError
from xcube_core.io.openvdb_locator import import_openvdb
from xcube_core.io.vdb_header import check_vdb_file
from xcube_core.io.vdb_blocks import DEFAULT_BLOCK, BlockPartition, gather_active
from xcube_core.level import Level

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
DENSITY, NORMAL, SEMANTICS = "density", "normal", "semantics"
SEMANTICS_BACKGROUND = -1.0
_SCALAR_TYPES = ("float", "double")


# ----------------------------------------------------------------------------------------- writing


def level_to_grids(level: Level, block: int = DEFAULT_BLOCK) -> list[Any]:
    """Build the OpenVDB grids of one level.

    Args:
        level: the level; ``ijk`` (N, 3) int, optional ``normals`` (N, 3) and ``semantics`` (N,).
        block: block edge used for the vectorised dense-block transfer (see `vdb_blocks`).

    Returns:
        ``[density, normal?, semantics?]`` OpenVDB grids (normal/semantics only when the level has them).
    """
    return _parts_to_grids([level], level, block)


def _parts_to_grids(parts, like: Level, block: int = DEFAULT_BLOCK, several: bool = False) -> list[Any]:
    """The grids of a level given as disjoint parts (``like`` sets the transform, attributes and
    metadata); each part is drawn from ``parts``, written into the grids and dropped. Blocks that
    parts share are read back before they are rewritten (see `BlockPartition.write`)."""
    vdb = import_openvdb()
    density = vdb.FloatGrid(0.0)
    density.gridClass = vdb.GridClass.FOG_VOLUME
    grids = [(DENSITY, density)]
    if like.normals is not None:
        normal = vdb.Vec3SGrid((0.0, 0.0, 0.0))
        normal.vectorType = vdb.VectorType.COVARIANT_NORMALIZE
        grids.append((NORMAL, normal))
    if like.semantics is not None:
        grids.append((SEMANTICS, vdb.FloatGrid(SEMANTICS_BACKGROUND)))
    # blocks earlier parts wrote, as sorted int64 keys: every part writes every grid, so one array
    # serves all grids (a 1 km level touches 600k blocks; sets of tuples cost 270 MB there)
    written = np.zeros(0, np.int64)
    for level in parts:
        ijk = _check_level(level)
        if (level.normals is None) != (like.normals is None) or (level.semantics is None) != (like.semantics is None):
            raise InvalidInputError("the parts of one level must all have (or all lack) normals and semantics")
        part = BlockPartition.from_ijk(ijk, block)
        shared = None
        if several:
            keys = part.keys()
            shared = np.isin(keys, written)
            written = np.union1d(written, keys)
        part.write(density, np.ones(len(ijk), np.float32), 0.0, shared=shared)
        for name, grid in grids[1:]:
            values = level.normals if name == NORMAL else level.semantics
            background = (0.0, 0.0, 0.0) if name == NORMAL else SEMANTICS_BACKGROUND
            part.write(grid, _as_numpy(values, np.float32), background, shared=shared)
    transform = _make_transform(vdb, like)
    meta = _level_metadata(like)
    for name, grid in grids:
        grid.name = name
        grid.transform = transform
        grid.updateMetadata(meta)
    return [g for _, g in grids]


def write_level_parts(parts, like: Level, path: str | os.PathLike) -> pathlib.Path:
    """Write the disjoint parts of one level (e.g. a tiled scene's tiles, read back one at a time) as
    one ``.vdb`` file, as `write_level` writes their union. Memory is the OpenVDB grids plus one part,
    without a merged copy of the level (which for a 1 km scene's 0.25 m level is 24 M voxels).

    Args:
        parts: an iterable of `Level` parts (drawn one at a time).
        like: a level (e.g. an empty one) whose voxel size, origin, attributes and metadata the file takes.
    """
    vdb = import_openvdb()
    path = pathlib.Path(path)
    vdb.write(str(path), _parts_to_grids(parts, like, several=True), _level_metadata(like))
    return path


def write_level(level: Level, path: str | os.PathLike) -> pathlib.Path:
    """Write a level as a ``.vdb`` file (density, normal, semantics grids + metadata).

    Returns:
        The path written.
    """
    vdb = import_openvdb()
    path = pathlib.Path(path)
    t0 = time.perf_counter()
    grids = level_to_grids(level)
    vdb.write(str(path), grids, _level_metadata(level))
    logger.debug("wrote %d voxels to %s in %.3f s", level.num_voxels, path, time.perf_counter() - t0)
    return path


def level_to_bytes(level: Level) -> bytes:
    """The ``.vdb`` file of a level as bytes (OpenVDB writes files, so this goes through a temp file)."""
    with tempfile.TemporaryDirectory(prefix="xcube-vdb-") as tmp:
        path = pathlib.Path(tmp) / f"level_{level.index}.vdb"
        write_level(level, path)
        return path.read_bytes()


# ----------------------------------------------------------------------------------------- reading


def read_level(path: str | os.PathLike, *, density_grid: str | None = None, threshold: float = 0.0,
               index: int | None = None) -> Level:
    """Read a ``.vdb`` file into a `Level`.

    Our own files come back exactly (voxels, normals, semantics, voxel size, origin, metadata). Foreign
    files work too: ``density_grid`` names the scalar grid to use (default: the grid named
    ``density``); voxels whose value exceeds ``threshold`` become the level's voxels, or, for a
    level-set grid (grid class LEVEL_SET), the voxels inside the surface (value < 0).

    Args:
        path: the ``.vdb`` file.
        density_grid: name of the scalar grid to take as density; None = ``"density"``.
        threshold: density value above which a voxel is kept.
        index: level index to set; None = the file's ``xcube_level`` metadata, else 0.

    Raises:
        DataError: the file is not a readable VDB, has no usable density grid, or a non-uniform transform.
    """
    grids, file_meta = _read_all(path)
    density = select_density_grid(grids, density_grid, path)
    others = {}
    for name in (NORMAL, SEMANTICS):
        grid = next((g for g in grids if g.name == name), None)
        if grid is not None and grid is not density and _same_index_space(grid, density):
            others[name] = grid
    voxel_size, origin = _transform_of(density, path)
    level_set = density.gridClass == import_openvdb().GridClass.LEVEL_SET
    if level_set:
        logger.info("%s: %r is a level set; taking its inside (value < 0) as the voxels", path, density.name)
    ijk, values = gather_active(density, others, threshold=threshold, inside_negative=level_set)
    meta = {**dict(file_meta), **dict(density.metadata)}
    return _build_level(ijk, values, voxel_size, origin, meta, index)


def level_from_bytes(data: bytes, **kwargs: Any) -> Level:
    """Inverse of `level_to_bytes`; keyword arguments as in `read_level`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected the bytes of a .vdb file, got {type(data).__name__}")
    with tempfile.TemporaryDirectory(prefix="xcube-vdb-") as tmp:
        path = pathlib.Path(tmp) / "level.vdb"
        path.write_bytes(bytes(data))
        return read_level(path, **kwargs)


def list_grids(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Name, value type, class and active voxel count of each grid in a ``.vdb`` file (no tree loaded)."""
    vdb = import_openvdb()
    _check_file(path)
    try:
        grids = vdb.readAllGridMetadata(str(path))
    except Exception as exc:  # openvdb raises RuntimeError/IOError/ValueError subclasses
        raise DataError(f"{path}: not a readable OpenVDB file ({exc})") from exc
    return [{"name": g.name, "type": g.valueTypeName, "class": str(g.gridClass),
             "voxel_size": tuple(g.transform.voxelSize())} for g in grids]


def guess_density_grid(path: str | os.PathLike) -> str:
    """The name of the grid to use as density in a foreign file: ``density`` if present, else the
    first scalar float grid.

    Raises:
        DataError: the file has no scalar float grid (the message lists what it has).
    """
    grids = list_grids(path)
    names = [g["name"] for g in grids]
    if DENSITY in names:
        return DENSITY
    for g in grids:
        if str(g["type"]).lower() in _SCALAR_TYPES:
            return str(g["name"])
    found = ", ".join(f"{g['name'] or '<unnamed>'} ({g['type']})" for g in grids) or "none"
    raise DataError(f"{path}: no scalar float grid to use as density; grids found: {found}")


def select_density_grid(grids: list[Any], name: str | None, path: Any = "<vdb>") -> Any:
    """The scalar grid to use as density: the one called ``name`` (default ``density``).

    Raises:
        DataError: no such grid, or it is not a scalar float grid; the message lists the grids found.
    """
    wanted = name or DENSITY
    found = ", ".join(f"{g.name or '<unnamed>'} ({g.valueTypeName})" for g in grids) or "none"
    grid = next((g for g in grids if g.name == wanted), None)
    if grid is None:
        hint = ("pass density_grid=... (CLI: --grid NAME) to pick one"
                if name is None else "check the grid name")
        raise DataError(f"{path}: no grid named {wanted!r}; grids found: {found}; {hint}")
    if str(grid.valueTypeName).lower() not in _SCALAR_TYPES:
        raise DataError(f"{path}: grid {wanted!r} holds {grid.valueTypeName} values, expected a scalar "
                        f"float grid; grids found: {found}")
    return grid


# ----------------------------------------------------------------------------------------- helpers


def _check_level(level: Level) -> np.ndarray:
    if not isinstance(level, Level):
        raise TypeError(f"expected an xcube_core.level.Level, got {type(level).__name__}")
    ijk = _as_numpy(level.ijk, np.int64)
    if ijk.ndim != 2 or ijk.shape[1] != 3:
        raise InvalidInputError(f"level.ijk must have shape (N, 3), got {tuple(ijk.shape)}")
    if len(ijk) and (ijk.min() < -(2**31) + 8 or ijk.max() > 2**31 - 8):
        raise InvalidInputError("level.ijk is outside OpenVDB's int32 coordinate range")
    if not float(level.voxel_size) > 0:
        raise InvalidInputError(f"level.voxel_size must be > 0, got {level.voxel_size}")
    for name, want in (("normals", (len(ijk), 3)), ("semantics", (len(ijk),))):
        value = getattr(level, name)
        if value is not None and tuple(value.shape) != want:
            raise InvalidInputError(f"level.{name} must have shape {want}, got {tuple(value.shape)}")
    return ijk


def _as_numpy(value: Any, dtype: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _make_transform(vdb: Any, level: Level) -> Any:
    transform = vdb.createLinearTransform(float(level.voxel_size))
    transform.postTranslate(tuple(float(v) for v in level.origin))
    return transform


def _level_metadata(level: Level) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "xcube_format": FORMAT_VERSION,
        "xcube_level": int(level.index),
        "xcube_voxel_size": float(level.voxel_size),
        "class_names": json.dumps(list(level.class_names)),
        "xcube_metadata": json.dumps(level.metadata, default=_json_default),
    }
    for key in ("prompt", "model_id"):
        if level.metadata.get(key) is not None:
            meta[key] = str(level.metadata[key])
    seed = level.metadata.get("seed")
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and -(2**63) <= int(seed) < 2**63:
        meta["seed"] = int(seed)
    return meta


def _json_default(value: Any) -> Any:
    """numpy/torch scalars and arrays as plain JSON values; anything else as its string."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _check_file(path: Any) -> None:
    check_vdb_file(path)  # refuses truncated headers, which make OpenVDB allocate without bound


def _read_all(path: Any) -> tuple[list[Any], dict[str, Any]]:
    vdb = import_openvdb()
    _check_file(path)
    try:
        grids, meta = vdb.readAll(str(path))
    except Exception as exc:  # openvdb raises RuntimeError/IOError/ValueError subclasses
        raise DataError(f"{path}: not a readable OpenVDB file ({exc}); expected a .vdb written by "
                        "OpenVDB (Blender, Houdini, xcube)") from exc
    if not grids:
        raise DataError(f"{path}: the OpenVDB file holds no grids")
    return grids, meta


def _transform_of(grid: Any, path: Any) -> tuple[float, tuple[float, float, float]]:
    transform = grid.transform
    size = np.asarray(transform.voxelSize(), np.float64)
    if not transform.isLinear or not np.allclose(size, size[0], rtol=1e-6):
        raise DataError(f"{path}: grid {grid.name!r} has a non-uniform or non-linear transform "
                        f"(voxel size {tuple(size)}); xcube levels need cubic voxels")
    origin = tuple(float(v) for v in transform.indexToWorld((0, 0, 0)))
    return float(size[0]), origin


def _same_index_space(a: Any, b: Any) -> bool:
    ta, tb = a.transform, b.transform
    return (np.allclose(ta.voxelSize(), tb.voxelSize())
            and np.allclose(ta.indexToWorld((0, 0, 0)), tb.indexToWorld((0, 0, 0))))


def _build_level(ijk: np.ndarray, values: dict[str, np.ndarray], voxel_size: float,
                 origin: tuple[float, float, float], meta: dict[str, Any], index: int | None) -> Level:
    try:
        extra = json.loads(meta.get("xcube_metadata", "{}"))
        class_names = tuple(json.loads(meta["class_names"])) if "class_names" in meta else CLASS_NAMES
    except (TypeError, ValueError) as exc:
        raise DataError(f"malformed xcube metadata in the .vdb file: {exc}") from exc
    if not isinstance(extra, dict):
        extra = {"value": extra}
    for key in ("prompt", "seed", "model_id"):
        if key in meta and key not in extra:
            extra[key] = meta[key]
    semantics = None
    if SEMANTICS in values:
        semantics = torch.from_numpy(np.rint(values[SEMANTICS]).astype(np.int64))
    normals = torch.from_numpy(values[NORMAL].astype(np.float32)) if NORMAL in values else None
    if index is None:
        index = int(meta.get("xcube_level", 0))
    return Level(index=int(index), ijk=torch.from_numpy(np.ascontiguousarray(ijk, np.int32)),
                 voxel_size=voxel_size, origin=origin, normals=normals, semantics=semantics,
                 class_names=class_names, metadata=extra)
