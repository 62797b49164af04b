"""A cheap structural check of a `.vdb` file's header before OpenVDB reads it.

OpenVDB trusts the lengths stored in a file: a truncated or garbled header makes it allocate
gigabytes (``std::bad_alloc`` after many seconds, or the process is killed). This module walks the
header (magic, version, UUID, file metadata, grid descriptors) with bounded reads and checks every
stored length and offset against the file size, so such files are refused at once with a clear
`DataError`. It only validates; reading and writing stay with OpenVDB.

Layout (OpenVDB ``io::Archive::readHeader``, ``MetaMap::readMeta``, ``GridDescriptor::read``), all
little-endian: int64 magic 0x56444220, uint32 file version, uint32 library major/minor (>= 211),
uint8 has-grid-offsets (>= 212), 36-byte UUID (>= 213); int32 metadata count, each entry = string
name, string type, uint32 size + value bytes; int32 grid count, each descriptor = string name,
string type, string instance parent (>= 216), int64 grid / block / end offsets, then the next
descriptor starts at the end offset; a grid (>= 222) starts with uint32 compression flags and its own
metadata, checked the same way. A string is a uint32 length + bytes.
"""

from __future__ import annotations

import os
import pathlib
import struct

from xcube_core.errors import DataError

MAGIC = 0x56444220
_MAX_STRING = 1 << 20
_MAX_ENTRIES = 1 << 16


class _Reader:
    def __init__(self, f, size: int, path: pathlib.Path) -> None:
        self.f, self.size, self.path = f, size, path

    def fail(self, what: str) -> DataError:
        return DataError(f"{self.path}: truncated or corrupt OpenVDB file ({what}); re-export it from "
                         "the program that wrote it")

    def read(self, n: int) -> bytes:
        if n < 0 or self.f.tell() + n > self.size:
            raise self.fail(f"needs {n} bytes at offset {self.f.tell()} of a {self.size}-byte file")
        return self.f.read(n)

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.read(struct.calcsize("<" + fmt)))[0]

    def string(self) -> bytes:
        n = self.unpack("I")
        if n > _MAX_STRING:
            raise self.fail(f"a string of {n} bytes")
        return self.read(n)


def check_vdb_file(path: str | os.PathLike) -> int:
    """Validate the header of a ``.vdb`` file; return its number of grids.

    Raises:
        DataError: the file is missing, not a VDB file, or its header is truncated/corrupt.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such .vdb file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        r = _Reader(f, size, path)
        if size < 8 or r.unpack("q") != MAGIC:
            raise DataError(f"{path}: not an OpenVDB file (no VDB magic number); expected a .vdb written "
                            "by OpenVDB (Blender, Houdini, xcube)")
        version = r.unpack("I")
        if version < 213 or version > 10_000:
            return -1  # too old (or too new) for this walk; let OpenVDB judge
        r.read(8)  # library major, minor
        has_offsets = r.unpack("B")
        if version < 222:
            r.read(1)  # compression flag
        r.read(36)  # UUID
        _check_metadata(r)
        grids = r.unpack("i")
        if not 0 <= grids <= _MAX_ENTRIES:
            raise r.fail(f"{grids} grids")
        for _ in range(grids if has_offsets else 0):
            r.string()
            r.string()
            if version >= 216:
                r.string()
            grid_pos, block_pos, end_pos = r.unpack("q"), r.unpack("q"), r.unpack("q")
            if not f.tell() <= grid_pos <= block_pos <= end_pos <= size:
                raise r.fail(f"grid offsets {grid_pos}, {block_pos}, {end_pos} outside the file")
            if version >= 222:  # each grid starts with its compression flags, then its metadata
                f.seek(grid_pos)
                r.size, full = end_pos, r.size
                r.read(4)
                _check_metadata(r)
                r.size = full
            f.seek(end_pos)
    return grids


def _check_metadata(r: _Reader) -> None:
    count = r.unpack("i")
    if not 0 <= count <= _MAX_ENTRIES:
        raise r.fail(f"{count} metadata entries")
    for _ in range(count):
        r.string()
        r.string()
        r.read(r.unpack("I"))
