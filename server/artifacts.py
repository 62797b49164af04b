"""Turn a `Level` into wire artifacts (VDB file, mesh file, raw arrays) and stream them in chunks.

Every artifact is announced in `LevelStart` with its size and SHA-256, then sent as `ArtifactChunk`
events of at most ``chunk_bytes`` (1 MiB by default, well under gRPC's 4 MiB message limit), then
`LevelEnd`. RAW needs no io; VDB uses `xcube_core.io.vdb`, MESH `xcube_core.io.mesh`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
from collections.abc import Iterator

import numpy as np

from xcube_client._proto import xcube_pb2 as pb
from xcube_core.level import Level

log = logging.getLogger("xcube.server")


@dataclasses.dataclass
class Blob:
    """One artifact: its description (without size/sha, filled in `describe`) and its bytes."""

    name: str
    format: int
    media_type: str
    file_extension: str
    data: bytes
    dtype: str = ""
    shape: tuple[int, ...] = ()

    def describe(self) -> pb.ArtifactInfo:
        return pb.ArtifactInfo(name=self.name, format=self.format, media_type=self.media_type,
                               file_extension=self.file_extension, size=len(self.data),
                               sha256=hashlib.sha256(self.data).hexdigest(), dtype=self.dtype,
                               shape=list(self.shape))


def _raw(name: str, array: np.ndarray, dtype: str) -> Blob:
    arr = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
    return Blob(name, pb.OUTPUT_FORMAT_RAW, "application/octet-stream", ".bin", arr.tobytes(),
                dtype=np.dtype(dtype).name, shape=tuple(arr.shape))


def raw_blobs(level: Level) -> list[Blob]:
    """ijk int32 [N,3], normals float32 [N,3] and semantics int32 [N] (when present), little-endian."""
    blobs = [_raw("ijk", level.ijk.numpy(), "int32")]
    if level.normals is not None:
        blobs.append(_raw("normals", level.normals.float().numpy(), "float32"))
    if level.semantics is not None:
        blobs.append(_raw("semantics", level.semantics.numpy(), "int32"))
    return blobs


def vdb_blob(level: Level) -> Blob:
    from xcube_core.io import vdb

    return Blob("vdb", pb.OUTPUT_FORMAT_VDB, "application/x-openvdb", ".vdb", vdb.level_to_bytes(level))


def mesh_blob(level: Level) -> Blob:
    from xcube_core.io import mesh

    data, ext, media_type = _mesh_encoder(mesh)(level)
    return Blob("mesh", pb.OUTPUT_FORMAT_MESH, media_type, ext, data)


def _mesh_encoder(mesh_module):
    """Adapter over `xcube_core.io.mesh`: returns ``level -> (bytes, extension, media type)``.

    Uses ``level_to_mesh_bytes`` when io offers it; else ``level_to_mesh`` (smooth surface, class
    colours) exported in memory as binary PLY with vertex normals, which Blender imports natively.
    """
    to_bytes = getattr(mesh_module, "level_to_mesh_bytes", None)
    to_mesh = getattr(mesh_module, "level_to_mesh", None)
    if to_bytes is None and to_mesh is None:
        raise ImportError("xcube_core.io.mesh has neither level_to_mesh_bytes nor level_to_mesh")

    def encode(level: Level):
        if to_bytes is not None:
            out = to_bytes(level)
            if isinstance(out, tuple):  # (bytes, ext) or (bytes, ext, media type)
                ext = out[1]
                return out[0], ext, out[2] if len(out) > 2 else _MEDIA_TYPES.get(ext, "application/octet-stream")
            return out, ".ply", _MEDIA_TYPES[".ply"]
        mesh = to_mesh(level)
        if len(mesh.faces) == 0 and level.num_voxels > 0:  # too sparse for a smooth surface: voxel faces
            mesh = to_mesh(level, mode="blocky")
        if len(mesh.faces) == 0:
            return _EMPTY_PLY, ".ply", _MEDIA_TYPES[".ply"]
        data = mesh.export(file_type="ply", encoding="binary", vertex_normal=True)
        return bytes(data), ".ply", _MEDIA_TYPES[".ply"]

    return encode


_EMPTY_PLY = b"ply\nformat binary_little_endian 1.0\nelement vertex 0\nproperty float x\nproperty float y\n" \
             b"property float z\nelement face 0\nproperty list uchar int vertex_indices\nend_header\n"
_MEDIA_TYPES = {".ply": "application/x-ply", ".glb": "model/gltf-binary", ".obj": "model/obj", ".stl": "model/stl"}
_ENCODERS = {"raw": raw_blobs, "vdb": lambda lv: [vdb_blob(lv)], "mesh": lambda lv: [mesh_blob(lv)]}


def available_outputs() -> tuple[str, ...]:
    """Output formats this installation can produce ("raw" always; "vdb"/"mesh" when io can)."""
    names = ["raw"]
    try:
        from xcube_core.io import vdb
        from xcube_core.io.openvdb_locator import import_openvdb

        import_openvdb()
        if hasattr(vdb, "level_to_bytes"):
            names.insert(0, "vdb")
    except Exception as exc:  # noqa: BLE001 - the reason is logged, the format left out
        log.warning("VDB output unavailable: %s", exc)
    try:
        _mesh_encoder(importlib.import_module("xcube_core.io.mesh"))
        names.insert(1 if "vdb" in names else 0, "mesh")
    except Exception as exc:  # noqa: BLE001
        log.warning("mesh output unavailable: %s", exc)
    return tuple(names)


def level_blobs(level: Level, outputs: tuple[str, ...]) -> list[Blob]:
    """All artifacts of ``level`` for the requested output names, in request order."""
    blobs: list[Blob] = []
    for name in outputs:
        blobs.extend(_ENCODERS[name](level))
    return blobs


def level_events(level: Level, blobs: list[Blob], num_levels: int, request_id: str,
                 chunk_bytes: int) -> Iterator[pb.GenerateEvent]:
    """LevelStart, the chunks of every artifact in order, then LevelEnd."""
    metadata = json.dumps(level.metadata, default=str, sort_keys=True)
    start = pb.LevelStart(index=level.index, num_levels=num_levels, num_voxels=level.num_voxels,
                          voxel_size=float(level.voxel_size), origin=list(level.origin),
                          class_names=list(level.class_names), seconds=float(level.seconds),
                          metadata_json=metadata, artifacts=[b.describe() for b in blobs])
    yield pb.GenerateEvent(request_id=request_id, level_start=start)
    for i, blob in enumerate(blobs):
        view = memoryview(blob.data)
        for offset in range(0, len(view), chunk_bytes):
            chunk = pb.ArtifactChunk(level=level.index, artifact=i, offset=offset,
                                     data=bytes(view[offset:offset + chunk_bytes]))
            yield pb.GenerateEvent(request_id=request_id, chunk=chunk)
    yield pb.GenerateEvent(request_id=request_id, level_end=pb.LevelEnd(index=level.index))
