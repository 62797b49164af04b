"""xcube_client: a small, torch-free client of the XCube gRPC server (stdlib + grpcio + protobuf).

    from xcube_client import XCubeClient
    client = XCubeClient("127.0.0.1:50051")
    for level in client.generate("a small harbour town", outputs=("vdb", "raw")):
        level.write("out/")

The generated stubs live in ``xcube_client._proto`` (from ``proto/xcube/v1/xcube.proto`` via
``scripts/gen_proto.py``, never edited by hand); the Blender add-on vendors this whole package.
"""

from xcube_client.client import DEFAULT_ADDRESS, XCubeClient, parse_address
from xcube_client.errors import (
    AuthenticationError,
    DeadlineExceededError,
    GenerationCancelledError,
    IntegrityError,
    InvalidAddressError,
    InvalidRequestError,
    ServerBusyError,
    ServerError,
    ServerUnavailableError,
    XCubeClientError,
)
from xcube_client.scene import EditRegion, LayoutMesh, SceneLevel
from xcube_client.types import Artifact, ConditionGrid, GeneratedLevel, ServerInfo

__all__ = [
    "DEFAULT_ADDRESS", "XCubeClient", "parse_address", "Artifact", "ConditionGrid", "GeneratedLevel", "ServerInfo",
    "LayoutMesh", "EditRegion", "SceneLevel",
    "XCubeClientError", "ServerUnavailableError", "InvalidRequestError", "AuthenticationError", "ServerBusyError",
    "GenerationCancelledError", "DeadlineExceededError", "IntegrityError", "ServerError", "InvalidAddressError",
]
