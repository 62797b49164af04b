"""Scene styles: the parameters each style samples, and the layout that turns parameters into objects.

Parameters drive both the geometry and (through the measured census) the caption: a downtown block
with ``building_height=25`` gets towers around 25 m and a caption that says "tall".
"""

from __future__ import annotations

import dataclasses

import numpy as np

from xcube_core.data.procedural.builder import SceneBuilder
from xcube_core.data.procedural.names import STYLES


@dataclasses.dataclass(frozen=True)
class SceneParams:
    """What a scene should contain (targets; the census reports what was actually placed).

    Attributes:
        style: one of `STYLES`.
        building_height: mean building height target in metres.
        building_density: 0..1, share of the available lots that get a building.
        tree_count: number of trees to try to place.
        has_water: whether to add a pond / river.
        vehicle_count: number of vehicles to try to place.
        hilliness: terrain amplitude in metres.
    """

    style: str
    building_height: float
    building_density: float
    tree_count: int
    has_water: bool
    vehicle_count: int
    hilliness: float = 0.0


# style -> (height range m, density range, tree count range, water probability, vehicle range, hills m)
_RANGES = {
    "downtown": ((14.0, 28.0), (0.7, 1.0), (0, 8), 0.05, (4, 14), (0.0, 0.0)),
    "suburban": ((5.0, 9.0), (0.6, 1.0), (8, 30), 0.1, (2, 8), (0.0, 0.6)),
    "park": ((3.5, 5.0), (0.0, 0.4), (25, 70), 0.75, (0, 0), (0.2, 1.5)),
    "industrial": ((6.0, 13.0), (0.6, 1.0), (0, 6), 0.1, (3, 9), (0.0, 0.0)),
    "rural": ((5.0, 10.0), (0.5, 1.0), (6, 24), 0.4, (0, 2), (0.5, 2.5)),
    "parking_lot": ((4.0, 7.0), (0.0, 1.0), (4, 16), 0.0, (18, 60), (0.0, 0.0)),
    "riverside": ((7.0, 16.0), (0.5, 1.0), (6, 20), 1.0, (1, 5), (0.0, 0.0)),
}


def sample_params(rng: np.random.Generator, style: str | None = None, **overrides) -> SceneParams:
    """Draw the parameters of one scene; ``style=None`` picks a style at random.

    Args:
        rng: the scene's generator.
        style: a name from `STYLES` or None.
        **overrides: fixed values for any `SceneParams` field (e.g. ``building_height=25``).
    """
    if style is None:
        style = str(rng.choice(STYLES))
    if style not in _RANGES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    hr, dr, tr, wp, vr, hl = _RANGES[style]
    params = SceneParams(
        style=style,
        building_height=float(rng.uniform(*hr)),
        building_density=float(rng.uniform(*dr)),
        tree_count=int(rng.integers(tr[0], tr[1] + 1)),
        has_water=bool(rng.random() < wp),
        vehicle_count=int(rng.integers(vr[0], vr[1] + 1)),
        hilliness=float(rng.uniform(*hl)),
    )
    unknown = set(overrides) - {f.name for f in dataclasses.fields(SceneParams)}
    if unknown:
        raise ValueError(f"unknown scene parameters {sorted(unknown)}; valid: "
                         f"{[f.name for f in dataclasses.fields(SceneParams)]}")
    return dataclasses.replace(params, **{k: v for k, v in overrides.items() if v is not None})


REFERENCE_AREA_M2 = 64.0 * 64.0  # the area the styles' counts are meant for


def layout(builder: SceneBuilder, params: SceneParams) -> None:
    """Place the style's roads, water, buildings, vegetation and street furniture.

    The counts in ``params`` are meant for the styles' reference area (`REFERENCE_AREA_M2`, a 64 m
    square); a larger site gets proportionally more (`SceneBuilder.area_scale`), so any window of it
    looks alike.
    """
    params = dataclasses.replace(params, tree_count=builder.per_area(params.tree_count),
                                 vehicle_count=builder.per_area(params.vehicle_count))
    {"downtown": _downtown, "suburban": _suburban, "park": _park, "industrial": _industrial,
     "rural": _rural, "parking_lot": _parking_lot, "riverside": _riverside}[params.style](builder, params)


def _parallel(first: float, spacing: float, span: float) -> list[float]:
    """Positions ``first + k * spacing`` (k of either sign) that lie inside ``(0, span)``."""
    k0 = -int(first // spacing)
    return [first + k * spacing for k in range(k0, k0 + int(span // spacing) + 2) if 0.0 < first + k * spacing < span]


def _along_axis_count(b: SceneBuilder) -> int:
    """How many once-per-reference-scene strips (a path, a lane) a site of this size gets per axis."""
    return max(1, int(round(b.area_scale ** 0.5)))


def _height(b: SceneBuilder, mean: float, spread: float = 0.25) -> float:
    return float(np.clip(b.rng.normal(mean, spread * mean), 0.5 * mean, 1.6 * mean))


def _blocks(b: SceneBuilder, spacing: float, width: float):
    """Rectangles between grid roads (computed from the road list), each (x0, x1, y0, y1)."""
    ex, ey = b.site.extent
    xs = sorted([0.0, ex] + [v for r in b.roads if not r.along_x for v in r.rect[:2]])
    ys = sorted([0.0, ey] + [v for r in b.roads if r.along_x for v in r.rect[2:]])
    xb = [(xs[i], xs[i + 1]) for i in range(0, len(xs) - 1, 2)]
    yb = [(ys[i], ys[i + 1]) for i in range(0, len(ys) - 1, 2)]
    return [(x0, x1, y0, y1) for x0, x1 in xb for y0, y1 in yb if x1 - x0 > 6 and y1 - y0 > 6]


def _fill_block(b: SceneBuilder, block, params: SceneParams, roofs, roof_p, lot_range, **kw) -> None:
    """Split a block into a grid of lots and put a building on each lot the density keeps."""
    x0, x1, y0, y1 = block
    nx = max(1, int(round((x1 - x0) / b.rng.uniform(*lot_range))))
    ny = max(1, int(round((y1 - y0) / b.rng.uniform(*lot_range))))
    xs, ys = np.linspace(x0, x1, nx + 1), np.linspace(y0, y1, ny + 1)
    for a0, a1 in zip(xs[:-1], xs[1:]):
        for c0, c1 in zip(ys[:-1], ys[1:]):
            if b.rng.random() > params.building_density:
                continue
            s = b.rng.uniform(0.8, 2.0, size=4)
            rect = (a0 + s[0], a1 - s[1], c0 + s[2], c1 - s[3])
            if rect[1] - rect[0] < 3.5 or rect[3] - rect[2] < 3.5:
                continue
            roof = str(b.rng.choice(roofs, p=roof_p))
            b.building(rect, _height(b, params.building_height), roof, margin=0.3, **kw)


def _downtown(b: SceneBuilder, p: SceneParams) -> None:
    ex, ey = b.site.extent
    b.grid_roads(spacing=b.rng.uniform(26, 36), width=b.rng.uniform(7, 10))
    if p.has_water:
        b.site.add_pond(*b.in_focus(*b.rng.uniform(-0.1, 1.1, 2)), 5.0, 4.0)
    for block in _blocks(b, 0, 0):
        tiers = int(b.rng.integers(1, 4))
        _fill_block(b, block, p, ("flat", "pyramid"), (0.85, 0.15), (9, 16), tiers=tiers,
                    round_tower=bool(b.rng.random() < 0.1))
    b.poles_along_roads(spacing=b.rng.uniform(14, 22))
    b.vehicles_on_roads(p.vehicle_count, truck_p=0.1)
    b.trees(p.tree_count, kinds=("oak", "poplar"), scale=0.7)
    b.bushes(p.tree_count // 2)


def _suburban(b: SceneBuilder, p: SceneParams) -> None:
    ex, ey = b.site.extent
    w = b.rng.uniform(6, 8)
    mid = b.rng.uniform(0.0, ey)
    streets = _parallel(mid, b.rng.uniform(52, 64), ey)  # one street per reference scene, repeated
    for k, y in enumerate(streets):
        b.road((0.0, ex, y - w / 2, y + w / 2), along_x=True)
        if b.rng.random() < 0.5:  # a side street down to the previous street (or the scene edge)
            cx = b.rng.uniform(w, ex - w)
            below = streets[k - 1] + w / 2 if k else 0.0
            b.road((cx - w / 2, cx + w / 2, below, y - w / 2), along_x=False)
    if p.has_water:
        b.site.add_pond(*b.in_focus(*b.rng.uniform(-0.1, 1.1, 2)), 4.0, 3.0)
    for y in streets:
        for side in (-1, 1):  # houses facing the street, set back from it
            setback = b.rng.uniform(3.5, 6.0)
            x = b.rng.uniform(1, 4)
            while x < ex - 8:
                plot = b.rng.uniform(12, 16)
                if b.rng.random() < p.building_density:
                    hw, hd = b.rng.uniform(7, 11), b.rng.uniform(7, 11)
                    y0 = y + w / 2 + setback if side > 0 else y - w / 2 - setback - hd
                    roof = str(b.rng.choice(("gabled", "hipped", "flat"), p=(0.6, 0.3, 0.1)))
                    b.building((x, x + hw, y0, y0 + hd), _height(b, p.building_height, 0.15), roof, margin=0.5)
                x += plot
    b.trees(p.tree_count, kinds=("oak", "conifer"), kind_p=(0.8, 0.2))
    b.bushes(b.per_area(b.rng.integers(8, 25)))
    b.vehicles_on_roads(p.vehicle_count)
    b.poles_along_roads(spacing=b.rng.uniform(20, 30))


def _park(b: SceneBuilder, p: SceneParams) -> None:
    ex, ey = b.site.extent
    if p.has_water:
        b.site.add_pond(*b.in_focus(*b.rng.uniform(0.0, 1.0, 2)), b.rng.uniform(6, 13), b.rng.uniform(5, 10))
    w = b.rng.uniform(2.5, 3.5)
    for _ in range(_along_axis_count(b)):
        y = ey * b.rng.uniform(0.05, 0.95)
        b.road((0.0, ex, y - w / 2, y + w / 2), along_x=True)
        if b.rng.random() < 0.6:
            x = ex * b.rng.uniform(0.05, 0.95)
            b.road((x - w / 2, x + w / 2, 0.0, ey), along_x=False)
    for _ in range(max(1, b.per_area(1))):
        if b.rng.random() < p.building_density:  # a pavilion
            b.random_building((4, 7), p.building_height, ("hipped", "pyramid"))
    b.trees(p.tree_count, kinds=("oak", "conifer", "poplar"), kind_p=(0.6, 0.25, 0.15))
    b.bushes(b.per_area(b.rng.integers(15, 40)))
    b.poles_along_roads(spacing=b.rng.uniform(15, 25))


def _industrial(b: SceneBuilder, p: SceneParams) -> None:
    ex, ey = b.site.extent
    w = b.rng.uniform(8, 11)
    mid = b.rng.uniform(0.0, ey)
    for y in _parallel(mid, b.rng.uniform(60, 80), ey):
        b.road((0.0, ex, y - w / 2, y + w / 2), along_x=True)
    if p.has_water:
        y = b.in_focus(0.0, b.rng.uniform(0.0, 0.9))[1]
        b.site.add_river((0.0, ex, y, y + 5.0))
    count = b.per_area(2 + 4 * p.building_density)
    for _ in range(count):
        b.random_building((14, 34), _height(b, p.building_height, 0.2), ("flat", "gabled"), (0.5, 0.5),
                          margin=2.0)
    for _ in range(b.per_area(b.rng.integers(0, 4))):  # silos
        r = b.rng.uniform(1.8, 3.2)
        b.random_building((2 * r, 2 * r), b.rng.uniform(10, 18), ("flat",), round_tower=True, margin=1.0)
    b.vehicles_on_roads(p.vehicle_count, truck_p=0.5)
    b.trees(p.tree_count, kinds=("poplar", "oak"))
    b.poles_along_roads(spacing=b.rng.uniform(18, 28))


def _rural(b: SceneBuilder, p: SceneParams) -> None:
    ex, ey = b.site.extent
    w = b.rng.uniform(3.5, 5)
    for _ in range(_along_axis_count(b)):
        x = b.rng.uniform(w, ex - w)
        b.road((x - w / 2, x + w / 2, 0.0, ey), along_x=False)
    if p.has_water:
        b.site.add_pond(*b.in_focus(*b.rng.uniform(-0.1, 1.1, 2)), b.rng.uniform(4, 9), b.rng.uniform(3, 7))
    for _ in range(max(1, b.per_area(1))):  # one farmstead per reference scene
        b.random_building((7, 11), _height(b, p.building_height, 0.15), ("gabled", "hipped"))  # farmhouse
        if b.rng.random() < p.building_density:  # barn
            b.random_building((12, 20), _height(b, p.building_height * 1.2, 0.1), ("gabled",), margin=2.0)
        if b.rng.random() < 0.5:
            b.random_building((5, 8), _height(b, p.building_height * 0.6, 0.1), ("gabled", "flat"))
    b.trees(p.tree_count, kinds=("oak", "conifer", "poplar"), kind_p=(0.5, 0.35, 0.15))
    b.bushes(b.per_area(b.rng.integers(3, 12)))
    b.vehicles_on_roads(p.vehicle_count, truck_p=0.3)


def _parking_lot(b: SceneBuilder, p: SceneParams) -> None:
    ex, ey = b.site.extent
    m = b.rng.uniform(5, 9)
    lot = (m, ex - m, m, ey - m)
    store = None
    if b.rng.random() < p.building_density:  # a store on the lot, in or at the window (as in a framed lot)
        x0, y1 = b.in_focus(b.rng.uniform(-0.1, 0.7), b.rng.uniform(0.75, 1.1))
        store = (x0, x0 + b.rng.uniform(14, 22), y1 - b.rng.uniform(8, 12), y1)
        b.building(store, _height(b, p.building_height, 0.1), "flat", force=True)
    b.road(lot, along_x=True)

    def clear_of_store(x, y, margin):
        return store is None or not (store[0] - margin < x < store[1] + margin and
                                     store[2] - margin - 1.0 < y < store[3] + margin)

    rows = np.arange(lot[2] + 3.5, lot[3] - 3.0, b.rng.uniform(6.5, 8.0))
    spots = [(x, y) for y in rows for x in np.arange(lot[0] + 2.5, lot[1] - 2.0, 2.6) if clear_of_store(x, y, 2.0)]
    for i in sorted(b.rng.permutation(len(spots))[:p.vehicle_count]):
        b.vehicle_at(spots[i][0], spots[i][1], along_x=False)
    for x in np.arange(lot[0] + 8, lot[1] - 4, b.rng.uniform(14, 20)):  # light masts between rows
        for y in rows[:-1:2] + 3.4:
            if clear_of_store(x, y, 1.0):
                b.pole_at(x, y, (1.0, 0.0))
    border = [(x, y) for x in np.linspace(2.5, ex - 2.5, 9) for y in (2.5, ey - 2.5)]
    b.trees(p.tree_count, kinds=("oak", "poplar"), near=[border[i] for i in b.rng.permutation(len(border))],
            clearance=1.0)


def _riverside(b: SceneBuilder, p: SceneParams) -> None:
    ex, ey = b.site.extent
    rw = b.rng.uniform(8, 14)
    ry = b.in_focus(0.0, b.rng.uniform(0.0, 0.6))[1]
    b.site.add_river((0.0, ex, ry - rw / 2, ry + rw / 2))
    w = b.rng.uniform(6, 8)
    road_y = ry + rw / 2 + b.rng.uniform(4, 7) + w / 2
    b.road((0.0, ex, road_y - w / 2, road_y + w / 2), along_x=True)
    _fill_block(b, (0.0, ex, road_y + w / 2 + 1.0, ey - 1.0), p, ("flat", "gabled", "hipped"),
                (0.5, 0.3, 0.2), (10, 16))
    bank = [(x, ry + rw / 2 + 2.0) for x in np.arange(3.0, ex - 3.0, b.rng.uniform(6, 10))]
    b.trees(p.tree_count, kinds=("oak", "poplar"), near=bank + [None] * p.tree_count, clearance=1.0)
    b.vehicles_on_roads(p.vehicle_count)
    b.poles_along_roads(spacing=b.rng.uniform(16, 24))
