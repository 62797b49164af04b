"""`python -m server`: the XCube gRPC inference server over `xcube_core.pipeline.XCubePipeline`.

``create_server(pipeline, host, port=0, ...) -> (server, port)`` builds a running server (tests bind
port 0); see `server.app`. The wire contract is ``proto/xcube/v1/xcube.proto``; the client lives in
the torch-free ``xcube_client`` package (``server.client`` is an alias).
"""

from __future__ import annotations

__all__ = ["create_server", "XCubeServer", "ServerLimits"]


def __getattr__(name: str):
    # Lazy, so `python -m server.client` does not import torch.
    if name in ("create_server", "XCubeServer"):
        from server import app

        return getattr(app, name)
    if name == "ServerLimits":
        from server.validation import ServerLimits

        return ServerLimits
    raise AttributeError(f"module 'server' has no attribute {name!r}")
