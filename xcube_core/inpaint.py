"""Regenerate part of a level while holding the rest fixed: known-latent replacement (RePaint), and
known-latent inputs for a U-Net trained with them.

One mechanism serves outpainting (`xcube_core.tiling`) and inpainting (`edit_region`):

* a *window* (an X/Y box of level-0 columns, full height) is sampled with one level's U-Net;
* latent cells whose columns are all *known* are replaced before every denoising step by the known
  latent noised to that step, ``x_t[known] = sqrt(a_t) x0 + sqrt(1 - a_t) eps`` (RePaint, Lugmayr et
  al. 2022, eq. 8), optionally with ``resample`` rounds per step (their Alg. 1: denoise, go back one
  step with fresh noise, denoise again), and set to the known latent at the end;
* a U-Net trained with ``known_inputs`` (`xcube_core.train.known_masks`) also receives the known
  latent and its mask as input channels at every step, so it can shape what it makes around them
  instead of only seeing them in ``x_t``;
* the known latent is, where a window sampled earlier in the same request made those cells, that
  window's final latent (`LatentCanvas`); elsewhere (scenes loaded from disk) the posterior mean of
  the level's VAE encoder on what exists, times the level's latent scale. Re-encoding a strip of
  decoded voxels is the weaker source: the encoder sees nothing beside the strip and encodes an
  edge there, and tiles held to it came out about 11 % sparser than single tiles;
* the new voxels are kept only inside the *region*; everything else is copied from what exists, so
  voxels outside the region stay bit-identical at every level.

Columns: a level-``i`` voxel ``(x, y, z)`` lies in level-0 column ``(x // f_i, y // f_i)`` with
``f_i = voxel_size_0 / voxel_size_i``. Boxes are half-open ``[x0, x1) x [y0, y1)`` of columns.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from typing import Callable, Iterator, Sequence

import torch

from xcube_core.errors import InvalidInputError
from xcube_core.level import Level
from xcube_core.sparse import GridBatch

logger = logging.getLogger(__name__)

MAX_RESAMPLE = 20
# level-0 columns decoded around a window's region beyond level 0: more than the reach of the VAE
# decoder's 3x3x3 convs (about 5 m at the latent resolution, 1.5 m below), so the region's voxels see
# the same neighbours as in a decode of the whole window. (Its group norms take their statistics over
# the voxels decoded, so about 2 % of the region's voxels still differ from a whole-window decode.)
# The U-Net needs the whole halo; the decoder, most of the memory at 0.25 m, does not.
DECODE_MARGIN = 8


@dataclasses.dataclass(frozen=True)
class Box:
    """A half-open X/Y box of level-0 columns ``[x0, x1) x [y0, y1)``."""

    x0: int
    y0: int
    x1: int
    y1: int

    def __post_init__(self) -> None:
        if not (self.x1 > self.x0 and self.y1 > self.y0):
            raise InvalidInputError(f"box [{self.x0}, {self.x1}) x [{self.y0}, {self.y1}) is empty")

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def expanded(self, d: int) -> "Box":
        return Box(self.x0 - d, self.y0 - d, self.x1 + d, self.y1 + d)

    def intersection(self, other: "Box") -> "Box | None":
        x0, y0 = max(self.x0, other.x0), max(self.y0, other.y0)
        x1, y1 = min(self.x1, other.x1), min(self.y1, other.y1)
        return Box(x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None

    def contains(self, cols: torch.Tensor) -> torch.Tensor:
        """Which columns (N, 2) int lie in the box. Returns (N,) bool."""
        x, y = cols[:, 0], cols[:, 1]
        return (x >= self.x0) & (x < self.x1) & (y >= self.y0) & (y < self.y1)

    def columns(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Global column coordinates of the box as two (W, H) int64 tensors (x, y)."""
        xs = torch.arange(self.x0, self.x1)
        ys = torch.arange(self.y0, self.y1)
        return torch.meshgrid(xs, ys, indexing="ij")


@dataclasses.dataclass
class SampleOptions:
    """Sampling settings shared by every window of one request."""

    steps: int = 25
    guidance: float = 3.0
    eta: float = 0.0
    resample: int = 1
    callback: Callable[[int, int, int], None] | None = None
    cancel: threading.Event | None = None
    class_prior: float | None = None


class KnownLatent:
    """Latent rows held to known values during sampling (see module docstring).

    Args:
        mask: rows of the latent that are known. Shape: (N,), bool.
        x0: known clean latent (rows outside ``mask`` are ignored). Shape: (N, C), float.
        resample: denoising rounds per step (1 = plain replacement).
    """

    def __init__(self, mask: torch.Tensor, x0: torch.Tensor, resample: int = 1) -> None:
        if mask.shape != x0.shape[:1]:
            raise ValueError(f"mask has {tuple(mask.shape)} rows, x0 has {tuple(x0.shape)}")
        self.mask, self.x0, self.resample = mask, x0, int(resample)

    def _hold(self, x: torch.Tensor, t: int, sched, gen) -> torch.Tensor:
        from xcube_core.diffusion.schedule import randn_like

        noisy = sched.add_noise(self.x0.to(x), randn_like(x, gen), int(t))
        return torch.where(self.mask.to(x.device)[:, None], noisy, x)

    def step(self, x: torch.Tensor, t, denoise, sched, gen) -> torch.Tensor:
        """``x_t -> x_{t_prev}`` with the known rows replaced (and ``resample`` rounds)."""
        from xcube_core.diffusion.schedule import randn_like

        t = int(t)
        t_prev = sched.previous_timestep(t)
        for u in range(self.resample):
            x_prev = denoise(self._hold(x, t, sched, gen), t)
            if u + 1 < self.resample:  # RePaint Alg. 1: back to t with q(x_t | x_{t_prev})
                a_prev = sched.alphas_cumprod[t_prev] if t_prev >= 0 else sched.final_alpha_cumprod
                ratio = float(sched.alphas_cumprod[t] / a_prev)
                x = math.sqrt(ratio) * x_prev + math.sqrt(max(0.0, 1.0 - ratio)) * randn_like(x_prev, gen)
        return x_prev

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask.to(x.device)[:, None], self.x0.to(x), x)

    def inputs(self) -> torch.Tensor:
        """What a U-Net with ``known_inputs`` takes besides ``x_t``: ``x0 * mask || mask`` (N, C + 1)."""
        from xcube_core.models.unet import known_latent_inputs

        return known_latent_inputs(self.x0, self.mask)


class LatentCanvas:
    """Final latents of the windows already sampled at one level of one request, by global latent cell.

    Each window adds the cells of the columns it keeps (its region; regions do not overlap), and later
    windows hold these exact values instead of a re-encoding of the decoded voxels (module docstring).
    Cells are in latent-grid units of the scene: a window's local cell ``c`` is ``c + origin`` with
    ``origin = window corner (columns) x cells per column``.
    """

    def __init__(self) -> None:
        self._ijk: list[torch.Tensor] = []
        self._x: list[torch.Tensor] = []
        self._grid: GridBatch | None = None
        self._values: torch.Tensor | None = None

    def add(self, ijk: torch.Tensor, x: torch.Tensor) -> None:
        """Store cells ``ijk`` (N, 3) int (scene latent coordinates) with latents ``x`` (N, C)."""
        if len(ijk):
            self._ijk.append(ijk.long().cpu())
            self._x.append(x.detach().float().cpu())
            self._grid = None

    def forget_below(self, y: int) -> None:
        """Drop the cells with latent Y below ``y`` (rows no later window reaches)."""
        if not self._ijk:
            return
        ijk, x = torch.cat(self._ijk), torch.cat(self._x)
        keep = ijk[:, 1] >= y
        self._ijk, self._x, self._grid = [ijk[keep]], [x[keep]], None

    def lookup(self, ijk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents at cells ``ijk`` (N, 3): ``(x (N, C), found (N,) bool)``; x is 0 where not found."""
        if not self._ijk:
            return torch.zeros(len(ijk), 0), torch.zeros(len(ijk), dtype=torch.bool)
        if self._grid is None:
            stored, x = torch.cat(self._ijk), torch.cat(self._x)
            self._grid = GridBatch.from_ijk(stored)
            self._values = torch.zeros(self._grid.total_voxels, x.shape[1])
            self._values[self._grid.ijk_to_index(stored).long()] = x
            self._ijk, self._x = [stored], [x]
        idx = self._grid.ijk_to_index(ijk.long().cpu()).long()
        found = idx >= 0
        out = torch.zeros(len(ijk), self._values.shape[1])
        out[found] = self._values[idx[found]]
        return out, found


def latent_cells_per_column(pipe, i: int) -> float:
    """Level ``i``'s latent cells per level-0 column along X or Y (1/4 at level 0 of the shipped model:
    its dense latent has 4 m cells; 1 beyond it, where the latent lives on the 1 m level-0 voxels)."""
    v0 = pipe.voxel_sizes[0]
    return v0 / (v0 * 2 ** pipe.levels[0].vae.config.num_down if i == 0 else pipe.voxel_sizes[i - 1])


def latent_origin(pipe, i: int, window: Box) -> torch.Tensor:
    """Scene latent cell of a window's local cell (0, 0, 0) at level ``i`` (windows start on cell
    borders). (3,) int64."""
    per_column = latent_cells_per_column(pipe, i)
    return torch.tensor([round(window.x0 * per_column), round(window.y0 * per_column), 0])


# --- levels, columns, crops ----------------------------------------------------------------------
def level_factor(voxel_sizes: Sequence[float], i: int) -> int:
    """Level-``i`` voxels per level-0 voxel along an axis."""
    return int(round(voxel_sizes[0] / voxel_sizes[i]))


def columns_of(ijk: torch.Tensor, factor: int) -> torch.Tensor:
    """Level-0 columns of voxels of a level with ``factor`` voxels per column. (N, 2) int64."""
    return torch.div(ijk[:, :2].long(), factor, rounding_mode="floor")


def select(level: Level, mask: torch.Tensor, shift: Sequence[int] | None = None) -> Level:
    """The voxels of ``level`` where ``mask`` holds, optionally moved by ``-shift`` (in voxels)."""
    ijk = level.ijk[mask]
    if shift is not None:
        ijk = ijk - torch.tensor(list(shift), dtype=ijk.dtype)
    return Level(index=level.index, ijk=ijk, voxel_size=level.voxel_size, origin=level.origin,
                 normals=None if level.normals is None else level.normals[mask],
                 semantics=None if level.semantics is None else level.semantics[mask],
                 class_names=level.class_names, metadata=dict(level.metadata))


def cell_columns(ijk: torch.Tensor, cols_per_cell: float) -> torch.Tensor:
    """The level-0 column of each latent cell (its first column when a cell spans several). (N, 2)."""
    if cols_per_cell >= 1:
        return ijk[:, :2].long() * int(round(cols_per_cell))
    return torch.div(ijk[:, :2].long(), int(round(1 / cols_per_cell)), rounding_mode="floor")


def crop(level: Level, box: Box, factor: int, local: bool = False) -> Level:
    """The voxels of ``level`` in the columns of ``box``; ``local`` moves the box corner to 0."""
    mask = box.contains(columns_of(level.ijk, factor))
    return select(level, mask, (box.x0 * factor, box.y0 * factor, 0) if local else None)


def concat(levels: Sequence[Level], like: Level) -> Level:
    """Voxels of several parts of one level, in order (parts must not overlap)."""
    parts = [lv for lv in levels if lv.num_voxels] or [select(like, torch.zeros(like.num_voxels, dtype=torch.bool))]
    cat = (lambda name: None if any(getattr(p, name) is None for p in parts)
           else torch.cat([getattr(p, name) for p in parts]))
    return Level(index=like.index, ijk=torch.cat([p.ijk for p in parts]).to(torch.int32),
                 voxel_size=like.voxel_size, origin=like.origin, normals=cat("normals"),
                 semantics=cat("semantics"), class_names=like.class_names, metadata=dict(like.metadata))


def empty_level(index: int, voxel_size: float, class_names) -> Level:
    return Level(index=index, ijk=torch.zeros(0, 3, dtype=torch.int32), voxel_size=voxel_size,
                 normals=torch.zeros(0, 3), semantics=torch.zeros(0, dtype=torch.long), class_names=class_names)


# --- one window -----------------------------------------------------------------------------------
def _grid_attributes(level: Level, grid: GridBatch):
    """Normals and classes of ``level`` in ``grid``'s voxel order."""
    order = grid.ijk_to_index(level.ijk.to(grid.device)).long()
    n = torch.zeros(grid.total_voxels, 3)
    n[order] = level.normals.float() if level.normals is not None else 0.0
    s = None
    if level.semantics is not None:
        s = torch.full((grid.total_voxels,), -1, dtype=torch.long)
        s[order] = level.semantics.long()
    return n, s


def _cell_known(lat_grid: GridBatch, known_cols: torch.Tensor, cols_per_cell: float) -> torch.Tensor:
    """Latent cells (window-local) all of whose level-0 columns are known. Returns (N,) bool."""
    ijk = lat_grid.ijk.jdata[:, :2].long()
    w, h = known_cols.shape
    if cols_per_cell >= 1:
        r = int(round(cols_per_cell))
        pad_w, pad_h = -(-w // r) * r, -(-h // r) * r
        padded = torch.zeros(pad_w, pad_h, dtype=torch.bool)
        padded[:w, :h] = known_cols
        pooled = padded.view(pad_w // r, r, pad_h // r, r).all(3).all(1)
        cx, cy = ijk[:, 0], ijk[:, 1]
        ok = (cx >= 0) & (cx < pooled.shape[0]) & (cy >= 0) & (cy < pooled.shape[1])
        out = torch.zeros(len(ijk), dtype=torch.bool)
        out[ok] = pooled[cx[ok], cy[ok]]
        return out
    q = int(round(1 / cols_per_cell))
    c = torch.div(ijk, q, rounding_mode="floor")
    ok = (c[:, 0] >= 0) & (c[:, 0] < w) & (c[:, 1] >= 0) & (c[:, 1] < h)
    out = torch.zeros(len(ijk), dtype=torch.bool)
    out[ok] = known_cols[c[ok, 0], c[ok, 1]]
    return out


@torch.no_grad()
def _known_latent(pipe, i: int, lat_grid: GridBatch, existing: Level | None, known_cols: torch.Tensor,
                  resample: int, canvas: LatentCanvas | None = None,
                  origin: torch.Tensor | None = None) -> KnownLatent | None:
    """The latent held over ``known_cols`` on ``lat_grid`` (window-local): the canvas's latents where
    earlier windows made the cells, else the encoding of ``existing`` (window-local level ``i``).

    All of ``existing`` is encoded, not only its known columns, so that a held cell next to the
    region sees what lies beside it (an edit passes the region's old voxels as that context)."""
    lv = pipe.levels[i]
    n = lat_grid.total_voxels
    x0 = torch.zeros(n, lv.unet.config.latent_channels, device=pipe.device)
    cols_per_cell = float(lat_grid.voxel_sizes[0][0]) / pipe.voxel_sizes[0]
    wanted = _cell_known(lat_grid, known_cols, cols_per_cell)
    have = torch.zeros(n, dtype=torch.bool)
    if canvas is not None:
        made, have = canvas.lookup(lat_grid.ijk.jdata.long().cpu() + origin)
        if bool(have.any()):
            x0[have.to(x0.device)] = made[have].to(x0)
    if bool((wanted & ~have).any()) and existing is not None and existing.num_voxels:  # encode the rest
        grid = existing.grid(pipe.device)
        nrm, sem = _grid_attributes(existing, grid)
        mean, _, enc_grid = lv.vae.encode(grid, nrm.to(pipe.device), None if sem is None else sem.to(pipe.device))
        idx = lat_grid.ijk_to_index(enc_grid.ijk.jdata).long()  # both window-local: same coordinates
        hit = idx >= 0
        idx, mean = idx[hit], mean[hit]
        new = ~have[idx.cpu()]  # the canvas's latents win
        x0[idx[new.to(idx.device)]] = mean[new.to(mean.device)].float() * lv.latent_scale
        have[idx.cpu()] = True
    mask = have & wanted
    if not bool(mask.any()):
        return None
    return KnownLatent(mask.to(pipe.device), x0, resample)


def sample_window(pipe, i: int, window: Box, region: Box, known_cols: torch.Tensor, prev: Level | None,
                  existing: Level | None, text, gen: torch.Generator, opts: SampleOptions,
                  canvas: LatentCanvas | None = None) -> Level:
    """Sample level ``i`` on ``window`` holding ``known_cols``; return its new voxels in ``region``.

    With a ``canvas`` (one per level of a request) the window holds the latents earlier windows left
    there, and leaves its own latents of ``region`` for the windows after it.

    Args:
        window: the columns sampled; at level 0 it must have the model's native X/Y size.
        region: the columns whose new voxels are returned (global coordinates).
        known_cols: (window.width, window.height) bool: columns held to ``existing``.
        prev: level ``i - 1`` of the scene (global coordinates) or None at level 0.
        existing: what level ``i`` already holds (global coordinates) or None.
    """
    sizes = pipe.voxel_sizes
    f = level_factor(sizes, i)
    vcfg = pipe.levels[i].vae.config
    shape = (window.width * f, window.height * f, vcfg.grid_shape[2])
    if i == 0 and tuple(shape) != tuple(vcfg.grid_shape):
        raise InvalidInputError(f"a level-0 window must have the model's native size {vcfg.grid_shape[:2]} "
                                f"columns, got {window.width}x{window.height}")
    prev_local = None
    if i > 0:
        prev_local = crop(prev, window, level_factor(sizes, i - 1), local=True)
        if prev_local.num_voxels == 0:
            return empty_level(i, sizes[i], pipe.class_names)
        lat_grid = prev_local.grid(pipe.device)
    else:
        proto = GridBatch.from_ijk(torch.zeros(1, 3, dtype=torch.int64, device=pipe.device), vcfg.voxel_size)
        lat_grid = pipe.levels[0].vae.latent_grid_for(proto, shape)  # as XCubePipeline._generate_level
    known = None
    origin = latent_origin(pipe, i, window)
    if bool(known_cols.any()):
        local = None if existing is None else crop(existing, window, f, local=True)
        known = _known_latent(pipe, i, lat_grid, local, known_cols, opts.resample, canvas, origin)
    from xcube_core.pipeline import LevelSettings

    settings = LevelSettings(steps=opts.steps, guidance=opts.guidance, eta=opts.eta, callback=opts.callback,
                             cancel=opts.cancel, class_prior=opts.class_prior).for_level(pipe.levels[i].scheduler)
    near = Box(region.x0 - window.x0, region.y0 - window.y0, region.x1 - window.x0, region.y1 - window.y0)
    decode = None
    if i > 0:  # decode only around the region: the decoder reaches a few metres, the U-Net the whole halo
        decode = near.expanded(DECODE_MARGIN).contains(columns_of(lat_grid.ijk.jdata.cpu(), level_factor(sizes, i - 1)))
        if not bool(decode.any()):
            return empty_level(i, sizes[i], pipe.class_names)
    sink = None
    if canvas is not None:
        def sink(grid: GridBatch, x: torch.Tensor) -> None:  # keep the latents of the region's columns
            ijk = grid.ijk.jdata.long().cpu()
            mine = near.contains(cell_columns(ijk, 1 / latent_cells_per_column(pipe, i)))  # borders on cells
            canvas.add(ijk[mine] + origin, x[mine.to(x.device)])
    out = pipe._generate_level(i, prev_local, text, gen, settings, shape=shape, known=known, decode_mask=decode,
                               latent_sink=sink, origin=origin)
    moved = translated(out, (window.x0, window.y0), f)
    moved.ijk = moved.ijk.to(torch.int32)
    return crop(moved, region, f)


# --- inpainting -----------------------------------------------------------------------------------
def scene_columns(levels: Sequence[Level], native: Sequence[int]) -> Box:
    """The X/Y extent of a scene in level-0 columns: its recorded extent, else its voxels' bounds
    (at least the model's native tile)."""
    lv0 = levels[0]
    ext = lv0.metadata.get("extent_columns")
    if ext:
        ox, oy = (int(v) for v in lv0.metadata.get("extent_origin_columns", (0, 0)))
        return Box(ox, oy, ox + int(ext[0]), oy + int(ext[1]))
    hi = lv0.ijk[:, :2].max(0).values.tolist() if lv0.num_voxels else [0, 0]
    lo = lv0.ijk[:, :2].min(0).values.tolist() if lv0.num_voxels else [0, 0]
    x0, y0 = min(0, lo[0]), min(0, lo[1])
    return Box(x0, y0, max(x0 + int(native[0]), hi[0] + 1), max(y0 + int(native[1]), hi[1] + 1))


def region_columns(box_m: Sequence[float], voxel_size: float, scene: Box, grow: bool = False) -> Box:
    """Metres ``(x0, y0, x1, y1)`` to the columns they touch. InvalidInputError outside the scene, or
    (``grow``) when the box neither overlaps nor touches it."""
    if len(box_m) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box_m):
        raise InvalidInputError(f"a box is four finite numbers X0 Y0 X1 Y1 in metres, got {list(box_m)!r}")
    x0, y0, x1, y1 = (float(v) for v in box_m)
    if not (x1 > x0 and y1 > y0):
        raise InvalidInputError(f"box {list(box_m)}: X1 must exceed X0 and Y1 exceed Y0")
    ax, ay, sx, sy = (v * voxel_size for v in (scene.x0, scene.y0, scene.x1, scene.y1))
    eps = 1e-9
    inside = x0 >= ax - eps and y0 >= ay - eps and x1 <= sx + eps and y1 <= sy + eps
    touches = x0 <= sx + eps and y0 <= sy + eps and x1 >= ax - eps and y1 >= ay - eps
    if not (inside or (grow and touches)):
        what = "neither overlaps nor touches" if grow else "is not inside"
        raise InvalidInputError(f"box {list(box_m)} m {what} the scene, which spans [{ax:g}, {sx:g}] x "
                                f"[{ay:g}, {sy:g}] m")
    return Box(math.floor(x0 / voxel_size + 1e-9), math.floor(y0 / voxel_size + 1e-9),
               math.ceil(x1 / voxel_size - 1e-9), math.ceil(y1 / voxel_size - 1e-9))


def _axis_windows(lo: int, hi: int, size: int, extent: int, cell: int) -> list[tuple[int, int, int]]:
    """(window start, owned start, owned end) along one axis for a region [lo, hi) of a scene [0, extent):
    one native window around a narrow region (inside the scene), or overlapping windows across it."""
    if hi - lo <= size:
        start = (lo + hi - size) // 2 // cell * cell
        start = max(0, min(start, (max(extent, size) - size) // cell * cell))
        start = start if start + size >= hi else start + cell * -(-(hi - start - size) // cell)
        return [(start, lo, hi)]
    stride = size - size // 4 // cell * cell
    starts = [lo + s for s in _starts(hi - lo, size, stride)]
    from xcube_core.tiling import cut_between

    cuts = [lo] + [cut_between(a, b, size, cell) for a, b in zip(starts[:-1], starts[1:])] + [hi]
    return [(s, cuts[k], cuts[k + 1]) for k, s in enumerate(starts)]  # owned: between overlap middles


def _starts(extent: int, tile: int, stride: int) -> list[int]:
    n = math.ceil((extent - tile) / stride) + 1
    return [min(k * stride, extent - tile) for k in range(n)]


def region_tiles(region: Box, scene: Box, native: Sequence[int], cell: int) -> list[tuple[Box, Box]]:
    """(level-0 window, owned box) per tile of a region, in raster order; owned boxes partition it."""
    xs = _axis_windows(region.x0, region.x1, native[0], scene.x1, cell)
    ys = _axis_windows(region.y0, region.y1, native[1], scene.y1, cell)
    return [(Box(wx, wy, wx + native[0], wy + native[1]), Box(ox0, oy0, ox1, oy1))
            for wy, oy0, oy1 in ys for wx, ox0, ox1 in xs]


def _known(window: Box, region: Box, old: Box, earlier: Sequence[Box]) -> torch.Tensor:
    """(W, H) bool: columns of the old scene outside the region, or owned by earlier tiles."""
    xs, ys = window.columns()
    cols = torch.stack([xs.flatten(), ys.flatten()], 1)
    known = (old.contains(cols) & ~region.contains(cols)) | _in_any(earlier, cols)
    return known.view(xs.shape)


def check_scene(pipe, levels: Sequence[Level]) -> None:
    if not isinstance(levels, (list, tuple)) or not levels or not all(isinstance(lv, Level) for lv in levels):
        raise InvalidInputError("a scene is a non-empty list of Level objects, coarsest first")
    if len(levels) > pipe.num_levels:
        raise InvalidInputError(f"the scene has {len(levels)} levels; this model makes {pipe.num_levels}")
    for i, lv in enumerate(levels):
        want = pipe.voxel_sizes[i]
        if abs(float(lv.voxel_size) - want) > 1e-6 * want:
            raise InvalidInputError(f"scene level {i} has {lv.voxel_size} m voxels; this model's level {i} "
                                    f"uses {want} m (was the scene made by another model?)")
        if lv.num_voxels and lv.normals is None:
            raise InvalidInputError(f"scene level {i} has no normals; load it from a generated scene folder")


def translated(level: Level, cols: tuple[int, int], f: int) -> Level:
    """A level moved by ``+cols`` level-0 columns along X and Y (``f`` voxels per column)."""
    return select(level, torch.ones(level.num_voxels, dtype=torch.bool), (-cols[0] * f, -cols[1] * f, 0))


@torch.no_grad()
def edit_region(pipe, levels: Sequence[Level], box_m: Sequence[float], prompt: str, *, seed: int = 0,
                steps: int = 25, guidance: float = 3.0, eta: float = 0.0, resample: int = 1,
                halo: int | None = None, grow: bool = False, class_prior: float | None = None, callback=None,
                cancel=None) -> Iterator[Level]:
    """Regenerate the X/Y box ``box_m`` (metres, full height) of a scene; yield each new level.

    Every voxel outside the box is copied unchanged (bit-identical at every level). Inside, the box is
    covered by windows of the model's native size (one, or overlapping tiles in raster order) sampled
    with everything around them held (see module docstring). With ``grow`` the box may reach beyond
    the scene (outpainting along an edge, also at negative coordinates); the scene then grows.

    Args:
        levels: the scene, coarsest first (e.g. `xcube_core.io.scene.read_scene`).
        box_m: ``(x0, y0, x1, y1)`` in metres (scene coordinates).
        halo: level-0 columns of context around each tile at finer levels (default: the U-Net's
            receptive field, `xcube_core.tiling.halo_columns`).
        class_prior: as in `XCubePipeline.generate`.
    Yields:
        `Level` i (the whole scene level: old voxels outside the box, new inside), coarse to fine.
    """
    check_scene(pipe, levels)
    pipe.validate(prompt, steps, guidance, len(levels), None, class_prior)
    check_resample(resample)
    v0 = pipe.voxel_sizes[0]
    old = scene_columns(levels, pipe.coarse_shape)
    region = region_columns(box_m, v0, old, grow)
    cell = 2 ** pipe.levels[0].vae.config.num_down
    shift = (min(0, region.x0, old.x0) // cell * cell, min(0, region.y0, old.y0) // cell * cell)  # columns >= 0
    sizes = pipe.voxel_sizes
    if shift != (0, 0):
        levels = [translated(lv, (-shift[0], -shift[1]), level_factor(sizes, i)) for i, lv in enumerate(levels)]
        old = Box(old.x0 - shift[0], old.y0 - shift[1], old.x1 - shift[0], old.y1 - shift[1])
        region = Box(region.x0 - shift[0], region.y0 - shift[1], region.x1 - shift[0], region.y1 - shift[1])
    scene = Box(0, 0, max(old.x1, region.x1), max(old.y1, region.y1))  # grown (when ``grow``)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    text = pipe.text_encoder.encode([prompt, ""])
    opts = SampleOptions(steps, guidance, eta, resample, callback, cancel, class_prior)
    tiles = region_tiles(region, scene, pipe.coarse_shape, cell)
    prev = None
    for i, before in enumerate(levels):
        level = _edit_level(pipe, i, before, prev, tiles, region, old, scene, halo, text, gen, opts)
        extent = [scene.x1 - scene.x0, scene.y1 - scene.y0]
        level.metadata = {**before.metadata, "level": i, "extent_columns": extent,
                          "extent_origin_columns": [scene.x0 + shift[0], scene.y0 + shift[1]],
                          "extent_m": [extent[0] * v0, extent[1] * v0],
                          "edit": {"prompt": prompt, "seed": int(seed), "box_m": list(box_m)}}
        prev = level
        yield level if shift == (0, 0) else translated(level, shift, level_factor(sizes, i))


def _edit_level(pipe, i, before, prev, tiles, region, old, scene, halo, text, gen, opts) -> Level:
    from xcube_core.tiling import halo_columns

    f = level_factor(pipe.voxel_sizes, i)
    kept = select(before, ~region.contains(columns_of(before.ijk, f)))
    h = halo_columns(pipe, i) if halo is None else int(halo)
    parts, earlier = [kept], []
    canvas = LatentCanvas()  # tiles of a wide box hold what the tiles before them made, as made
    old_inside = select(before, region.contains(columns_of(before.ijk, f)))
    for window0, owned in tiles:
        window = window0 if i == 0 else owned.expanded(h).intersection(scene)
        known = _known(window, region, old, earlier)
        # context for encoding what is held: the scene as it stands, and the region's old voxels where
        # no tile has replaced them yet (held cells at the region's edge then encode what was beside them)
        pending = select(old_inside, ~_in_any(earlier, columns_of(old_inside.ijk, f)))
        new = sample_window(pipe, i, window, owned, known, prev, concat([*parts, pending], before), text, gen,
                            opts, canvas)
        parts.append(new)
        earlier.append(owned)
    logger.info("edit level %d: %d voxels kept, %d regenerated in %d tile(s)", i, kept.num_voxels,
                sum(p.num_voxels for p in parts[1:]), len(tiles))
    return concat(parts, before)


def _in_any(boxes: Sequence[Box], cols: torch.Tensor) -> torch.Tensor:
    """(N,) bool: columns (N, 2) inside any of ``boxes``."""
    inside = torch.zeros(len(cols), dtype=torch.bool)
    for box in boxes:
        inside |= box.contains(cols)
    return inside


def check_resample(resample) -> None:
    if not isinstance(resample, int) or not 1 <= resample <= MAX_RESAMPLE:
        raise InvalidInputError(f"resample must be an integer in 1..{MAX_RESAMPLE}, got {resample!r}")
