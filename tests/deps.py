"""Optional test dependencies: skip when one is not installed, fail when an installed one is broken.

``pytest.importorskip`` turns every ImportError into a skip, so a broken install (or a broken import
inside our own code) would pass silently. ``require`` skips only when the distribution is absent
(``pip install -e .[dev]`` installs them all) and lets any other import error fail the test.
"""

from __future__ import annotations

import importlib
import importlib.util

import pytest


def installed(name: str) -> bool:
    """Whether a top-level module ``name`` is installed (without importing it)."""
    try:
        return importlib.util.find_spec(name.split(".")[0]) is not None
    except ValueError:  # a module already imported with no spec
        return True


def require(name: str):
    """Import ``name``; skip the calling module/test only when its package is not installed."""
    if not installed(name):
        pytest.skip(f"{name} is not installed (dev dependency: pip install -e .[dev])", allow_module_level=True)
    return importlib.import_module(name)
