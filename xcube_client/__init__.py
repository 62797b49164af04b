"""xcube_client: a small, torch-free client of the XCube gRPC server (stdlib + grpcio + protobuf).

The generated stubs live in ``xcube_client._proto`` (from ``proto/xcube/v1/xcube.proto`` via
``scripts/gen_proto.py``); the Blender add-on vendors this package.
"""
