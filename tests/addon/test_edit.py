"""Extend Scene and Regenerate Region in real Blender against a real loopback server with the tiny model:
new tiles land beside the scene at the right offsets, and a region edit leaves the other voxels untouched."""

from __future__ import annotations

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from addon_support import ADDON_MODULE  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    from xcube_core.pipeline import XCubePipeline

    return XCubePipeline.tiny()


@pytest.fixture
def tiny_settings(addon, settings, tiny, server_factory):
    srv = server_factory(tiny)
    bpy.context.preferences.addons[ADDON_MODULE].preferences.address = srv.address
    settings.steps, settings.seed, settings.levels = 2, 3, 0
    assert bpy.ops.xcube.generate() == {"FINISHED"}
    assert addon.jobs.wait_for_jobs(120) and settings.status == "DONE", settings.message
    return settings


def _levels(collection):
    """{level: voxel -> normal bits} read back from the volumes' .vdb files."""
    from xcube_core.io.vdb import read_level

    out = {}
    for obj in collection.objects:
        if obj.type == "VOLUME":
            lv = read_level(bpy.path.abspath(obj.data.filepath))
            out[obj["xcube_level"]] = {tuple(v): tuple(n) for v, n in
                                       zip(lv.ijk.tolist(), lv.normals.numpy().view(np.int32).tolist())}
    return out


def _columns(voxels, f):
    return {(v[0] // f, v[1] // f) for v in voxels}


def test_extend_scene_adds_tiles_beside_the_scene(addon, tiny_settings, tiny):
    collection = bpy.data.collections[tiny_settings.collection_name]
    before = _levels(collection)
    assert bpy.ops.xcube.extend_scene(side="+X") == {"FINISHED"}
    assert addon.jobs.wait_for_jobs(120), tiny_settings.message
    assert tiny_settings.status == "DONE", tiny_settings.message
    after = _levels(collection)
    assert sorted(after) == sorted(before) == [0, 1]
    native = tiny.coarse_shape[0]
    width = native - native // 4  # one tile step, in coarse voxels
    for i, old in before.items():
        f = 2 ** i
        new = after[i]
        assert {v: n for v, n in new.items() if v[0] < native * f} == old  # the scene is untouched
        cols = _columns([v for v in new if v[0] >= native * f], f)
        assert cols and all(native <= x < native + width for x, _ in cols)  # the new tile, beside it
    volumes = [o for o in collection.objects if o.type == "VOLUME"]
    assert sorted(o["xcube_level"] for o in volumes) == [0, 1]  # replaced, not duplicated


def test_regenerate_region_leaves_every_other_voxel_untouched(addon, tiny_settings, tiny):
    collection = bpy.data.collections[tiny_settings.collection_name]
    before = _levels(collection)
    bpy.ops.mesh.primitive_cube_add(size=6.0, location=(7.0, 7.0, 2.0))  # box [4, 10]^2 m
    tiny_settings.prompt, tiny_settings.seed = "a pond", 11
    assert bpy.ops.xcube.regenerate_region() == {"FINISHED"}
    assert addon.jobs.wait_for_jobs(120), tiny_settings.message
    assert tiny_settings.status == "DONE", tiny_settings.message
    after = _levels(collection)
    for i, old in before.items():
        f = 2 ** i  # voxels per 2 m coarse column
        inside = lambda v: 2 <= v[0] // f < 5 and 2 <= v[1] // f < 5  # noqa: E731
        assert {v: n for v, n in after[i].items() if not inside(v)} == {v: n for v, n in old.items() if not inside(v)}
    assert any({v: n for v, n in after[i].items()} != old for i, old in before.items())


def test_edits_without_a_scene_or_a_box_explain(addon, settings):
    bpy.ops.mesh.primitive_cube_add(size=2.0)
    with pytest.raises(RuntimeError, match="generate one first"):  # bpy raises reported errors
        bpy.ops.xcube.regenerate_region()
    assert settings.status == "ERROR" and "No generated scene" in settings.message
    bpy.ops.object.select_all(action="DESELECT")
    with pytest.raises(RuntimeError, match="Select a box or mesh"):
        bpy.ops.xcube.regenerate_region()
    with pytest.raises(RuntimeError, match="generated scene"):
        bpy.ops.xcube.extend_scene(side="-Y")
