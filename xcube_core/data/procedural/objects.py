"""Analytic scene objects painted into a `Canvas`: buildings and roofs, trees, bushes, vehicles, poles.

Every function takes a seeded ``numpy.random.Generator`` for its own variation, paints solids in
metres (+Z up, ``z0`` = the ground height under the object) and returns a small dict of facts that
the scene metadata and captions use.
"""

from __future__ import annotations

import numpy as np

from xcube_core.classes import CLASS_NAMES
from xcube_core.data.procedural.canvas import Canvas

GROUND, ROAD, BUILDING, ROOF, TREE, BUSH, VEHICLE, POLE, WATER = (
    CLASS_NAMES.index(n) for n in ("ground", "road", "building", "roof", "tree", "bush", "vehicle", "pole", "water"))

ROOF_TYPES = ("flat", "gabled", "hipped", "pyramid")
TREE_KINDS = ("oak", "conifer", "poplar")


def building(canvas: Canvas, rng: np.random.Generator, rect, z0: float, height: float,
             roof: str, tiers: int = 1, round_tower: bool = False) -> dict:
    """A building on footprint ``rect = (x0, x1, y0, y1)`` whose top is ``height`` above ``z0``.

    Pitched roofs take part of ``height``; towers (``tiers > 1``) step back as they rise. The body
    extends 1 m below ``z0`` so it stays anchored on sloped ground.
    """
    x0, x1, y0, y1 = rect
    h = canvas.h
    if roof not in ROOF_TYPES:
        raise ValueError(f"roof must be one of {ROOF_TYPES}, got {roof!r}")
    short = min(x1 - x0, y1 - y0)
    rise = 0.0 if roof == "flat" else min(0.45 * height, short * (0.35 if roof == "gabled" else 0.3))
    if roof == "pyramid":
        rise = min(0.45 * height, 0.5 * short)
    wall_top = z0 + height - rise
    if round_tower:
        cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, short / 2
        canvas.cylinder(cx, cy, r, z0 - 1.0, wall_top, BUILDING)
        canvas.cylinder(cx, cy, r, wall_top - h, wall_top, ROOF)
        return {"height": float(height), "roof": "flat", "footprint": float(np.pi * r * r)}
    bx0, bx1, by0, by1, base = x0, x1, y0, y1, z0 - 1.0
    tier_heights = np.sort(rng.uniform(0.45, 0.85, size=tiers - 1))[::-1] if tiers > 1 else []
    # tiers: each tier sets back by 10-20 % of the footprint from the one below
    for frac in list(tier_heights) + [None]:
        top = wall_top if frac is None else z0 + frac * (wall_top - z0)
        top = max(top, base + h)
        canvas.box(bx0, bx1, by0, by1, base, top, BUILDING)
        if frac is not None:
            canvas.box(bx0, bx1, by0, by1, top - h, top, ROOF)  # terrace at each setback
            sx, sy = rng.uniform(0.1, 0.2) * (bx1 - bx0), rng.uniform(0.1, 0.2) * (by1 - by0)
            bx0, bx1, by0, by1, base = bx0 + sx, bx1 - sx, by0 + sy, by1 - sy, top
    if roof == "flat":
        canvas.box(bx0, bx1, by0, by1, wall_top - h, wall_top, ROOF)
        if rng.random() < 0.5:  # rooftop plant room
            w, d = 0.3 * (bx1 - bx0), 0.3 * (by1 - by0)
            cx, cy = rng.uniform(bx0 + w, bx1 - w), rng.uniform(by0 + d, by1 - d)
            canvas.box(cx - w / 2, cx + w / 2, cy - d / 2, cy + d / 2, wall_top, wall_top + 2.0, ROOF)
    elif roof == "gabled":
        canvas.gable(bx0 - 0.3, bx1 + 0.3, by0 - 0.3, by1 + 0.3, wall_top, rise,
                     ridge_along_x=(bx1 - bx0) >= (by1 - by0), cls=ROOF)
    else:  # hipped / pyramid
        canvas.hip(bx0 - 0.3, bx1 + 0.3, by0 - 0.3, by1 + 0.3, wall_top, rise, ROOF)
    return {"height": float(height), "roof": roof, "footprint": float((x1 - x0) * (y1 - y0))}


def tree(canvas: Canvas, rng: np.random.Generator, x: float, y: float, z0: float, kind: str,
         scale: float = 1.0) -> dict:
    """A tree: a trunk and an oak (round), conifer (cone) or poplar (tall narrow) crown."""
    if kind not in TREE_KINDS:
        raise ValueError(f"kind must be one of {TREE_KINDS}, got {kind!r}")
    s = scale * rng.uniform(0.8, 1.25)
    trunk_r = 0.25 * s
    if kind == "oak":
        trunk_h, r = 2.5 * s, rng.uniform(2.5, 4.0) * s
        canvas.cylinder(x, y, trunk_r, z0 - 0.5, z0 + trunk_h + r * 0.5, TREE)
        canvas.ellipsoid(x, y, z0 + trunk_h + 0.8 * r, r, r * rng.uniform(0.85, 1.15), 0.85 * r, TREE)
        top = trunk_h + 1.65 * r
    elif kind == "conifer":
        trunk_h, r, ch = 1.5 * s, rng.uniform(1.5, 2.5) * s, rng.uniform(6.0, 11.0) * s
        canvas.cylinder(x, y, trunk_r, z0 - 0.5, z0 + trunk_h + 0.5, TREE)
        canvas.cone(x, y, r, z0 + trunk_h, z0 + trunk_h + ch, TREE)
        top = trunk_h + ch
    else:
        trunk_h, r, ch = 1.5 * s, rng.uniform(1.0, 1.6) * s, rng.uniform(7.0, 11.0) * s
        canvas.cylinder(x, y, trunk_r, z0 - 0.5, z0 + trunk_h + 0.5, TREE)
        canvas.ellipsoid(x, y, z0 + trunk_h + ch / 2, r, r, ch / 2, TREE)
        top = trunk_h + ch
    return {"kind": kind, "height": float(top), "radius": float(r)}


def bush(canvas: Canvas, rng: np.random.Generator, x: float, y: float, z0: float) -> dict:
    r = rng.uniform(0.6, 1.3)
    canvas.ellipsoid(x, y, z0 + 0.3 * r, r * rng.uniform(1.0, 1.6), r, 0.8 * r, BUSH)
    return {"radius": float(r)}


def vehicle(canvas: Canvas, rng: np.random.Generator, x: float, y: float, z0: float,
            along_x: bool, truck: bool = False) -> dict:
    """A car (about 4.4 x 1.8 x 1.5 m) or a truck (about 9 x 2.5 x 3.6 m) centred on (x, y)."""
    if truck:
        length, width, body, cab = rng.uniform(8.0, 11.0), 2.5, rng.uniform(2.8, 3.4), 2.2
    else:
        length, width, body, cab = rng.uniform(3.9, 4.8), rng.uniform(1.7, 1.9), 0.75, 0.55
    hl, hw = length / 2, width / 2

    def rect(a0, a1, b0, b1):  # (along, across) offsets -> world rect
        return (x + a0, x + a1, y + b0, y + b1) if along_x else (x + b0, x + b1, y + a0, y + a1)

    for sa in (-1, 1):  # wheels
        for sb in (-1, 1):
            a = sa * (hl - 0.8)
            r = rect(a - 0.35, a + 0.35, sb * hw - 0.25 * sb - 0.15, sb * hw - 0.25 * sb + 0.15)
            canvas.box(r[0], r[1], r[2], r[3], z0, z0 + 0.6, VEHICLE)
    r = rect(-hl, hl, -hw, hw)
    canvas.box(r[0], r[1], r[2], r[3], z0 + 0.35, z0 + 0.35 + body, VEHICLE)
    if truck:
        r = rect(hl, hl + 2.0, -hw, hw)  # cab in front of the box
        canvas.box(r[0], r[1], r[2], r[3], z0 + 0.35, z0 + 0.35 + cab, VEHICLE)
        top = 0.35 + body
    else:
        r = rect(-0.55 * hl, 0.35 * hl, -hw + 0.1, hw - 0.1)  # cabin
        canvas.box(r[0], r[1], r[2], r[3], z0 + 0.35 + body, z0 + 0.35 + body + cab, VEHICLE)
        top = 0.35 + body + cab
    return {"truck": bool(truck), "length": float(length + (2.0 if truck else 0.0)), "height": float(top)}


def pole(canvas: Canvas, rng: np.random.Generator, x: float, y: float, z0: float,
         arm_dir: tuple[float, float] = (1.0, 0.0)) -> dict:
    """A street light: a thin mast, an arm and a lamp head."""
    height = rng.uniform(5.5, 8.5)
    canvas.cylinder(x, y, 0.12, z0 - 0.5, z0 + height, POLE)
    ax, ay = arm_dir
    ex, ey = x + 1.5 * ax, y + 1.5 * ay
    canvas.box(min(x, ex) - 0.1, max(x, ex) + 0.1, min(y, ey) - 0.1, max(y, ey) + 0.1,
               z0 + height - 0.25, z0 + height, POLE)
    canvas.box(ex - 0.3, ex + 0.3, ey - 0.3, ey + 0.3, z0 + height - 0.5, z0 + height, POLE)
    return {"height": float(height)}
