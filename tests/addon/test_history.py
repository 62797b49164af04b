"""The history of generations in real Blender (bpy 5.0.1): stored in the .blend, robust to deleted
collections, and re-runs that reproduce the voxels (tiny model behind a loopback server)."""

from __future__ import annotations

import pytest

bpy = pytest.importorskip("bpy")

from addon_support import ADDON_MODULE  # noqa: E402


def _generate(addon, settings, op=None, **op_kwargs):
    op = op or bpy.ops.xcube.generate
    assert op(**op_kwargs) == {"FINISHED"}
    assert addon.jobs.wait_for_jobs(120), settings.message
    assert settings.status == "DONE", settings.message


def _voxels(collection):
    """Per level, the voxel set of the .vdb file Blender loaded, read back with OpenVDB."""
    from xcube_core.io.vdb import read_level

    volumes = sorted((o for o in collection.objects if o.type == "VOLUME"), key=lambda o: o["xcube_level"])
    return [{tuple(v) for v in read_level(o.data.filepath).ijk.tolist()} for o in volumes]


def test_history_survives_save_and_reopen_and_deleted_collections(addon, settings, server, tmp_path):
    settings.levels, settings.steps, settings.guidance = 2, 3, 4.5
    _generate(addon, settings)
    first = settings.collection_name
    settings.seed = 8
    _generate(addon, settings)
    assert len(settings.history) == 2 and settings.history_index == 1
    item = settings.history[0]
    assert (item.name, item.seed, item.steps, item.guidance, item.levels) == (settings.prompt, 7, 3, 4.5, 2)
    assert (item.server, item.source, item.status, item.levels_done) == (server.address, "PROMPT", "DONE", 2)
    assert item.collection == bpy.data.collections[first] and item.duration > 0 and item.created

    path = str(tmp_path / "history.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.wm.read_homefile(use_empty=True)
    assert len(bpy.context.scene.xcube.history) == 0
    bpy.ops.wm.open_mainfile(filepath=path)
    settings = bpy.context.scene.xcube
    assert [(h.name, h.seed, h.status, h.levels_done) for h in settings.history] == [
        (settings.prompt, 7, "DONE", 2), (settings.prompt, 8, "DONE", 2)]
    assert settings.history[0].collection == bpy.data.collections[first]
    assert settings.history[1].collection.name == settings.collection_name

    # Deleting a collection leaves an entry that says so; the list, the panel and re-run keep working.
    bpy.data.collections.remove(bpy.data.collections[first])
    assert settings.history[0].collection is None and settings.history[0].collection_name == first
    assert "(deleted)" in addon.history.describe(settings.history[0])
    settings.history_index = 0
    from test_ui import _draw_panel

    log = _draw_panel()
    assert ("list", "XCUBE_UL_history", "history") in log
    assert {"xcube.history_select", "xcube.history_copy", "xcube.history_rerun"} <= {e[1] for e in log if e[0] == "operator"}
    assert ("operator_property", "XCUBE_OT_history_rerun", "seed_offset", 1) in log
    assert bpy.ops.xcube.history_select() == {"CANCELLED"}  # says the collection was deleted
    bpy.context.preferences.addons[ADDON_MODULE].preferences.address = server.address
    _generate(addon, settings, bpy.ops.xcube.history_rerun)
    assert len(settings.history) == 3 and settings.history[2].seed == 7
    assert settings.history[2].collection.name == settings.collection_name


def test_rerun_reproduces_the_voxels_and_vary_seed_changes_them(addon, settings, server_factory):
    from xcube_core.pipeline import XCubePipeline

    tiny = XCubePipeline.tiny()
    bpy.context.preferences.addons[ADDON_MODULE].preferences.address = server_factory(tiny).address
    settings.levels, settings.steps, settings.seed = 0, 2, 3
    _generate(addon, settings)
    original = _voxels(bpy.data.collections[settings.collection_name])
    assert settings.history[0].model_id == "tiny-0"

    settings.prompt, settings.seed = "something else entirely", 99  # re-run uses the entry, not the panel
    settings.history_index = 0
    _generate(addon, settings, bpy.ops.xcube.history_rerun)
    again = bpy.data.collections[settings.collection_name]
    assert again.name != settings.history[0].collection.name
    assert _voxels(again) == original and len(original) == tiny.num_levels

    settings.history_index = 0
    _generate(addon, settings, bpy.ops.xcube.history_rerun, seed_offset=1)
    varied = settings.history[-1]
    assert (varied.seed, settings.seed, varied.name) == (4, 4, settings.history[0].name)
    direct = [{tuple(v) for v in lv.ijk.tolist()}
              for lv in tiny.generate(varied.name, seed=4, steps=2, guidance=settings.guidance)]
    assert _voxels(bpy.data.collections[settings.collection_name]) == direct != original

    settings.prompt, settings.seed, settings.steps = "changed", 1, 9
    settings.history_index = 0
    assert bpy.ops.xcube.history_copy() == {"FINISHED"}
    assert (settings.prompt, settings.seed, settings.steps) == (settings.history[0].name, 3, 2)


def test_layout_generations_are_recorded_and_select_picks_their_objects(addon, settings, pipeline):
    bpy.ops.mesh.primitive_cube_add(size=16.0, location=(16.0, 16.0, 8.0))
    settings.levels = 1
    _generate(addon, settings, bpy.ops.xcube.refine_selection)
    item = settings.history[-1]
    assert item.source == "LAYOUT" and item.levels_done == 1
    assert bpy.ops.xcube.history_select() == {"FINISHED"}
    selected = set(bpy.context.selected_objects)
    assert selected and selected <= set(item.collection.objects)
    assert bpy.context.view_layer.active_layer_collection.collection == item.collection
    # A layout re-run needs the meshes: the settings come back to the panel and the user is told so.
    settings.seed = 100
    assert bpy.ops.xcube.history_rerun() == {"CANCELLED"}
    assert settings.seed == item.seed and len(settings.history) == 1


def test_an_entry_saved_while_running_reopens_as_interrupted(addon, settings, pipeline, wait_until, tmp_path):
    pipeline.step_delay, settings.steps = 0.02, 200
    assert bpy.ops.xcube.generate() == {"FINISHED"}
    assert wait_until(lambda: settings.status == "RUNNING", drain=addon.jobs.drain_events)
    assert settings.history[-1].status == "RUNNING"
    path = str(tmp_path / "running.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    addon.jobs.cancel_all()
    addon.history._STARTED.clear()  # a new Blender session knows nothing of that job
    bpy.ops.wm.open_mainfile(filepath=path)
    assert [h.status for h in bpy.context.scene.xcube.history] == ["CANCELLED"]
