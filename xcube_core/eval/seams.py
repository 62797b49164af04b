"""Seam score of a tiled or edited scene: statistics in bands across borders vs bands inside.

For each border line (an X or a Y position, in level-0 columns) a *border band* holds the columns
within ``half`` columns of it; *interior bands* of the same width sit on the centre lines of the
regions the borders separate. Over each set of bands, per level:

* **occupancy**: voxels per column; ratio = min / max of border and interior (1 = equal density);
* **classes**: the class histogram; ratio = histogram intersection sum(min(p, q)) (1 = same mix);
* **continuity**: the share of surface voxels whose 26-neighbourhood continues across the line's
  axis (an active neighbour at -1 *and* at +1 along it); ratio = border / interior.

A seamless scene scores about 1 on each (the issue's target is >= 0.9).
"""

from __future__ import annotations

from typing import Sequence

import torch

from xcube_core.eval.pointclouds import _contains, surface_voxel_mask, voxel_keys
from xcube_core.inpaint import select
from xcube_core.level import Level


def _continues(ijk: torch.Tensor, axis: int) -> torch.Tensor:
    """(N,) bool: an active 26-neighbour at -1 and at +1 along ``axis``."""
    lo = ijk.min(0).values - 2
    dims = ijk.max(0).values - lo + 3
    keys = torch.sort(voxel_keys(ijk, lo, dims)).values
    others = [a for a in range(3) if a != axis]
    sides = []
    for sign in (-1, 1):
        hit = torch.zeros(len(ijk), dtype=torch.bool)
        for d1 in (-1, 0, 1):
            for d2 in (-1, 0, 1):
                nb = ijk.clone()
                nb[:, axis] += sign
                nb[:, others[0]] += d1
                nb[:, others[1]] += d2
                hit |= _contains(keys, voxel_keys(nb, lo, dims))
        sides.append(hit)
    return sides[0] & sides[1]


def _band_stats(level: Level, cols: torch.Tensor, in_band: torch.Tensor, n_columns: int, axis: int,
                num_classes: int) -> dict:
    surface = surface_voxel_mask(level.ijk) & in_band
    cont = _continues(level.ijk.long(), axis)
    sem = level.semantics if level.semantics is not None else torch.zeros(level.num_voxels, dtype=torch.long)
    hist = torch.bincount(sem[in_band].clamp(min=0).long(), minlength=num_classes).float()
    return {"occupancy": int(in_band.sum()) / max(1, n_columns),
            "classes": hist / hist.sum().clamp(min=1),
            "continuity": float(cont[surface].float().mean()) if bool(surface.any()) else 0.0}


def seam_scores(level: Level, borders: Sequence[tuple[int, int]], interiors: Sequence[tuple[int, int]],
                extent: tuple[int, int], half: int = 1) -> dict:
    """Border vs interior statistics of one level.

    Args:
        level: the whole level (scene coordinates).
        borders: ``(axis, position)`` of each border line in level-0 columns (axis 0: a line x = position).
        interiors: ``(axis, position)`` of the interior lines to compare with.
        extent: scene size (X, Y) in level-0 columns.
        half: half the band width in level-0 columns.
    Returns:
        ``{"border": {...}, "interior": {...}, "ratio": {"occupancy", "classes", "continuity"}}``.
    """
    f = round(level.voxel_size ** -1 * _column_size(level, extent))
    cols = torch.div(level.ijk[:, :2].long(), f, rounding_mode="floor")
    out = {}
    for name, lines in (("border", borders), ("interior", interiors)):
        per_axis = []
        for axis in (0, 1):
            pos = [p for a, p in lines if a == axis]
            if not pos:
                continue
            d = (cols[:, axis][:, None] - torch.tensor(pos)[None, :] + 0.5).abs()
            in_band = (d < half).any(dim=1)
            n_columns = len(pos) * 2 * half * extent[1 - axis]
            per_axis.append((_band_stats(level, cols, in_band, n_columns, axis, len(level.class_names)),
                             int(in_band.sum())))
        out[name] = _combine(per_axis)
    b, i = out["border"], out["interior"]
    out["ratio"] = {"occupancy": min(b["occupancy"], i["occupancy"]) / max(b["occupancy"], i["occupancy"], 1e-9),
                    "classes": float(torch.minimum(b["classes"], i["classes"]).sum()),
                    "continuity": b["continuity"] / max(i["continuity"], 1e-9)}
    for part in ("border", "interior"):
        out[part]["classes"] = [round(float(v), 4) for v in out[part]["classes"]]
    return out


def pooled_seam_scores(levels: Sequence[Level], borders: Sequence[tuple[int, int]],
                       interiors: Sequence[tuple[int, int]], extent: tuple[int, int], half: int = 1) -> dict:
    """`seam_scores` of several scenes of one tile plan taken together: their bands' voxels, columns,
    class histograms and surface voxels are pooled before the ratios are taken.

    One scene's ratio is noisy and, being min / max, biased low: a scene without any seam scores under
    1 whenever its border bands happen to hold more or less than its interior bands (a downtown block
    is as wide as a band), so a seam shows as a ratio that stays low when scenes are pooled. The scenes
    are stacked along Y, two columns apart so that none is another's neighbour.

    Args:
        levels: the same level of each scene (scene coordinates, metadata as for `seam_scores`).
        borders, interiors, extent, half: as in `seam_scores`, for one scene.
    Returns:
        as `seam_scores`.
    """
    from xcube_core.inpaint import concat, translated

    if not levels:
        raise ValueError("pooled_seam_scores needs at least one level")
    if len(levels) == 1:
        return seam_scores(levels[0], borders, interiors, extent, half)
    f = round(levels[0].voxel_size ** -1 * _column_size(levels[0], extent))
    step = extent[1] + 2
    stacked = concat([translated(lv, (0, k * step), f) for k, lv in enumerate(levels)], levels[0])

    def lines(positions):  # X lines already span every scene; Y lines repeat in each
        xs = [(a, p) for a, p in positions if a == 0]
        return xs + [(1, p + k * step) for k in range(len(levels)) for a, p in positions if a == 1]

    return seam_scores(stacked, lines(borders), lines(interiors), (extent[0], extent[1] * len(levels)), half)


def _combine(parts) -> dict:
    """Voxel-weighted mean of the per-axis statistics."""
    total = sum(n for _, n in parts) or 1
    return {"occupancy": sum(s["occupancy"] for s, _ in parts) / max(1, len(parts)),
            "classes": sum(s["classes"] * n for s, n in parts) / total,
            "continuity": sum(s["continuity"] * n for s, n in parts) / total}


def _column_size(level: Level, extent) -> float:
    """Level-0 column size in metres, from the level's metadata (``extent_m`` / ``extent_columns``)."""
    meta = level.metadata
    if meta.get("extent_m") and meta.get("extent_columns"):
        return float(meta["extent_m"][0]) / float(meta["extent_columns"][0])
    raise ValueError("the level's metadata has no extent_m/extent_columns; pass a level made by generate_extent")


def tile_lines(plan) -> tuple[list, list]:
    """Border lines (where tiles' owned regions meet) and interior lines of a `TilePlan`."""
    xs = sorted({plan.owned(a, 0).x0 for a in range(len(plan.xs))} - {0})
    ys = sorted({plan.owned(0, b).y0 for b in range(len(plan.ys))} - {0})
    # interior lines at a quarter, half and three quarters of each tile's share (one position alone
    # would mirror where the model puts things inside a tile, e.g. a road through the middle)
    cx = sorted({o.x0 + (o.x1 - o.x0) * q // 4 for o in (plan.owned(a, 0) for a in range(len(plan.xs))) for q in (1, 2, 3)})
    cy = sorted({o.y0 + (o.y1 - o.y0) * q // 4 for o in (plan.owned(0, b) for b in range(len(plan.ys))) for q in (1, 2, 3)})
    return [(0, x) for x in xs] + [(1, y) for y in ys], [(0, x) for x in cx] + [(1, y) for y in cy]


def box_seam_scores(level: Level, box, extent: tuple[int, int], half: int = 1, copies: int = 1) -> dict:
    """Seam score of a region edit: bands across the edges of ``box`` against bands inside it and
    beside it.

    Each axis is scored over the span of the box along the other axis only (the edges x = x0 and
    x = x1 over the rows y0..y1, and likewise for y), so the border bands hold nothing but where new
    voxels meet old ones. Interior lines sit at 1/4, 1/2 and 3/4 of the box and half-way across the
    old scene on each side of it. Statistics pool over ``copies`` scenes of the same ``extent``
    stacked along Y (scene k moved by k * extent[1] columns), each edited in the same ``box``: one
    scene's bands hold too few voxels for a stable class histogram.

    Args:
        level: the edited level (scene coordinates; metadata with ``extent_m`` and ``extent_columns``
            of one scene).
        box: the edited `xcube_core.inpaint.Box` in level-0 columns (of each scene).
        extent: one scene's size (X, Y) in level-0 columns.
        half: half the band width in level-0 columns.
        copies: scenes stacked along Y in ``level``.
    Returns:
        ``{"x": ratios, "y": ratios, "ratio": their mean}``, ratios as in `seam_scores`; an axis whose
        box edges both lie on the scene's border is left out.
    """
    f = round(level.voxel_size ** -1 * _column_size(level, extent))
    cols = torch.div(level.ijk[:, :2].long(), f, rounding_mode="floor")
    out = {}
    for axis, name in ((0, "x"), (1, "y")):
        lo, hi = (box.x0, box.x1) if axis == 0 else (box.y0, box.y1)
        olo, ohi = (box.y0, box.y1) if axis == 0 else (box.x0, box.x1)
        borders = [p for p in (lo, hi) if half <= p <= extent[axis] - half]
        if not borders:
            continue
        interiors = [lo + (hi - lo) * q // 4 for q in (1, 2, 3)]
        interiors += [p for p in (lo // 2, (hi + extent[axis]) // 2) if half <= p <= extent[axis] - half
                      and not lo <= p < hi]
        other = cols[:, 1 - axis]
        if axis == 0:  # the box's rows in every copy
            other = other % extent[1]
            shifts, span = [0], (extent[0], (ohi - olo) * copies)
        else:  # the lines of every copy, over the box's columns
            shifts, span = [k * extent[1] for k in range(copies)], (ohi - olo, extent[1])
        keep = (other >= olo) & (other < ohi)

        def lines(positions, axis=axis, shifts=shifts):  # every copy's lines
            return [(axis, p + d) for d in shifts for p in positions]

        out[name] = seam_scores(select(level, keep), lines(borders), lines(interiors), span, half)["ratio"]
    if not out:
        raise ValueError(f"box {box} has no edge inside the scene of {extent} columns")
    out["ratio"] = {k: sum(r[k] for r in out.values()) / len(out) for k in ("occupancy", "classes", "continuity")}
    return out
