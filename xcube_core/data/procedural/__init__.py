"""Procedural outdoor scenes (and single objects) built directly as sparse voxel sets, with captions.

Names are imported lazily so that reading `STYLES` (e.g. for CLI choices) does not import torch.
"""

from __future__ import annotations

import importlib

from xcube_core.data.procedural.names import OBJECT_KINDS, SPLITS, STYLES

_EXPORTS = {"SceneConfig": "scene", "generate_object": "scene", "generate_scene": "scene",
            "split_seed": "scene", "SceneParams": "styles", "sample_params": "styles"}

__all__ = ["OBJECT_KINDS", "SPLITS", "STYLES", *sorted(_EXPORTS)]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"xcube_core.data.procedural.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'xcube_core.data.procedural' has no attribute {name!r}")
