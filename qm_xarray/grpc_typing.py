"""Typed stand-ins for the grpc classes we subclass: grpc ships no type information.

At run time these are grpc's own classes; type checkers see the methods grpc calls on them, so
subclasses are checked instead of deriving from `Any`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

__all__ = ["ServerInterceptor"]

if TYPE_CHECKING:
    class ServerInterceptor:
        """`grpc.ServerInterceptor`: grpc calls `intercept_service` for every call it serves."""

        def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any: ...
else:
    ServerInterceptor = grpc.ServerInterceptor
