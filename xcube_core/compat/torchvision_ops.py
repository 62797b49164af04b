"""Let ``import torchvision`` succeed when its compiled ops cannot load.

Why: ``transformers`` and ``open_clip`` import torchvision. Where torchvision's C++ extension does not
match the installed torch (pip can pair a CUDA torchvision with our pinned CPU torch), its import fails
in ``torchvision/_meta_registrations.py`` with "operator torchvision::nms does not exist", and with it
every text encoder. Normal way first: load torchvision's own compiled ops. Fallback (tested in
tests/models/test_text.py): define the two op schemas that module registers fake kernels for, without
kernels. Nothing we use calls them. Called by the encoders that need it, never at import time.
"""

from __future__ import annotations

import importlib.util
import logging
import pathlib
import threading

import torch

logger = logging.getLogger(__name__)

_SHIM_LOCK = threading.Lock()
_SHIM_LIBRARY: torch.library.Library | None = None  # kept alive: dropping it would undefine the ops
_TORCHVISION_OPS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)


def ensure_torchvision_importable() -> None:
    """Make ``import torchvision`` succeed when its compiled ops cannot load (idempotent).

    ``transformers`` and ``open_clip`` import torchvision. Where torchvision's C++ extension does not
    match the installed torch (here: a CUDA torchvision next to a CPU torch), its import fails in
    ``_meta_registrations`` with "operator torchvision::nms does not exist". We first try to load the
    real extension; only if that fails do we define the two op schemas that module registers fake
    kernels for (``nms`` and ``qnms``, as in torchvision's ``csrc/ops/nms.cpp``), without kernels.
    Nothing we use calls them.
    """
    global _SHIM_LIBRARY
    with _SHIM_LOCK:
        if hasattr(torch.ops.torchvision, "nms") and hasattr(torch.ops.torchvision, "qnms"):
            return
        if _load_real_torchvision_ops():
            return
        lib = _SHIM_LIBRARY or torch.library.Library("torchvision", "FRAGMENT")
        for schema in _TORCHVISION_OPS:
            if not hasattr(torch.ops.torchvision, schema.split("(")[0]):
                lib.define(schema)
        _SHIM_LIBRARY = lib
        logger.debug("torchvision ops unavailable; defined schema-only torchvision::nms/qnms")


def _load_real_torchvision_ops() -> bool:
    """Try to load torchvision's own compiled ops without importing torchvision."""
    try:
        spec = importlib.util.find_spec("torchvision")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    for folder in spec.submodule_search_locations:
        for lib_path in sorted(pathlib.Path(folder).glob("_C*.*")):
            if lib_path.suffix not in (".so", ".pyd", ".dylib"):
                continue
            try:
                torch.ops.load_library(str(lib_path))
            except (OSError, RuntimeError, ImportError):
                return False
            return hasattr(torch.ops.torchvision, "nms") and hasattr(torch.ops.torchvision, "qnms")
    return False
