"""Meshes of levels: watertight closed shapes with outward normals, stitched blocks, colours, export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from io_levels import box_ijk, make_level, random_sparse_ijk, sphere_ijk

from xcube_core.classes import CLASS_COLORS
from xcube_core.errors import InvalidInputError
from xcube_core.io import mesh as meshes

VOXEL = 0.1


def _closed(mesh) -> trimesh.Trimesh:
    """The mesh with coincident vertices merged (blocky meshes split vertices per face for flat shading)."""
    return trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces, process=True)


def _voxel_bounds(level) -> np.ndarray:
    ijk = level.ijk.numpy()
    lo = ijk.min(0) * level.voxel_size + np.asarray(level.origin) - level.voxel_size / 2
    hi = ijk.max(0) * level.voxel_size + np.asarray(level.origin) + level.voxel_size / 2
    return np.stack([lo, hi])


def _shapes():
    return {"sphere": sphere_ijk(9.3, centre=(4.2, -3.1, 20.0)), "box": box_ijk((-3, 2, 0), (9, 7, 13))}


@pytest.mark.parametrize("mode", ["smooth", "blocky"])
@pytest.mark.parametrize("shape", ["sphere", "box"])
def test_closed_shapes_are_watertight_with_outward_normals(shape, mode):
    level = make_level(_shapes()[shape], voxel_size=VOXEL)
    mesh = meshes.level_to_mesh(level, mode)
    closed = _closed(mesh)
    assert closed.is_watertight and closed.is_winding_consistent
    assert closed.volume > 0  # positive signed volume <=> faces wound outward
    centre = level.world_points().numpy().mean(0)
    outward = np.einsum("ij,ij->i", mesh.vertex_normals, mesh.vertices - centre)
    assert (outward > 0).mean() > (0.999 if shape == "sphere" else 0.95)
    voxel_volume = level.num_voxels * VOXEL**3
    if mode == "blocky":
        assert closed.volume == pytest.approx(voxel_volume, rel=1e-9)
        np.testing.assert_allclose(mesh.bounds, _voxel_bounds(level), atol=1e-9)
    else:
        # the default smooth surface (sigma 0.7, iso 0.3) lies within half a voxel outside the voxel faces
        dilated = np.prod(np.ptp(_voxel_bounds(level), axis=0) + VOXEL)
        assert 0.9 * voxel_volume < closed.volume < (dilated if shape == "box" else 1.5 * voxel_volume)
        np.testing.assert_allclose(mesh.bounds, _voxel_bounds(level), atol=VOXEL)


def test_smooth_blocks_stitch_into_the_same_surface_as_one_block():
    level = make_level(sphere_ijk(11.5, centre=(0.3, 0.1, -0.2)), voxel_size=VOXEL, attributes=False)
    one = meshes.smooth_mesh(level, block=64)
    many = meshes.smooth_mesh(level, block=8)  # ~64 blocks with seams through the sphere
    assert _closed(many).is_watertight
    assert len(many.vertices) == len(one.vertices) and len(many.faces) == len(one.faces)
    assert many.volume == pytest.approx(one.volume, rel=1e-6)
    np.testing.assert_allclose(np.sort(many.vertices, axis=0), np.sort(one.vertices, axis=0), atol=1e-6)


def test_raw_occupancy_surface_passes_half_way_between_voxel_centres():
    level = make_level(box_ijk((0, 0, 0), (6, 5, 4)), voxel_size=1.0, attributes=False)
    mesh = meshes.smooth_mesh(level, sigma=0.0, iso=0.5)
    np.testing.assert_allclose(mesh.bounds, [[0, 0, 0], [6, 5, 4]], atol=1e-5)  # origin 0.5: faces at 0, 6
    assert mesh.is_watertight


def test_raw_occupancy_with_diagonal_contacts_stays_watertight():
    # random voxels touch along edges and corners: ambiguous marching-cubes faces whose saddle value is
    # exactly 0.5 (a crack when the two cubes sharing the face break the tie differently)
    for seed in (0, 2, 4):
        level = make_level(random_sparse_ijk(60, 6, seed=seed), voxel_size=1.0, attributes=False)
        for block in (4, 8):  # with seams through the contacts, and without
            mesh = meshes.smooth_mesh(level, sigma=0.0, iso=0.5, block=block)
            assert mesh.is_watertight and mesh.volume > 0


def test_far_apart_clusters_do_not_densify_the_bounding_box():
    a, b = sphere_ijk(3.0), sphere_ijk(3.0, centre=(500.0, 500.0, 500.0))
    level = make_level(np.concatenate([a, b]), voxel_size=1.0)
    mesh = meshes.smooth_mesh(level)  # a dense 512^3 float64 field would need 1 GB
    assert len(mesh.split(only_watertight=True)) == 2


def test_vertex_colours_follow_semantic_classes():
    ijk = box_ijk((0, 0, 0), (12, 6, 6))
    level = make_level(ijk, voxel_size=VOXEL)
    level.semantics = torch.from_numpy(np.where(ijk[:, 0] < 6, 2, 6))  # building | vehicle
    for mode in ("smooth", "blocky"):
        mesh = meshes.level_to_mesh(level, mode)
        colors = mesh.visual.vertex_colors[:, :3]
        x = (mesh.vertices[:, 0] - level.origin[0]) / VOXEL
        left, right = x < 4.5, x > 6.5
        assert (colors[left] == CLASS_COLORS[2]).all() and (colors[right] == CLASS_COLORS[6]).all()


@pytest.mark.parametrize("suffix", [".ply", ".obj", ".glb"])
def test_export_and_reload_keeps_geometry_and_colours(suffix, tmp_path):
    level = make_level(sphere_ijk(5.0), voxel_size=VOXEL)
    level.semantics = torch.full((level.num_voxels,), 4)
    mesh = meshes.smooth_mesh(level)
    path = meshes.export_mesh(mesh, tmp_path / f"level{suffix}")
    back = trimesh.load(path, force="mesh")
    assert len(back.faces) == len(mesh.faces)
    np.testing.assert_allclose(back.bounds, mesh.bounds, atol=1e-5)
    assert (np.asarray(back.visual.vertex_colors)[:, :3] == CLASS_COLORS[4]).all()
    assert _closed(back).is_watertight


def test_empty_level_and_bad_arguments(tmp_path):
    empty = make_level(np.zeros((0, 3), np.int32))
    assert len(meshes.smooth_mesh(empty).faces) == 0 and len(meshes.blocky_mesh(empty).faces) == 0
    level = make_level(sphere_ijk(2.0))
    with pytest.raises(InvalidInputError, match="mode"):
        meshes.level_to_mesh(level, "voxels")
    with pytest.raises(InvalidInputError, match="iso"):
        meshes.smooth_mesh(level, iso=1.5)
    with pytest.raises(InvalidInputError, match=r"\.ply"):
        meshes.export_mesh(meshes.blocky_mesh(level), tmp_path / "level.fbx")
