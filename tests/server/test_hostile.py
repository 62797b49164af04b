"""The server under hostile and careless clients (issue 13): every case on loopback, bounded in count and time."""

from __future__ import annotations

import logging
import struct
import time

import grpc
import pytest
from fake_pipeline import FakePipeline
from helpers import wait_for as _wait_for

from xcube_client import XCubeClient
from xcube_client._proto import xcube_pb2 as pb
from xcube_client._proto import xcube_pb2_grpc as pb_grpc

from server.flow import FlowLimits

RAW = [pb.OUTPUT_FORMAT_RAW]



def _health(address: str, timeout: float = 3.0) -> str:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(status.status)


def _info(address: str, timeout: float = 3.0) -> pb.ServerInfo:
    with grpc.insecure_channel(address) as channel:
        return pb_grpc.XCubeStub(channel).GetServerInfo(pb.GetServerInfoRequest(), timeout=timeout)


# -- 1 and 5: clients that never read --------------------------------------------------------------------

def _open_non_readers(server, count: int, request: pb.GenerateRequest) -> tuple[list, list]:
    """Open ``count`` Generate calls, one after another once the previous job has left the worker,
    on their own connections, and never read them."""
    channels, calls = [], []
    for _ in range(count):
        channels.append(grpc.insecure_channel(server.address))
        calls.append(pb_grpc.XCubeStub(channels[-1]).Generate(request, timeout=60))
        time.sleep(0.1)
        _wait_for(lambda: len(server.jobs) == 0 and not server.worker.busy.is_set(), what="the job to leave the worker")
    return channels, calls


def test_non_reading_clients_cannot_starve_health_info_or_generate(serve):
    """14 clients open Generate for ~12.6 MB levels and never read. Before: each held a handler thread
    blocked in its send until gRPC's concurrent-RPC limit (max_queue + 8 = 12) was full, and from then on
    health, info and Generate all answered RESOURCE_EXHAUSTED for as long as they stayed connected."""
    big = FakePipeline(voxels=(450_000,), coarse_shape=(128, 128, 64))
    flow = FlowLimits(max_streams_per_client=64, send_timeout=4.0)  # as if every client had its own host
    server = serve(big, max_queue=4, flow=flow, supported_outputs=("raw",))
    request = pb.GenerateRequest(prompt="never read", steps=1, outputs=RAW)
    channels, calls = _open_non_readers(server, 14, request)
    try:
        admission = server.servicer.flow.admission
        assert admission.total <= admission.max_total == 4 + 1 + 4
        for _ in range(3):  # while the streams are blocked, health and info answer at once
            assert _health(server.address) == "SERVING"
            assert _info(server.address).model_loaded
        _wait_for(lambda: admission.total == 0, timeout=30, what="the watchdog to cut the blocked streams")
        assert _health(server.address) == "SERVING"
        client = XCubeClient(server.address)
        (level,) = client.generate("a reading client", steps=1, outputs=("raw",), timeout=60)
        assert level.num_voxels == 450_000
        client.close()
        codes: dict = {}
        for call in calls:  # the non-readers, once they read, learn why their stream ended
            with pytest.raises(grpc.RpcError) as info:
                for _ in call:
                    pass
            codes.setdefault(info.value.code(), []).append(info.value.details())
        assert set(codes) <= {grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
        assert len(codes.get(grpc.StatusCode.ABORTED, [])) >= 5, codes
        assert all("read nothing" in d for d in codes[grpc.StatusCode.ABORTED]), codes
    finally:
        for ch in channels:
            ch.close()


def test_per_client_stream_limit(serve):
    gate = __import__("threading").Event()
    server = serve(FakePipeline(gate=gate), max_queue=8, flow=FlowLimits(max_streams_per_client=2),
                   supported_outputs=("raw",))
    channel = grpc.insecure_channel(server.address)
    try:
        stub = pb_grpc.XCubeStub(channel)
        request = pb.GenerateRequest(prompt="hold", steps=1, outputs=RAW)
        held = [stub.Generate(request, timeout=30) for _ in range(2)]
        for call in held:
            assert next(call).WhichOneof("event") == "queued"
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Generate(request, timeout=10))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "per-client" in info.value.details()
        assert _health(server.address) == "SERVING"
        gate.set()
        for call in held:
            list(call)
    finally:
        gate.set()
        channel.close()


def test_watch_and_reflection_streams_are_capped_and_leave_unary_calls_alone(serve):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server = serve(FakePipeline(), flow=FlowLimits(max_other_streams=2), supported_outputs=("raw",))
    channels = [grpc.insecure_channel(server.address) for _ in range(3)]
    try:
        watches = [health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""), timeout=20)
                   for ch in channels]
        outcomes = []
        for watch in watches:  # the server may take them in any order: two are served, one refused
            try:
                outcomes.append(health_pb2.HealthCheckResponse.ServingStatus.Name(next(watch).status))
            except grpc.RpcError as exc:
                outcomes.append(exc.code().name)
                assert "watch" in exc.details()
        assert sorted(outcomes) == ["RESOURCE_EXHAUSTED", "SERVING", "SERVING"], outcomes
        assert _health(server.address) == "SERVING" and _info(server.address).model_loaded
    finally:
        for ch in channels:
            ch.close()


# -- 8: bytes that are not the request message -------------------------------------------------------------

@pytest.mark.parametrize("payload", [
    b"\xff\xff\xff\xff",                      # garbage
    b"\x0a\x10abc",                           # truncated: field 1 says 16 bytes, 3 follow
    b"\x0a\x03\xff\xfe\xfd",                  # prompt with invalid UTF-8
])
def test_malformed_protobuf_is_invalid_argument(serve, payload):
    server = serve(FakePipeline(), supported_outputs=("raw",))
    with grpc.insecure_channel(server.address) as channel:
        generate = channel.unary_stream("/xcube.v1.XCube/Generate")
        with pytest.raises(grpc.RpcError) as info:
            list(generate(payload, timeout=10))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert "not a valid Generate request" in info.value.details()
        health = channel.unary_unary("/grpc.health.v1.Health/Check")  # its field 1 is a string too
        with pytest.raises(grpc.RpcError) as info:
            health(payload, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        if payload.startswith(b"\xff"):  # GetServerInfoRequest has no fields: only garbage is invalid
            with pytest.raises(grpc.RpcError) as info:
                channel.unary_unary("/xcube.v1.XCube/GetServerInfo")(payload, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _health(server.address) == "SERVING"


# -- 3, 6, 7: requests whose sizes lie or are huge --------------------------------------------------------

def test_impossible_condition_is_refused_by_arithmetic_before_decoding(monkeypatch):
    """2^21 voxels cannot fit a 16 x 16 x 8 grid (2048 cells): refused from the declared shape alone.
    Before: every byte was decoded and np.unique ran over 2^21 rows first (1.7 s of handler CPU)."""
    from server import validation

    def no_decoding(*args, **kwargs):
        raise AssertionError("the condition was decoded before its declared size was checked")

    monkeypatch.setattr(validation.np, "frombuffer", no_decoding)
    n = 1 << 21
    request = pb.GenerateRequest(prompt="ok", steps=1, outputs=RAW, num_levels=2, condition=pb.ConditionGrid(
        ijk=pb.RawArray(dtype="int32", shape=[n, 3], data=bytes(12 * n)), voxel_size=1.0))
    facts = validation.ModelFacts(3, (1.0, 0.5, 0.25), (16, 16, 8), ("a", "b"))
    with pytest.raises(validation.RequestFieldError) as info:
        validation.validate_request(request, validation.ServerLimits(), facts, ("raw",))
    assert info.value.field == "condition.ijk.shape" and "at most 2048" in str(info.value)


def test_overflowing_and_huge_shapes_are_invalid_argument_with_short_messages(serve):
    server = serve(FakePipeline(), supported_outputs=("raw",))
    huge_rank = pb.RawArray(dtype="int32", shape=[1] * 100_000, data=bytes(4))
    overflow = pb.RawArray(dtype="int32", shape=[(2**64 + 2) // 3, 3], data=bytes(8))  # int64 product: 2
    big_dtype = pb.RawArray(dtype="x" * (25 * 1024 * 1024), shape=[1, 3], data=bytes(12))
    with grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = pb_grpc.XCubeStub(channel)
        for field, ijk in (("condition.ijk.shape", huge_rank), ("condition.ijk.shape", overflow),
                           ("condition.ijk.dtype", big_dtype)):
            request = pb.GenerateRequest(prompt="ok", steps=1, outputs=RAW, num_levels=2,
                                         condition=pb.ConditionGrid(ijk=ijk, voxel_size=1.0))
            call = stub.Generate(request, timeout=30)
            events = []
            with pytest.raises(grpc.RpcError) as info:
                for event in call:
                    events.append(event)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, info.value.details()[:200])
            assert info.value.details().startswith(field + ":") and len(info.value.details()) <= 1000
            assert [e.error.code for e in events] == ["INVALID_ARGUMENT"]
            assert events[0].ByteSize() < 2000
    assert server.worker.busy.is_set() is False


def test_condition_with_one_level_names_num_levels_before_queueing(serve):
    fake = FakePipeline()
    server = serve(fake, supported_outputs=("raw",))
    request = pb.GenerateRequest(prompt="ok", steps=1, outputs=RAW, num_levels=1, condition=pb.ConditionGrid(
        ijk=pb.RawArray(dtype="int32", shape=[1, 3], data=struct.pack("<3i", 1, 2, 3)), voxel_size=1.0))
    with grpc.insecure_channel(server.address) as channel:
        events = []
        with pytest.raises(grpc.RpcError) as info:
            for event in pb_grpc.XCubeStub(channel).Generate(request, timeout=10):
                events.append(event)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("num_levels:") and ("xcube-field", "num_levels") in info.value.trailing_metadata()
    assert [e.WhichOneof("event") for e in events] == ["error"]  # never queued
    assert fake.calls == 0


def test_crlf_prompt_is_normalised(serve):
    server = serve(FakePipeline(), supported_outputs=("raw",))
    with grpc.insecure_channel(server.address) as channel:  # straight to the server, no client help
        request = pb.GenerateRequest(prompt="a harbour\r\nwith boats\r", steps=1, num_levels=1, outputs=RAW)
        events = list(pb_grpc.XCubeStub(channel).Generate(request, timeout=10))
    assert events[-1].WhichOneof("event") == "finished"


# -- 4: what an unauthenticated client can put in the log -------------------------------------------------

def test_rejected_path_is_logged_escaped_and_clipped(serve, caplog):
    server = serve(FakePipeline(), token="t0ken", supported_outputs=("raw",))
    path = "/xcube.v1.XCube/Generate\x1b[2J\r\nFORGED 2026-01-01 INFO xcube.server: all good" + "A" * 12_000
    with caplog.at_level(logging.WARNING, logger="xcube.server"), grpc.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.RpcError):  # refused whatever the code (the echoed path may not fit)
            channel.unary_unary(path)(b"", timeout=10)
    rejected = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rejected")]
    assert rejected, "the rejected call was not logged"
    for line in rejected:
        assert "\n" not in line and "\r" not in line and "\x1b" not in line and len(line) < 400, line[:500]


# -- 9: arguments of python -m server and create_server ----------------------------------------------------

def test_bad_tls_files_are_named(tmp_path):
    from xcube_core.errors import InvalidInputError

    from server.app import create_server

    not_pem = tmp_path / "cert.der"
    not_pem.write_bytes(b"\x30\x82\x01\x0a not a pem file")
    with pytest.raises(InvalidInputError, match="--tls-cert is not a PEM certificate") as info:
        create_server(FakePipeline(), port=0, tls_cert=str(not_pem), tls_key=str(not_pem))
    assert "another server" not in str(info.value)
    fake_pem = tmp_path / "fake.pem"
    fake_pem.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    key = tmp_path / "key.pem"
    key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(InvalidInputError, match="not a usable PEM pair"):
        create_server(FakePipeline(), port=0, tls_cert=str(fake_pem), tls_key=str(key))
    with pytest.raises(InvalidInputError, match="0..65535"):
        create_server(FakePipeline(), port=70000)
