"""`xcube export` and `xcube import-vdb` end to end through xcube_core.cli.main."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from io_levels import make_level, sort_rows, sphere_ijk

from xcube_core.cli import main
from xcube_core.data.storage import load_sample
from xcube_core.io import openvdb_locator, vdb


@pytest.fixture
def level_file(tmp_path):
    level = make_level(sphere_ijk(6.0, centre=(3.0, 3.0, 8.0)), voxel_size=0.2, index=1)
    return level, vdb.write_level(level, tmp_path / "level_1.vdb")


def test_export_writes_mesh_and_preview(level_file, tmp_path, capsys):
    level, path = level_file
    glb, png = tmp_path / "out" / "level.glb", tmp_path / "out" / "level.png"
    assert main(["export", str(path), "--to", str(glb), "--to", str(png), "--mode", "blocky"]) == 0
    mesh = trimesh.load(glb, force="mesh")
    assert trimesh.Trimesh(mesh.vertices, mesh.faces).is_watertight
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out


def test_import_vdb_writes_level_sample_vdb_preview_and_mesh(tmp_path):
    openvdb = openvdb_locator.import_openvdb()
    grid = openvdb.FloatGrid(0.0)
    dense = np.zeros((10, 10, 10), np.float32)
    dense[2:8, 3:7, 1:9] = 0.8
    dense[5, 5, 5] = 0.2
    grid.copyFromArray(dense, (-5, 0, 0))
    grid.name = "smoke"
    grid.transform = openvdb.createLinearTransform(0.5)
    openvdb.write(str(tmp_path / "mine.vdb"), [grid])
    out = tmp_path / "imported"
    assert main(["import-vdb", str(tmp_path / "mine.vdb"), "--out", str(out), "--threshold", "0.5",
                 "--mesh", "ply"]) == 0
    sample = load_sample(out / "mine.safetensors")
    want = np.argwhere(dense > 0.5) + (-5, 0, 0)
    np.testing.assert_array_equal(sort_rows(sample.levels[0].ijk.numpy())[0], sort_rows(want)[0])
    assert sample.levels[0].voxel_size == pytest.approx(0.5)
    assert sample.levels[0].normals is not None
    back = vdb.read_level(out / "mine.vdb")
    assert back.num_voxels == len(want)
    assert (out / "mine.png").is_file() and len(trimesh.load(out / "mine.ply").faces) > 0


def test_cli_errors_are_one_clear_line(tmp_path, level_file, capsys):
    _, path = level_file
    bad = tmp_path / "fake.vdb"
    bad.write_text("hello")
    assert main(["export", str(bad), "--to", str(tmp_path / "x.glb")]) == 2
    assert "not an OpenVDB file" in capsys.readouterr().err
    assert main(["export", str(path), "--to", str(tmp_path / "x.fbx")]) == 2
    assert "unknown suffix" in capsys.readouterr().err
    assert main(["export", str(path), "--grid", "temperature", "--to", str(tmp_path / "x.glb")]) == 2
    assert "no grid named 'temperature'" in capsys.readouterr().err
    assert main(["import-vdb", str(path), "--out", str(tmp_path / "o"), "--threshold", "5"]) == 2
    assert "exceeds --threshold" in capsys.readouterr().err
    assert main(["import-vdb", str(path), "--out", str(tmp_path / "o"), "--list"]) == 0
    assert "semantics" in capsys.readouterr().out


def test_bench_io_runs_small_and_prints_json(capsys):
    import json

    assert main(["bench", "io", "--voxels", "3000", "--mesh-voxels", "2000", "--preview-voxels", "2000",
                 "--repeat", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    steps = {r["step"] for r in report["rows"]}
    assert report["benchmark"] == "io" and report["voxels"] > 2500
    assert {"write_level -> .vdb file", "read_level <- .vdb file", "smooth mesh", "blocky mesh"} <= steps
