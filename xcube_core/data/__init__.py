"""The data layer: meshes, point clouds and procedural scenes as aligned sparse voxel hierarchies.

* `voxelize` / `points`: the user's assets -> `VoxelSample` (L nested levels with normals/semantics).
* `procedural`: seeded outdoor scenes (and single objects) with captions, built directly as voxels.
* `storage`: one safetensors file per sample + a JSONL manifest, atomic writes, `DataError` on corruption.
* `dataset`: `VoxelDataset` + `collate_voxel_batch` (GridBatch + JaggedTensor per level), `augment`.

Heavy modules are imported lazily by the names below, so ``import xcube_core.data`` stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "VoxelSample": "hierarchy", "build_hierarchy": "hierarchy", "coarsen_level": "hierarchy",
    "early_dilation_targets": "hierarchy", "UNKNOWN_CLASS": "hierarchy",
    "save_sample": "storage", "load_sample": "storage", "read_manifest": "storage", "write_manifest": "storage",
    "voxelize_mesh": "voxelize", "voxelize_mesh_file": "voxelize", "voxelize_triangles": "voxelize",
    "voxelize_points": "points", "voxelize_points_file": "points",
    "load_mesh": "assets", "load_points": "assets",
    "VoxelDataset": "dataset", "collate_voxel_batch": "dataset",
    "Augmentation": "augment", "augment_sample": "augment", "random_augmentation": "augment",
    "generate_scene": "procedural", "generate_object": "procedural", "SceneConfig": "procedural",
    "split_seed": "procedural", "STYLES": "procedural",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"xcube_core.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'xcube_core.data' has no attribute {name!r}")
