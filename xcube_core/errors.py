"""A small error family so callers (CLI, server) map failures to messages/status codes in one place."""


class XCubeError(Exception):
    """Base class of every error xcube_core raises on purpose."""


class InvalidInputError(XCubeError, ValueError):
    """A caller passed a wrong value (range, shape, resolution). Maps to INVALID_ARGUMENT."""


class ModelLoadError(XCubeError):
    """A checkpoint is missing, corrupt or from another architecture. Maps to FAILED_PRECONDITION."""


class DataError(XCubeError, ValueError):
    """A data file is corrupt or unreadable; the message names the file."""


class CancelledError(XCubeError):
    """Work stopped because its cancel token was set. Maps to CANCELLED."""


class ResourceExhaustedError(XCubeError):
    """Out of memory or a full queue. Maps to RESOURCE_EXHAUSTED."""
