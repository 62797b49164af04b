"""Augmentations keep the hierarchy nested and turn normals with the geometry."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import trimesh

from xcube_core.data.augment import Augmentation, augment_sample, random_augmentation, transform_ijk
from xcube_core.data.hierarchy import VoxelSample, build_hierarchy
from xcube_core.data.voxelize import voxelize_triangles
from xcube_core.level import Level

SHAPE = (64, 48, 32)  # non-square footprint: odd rotations swap x and y extents
CENTRE = np.array([18.0, 30.0, 14.0])  # off-centre sphere, voxel units
RADIUS = 9.0

ALL = [Augmentation(r, fx, fy) for r, fx, fy in itertools.product(range(4), (False, True), (False, True))]


@pytest.fixture(scope="module")
def sphere_sample() -> VoxelSample:
    m = trimesh.creation.icosphere(subdivisions=4, radius=RADIUS)
    tris = np.asarray(m.vertices)[np.asarray(m.faces)] + CENTRE
    ijk, normals, _ = voxelize_triangles(tris, SHAPE)
    sem = (ijk[:, 2] > CENTRE[2]).long()  # upper half class 1
    finest = Level(index=2, ijk=ijk, voxel_size=0.5, normals=normals, semantics=sem)
    return VoxelSample(build_hierarchy(finest, 3), caption="ball", metadata={"grid_shape": list(SHAPE)})


def _point_transform(p: np.ndarray, shape, aug: Augmentation) -> np.ndarray:
    """The same augmentation on a continuous point (voxel units), by its geometric definition."""
    x, y, z = p
    dx, dy, _ = shape
    if aug.flip_x:
        x = dx - x
    if aug.flip_y:
        y = dy - y
    for _ in range(aug.rotations):  # quarter turn counter-clockwise about the box centre
        x, y = dy - y, x
        dx, dy = dy, dx
    return np.array([x, y, z])


@pytest.mark.parametrize("aug", ALL, ids=str)
def test_normals_turn_with_the_geometry(sphere_sample, aug):
    out = augment_sample(sphere_sample, aug)
    for lvl in out.levels:
        scale = 2 ** (2 - lvl.index)  # level voxel / finest voxel
        centre = _point_transform(CENTRE / scale, [s // scale for s in SHAPE], aug)
        radial = torch.nn.functional.normalize(lvl.ijk.double() + 0.5 - torch.from_numpy(centre), dim=1)
        cos = (radial * lvl.normals.double()).sum(1)
        assert torch.quantile(cos, 0.05) > np.cos(np.radians(6))
        assert (lvl.ijk >= 0).all()
        extent = torch.tensor(out.metadata["grid_shape"]) // scale
        assert (lvl.ijk < extent).all()
    # semantics travel with their voxels (z is untouched by these augmentations)
    fine = out.levels[-1]
    assert torch.equal(fine.semantics, (fine.ijk[:, 2] > CENTRE[2]).long())


@pytest.mark.parametrize("aug", ALL, ids=str)
def test_nesting_is_kept(sphere_sample, aug):
    out = augment_sample(sphere_sample, aug)
    for coarse, fine in zip(out.levels[:-1], out.levels[1:]):
        assert set(map(tuple, (fine.ijk // 2).tolist())) == set(map(tuple, coarse.ijk.tolist()))


def test_inverse_and_group_structure(generator):
    ijk = torch.randint(0, 16, (200, 3), generator=generator)
    shape = (16, 12, 8)
    four, _ = transform_ijk(ijk, shape, Augmentation(rotations=1))
    for _ in range(3):
        four, shape2 = transform_ijk(four, (12, 16, 8) if _ % 2 == 0 else shape, Augmentation(rotations=1))
    assert torch.equal(four, ijk)
    twice, _ = transform_ijk(transform_ijk(ijk, shape, Augmentation(flip_x=True))[0], shape, Augmentation(flip_x=True))
    assert torch.equal(twice, ijk)


def test_random_augmentation_uses_the_generator():
    a = [random_augmentation(torch.Generator().manual_seed(s)) for s in range(40)]
    b = [random_augmentation(torch.Generator().manual_seed(s)) for s in range(40)]
    assert a == b and len(set(a)) > 8
