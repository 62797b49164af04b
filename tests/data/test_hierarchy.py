"""Coarsening rules and early-dilation targets against brute-force references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from xcube_core.data.hierarchy import (UNKNOWN_CLASS, build_hierarchy, coarsen_level, early_dilation_targets,
                                       ijk_to_key, key_to_ijk, majority_class)
from xcube_core.level import Level


def _random_level(generator, n=400, extent=24):
    ijk = torch.unique(torch.randint(0, extent, (n, 3), generator=generator, dtype=torch.int32), dim=0)
    normals = torch.nn.functional.normalize(torch.randn(len(ijk), 3, generator=generator), dim=1)
    sem = torch.randint(-1, 5, (len(ijk),), generator=generator)
    return Level(index=2, ijk=ijk, voxel_size=0.25, normals=normals, semantics=sem)


def test_keys_round_trip_including_negative(generator):
    ijk = torch.randint(-1000, 1000, (500, 3), generator=generator, dtype=torch.int32)
    assert torch.equal(key_to_ijk(ijk_to_key(ijk)), ijk)
    order = torch.argsort(ijk_to_key(ijk))
    assert [tuple(ijk[i].tolist()) for i in order] == sorted(map(tuple, ijk.tolist()))  # key order = (i, j, k)


def test_coarsen_matches_dict_reference(generator):
    fine = _random_level(generator)
    coarse = coarsen_level(fine)
    assert coarse.index == 1 and coarse.voxel_size == 0.5 and coarse.origin == (0.25, 0.25, 0.25)
    groups: dict[tuple, list[int]] = {}
    for r, v in enumerate((fine.ijk // 2).tolist()):
        groups.setdefault(tuple(v), []).append(r)
    assert set(map(tuple, coarse.ijk.tolist())) == set(groups)
    for row, v in enumerate(coarse.ijk.tolist()):
        members = groups[tuple(v)]
        mean = fine.normals[members].mean(0)
        assert torch.allclose(coarse.normals[row], mean / mean.norm(), atol=1e-5)
        known = [int(fine.semantics[m]) for m in members if fine.semantics[m] >= 0]
        if not known:
            assert coarse.semantics[row] == UNKNOWN_CLASS
        else:
            counts = np.bincount(known)
            assert coarse.semantics[row] == int(np.flatnonzero(counts == counts.max())[0])  # ties -> smaller id


def test_majority_class_weights_and_unknown():
    sem = torch.tensor([2, 2, 3, -1, -1, -1, 1])
    inv = torch.tensor([0, 0, 0, 1, 1, 1, 2])
    assert majority_class(sem, inv, 3).tolist() == [2, UNKNOWN_CLASS, 1]
    w = torch.tensor([1.0, 1.0, 5.0, 1.0, 1.0, 1.0, 1.0])
    assert majority_class(sem, inv, 3, weights=w).tolist() == [3, UNKNOWN_CLASS, 1]


def test_build_hierarchy_nests(generator):
    levels = build_hierarchy(_random_level(generator, n=2000, extent=64), 4)
    assert [lvl.index for lvl in levels] == [0, 1, 2, 3]
    for coarse, fine in zip(levels[:-1], levels[1:]):
        assert set(map(tuple, (fine.ijk // 2).tolist())) == set(map(tuple, coarse.ijk.tolist()))
    with pytest.raises(ValueError):
        build_hierarchy(levels[-1], 0)


@pytest.mark.parametrize("ratio", [2, 4, 8])
def test_early_dilation_is_the_8_voxel_trilinear_stencil(generator, ratio):
    fine = torch.randint(0, 40, (300, 3), generator=generator)
    got = set(map(tuple, early_dilation_targets(fine, ratio).tolist()))
    # reference: coarse voxels whose centre is less than one coarse voxel away from a fine centre
    # along every axis (the 8 nearest coarse voxels, as used by trilinear interpolation)
    ref = set()
    for f in fine.tolist():
        p = np.asarray(f) + 0.5                              # fine centre, fine voxel = 1
        near = np.floor(p / ratio).astype(int)
        for o in itertools.product((-2, -1, 0, 1, 2), repeat=3):
            c = near + np.asarray(o)
            if np.all(np.abs((c + 0.5) * ratio - p) < ratio):
                ref.add(tuple(int(v) for v in c))
    assert got == ref
    assert len(early_dilation_targets(fine[:1], ratio)) == 8
    assert set(map(tuple, (fine // ratio).tolist())) <= got
    with pytest.raises(ValueError):
        early_dilation_targets(fine, 3)
