"""Token checks on every RPC: `authorization: Bearer <token>` metadata, compared in constant time.

One token guards every service; the producer service can require its own token instead (so
readers cannot write), and that token may also list and look up jobs (so a producer can resume).
A job's metadata is read as its results are: with only a producer token set, it needs none. This is the header the reference client sends when given a token.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import grpc

from ..grpc_typing import ServerInterceptor

__all__ = ["TokenInterceptor"]

PRODUCER_PREFIX = "/qm_xarray.v1.ProducerService/"
JOBS_PREFIX = "/qm_xarray.v1.JobsService/"
READS = (JOBS_PREFIX + "GetMetadata",)  # part of reading a job (the engine asks it), not of listing


def _deny(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    def abort(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kinds: list[tuple[str, Callable[..., grpc.RpcMethodHandler]]] = [
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler)]
    for attr, build in kinds:
        if getattr(handler, attr):
            return build(abort, request_deserializer=None, response_serializer=None)
    raise AssertionError("a handler of no known kind")


class TokenInterceptor(ServerInterceptor):
    """Refuse (UNAUTHENTICATED) any call without the right bearer token."""

    def __init__(self, token: str | None, producer_token: str | None = None):
        self._token = None if token is None else f"Bearer {token}".encode()
        self._producer = None if producer_token is None else f"Bearer {producer_token}".encode()

    def _expected(self, method: str) -> tuple[bytes, ...]:
        if method.startswith(PRODUCER_PREFIX) and self._producer is not None:
            return (self._producer,)
        allowed = tuple(t for t in (self._token,) if t is not None)
        if method in READS and not allowed:
            return ()  # what a reader opens with: guarded as the results services are
        if method.startswith(JOBS_PREFIX) and self._producer is not None:
            allowed += (self._producer,)  # a producer may look up the jobs it resumes
        return allowed

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        expected = self._expected(details.method)
        if handler is None or not expected:
            return handler
        given = b""
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else bytes(value)
                break
        if any([hmac.compare_digest(given, token) for token in expected]):  # all compared: no early exit
            return handler
        reason = "missing token" if not given else "wrong token"
        return _deny(handler, f"{reason} for {details.method.rsplit('/', 1)[-1]}")
