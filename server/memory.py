"""Give freed heap memory back to the operating system after each request.

glibc gives every thread that allocates its own arena (up to 8 per core), and a freed block inside an
arena stays mapped until the arena's top is free. A server streams levels of several MB from many
handler threads (encoded artifacts, protobuf chunks), so freed pages pile up in arenas that no
request reuses soon. ``malloc_trim(0)`` returns the free pages of every arena at once; it costs a few
milliseconds, once per request. On other C libraries this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger("xcube.server")


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return free heap pages to the OS (glibc ``malloc_trim``); False where unavailable."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
