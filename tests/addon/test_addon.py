"""The Blender add-on in real Blender (bpy 5.0.1, headless) against a real loopback gRPC server."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.deps import require

bpy = require("bpy")

from addon_support import ADDON_MODULE, ScenePipeline  # noqa: E402


def _prefs():
    return bpy.context.preferences.addons[ADDON_MODULE].preferences


def _level_objects(collection, kind: str):
    objs = [o for o in collection.objects if o.type == kind]
    return sorted(objs, key=lambda o: o["xcube_level"])


def _vdb_level(path: str):
    """The level stored in a .vdb file, read back with the real OpenVDB module."""
    from xcube_core.io.vdb import read_level

    return read_level(path)


def _generate(addon, settings, timeout: float = 60.0) -> None:
    assert bpy.ops.xcube.generate() == {"FINISHED"}
    assert addon.jobs.wait_for_jobs(timeout), f"generation did not end: {settings.status} {settings.message}"


def test_register_unregister_cleanly(addon):
    import addon_utils

    assert hasattr(bpy.types.Scene, "xcube")
    assert hasattr(bpy.ops.xcube, "generate") and bpy.types.XCUBE_PT_main.bl_category == "XCube"
    addon_utils.disable(ADDON_MODULE)
    assert not hasattr(bpy.types.Scene, "xcube")
    assert not hasattr(bpy.types, "XCUBE_PT_main")
    assert not bpy.app.timers.is_registered(addon.jobs._timer)
    addon_utils.enable(ADDON_MODULE, default_set=True)
    assert hasattr(bpy.types.Scene, "xcube") and hasattr(bpy.types, "XCUBE_PT_main")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:50051", "127.0.0.1:50051"), (" gpu-box.local:7000 ", "gpu-box.local:7000"),
     ("[::1]:50051", "[::1]:50051")],
)
def test_address_accepts_host_port(addon, text, expected):
    assert addon.preferences.parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "hint"),
    [("http://localhost:50051/", "enter 'localhost:50051'"), ("grpc://10.0.0.2:9000", "enter '10.0.0.2:9000'"),
     ("localhost", "localhost:50051"), ("localhost:99999", "1 to 65535"), ("", "e.g. 127.0.0.1:50051"),
     ("my host:1", "spaces")],
)
def test_address_rejects_urls_and_bad_ports_with_a_hint(addon, text, hint):
    with pytest.raises(ValueError) as info:
        addon.preferences.parse_address(text)
    assert hint in str(info.value)


def test_test_connection_shows_server_info_and_health(addon, settings, server):
    assert bpy.ops.xcube.test_connection() == {"FINISHED"}
    assert addon.jobs.wait_for_jobs(30)
    status = _prefs().connection_status
    assert f"Connected to {server.address}: SERVING" in status
    assert "test-scenes" in status and "3 levels" in status


def test_generate_streams_every_level_as_a_loaded_volume(addon, settings, pipeline):
    settings.output = "VOLUME"
    _generate(addon, settings)
    assert settings.status == "DONE", settings.message
    collection = bpy.data.collections[settings.collection_name]
    assert collection.name.startswith("a small town with houses")
    volumes = _level_objects(collection, "VOLUME")
    assert [o["xcube_level"] for o in volumes] == [0, 1, 2]
    expected = list(pipeline.generate(settings.prompt, seed=settings.seed, steps=1))
    for obj, level in zip(volumes, expected):
        grids = obj.data.grids
        assert grids.is_loaded and {"density", "semantics"} <= {g.name for g in grids}
        assert os.path.isfile(obj.data.filepath)
        # The file Blender loaded holds exactly the pipeline's voxels (real OpenVDB read-back).
        stored = _vdb_level(obj.data.filepath)
        assert {tuple(v) for v in stored.ijk.tolist()} == {tuple(v) for v in level.ijk.tolist()}
        assert stored.voxel_size == pytest.approx(level.voxel_size)
        assert obj["xcube_voxel_size"] == pytest.approx(level.voxel_size)
        assert obj.data.materials[0].node_tree.nodes.get("Principled Volume") is not None
    # Only the finest level stays visible; all levels stay in the file.
    assert [o.hide_get() for o in volumes] == [True, True, False]
    assert settings.levels_done == 3 and settings.progress == pytest.approx(1.0)


def test_mesh_mode_imports_the_servers_coloured_mesh_per_level(addon, settings, pipeline):
    import trimesh

    from server import artifacts

    settings.output = "MESH"
    settings.shading = "COLORS"  # the server's class colours (materials: test_materials.py)
    settings.levels = 2
    _generate(addon, settings)
    assert settings.status == "DONE", settings.message
    collection = bpy.data.collections[settings.collection_name]
    meshes = _level_objects(collection, "MESH")
    assert [o["xcube_level"] for o in meshes] == [0, 1]
    depsgraph = bpy.context.evaluated_depsgraph_get()
    for obj, level in zip(meshes, pipeline.generate(settings.prompt, seed=settings.seed, steps=1)):
        evaluated = obj.evaluated_get(depsgraph)
        mesh = evaluated.to_mesh()
        assert len(mesh.vertices) > 0 and len(mesh.polygons) > 0
        co = np.empty(len(mesh.vertices) * 3)
        mesh.vertices.foreach_get("co", co)
        # Round trip: exactly the surface the server encodes for this level (parsed here by trimesh).
        reference = trimesh.load(trimesh.util.wrap_as_stream(artifacts.mesh_blob(level).data), file_type="ply",
                                 process=False)
        np.testing.assert_allclose(co.reshape(-1, 3), reference.vertices, atol=1e-5)
        colors = np.empty(len(mesh.vertices) * 4)
        mesh.color_attributes["Col"].data.foreach_get("color_srgb", colors)
        np.testing.assert_allclose(colors.reshape(-1, 4)[:, :3] * 255, reference.visual.vertex_colors[:, :3], atol=1)
        evaluated.to_mesh_clear()
        assert obj.data.materials[0].name == "XCube Surface Colours"
    volumes = _level_objects(collection, "VOLUME")
    assert all(o.hide_render for o in volumes)  # mesh only: volumes kept in the file, hidden


def test_mesh_mode_without_server_meshes_uses_volume_to_mesh(addon, settings, server_factory):
    plain = server_factory(ScenePipeline(), supported_outputs=("vdb",))
    _prefs().address = plain.address
    settings.output = "BOTH"
    settings.levels = 2
    _generate(addon, settings)
    assert settings.status == "DONE", settings.message
    collection = bpy.data.collections[settings.collection_name]
    depsgraph = bpy.context.evaluated_depsgraph_get()
    for obj, level in zip(_level_objects(collection, "MESH"), ScenePipeline().generate(settings.prompt, seed=7, steps=1)):
        assert obj.modifiers[0].type == "VOLUME_TO_MESH"
        evaluated = obj.evaluated_get(depsgraph)
        mesh = evaluated.to_mesh()
        assert len(mesh.vertices) > 0 and len(mesh.polygons) > 0
        co = np.empty(len(mesh.vertices) * 3)
        mesh.vertices.foreach_get("co", co)
        co = co.reshape(-1, 3)
        # The surface lies on the level's voxels: inside their world box (ijk * v .. (ijk + 1) * v).
        lo = level.ijk.numpy().min(0) * level.voxel_size
        hi = (level.ijk.numpy().max(0) + 1) * level.voxel_size
        assert np.all(co >= lo - 1e-3) and np.all(co <= hi + 1e-3)
        evaluated.to_mesh_clear()
    assert not any(o.hide_render for o in _level_objects(collection, "VOLUME")[-1:])  # Both: volume shown


def test_cancel_stops_the_job_here_and_on_the_server(addon, settings, pipeline, server, wait_until):
    pipeline.step_delay = 0.02
    settings.steps = 200
    assert bpy.ops.xcube.generate() == {"FINISHED"}
    assert wait_until(lambda: settings.status == "RUNNING", drain=addon.jobs.drain_events)
    assert bpy.ops.xcube.cancel() == {"FINISHED"}
    assert addon.jobs.wait_for_jobs(20)
    assert settings.status == "CANCELLED", settings.message
    assert "Press Generate" in settings.message or "press Generate" in settings.message
    # The server's worker is free again: the next request runs at once.
    assert wait_until(lambda: server.worker.current is None, timeout=10)
    pipeline.step_delay = 0.0
    settings.steps = 1
    settings.levels = 1
    _generate(addon, settings)
    assert settings.status == "DONE", settings.message


def test_server_down_shows_an_error_and_blender_keeps_working(addon, settings):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _prefs().address = f"127.0.0.1:{port}"
    _generate(addon, settings)
    assert settings.status == "ERROR"
    assert "python -m server" in settings.message and f"127.0.0.1:{port}" in settings.message
    assert settings.collection_name == ""
    assert bpy.ops.xcube.generate.poll()  # ready for the next try


def test_pasted_url_is_refused_before_any_network(addon, settings):
    _prefs().address = "http://localhost:50051"
    # An ERROR report is shown in the status bar; called from a script, Blender raises it instead.
    with pytest.raises(RuntimeError, match="enter 'localhost:50051'"):
        bpy.ops.xcube.generate()
    assert settings.status == "ERROR" and "enter 'localhost:50051'" in settings.message
    assert not addon.jobs.active_jobs()


def test_invalid_prompt_is_named_in_the_error(addon, settings):
    settings.prompt = "x" * 5000
    _generate(addon, settings)
    assert settings.status == "ERROR"
    assert "prompt" in settings.message and "Press Generate" not in settings.message
    settings.prompt = "   "
    with pytest.raises(RuntimeError, match="prompt is empty"):
        bpy.ops.xcube.generate()
    assert "prompt is empty" in settings.message


def test_full_queue_says_to_wait(addon, settings, server_factory, occupy, wait_until):
    from xcube_client.client import XCubeClient

    busy = server_factory(ScenePipeline(step_delay=0.05), max_queue=1)
    blockers = [occupy(busy.address)]
    with XCubeClient(busy.address) as client:
        assert wait_until(lambda: client.info().busy, timeout=10)
        blockers.append(occupy(busy.address))  # waits in the queue's only slot
        assert wait_until(lambda: client.info().queue_length == 1, timeout=10)
    _prefs().address = busy.address
    _generate(addon, settings)
    assert settings.status == "ERROR"
    assert "queue is full" in settings.message and "retry" in settings.message
    busy.stop(grace=0)
    for blocker in blockers:
        blocker.join(5)


def test_server_killed_mid_stream_keeps_the_levels_that_arrived(addon, settings, server_factory, wait_until):
    slow = ScenePipeline(step_delay=0.05)
    doomed = server_factory(slow)
    _prefs().address = doomed.address
    settings.steps = 20
    assert bpy.ops.xcube.generate() == {"FINISHED"}
    assert wait_until(lambda: settings.levels_done >= 1, drain=addon.jobs.drain_events)
    doomed.stop(grace=0)
    assert addon.jobs.wait_for_jobs(20)
    assert settings.status == "ERROR", settings.message
    assert "stopped answering after 1 level" in settings.message and "Restart the server" in settings.message
    collection = bpy.data.collections[settings.collection_name]
    assert [o["xcube_level"] for o in _level_objects(collection, "VOLUME")] == [0]


def test_refine_selection_sends_the_layout_mesh_and_the_server_voxelises_it(addon, settings, pipeline):
    """The add-on sends triangles and part names; the server's grid equals the library's voxelisation
    of the same mesh (the one exact voxeliser), and the part name gives the class."""
    from xcube_core.layout import layout_from_triangles

    bpy.ops.mesh.primitive_cube_add(size=16.0, location=(17.0, 17.0, 9.0))  # box [9, 25]^2 x [1, 17] m
    bpy.context.active_object.name = "Building A"
    settings.levels = 1
    assert bpy.ops.xcube.refine_selection() == {"FINISHED"}
    assert addon.jobs.wait_for_jobs(30)
    assert settings.status == "DONE", settings.message
    got = {tuple(v) for v in pipeline.last_condition.ijk.tolist()}
    # Analytic reference: voxels of 4 m touched by the box's surface = the shell of [2, 6]^2 x [0, 4],
    # plus ground (class 0) in the other bottom voxels: the layout names no ground.
    box = np.stack(np.meshgrid(np.arange(2, 7), np.arange(2, 7), np.arange(0, 5), indexing="ij"), -1).reshape(-1, 3)
    shell = {tuple(v) for v in box if (v[:2] == 2).any() or (v[:2] == 6).any() or v[2] in (0, 4)}
    ground = {(i, j, 0) for i in range(16) for j in range(16)}
    assert got == shell | ground
    cls = dict(zip(map(tuple, pipeline.last_condition.ijk.tolist()), pipeline.last_condition.semantics.tolist()))
    assert {cls[v] for v in shell} == {pipeline.class_names.index("building")}
    corners = np.array([[x, y, z] for x in (9, 25) for y in (9, 25) for z in (1, 17)], np.float32)
    faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    lib = layout_from_triangles(corners, faces, None, pipeline.coarse_shape, pipeline.voxel_sizes[0],
                                pipeline.class_names, ground=False)
    assert {tuple(v) for v in lib.ijk.tolist()} == shell
    assert pipeline.last_condition.voxel_size == pytest.approx(pipeline.voxel_sizes[0])
    # "Keep Layout Classes" asks the server to keep the parts' classes (an infinite class prior)
    assert pipeline.last_class_prior is None
    settings.keep_layout_classes = True
    assert bpy.ops.xcube.refine_selection() == {"FINISHED"}
    assert addon.jobs.wait_for_jobs(30)
    assert settings.status == "DONE", settings.message
    assert pipeline.last_class_prior == float("inf")
    settings.keep_layout_classes = False


def test_refine_selection_outside_the_scene_box_explains(addon, settings):
    bpy.ops.mesh.primitive_cube_add(size=2.0, location=(-50.0, -50.0, 1.0))
    assert bpy.ops.xcube.refine_selection() == {"FINISHED"}
    assert addon.jobs.wait_for_jobs(30)
    assert settings.status == "ERROR" and "move it inside that box" in settings.message


def test_results_survive_save_and_reopen(addon, settings, tmp_path):
    settings.output = "BOTH"
    settings.levels = 2
    _generate(addon, settings)
    assert settings.status == "DONE", settings.message
    name = settings.collection_name
    path = str(tmp_path / "scene.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.wm.read_homefile(use_empty=True)
    assert name not in bpy.data.collections
    bpy.ops.wm.open_mainfile(filepath=path)
    collection = bpy.data.collections[name]
    volumes = _level_objects(collection, "VOLUME")
    meshes = _level_objects(collection, "MESH")
    assert [o["xcube_level"] for o in volumes] == [0, 1] and [o["xcube_level"] for o in meshes] == [0, 1]
    for obj in volumes:
        assert obj.data.grids.load() and "density" in {g.name for g in obj.data.grids}
    evaluated = meshes[1].evaluated_get(bpy.context.evaluated_depsgraph_get())
    assert len(evaluated.to_mesh().vertices) > 0
    evaluated.to_mesh_clear()
    assert bpy.context.scene.xcube.status == "DONE"


def test_token_and_timeout_errors_say_which_preference_to_change(addon, settings, server_factory):
    guarded = server_factory(ScenePipeline(step_delay=0.05), token="s3cret")
    prefs = _prefs()
    prefs.address, prefs.token = guarded.address, ""
    _generate(addon, settings)
    assert settings.status == "ERROR" and "--token in the add-on preferences" in settings.message
    prefs.token, prefs.request_timeout = "s3cret", 0.5
    settings.steps = 50  # 50 x 0.05 s per level: longer than the 0.5 s limit
    try:
        _generate(addon, settings)
    finally:
        prefs.token, prefs.request_timeout = "", 0.0
    assert settings.status == "ERROR" and "Generate Timeout" in settings.message


def test_test_connection_to_nothing_says_so(addon, settings):
    _prefs().address = "127.0.0.1:1"
    assert bpy.ops.xcube.test_connection() == {"FINISHED"}
    assert addon.jobs.wait_for_jobs(30)
    status = _prefs().connection_status
    assert status.startswith("Connection failed") and "python -m server" in status


def test_tiny_model_levels_arrive_as_the_pipeline_makes_them(addon, settings, server_factory):
    """The real pipeline (random-weight tiny model) behind the real server: what Blender loads is what
    the pipeline generates for the same seed, level by level."""
    from xcube_core.testing import tiny_pipeline

    tiny = tiny_pipeline()
    srv = server_factory(tiny)
    _prefs().address = srv.address
    settings.output, settings.steps, settings.seed = "BOTH", 2, 3
    _generate(addon, settings, timeout=120)
    assert settings.status == "DONE", settings.message
    direct = list(tiny.generate(settings.prompt, seed=3, steps=2, guidance=settings.guidance))
    collection = bpy.data.collections[settings.collection_name]
    volumes = _level_objects(collection, "VOLUME")
    assert [o["xcube_level"] for o in volumes] == list(range(tiny.num_levels)) == [lv.index for lv in direct]
    for obj, level in zip(volumes, direct):
        assert obj.data.grids.is_loaded and "density" in {g.name for g in obj.data.grids}
        stored = _vdb_level(obj.data.filepath)
        assert {tuple(v) for v in stored.ijk.tolist()} == {tuple(v) for v in level.ijk.tolist()}
        assert stored.voxel_size == pytest.approx(level.voxel_size)
    meshes = _level_objects(collection, "MESH")
    evaluated = meshes[-1].evaluated_get(bpy.context.evaluated_depsgraph_get())
    assert len(evaluated.to_mesh().vertices) > 0
    evaluated.to_mesh_clear()


def test_tiny_model_accepts_the_refined_layout(addon, settings, server_factory):
    from xcube_core.testing import tiny_pipeline

    tiny = tiny_pipeline()
    srv = server_factory(tiny)
    _prefs().address = srv.address
    size = tiny.coarse_shape[0] * tiny.voxel_sizes[0]
    bpy.ops.mesh.primitive_cube_add(size=size / 4, location=(size / 2, size / 2, size / 8))
    settings.steps = 2
    assert bpy.ops.xcube.refine_selection() == {"FINISHED"}
    assert addon.jobs.wait_for_jobs(120)
    assert settings.status == "DONE", settings.message
    assert settings.levels_done == tiny.num_levels


def test_the_timer_drains_the_queue_and_stops_when_idle(addon, settings, wait_until):
    """What Blender's UI does: the operator registers the timer; each tick drains; idle ends it."""
    jobs = addon.jobs
    settings.levels = 1
    assert bpy.ops.xcube.generate() == {"FINISHED"}
    assert bpy.app.timers.is_registered(jobs._timer)
    ticks = []
    assert wait_until(lambda: ticks.append(jobs._timer()) or ticks[-1] is None, timeout=30)
    assert settings.status == "DONE", settings.message
    assert all(t == jobs.TIMER_INTERVAL for t in ticks[:-1])
    jobs.stop_timer()
    assert not bpy.app.timers.is_registered(jobs._timer)
