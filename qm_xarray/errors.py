"""The exception hierarchy of qm_xarray.

The names are those of the reference client (`qm.exceptions`) so that user code catching them keeps
working. Bad arguments raise classes that are both a `QmQuaException` and the matching builtin
(`TypeError`, `ValueError`, `KeyError`, `IndexError`), so either `except` clause catches them.
"""

from __future__ import annotations

__all__ = [
    "QmQuaException",
    "StreamProcessingDataLossError",
    "DataFetchingError",
    "QMTimeoutError",
    "QMConnectionError",
    "QmInvalidSchemaError",
    "JobNotFoundError",
    "StreamNotFoundError",
    "InvalidArgumentError",
    "QmTypeError",
    "QmValueError",
    "QmKeyError",
    "QmIndexError",
    "JobFinishedError",
    "JobFailedError",
]


class QmQuaException(Exception):
    """Base of every qm_xarray error; `.message` holds the text, as in the reference client."""

    def __init__(self, message: str = "", *args: object) -> None:
        super().__init__(message, *args)
        self.message = message

    def __str__(self) -> str:
        return self.message


class StreamProcessingDataLossError(QmQuaException):
    """The server reports that results of the job were lost."""


class DataFetchingError(QmQuaException):
    """The server answered a data request with an error, or with data that does not add up."""


class QMTimeoutError(QmQuaException, TimeoutError):
    """A deadline passed; the message names what was awaited."""


class QMConnectionError(QmQuaException, ConnectionError):
    """The server could not be reached or answered with an unexpected gRPC error."""


class QmInvalidSchemaError(QmQuaException, ValueError):
    """A stream description (dtype, shape, single flag) is invalid or inconsistent."""


class QmTypeError(QmQuaException, TypeError):
    """An argument has the wrong type."""


class QmValueError(QmQuaException, ValueError):
    """An argument has the right type but a wrong value."""


class QmKeyError(QmQuaException, KeyError):
    """A name is unknown."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


class QmIndexError(QmQuaException, IndexError):
    """An index is out of range."""


class InvalidArgumentError(QmValueError):
    """A request to the results server was refused as invalid (gRPC INVALID_ARGUMENT)."""


class JobNotFoundError(QmKeyError, QMConnectionError):
    """No job with this id exists (gRPC NOT_FOUND). Also a `QMConnectionError`, which is what
    the reference client raises in this case."""


class StreamNotFoundError(QmKeyError, QMConnectionError):
    """The job has no stream of this name (gRPC NOT_FOUND); also a `QMConnectionError`."""


class JobFailedError(QmQuaException):
    """The job ended in error or was cancelled (what a wait function raises in the reference)."""


class JobFinishedError(QmQuaException, RuntimeError):
    """The job has ended (done or closed); it takes no more items or streams."""
