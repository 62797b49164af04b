"""Level <-> .vdb through the real OpenVDB library: round trips, layout, metadata, foreign and bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from io_levels import box_ijk, make_level, random_sparse_ijk, sort_rows, sphere_ijk

from xcube_core.errors import DataError, InvalidInputError
from xcube_core.io import openvdb_locator, vdb
from xcube_core.io.vdb_blocks import BlockPartition, _gather_by_iteration, gather_active
from xcube_core.level import Level

openvdb = openvdb_locator.import_openvdb()


def _active_voxels(grid) -> tuple[np.ndarray, np.ndarray]:
    """Reference reader: OpenVDB's own value iterator (no dense copies); active tiles expanded."""
    ijk, values = [], []
    for item in grid.iterOnValues():
        lo, hi = np.asarray(item.min), np.asarray(item.max)
        box = np.stack(np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(lo, hi)], indexing="ij"), -1)
        ijk.append(box.reshape(-1, 3))
        values.extend([item.value] * len(ijk[-1]))
    if not ijk:
        return np.zeros((0, 3), np.int64), np.zeros(0, np.float32)
    return np.concatenate(ijk).astype(np.int64), np.asarray(values, np.float32)


@pytest.fixture
def level() -> Level:
    # two clusters (one at negative coordinates) + a sphere: several blocks and both signs
    ijk = np.concatenate([random_sparse_ijk(3000, 40, seed=1, offset=(-30, -5, -60)),
                          sphere_ijk(9.5, centre=(70, 20, 3))])
    return make_level(np.unique(ijk, axis=0), voxel_size=0.2, seed=3, index=2)


def test_file_read_by_openvdb_has_identical_voxels_and_values(level, tmp_path):
    path = vdb.write_level(level, tmp_path / "level.vdb")
    grids, file_meta = openvdb.readAll(str(path))
    by_name = {g.name: g for g in grids}
    assert set(by_name) == {"density", "normal", "semantics"}
    density = by_name["density"]
    assert density.gridClass == openvdb.GridClass.FOG_VOLUME
    ijk, values = _active_voxels(density)
    want, normals, semantics = sort_rows(level.ijk.numpy(), level.normals.numpy(), level.semantics.numpy())
    got, values = sort_rows(ijk, values)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(values, 1.0)
    nacc, sacc = by_name["normal"].getConstAccessor(), by_name["semantics"].getConstAccessor()
    for p, n, s in zip(want[::37].tolist(), normals[::37], semantics[::37]):
        np.testing.assert_array_equal(nacc.getValue(p), n)
        assert sacc.getValue(p) == float(s)
        assert sacc.isValueOn(p) == (s != -1)  # -1 ("unknown") is the semantics background
    # transform: voxel ijk's centre at ijk * voxel + origin (origin = half a voxel)
    for p in want[:5].tolist():
        np.testing.assert_allclose(density.transform.indexToWorld(p), np.asarray(p) * 0.2 + 0.1, atol=1e-9)
    assert density.transform.voxelSize() == pytest.approx((0.2, 0.2, 0.2))
    for meta in (file_meta, density.metadata, by_name["semantics"].metadata):
        assert meta["xcube_level"] == 2
        assert meta["xcube_voxel_size"] == pytest.approx(0.2)
        assert json.loads(meta["class_names"]) == list(level.class_names)
        assert meta["prompt"] == "a small test town" and meta["seed"] == 7 and meta["model_id"] == "test-model"


def test_level_round_trip_through_file_and_bytes(level, tmp_path):
    vdb.write_level(level, tmp_path / "a.vdb")
    for back in (vdb.read_level(tmp_path / "a.vdb"), vdb.level_from_bytes(vdb.level_to_bytes(level))):
        want = sort_rows(level.ijk.numpy(), level.normals.numpy(), level.semantics.numpy())
        got = sort_rows(back.ijk.numpy(), back.normals.numpy(), back.semantics.numpy())
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
        assert back.ijk.dtype == torch.int32 and back.semantics.dtype == torch.int64
        assert back.index == 2 and back.voxel_size == pytest.approx(0.2)
        assert back.origin == pytest.approx(level.origin)
        assert back.class_names == level.class_names
        assert back.metadata == level.metadata


def test_a_level_written_in_parts_reads_back_as_the_whole(level, tmp_path):
    """`write_level_parts`: parts split along X at a coordinate inside the writer's 8-voxel blocks (so
    parts share blocks) give the file `write_level` gives for their union."""
    from xcube_core.inpaint import select

    x = level.ijk[:, 0]
    cuts = [int(x.min()) - 1, int(x.min()) + 3, int(x.min()) + 13, int(x.max()) + 1]
    parts = [select(level, (x > lo) & (x <= hi)) for lo, hi in zip(cuts[:-1], cuts[1:])]
    assert sum(p.num_voxels for p in parts) == level.num_voxels and all(p.num_voxels for p in parts)
    like = select(level, torch.zeros(level.num_voxels, dtype=torch.bool))
    vdb.write_level_parts(iter(parts), like, tmp_path / "parts.vdb")
    back = vdb.read_level(tmp_path / "parts.vdb")
    want = sort_rows(level.ijk.numpy(), level.normals.numpy(), level.semantics.numpy())
    got = sort_rows(back.ijk.numpy(), back.normals.numpy(), back.semantics.numpy())
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    assert back.metadata == level.metadata


def test_metadata_with_numpy_and_torch_values_round_trips_as_json():
    lvl = make_level(box_ijk((0, 0, 0), (2, 2, 2)))
    lvl.metadata = {"seed": np.int64(12), "guidance": torch.tensor(3.5), "steps": np.arange(3), "path": b"x"}
    back = vdb.level_from_bytes(vdb.level_to_bytes(lvl))
    assert back.metadata == {"seed": 12, "guidance": 3.5, "steps": [0, 1, 2], "path": "b'x'"}


def test_custom_origin_and_no_attributes(tmp_path):
    lvl = make_level(box_ijk((0, 0, 0), (3, 4, 5)), voxel_size=0.5, origin=(10.0, -2.0, 0.25),
                     attributes=False)
    back = vdb.read_level(vdb.write_level(lvl, tmp_path / "b.vdb"))
    assert back.origin == pytest.approx((10.0, -2.0, 0.25))
    assert back.normals is None and back.semantics is None
    np.testing.assert_array_equal(sort_rows(back.ijk.numpy())[0], sort_rows(lvl.ijk.numpy())[0])
    names = [g["name"] for g in vdb.list_grids(tmp_path / "b.vdb")]
    assert names == ["density"]


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single_voxel(n, tmp_path):
    lvl = make_level(np.array([[5, -6, 7]], np.int32)[:n], voxel_size=1.0)
    back = vdb.level_from_bytes(vdb.level_to_bytes(lvl))
    assert back.num_voxels == n
    np.testing.assert_array_equal(back.ijk.numpy(), lvl.ijk.numpy())
    if n:
        np.testing.assert_array_equal(back.normals.numpy(), lvl.normals.numpy())


@pytest.mark.parametrize("block", [4, 8, 16])
def test_block_writer_and_slab_reader_match_reference(block):
    ijk = random_sparse_ijk(5000, 60, seed=5, offset=(-17, 3, -40))
    values = np.random.default_rng(0).random((len(ijk), 3)).astype(np.float32) + 0.5
    grid = openvdb.Vec3SGrid((0.0, 0.0, 0.0))
    density = openvdb.FloatGrid(0.0)
    part = BlockPartition.from_ijk(ijk, block)
    part.write(grid, values, (0.0, 0.0, 0.0), max_values=3 * block**3 * 7)  # forces many batches
    part.write(density, np.ones(len(ijk), np.float32), 0.0, max_values=block**3 * 5)
    got_ijk, got_vals = _active_voxels(density)
    np.testing.assert_array_equal(sort_rows(got_ijk)[0], sort_rows(ijk)[0])
    out_ijk, out = gather_active(density, {"v": grid}, max_values=5000)  # forces many slabs
    a, av = sort_rows(out_ijk, out["v"])
    b, bv = sort_rows(ijk, values)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(av, bv)
    it_ijk, it_vals = _gather_by_iteration(density, {"v": grid}, 0.0)
    np.testing.assert_array_equal(sort_rows(it_ijk, it_vals["v"])[1], bv)


def test_block_keys_match_exactly_when_origins_match():
    """Parts of one level find their shared blocks by key: equal origins (negative ones too) give
    equal keys, other origins other keys."""
    a = BlockPartition.from_ijk(random_sparse_ijk(3000, 200, seed=1, offset=(-100, -7, -64)))
    b = BlockPartition.from_ijk(random_sparse_ijk(3000, 200, seed=2, offset=(-60, -30, -64)))
    ka, kb = a.keys(), b.keys()
    assert len(np.unique(ka)) == a.num_blocks
    same = (a.origins[:, None, :] == b.origins[None, :, :]).all(axis=2)  # (Ma, Mb) reference
    np.testing.assert_array_equal(np.isin(ka, kb), same.any(axis=1))
    assert 0 < int(same.any(axis=1).sum()) < a.num_blocks


def test_very_sparse_grid_uses_iteration_and_is_exact(tmp_path):
    ijk = np.array([[0, 0, 0], [3000, -2500, 4000], [1, 0, 0]], np.int32)
    lvl = make_level(ijk, voxel_size=0.1)
    back = vdb.read_level(vdb.write_level(lvl, tmp_path / "far.vdb"))
    a = sort_rows(back.ijk.numpy(), back.semantics.numpy())
    b = sort_rows(ijk, lvl.semantics.numpy())
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def _foreign_file(path, name="smoke"):
    grid = openvdb.FloatGrid(0.0)
    dense = np.zeros((6, 5, 4), np.float32)
    dense[1:5, 1:4, 1:3] = np.linspace(0.05, 1.0, 24).reshape(4, 3, 2)
    grid.copyFromArray(dense, (10, 20, 30))
    grid.name = name
    grid.transform = openvdb.createLinearTransform(0.05)
    vec = openvdb.Vec3SGrid()
    vec.name = "vel"
    openvdb.write(str(path), [vec, grid])
    return dense


def test_foreign_file_with_named_grid_and_threshold(tmp_path):
    dense = _foreign_file(tmp_path / "smoke.vdb")
    assert vdb.guess_density_grid(tmp_path / "smoke.vdb") == "smoke"
    lvl = vdb.read_level(tmp_path / "smoke.vdb", density_grid="smoke", threshold=0.5)
    want = np.argwhere(dense > 0.5) + (10, 20, 30)
    np.testing.assert_array_equal(sort_rows(lvl.ijk.numpy())[0], sort_rows(want)[0])
    assert lvl.voxel_size == pytest.approx(0.05) and lvl.origin == pytest.approx((0, 0, 0))
    assert lvl.normals is None and lvl.semantics is None and lvl.index == 0


def test_foreign_level_set_gives_its_solid_inside(tmp_path):
    sphere = openvdb.createLevelSetSphere(radius=1.0, center=(0.0, 0.0, 0.0), voxelSize=0.1, halfWidth=3.0)
    sphere.name = "surface"
    openvdb.write(str(tmp_path / "ls.vdb"), [sphere])
    lvl = vdb.read_level(tmp_path / "ls.vdb", density_grid="surface")
    centres = lvl.ijk.numpy() * 0.1  # level-set transforms put voxel centres at ijk * voxel
    radius = np.linalg.norm(centres, axis=1)
    assert radius.max() < 1.0 + 1e-6 and lvl.num_voxels == pytest.approx(4 / 3 * np.pi * 1000, rel=0.05)
    assert lvl.origin == pytest.approx((0.0, 0.0, 0.0))


def test_errors_are_clear(tmp_path, level):
    text = tmp_path / "notes.vdb"
    text.write_text("this is not a volume\n")
    with pytest.raises(DataError, match="not an OpenVDB file"):
        vdb.read_level(text)
    with pytest.raises(DataError, match="no such"):
        vdb.read_level(tmp_path / "missing.vdb")
    _foreign_file(tmp_path / "smoke.vdb")
    with pytest.raises(DataError, match=r"no grid named 'density'.*smoke \(float\)"):
        vdb.read_level(tmp_path / "smoke.vdb")
    with pytest.raises(DataError, match="expected a scalar"):
        vdb.read_level(tmp_path / "smoke.vdb", density_grid="vel")
    with pytest.raises(TypeError):
        vdb.level_from_bytes("not bytes")
    bad = Level(index=0, ijk=torch.zeros(4, 2, dtype=torch.int32), voxel_size=1.0)
    with pytest.raises(InvalidInputError, match=r"shape \(N, 3\)"):
        vdb.level_to_bytes(bad)
    bad = Level(index=0, ijk=torch.zeros(4, 3, dtype=torch.int32), voxel_size=1.0,
                semantics=torch.zeros(3, dtype=torch.int64))
    with pytest.raises(InvalidInputError, match="semantics"):
        vdb.level_to_bytes(bad)


def test_truncated_or_garbled_files_fail_fast_with_data_error(tmp_path):
    # OpenVDB itself allocates without bound on a truncated header; vdb_header refuses these first.
    data = vdb.level_to_bytes(make_level(sphere_ijk(4.0)))
    path = tmp_path / "cut.vdb"
    rng = np.random.default_rng(0)
    cuts = list(range(0, 1200, 23)) + rng.integers(1200, len(data) - 1, 20).tolist()
    for cut in cuts:
        path.write_bytes(data[:cut])
        with pytest.raises(DataError):
            vdb.read_level(path)
    # a garbled length in the file metadata (first entry's name length, right after the header)
    garbled = bytearray(data)
    garbled[61:65] = (2**31 - 5).to_bytes(4, "little")
    path.write_bytes(bytes(garbled))
    with pytest.raises(DataError, match="truncated or corrupt"):
        vdb.read_level(path)


def test_non_uniform_transform_is_rejected(tmp_path):
    grid = openvdb.FloatGrid(0.0)
    grid.copyFromArray(np.ones((2, 2, 2), np.float32))
    grid.name = "density"
    grid.transform = openvdb.createLinearTransform([[1, 0, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    openvdb.write(str(tmp_path / "stretched.vdb"), [grid])
    with pytest.raises(DataError, match="non-uniform"):
        vdb.read_level(tmp_path / "stretched.vdb")


def test_locator_finds_bundled_module_and_explains_when_missing(monkeypatch):
    assert hasattr(openvdb, "FloatGrid") and openvdb_locator.openvdb_version().startswith(
        str(openvdb.LIBRARY_VERSION[0]))
    monkeypatch.setattr(openvdb_locator, "_try_import", lambda name: None)
    monkeypatch.setattr(openvdb_locator, "bundled_openvdb_dirs", lambda: [])
    openvdb_locator.import_openvdb.cache_clear()
    try:
        with pytest.raises(openvdb_locator.OpenVDBNotFoundError, match=r'pip install .*xcube-artists\[vdb\]'):
            openvdb_locator.import_openvdb()
    finally:
        monkeypatch.undo()
        openvdb_locator.import_openvdb.cache_clear()
    assert openvdb_locator.import_openvdb() is openvdb


def test_bundled_dir_is_found_without_importing_bpy():
    import importlib.util
    import sys

    if importlib.util.find_spec("bpy") is None:
        pytest.skip("bpy is not installed")
    dirs = openvdb_locator.bundled_openvdb_dirs()
    assert dirs and any(d.glob("openvdb*") for d in dirs)
    # other tests in this process may have imported bpy already: check in a fresh interpreter
    code = ("import sys; from xcube_core.io import openvdb_locator as o; o.import_openvdb(); "
            "assert 'bpy' not in sys.modules, 'bpy was imported'")
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
