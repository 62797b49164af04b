"""Masks of held latent cells for training a U-Net with ``known_inputs`` (in/outpainting).

Each training item gets a mask over its latent's X/Y columns shaped like what sampling holds
(`xcube_core.inpaint`):

* **nothing** (plain generation, so the same network still makes single tiles);
* **strips along 1-4 sides** (tiling and Extend Scene: a new tile holds what its neighbours own, up to
  the middle of their overlap; an extension holds the scene beside it);
* **everything but a box** (Regenerate Region).

Masks are whole columns (full height), as in sampling. The loss is taken over the cells that are not
held: held cells are replaced by their known value when sampling, so their prediction never counts.
"""

from __future__ import annotations

import torch

# probabilities of the three kinds of mask: nothing held, strips, everything but a box
MASK_KINDS = (0.2, 0.5, 0.3)


def _column_mask(w: int, h: int, gen: torch.Generator) -> torch.Tensor:
    """One (w, h) bool mask of held columns, drawn as the module docstring says."""
    def draw(lo: int, hi: int) -> int:  # uniform integer in [lo, hi]
        return int(torch.randint(lo, max(lo, hi) + 1, (1,), generator=gen))

    mask = torch.zeros(w, h, dtype=torch.bool)
    kind = int(torch.multinomial(torch.tensor(MASK_KINDS), 1, generator=gen))
    if kind == 0 or min(w, h) < 3:
        return mask
    if kind == 1:
        sides = torch.rand(4, generator=gen) < 0.5
        if not bool(sides.any()):
            sides[draw(0, 3)] = True
        for side in torch.nonzero(sides).flatten().tolist():
            width = draw(1, (w if side < 2 else h) // 2)
            if side == 0:
                mask[:width, :] = True
            elif side == 1:
                mask[-width:, :] = True
            elif side == 2:
                mask[:, :width] = True
            else:
                mask[:, -width:] = True
    else:
        bw, bh = draw(2, w - 2), draw(2, h - 2)
        x0, y0 = draw(0, w - bw), draw(0, h - bh)
        mask[:] = True
        mask[x0:x0 + bw, y0:y0 + bh] = False
    if bool(mask.all()):  # keep something to learn
        mask[draw(0, w - 1), draw(0, h - 1)] = False
    return mask


def sample_known_masks(ijk: torch.Tensor, jidx: torch.Tensor, batch_size: int, gen: torch.Generator) -> torch.Tensor:
    """Held latent cells of a batch: one column mask per item, drawn over the item's X/Y extent.

    Args:
        ijk: latent cell coordinates. Shape: (N, 3), int.
        jidx: batch item of each cell. Shape: (N,), int.
        batch_size: number of items.
        gen: the training step's generator (masks are reproducible per step).
    Returns: (N,) bool.
    """
    out = torch.zeros(len(ijk), dtype=torch.bool)
    ijk, jidx = ijk.cpu().long(), jidx.cpu().long()
    for b in range(batch_size):
        rows = torch.nonzero(jidx == b).flatten()
        if len(rows) == 0:
            continue
        cols = ijk[rows, :2]
        lo = cols.min(0).values
        cols = cols - lo
        w, h = (int(v) + 1 for v in cols.max(0).values)
        mask = _column_mask(w, h, gen)
        out[rows] = mask[cols[:, 0], cols[:, 1]]
    return out
