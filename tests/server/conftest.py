"""Fixtures: real in-process servers on free loopback ports, and clients for them."""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))



@pytest.fixture(scope="session")
def model_pipeline():
    """The tiny random-weight model (`xcube_core.testing.tiny_pipeline`): the real `XCubePipeline`.

    No fallback: if the pipeline or a module it needs fails to import, the server tests fail.
    """
    from xcube_core.testing import tiny_pipeline

    return tiny_pipeline(seed=0)


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
