"""Client-side errors: every gRPC failure becomes one of these, with a message that says what to do."""

from __future__ import annotations


class XCubeClientError(Exception):
    """Base class of every error the client raises.

    Attributes:
        code: gRPC status code name ("UNAVAILABLE", "INVALID_ARGUMENT", ...), "DATA_LOSS" for a
            corrupt download, or "ADDRESS" for a malformed server address (raised before any call).
        details: the server's message (or the transport's), without the client's hint.
        field: for INVALID_ARGUMENT, the offending request field when the server named it.
    """

    code = "UNKNOWN"

    def __init__(self, message: str, *, code: str | None = None, details: str = "", field: str = "") -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.details = details
        self.field = field


class ServerUnavailableError(XCubeClientError):
    """The server is not reachable, went away mid-stream, or is still loading its model."""

    code = "UNAVAILABLE"


class InvalidAddressError(XCubeClientError, ValueError):
    """The server address is not ``host:port`` (a URL, no port, an empty host)."""

    code = "ADDRESS"


class InvalidRequestError(XCubeClientError, ValueError):
    """The server rejected a request field (``field`` names it)."""

    code = "INVALID_ARGUMENT"


class AuthenticationError(XCubeClientError):
    """Missing or wrong token."""

    code = "UNAUTHENTICATED"


class ServerBusyError(XCubeClientError):
    """The server's queue is full or it ran out of memory; retry later or with a smaller request."""

    code = "RESOURCE_EXHAUSTED"


class GenerationCancelledError(XCubeClientError):
    """The job was cancelled (by this client's ``cancel()``, or by the server shutting down)."""

    code = "CANCELLED"


class DeadlineExceededError(XCubeClientError):
    """The call took longer than its timeout."""

    code = "DEADLINE_EXCEEDED"


class IntegrityError(XCubeClientError):
    """A received artifact is incomplete or its SHA-256 does not match."""

    code = "DATA_LOSS"


class ServerError(XCubeClientError):
    """Any other server-side failure (INTERNAL, FAILED_PRECONDITION, ...)."""

    code = "INTERNAL"


_BY_CODE = {
    cls.code: cls
    for cls in (ServerUnavailableError, InvalidRequestError, AuthenticationError, ServerBusyError,
                GenerationCancelledError, DeadlineExceededError, IntegrityError)
}


def error_class(code: str) -> type[XCubeClientError]:
    """The exception class for a gRPC status code name."""
    return _BY_CODE.get(code, ServerError)
