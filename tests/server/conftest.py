"""Fixtures: real in-process servers on free loopback ports, and clients for them."""

from __future__ import annotations

import pathlib
import sys
import warnings

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from fake_pipeline import FakePipeline  # noqa: E402


def load_tiny_pipeline():
    """``XCubePipeline.tiny()`` when the lead's pipeline is importable, else None."""
    try:
        from xcube_core.pipeline import XCubePipeline
    except ImportError:
        return None
    if not hasattr(XCubePipeline, "tiny"):
        return None
    try:
        return XCubePipeline.tiny(seed=0)
    except ImportError as exc:  # a module the pipeline needs has not landed yet
        warnings.warn(f"XCubePipeline.tiny() unavailable ({exc}); server tests use FakePipeline", stacklevel=1)
        return None


@pytest.fixture(scope="session")
def model_pipeline():
    """The tiny random-weight model (or the fake while the pipeline has not landed)."""
    return load_tiny_pipeline() or FakePipeline()


@pytest.fixture
def serve():
    """``serve(pipeline, **create_server_kwargs) -> XCubeServer``; every server is stopped afterwards."""
    from server.app import create_server

    servers = []

    def start(pipeline, **kwargs):
        server, port = create_server(pipeline, host="127.0.0.1", port=0, **kwargs)
        servers.append(server)
        assert server.wait_until_ready(30), "the model did not load"
        return server

    yield start
    for server in servers:
        server.stop(0)


@pytest.fixture
def connect():
    """``connect(server, **client_kwargs) -> XCubeClient``; closed afterwards."""
    from xcube_client import XCubeClient

    clients = []

    def make(server, **kwargs):
        client = XCubeClient(server.address, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
