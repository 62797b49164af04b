"""`SceneBuilder`: places objects on a `Site` and paints them into a `Canvas`, keeping a census of what
it placed (the facts that metadata and captions report)."""

from __future__ import annotations

import dataclasses

import numpy as np

from xcube_core.data.procedural import objects
from xcube_core.data.procedural.canvas import Canvas
from xcube_core.data.procedural.site import Site


@dataclasses.dataclass
class Road:
    """A straight road strip ``rect = (x0, x1, y0, y1)`` running along x or y."""

    rect: tuple[float, float, float, float]
    along_x: bool


@dataclasses.dataclass
class Census:
    buildings: list[dict] = dataclasses.field(default_factory=list)
    trees: list[dict] = dataclasses.field(default_factory=list)
    bushes: list[dict] = dataclasses.field(default_factory=list)
    vehicles: list[dict] = dataclasses.field(default_factory=list)
    poles: list[dict] = dataclasses.field(default_factory=list)


class SceneBuilder:
    """Places buildings, trees, bushes, vehicles and poles without overlaps.

    Census entries carry ``xy``, the object's centre in metres, so a window cut from the site can
    count only what stands in it.

    Args:
        canvas: the label volume (metres); it may cover only a window of the site.
        site: ground layout and footprint map of the whole scene.
        rng: the scene's generator (all placement randomness comes from it).
        max_height: tallest allowed object top above the ground, metres.
        focus: ``(x0, x1, y0, y1)``, the window the scene is made for (default: the whole site).
            Water a style puts once per scene (a pond, a river) goes in or at its edge, so captions
            that name water keep finding it in the window.
        area_scale: site area over the area the styles' counts are meant for; counts of trees,
            bushes, vehicles and scattered buildings are multiplied by it, so density stays put.
    """

    def __init__(self, canvas: Canvas, site: Site, rng: np.random.Generator, max_height: float,
                 focus: tuple[float, float, float, float] | None = None, area_scale: float = 1.0) -> None:
        self.canvas, self.site, self.rng = canvas, site, rng
        self.max_height = float(max_height)
        self.focus = tuple(float(v) for v in focus) if focus is not None else (0.0, site.extent[0], 0.0,
                                                                              site.extent[1])
        self.area_scale = float(area_scale)
        self.census = Census()
        self.roads: list[Road] = []

    def per_area(self, count: float) -> int:
        """``count`` meant for the styles' reference area, scaled to this site."""
        return int(round(count * self.area_scale))

    def in_focus(self, fx: float, fy: float) -> tuple[float, float]:
        """The point at fractions ``(fx, fy)`` of the focus window."""
        x0, x1, y0, y1 = self.focus
        return x0 + fx * (x1 - x0), y0 + fy * (y1 - y0)

    # -- ground ----------------------------------------------------------------------------------
    def road(self, rect, along_x: bool) -> None:
        self.roads.append(Road(tuple(float(v) for v in rect), along_x))
        self.site.add_road(rect)

    def grid_roads(self, spacing: float, width: float, axes: str = "xy") -> None:
        """Parallel roads every ``spacing`` metres along the given axes, at a random offset."""
        ex, ey = self.site.extent
        for axis in axes:
            span = ey if axis == "x" else ex
            offset = self.rng.uniform(0.3, 0.7) * spacing
            pos = offset
            while pos < span - width / 2:
                lo, hi = pos - width / 2, pos + width / 2
                rect = (0.0, ex, lo, hi) if axis == "x" else (lo, hi, 0.0, ey)
                self.road(rect, along_x=(axis == "x"))
                pos += spacing

    # -- buildings -------------------------------------------------------------------------------
    def building(self, rect, height: float, roof: str, margin: float = 1.0, force: bool = False,
                 **kw) -> bool:
        """Place a building on ``rect`` if free (or anyway with ``force``); returns whether placed."""
        if force:
            self.site.take(rect)
        elif not self.site.try_take(rect, margin):
            return False
        height = float(np.clip(height, 3.0, self.max_height))
        x0, x1, y0, y1 = rect
        z0 = self.site.height_at((x0 + x1) / 2, (y0 + y1) / 2)
        facts = objects.building(self.canvas, self.rng, rect, z0, height, roof, **kw)
        self.census.buildings.append({**facts, "xy": ((x0 + x1) / 2, (y0 + y1) / 2)})
        return True

    def random_building(self, size_range, height: float, roofs, roof_p=None, tries: int = 20, **kw) -> bool:
        """Try to place one building of a random footprint anywhere free."""
        for _ in range(tries):
            w, d = self.rng.uniform(*size_range, size=2)
            p = self.site.random_free_point(self.rng, max(w, d) / 2 + 1.0, tries=5)
            if p is None:
                continue
            rect = (p[0] - w / 2, p[0] + w / 2, p[1] - d / 2, p[1] + d / 2)
            roof = str(self.rng.choice(roofs, p=roof_p))
            if self.building(rect, height, roof, **kw):
                return True
        return False

    # -- vegetation ------------------------------------------------------------------------------
    def trees(self, count: int, kinds=("oak",), kind_p=None, scale: float = 1.0, region=None,
              near: list[tuple[float, float]] | None = None, clearance: float = 2.5) -> int:
        """Scatter up to ``count`` trees (in ``region = (x0, x1, y0, y1)`` or at the ``near`` spots).

        A tree needs ``clearance`` metres free around its trunk (so crowns stay off buildings and
        inside the scene) but only claims its trunk, so crowns of neighbouring trees may touch.
        """
        placed = 0
        spots = list(near) if near is not None else [None] * count
        c = clearance * scale
        for spot in spots[:count]:
            p = spot if spot is not None else self._point(region, c)
            if p is None or not self.site.is_free((p[0] - c, p[0] + c, p[1] - c, p[1] + c)):
                continue
            self.site.take((p[0] - 0.8, p[0] + 0.8, p[1] - 0.8, p[1] + 0.8))
            kind = str(self.rng.choice(kinds, p=kind_p))
            z0 = self.site.height_at(*p)
            facts = objects.tree(self.canvas, self.rng, p[0], p[1], z0, kind, scale)
            self.census.trees.append({**facts, "xy": tuple(p)})
            placed += 1
        return placed

    def bushes(self, count: int, region=None) -> int:
        placed = 0
        for _ in range(count):
            p = self._point(region, 1.5)
            if p is None or not self.site.try_take((p[0] - 1.0, p[0] + 1.0, p[1] - 1.0, p[1] + 1.0)):
                continue
            facts = objects.bush(self.canvas, self.rng, p[0], p[1], self.site.height_at(*p))
            self.census.bushes.append({**facts, "xy": tuple(p)})
            placed += 1
        return placed

    def _point(self, region, radius: float):
        if region is None:
            return self.site.random_free_point(self.rng, radius, tries=10)
        x0, x1, y0, y1 = region
        return float(self.rng.uniform(x0, x1)), float(self.rng.uniform(y0, y1))

    # -- street furniture ------------------------------------------------------------------------
    def vehicles_on_roads(self, count: int, truck_p: float = 0.0) -> int:
        """Park vehicles on the roads, along the road direction, without overlapping each other."""
        placed, occupied = 0, []
        for _ in range(count * 4):
            if placed >= count or not self.roads:
                break
            road = self.roads[int(self.rng.integers(len(self.roads)))]
            x0, x1, y0, y1 = road.rect
            truck = bool(self.rng.random() < truck_p)
            half = (6.5 if truck else 2.6)
            width_span = (y0, y1) if road.along_x else (x0, x1)
            lane = width_span[0] + self.rng.choice([0.27, 0.73]) * (width_span[1] - width_span[0])
            a0, a1 = ((x0, x1) if road.along_x else (y0, y1))
            if a1 - a0 < 2 * half + 1.0:
                continue
            along = self.rng.uniform(a0 + half, a1 - half)
            x, y = (along, lane) if road.along_x else (lane, along)
            box = (x - half, x + half, y - half, y + half)
            if any(not (box[1] < o[0] or box[0] > o[1] or box[3] < o[2] or box[2] > o[3]) for o in occupied):
                continue
            occupied.append(box)
            self.vehicle_at(x, y, road.along_x, truck)
            placed += 1
        return placed

    def vehicle_at(self, x: float, y: float, along_x: bool, truck: bool = False) -> None:
        z0 = self.site.height_at(x, y)
        facts = objects.vehicle(self.canvas, self.rng, x, y, z0, along_x, truck)
        self.census.vehicles.append({**facts, "xy": (x, y)})

    def pole_at(self, x: float, y: float, arm: tuple[float, float]) -> None:
        facts = objects.pole(self.canvas, self.rng, x, y, self.site.height_at(x, y), arm)
        self.census.poles.append({**facts, "xy": (x, y)})

    def poles_along_roads(self, spacing: float) -> int:
        """Street lights on one side of every road, every ``spacing`` metres where the kerb is free."""
        placed = 0
        for road in self.roads:
            x0, x1, y0, y1 = road.rect
            start, stop = (x0, x1) if road.along_x else (y0, y1)
            side = self.rng.choice([-1.0, 1.0])
            lo_edge, hi_edge = (y0, y1) if road.along_x else (x0, x1)
            kerb = hi_edge + 0.8 if side > 0 else lo_edge - 0.8
            for t in np.arange(start + self.rng.uniform(2, spacing), stop - 1.0, spacing):
                x, y = (t, kerb) if road.along_x else (kerb, t)
                if not self.site.try_take((x - 0.4, x + 0.4, y - 0.4, y + 0.4)):
                    continue
                self.pole_at(x, y, (0.0, -side) if road.along_x else (-side, 0.0))
                placed += 1
        return placed
