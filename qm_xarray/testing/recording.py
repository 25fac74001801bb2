"""A server interceptor that records every RPC and its request: for tests that count round trips
or check the exact ranges a client asks for."""

from __future__ import annotations

import threading
from typing import Any

import grpc

from ..grpc_typing import ServerInterceptor

__all__ = ["RecordingInterceptor"]


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
