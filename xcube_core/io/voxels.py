"""Small vectorised helpers on sparse voxel sets shared by `mesh` and `preview`.

* :class:`VoxelLookup`: ijk -> row index (or -1) for many queries at once, by binary search on the
  engine's sorted voxel keys (no dense volume, so a 512^3 bounding box costs nothing).
* :func:`class_colors`: per-voxel sRGB colours from semantic ids.

Normals estimated from occupancy are `Level.occupancy_normals` (the engine's `GridBatch` verb).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from xcube_core.classes import CLASS_COLORS
from xcube_core.sparse import keys as K

_FALLBACK_COLOR = (180, 180, 180)


def to_numpy(value: Any, dtype: Any) -> np.ndarray:
    """A torch tensor or array-like as a numpy array of ``dtype`` (CPU, detached)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


class VoxelLookup:
    """Find rows of a voxel set by their integer coordinates: the engine's key packing
    (`xcube_core.sparse.keys`) and one binary search per query, on sorted keys.

    Args:
        ijk: voxel coordinates, unique. Shape: (N, 3), integer, within the engine's coordinate limit.
    """

    def __init__(self, ijk: np.ndarray) -> None:
        coords = torch.from_numpy(np.ascontiguousarray(np.asarray(ijk, np.int64).reshape(-1, 3)))
        K.check_ijk(coords, "voxel coordinates")
        self.keys, self.order = torch.sort(K.pack(coords))

    def index(self, query: np.ndarray) -> np.ndarray:
        """Row of each query voxel in the original ``ijk``, or -1 when absent.

        Args:
            query: Shape: (M, 3), integer.

        Returns:
            Shape: (M,), int64.
        """
        q = torch.from_numpy(np.ascontiguousarray(np.asarray(query, np.int64).reshape(-1, 3)))
        inside = (q.abs() <= K.COORD_LIMIT).all(dim=1)  # beyond the limit nothing is stored
        out = torch.full((len(q),), -1, dtype=torch.int64)
        pos = K.lookup(self.keys, K.pack(q[inside]))
        out[inside] = torch.where(pos >= 0, self.order[pos.clamp(min=0)], pos)
        return out.numpy()

    def contains(self, query: np.ndarray) -> np.ndarray:
        """Whether each query voxel is in the set. Shape: (M,), bool."""
        return self.index(query) >= 0


def class_colors(semantics: Any, n: int) -> np.ndarray:
    """sRGB colours per voxel from class ids (`CLASS_COLORS`; unknown ids grey).

    Args:
        semantics: class ids or None. Shape: (N,), integer.
        n: number of voxels (used when ``semantics`` is None).

    Returns:
        Shape: (N, 3), uint8.
    """
    palette = np.asarray(list(CLASS_COLORS) + [_FALLBACK_COLOR], np.uint8)
    if semantics is None:
        return np.tile(np.asarray(CLASS_COLORS[2], np.uint8), (n, 1))
    ids = to_numpy(semantics, np.int64).reshape(-1)
    ids = np.where((ids >= 0) & (ids < len(CLASS_COLORS)), ids, len(CLASS_COLORS))
    return palette[ids]
