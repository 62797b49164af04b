"""A scene folder (``level{L}.vdb`` per level, as `xcube generate` writes it) read back as levels."""

from __future__ import annotations

import os
import pathlib
import re

from xcube_core.errors import InvalidInputError
from xcube_core.level import Level


def read_scene(folder: str | os.PathLike) -> list[Level]:
    """The levels of a scene folder, coarsest first. Raises InvalidInputError when none are there
    or when the levels are not 0, 1, ... without gaps."""
    root = pathlib.Path(folder)
    if not root.is_dir():
        raise InvalidInputError(f"{root} is not a folder; pass the folder `xcube generate --out` wrote")
    found = {int(m.group(1)): p for p in root.iterdir() if (m := re.fullmatch(r"level(\d+)\.vdb", p.name))}
    if not found:
        raise InvalidInputError(f"{root} holds no level0.vdb; pass the folder `xcube generate --out` wrote")
    if sorted(found) != list(range(len(found))):
        raise InvalidInputError(f"{root} has levels {sorted(found)}; they must be 0, 1, ... without gaps")
    from xcube_core.io.vdb import read_level

    return [read_level(found[i], index=i) for i in range(len(found))]
