"""Procedural outdoor scenes and single objects as aligned sparse voxel hierarchies.

``generate_scene(seed)`` is deterministic in its seed: same seed and config, same voxels, same caption.
Splits are disjoint seed ranges (`split_seed`). Units are metres, +Z up, ground at k = 0.

A scene is a window cut from a larger site (`SceneConfig.context` metres more on every side, the window
at a random offset), so streets, blocks and tree cover run across its borders as they would across
the border of a tile cut from a big scene; nothing is framed around the window's middle.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter

import numpy as np
import torch

from xcube_core.classes import CLASS_NAMES
from xcube_core.data.hierarchy import VoxelSample, build_hierarchy
from xcube_core.data.procedural import objects
from xcube_core.data.procedural.builder import Census, SceneBuilder
from xcube_core.data.procedural.canvas import Canvas
from xcube_core.data.procedural.names import OBJECT_KINDS, SPLITS
from xcube_core.data.procedural.captions import height_class, object_caption, scene_caption, tree_density
from xcube_core.data.procedural.site import GROUND_LEVEL, Site
from xcube_core.data.procedural.styles import REFERENCE_AREA_M2, layout, sample_params
from xcube_core.level import Level

_SPLIT_BASE = {"train": 0, "val": 10_000_000, "test": 20_000_000}
_OBJECT_EXTENT = {"house": 15.0, "tower": 36.0, "tree": 19.0, "car": 6.0, "truck": 15.0, "lamp": 10.5}


def split_seed(split: str, index: int) -> int:
    """The seed of sample ``index`` of ``split``; the splits use disjoint seed ranges of 10 million."""
    if split not in _SPLIT_BASE:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0 <= index < 10_000_000:
        raise ValueError(f"index must be in [0, 10_000_000), got {index}")
    return _SPLIT_BASE[split] + int(index)


@dataclasses.dataclass(frozen=True)
class SceneConfig:
    """Size of a procedural scene.

    Attributes:
        extent: (x, y) size in metres.
        height: z size in metres.
        voxel_size: finest voxel edge in metres.
        context: metres of site laid out around the window on each side; the window sits at a random
            offset at least `min(12, context)` metres from the site's edge. 0 = a site of exactly the
            window (streets and parked cars then keep off its border).
    """

    extent: tuple[float, float] = (64.0, 64.0)
    height: float = 32.0
    voxel_size: float = 0.25
    context: float = 32.0

    def __post_init__(self) -> None:
        if self.context < 0:
            raise ValueError(f"context must be >= 0 metres, got {self.context}")

    def window(self, seed: int) -> tuple[float, float, float, float]:
        """``(x0, x1, y0, y1)``: where the window of scene ``seed`` lies in its site (whole metres; at
        the origin when ``context`` is 0)."""
        keep = min(12.0, self.context)
        rng = np.random.default_rng([seed, 11])  # its own stream: the layout's draws stay as they were
        ox, oy = (float(np.floor(rng.uniform(keep, 2 * self.context - keep + 1e-9))) for _ in range(2))
        return ox, ox + self.extent[0], oy, oy + self.extent[1]

    def grid_shape(self, num_levels: int) -> tuple[int, int, int]:
        """Finest grid size in voxels, rounded up to a multiple of 2**(num_levels - 1)."""
        m = 2 ** (num_levels - 1)
        sizes = (self.extent[0], self.extent[1], self.height)
        return tuple(int(math.ceil(round(s / self.voxel_size, 6) / m) * m) for s in sizes)


def _finest_level(canvas: Canvas, num_levels: int, voxel_size: float, shift=(0, 0, 0)) -> Level:
    ijk, normals, classes = canvas.surface()
    ijk = ijk + np.asarray(shift, dtype=np.int32)
    return Level(index=num_levels - 1, ijk=torch.from_numpy(ijk), voxel_size=voxel_size,
                 normals=torch.from_numpy(normals), semantics=torch.from_numpy(classes), class_names=CLASS_NAMES)


def _in_window(census: Census, window) -> Census:
    """The census of the objects whose centre lies in ``window = (x0, x1, y0, y1)``."""
    x0, x1, y0, y1 = window

    def inside(rows: list[dict]) -> list[dict]:
        return [r for r in rows if x0 <= r["xy"][0] < x1 and y0 <= r["xy"][1] < y1]

    return Census(**{f.name: inside(getattr(census, f.name)) for f in dataclasses.fields(Census)})


def _census_facts(builder: SceneBuilder, semantics: torch.Tensor, params, window) -> dict:
    c = _in_window(builder.census, window)
    heights = [b["height"] for b in c.buildings]
    counts = torch.bincount(semantics, minlength=len(CLASS_NAMES)).double()
    frac = (counts / counts.sum().clamp(min=1)).tolist()
    roofs = Counter(b["roof"] for b in c.buildings)
    trees = Counter(t["kind"] for t in c.trees)
    facts = {
        "style": params.style,
        "building_count": len(c.buildings),
        "mean_building_height": float(np.mean(heights)) if heights else 0.0,
        "max_building_height": float(np.max(heights)) if heights else 0.0,
        "dominant_roof": roofs.most_common(1)[0][0] if roofs else None,
        "roof_types": sorted(roofs),
        "tree_count": len(c.trees),
        "dominant_tree": trees.most_common(1)[0][0] if trees else None,
        "bush_count": len(c.bushes),
        "vehicle_count": len(c.vehicles),
        "truck_count": sum(v["truck"] for v in c.vehicles),
        "pole_count": len(c.poles),
        "has_water": builder.site.water_within(window),
        "water_kind": "river" if params.style in ("riverside", "industrial") else "pond",
        "tree_fraction": frac[CLASS_NAMES.index("tree")] + frac[CLASS_NAMES.index("bush")],
        "building_fraction": frac[CLASS_NAMES.index("building")] + frac[CLASS_NAMES.index("roof")],
        "water_fraction": frac[CLASS_NAMES.index("water")],
        "road_fraction": frac[CLASS_NAMES.index("road")],
        "class_fractions": dict(zip(CLASS_NAMES, frac)),
    }
    facts["height_class"] = height_class(facts["mean_building_height"]) if heights else "none"
    facts["tree_density"] = tree_density(facts["tree_count"])
    return facts


def generate_scene(seed: int, config: SceneConfig = SceneConfig(), num_levels: int = 3,
                   style: str | None = None, **overrides) -> VoxelSample:
    """One procedural outdoor scene.

    Args:
        seed: the only source of randomness (geometry and caption wording).
        config: extent and voxel size.
        num_levels: hierarchy depth L (finest = ``config.voxel_size``).
        style: a style from `xcube_core.data.procedural.styles.STYLES`, or None for a random one.
        **overrides: fixed `SceneParams` values, e.g. ``building_height=25.0, has_water=True``.

    Returns:
        A `VoxelSample` whose metadata holds the parameters, the measured census (mean building
        height, tree count and fraction, has_water, ...), ``grid_shape`` and ``seed``.
    """
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    params = sample_params(rng, style, **overrides)
    shape = config.grid_shape(num_levels)
    site_extent = (config.extent[0] + 2 * config.context, config.extent[1] + 2 * config.context)
    window = config.window(seed)
    canvas = Canvas(shape, config.voxel_size, origin=(window[0], window[2]))
    site = Site(site_extent, rng, hilliness=params.hilliness)
    # counts follow the site's area, so a 640 m scene holds as many trees per hectare as a 64 m one
    area_scale = site_extent[0] * site_extent[1] / REFERENCE_AREA_M2
    builder = SceneBuilder(canvas, site, rng, max_height=config.height - GROUND_LEVEL - 3.0 - params.hilliness,
                           focus=window, area_scale=area_scale)
    layout(builder, params)
    site.paint_ground(canvas)
    finest = _finest_level(canvas, num_levels, config.voxel_size)
    facts = _census_facts(builder, finest.semantics, params, window)
    caption = scene_caption(facts, np.random.default_rng([seed, 7]))
    metadata = {"kind": "procedural_scene", "seed": int(seed), "params": dataclasses.asdict(params),
                **facts, "grid_shape": list(shape), "extent_m": [*config.extent, config.height],
                "site_window_m": list(window), "site_extent_m": list(site_extent),
                "normalization": {"mode": "metric", "voxel_size": config.voxel_size}}
    levels = build_hierarchy(finest, num_levels)
    metadata["seconds"] = time.perf_counter() - start
    return VoxelSample(levels=levels, caption=caption, metadata=metadata)


def _paint_object(canvas: Canvas, rng: np.random.Generator, kind: str, extent: float) -> dict:
    c = extent / 2
    z0 = 1.5  # buildings reach 1 m and trunks/poles 0.5 m below their base: keep them off the floor
    if kind == "house":
        w, d = rng.uniform(7, 11, size=2)
        roof = str(rng.choice(objects.ROOF_TYPES, p=(0.15, 0.5, 0.25, 0.1)))
        return objects.building(canvas, rng, (c - w / 2, c + w / 2, c - d / 2, c + d / 2), z0,
                                rng.uniform(5, 10), roof)
    if kind == "tower":
        w = rng.uniform(9, 14)
        roof = str(rng.choice(("flat", "pyramid"), p=(0.7, 0.3)))
        return objects.building(canvas, rng, (c - w / 2, c + w / 2, c - w / 2, c + w / 2), z0,
                                rng.uniform(20, 32), roof, tiers=int(rng.integers(1, 4)))
    if kind == "tree":
        facts = objects.tree(canvas, rng, c, c, z0, str(rng.choice(objects.TREE_KINDS)))
        return {**facts, "tree_kind": facts["kind"]}
    if kind in ("car", "truck"):
        x = c - (1.0 if kind == "truck" else 0.0)
        return objects.vehicle(canvas, rng, x, c, z0, along_x=True, truck=kind == "truck")
    return objects.pole(canvas, rng, c - 0.75, c, z0, (1.0, 0.0))


def generate_object(seed: int, resolution: int = 128, num_levels: int = 3, kind: str | None = None) -> VoxelSample:
    """One procedural object (house, tower, tree, car, truck or lamp) centred in the unit box.

    The object is built in metres and scaled so that its nominal extent spans the unit box; the
    finest voxel size is ``1 / resolution`` and the scale is recorded in ``metadata['normalization']``.
    """
    if resolution % 2 ** (num_levels - 1):
        raise ValueError(f"resolution must be a multiple of 2**(num_levels-1) = {2 ** (num_levels - 1)}, "
                         f"got {resolution}")
    rng = np.random.default_rng(seed)
    kind = kind or str(rng.choice(OBJECT_KINDS))
    if kind not in OBJECT_KINDS:
        raise ValueError(f"kind must be one of {OBJECT_KINDS}, got {kind!r}")
    extent = _OBJECT_EXTENT[kind]
    canvas = Canvas((resolution,) * 3, extent / resolution)
    facts = _paint_object(canvas, rng, kind, extent)
    ijk, _, _ = canvas.surface()
    if len(ijk) == 0:
        raise RuntimeError(f"object {kind!r} with seed {seed} painted no voxels")
    lo, hi = ijk.min(axis=0), ijk.max(axis=0)
    shift = (resolution - 1 - hi - lo) // 2  # centre the bounding box in the grid
    finest = _finest_level(canvas, num_levels, 1.0 / resolution, shift)
    facts = {"kind": kind, **{k: v for k, v in facts.items() if k != "kind"}}
    caption = object_caption(facts, np.random.default_rng([seed, 7]))
    metadata = {"kind": "procedural_object", "object": kind, "seed": int(seed), **facts,
                "grid_shape": [resolution] * 3,
                "normalization": {"mode": "unit_box", "scale": 1.0 / extent, "extent_m": extent}}
    return VoxelSample(levels=build_hierarchy(finest, num_levels), caption=caption, metadata=metadata)
