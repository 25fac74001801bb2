"""Client of the results RPCs of v2 `qm.grpc.v2.JobService` (QOP 3.x servers).

Reads both data formats: chunked (chunks, each group closed by a summary; groups of several
streams may interleave) and legacy (count + data per message).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

from ..errors import DataFetchingError, QMTimeoutError, QmValueError
from ..wire import codec
from ..wire.pb.qm.grpc.v2 import common_types_pb2 as common
from ..wire.pb.qm.grpc.v2 import job_api_pb2 as pb
from ._base import ServiceBase, check_limit
from .assembly import Assembler
from .connection import ConnectionDetails
from .models import SEVERITY_NAMES, Header, JobResultState, SchemaItem
from .retry import ServerUnavailableError

__all__ = ["JobResultApi", "STATUS_NAMES", "FINAL_STATUSES"]

_PATH = "/qm.grpc.v2.JobService/"
# JobExecutionStatus -> the reference's status names (UNSET is not mapped there; "Unknown" here).
STATUS_NAMES = {common.UNSET: "Unknown", common.UNKNOWN: "Error", common.PENDING: "In queue",
                common.LOADING: "In queue", common.RUNNING: "Running", common.COMPLETED: "Done",
                common.CANCELED: "Canceled", common.ERROR: "Error", common.PROCESSING: "Processing"}
FINAL_STATUSES = frozenset({"Done", "Canceled", "Error"})  # no change follows these


S = TypeVar("S", covariant=True)


class _Answer(Protocol[S]):
    """A v2 response: `oneof response_oneof { success = 1; error = 2; }`."""

    @property
    def success(self) -> S: ...

    @property
    def error(self) -> Any: ...

    def HasField(self, field_name: str) -> bool: ...


def _success(response: _Answer[S], what: str) -> S:
    if response.HasField("success"):
        return response.success
    if response.HasField("error"):
        raise DataFetchingError(f"{what}: {response.error.details}")
    raise DataFetchingError(f"{what}: the response carried neither success nor error")


class JobResultApi(ServiceBase):
    """v2 results service for one job; `supports_chunk_streaming` picks the data format read."""

    version = 2

    def __init__(self, connection_details: ConnectionDetails, job_id: str,
                 supports_chunk_streaming: bool = True):
        super().__init__(connection_details, job_id)
        self.supports_chunk_streaming = supports_chunk_streaming

    def _call(self, rpc: str, request: object, response_cls: type[_Answer[S]], what: str,
              timeout: float | None) -> S:
        r: _Answer[S] = self._unary(_PATH + rpc, request, response_cls, what, timeout)
        return _success(r, f"{what} of job {self.job_id!r}")

    def get_schema(self, timeout: float | None = None) -> list[SchemaItem]:
        s = self._call("GetJobResultSchema", pb.GetJobResultSchemaRequest(job_id=self.job_id),
                       pb.GetJobResultSchemaResponse, "GetJobResultSchema", timeout)
        return [SchemaItem(i.name, i.simple_dtype, i.is_single, i.expected_count, tuple(i.shape))
                for i in s.items]

    def get_state(self, timeout: float | None = None) -> JobResultState:
        s = self._call("GetJobResultState", pb.GetJobResultStateRequest(job_id=self.job_id),
                       pb.GetJobResultStateResponse, "GetJobResultState", timeout)
        return JobResultState(s.done, s.closed, s.has_dataloss)

    def get_status(self, timeout: float | None = None) -> str:
        """Execution status as the reference names it ("Running", "Done", "Canceled", "Error"...)."""
        s = self._call("GetJobStatus", pb.JobServiceGetJobStatusRequest(job_id=self.job_id),
                       pb.JobServiceGetJobStatusResponse, "GetJobStatus", timeout)
        return STATUS_NAMES.get(s.status, "Unknown")

    def get_header(self, name: str, flat: bool, timeout: float | None = None) -> Header:
        s = self._call("GetJobNamedResultHeader",
                       pb.GetJobNamedResultHeaderRequest(job_id=self.job_id, output_name=name,
                                                         flat_format=flat),
                       pb.GetJobNamedResultHeaderResponse, f"header of stream {name!r}", timeout)
        return Header(name, s.count_so_far, s.simple_dtype, tuple(s.shape) or (1,),
                      s.has_data_loss, False, s.is_single)

    def get_headers(self, outputs: Sequence[tuple[str, bool]],
                    timeout: float | None = None) -> dict[str, Header]:
        """Headers of several streams in one RPC: {name: Header} for (name, flat) pairs."""
        request = pb.GetJobNamedResultsHeadersRequest(job_id=self.job_id, outputs=[
            {"output_name": n, "flat_format": f} for n, f in outputs])
        what = f"headers of stream(s) {[n for n, _ in outputs]}"
        s = self._call("GetJobNamedResultsHeaders", request, pb.GetJobNamedResultsHeadersResponse,
                       what, timeout)
        headers = {h.output_name: Header(h.output_name, h.count_so_far, h.simple_dtype,
                                         tuple(h.shape) or (1,), h.has_data_loss)
                   for h in s.headers}
        missing = [n for n, _ in outputs if n not in headers]
        if missing:
            raise DataFetchingError(f"the server sent no header for stream(s) {missing} of job {self.job_id!r}")
        return headers

    def fetch_range(self, header: Header, start: int, stop: int,
                    timeout: float | None = None) -> tuple[np.ndarray, int]:
        """Items `[start, stop)` of one stream (GetNamedResult) as (uint8 buffer, count)."""
        what = f"data of stream {header.name!r}"
        check_limit(start, stop, what)

        def request(rest: list[tuple[Header, int, int]]) -> pb.GetNamedResultRequest:
            [(h, offset, limit)] = rest
            r = pb.GetNamedResultRequest(job_id=self.job_id, output_name=h.name, limit=limit)
            r.long_offset.SetInParent()
            r.long_offset.value = offset
            return r

        return self._fetch("GetNamedResult", [(header, start, stop)], request, what,
                           timeout)[header.name]

    def fetch_ranges(self, requests: Sequence[tuple[Header, int, int]],
                     timeout: float | None = None) -> dict[str, tuple[np.ndarray, int]]:
        """Several streams in one GetNamedResults RPC: {name: (uint8 buffer, count)}."""
        names = [h.name for h, _, _ in requests]
        if len(set(names)) != len(names):
            raise QmValueError(f"each stream can be asked for once per request, got {names}")

        def request(rest: list[tuple[Header, int, int]]) -> pb.GetNamedResultsRequest:
            # `to` is inclusive; to < from is an empty range
            return pb.GetNamedResultsRequest(job_id=self.job_id, outputs=[
                {"output_name": h.name, "range": {"from": {"value": offset},
                                                  "to": {"value": offset + limit - 1}}}
                for h, offset, limit in rest])

        return self._fetch("GetNamedResults", requests, request, f"data of streams {names}", timeout,
                           chunked=True)

    def _fetch(self, rpc: str, requests: Sequence[tuple[Header, int, int]],
               build: Callable[[list[tuple[Header, int, int]]], object], what: str,
               timeout: float | None, chunked: bool | None = None) -> dict[str, tuple[np.ndarray, int]]:
        """Run a data RPC into one preallocated buffer per stream; resume after transient breaks.

        `build([(header, offset, limit), ...])` makes the request for what is still missing: each
        stream from its own count of whole items (counted per message in the legacy format, at each
        summary in the chunk format); streams already complete are not asked again.
        """
        job = f"job {self.job_id!r}"
        outs = {h.name: Assembler(h.itemsize, max(0, min(stop, h.count_so_far) - start),
                                  f"data of stream {h.name!r} of {job}")
                for h, start, stop in requests}
        receive = _Receiver(outs, self.supports_chunk_streaming if chunked is None else chunked,
                            f"{what} of {job}", requests[0][0].name if len(requests) == 1 else None)

        def next_request() -> object | None:
            receive.pending.clear()  # bytes of unfinished groups were dropped by `resume`
            rest = []
            for h, start, stop in requests:
                out = outs[h.name]
                left = out.resume(stop - start)
                if left is not None:
                    rest.append((h, start + out.count, left))
            return build(rest) if rest else None

        self._streaming(_PATH + rpc, what, timeout, next_request, receive)
        receive.check_complete()
        return {name: out.result() for name, out in outs.items()}

    def get_errors(self, timeout: float | None = None) -> list[tuple[int, str, str]]:
        s = self._call("GetErrors", pb.GetJobErrorsRequest(job_id=self.job_id), pb.GetJobErrorsResponse,
                       "GetErrors", timeout)
        return [(e.errorCode, SEVERITY_NAMES.get(e.errorSeverity, "error"), e.message)
                for e in s.errors]

    def follow_status(self, on_status: Callable[[str], bool], timeout: float) -> None:
        """Hand each status the server pushes (GetJobStatusUpdates; the current one first, as the
        reference names them) to `on_status` until it returns True, the server ends the stream,
        or `timeout` passes (`QMTimeoutError`). A transient break reconnects within the deadline."""
        request = pb.JobServiceGetJobStatusRequest(job_id=self.job_id)

        def on_message(raw: pb.JobServiceGetJobStatusResponse) -> bool:
            return on_status(STATUS_NAMES.get(_success(raw, "GetJobStatusUpdates").status, "Unknown"))

        self._streaming(_PATH + "GetJobStatusUpdates", "GetJobStatusUpdates", timeout,
                        lambda: request, on_message, pb.JobServiceGetJobStatusResponse.FromString)

    def wait_until_done(self, timeout: float, state_from_header: str | None = None) -> bool:
        """Follow the server's pushed status updates until the job ends (True if done)."""
        final: list[str] = []

        def on_status(status: str) -> bool:
            if status in FINAL_STATUSES:
                final.append(status)
            return bool(final)

        try:  # after a transient break the updates start again: the current status comes first
            self.follow_status(on_status, timeout)
        except QMTimeoutError as exc:
            if isinstance(exc, ServerUnavailableError):
                raise
            raise QMTimeoutError(f"job {self.job_id!r} was not done within {timeout} s") from None
        if final:
            return final[0] == "Done"
        return self.get_state().done  # the stream ended without a final status


class _Receiver:
    """Takes the data messages of a v2 fetch into the streams' assemblers (both data formats)."""

    __slots__ = ("outs", "chunked", "what", "single", "pending")

    def __init__(self, outs: dict[str, Assembler], chunked: bool, what: str, single: str | None):
        self.outs, self.chunked, self.what, self.single = outs, chunked, what, single
        self.pending: dict[str, int] = {}  # bytes received per stream since its last summary

    def __call__(self, message: bytes) -> None:
        r = codec.decode_v2_result(message)
        if r.kind == "error":
            raise DataFetchingError(f"{self.what}: {r.details}")
        name = r.output_name or self.single or ""
        out = self.outs.get(name)
        if not self.chunked:
            if r.kind not in ("legacy", "empty"):
                raise DataFetchingError(f"{self.what}: unexpected {r.kind} message in the legacy format")
            if out is None:
                raise DataFetchingError(f"{self.what}: data for unknown stream {name!r}")
            out.count += r.count
            if r.data:
                out.add(r.data)
            return
        if out is None:
            raise DataFetchingError(f"{self.what}: data for unrequested stream {name!r}")
        if r.kind == "chunk":
            out.add(r.data)
            self.pending[name] = self.pending.get(name, 0) + len(r.data)
        elif r.kind == "summary":
            if name not in self.pending:
                raise DataFetchingError(f"{self.what}: a summary without data for {name!r}")
            out.count += r.count
            del self.pending[name]
        else:
            raise DataFetchingError(f"{self.what}: a message with neither chunk nor summary")

    def check_complete(self) -> None:
        if any(self.pending.values()):
            raise DataFetchingError(f"{self.what}: data after the last summary of {sorted(self.pending)}")
