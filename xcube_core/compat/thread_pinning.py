"""Per-thread OpenMP / MKL thread counts, through ctypes.

Why: the CPU sparse convolution spreads its tiles over worker threads, and each worker must run torch
with ONE OpenMP/MKL thread (many small ops inside OpenMP parallel regions stall on barriers when cores
are shared). ``torch.set_num_threads`` is process-wide, so we call the runtimes' own per-thread setters:
GNU OpenMP's ``omp_set_num_threads`` (per thread by the OpenMP spec) and MKL's
``MKL_Set_Num_Threads_Local``. Only torch builds with GNU OpenMP and MKL (the Linux x86 wheels) have
them. Fallback (tested in tests/sparse/test_backends.py): `one_thread_hooks` returns None and callers run
their work on the calling thread, unsplit.
"""

from __future__ import annotations

import ctypes
import os

import torch


def one_thread_hooks():
    """(omp_set_num_threads, MKL_Set_Num_Threads_Local) of the runtimes already loaded, or None."""
    try:
        gomp = ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD)
        lib = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
        mkl = ctypes.CDLL(lib, mode=os.RTLD_NOLOAD)
        omp_set, mkl_set = gomp.omp_set_num_threads, mkl.MKL_Set_Num_Threads_Local  # C (by-value) entry points
    except (OSError, AttributeError):
        return None
    omp_set.argtypes, omp_set.restype = [ctypes.c_int], None
    mkl_set.argtypes, mkl_set.restype = [ctypes.c_int], ctypes.c_int
    return omp_set, mkl_set


def pin_one_thread() -> None:
    """Make the calling (worker) thread run torch ops single-threaded (thread-local settings only).

    Raises:
        RuntimeError: the per-thread setters are not available (check `one_thread_hooks` first).
    """
    hooks = one_thread_hooks()
    if hooks is None:
        raise RuntimeError("per-thread OpenMP/MKL thread counts are unavailable in this torch build")
    torch.empty(1 << 16).fill_(0.0)  # let torch run its per-thread lazy thread-count init first
    omp_set, mkl_set = hooks
    omp_set(1)
    mkl_set(1)
