"""Find the OpenVDB Python module wherever it is installed (an environment workaround, see `xcube_core.compat`).

Why: OpenVDB's Python bindings are rarely pip-installable for our Python, but the ``bpy`` wheel
(Blender as a module, our ``[vdb]`` extra) carries them; we load that copy rather than asking users to
build OpenVDB. The fallbacks are tested in tests/io/test_io_vdb.py (no module at all: a clear error).

Three places are tried, in order:

1. a normal install: ``import openvdb`` (the module of OpenVDB >= 10) or ``import pyopenvdb`` (older);
2. the copy bundled in the ``bpy`` wheel (Blender as a Python module): Blender 5.0.1 ships OpenVDB 12 as
   ``<site-packages>/bpy/<version>/python/lib/python3.11/site-packages/openvdb*.so``. It is found through
   ``importlib.util.find_spec("bpy")`` *without* importing bpy (importing Blender takes seconds), and
   loaded by file path as ``openvdb`` (nothing of bpy's is added to ``sys.path``).

When none is found, :func:`import_openvdb` raises :class:`OpenVDBNotFoundError` naming how to install it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import logging
import pathlib
import sys
from types import ModuleType

from xcube_core.errors import XCubeError

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    'install it with `pip install -c constraints.txt "xcube-artists[vdb]"` (this brings bpy==5.0.1, '
    "Blender as a module, which carries OpenVDB 12), or install an `openvdb` Python module yourself"
)


class OpenVDBNotFoundError(XCubeError, ImportError):
    """No OpenVDB Python module could be imported."""


def bundled_openvdb_dirs() -> list[pathlib.Path]:
    """Folders inside an installed ``bpy`` wheel that hold an ``openvdb`` extension module.

    Returns:
        Candidate ``site-packages`` folders, newest Blender version first; empty when bpy is absent.
    """
    try:
        spec = importlib.util.find_spec("bpy")
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(pathlib.Path(spec.origin).parent)]
    found: list[pathlib.Path] = []
    for root in roots:
        # <bpy>/<major.minor>/python/lib/python3.X/site-packages/openvdb*.so
        for lib in sorted(pathlib.Path(root).glob("*/python/lib/python3*/site-packages"), reverse=True):
            if any(lib.glob("openvdb*")):
                found.append(lib)
    return found


def _try_import(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        logger.debug("import %s failed: %s", name, exc)
        return None


def _load_extension(folder: pathlib.Path) -> ModuleType | None:
    """Load ``openvdb*.so`` / ``openvdb*.pyd`` from ``folder`` as the module ``openvdb``.

    The file is loaded by path, so bpy's other bundled modules (pxr, OpenImageIO, ...) are not put on
    ``sys.path``; the extension finds its ``libopenvdb`` through an rpath relative to its own file.
    """
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for path in sorted(folder.glob("openvdb*")):
        if not path.name.endswith(suffixes):
            continue
        try:
            spec = importlib.util.spec_from_file_location("openvdb", path)
            if spec is None or spec.loader is None:
                continue
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        except ImportError as exc:  # e.g. built for another Python
            logger.debug("loading %s failed: %s", path, exc)
            continue
        if hasattr(module, "FloatGrid"):
            sys.modules.setdefault("openvdb", module)
            return module
    return None


@functools.lru_cache(maxsize=1)
def import_openvdb() -> ModuleType:
    """Import and return the OpenVDB Python module (cached).

    Returns:
        The ``openvdb`` (or ``pyopenvdb``) module.

    Raises:
        OpenVDBNotFoundError: when no OpenVDB module is importable; the message says how to install one.
    """
    for name in ("openvdb", "pyopenvdb"):
        module = _try_import(name)
        if module is not None and hasattr(module, "FloatGrid"):
            return module
    tried = []
    for folder in bundled_openvdb_dirs():
        tried.append(str(folder))
        module = _load_extension(folder)
        if module is not None:
            logger.debug("using the OpenVDB bundled with bpy: %s", module.__file__)
            return module
    where = f" (looked in bpy's bundled copies: {', '.join(tried)})" if tried else ""
    raise OpenVDBNotFoundError(f"no OpenVDB Python module found{where}; {INSTALL_HINT}")


def openvdb_version() -> str:
    """The OpenVDB library version as ``"major.minor.patch"``, e.g. ``"12.0.0"``."""
    vdb = import_openvdb()
    version = getattr(vdb, "LIBRARY_VERSION", None)
    return ".".join(str(v) for v in version) if version else "unknown"
