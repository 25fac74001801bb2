"""Mapping of gRPC failures to qm_xarray exceptions (one place, used by every client call)."""

from __future__ import annotations

import grpc

from ..errors import (
    InvalidArgumentError,
    JobFinishedError,
    JobNotFoundError,
    QMConnectionError,
    QmQuaException,
    QMTimeoutError,
    StreamNotFoundError,
)

__all__ = ["map_rpc_error", "AuthenticationError"]


class AuthenticationError(QMConnectionError, PermissionError):
    """The server refused the credentials (missing or wrong token)."""


def map_rpc_error(error: grpc.RpcError, what: str) -> QmQuaException:
    """The exception for a failed RPC; `what` names the call and its job/stream."""
    code = error.code() if hasattr(error, "code") else None
    details = (error.details() if hasattr(error, "details") else None) or str(error)
    text = f"{what}: {details}"
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return QMTimeoutError(f"{what}: deadline exceeded")
    if code is grpc.StatusCode.NOT_FOUND:
        if "stream" in details and "job" in details and "no job" not in details:
            return StreamNotFoundError(text)
        return JobNotFoundError(text)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgumentError(text)
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return JobFinishedError(text)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return AuthenticationError(text)
    name = code.name if code is not None else "UNKNOWN"
    return QMConnectionError(f"{text} (gRPC status {name})")
