"""Layout-to-scene voxeliser against analytic and densely sampled references."""

from __future__ import annotations

import numpy as np
import pytest

from tests.deps import require

require("bpy")

from addon_support import ADDON_MODULE  # noqa: E402

from tests.sparse.helpers import clip_reference  # noqa: E402


@pytest.fixture
def vox(addon):
    import importlib

    return importlib.import_module(f"{ADDON_MODULE}.voxelize")


def _box_triangles(lo, hi) -> np.ndarray:
    """12 triangles of the axis-aligned box [lo, hi]. Shape: (12, 3, 3)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    c = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    return np.array([[c[a], c[b], c[d]] for a, b, cc, d in quads for (b, d) in ((b, cc), (cc, d))])


def test_box_surface_and_fill_match_the_analytic_voxels(vox):
    tris = _box_triangles((1.2, 1.2, 0.0), (6.8, 4.6, 3.4))  # voxel 1 m: i 1..6, j 1..4, k 0..3
    box = {(i, j, k) for i in range(1, 7) for j in range(1, 5) for k in range(0, 4)}
    shell = {v for v in box if v[0] in (1, 6) or v[1] in (1, 4) or v[2] in (0, 3)}
    surface = {tuple(v) for v in vox.voxelize_triangles(tris, 1.0, (16, 16, 8)).tolist()}
    assert surface == shell
    filled = vox.voxelize_triangles(tris, 1.0, (16, 16, 8), fill=True)
    assert {tuple(v) for v in filled.tolist()} == box
    assert filled.dtype == np.int32 and filled.shape == (len(box), 3)


def test_slanted_triangles_match_exact_clipping(vox):
    rng = np.random.default_rng(3)
    tris = rng.uniform(0.3, 9.7, size=(12, 3, 3))
    got = {tuple(v) for v in vox.voxelize_triangles(tris, 1.0, (10, 10, 10)).tolist()}
    assert got == clip_reference(tris, 1.0, (10, 10, 10))
    # Half the voxel size: same surface, finer cells, still exact.
    got = {tuple(v) for v in vox.voxelize_triangles(tris[:4], 0.5, (20, 20, 20)).tolist()}
    assert got == clip_reference(tris[:4], 0.5, (20, 20, 20))


def test_outside_the_grid_and_empty_input(vox):
    tris = _box_triangles((-10, -10, -10), (-5, -5, -5))
    assert vox.voxelize_triangles(tris, 2.0, (8, 8, 8)).shape == (0, 3)
    assert vox.voxelize_triangles(np.zeros((0, 3, 3)), 2.0, (8, 8, 8)).shape == (0, 3)
    with pytest.raises(ValueError, match="voxel_size"):
        vox.voxelize_triangles(tris, 0.0, (8, 8, 8))


def test_the_addon_gives_the_engines_voxels_on_the_same_mesh(vox):
    """Until layouts travel as meshes, the add-on's numpy copy must agree with `GridBatch.from_mesh`."""
    import torch

    from xcube_core.sparse import GridBatch

    rng = np.random.default_rng(11)
    tris = np.concatenate([rng.uniform(0.2, 15.8, size=(24, 3, 3)), _box_triangles((2.3, 3.1, 0.4), (9.6, 7.2, 5.5))])
    for voxel in (1.0, 0.5):
        shape = tuple(int(16 / voxel) for _ in range(3))
        addon = {tuple(v) for v in vox.voxelize_triangles(tris, voxel, shape).tolist()}
        v = torch.tensor(tris.reshape(-1, 3), dtype=torch.float64)
        grid = GridBatch.from_mesh(v, torch.arange(len(v)).reshape(-1, 3), voxel_sizes=voxel, origins=voxel / 2)
        engine = {tuple(c) for c in grid.ijk.jdata.tolist() if all(0 <= x < n for x, n in zip(c, shape))}
        assert addon == engine and len(engine) > 100
