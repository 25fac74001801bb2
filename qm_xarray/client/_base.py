"""What the v1 and v2 results-service clients share: calls with deadlines, retries (`retry`) and
error mapping (`errors.map_rpc_error`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from ..errors import QMConnectionError, QmValueError
from ..limits import MAX_COUNT as MAX_LIMIT
from . import retry
from .connection import ConnectionDetails
from .deadlines import check_timeout
from .errors import map_rpc_error

__all__ = ["ServiceBase", "MAX_LIMIT", "check_limit"]



class ServiceBase:
    """Holds the connection details and job id; runs RPCs with deadlines and mapped errors."""

    version: int  # 1 or 2: the protocol version of the results service (set by each subclass)

    def __init__(self, connection_details: ConnectionDetails, job_id: str):
        if not isinstance(job_id, str) or not job_id:
            raise QmValueError(f"job_id must be a non-empty string, got {job_id!r}")
        self.connection_details = connection_details
        self.job_id = job_id

    @property
    def _channel(self) -> grpc.Channel:
        return self.connection_details.channel()

    def _timeout(self, timeout: float | None) -> float:
        return self.connection_details.timeout if timeout is None else check_timeout(timeout)

    def reads_state_rpc(self, capabilities: Any) -> bool:
        """True when the job state comes from the state RPC (v2, or v1 with job_streaming_state);
        else from the deprecated fields of a v1 header."""
        return self.version == 2 or bool(capabilities.supports_job_streaming_state)

    def _unary(self, path: str, request: Any, response_cls: Any, what: str,
               timeout: float | None) -> Any:
        """A unary call, retried after transient failures within the deadline (see `retry`)."""
        call = self._channel.unary_unary(path, request_serializer=_serialize,
                                         response_deserializer=response_cls.FromString)
        full = f"{what} of job {self.job_id!r}"
        metadata = self.connection_details.metadata
        return self._run(lambda left: _invoke(call, request, left, metadata, full), what, timeout)

    def _streaming(self, path: str, what: str, timeout: float | None,
                   next_request: Callable[[], Any | None], on_message: Callable[[Any], bool | None],
                   response_deserializer: Callable[[bytes], Any] | None = None) -> None:
        """A server-streaming call that resumes after transient breaks, within the deadline.

        Each attempt sends `next_request()`, the request for what is still missing (None: nothing
        is, the call is complete), and hands each message (raw bytes unless deserialized) to
        `on_message`; a true return ends the call early. State kept by the callbacks across
        attempts is what makes a retry resume instead of starting over.
        """
        call = self._channel.unary_stream(path, request_serializer=_serialize,
                                          response_deserializer=response_deserializer)
        full = f"{what} of job {self.job_id!r}"
        metadata = self.connection_details.metadata

        def attempt(left: float) -> None:
            request = next_request()
            if request is None:
                return
            responses = _invoke(call, request, left, metadata, full)
            try:
                for message in responses:
                    if on_message(message):
                        return
            finally:
                responses.cancel()  # a no-op once finished; frees the server if we stop early

        self._run(attempt, what, timeout)

    def _run(self, attempt: Callable[[float], Any], what: str, timeout: float | None) -> Any:
        full = f"{what} of job {self.job_id!r}"
        try:
            return retry.run(attempt, self._timeout(timeout), full)
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, full) from None


def _invoke(call: Any, request: Any, timeout: float, metadata: Any, what: str) -> Any:
    try:
        return call(request, timeout=timeout, metadata=metadata)
    except ValueError as exc:  # grpc raises ValueError on a closed channel: never retried
        raise QMConnectionError(f"{what}: {exc}") from None


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())


def check_limit(start: int, stop: int, what: str) -> int:
    limit = stop - start
    if limit > MAX_LIMIT:
        raise QmValueError(f"{what}: {limit} items is more than one request can ask for ({MAX_LIMIT})")
    return max(limit, 0)
