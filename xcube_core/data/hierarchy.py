"""Aligned sparse voxel hierarchies: coarsening a finest level, early-dilation targets, `VoxelSample`.

A hierarchy has ``L`` levels, level 0 the coarsest; level ``l + 1`` has half the voxel size of level
``l`` and every voxel of it lies inside an active voxel of level ``l`` (coarse ijk = fine ijk // 2).
Attributes of a coarse voxel are derived from its children: the normal is the normalised mean of the
children's normals and the semantic class is the majority class of the children.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from xcube_core.classes import CLASS_NAMES
from xcube_core.level import Level
from xcube_core.sparse import keys as voxel_keys

#: Semantic id meaning "no class known for this voxel" (stored as uint8 255, loaded as -1).
UNKNOWN_CLASS = -1

def ijk_to_key(ijk: torch.Tensor) -> torch.Tensor:
    """Pack integer coordinates into one sortable int64 key per voxel (the engine's packing).

    Args:
        ijk: voxel coordinates within the engine's range (|c| <= xcube_core.sparse.keys.COORD_LIMIT).
            Shape: (N, 3), any integer dtype.

    Returns:
        Keys. Shape: (N,), int64. Sorting by key sorts by (i, j, k) lexicographically.

    Raises:
        ValueError: coordinates outside the engine's range (use a larger voxel size).
    """
    voxel_keys.check_ijk(ijk)
    return voxel_keys.pack(ijk)


def key_to_ijk(key: torch.Tensor) -> torch.Tensor:
    """Inverse of `ijk_to_key`. Shape: (N,) int64 -> (N, 3) int32."""
    return voxel_keys.unpack(key)


def unique_voxels(ijk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique voxels and, for every input row, the index of its unique voxel.

    Args:
        ijk: Shape: (N, 3), integer.

    Returns:
        ``(unique_ijk, inverse)``: Shape (M, 3) int32 sorted by (i, j, k), and (N,) int64.
    """
    keys, inverse = torch.unique(ijk_to_key(ijk), sorted=True, return_inverse=True)
    return key_to_ijk(keys), inverse


def mean_normals(normals: torch.Tensor, inverse: torch.Tensor, count: int,
                 weights: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised (weighted) mean of ``normals`` grouped by ``inverse``.

    Args:
        normals: Shape: (N, 3), float.
        inverse: group of each row. Shape: (N,), int64 in [0, count).
        count: number of groups M.
        weights: optional weight per row. Shape: (N,), float.

    Returns:
        Unit vectors (zero where the sum cancels exactly). Shape: (M, 3), float32.
    """
    vec = normals.to(torch.float32)
    if weights is not None:
        vec = vec * weights.to(torch.float32)[:, None]
    total = torch.zeros(count, 3, dtype=torch.float32).index_add_(0, inverse, vec)
    return torch.nn.functional.normalize(total, dim=1, eps=1e-12)


def majority_class(semantics: torch.Tensor, inverse: torch.Tensor, count: int,
                   weights: torch.Tensor | None = None) -> torch.Tensor:
    """Most frequent (or heaviest) class per group; ties go to the smaller class id.

    Unknown rows (`UNKNOWN_CLASS`) only win when a group has no known row.

    Args:
        semantics: Shape: (N,), int64 (``UNKNOWN_CLASS`` allowed).
        inverse: Shape: (N,), int64 in [0, count).
        count: number of groups M.
        weights: optional vote weight per row. Shape: (N,), float.

    Returns:
        Shape: (M,), int64.
    """
    sem = semantics.to(torch.int64)
    known = sem >= 0
    num_classes = int(sem.max().item()) + 1 if bool(known.any()) else 1
    votes = torch.zeros(count * num_classes, dtype=torch.float64)
    w = torch.ones_like(sem, dtype=torch.float64) if weights is None else weights.to(torch.float64)
    votes.index_add_(0, inverse[known] * num_classes + sem[known], w[known])
    votes = votes.view(count, num_classes)
    best = votes.argmax(dim=1)  # argmax returns the first maximum -> smaller id wins ties
    best[votes.max(dim=1).values <= 0] = UNKNOWN_CLASS
    return best


def coarsen_level(level: Level) -> Level:
    """The parent level of ``level``: ijk // 2, twice the voxel size, attributes from the children.

    Args:
        level: a level with origin = half its voxel size (the alignment convention).

    Returns:
        A `Level` with ``index = level.index - 1`` whose voxels contain all of ``level``'s voxels.
    """
    parent_ijk, inverse = unique_voxels(torch.div(level.ijk, 2, rounding_mode="floor"))
    m = parent_ijk.shape[0]
    normals = None if level.normals is None else mean_normals(level.normals, inverse, m)
    semantics = None if level.semantics is None else majority_class(level.semantics, inverse, m)
    return Level(index=level.index - 1, ijk=parent_ijk, voxel_size=2.0 * float(level.voxel_size),
                 normals=normals, semantics=semantics, class_names=level.class_names)


def build_hierarchy(finest: Level, num_levels: int) -> list[Level]:
    """Coarsen ``finest`` ``num_levels - 1`` times.

    Args:
        finest: the finest level; its ``index`` is overwritten with ``num_levels - 1``.
        num_levels: total number of levels L >= 1.

    Returns:
        Levels ordered coarse -> fine (index 0 .. L-1).
    """
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    finest = dataclasses.replace(finest, index=num_levels - 1)
    levels = [finest]
    for _ in range(num_levels - 1):
        levels.append(coarsen_level(levels[-1]))
    return levels[::-1]


def early_dilation_targets(fine_ijk: torch.Tensor, ratio: int) -> torch.Tensor:
    """Coarse voxels that are among the 8 nearest coarse voxels of any fine voxel centre (XCube's
    dilated coarse targets: the coarse grid grows by a half-voxel halo so later levels see context).

    With fine voxel size ``h``, coarse voxel size ``ratio * h`` and both origins at half a voxel,
    the fine centre ``(f + 1/2) h`` lies at coarse coordinate ``u = (f + 1/2) / ratio - 1/2``; its 8
    nearest coarse centres are ``floor(u) + {0, 1}^3``. The result contains ``fine_ijk // ratio``.

    Args:
        fine_ijk: Shape: (N, 3), integer.
        ratio: coarse voxel size / fine voxel size, a power of two >= 2.

    Returns:
        Sorted unique coarse ijk (may include -1 at the low border). Shape: (M, 3), int32.
    """
    if ratio < 2 or ratio & (ratio - 1):
        raise ValueError(f"ratio must be a power of two >= 2, got {ratio}")
    # floor((2f + 1 - ratio) / (2 ratio)) computed exactly in integers
    base = torch.div(2 * fine_ijk.to(torch.int64) + 1 - ratio, 2 * ratio, rounding_mode="floor")
    corners = torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=torch.int64)
    base_keys = torch.unique(ijk_to_key(base))
    base = key_to_ijk(base_keys).to(torch.int64)
    every = (base[:, None, :] + corners[None]).reshape(-1, 3)
    return key_to_ijk(torch.unique(ijk_to_key(every)))


@dataclasses.dataclass
class VoxelSample:
    """One training sample: an aligned hierarchy plus its caption and metadata.

    Attributes:
        levels: levels ordered coarse -> fine (``levels[l].index == l``).
        caption: text describing the sample ("" when none).
        metadata: JSON-able facts (style, seed, source file, normalisation, grid_shape, ...).
            ``metadata["grid_shape"]`` is the finest level's extent in voxels (ijk in [0, shape)).
    """

    levels: list[Level]
    caption: str = ""
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.levels[-1].class_names if self.levels else CLASS_NAMES

    def dilation_targets(self) -> list[torch.Tensor]:
        """Early-dilation target ijk for every level but the last (the finest loaded), from it."""
        finest = self.levels[-1]
        ratios = [round(float(lvl.voxel_size) / float(finest.voxel_size)) for lvl in self.levels[:-1]]
        return [early_dilation_targets(finest.ijk, r) for r in ratios]
