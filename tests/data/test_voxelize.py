"""Mesh voxelisation against closed-form shapes: coverage, distance, normals, nesting, classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from xcube_core.classes import CLASS_NAMES
from xcube_core.data.assets import MeshData, class_of_part, load_mesh
from xcube_core.data.hierarchy import UNKNOWN_CLASS
from xcube_core.data.voxelize import voxelize_mesh, voxelize_mesh_file, voxelize_triangles
from xcube_core.errors import DataError


def _mesh(m: trimesh.Trimesh, cls=None) -> MeshData:
    return MeshData(np.asarray(m.vertices, np.float64), np.asarray(m.faces, np.int64), cls, ["shape"])


def _world_centres(level, norm) -> torch.Tensor:
    """Voxel centres mapped back to the mesh's world frame. (N, 3) float64."""
    unit = (level.ijk.double() + 0.5) * level.voxel_size
    return unit / norm["scale"] + torch.tensor(norm["offset"], dtype=torch.float64)


def _angles_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    cos = (torch.nn.functional.normalize(a.double(), dim=1) * torch.nn.functional.normalize(b.double(), dim=1)).sum(1)
    return torch.rad2deg(torch.acos(cos.clamp(-1, 1)))


# closed forms: signed distance and outward normal
def _sphere(p):
    r = p.norm(dim=1)
    return r - 1.0, p / r[:, None]


def _torus(p, big=1.0, small=0.35):
    q = torch.stack([p[:, :2].norm(dim=1) - big, p[:, 2]], dim=1)
    ring = torch.nn.functional.normalize(torch.cat([p[:, :2], torch.zeros_like(p[:, :1])], 1), dim=1)
    n = torch.nn.functional.normalize(ring * q[:, :1] + torch.tensor([0.0, 0.0, 1.0], dtype=p.dtype) * q[:, 1:], dim=1)
    return q.norm(dim=1) - small, n


def _box(p, half=(0.6, 0.4, 0.3)):
    h = torch.tensor(half, dtype=p.dtype)
    d = p.abs() - h
    outside = d.clamp(min=0).norm(dim=1) + d.max(dim=1).values.clamp(max=0)
    axis = (p.abs() / h).argmax(dim=1)
    n = torch.zeros_like(p)
    n[torch.arange(len(p)), axis] = torch.sign(p[torch.arange(len(p)), axis])
    return outside, n


SHAPES = {
    "sphere": (lambda: trimesh.creation.icosphere(subdivisions=5), _sphere),
    "torus": (lambda: trimesh.creation.torus(1.0, 0.35, major_sections=160, minor_sections=64), _torus),
    "box": (lambda: trimesh.creation.box((1.2, 0.8, 0.6)), _box),
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_surface_voxels_match_closed_form(name):
    make, sdf = SHAPES[name]
    res = 96
    sample = voxelize_mesh(_mesh(make()), num_levels=3, mode="unit_box", resolution=res)
    norm = sample.metadata["normalization"]
    finest = sample.levels[-1]
    h = finest.voxel_size / norm["scale"]  # world voxel edge
    centres = _world_centres(finest, norm)
    dist, _ = sdf(centres)
    # every active voxel centre lies within half a voxel diagonal (+ tessellation slack) of the surface
    assert dist.abs().max() <= h * (np.sqrt(3) / 2 + 0.05)
    # ... and every surface point's voxel is active (dense sampling of the closed-form surface)
    pts = torch.from_numpy(trimesh.sample.sample_surface_even(make(), 20000, seed=0)[0])
    gd, gn = sdf(pts)
    pts = pts - gd[:, None] * gn  # project mesh samples onto the analytic surface
    unit = (pts - torch.tensor(norm["offset"])) * norm["scale"] / finest.voxel_size
    keys = set(map(tuple, unit.floor().long().tolist()))
    have = set(map(tuple, finest.ijk.tolist()))
    covered = np.mean([k in have for k in keys])
    assert covered >= 0.995, covered
    assert not any(k[0] < 0 or k[0] >= res for k in have)


@pytest.mark.parametrize("name", ["sphere", "torus"])
def test_normals_within_a_few_degrees(name):
    make, sdf = SHAPES[name]
    sample = voxelize_mesh(_mesh(make()), num_levels=3, mode="unit_box", resolution=64)
    norm = sample.metadata["normalization"]
    for level in sample.levels:
        _, n = sdf(_world_centres(level, norm))
        ang = _angles_deg(level.normals, n)
        assert torch.quantile(ang, 0.95) < 5.0, (level.index, ang.mean())
        assert torch.allclose(level.normals.norm(dim=1), torch.ones(level.num_voxels), atol=1e-5)


def test_box_faces_have_axis_normals():
    sample = voxelize_mesh(_mesh(SHAPES["box"][0]()), num_levels=2, mode="unit_box", resolution=64)
    norm = sample.metadata["normalization"]
    finest = sample.levels[-1]
    _, n = _box(_world_centres(finest, norm))
    # away from edges the voxel touches one face only: its normal is exactly the face normal
    corner = (finest.normals.abs() < 0.999).all(dim=1)
    flat = ~corner
    assert flat.float().mean() > 0.8
    assert _angles_deg(finest.normals[flat], n[flat]).max() < 1.0


def test_levels_nest_and_halve():
    sample = voxelize_mesh(_mesh(SHAPES["torus"][0]()), num_levels=4, mode="unit_box", resolution=64)
    for coarse, fine in zip(sample.levels[:-1], sample.levels[1:]):
        assert fine.voxel_size == pytest.approx(coarse.voxel_size / 2)
        parents = set(map(tuple, torch.div(fine.ijk, 2, rounding_mode="floor").tolist()))
        assert parents == set(map(tuple, coarse.ijk.tolist()))  # contained, and nothing extra
        assert fine.origin == pytest.approx((fine.voxel_size / 2,) * 3)


def _clip_nonempty(tri: np.ndarray, lo: np.ndarray) -> bool:
    """Sutherland-Hodgman: does the triangle keep any point inside the closed cube [lo, lo + 1]?"""
    poly = [p for p in tri]
    for axis in range(3):
        for bound, sign in ((lo[axis], 1.0), (lo[axis] + 1.0, -1.0)):
            out = []
            for k, cur in enumerate(poly):
                prev = poly[k - 1]
                dc, dp = sign * (cur[axis] - bound), sign * (prev[axis] - bound)
                if (dc >= 0) != (dp >= 0):
                    out.append(prev + (cur - prev) * (dp / (dp - dc)))
                if dc >= 0:
                    out.append(cur)
            poly = out
            if not poly:
                return False
    return True


def test_exact_overlap_against_polygon_clipping():
    rng = np.random.default_rng(3)
    tris = rng.uniform(0.5, 7.5, size=(12, 3, 3))
    tris[:4] = tris[:4] * 0.3 + 3.0  # some small triangles too
    ijk, _, _ = voxelize_triangles(tris, (8, 8, 8))
    got = set(map(tuple, ijk.tolist()))
    ref = set()
    for tri in tris:
        lo, hi = np.floor(tri.min(0)).astype(int), np.floor(tri.max(0)).astype(int)
        for v in np.stack(np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3):
            if _clip_nonempty(tri, v.astype(float)):
                ref.add(tuple(int(c) for c in v))
    assert got == ref


def test_metric_mode_keeps_metres():
    m = trimesh.creation.box((4.0, 2.0, 1.0))
    m.apply_translation((10.0, 5.0, 0.5))
    sample = voxelize_mesh(_mesh(m), num_levels=3, mode="metric", voxel_size=0.25)
    norm = sample.metadata["normalization"]
    assert norm["mode"] == "metric" and norm["scale"] == 1.0 and sample.levels[-1].voxel_size == 0.25
    world = _world_centres(sample.levels[-1], norm)
    assert world.min(0).values.tolist() == pytest.approx([8.125, 4.125, 0.125], abs=1e-6)
    assert all(s % 4 == 0 for s in sample.metadata["grid_shape"])


def test_semantics_from_part_names(tmp_path):
    scene = trimesh.Scene()
    walls = trimesh.creation.box((1.0, 1.0, 1.0))
    roof = trimesh.creation.box((1.2, 0.2, 1.2))
    roof.apply_translation((0, 0.6, 0))  # glTF is +Y up: the roof sits on top once turned to +Z up
    scene.add_geometry(walls, geom_name="house_walls")
    scene.add_geometry(roof, geom_name="Roof_tiles")
    path = tmp_path / "house.glb"
    scene.export(path)
    mesh = load_mesh(path)
    assert sorted(set(mesh.face_class.tolist())) == [CLASS_NAMES.index("building"), CLASS_NAMES.index("roof")]
    sample = voxelize_mesh_file(path, num_levels=2, resolution=32)
    assert sample.metadata["up_axis_in_file"] == "y"
    for level in sample.levels:
        top = level.ijk[:, 2] >= level.ijk[:, 2].max() - 0
        assert (level.semantics[top] == CLASS_NAMES.index("roof")).all()
        low = level.ijk[:, 2] <= level.ijk[:, 2].min() + 1
        assert (level.semantics[low] == CLASS_NAMES.index("building")).all()


def test_class_rules():
    assert class_of_part("Oak_Leaves.001") == CLASS_NAMES.index("tree")
    assert class_of_part("street_lamp") == CLASS_NAMES.index("pole")
    assert class_of_part("Mystery") == UNKNOWN_CLASS
    assert class_of_part("Glass", {"glass": "building"}) == CLASS_NAMES.index("building")
    with pytest.raises(ValueError, match="class must be one of"):
        class_of_part("glass", {"glass": "window"})


def test_broken_and_empty_meshes_raise_data_error_naming_the_file(tmp_path):
    bad = tmp_path / "bad.obj"
    bad.write_text("v 1 2\nf 1 2 9\n")
    empty = tmp_path / "empty.stl"
    empty.write_bytes(b"")
    for path in (bad, empty):
        with pytest.raises(DataError, match=path.name):
            voxelize_mesh_file(path, num_levels=2, resolution=16)


def test_non_finite_faces_are_dropped_and_huge_triangles_split():
    m = trimesh.creation.box((1.0, 1.0, 1.0))
    v = np.vstack([m.vertices, [[np.nan, 0.0, 0.0]]])
    f = np.vstack([m.faces, [[0, 1, len(v) - 1]]])
    clean = voxelize_mesh(_mesh(m), num_levels=2, resolution=32)
    dirty = voxelize_mesh(MeshData(v, f, None, ["box"]), num_levels=2, resolution=32)
    assert torch.equal(clean.levels[-1].ijk, dirty.levels[-1].ijk)
    # one triangle spanning a 256^3 grid: every voxel centre of the result is near its plane
    tri = np.array([[[0.5, 0.5, 0.5], [255.5, 0.5, 100.0], [0.5, 255.5, 200.0]]])
    ijk, normals, _ = voxelize_triangles(tri, (256, 256, 256))
    n = np.cross(tri[0, 1] - tri[0, 0], tri[0, 2] - tri[0, 0])
    n /= np.linalg.norm(n)
    dist = np.abs((ijk.numpy() + 0.5 - tri[0, 0]) @ n)
    assert dist.max() <= np.abs(n).sum() / 2 + 1e-4  # within the cube's support radius of the plane
    assert torch.allclose(normals, torch.from_numpy(n).float().expand_as(normals), atol=1e-5)


def test_up_axis_conversion(tmp_path):
    m = trimesh.creation.box((0.2, 2.0, 0.4))  # tall along +Y
    m.export(tmp_path / "post.glb")
    m.export(tmp_path / "post.stl")
    ext = {}
    for name, up in (("post.glb", None), ("post.stl", None), ("post.stl", "y")):
        v = load_mesh(tmp_path / name, up_axis=up).vertices
        ext[(name, up)] = np.ptp(v, axis=0)
    assert ext[("post.glb", None)] == pytest.approx([0.2, 0.4, 2.0])  # glTF: +Y up -> +Z up
    assert ext[("post.stl", None)] == pytest.approx([0.2, 2.0, 0.4])  # others: already +Z up
    assert ext[("post.stl", "y")] == pytest.approx([0.2, 0.4, 2.0])
