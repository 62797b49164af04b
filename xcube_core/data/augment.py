"""Alignment-preserving augmentations: 90-degree rotations about +Z and flips in X / Y.

They act on integer coordinates about the centre of each level's grid box, so ijk stay inside
``[0, shape)`` and the hierarchy stays nested: for a fine extent ``D_f = 2 D_c``,
``(D_f - 1 - f) // 2 == D_c - 1 - f // 2``. Normals turn with the geometry.
"""

from __future__ import annotations

import dataclasses

import torch

from xcube_core.data.hierarchy import VoxelSample
from xcube_core.level import Level


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Flip X, then flip Y, then rotate ``rotations`` quarter turns counter-clockwise about +Z."""

    rotations: int = 0
    flip_x: bool = False
    flip_y: bool = False

    @property
    def is_identity(self) -> bool:
        return self.rotations % 4 == 0 and not self.flip_x and not self.flip_y


def random_augmentation(generator: torch.Generator | None = None) -> Augmentation:
    """One of the 16 rotation/flip combinations, uniformly (the 8 distinct symmetries of the square,
    each twice). Uses ``generator`` or torch's default RNG (seeded per DataLoader worker)."""
    r = torch.randint(0, 16, (1,), generator=generator).item()
    return Augmentation(rotations=r % 4, flip_x=bool(r // 4 % 2), flip_y=bool(r // 8))


def transform_ijk(ijk: torch.Tensor, shape: tuple[int, int, int], aug: Augmentation):
    """Apply ``aug`` to voxel coordinates of a grid of ``shape`` voxels.

    Args:
        ijk: Shape: (N, 3), integer.
        shape: the grid extent in voxels (x, y, z) at this level.

    Returns:
        ``(ijk, shape)``: transformed coordinates (same dtype) and the new extent (x/y swap on odd turns).
    """
    out = ijk.clone()
    dx, dy, dz = (int(s) for s in shape)
    if aug.flip_x:
        out[:, 0] = dx - 1 - out[:, 0]
    if aug.flip_y:
        out[:, 1] = dy - 1 - out[:, 1]
    for _ in range(aug.rotations % 4):  # (i, j) -> (D_y - 1 - j, i), extent (D_x, D_y) -> (D_y, D_x)
        out = torch.stack([dy - 1 - out[:, 1], out[:, 0], out[:, 2]], dim=1).to(ijk.dtype)
        dx, dy = dy, dx
    return out, (dx, dy, dz)


def transform_normals(normals: torch.Tensor, aug: Augmentation) -> torch.Tensor:
    """Turn normals with the geometry. Shape: (N, 3) -> (N, 3)."""
    out = normals.clone()
    if aug.flip_x:
        out[:, 0] = -out[:, 0]
    if aug.flip_y:
        out[:, 1] = -out[:, 1]
    for _ in range(aug.rotations % 4):  # (nx, ny) -> (-ny, nx)
        out = torch.stack([-out[:, 1], out[:, 0], out[:, 2]], dim=1)
    return out


def level_shapes(sample: VoxelSample) -> list[tuple[int, int, int]]:
    """Grid extent of every level (coarse -> fine) from ``metadata['grid_shape']`` (the finest), or
    from the finest voxels' bounds when absent, rounded up so that each level halves exactly."""
    n = sample.num_levels
    m = 2 ** (n - 1)
    fine = sample.metadata.get("grid_shape")
    if fine is None:
        hi = sample.levels[-1].ijk.amax(dim=0) + 1 if sample.levels[-1].num_voxels else torch.ones(3)
        fine = [int(v) for v in hi.tolist()]
    fine = [-(-int(v) // m) * m for v in fine]
    return [tuple(v // 2 ** (n - 1 - lvl) for v in fine) for lvl in range(n)]


def augment_sample(sample: VoxelSample, aug: Augmentation) -> VoxelSample:
    """``sample`` with ``aug`` applied consistently to every level's ijk and normals."""
    if aug.is_identity:
        return sample
    shapes = level_shapes(sample)
    levels = []
    for lvl, shape in zip(sample.levels, shapes):
        ijk, new_shape = transform_ijk(lvl.ijk, shape, aug)
        normals = None if lvl.normals is None else transform_normals(lvl.normals, aug)
        levels.append(Level(index=lvl.index, ijk=ijk, voxel_size=lvl.voxel_size, origin=lvl.origin,
                            normals=normals, semantics=lvl.semantics, class_names=lvl.class_names,
                            metadata=dict(lvl.metadata)))
    meta = dict(sample.metadata)
    meta["grid_shape"] = list(new_shape)
    meta["augmentation"] = dataclasses.asdict(aug)
    return VoxelSample(levels=levels, caption=sample.caption, metadata=meta)
