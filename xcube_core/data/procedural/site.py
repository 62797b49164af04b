"""The site of a procedural scene: terrain height, roads and water on the ground, and a 2D footprint
map that keeps objects from overlapping roads, water and each other."""

from __future__ import annotations

import math

import numpy as np

from xcube_core.data.procedural.canvas import Canvas
from xcube_core.data.procedural.objects import GROUND, ROAD, WATER

GROUND_LEVEL = 1.0  # metres of ground slab above z = 0 (water sits half a metre lower)
WATER_DEPTH = 0.5


class Site:
    """Ground layout of a scene of ``extent = (width, depth)`` metres.

    Args:
        extent: (x, y) size in metres.
        rng: generator for the terrain.
        hilliness: terrain amplitude in metres (0 = flat).
        cell: resolution of the footprint map in metres.
    """

    def __init__(self, extent: tuple[float, float], rng: np.random.Generator, hilliness: float = 0.0,
                 cell: float = 0.5) -> None:
        self.extent = (float(extent[0]), float(extent[1]))
        self.cell = float(cell)
        self.nx, self.ny = (max(1, int(math.ceil(e / cell))) for e in self.extent)
        self.taken = np.zeros((self.nx, self.ny), dtype=bool)
        self.road = np.zeros((self.nx, self.ny), dtype=bool)
        self.water = np.zeros((self.nx, self.ny), dtype=bool)
        # smooth terrain: a few random low-frequency waves
        self._waves = [(rng.uniform(-1, 1, 2) * 2 * math.pi / rng.uniform(25, 60), rng.uniform(0, 2 * math.pi))
                       for _ in range(3)]
        self.hilliness = float(hilliness)

    # -- terrain ---------------------------------------------------------------------------------
    def terrain(self, x, y):
        """Ground height in metres at (x, y) (arrays broadcast), before water is carved."""
        z = np.zeros(np.broadcast(x, y).shape, dtype=np.float32)
        for (kx, ky), phase in self._waves:
            z = z + np.sin(kx * x + ky * y + phase)
        return GROUND_LEVEL + self.hilliness * (z / len(self._waves) + 1.0) * 0.5

    def height_at(self, x: float, y: float) -> float:
        """Ground height under a point (water carved in)."""
        i, j = self._cell_index(x, y)
        return float(self.terrain(np.float32(x), np.float32(y))) - (WATER_DEPTH if self.water[i, j] else 0.0)

    def _cell_index(self, x: float, y: float) -> tuple[int, int]:
        return (min(self.nx - 1, max(0, int(x / self.cell))), min(self.ny - 1, max(0, int(y / self.cell))))

    # -- footprint map ---------------------------------------------------------------------------
    def _cells(self, rect, margin: float = 0.0):
        x0, x1, y0, y1 = rect
        i0, i1 = int(math.floor((x0 - margin) / self.cell)), int(math.ceil((x1 + margin) / self.cell))
        j0, j1 = int(math.floor((y0 - margin) / self.cell)), int(math.ceil((y1 + margin) / self.cell))
        return slice(max(0, i0), min(self.nx, i1)), slice(max(0, j0), min(self.ny, j1)), (
            i0 >= 0 and j0 >= 0 and i1 <= self.nx and j1 <= self.ny)

    def is_free(self, rect, margin: float = 0.0) -> bool:
        """True if ``rect = (x0, x1, y0, y1)`` (grown by ``margin``) lies inside the site, off roads,
        water and earlier objects."""
        si, sj, inside = self._cells(rect, margin)
        if not inside:
            return False
        return not (self.taken[si, sj].any() or self.road[si, sj].any() or self.water[si, sj].any())

    def take(self, rect) -> None:
        si, sj, _ = self._cells(rect)
        self.taken[si, sj] = True

    def try_take(self, rect, margin: float = 0.0) -> bool:
        if self.is_free(rect, margin):
            self.take(rect)
            return True
        return False

    def add_road(self, rect) -> None:
        si, sj, _ = self._cells(rect)
        self.road[si, sj] = True

    def add_pond(self, cx: float, cy: float, rx: float, ry: float) -> None:
        x = (np.arange(self.nx) + 0.5)[:, None] * self.cell
        y = (np.arange(self.ny) + 0.5)[None, :] * self.cell
        self.water |= (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0) & ~self.road

    def add_river(self, rect) -> None:
        si, sj, _ = self._cells(rect)
        self.water[si, sj] = True

    def random_free_point(self, rng: np.random.Generator, radius: float, tries: int = 30):
        """A point whose square of half-size ``radius`` is free, or None after ``tries`` attempts."""
        if 2 * radius >= min(self.extent):
            return None
        for _ in range(tries):
            x, y = rng.uniform(radius, self.extent[0] - radius), rng.uniform(radius, self.extent[1] - radius)
            if self.is_free((x - radius, x + radius, y - radius, y + radius)):
                return float(x), float(y)
        return None

    # -- painting --------------------------------------------------------------------------------
    def paint_ground(self, canvas: Canvas) -> None:
        """Fill the ground columns: terrain, roads (flat asphalt), water (carved half a metre)."""
        x = canvas.centres(0)[:, None]
        y = canvas.centres(1)[None, :]
        top = self.terrain(x, y)
        ci = np.clip((x / self.cell).astype(np.int64), 0, self.nx - 1)
        cj = np.clip((y / self.cell).astype(np.int64), 0, self.ny - 1)
        water = self.water[ci, cj]
        road = self.road[ci, cj]
        top = np.where(water, top - WATER_DEPTH, top)
        cls = np.where(water, WATER, np.where(road, ROAD, GROUND)).astype(np.uint8) + 1
        z = canvas.centres(2)
        below = z[None, None, :] < top[:, :, None]
        below[:, :, 0] = True  # at least one voxel of ground everywhere
        below &= canvas.labels == 0  # objects reaching into the ground keep their labels
        canvas.labels[below] = np.broadcast_to(cls[:, :, None], below.shape)[below]

    def water_within(self, rect) -> bool:
        """Whether any water cell lies in ``rect = (x0, x1, y0, y1)``."""
        si, sj, _ = self._cells(rect)
        return bool(self.water[si, sj].any())

    def fraction(self, which: str) -> float:
        grid = {"road": self.road, "water": self.water, "taken": self.taken}[which]
        return float(grid.mean())
