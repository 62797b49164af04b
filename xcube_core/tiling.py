"""Scenes of any X/Y extent from overlapping tiles of the model's native size (outpainting).

Level 0 is made tile by tile in raster order (rows of +X, rows stacked along +Y). Each tile is a
window of the model's native size, so its position features stay in their trained range; the columns
that earlier tiles already made are *known* and held by `xcube_core.inpaint` (RePaint replacement,
at the latent those tiles made there: `LatentCanvas`), so the tile continues what its neighbours hold. A tile keeps the columns it
*owns*: the part of its box between the middles of its overlaps with its neighbours (so no tile keeps
the columns at the edge of its own box, where a model trained on single tiles thins out); the columns
it holds are those the tiles before it own.

Finer levels run box by box over a coarser partition of the scene (boxes of ``fine_tile_m``, 256 m by
default, so that halos cost less): each window is the box plus a halo of ``halo_columns`` (at least the
U-Net's receptive field), holding what earlier boxes made at that level; only the box's columns are
decoded (with a small margin) and kept. Memory is bounded by one window plus the coarser level and one
row of boxes, not by the scene's finest level.

Each finished tile-level is yielded as a `Level` of the voxels the tile owns, in scene coordinates;
the scene is the union of its tiles (`merge_tiles`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from typing import Iterator, Sequence

import torch

from xcube_core.errors import InvalidInputError
from xcube_core.inpaint import (Box, LatentCanvas, SampleOptions, check_resample, concat, crop, empty_level,
                               latent_cells_per_column, level_factor, sample_window)
from xcube_core.level import Level

logger = logging.getLogger(__name__)

DEFAULT_OVERLAP = 0.25     # of a tile: the band neighbouring level-0 tiles share
FINE_TILE_M = 256.0        # side of the boxes finer levels are made in (plus a halo each side)
TILE_KEYS = ("tile", "tile_index", "region_m")  # metadata of one tile-level, not of the scene
MAX_EXTENT_M = 4096.0      # per axis; a 4 km x 4 km scene at 0.25 m is ~16k x 16k finest columns


def receptive_radius(cfg) -> int:
    """Reach of a `SparseUNet`'s convolutions, in latent voxels (its self-attention is global within
    the window and not counted): conv_in, two 3x3x3 convs per res block at stride 2**s, the k=2
    down/up-sampling convs, the two middle res blocks and the output conv."""
    n, nrb = len(cfg.channel_mult), cfg.num_res_blocks
    stages = sum(2 * nrb * 2 ** s for s in range(n))
    resampling = sum(2 ** s for s in range(n - 1))
    return 1 + 2 * stages + 2 * resampling + 4 * 2 ** (n - 1) + 1


def halo_columns(pipe, i: int) -> int:
    """Level-0 columns of context around a finer level's tile: the U-Net's receptive field."""
    latent_voxel = pipe.voxel_sizes[i - 1] if i > 0 else pipe.voxel_sizes[0] * 2 ** pipe.levels[0].vae.config.num_down
    return math.ceil(receptive_radius(pipe.levels[i].unet.config) * latent_voxel / pipe.voxel_sizes[0] - 1e-9)


@dataclasses.dataclass(frozen=True)
class TilePlan:
    """Where the tiles of a scene lie, in level-0 columns.

    Attributes:
        extent: scene size (X, Y) in columns.
        tile: native tile size (X, Y) in columns.
        xs, ys: tile origins along X and Y (increasing; the last tile ends at the extent, or starts at
            0 when the scene is smaller than one tile).
        cell: the coarse latent cell in columns (ownership boundaries fall on cells).
    """

    extent: tuple[int, int]
    tile: tuple[int, int]
    xs: tuple[int, ...]
    ys: tuple[int, ...]
    cell: int = 1

    def tiles(self) -> list[tuple[int, int]]:
        return [(a, b) for b in range(len(self.ys)) for a in range(len(self.xs))]

    def box(self, a: int, b: int) -> Box:
        return Box(self.xs[a], self.ys[b], self.xs[a] + self.tile[0], self.ys[b] + self.tile[1])

    def _cut(self, starts, k: int, size: int, cell: int) -> int:
        """Where tile ``k - 1``'s columns end and tile ``k``'s begin: the middle of their overlap (the
        nearest cell boundary, ties up), so that no tile keeps the columns at the edge of its own box."""
        return cut_between(starts[k - 1], starts[k], size, cell)

    def owned(self, a: int, b: int) -> Box:
        """The tile's share of the scene: between the middles of its overlaps with its neighbours."""
        (tx, ty), (xs, ys), c = self.tile, (self.xs, self.ys), self.cell
        x0 = 0 if a == 0 else self._cut(xs, a, tx, c)
        y0 = 0 if b == 0 else self._cut(ys, b, ty, c)
        x1 = self.extent[0] if a + 1 == len(xs) else self._cut(xs, a + 1, tx, c)
        y1 = self.extent[1] if b + 1 == len(ys) else self._cut(ys, b + 1, ty, c)
        return Box(x0, y0, x1, y1)

    def known(self, a: int, b: int, window: Box) -> torch.Tensor:
        """(W, H) bool over ``window``: columns owned by tiles before (a, b) in raster order."""
        xs, ys = window.columns()
        own = self.owned(a, b)
        before = (ys < own.y0) | ((xs < own.x0) & (ys < own.y1))
        return before & (xs >= 0) & (ys >= 0) & (xs < self.extent[0]) & (ys < self.extent[1])


def cut_between(start_a: int, start_b: int, size: int, cell: int) -> int:
    """The middle of the overlap of windows starting at ``start_a`` < ``start_b``, on a cell boundary."""
    mid = (start_a + start_b + size) // 2
    return (mid + cell // 2) // cell * cell


def _starts(extent: int, tile: int, stride: int) -> tuple[int, ...]:
    if extent <= tile:
        return (0,)
    n = math.ceil((extent - tile) / stride) + 1
    return tuple(min(k * stride, extent - tile) for k in range(n))


def extent_columns(extent_m: Sequence[float], voxel_size: float, cell: int) -> tuple[int, int]:
    """Metres (X, Y) to level-0 columns, rounded up to whole latent cells. InvalidInputError when bad."""
    if len(extent_m) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in extent_m):
        raise InvalidInputError(f"extent is two finite numbers (X, Y) in metres, got {list(extent_m)!r}")
    if not all(0 < v <= MAX_EXTENT_M for v in extent_m):
        raise InvalidInputError(f"extent {list(extent_m)} m: each side must be in (0, {MAX_EXTENT_M:g}] m")
    return tuple(math.ceil(v / (voxel_size * cell) - 1e-9) * cell for v in extent_m)


def plan_tiles(extent: tuple[int, int], tile: Sequence[int], overlap: float, cell: int) -> TilePlan:
    """Tiles of ``tile`` columns sharing ``overlap`` columns (rounded up to whole cells) with neighbours."""
    overlap = math.ceil(overlap / cell - 1e-9) * cell
    if not 0 <= overlap <= min(tile[:2]) // 2:
        raise InvalidInputError(f"overlap must be in 0..{min(tile[:2]) // 2} coarse voxels (half a tile), got {overlap}")
    return TilePlan(tuple(extent), (int(tile[0]), int(tile[1])), _starts(extent[0], tile[0], tile[0] - overlap),
                    _starts(extent[1], tile[1], tile[1] - overlap), cell)


def tile_seed(seed: int, level: int, a: int, b: int) -> int:
    """The random seed of one tile-level: fixed by (seed, level, tile), independent of the order of work."""
    return int.from_bytes(hashlib.sha256(f"{int(seed)}/{level}/{a}/{b}".encode()).digest()[:8], "little") >> 1


def _nearby(plan: TilePlan, canvas: dict, box: Box, f: int) -> Level | None:
    parts = [crop(lv, box, f) for (a, b), lv in canvas.items() if plan.owned(a, b).intersection(box)]
    return concat(parts, parts[0]) if parts else None


def fine_columns(pipe, fine_tile_m: float | None, cell: int) -> int:
    """Side of a finer-level box in level-0 columns (whole latent cells, at least one native tile)."""
    if fine_tile_m is None:
        fine_tile_m = FINE_TILE_M
    if isinstance(fine_tile_m, bool) or not (isinstance(fine_tile_m, (int, float)) and math.isfinite(fine_tile_m)) \
            or fine_tile_m <= 0:
        raise InvalidInputError(f"fine tile must be a positive number of metres, got {fine_tile_m!r}")
    cols = math.ceil(float(fine_tile_m) / pipe.voxel_sizes[0] / cell - 1e-9) * cell
    return max(cols, min(pipe.coarse_shape[:2]))


def tile_overlap(pipe, overlap_m: float | None) -> float:
    """Level-0 overlap of neighbouring tiles in columns: ``overlap_m`` metres, or the default."""
    if overlap_m is None:
        return pipe.coarse_shape[0] * DEFAULT_OVERLAP
    if isinstance(overlap_m, bool) or not (isinstance(overlap_m, (int, float)) and math.isfinite(overlap_m)):
        raise InvalidInputError(f"overlap must be a number of metres, got {overlap_m!r}")
    return float(overlap_m) / pipe.voxel_sizes[0]


@torch.no_grad()
def generate_extent(pipe, prompt: str, extent_m: Sequence[float], *, seed: int = 0, steps: int = 25,
                    guidance: float = 3.0, num_levels: int | None = None, overlap_m: float | None = None,
                    halo: int | None = None, fine_tile_m: float | None = None, resample: int = 1,
                    eta: float = 0.0, class_prior: float | None = None, callback=None, cancel=None,
                    hold: bool = True, layout: Level | None = None) -> Iterator[Level]:
    """Generate a scene of ``extent_m`` = (X, Y) metres tile by tile; yield each tile-level.

    Args:
        extent_m: scene size in metres, each in (0, MAX_EXTENT_M]; rounded up to whole latent cells.
        overlap_m: band shared by neighbouring tiles at level 0 (conditioning context); default a
            quarter of the tile (16 m for the shipped 64 m tiles), rounded up to whole latent cells.
        halo: level-0 columns of context around a tile at finer levels (default `halo_columns`).
        fine_tile_m: side of the boxes finer levels are made in (default FINE_TILE_M, 256 m): larger
            boxes spend less on halos (a 256 m box with the shipped level 1's 52 m halo computes
            2x its own area, a 48 m one 10x) and more memory (bounded by one box and its halo:
            5.1 GB peak for a 360 m window of the shipped model on CPU).
        resample: RePaint resampling rounds per step (1 = replacement only).
        class_prior: as in `XCubePipeline.generate`.
        hold: False makes tiles ignore what their neighbours hold (the baseline of the seam score).
        layout: the scene's coarsest level, given (as ``XCubePipeline.generate``'s ``condition``, in
            scene voxels from column 0, e.g. a held-out scene's true level 0): its tiles are cut from it
            and only the finer levels are generated.
    Yields:
        `Level` holding the voxels one tile owns at one level (scene coordinates); metadata has
        ``tile`` [a, b], ``tile_index``, ``num_tiles``, ``region_m`` and ``extent_m``. All tiles of level
        0 come first, then all of level 1, ...
    """
    n = pipe.validate(prompt, steps, guidance, num_levels, None, class_prior)
    check_resample(resample)
    if halo is not None and (not isinstance(halo, int) or halo < 0):
        raise InvalidInputError(f"halo must be a non-negative integer (coarse voxels), got {halo!r}")
    v0 = pipe.voxel_sizes[0]
    cell = 2 ** pipe.levels[0].vae.config.num_down
    extent = extent_columns(extent_m, v0, cell)
    plan = plan_tiles(extent, pipe.coarse_shape, tile_overlap(pipe, overlap_m), cell)
    fine = plan_tiles(extent, (fine_columns(pipe, fine_tile_m, cell),) * 2, 0, cell)
    given = None if layout is None else _scene_layout(pipe, layout, extent)
    text = pipe.text_encoder.encode([prompt, ""])
    meta = {"prompt": prompt, "seed": int(seed), "model_id": pipe.model_id, "steps": steps,
            "guidance": None if guidance is None else float(guidance),
            "extent_m": [extent[0] * v0, extent[1] * v0], "extent_columns": list(extent),
            "tile_columns": list(plan.tile), "overlap_columns": plan.tile[0] - (plan.xs[1] - plan.xs[0])
            if len(plan.xs) > 1 else 0, "fine_tile_columns": fine.tile[0]}
    canvases: list[tuple[TilePlan, dict]] = []
    for i in range(n):
        f = level_factor(pipe.voxel_sizes, i)
        h = 0 if i == 0 else (halo_columns(pipe, i) if halo is None else halo)
        p = plan if i == 0 else fine  # level 0 in native windows; finer levels in large boxes + halo
        tiles = p.tiles()
        canvas: dict = {}
        latents = LatentCanvas() if hold else None  # what later windows hold, as this level's windows made it
        for k, (a, b) in enumerate(tiles):
            t0 = time.perf_counter()
            own = p.owned(a, b)
            window = p.box(a, b) if i == 0 else own.expanded(h).intersection(Box(0, 0, *extent))
            prev = None if i == 0 else (_nearby(*canvases[i - 1], window, level_factor(pipe.voxel_sizes, i - 1))
                                        or empty_level(i - 1, pipe.voxel_sizes[i - 1], pipe.class_names))
            gen = torch.Generator(device="cpu").manual_seed(tile_seed(seed, i, a, b))
            opts = SampleOptions(steps, guidance, eta, resample, callback, cancel, class_prior)
            known = p.known(a, b, window) if hold else torch.zeros(window.width, window.height, dtype=torch.bool)
            if i == 0 and given is not None:
                level = crop(given, own, 1)
            else:
                level = sample_window(pipe, i, window, own, known, prev,
                                      _nearby(p, canvas, window, f), text, gen, opts, latents)
            if latents is not None:  # windows come in raster order: none reaches below this one again
                latents.forget_below(math.floor(window.y0 * latent_cells_per_column(pipe, i)))
            level.seconds = time.perf_counter() - t0
            level.metadata = {**meta, "level": i, "tile": [a, b], "tile_index": k, "num_tiles": len(tiles),
                              "region_m": [own.x0 * v0, own.y0 * v0, own.x1 * v0, own.y1 * v0]}
            logger.info("level %d tile %d/%d (%d, %d): %d voxels in %.2f s", i, k + 1, len(tiles), a, b,
                        level.num_voxels, level.seconds)
            canvas[(a, b)] = level
            if i == n - 1:  # the finest level: drop rows no later window reaches
                canvas = {key: lv for key, lv in canvas.items() if p.owned(*key).y1 + h > own.y0}
            yield level
        canvases.append((p, canvas))
        if i > 0:
            canvases[i - 1] = (canvases[i - 1][0], {})


def _scene_layout(pipe, layout: Level, extent: tuple[int, int]) -> Level:
    """A given coarsest level as the scene's level 0 (InvalidInputError when it does not fit)."""
    from xcube_core.pipeline import _condition_level, check_condition

    check_condition(layout, (extent[0], extent[1], pipe.coarse_shape[2]), pipe.voxel_sizes[0])
    return _condition_level(layout, pipe.class_names)


def merge_tiles(tiles: Sequence[Level]) -> list[Level]:
    """The scene's levels (coarsest first) from yielded tile-levels."""
    by_level: dict[int, list[Level]] = {}
    for t in tiles:
        by_level.setdefault(t.index, []).append(t)
    out = []
    for i in sorted(by_level):
        parts = by_level[i]
        lv = concat(parts, parts[0])
        lv.metadata = {k: v for k, v in parts[0].metadata.items() if k not in TILE_KEYS}
        lv.seconds = sum(p.seconds for p in parts)
        out.append(lv)
    return out
