"""Small helpers shared by the server tests (importable: conftest puts this folder on sys.path)."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``predicate`` every 20 ms until it is true; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
