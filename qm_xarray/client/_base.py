"""What the v1 and v2 results-service clients share: calls with deadlines and error mapping."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from ..errors import QMConnectionError, QmValueError
from .connection import ConnectionDetails
from .errors import map_rpc_error

__all__ = ["ServiceBase", "VERY_LONG_TIME", "Backoff"]

VERY_LONG_TIME = 2e6  # seconds: the reference's default for waits and fetch_results
MAX_LIMIT = 2**31 - 1  # counts and limits are int32 on the wire


class Backoff:
    """Sleeps between polls: 20 ms doubling to 0.5 s, never past the deadline."""

    def __init__(self, deadline: float, first: float = 0.02, cap: float = 0.5):
        self.deadline, self.delay, self.cap = deadline, first, cap

    def sleep(self) -> bool:
        """Sleep once; False (without sleeping) when the deadline has passed."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(self.delay, left))
        self.delay = min(self.delay * 2, self.cap)
        return True


class ServiceBase:
    """Holds the connection details and job id; runs RPCs with deadlines and mapped errors."""

    def __init__(self, connection_details: ConnectionDetails, job_id: str):
        if not isinstance(job_id, str) or not job_id:
            raise QmValueError(f"job_id must be a non-empty string, got {job_id!r}")
        self.connection_details = connection_details
        self.job_id = job_id

    @property
    def _channel(self) -> grpc.Channel:
        return self.connection_details.channel()

    def _timeout(self, timeout: float | None) -> float:
        return self.connection_details.timeout if timeout is None else timeout

    def _unary(self, path: str, request: Any, response_cls: Any, what: str,
               timeout: float | None) -> Any:
        call = self._channel.unary_unary(path, request_serializer=_serialize,
                                         response_deserializer=response_cls.FromString)
        try:
            return call(request, timeout=self._timeout(timeout),
                        metadata=self.connection_details.metadata)
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, f"{what} of job {self.job_id!r}") from None
        except ValueError as exc:  # grpc raises ValueError on a closed channel
            raise QMConnectionError(f"{what} of job {self.job_id!r}: {exc}") from None

    def _stream(self, path: str, request: Any, what: str, timeout: float | None,
                response_deserializer: Callable[[bytes], Any] | None = None) -> Iterator[Any]:
        """Server-streaming call; yields raw bytes (or deserialized messages), errors mapped."""
        call = self._channel.unary_stream(path, request_serializer=_serialize,
                                          response_deserializer=response_deserializer)
        try:
            yield from call(request, timeout=self._timeout(timeout),
                            metadata=self.connection_details.metadata)
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, f"{what} of job {self.job_id!r}") from None
        except ValueError as exc:
            raise QMConnectionError(f"{what} of job {self.job_id!r}: {exc}") from None


def _serialize(message: Any) -> bytes:
    return message.SerializeToString()


def check_limit(start: int, stop: int, what: str) -> int:
    limit = stop - start
    if limit > MAX_LIMIT:
        raise QmValueError(f"{what}: {limit} items is more than one request can ask for ({MAX_LIMIT})")
    return max(limit, 0)
