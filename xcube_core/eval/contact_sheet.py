"""A contact sheet: fixed prompts x seeds, every level side by side, one or two models, one PNG.

``xcube eval contact-sheet --model M [--compare OTHER] --out docs/images/contact_sheet.png`` renders
the same 8 prompts (one per scene style of the procedural data) with the same seeds, so anyone can
see what a model does at each level and how two models (e.g. v1 and v2) differ. Tiles are drawn by
`xcube_core.io.preview.render_preview` and labelled with Pillow.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Sequence

import numpy as np

from xcube_core.errors import InvalidInputError, XCubeError

__all__ = ["CONTACT_PROMPTS", "CONTACT_SEEDS", "SheetCell", "compose_sheet", "generate_cells"]

log = logging.getLogger(__name__)

CONTACT_PROMPTS = (
    "a quiet suburban street lined with houses and oak trees",
    "a busy business district with high-rise towers",
    "a waterfront district with apartment blocks, a few trees and a canal",
    "a city park with many trees and a pond",
    "a countryside farm with small farm buildings and a number of trees",
    "an industrial estate with large warehouses and a few poplars",
    "a large parking lot with a single-storey store and rows of parked cars",
    "homes on bare treeless land",
)
CONTACT_SEEDS = (0, 1)

_BG = (255, 255, 255)
_INK = (20, 20, 20)
_MUTED = (110, 110, 110)


@dataclasses.dataclass
class SheetCell:
    """One generated scene: its rendered levels (coarse to fine) or the error that stopped it."""

    model_id: str
    prompt: str
    seed: int
    images: list[np.ndarray]          # (H, W, 3) uint8 per level
    voxel_sizes: list[float]
    voxels: list[int]
    error: str | None = None


def generate_cells(pipe, prompts: Sequence[str], seeds: Sequence[int], *, steps: int | None = None,
                   guidance: float | None = None, tile: tuple[int, int] = (240, 180),
                   on_cell: Callable[[], Any] | None = None) -> list[SheetCell]:
    """Generate and render every (prompt, seed) with ``pipe``, prompt-major; failures become empty cells."""
    from xcube_core.io.preview import render_preview

    cells = []
    for prompt in prompts:
        for seed in seeds:
            images, sizes, counts, err = [], [], [], None
            try:
                for level in pipe.generate(prompt, seed=int(seed), steps=steps, guidance=guidance):
                    images.append(render_preview(level, width=tile[0], height=tile[1]))
                    sizes.append(float(level.voxel_size))
                    counts.append(int(level.num_voxels))
            except XCubeError as exc:
                err = f"{type(exc).__name__}: {exc}"
                log.warning("%s, %r, seed %d failed: %s", pipe.model_id, prompt, seed, err)
            cells.append(SheetCell(pipe.model_id, prompt, int(seed), images, sizes, counts, err))
            if on_cell is not None:
                on_cell()
    return cells


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def compose_sheet(columns: Sequence[Sequence[SheetCell]], num_levels: Sequence[int],
                  tile: tuple[int, int] = (240, 180), title: str = "") -> np.ndarray:
    """Lay out cells: one row per prompt; per model (column group) and seed, its levels side by side.

    Args:
        columns: per model, its cells in prompt-major, seed-minor order (as `generate_cells` returns).
        num_levels: levels shown per model (missing levels of a failed scene stay blank).
        tile: (width, height) of one level's image.
        title: a line at the top.

    Returns:
        The sheet. Shape: (H, W, 3), uint8.
    """
    from PIL import Image, ImageDraw

    if not columns or any(len(c) != len(columns[0]) for c in columns):
        raise InvalidInputError("every model needs the same cells (same prompts and seeds)")
    prompts = list(dict.fromkeys(c.prompt for c in columns[0]))
    seeds = list(dict.fromkeys(c.seed for c in columns[0]))
    tw, th = tile
    pad, head, label = 6, 44, 20
    group_w = [len(seeds) * n * (tw + pad) + pad for n in num_levels]
    width = sum(group_w) + pad
    height = head + len(prompts) * (label + th + pad) + pad
    sheet = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(sheet)
    small, big = _font(12), _font(15)
    draw.text((pad, 4), title, fill=_INK, font=big)
    x0 = pad
    for m, cells in enumerate(columns):
        draw.text((x0, 24), _column_header(cells[0].model_id, seeds, num_levels[m], cells), fill=_MUTED, font=small)
        for r, prompt in enumerate(prompts):
            y = head + r * (label + th + pad)
            if m == 0:
                draw.text((pad, y + 3), f"{r + 1}. {prompt}", fill=_INK, font=small)
            for s, seed in enumerate(seeds):
                cell = cells[r * len(seeds) + s]
                for lv in range(num_levels[m]):
                    x = x0 + (s * num_levels[m] + lv) * (tw + pad)
                    _paste_tile(sheet, draw, cell, lv, x, y + label, tile, small)
        x0 += group_w[m]
    return np.asarray(sheet)


def _column_header(model_id: str, seeds: Sequence[int], n: int, cells: Sequence[SheetCell]) -> str:
    sizes = next((c.voxel_sizes for c in cells if len(c.voxel_sizes) == n), [])
    levels = ", ".join(f"L{i} {v:g} m" for i, v in enumerate(sizes)) or f"{n} levels"
    return f"{model_id}: seeds {', '.join(map(str, seeds))}; each seed {levels}"


def _paste_tile(sheet, draw, cell: SheetCell, lv: int, x: int, y: int, tile, font) -> None:
    from PIL import Image

    if lv < len(cell.images):
        sheet.paste(Image.fromarray(cell.images[lv]), (x, y))
        caption = f"seed {cell.seed} L{lv} {cell.voxel_sizes[lv]:g} m, {cell.voxels[lv]:,} vox"
        draw.rectangle([x, y, x + tile[0] - 1, y + 15], fill=(255, 255, 255))
        draw.text((x + 3, y + 1), caption, fill=_INK, font=font)
    else:
        draw.rectangle([x, y, x + tile[0] - 1, y + tile[1] - 1], outline=(200, 60, 60))
        text = "failed" if cell.error else "not generated"
        draw.text((x + 6, y + 6), f"seed {cell.seed} L{lv}: {text}", fill=(200, 60, 60), font=font)
        if cell.error:
            draw.text((x + 6, y + 24), cell.error[:38], fill=_MUTED, font=font)
