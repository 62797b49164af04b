"""tests/io: make the shared level builders (`io_levels`) importable whether or not tests/ is a package."""

from __future__ import annotations

import pathlib
import sys

_HERE = str(pathlib.Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
