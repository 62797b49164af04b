"""`VoxelDataset` (a torch Dataset over a manifest of sample files) and `collate_voxel_batch`, which
turns a list of samples into one `GridBatch` per level with `JaggedTensor` attributes."""

from __future__ import annotations

import os
import pathlib
from typing import Any, Sequence

import torch

from xcube_core.data.augment import augment_sample, random_augmentation
from xcube_core.data.hierarchy import UNKNOWN_CLASS
from xcube_core.data.storage import MANIFEST, load_sample, read_manifest
from xcube_core.errors import DataError


class VoxelDataset(torch.utils.data.Dataset):
    """Samples listed in a manifest written by ``xcube data procedural`` / ``xcube data voxelize``.

    Each item is a dict: ``ijk`` / ``normals`` / ``semantics`` (lists over levels, coarse -> fine;
    shapes (N_l, 3) int32, (N_l, 3) float32, (N_l,) int64 with -1 = unknown), ``voxel_sizes``,
    ``origins``, ``dilated`` (early-dilation target ijk for levels 0 .. L-2, computed after the
    augmentation from the finest level, or [] when disabled), ``caption``, ``metadata``, ``file``.

    Args:
        root: folder with ``manifest.jsonl`` (or the manifest file itself).
        split: keep only rows of this split ("train", "val", "test"); None keeps all.
        levels: level indices to load (default all; dilation targets need the finest level).
        augment: apply a random 90-degree rotation about Z and X/Y flips per item.
        dilation: also return early-dilation targets.

    Raises:
        DataError: (when an item is read) the sample file is corrupt; the message names the file.
    """

    def __init__(self, root: str | os.PathLike, split: str | None = None, levels: Sequence[int] | None = None,
                 augment: bool = False, dilation: bool = True) -> None:
        root = pathlib.Path(root)
        self.manifest = root / MANIFEST if root.is_dir() else root
        if not self.manifest.exists():
            raise DataError(f"{self.manifest}: no manifest; create a dataset with `xcube data procedural` "
                            "or `xcube data voxelize`")
        self.base = self.manifest.parent
        self.rows = [r for r in read_manifest(self.manifest) if split is None or r.get("split") == split]
        self.levels = None if levels is None else list(levels)
        self.augment, self.dilation = bool(augment), bool(dilation)

    def __len__(self) -> int:
        return len(self.rows)

    def path(self, index: int) -> pathlib.Path:
        return self.base / self.rows[index]["file"]

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.path(index)
        sample = load_sample(path, self.levels)
        if self.augment:
            sample = augment_sample(sample, random_augmentation())
        dilated = []
        if self.dilation and sample.num_levels > 1:
            dilated = sample.dilation_targets()
        return {
            "ijk": [lvl.ijk for lvl in sample.levels],
            "normals": [lvl.normals if lvl.normals is not None else torch.zeros(lvl.num_voxels, 3)
                        for lvl in sample.levels],
            "semantics": [lvl.semantics if lvl.semantics is not None
                          else torch.full((lvl.num_voxels,), UNKNOWN_CLASS, dtype=torch.int64)
                          for lvl in sample.levels],
            "voxel_sizes": [float(lvl.voxel_size) for lvl in sample.levels],
            "origins": [tuple(lvl.origin) for lvl in sample.levels],
            "dilated": dilated,
            "caption": sample.caption,
            "metadata": sample.metadata,
            "file": str(path),
        }


def _sorted_attribute(grid, ijk: list[torch.Tensor], values: list[torch.Tensor]):
    """Attributes given in input order, re-ordered into ``grid``'s (sorted) voxel order."""
    from xcube_core.sparse import JaggedTensor

    idx = grid.ijk_to_index(JaggedTensor(ijk), cumulative=True).jdata
    data = torch.cat(values)
    out = torch.empty((grid.total_voxels, *data.shape[1:]), dtype=data.dtype)
    out[idx] = data
    return grid.jagged_like(out)


def collate_voxel_batch(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch dataset items: per level a `GridBatch` and `JaggedTensor` attributes in its voxel order.

    Returns:
        A dict with ``grids`` (list over levels of GridBatch), ``normals`` (list of JaggedTensor,
        float32 (N, 3)), ``semantics`` (list of JaggedTensor, int64 (N,)), ``dilated`` (list over levels
        0 .. L-2 of GridBatch, empty when the items have none), ``captions``, ``metadata``, ``files``.
    """
    from xcube_core.sparse import GridBatch

    if not items:
        raise ValueError("collate_voxel_batch needs at least one item")
    num_levels = len(items[0]["ijk"])
    if any(len(it["ijk"]) != num_levels for it in items):
        raise DataError(f"items have different level counts: {[len(it['ijk']) for it in items]} "
                        f"(files {[it['file'] for it in items]}); load them with the same `levels`")
    grids, normals, semantics = [], [], []
    for lvl in range(num_levels):
        ijk = [it["ijk"][lvl] for it in items]
        grid = GridBatch.from_ijk(ijk, voxel_sizes=torch.tensor([[it["voxel_sizes"][lvl]] * 3 for it in items]),
                                  origins=torch.tensor([list(it["origins"][lvl]) for it in items]))
        grids.append(grid)
        normals.append(_sorted_attribute(grid, ijk, [it["normals"][lvl] for it in items]))
        semantics.append(_sorted_attribute(grid, ijk, [it["semantics"][lvl] for it in items]))
    dilated = []
    if all(it["dilated"] for it in items):
        for lvl in range(num_levels - 1):
            dilated.append(GridBatch.from_ijk([it["dilated"][lvl] for it in items],
                                              voxel_sizes=grids[lvl].voxel_sizes, origins=grids[lvl].origins))
    return {"grids": grids, "normals": normals, "semantics": semantics, "dilated": dilated,
            "captions": [it["caption"] for it in items], "metadata": [it["metadata"] for it in items],
            "files": [it["file"] for it in items]}
