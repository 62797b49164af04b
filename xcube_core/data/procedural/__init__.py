"""Procedural outdoor scenes (and single objects) built directly as sparse voxel sets, with captions."""

from xcube_core.data.procedural.scene import (OBJECT_KINDS, SPLITS, SceneConfig, generate_object,
                                              generate_scene, split_seed)
from xcube_core.data.procedural.styles import STYLES, SceneParams

__all__ = ["OBJECT_KINDS", "SPLITS", "STYLES", "SceneConfig", "SceneParams", "generate_object",
           "generate_scene", "split_seed"]
