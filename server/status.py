"""The one place where exceptions become gRPC status codes (and short, actionable messages)."""

from __future__ import annotations

import logging

import grpc

from xcube_core.errors import (
    CancelledError,
    InvalidInputError,
    ModelLoadError,
    ResourceExhaustedError,
    XCubeError,
)

log = logging.getLogger("xcube.server")


class ServerUnavailable(XCubeError):
    """The model is still loading or the server is shutting down. Maps to UNAVAILABLE (retryable)."""


MAX_MESSAGE_CHARS = 1000  # status details travel in HTTP/2 trailers (gRPC's metadata limit is 16 KiB)


def clip(text: object, limit: int = 80) -> str:
    """``text`` as a printable string of at most ``limit`` characters (client input in messages/logs)."""
    value = str(text)
    value = value.encode("unicode_escape", "backslashreplace").decode("ascii") if not value.isprintable() else value
    return value if len(value) <= limit else value[: max(0, limit - 20)] + f"... ({len(value)} chars)"


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def status_for(exc: BaseException, request_id: str = "") -> tuple[grpc.StatusCode, str, str]:
    """Map an exception to ``(status code, message, field)``; ``field`` is set for INVALID_ARGUMENT.

    The message is at most `MAX_MESSAGE_CHARS` printable characters, whatever the exception holds.
    """
    code, message, field = _status_for(exc, request_id)
    return code, clip(message, MAX_MESSAGE_CHARS), clip(field, 100)


def _status_for(exc: BaseException, request_id: str = "") -> tuple[grpc.StatusCode, str, str]:
    field = getattr(exc, "field", "") or ""
    if isinstance(exc, InvalidInputError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc), field
    if isinstance(exc, CancelledError):
        return grpc.StatusCode.CANCELLED, str(exc) or "cancelled", ""
    if isinstance(exc, ResourceExhaustedError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), ""
    if _is_out_of_memory(exc):
        return (grpc.StatusCode.RESOURCE_EXHAUSTED,
                "the server ran out of memory on this request; try fewer levels or retry later", "")
    if isinstance(exc, ServerUnavailable):
        return grpc.StatusCode.UNAVAILABLE, str(exc), ""
    if isinstance(exc, ModelLoadError):
        return grpc.StatusCode.FAILED_PRECONDITION, f"the server's model failed to load: {exc}", ""
    if isinstance(exc, XCubeError):
        return grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}", ""
    log.error("request %s failed with an unexpected error", request_id or "-", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal server error ({type(exc).__name__}); see the server log " \
                                     f"for request {request_id}", ""
