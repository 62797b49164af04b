"""Point clouds: occupancy, PCA normals vs the analytic sphere, labels, file formats and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from xcube_core.data.assets import PointData, load_points
from xcube_core.data.points import voxelize_points, voxelize_points_file
from xcube_core.errors import DataError


def _sphere_points(n=60000, radius=2.0, seed=0):
    p = np.random.default_rng(seed).normal(size=(n, 3))
    return radius * p / np.linalg.norm(p, axis=1, keepdims=True)


def test_pca_normals_on_a_sphere_point_outwards():
    pts = _sphere_points()
    labels = (pts[:, 2] > 0).astype(np.int64)
    sample = voxelize_points(PointData(pts, None, labels), num_levels=3, mode="unit_box", resolution=64)
    norm = sample.metadata["normalization"]
    assert sample.metadata["normals_source"] == "pca"
    for lvl in sample.levels:
        world = (lvl.ijk.double() + 0.5) * lvl.voxel_size / norm["scale"] + torch.tensor(norm["offset"])
        cos = (torch.nn.functional.normalize(world, dim=1) * lvl.normals.double()).sum(1)
        assert torch.quantile(cos, 0.05) > np.cos(np.radians(6))
        # labels: majority per voxel, upper half = 1
        far = world[:, 2].abs() > 2 * lvl.voxel_size / norm["scale"]
        assert torch.equal(lvl.semantics[far], (world[far, 2] > 0).long())
    # occupancy: exactly the voxels that contain points
    fine = sample.levels[-1]
    u = (pts - norm["offset"]) * norm["scale"] / fine.voxel_size + 1e-4
    assert set(map(tuple, np.floor(u).astype(int).tolist())) == set(map(tuple, fine.ijk.tolist()))


def test_given_normals_are_averaged(tmp_path):
    pts = _sphere_points(20000)
    path = tmp_path / "scan.npz"
    np.savez(path, points=pts, normals=(pts / 2.0).astype(np.float32))
    sample = voxelize_points_file(path, num_levels=2, mode="metric", voxel_size=0.25)
    assert sample.metadata["normals_source"] == "given" and sample.levels[-1].semantics is None
    lvl = sample.levels[-1]
    world = (lvl.ijk.double() + 0.5) * 0.25 + torch.tensor(sample.metadata["normalization"]["offset"])
    cos = (torch.nn.functional.normalize(world, dim=1) * lvl.normals.double()).sum(1)
    assert cos.min() > 0.95


def test_ply_with_labels(tmp_path):
    pts = _sphere_points(3000)
    cloud = trimesh.PointCloud(pts)
    path = tmp_path / "cloud.ply"
    cloud.export(path)
    data = load_points(path)
    assert data.points.shape == (3000, 3) and data.labels is None
    npz = tmp_path / "lab.npz"
    np.savez(npz, xyz=pts, labels=np.full(3000, 4))
    assert voxelize_points_file(npz, num_levels=2, voxel_size=0.5).levels[0].semantics.unique().tolist() == [4]


def _write_ply(path, pts, normals, labels, binary: bool) -> None:
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0", f"element vertex {len(pts)}",
              *[f"property float {n}" for n in ("x", "y", "z", "nx", "ny", "nz")], "property uchar label",
              "end_header"]
    rows = np.zeros(len(pts), dtype=[(n, "<f4") for n in ("x", "y", "z", "nx", "ny", "nz")] + [("label", "u1")])
    for i, n in enumerate("xyz"):
        rows[n] = pts[:, i]
        rows["n" + n] = normals[:, i]
    rows["label"] = labels
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode())
        if binary:
            f.write(rows.tobytes())
        else:
            f.write("".join(" ".join(str(v) for v in r) + "\n" for r in rows.tolist()).encode())


@pytest.mark.parametrize("binary", [False, True])
def test_ply_properties_normals_and_labels(tmp_path, binary):
    pts = _sphere_points(500).astype(np.float32)
    normals = pts / 2.0
    labels = (pts[:, 0] > 0).astype(np.uint8) + 3
    path = tmp_path / "scan.ply"
    _write_ply(path, pts, normals, labels, binary)
    data = load_points(path)
    assert np.allclose(data.points, pts, atol=1e-5) and np.allclose(data.normals, normals, atol=1e-5)
    assert np.array_equal(data.labels, labels)
    sample = voxelize_points_file(path, num_levels=2, voxel_size=0.5)
    assert sample.metadata["normals_source"] == "given" and set(sample.levels[-1].semantics.tolist()) <= {3, 4}


@pytest.mark.parametrize("content", [b"", b"ply\nformat ascii 1.0\nend_header\n"])
def test_bad_point_files_raise_data_error(tmp_path, content):
    path = tmp_path / "bad.ply"
    path.write_bytes(content)
    with pytest.raises(DataError, match="bad.ply"):
        voxelize_points_file(path)
    npz = tmp_path / "bad.npz"
    np.savez(npz, points=np.zeros((4, 2)))
    with pytest.raises(DataError, match="bad.npz"):
        voxelize_points_file(npz)
