"""Every malformed field -> INVALID_ARGUMENT naming it; tokens; bind policy; error -> status mapping."""

from __future__ import annotations

import math

import grpc
import pytest
import torch
from fake_pipeline import FakePipeline

from xcube_client import AuthenticationError, InvalidRequestError, XCubeClient
from xcube_client._proto import xcube_pb2 as pb
from xcube_client._proto import xcube_pb2_grpc as pb_grpc
from xcube_core.errors import (
    CancelledError,
    DataError,
    InvalidInputError,
    ModelLoadError,
    ResourceExhaustedError,
)

from server.status import ServerUnavailable, status_for


def _raw(dtype="int32", shape=(1, 3), data=None):
    size = {"int32": 4, "int64": 8, "float32": 4}[dtype]
    n = math.prod(shape)
    return pb.RawArray(dtype=dtype, shape=list(shape), data=data if data is not None else bytes(n * size))


def _ijk(rows):
    import struct

    return pb.RawArray(dtype="int32", shape=[len(rows), 3], data=b"".join(struct.pack("<3i", *r) for r in rows))


def _cond(**kw):
    base = dict(ijk=_ijk([(1, 2, 3)]), voxel_size=1.0)
    base.update(kw)
    return pb.ConditionGrid(**base)


# (field the server must name, request fields)
MALFORMED = [
    ("prompt", dict(prompt="")),
    ("prompt", dict(prompt="   \n ")),
    ("prompt", dict(prompt="x" * 1001)),
    ("prompt", dict(prompt="bad\x00byte")),
    ("seed", dict(seed=2**63)),
    ("steps", dict(steps=1001)),
    ("guidance", dict(guidance=-0.5)),
    ("guidance", dict(guidance=float("nan"))),
    ("guidance", dict(guidance=1e6)),
    ("class_prior", dict(class_prior=-1.0)),
    ("class_prior", dict(class_prior=float("nan"))),
    ("num_levels", dict(num_levels=4)),
    ("outputs", dict(outputs=[pb.OUTPUT_FORMAT_UNSPECIFIED])),
    ("outputs", dict(outputs=[17])),
    ("outputs", dict(outputs=[pb.OUTPUT_FORMAT_RAW, pb.OUTPUT_FORMAT_RAW])),
    ("outputs", dict(outputs=[pb.OUTPUT_FORMAT_MESH])),  # not offered by this server (raw only)
    ("client_tag", dict(client_tag="t" * 129)),
    ("client_tag", dict(client_tag="tab\there")),
    ("condition.ijk", dict(condition=pb.ConditionGrid(voxel_size=1.0))),
    ("condition.ijk.dtype", dict(condition=_cond(ijk=_raw(dtype="float32")))),
    ("condition.ijk.shape", dict(condition=_cond(ijk=_raw(shape=(2, 2))))),
    ("condition.ijk.data", dict(condition=_cond(ijk=_raw(shape=(2, 3), data=bytes(20))))),
    ("condition.ijk", dict(condition=_cond(ijk=_raw(shape=(0, 3))))),
    ("condition.ijk", dict(condition=_cond(ijk=_ijk([(16, 0, 0)])))),
    ("condition.ijk", dict(condition=_cond(ijk=_ijk([(-1, 0, 0)])))),
    ("condition.ijk", dict(condition=_cond(ijk=_ijk([(1, 1, 1), (1, 1, 1)])))),
    ("condition.voxel_size", dict(condition=_cond(voxel_size=0.5))),
    ("condition.voxel_size", dict(condition=_cond(voxel_size=float("inf")))),
    ("condition.semantics.shape", dict(condition=_cond(semantics=_raw(shape=(2,))))),
    ("condition.semantics.dtype", dict(condition=_cond(semantics=_raw(dtype="float32", shape=(1,))))),
    ("condition.semantics", dict(condition=_cond(semantics=pb.RawArray(dtype="int32", shape=[1],
                                                                       data=(99).to_bytes(4, "little"))))),
]


@pytest.fixture
def raw_only_server(serve):
    return serve(FakePipeline(), supported_outputs=("raw",))


def test_every_malformed_field_is_invalid_argument_naming_it(raw_only_server):
    with grpc.insecure_channel(raw_only_server.address) as channel:
        stub = pb_grpc.XCubeStub(channel)
        for field, fields in MALFORMED:
            request = pb.GenerateRequest(**{"prompt": "ok", "steps": 1, "outputs": [pb.OUTPUT_FORMAT_RAW], **fields})
            with pytest.raises(grpc.RpcError) as info:
                list(stub.Generate(request, timeout=10))
            err = info.value
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, err.details())
            assert err.details().startswith(field + ":"), (field, err.details())
            assert ("xcube-field", field) in tuple(err.trailing_metadata()), field
    assert raw_only_server.worker.busy.is_set() is False  # nothing reached the worker


def test_client_reports_the_field(raw_only_server, connect):
    client = connect(raw_only_server)
    with pytest.raises(InvalidRequestError) as info:
        list(client.generate("ok", steps=5000, outputs=("raw",)))
    assert info.value.field == "steps" and "1..1000" in str(info.value)
    with pytest.raises(ValueError, match="unknown output"):
        list(client.generate("ok", outputs=("obj",)))
    # the server is still serving after all of that
    assert len(list(client.generate("fine", steps=1, outputs=("raw",)))) == 3


def test_wrong_or_missing_token_is_unauthenticated(serve, connect):
    server = serve(FakePipeline(), token="s3cret-token")
    for token in (None, "wrong"):
        client = connect(server, token=token)
        with pytest.raises(AuthenticationError, match="--token"):
            client.info()
        with pytest.raises(AuthenticationError):
            client.health()
        with pytest.raises(AuthenticationError):
            list(client.generate("x", steps=1, outputs=("raw",)))
    good = connect(server, token="s3cret-token")
    assert good.info().auth_required is True
    assert good.health() == "SERVING"
    assert len(list(good.generate("x", steps=1, outputs=("raw",)))) == 3


def test_non_loopback_bind_needs_a_token_and_tls_needs_both_files():
    from server.app import create_server, is_loopback

    with pytest.raises(InvalidInputError, match="without --token"):
        create_server(FakePipeline(), host="0.0.0.0", port=0)
    with pytest.raises(InvalidInputError, match="both"):
        create_server(FakePipeline(), host="127.0.0.1", port=0, tls_cert=b"cert")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.com")


def test_address_validation_hints():
    from xcube_client import parse_address

    with pytest.raises(ValueError, match="not a URL.*'localhost:50051'"):
        parse_address("http://localhost:50051/")
    with pytest.raises(ValueError, match="host:port"):
        parse_address("localhost")
    assert parse_address(" [::1]:50051 ") == "[::1]:50051"
    XCubeClient("127.0.0.1:1").close()


@pytest.mark.parametrize("exc, code", [
    (InvalidInputError("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (CancelledError("x"), grpc.StatusCode.CANCELLED),
    (ResourceExhaustedError("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (torch.cuda.OutOfMemoryError("CUDA out of memory"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (MemoryError(), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ServerUnavailable("x"), grpc.StatusCode.UNAVAILABLE),
    (ModelLoadError("x"), grpc.StatusCode.FAILED_PRECONDITION),
    (DataError("x"), grpc.StatusCode.INTERNAL),
    (KeyError("secret internals"), grpc.StatusCode.INTERNAL),
])
def test_errors_map_to_status_codes_in_one_place(exc, code):
    got, message, _ = status_for(exc, "req1")
    assert got == code
    if isinstance(exc, KeyError):  # unexpected errors: no internals on the wire, the id to grep the log
        assert "secret internals" not in message and "req1" in message


def test_tls_with_token(serve, tmp_path):
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    server = serve(FakePipeline(), token="tls-token", tls_cert=str(cert), tls_key=str(key))
    client = XCubeClient(server.address, token="tls-token", root_certificates=cert.read_bytes())
    assert client.health() == "SERVING"
    assert len(list(client.generate("over tls", steps=1, outputs=("raw",)))) == 3
    client.close()
    plain = XCubeClient(server.address, token="tls-token", timeout=2)  # plaintext to a TLS port fails clearly
    with pytest.raises(Exception) as info:
        plain.info()
    assert info.value.code == "UNAVAILABLE"
    plain.close()


def test_a_model_that_fails_to_load_keeps_health_not_serving(connect):
    from server.app import create_server

    def broken_factory():
        raise ModelLoadError("config.json: unknown architecture 'xcube-v9'")

    server, _ = create_server(broken_factory, port=0)
    try:
        assert server.wait_until_ready(10) is False
        client = connect(server)
        assert client.health() == "NOT_SERVING" and client.info().model_loaded is False
        with pytest.raises(Exception) as info:
            list(client.generate("x", steps=1, outputs=("raw",)))
        assert info.value.code == "FAILED_PRECONDITION" and "xcube-v9" in str(info.value)
    finally:
        server.stop(0)
