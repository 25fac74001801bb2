"""A server interceptor that records every RPC and its request: for tests that count round trips
or check the exact ranges a client asks for."""

from __future__ import annotations

import threading
from typing import Any

import grpc

from ..grpc_typing import ServerInterceptor

__all__ = ["RecordingInterceptor", "DATA_METHODS", "request_ranges"]

DATA_METHODS = ("GetNamedResult", "GetNamedResults", "GetJobNamedResult")


def request_ranges(method: str, request: Any) -> list[tuple[str, int, int]]:
    """The half-open item ranges `(stream, start, stop)` one data request asks for: v2
    `GetNamedResult` (`long_offset`, `limit`), v2 `GetNamedResults` (one inclusive `range` per
    output) and v1 `GetJobNamedResult` (`longOffset`, `limit`)."""
    if method == "GetNamedResult":
        start = request.long_offset.value
        return [(request.output_name, start, start + request.limit)]
    if method == "GetJobNamedResult":
        start = request.longOffset.value
        return [(request.outputName, start, start + request.limit)]
    if method == "GetNamedResults":
        return [(o.output_name, getattr(o.range, "from").value, o.range.to.value + 1)
                for o in request.outputs]
    raise ValueError(f"{method} is not a data RPC")


class RecordingInterceptor(ServerInterceptor):
    """Pass to `qx.serve(..., interceptors=[rec])`; read `rec.calls` as (method, request) pairs."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()

    def methods(self) -> list[str]:
        with self._lock:
            return [m for m, _ in self.calls]

    def count(self, method: str) -> int:
        return self.methods().count(method)

    def requests(self, method: str) -> list[Any]:
        with self._lock:
            return [r for m, r in self.calls if m == method]

    def spans(self, stream: str) -> list[tuple[int, int]]:
        """The non-empty item ranges `(start, stop)` of `stream` that the recorded data RPCs
        asked for, sorted: what a test checks to say "each item was fetched once"."""
        found = [(a, b) for m, r in list(self.calls) if m in DATA_METHODS
                 for name, a, b in request_ranges(m, r) if name == stream]
        return sorted((a, b) for a, b in found if b > a)

    def _record(self, method: str, request: Any) -> None:
        with self._lock:
            self.calls.append((method, request))

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method.rsplit("/", 1)[-1]
        record = self._record
        if handler.unary_unary:
            inner = handler.unary_unary

            def unary(request: Any, context: Any) -> Any:
                record(method, request)
                return inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            def stream(request: Any, context: Any) -> Any:
                record(method, request)
                return inner_stream(request, context)

            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer)
        record(method, None)
        return handler
