"""Token check on every call: a server interceptor that answers UNAUTHENTICATED without the token.

Clients send metadata ``authorization: Bearer <token>`` (the bare token is accepted too). The
comparison is constant-time. Health and reflection are covered like every other method.
"""

from __future__ import annotations

import hmac
import logging

import grpc

from server.status import clip

log = logging.getLogger("xcube.server")


def _aborting_handler(handler: grpc.RpcMethodHandler | None, message: str) -> grpc.RpcMethodHandler:
    def abort(request_or_iterator, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    request_streaming = bool(handler and handler.request_streaming)
    response_streaming = bool(handler and handler.response_streaming)
    des = handler.request_deserializer if handler else None
    ser = handler.response_serializer if handler else None
    if request_streaming and response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort, des, ser)
    if request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort, des, ser)
    if response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort, des, ser)
    return grpc.unary_unary_rpc_method_handler(abort, des, ser)


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Rejects every call whose ``authorization`` metadata does not carry ``token``."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("TokenAuthInterceptor needs a non-empty token")
        self._token = token.encode("utf-8")

    def intercept_service(self, continuation, handler_call_details):
        value = ""
        for key, val in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                value = val if isinstance(val, str) else val.decode("utf-8", "replace")
        if value.lower().startswith("bearer "):
            value = value[7:]
        if value and hmac.compare_digest(value.strip().encode("utf-8"), self._token):
            return continuation(handler_call_details)
        reason = "wrong token" if value else "missing token (send metadata 'authorization: Bearer <token>')"
        # the path comes from an unauthenticated client: escaped and clipped, one line whatever it holds
        log.warning("rejected %s: %s", clip(handler_call_details.method, 120), reason)
        return _aborting_handler(continuation(handler_call_details), reason)
