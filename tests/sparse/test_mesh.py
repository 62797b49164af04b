"""The engine's exact voxeliser (`GridBatch.from_mesh`, `ops.mesh`) against exact polygon clipping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xcube_core.sparse import GridBatch
from xcube_core.sparse.ops.mesh import split_large_triangles, surface_voxels
from tests.sparse.helpers import clip_reference, ijk_set


def _soup(tris: np.ndarray, device):
    """A triangle soup as (vertices, faces) tensors."""
    v = torch.tensor(tris.reshape(-1, 3), dtype=torch.float64, device=device)
    return v, torch.arange(len(v), device=device).reshape(-1, 3)


def test_from_mesh_equals_exact_clipping_on_random_triangles(device):
    rng = np.random.default_rng(5)
    tris = rng.uniform(0.3, 6.7, size=(12, 3, 3))
    for voxel, some in ((1.0, tris), (0.5, tris[:4])):  # corners on multiples of the voxel: origin = half
        grid = GridBatch.from_mesh(*_soup(some, device), voxel_sizes=voxel, origins=voxel / 2)
        assert grid.device == device
        assert ijk_set(grid, 0) == clip_reference(some, voxel, (100, 100, 100))


def test_voxels_the_surface_only_clips_are_active(device):
    # Surface sampling at half a voxel (the engine's former method) missed (1, 3, 2), (1, 3, 4) and
    # (3, 4, 2) of this triangle: it crosses them only near an edge or a corner.
    tri = np.array([[[3.74, 1.757, 0.521], [0.389, 4.692, 5.229], [3.576, 4.239, 3.236]]])
    grid = GridBatch.from_mesh(*_soup(tri, device), voxel_sizes=1.0, origins=0.5)
    got = ijk_set(grid, 0)
    assert {(1, 3, 2), (1, 3, 4), (3, 4, 2)} <= got and got == clip_reference(tri, 1.0, (8, 8, 8))


def test_sphere_surface_is_covered_without_slack(device):
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    v = torch.tensor(mesh.vertices, dtype=torch.float32, device=device)
    f = torch.tensor(mesh.faces, dtype=torch.int64, device=device)
    grid = GridBatch.from_mesh(v, f, voxel_sizes=0.1, origins=0.0)
    centres = grid.voxel_to_world(grid.ijk.jdata.float()).cpu()
    mesh_r = float(np.linalg.norm(mesh.vertices, axis=1).min())  # flat faces sit inside the unit sphere
    r = centres.norm(dim=1)
    assert bool(((r <= 1.0 + 0.1 * 3 ** 0.5 / 2 + 1e-5) & (r >= mesh_r * 0.95 - 0.1 * 3 ** 0.5 / 2)).all())
    samples = torch.tensor(mesh.sample(4000, seed=0), dtype=torch.float32, device=device)
    assert bool(grid.coords_in_grid(torch.round(samples / 0.1).long()).all())  # every surface point covered


def test_batches_empty_meshes_and_bad_input(device):
    tri = np.array([[[0.2, 0.2, 0.2], [3.1, 0.4, 0.2], [0.3, 2.2, 1.7]]])
    v, f = _soup(tri, device)
    grid = GridBatch.from_mesh([v, v + 10.0], [f, f], voxel_sizes=1.0, origins=0.5)
    assert ijk_set(grid, 0) == clip_reference(tri, 1.0, (8, 8, 8))
    assert ijk_set(grid, 1) == {(i + 10, j + 10, k + 10) for i, j, k in ijk_set(grid, 0)}
    empty = GridBatch.from_mesh(v, f[:0], voxel_sizes=1.0)
    assert empty.total_voxels == 0
    with pytest.raises(ValueError, match="outside"):
        GridBatch.from_mesh(v, f + 5, voxel_sizes=1.0)
    with pytest.raises(ValueError, match=r"\(T, 3, 3\)"):
        surface_voxels(torch.zeros(2, 3), (4, 4, 4))
    with pytest.raises(ValueError, match="positive"):
        surface_voxels(torch.zeros(1, 3, 3), (4, 0, 4))


def test_splitting_keeps_the_surface_and_names_the_source():
    tris = torch.tensor([[[0.0, 0.0, 0.0], [20.0, 0.0, 0.0], [0.0, 9.0, 0.0]], [[0, 0, 1], [1, 0, 1], [0, 1, 1.0]]],
                        dtype=torch.float64)
    pieces, source = split_large_triangles(tris, max_edge=3.0)
    edges = (pieces - pieces.roll(1, dims=1)).norm(dim=2)
    assert float(edges.max()) <= 3.0
    area = 0.5 * torch.cross(pieces[:, 1] - pieces[:, 0], pieces[:, 2] - pieces[:, 0], dim=1).norm(dim=1)
    assert torch.allclose(torch.zeros(2, dtype=torch.float64).index_add_(0, source, area),
                          torch.tensor([90.0, 0.5], dtype=torch.float64))
