"""Helpers shared by the gRPC services: error mapping and splitting item ranges into messages."""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar, cast

import grpc
from google.protobuf.message import DecodeError

from ..errors import (
    JobFinishedError,
    JobNotFoundError,
    QmKeyError,
    QmQuaException,
    QmValueError,
    StreamNotFoundError,
)
from ..limits import (
    MAX_APPEND_BYTES,
    MAX_REQUEST_BYTES,
    MESSAGE_BYTES,  # payload per data message: the measured sweet spot
)

log = logging.getLogger("qm_xarray.server")

F = TypeVar("F", bound=Callable[..., Any])


class InvalidRequest(QmValueError):
    """A request field is out of range; answered with INVALID_ARGUMENT."""


def status_of(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, (JobNotFoundError, StreamNotFoundError, QmKeyError)):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, JobFinishedError):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(exc, QmQuaException) and isinstance(exc, (ValueError, TypeError)):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


def _abort(context: grpc.ServicerContext, exc: BaseException) -> None:
    if context.code() is not None:  # already aborted with its own status (e.g. a bad request)
        raise exc
    if isinstance(exc, grpc.RpcError):  # grpc's own signal: the client cancelled or went away
        raise exc  # mid-request (e.g. a producer killed mid-append); grpc ends the call quietly
    code = status_of(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.exception("internal error while serving a request")
        context.abort(code, f"internal server error: {type(exc).__name__}")
    context.abort(code, str(exc))


def rpc(method: F) -> F:
    """Map our exceptions to gRPC status codes; anything unexpected becomes INTERNAL (logged)."""
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def stream_wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from method(self, request, context)
            except Exception as exc:  # noqa: BLE001 - mapped, never fatal
                _abort(context, exc)
        return cast(F, stream_wrapper)  # functools.wraps keeps the signature F describes

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - mapped, never fatal
            _abort(context, exc)
    return cast(F, wrapper)


def check_range(offset: int, limit: int | None, what: str) -> None:
    if offset < 0:
        raise InvalidRequest(f"{what}: negative offset {offset} (offsets count from 0)")
    if limit is not None and limit < 0:
        raise InvalidRequest(f"{what}: negative limit {limit}")


def item_messages(itemsize: int, pieces: Iterable[memoryview],
                  max_bytes: int = MESSAGE_BYTES) -> Iterator[tuple[int, list[memoryview]]]:
    """Split whole-item byte pieces into messages of at most `max_bytes` payload.

    Yields `(items_completed, payload_pieces)`; messages hold whole items unless one item is larger
    than `max_bytes`, in which case its bytes span several messages and only the last counts it.
    """
    if itemsize <= max_bytes:
        step = (max_bytes // itemsize) * itemsize
        for piece in pieces:
            for pos in range(0, len(piece), step):
                part = piece[pos:pos + step]
                yield len(part) // itemsize, [part]
        return
    for piece in pieces:
        for item in range(0, len(piece), itemsize):
            for pos in range(item, item + itemsize, max_bytes):
                end = min(pos + max_bytes, item + itemsize)
                yield (1 if end == item + itemsize else 0), [piece[pos:end]]


def handlers(service: str, methods: dict[str, grpc.RpcMethodHandler]) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(service, methods)


class _Invalid:
    """What a request that failed to parse becomes; its handler answers INVALID_ARGUMENT."""

    def __init__(self, message: str):
        self.message = message


def _parser(request_cls: Any, limit: int) -> Callable[[bytes], Any]:
    name = request_cls.DESCRIPTOR.name

    def parse(raw: bytes) -> Any:
        if len(raw) > limit:
            return _Invalid(f"{name} of {len(raw)} bytes is larger than the limit of {limit} bytes")
        try:
            return request_cls.FromString(raw)
        except DecodeError as exc:
            return _Invalid(f"malformed {name}: {exc}")

    return parse


def _reject(request: Any, context: grpc.ServicerContext) -> None:
    if isinstance(request, _Invalid):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)


def unary(fn: Callable[..., Any], request_cls: Any, raw: bool = False) -> grpc.RpcMethodHandler:
    def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
        _reject(request, context)
        return fn(request, context)

    return grpc.unary_unary_rpc_method_handler(
        behaviour, request_deserializer=_parser(request_cls, MAX_REQUEST_BYTES),
        response_serializer=None if raw else _serialize)


class StallWatchdog:
    """Cancels data streams whose client has stopped reading, so they give their thread back.

    grpc pulls the next message from a handler only once the previous one was handed to the
    transport; a stream that has not pulled for `stall_seconds` has a client that does not read.
    """

    def __init__(self, stall_seconds: float = 30.0):
        self.stall_seconds = stall_seconds
        self._active: dict[int, list[Any]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, context: grpc.ServicerContext, messages: Iterator[Any]) -> Iterator[Any]:
        entry = [context, time.monotonic()]
        with self._lock:
            self._active[id(entry)] = entry
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="qm-xarray-stall-watchdog",
                                                daemon=True)
                self._thread.start()
        try:
            for message in messages:
                yield message
                entry[1] = time.monotonic()
        finally:
            with self._lock:
                self._active.pop(id(entry), None)

    def _run(self) -> None:
        while True:
            time.sleep(min(max(self.stall_seconds / 4, 0.05), 1.0))
            now = time.monotonic()
            with self._lock:
                stalled = [e for e in self._active.values() if now - e[1] > self.stall_seconds]
            for context, _ in stalled:
                log.warning("cancelling a data stream whose client read nothing for %.0f s",
                            self.stall_seconds)
                context.cancel()


WATCHDOG = StallWatchdog()


def server_stream(fn: Callable[..., Any], request_cls: Any, raw: bool = False) -> grpc.RpcMethodHandler:
    """A server-streaming handler; `raw` ones (data) are watched for clients that stop reading."""
    def behaviour(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        _reject(request, context)
        if raw:
            yield from WATCHDOG.watch(context, fn(request, context))
        else:
            yield from fn(request, context)

    return grpc.unary_stream_rpc_method_handler(
        behaviour, request_deserializer=_parser(request_cls, MAX_REQUEST_BYTES),
        response_serializer=None if raw else _serialize)


def client_stream(fn: Callable[..., Any], request_cls: Any) -> grpc.RpcMethodHandler:
    def behaviour(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        def checked() -> Iterator[Any]:
            for request in requests:
                _reject(request, context)
                yield request

        return fn(checked(), context)

    return grpc.stream_unary_rpc_method_handler(
        behaviour, request_deserializer=_parser(request_cls, MAX_APPEND_BYTES),
        response_serializer=_serialize)


class _Message(Protocol):
    def SerializeToString(self) -> bytes: ...


def _serialize(message: _Message) -> bytes:
    return message.SerializeToString()
