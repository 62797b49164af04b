"""Workarounds for the environments we run in, one clearly named module each.

Each module says why it exists, tries the normal way first and has a fallback that a test exercises:

* `torchvision_ops`: lets ``import torchvision`` (pulled in by transformers / open_clip) succeed when
  its compiled ops do not match the installed torch;
* `thread_pinning`: per-thread OpenMP / MKL thread counts through ctypes, so conv worker threads run
  single-threaded without changing the process-wide ``torch.set_num_threads``;
* OpenVDB found inside the ``bpy`` wheel lives with the VDB reader: `xcube_core.io.openvdb_locator`.

Nothing here runs at import time: callers invoke the workaround where they need it.
"""
