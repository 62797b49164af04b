"""A real in-process gRPC server on a free loopback port, exercised through the real client."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
from fake_pipeline import FakePipeline

from xcube_client import (
    GenerationCancelledError,
    ServerBusyError,
    ServerUnavailableError,
    XCubeClient,
)
from xcube_client.types import ConditionGrid

from server.flow import FlowLimits

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _array(artifact) -> np.ndarray:
    return np.frombuffer(artifact.data, dtype="<" + {"int32": "i4", "float32": "f4"}[artifact.dtype]) \
        .reshape(artifact.shape)


def _sorted_rows(ijk: np.ndarray) -> np.ndarray:
    return ijk[np.lexsort(ijk.T[::-1])]


def _wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_levels_stream_in_order_and_match_the_pipeline(model_pipeline, serve, connect):
    server = serve(model_pipeline)
    client = connect(server)
    kwargs = dict(seed=3, steps=2, guidance=2.0)
    direct = list(model_pipeline.generate("a harbour town with a lighthouse", **kwargs))
    outputs = ("raw",) + tuple(o for o in ("vdb", "mesh") if o in client.info().supported_outputs)
    seen_progress = []
    received = list(client.generate("a harbour town with a lighthouse", outputs=outputs,
                                    progress=lambda *p: seen_progress.append(p), **kwargs))
    assert [lv.index for lv in received] == list(range(model_pipeline.num_levels))
    assert seen_progress == sorted(seen_progress) and seen_progress[-1][0] == model_pipeline.num_levels - 1
    for want, got in zip(direct, received):
        assert got.num_voxels == want.num_voxels
        assert got.voxel_size == pytest.approx(want.voxel_size)
        assert got.origin == pytest.approx(want.origin)
        np.testing.assert_array_equal(_array(got.artifacts["ijk"]), want.ijk.numpy())
        if want.normals is not None:
            np.testing.assert_array_equal(_array(got.artifacts["normals"]), want.normals.numpy())
        if want.semantics is not None:
            np.testing.assert_array_equal(_array(got.artifacts["semantics"]), want.semantics.numpy())
        if "vdb" in outputs:  # decode the streamed file with real OpenVDB
            from xcube_core.io import vdb

            back = vdb.level_from_bytes(got.vdb)
            np.testing.assert_array_equal(_sorted_rows(back.ijk.numpy()), _sorted_rows(want.ijk.numpy()))
        if "mesh" in outputs:  # the streamed PLY is the surface io.mesh makes of the same level
            import io

            import trimesh

            from xcube_core.io.mesh import level_to_mesh

            streamed = trimesh.load(io.BytesIO(got.mesh), file_type="ply", process=False)
            direct_mesh = level_to_mesh(want)
            if len(direct_mesh.faces) == 0:  # too sparse to have a smooth surface: the server sends voxel faces
                direct_mesh = level_to_mesh(want, mode="blocky")
            np.testing.assert_allclose(streamed.vertices, direct_mesh.vertices, rtol=0, atol=1e-5)


def test_level_larger_than_4mib_arrives_intact(serve, connect):
    big = FakePipeline(voxels=(450_000,), coarse_shape=(128, 128, 64))
    server = serve(big)
    (level,) = connect(server).generate("one huge level", steps=1, outputs=("raw",))
    direct = next(iter(big.generate("one huge level", steps=1)))
    ijk = level.artifacts["ijk"]
    assert len(ijk.data) == 450_000 * 12 > 4 * 1024 * 1024
    np.testing.assert_array_equal(_array(ijk), direct.ijk.numpy())
    np.testing.assert_array_equal(_array(level.artifacts["normals"]), direct.normals.numpy())


def test_condition_grid_reaches_the_pipeline(serve, connect):
    fake = FakePipeline()
    server = serve(fake)
    ijk = [(0, 0, 0), (3, 4, 5), (15, 15, 7)]
    cond = ConditionGrid(ijk=ijk, voxel_size=fake.voxel_sizes[0], semantics=[0, 2, 4])
    first = next(iter(connect(server).generate("blocks", steps=1, num_levels=2, outputs=("raw",), condition=cond)))
    assert _array(first.artifacts["ijk"]).tolist() == [list(r) for r in ijk]


def test_health_reflection_and_loading(serve, connect):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    release = threading.Event()

    def slow_factory():
        release.wait(10)
        return FakePipeline()

    from server.app import create_server

    server, port = create_server(slow_factory, port=0)
    try:
        client = XCubeClient(f"127.0.0.1:{port}")
        assert client.health() == "NOT_SERVING"
        assert client.info().model_loaded is False
        with pytest.raises(ServerUnavailableError, match="loading"):
            list(client.generate("too early", steps=1))
        release.set()
        client.wait_until_serving(10)
        assert client.health("xcube.v1.XCube") == "SERVING"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            assert stub.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.SERVING
            db = ProtoReflectionDescriptorDatabase(channel)
            assert {"xcube.v1.XCube", "grpc.health.v1.Health"} <= set(db.get_services())
            desc = db.FindFileContainingSymbol("xcube.v1.XCube")
            assert desc.name == "xcube/v1/xcube.proto" and desc.package == "xcube.v1"
        client.close()
    finally:
        release.set()
        server.stop(0)


def test_16_concurrent_clients_complete_or_get_resource_exhausted(serve):
    gate = threading.Event()
    # all 16 share one loopback address: lift the per-client stream limit to see the queue's own bound
    server = serve(FakePipeline(voxels=(20, 40), gate=gate), max_queue=4, flow=FlowLimits(max_streams_per_client=16))
    outcomes: list[str] = []
    lock = threading.Lock()

    def one_client(i: int) -> None:
        client = XCubeClient(server.address)
        try:
            levels = list(client.generate(f"scene {i}", seed=i, steps=2, outputs=("raw",), timeout=30))
            result = "complete" if [lv.index for lv in levels] == [0, 1] else "incomplete"
        except ServerBusyError:
            result = "busy"
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            result = f"{type(exc).__name__}: {exc}"
        finally:
            client.close()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=one_client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    # one job runs (held by the gate), four wait, everyone else has been told the server is busy
    _wait_for(lambda: len(outcomes) == 11 and len(server.jobs) == 4 and server.worker.busy.is_set(),
              what="a full queue and 11 busy answers")
    gate.set()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["busy"] * 11 + ["complete"] * 5, outcomes


def test_cancel_mid_stream_frees_the_worker(serve):
    fake = FakePipeline(step_delay=0.01)
    server = serve(fake)
    client = XCubeClient(server.address)
    progress = []

    def on_progress(level, step, total):
        progress.append((level, step))
        if len(progress) == 3:
            client.cancel()

    with pytest.raises(GenerationCancelledError, match="cancelled by this client"):
        list(client.generate("a long job", steps=1000, outputs=("raw",), progress=on_progress))
    assert fake.cancelled.wait(5), "the pipeline never saw the cancel"
    _wait_for(lambda: not server.worker.busy.is_set(), what="the worker to be free")
    assert len(list(client.generate("next job", steps=2, outputs=("raw",)))) == fake.num_levels
    with pytest.raises(Exception) as info:  # a deadline cancels the job the same way
        list(client.generate("deadline", steps=1000, outputs=("raw",), timeout=0.5))
    assert getattr(info.value, "code", "") == "DEADLINE_EXCEEDED"
    _wait_for(lambda: not server.worker.busy.is_set(), what="the worker to be free after a deadline")
    client.close()


def test_pipeline_failure_is_internal_and_server_stays_up(serve, connect):
    class Broken(FakePipeline):
        def _level(self, index, *args):
            if index == 1:
                raise RuntimeError("boom")
            return super()._level(index, *args)

    server = serve(Broken())
    client = connect(server)
    got = []
    with pytest.raises(Exception) as info:
        for level in client.generate("breaks at level 1", steps=1, outputs=("raw",)):
            got.append(level.index)
    assert got == [0] and info.value.code == "INTERNAL" and "see the server log" in str(info.value)
    assert client.health() == "SERVING"
    assert next(iter(client.generate("still up", steps=1, num_levels=1, outputs=("raw",)))).index == 0


def test_graceful_stop_rejects_waiting_and_lets_the_running_job_finish(serve):
    fake = FakePipeline(step_delay=0.005)
    server = serve(fake)
    results = {}

    def run(name, steps):
        client = XCubeClient(server.address)
        try:
            results[name] = len(list(client.generate(name, steps=steps, outputs=("raw",))))
        except Exception as exc:  # noqa: BLE001
            results[name] = getattr(exc, "code", repr(exc))
        client.close()

    running = threading.Thread(target=run, args=("running", 40))
    running.start()
    _wait_for(server.worker.busy.is_set, what="the first job to start")
    waiting = threading.Thread(target=run, args=("waiting", 1))
    waiting.start()
    _wait_for(lambda: len(server.jobs) == 1, what="the second job to queue")
    server.stop(grace=10)
    running.join(10)
    waiting.join(10)
    assert results == {"running": fake.num_levels, "waiting": "UNAVAILABLE"}


def test_killing_the_server_mid_stream_gives_a_clear_unavailable():
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests/server/serve_fake.py"), "0.02"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, env={**__import__("os").environ,
                                                                   "PYTHONPATH": str(ROOT)})
    try:
        port = int(proc.stdout.readline())
        client = XCubeClient(f"127.0.0.1:{port}")
        client.wait_until_serving(30)
        levels = []
        with pytest.raises(ServerUnavailableError) as info:
            for level in client.generate("killed", steps=20, outputs=("raw",)):
                levels.append(level.index)
                proc.kill()
        assert levels == [0]
        # not "is the server running?": it was, and the connection was lost under the stream
        assert f"the connection to 127.0.0.1:{port} was lost mid-stream" in str(info.value)
        client.close()
    finally:
        proc.kill()
        proc.wait(10)


def test_cancel_stops_the_model_pipeline_within_a_step(model_pipeline, serve):
    server = serve(model_pipeline)
    client = XCubeClient(server.address)
    steps_seen = []

    def on_progress(level, step, total):
        steps_seen.append(step)
        client.cancel()

    with pytest.raises(GenerationCancelledError):
        list(client.generate("cancel me", steps=500, outputs=("raw",), progress=on_progress))
    _wait_for(lambda: not server.worker.busy.is_set(), timeout=30, what="the worker to stop")
    (level,) = client.generate("next", steps=1, num_levels=1, outputs=("raw",))
    assert level.index == 0 and len(steps_seen) <= 3
    client.close()


def test_one_structured_log_line_per_request(serve, caplog):
    import json
    import logging

    fake = FakePipeline(step_delay=0.01)
    server = serve(fake, supported_outputs=("raw",))
    client = XCubeClient(server.address)
    with caplog.at_level(logging.INFO, logger="xcube.server"):
        list(client.generate("fine request", steps=2, client_tag="test-suite", outputs=("raw",)))
        with pytest.raises(Exception):
            list(client.generate("bad", steps=5000, outputs=("raw",)))
        with pytest.raises(GenerationCancelledError):
            list(client.generate("cancelled", steps=1000, outputs=("raw",), progress=lambda *a: client.cancel()))
        _wait_for(lambda: sum(r.getMessage().startswith("request ") for r in caplog.records) == 3,
                  what="three request log lines")
    lines = [json.loads(r.getMessage()[len("request "):]) for r in caplog.records
             if r.getMessage().startswith("request ")]
    assert [line["outcome"] for line in lines] == ["OK", "INVALID_ARGUMENT", "CANCELLED"]
    ok = lines[0]
    assert ok["prompt_chars"] == len("fine request") and ok["tag"] == "test-suite" and len(ok["id"]) == 12
    assert [lv["index"] for lv in ok["levels"]] == [0, 1, 2] and all("seconds" in lv for lv in ok["levels"])
    assert "fine request" not in caplog.text  # prompts are not logged, only their length
    client.close()
