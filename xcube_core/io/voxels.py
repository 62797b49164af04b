"""Small vectorised helpers on sparse voxel sets shared by `mesh` and `preview`.

* :class:`VoxelLookup`: ijk -> row index (or -1) for many queries at once, by binary search on sorted
  64-bit keys (no dense volume, so a 512^3 bounding box costs nothing).
* :func:`class_colors`: per-voxel sRGB colours from semantic ids.
* :func:`estimate_normals`: per-voxel outward normals from the 26-neighbourhood when a level has none.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xcube_core.classes import CLASS_COLORS

_BITS = 21
_MASK = (1 << _BITS) - 1
_FALLBACK_COLOR = (180, 180, 180)


def to_numpy(value: Any, dtype: Any) -> np.ndarray:
    """A torch tensor or array-like as a numpy array of ``dtype`` (CPU, detached)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


class VoxelLookup:
    """Find rows of a voxel set by their integer coordinates.

    Args:
        ijk: voxel coordinates, unique. Shape: (N, 3), integer. Extent per axis < 2^21.
    """

    def __init__(self, ijk: np.ndarray) -> None:
        ijk = np.asarray(ijk, np.int64).reshape(-1, 3)
        self.lo = ijk.min(axis=0) - 1 if len(ijk) else np.zeros(3, np.int64)
        extent = (ijk.max(axis=0) - self.lo + 2) if len(ijk) else np.ones(3, np.int64)
        if np.any(extent > _MASK):
            raise ValueError(f"voxel extent {tuple(int(e) for e in extent)} exceeds 2^21 per axis")
        keys = self._encode(ijk)
        self.order = np.argsort(keys, kind="stable")
        self.keys = keys[self.order]

    def _encode(self, ijk: np.ndarray) -> np.ndarray:
        rel = ijk - self.lo
        return (rel[:, 0] << (2 * _BITS)) | (rel[:, 1] << _BITS) | rel[:, 2]

    def index(self, query: np.ndarray) -> np.ndarray:
        """Row of each query voxel in the original ``ijk``, or -1 when absent.

        Args:
            query: Shape: (M, 3), integer.

        Returns:
            Shape: (M,), int64.
        """
        query = np.asarray(query, np.int64).reshape(-1, 3)
        rel = query - self.lo
        inside = np.all((rel >= 0) & (rel <= _MASK), axis=1)
        out = np.full(len(query), -1, np.int64)
        if len(self.keys) == 0 or not inside.any():
            return out
        keys = self._encode(query[inside])
        pos = np.searchsorted(self.keys, keys)
        pos_c = np.minimum(pos, len(self.keys) - 1)
        hit = self.keys[pos_c] == keys
        rows = np.where(hit, self.order[pos_c], -1)
        out[inside] = rows
        return out

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


def estimate_normals(ijk: np.ndarray, lookup: VoxelLookup | None = None) -> np.ndarray:
    """Outward unit normals from occupancy: minus the sum of occupied 26-neighbour directions.

    Args:
        ijk: Shape: (N, 3), integer.
        lookup: a `VoxelLookup` over ``ijk`` (built when None).

    Returns:
        Shape: (N, 3), float32; (0, 0, 1) where the neighbourhood is symmetric.
    """
    ijk = np.asarray(ijk, np.int64)
    lookup = lookup or VoxelLookup(ijk)
    acc = np.zeros((len(ijk), 3), np.float32)
    for d in np.array(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij")).reshape(3, -1).T:
        if not d.any():
            continue
        present = lookup.contains(ijk + d)
        acc -= present[:, None] * (d / np.linalg.norm(d)).astype(np.float32)
    norm = np.linalg.norm(acc, axis=1, keepdims=True)
    acc = np.where(norm > 1e-6, acc / np.maximum(norm, 1e-6), np.array([0, 0, 1], np.float32))
    return acc.astype(np.float32)
