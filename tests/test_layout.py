"""Layouts from meshes (xcube_core.layout): exact voxels against a hand-made reference, classes from part
names, added ground, the same grid through the API and the CLI, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xcube_core.classes import CLASS_NAMES
from xcube_core.cli import main
from xcube_core.errors import InvalidInputError
from xcube_core.io.scene import read_scene
from xcube_core.layout import layout_from_triangles, load_layout
from xcube_core.pipeline import XCubePipeline

SHAPE, VOXEL = (8, 8, 4), 2.0
ROAD, BUILDING, GROUND = CLASS_NAMES.index("road"), CLASS_NAMES.index("building"), CLASS_NAMES.index("ground")


def _quad(x0, y0, x1, y1, z):
    v = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=np.float64)
    return v, np.array([[0, 1, 2], [0, 2, 3]])


def _keys(level):
    return sorted(map(tuple, level.ijk.tolist()))


def test_a_flat_quad_gives_exactly_its_voxels_and_ground_fills_the_rest():
    v, f = _quad(2.5, 4.5, 9.5, 7.5, 3.0)  # x voxels 1..4, y voxels 2..3, z voxel 1
    level = layout_from_triangles(v, f, np.full(2, ROAD), SHAPE, VOXEL, CLASS_NAMES)
    quad = {(i, j, 1) for i in range(1, 5) for j in range(2, 4)}
    ground = {(i, j, 0) for i in range(8) for j in range(8)}
    assert set(_keys(level)) == quad | ground and level.num_voxels == len(quad) + len(ground)
    cls = dict(zip(map(tuple, level.ijk.tolist()), level.semantics.tolist()))
    assert all(cls[k] == ROAD for k in quad) and all(cls[k] == GROUND for k in ground)
    assert torch.allclose(level.normals.abs()[:, 2], torch.ones(level.num_voxels))
    bare = layout_from_triangles(v, f, None, SHAPE, VOXEL, CLASS_NAMES, ground=False)
    assert set(_keys(bare)) == quad and bare.semantics is None


def test_fit_scales_a_large_layout_into_the_box_and_metric_refuses_it():
    v, f = _quad(-100.0, -50.0, 300.0, 150.0, 0.0)  # 400 m x 200 m
    with pytest.raises(InvalidInputError, match="--fit"):
        layout_from_triangles(v, f, None, SHAPE, VOXEL, CLASS_NAMES)
    level = layout_from_triangles(v, f, None, SHAPE, VOXEL, CLASS_NAMES, fit=True, ground=False)
    ij = level.ijk[:, :2]
    assert int(ij[:, 0].min()) == 0 and int(ij[:, 0].max()) == 7  # spans X
    assert int(ij[:, 1].max()) <= 4 and int(level.ijk[:, 2].max()) == 0  # keeps the 2:1 aspect, flat


@pytest.mark.parametrize("vertices, faces, match", [
    (np.zeros((3, 3)), np.zeros((0, 3), dtype=np.int64), "no faces"),
    (np.array([[0, 0, 0], [1, 0, 0], [np.nan, 1, 0]]), np.array([[0, 1, 2]]), "not finite"),
    (np.zeros((3, 3)), np.array([[0, 1, 3]]), "face indices"),
    (np.zeros((3, 2)), np.array([[0, 1, 2]]), r"\(V, 3\)"),
    (np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1.0]]), np.array([[0, 1, 2]]), "no triangle area"),
])
def test_bad_layout_meshes_get_clear_errors(vertices, faces, match):
    with pytest.raises(InvalidInputError, match=match):
        layout_from_triangles(vertices, faces, None, SHAPE, VOXEL, CLASS_NAMES)


@pytest.fixture(scope="module")
def obj_file(tmp_path_factory):
    """An OBJ with named parts: a road strip and a building box, in metres."""
    path = tmp_path_factory.mktemp("layout") / "block.obj"
    lines, base = [], 1
    parts = [("road_main", _quad(0.5, 0.5, 15.5, 3.5, 0.5)), ("building_a", _quad(6.5, 8.5, 11.5, 13.5, 5.0))]
    for name, (v, f) in parts:
        lines.append(f"o {name}")
        lines += [f"v {a} {b} {c}" for a, b, c in v]
        lines += [f"f {a + base} {b + base} {c + base}" for a, b, c in f]
        base += len(v)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_part_names_give_classes(obj_file):
    level = load_layout(obj_file, SHAPE, VOXEL, CLASS_NAMES, ground=False)
    cls = dict(zip(map(tuple, level.ijk.tolist()), level.semantics.tolist()))
    assert {cls[k] for k in cls if k[2] == 0} == {ROAD} and {cls[k] for k in cls if k[2] == 2} == {BUILDING}


def test_the_cli_and_the_api_give_the_same_coarse_grid(obj_file, tmp_path, capsys):
    pipe = XCubePipeline.tiny(seed=0)
    model = pipe.save_pretrained(tmp_path / "model")
    api = load_layout(obj_file, pipe.coarse_shape, pipe.voxel_sizes[0], pipe.class_names)
    first = next(pipe.generate("a block", steps=2, condition=api))
    out = tmp_path / "scene"
    assert main(["generate", "a block", "--layout", str(obj_file), "--model", str(model), "--out", str(out),
                 "--steps", "2", "--mesh-format", "none", "--no-preview"]) == 0
    cli = read_scene(out)
    assert _keys(cli[0]) == _keys(api) == _keys(first)
    by_cli = dict(zip(map(tuple, cli[0].ijk.tolist()), cli[0].semantics.tolist()))
    assert by_cli == dict(zip(map(tuple, api.ijk.tolist()), api.semantics.tolist()))
    capsys.readouterr()
    far = tmp_path / "far.obj"
    far.write_text("o road\nv 0 0 0\nv 100 0 0\nv 0 100 0\nf 1 2 3\n")
    assert main(["generate", "a block", "--layout", str(far), "--model", str(model), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "far.obj" in err and "--fit" in err
    empty = tmp_path / "empty.obj"
    empty.write_text("v 0 0 0\n")
    assert main(["generate", "a block", "--layout", str(empty), "--model", str(model), "--out", str(out)]) == 2
    assert "no triangles" in capsys.readouterr().err
