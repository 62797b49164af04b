"""Placing an asset's coordinates on the finest voxel grid: unit-box fit (objects) or metric (scenes).

Both modes map world coordinates ``p`` to continuous voxel coordinates ``u = (p - offset) * scale /
voxel_size`` so that voxel ``(i, j, k)`` spans ``[i, i + 1)`` and the grid is ``[0, shape)``. The
chosen mode and its numbers are returned as JSON-able metadata so the mapping can be undone.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

MODES = ("unit_box", "metric")
_JITTER = 1.0e-4  # voxel units; keeps faces that sit exactly on voxel boundaries in one voxel layer


@dataclasses.dataclass(frozen=True)
class Normalization:
    """The world -> voxel mapping of one asset.

    Attributes:
        mode: "unit_box" (asset scaled to fit [0, 1]^3, voxel size 1 / resolution) or "metric"
            (metres kept, fixed voxel size, grid sized to the asset).
        offset: world point mapped to voxel coordinate 0. Shape: (3,).
        scale: world -> normalised units factor (1.0 in metric mode).
        voxel_size: finest voxel size in normalised units (1 / resolution, or metres).
        shape: finest grid size in voxels, a multiple of 2**(levels - 1).
    """

    mode: str
    offset: tuple[float, float, float]
    scale: float
    voxel_size: float
    shape: tuple[int, int, int]

    def to_voxel(self, points: np.ndarray) -> np.ndarray:
        """World points -> continuous voxel coordinates. Shape: (N, 3) -> (N, 3), float64."""
        factor = self.scale / self.voxel_size
        return (np.asarray(points, dtype=np.float64) - np.asarray(self.offset)) * factor + _JITTER

    def as_metadata(self) -> dict:
        return {"mode": self.mode, "offset": list(self.offset), "scale": self.scale,
                "voxel_size": self.voxel_size, "grid_shape": list(self.shape)}


def fit(bounds_min, bounds_max, mode: str, num_levels: int, resolution: int = 512,
        voxel_size: float = 0.1, margin: float = 0.02) -> Normalization:
    """Build the mapping for an asset with axis-aligned bounds ``[bounds_min, bounds_max]``.

    Args:
        bounds_min, bounds_max: world bounds. Shape: (3,).
        mode: "unit_box" or "metric".
        num_levels: hierarchy depth (grid sizes are rounded up to a multiple of 2**(L-1)).
        resolution: unit-box mode: finest grid size per axis.
        voxel_size: metric mode: finest voxel size in metres.
        margin: unit-box mode: empty border as a fraction of the box on each side.
    """
    lo, hi = np.asarray(bounds_min, np.float64), np.asarray(bounds_max, np.float64)
    m = 2 ** (num_levels - 1)
    if mode == "unit_box":
        if resolution < m or resolution % m:
            raise ValueError(f"resolution must be a positive multiple of 2**(levels-1) = {m}, got {resolution}")
        extent = float(max((hi - lo).max(), 1e-12))
        scale = (1.0 - 2.0 * margin) / extent
        # centre the asset in the unit box: offset is the world point that lands on normalised 0
        offset = (lo + hi) / 2 - 0.5 / scale
        return Normalization("unit_box", tuple(float(v) for v in offset), scale, 1.0 / resolution,
                             (resolution,) * 3)
    if mode == "metric":
        if not voxel_size > 0:
            raise ValueError(f"voxel_size must be > 0 metres, got {voxel_size}")
        offset = np.floor(lo / voxel_size) * voxel_size
        cells = np.floor((hi - offset) / voxel_size + _JITTER).astype(np.int64) + 1
        shape = tuple(int(max(m, math.ceil(c / m) * m)) for c in cells)
        return Normalization("metric", tuple(float(v) for v in offset), 1.0, float(voxel_size), shape)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
