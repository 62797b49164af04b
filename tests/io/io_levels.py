"""Small analytic levels for the io tests (sphere, box, random sparse set with attributes)."""

from __future__ import annotations

import numpy as np
import torch

from xcube_core.level import Level


def sphere_ijk(radius: float, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Voxels whose centre lies inside a sphere (index units). Shape: (N, 3), int32."""
    r = int(np.ceil(radius)) + 1
    axes = [np.arange(int(np.floor(c)) - r, int(np.ceil(c)) + r + 1) for c in centre]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    inside = np.sum((grid - np.asarray(centre)) ** 2, axis=1) <= radius**2
    return grid[inside].astype(np.int32)


def box_ijk(lo, hi) -> np.ndarray:
    """All voxels with lo <= ijk < hi. Shape: (N, 3), int32."""
    axes = [np.arange(a, b) for a, b in zip(lo, hi)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3).astype(np.int32)


def make_level(ijk: np.ndarray, voxel_size: float = 0.25, seed: int = 0, index: int = 1,
               origin=None, attributes: bool = True) -> Level:
    """A level over ``ijk`` with random unit normals and class ids in [-1, 9) (seeded)."""
    rng = np.random.default_rng(seed)
    n = len(ijk)
    normals = rng.normal(size=(n, 3)).astype(np.float32)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-6)
    semantics = rng.integers(-1, 9, size=n)
    return Level(index=index, ijk=torch.from_numpy(np.ascontiguousarray(ijk, np.int32)),
                 voxel_size=voxel_size, origin=origin,
                 normals=torch.from_numpy(normals) if attributes else None,
                 semantics=torch.from_numpy(semantics) if attributes else None,
                 metadata={"prompt": "a small test town", "seed": 7, "model_id": "test-model",
                           "extra": [1, 2]})


def random_sparse_ijk(n: int, extent: int, seed: int = 0, offset=(0, 0, 0)) -> np.ndarray:
    """``n`` distinct random voxels in [offset, offset + extent)^3. Shape: (n, 3), int32."""
    rng = np.random.default_rng(seed)
    flat = rng.choice(extent**3, size=n, replace=False)
    ijk = np.stack(np.unravel_index(flat, (extent,) * 3), axis=1)
    return (ijk + np.asarray(offset)).astype(np.int32)


def sort_rows(ijk: np.ndarray, *values: np.ndarray):
    """Sort voxels (and their values) lexicographically by (i, j, k)."""
    order = np.lexsort(np.asarray(ijk).T[::-1])
    return (np.asarray(ijk)[order],) + tuple(np.asarray(v)[order] for v in values)
