"""Plain data the client returns: no grpc, no protobuf, no numpy (stdlib only)."""

from __future__ import annotations

import array
import dataclasses
import json
import pathlib
import re
import sys
from typing import Any

OUTPUT_NAMES = ("vdb", "mesh", "raw")

# dtype name on the wire -> (array typecode, itemsize); all little-endian on the wire.
_TYPECODES = {"int32": ("i", 4), "int64": ("q", 8), "float32": ("f", 4), "float64": ("d", 8), "uint8": ("B", 1)}
_SAFE_NAME = re.compile(r"^[a-z0-9_]{1,32}$")
_SAFE_EXT = re.compile(r"^\.[a-z0-9]{1,8}$")


@dataclasses.dataclass
class Artifact:
    """One reassembled, checksum-verified file or array of a level.

    Attributes:
        name: "vdb", "mesh", or for raw arrays "ijk", "normals", "semantics".
        format: "vdb", "mesh" or "raw".
        media_type: e.g. "application/x-openvdb".
        file_extension: suggested extension with dot, e.g. ".vdb" (sanitised; ".bin" if odd).
        data: the bytes.
        sha256: lowercase hex SHA-256 of ``data`` (verified).
        dtype: raw arrays only: "int32", "int64", "float32", ...
        shape: raw arrays only, e.g. (N, 3).
    """

    name: str
    format: str
    media_type: str
    file_extension: str
    data: bytes
    sha256: str
    dtype: str = ""
    shape: tuple[int, ...] = ()

    def as_array(self) -> array.array:
        """A raw artifact as a flat stdlib ``array.array`` in native byte order (row-major ``shape``).

        With numpy: ``numpy.frombuffer(a.data, dtype="<" + ...).reshape(a.shape)`` is the fast path.
        """
        if self.dtype not in _TYPECODES:
            raise ValueError(f"artifact {self.name!r} is not a raw array of a known dtype (dtype={self.dtype!r}); "
                             f"expected one of {sorted(_TYPECODES)}")
        typecode, _ = _TYPECODES[self.dtype]
        out = array.array(typecode)
        out.frombytes(self.data)
        if sys.byteorder == "big":
            out.byteswap()
        return out


@dataclasses.dataclass
class GeneratedLevel:
    """One finished level as received from the server (coarsest = index 0).

    Attributes:
        index: level index, 0 = coarsest.
        num_levels: levels this request produces.
        num_voxels: active voxels in this level.
        voxel_size: metres.
        origin: (x, y, z) metres, centre of voxel (0, 0, 0).
        class_names: semantic class id -> name.
        seconds: server pipeline time for this level.
        metadata: free-form facts from the server (prompt, seed, model id, ...).
        artifacts: by name ("vdb", "mesh", "ijk", "normals", "semantics").
        request_id: the server's id of the request (also in its log).
    """

    index: int
    num_levels: int
    num_voxels: int
    voxel_size: float
    origin: tuple[float, float, float]
    class_names: tuple[str, ...]
    seconds: float
    metadata: dict[str, Any]
    artifacts: dict[str, Artifact]
    request_id: str = ""

    @property
    def vdb(self) -> bytes | None:
        """The OpenVDB file bytes, when VDB output was requested."""
        art = self.artifacts.get("vdb")
        return art.data if art else None

    @property
    def mesh(self) -> bytes | None:
        """The mesh file bytes (see ``artifacts["mesh"].file_extension``), when requested."""
        art = self.artifacts.get("mesh")
        return art.data if art else None

    def write(self, directory: str | pathlib.Path, stem: str | None = None) -> list[pathlib.Path]:
        """Write every artifact plus a JSON sidecar into ``directory``; returns the paths written.

        File names are made here from the level index (``level_<i>.vdb``, ``level_<i>_ijk.bin``,
        ``level_<i>.json``), never taken from the server.
        """
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        stem = stem or f"level_{self.index}"
        paths = []
        sidecar: dict[str, Any] = {
            "index": self.index, "num_levels": self.num_levels, "num_voxels": self.num_voxels,
            "voxel_size": self.voxel_size, "origin": list(self.origin), "class_names": list(self.class_names),
            "seconds": self.seconds, "metadata": self.metadata, "request_id": self.request_id, "files": {},
        }
        for art in self.artifacts.values():
            name = f"{stem}{art.file_extension}" if art.format != "raw" else f"{stem}_{art.name}.bin"
            path = directory / name
            path.write_bytes(art.data)
            paths.append(path)
            sidecar["files"][art.name] = {"file": name, "format": art.format, "media_type": art.media_type,
                                          "sha256": art.sha256, "dtype": art.dtype, "shape": list(art.shape)}
        meta_path = directory / f"{stem}.json"
        meta_path.write_text(json.dumps(sidecar, indent=2), encoding="utf-8")
        paths.append(meta_path)
        return paths


@dataclasses.dataclass
class ServerInfo:
    """What ``XCubeClient.info()`` returns (mirrors ``xcube.v1.ServerInfo``)."""

    server_version: str
    api_version: str
    model_id: str
    model_loaded: bool
    num_levels: int
    voxel_sizes: tuple[float, ...]
    coarse_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    device: str
    limits: dict[str, float]
    supported_outputs: tuple[str, ...]
    queue_length: int
    busy: bool
    auth_required: bool


@dataclasses.dataclass
class ConditionGrid:
    """A coarse layout for layout-to-scene generation (level-0 resolution).

    Attributes:
        ijk: voxel coordinates: little-endian int32 bytes of shape (N, 3), a sequence of (i, j, k)
            triples, or any array with ``astype``/``tobytes`` (e.g. numpy). Each in [0, coarse_shape).
        voxel_size: must equal the server's ``voxel_sizes[0]`` (see ``info()``).
        semantics: optional class id per voxel: int32 little-endian bytes, a sequence of ints, or an array.
    """

    ijk: Any
    voxel_size: float
    semantics: Any = None


def safe_name(name: str) -> bool:
    """True when an artifact name from the server is a plain lowercase identifier."""
    return bool(_SAFE_NAME.match(name))


def safe_extension(ext: str) -> str:
    """The extension if it is a plain ``.abc``; else ``.bin`` (server data never picks a path)."""
    return ext if _SAFE_EXT.match(ext) else ".bin"


def int_bytes(values: Any, columns: int, what: str) -> tuple[bytes, int]:
    """Encode ints as little-endian int32 bytes; returns (bytes, rows). Raw bytes pass through."""
    return _packed_bytes(values, columns, what, "i", int)


def float_bytes(values: Any, columns: int, what: str) -> tuple[bytes, int]:
    """Encode floats as little-endian float32 bytes; returns (bytes, rows). Raw bytes pass through."""
    return _packed_bytes(values, columns, what, "f", float)


def _packed_bytes(values: Any, columns: int, what: str, code: str, cast) -> tuple[bytes, int]:
    """Rows of ``columns`` values as little-endian 4-byte ``code`` ('i' int32, 'f' float32)."""
    label = {"i": "int32", "f": "float32"}[code]
    if isinstance(values, (bytes, bytearray, memoryview)):
        data = bytes(values)
        if len(data) % (4 * columns):
            raise ValueError(f"{what}: {len(data)} bytes is not a multiple of {4 * columns} "
                             f"({label} x {columns} per row); pass little-endian {label} bytes")
        return data, len(data) // (4 * columns)
    if hasattr(values, "astype") and hasattr(values, "tobytes"):  # numpy / array-likes, without importing numpy
        flat = values.astype(f"<{code}4").tobytes()
        return flat, len(flat) // (4 * columns)
    out = array.array(code)
    rows = 0
    for row in values:
        items = list(row) if columns > 1 else [row]
        if len(items) != columns:
            raise ValueError(f"{what}: expected rows of {columns} numbers, got {items!r}")
        out.extend(cast(v) for v in items)
        rows += 1
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes(), rows
