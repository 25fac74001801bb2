"""Client of the results RPCs of v2 `qm.grpc.v2.JobService` (QOP 3.x servers).

Reads both data formats: chunked (chunks, each group closed by a summary; groups of several
streams may interleave) and legacy (count + data per message).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import DataFetchingError, QMTimeoutError, QmValueError
from ..wire import codec
from ..wire.pb.qm.grpc.v2 import common_types_pb2 as common
from ..wire.pb.qm.grpc.v2 import job_api_pb2 as pb
from ._base import ServiceBase, check_limit
from .assembly import Assembler
from .connection import ConnectionDetails
from .models import Header, JobResultState, SchemaItem

__all__ = ["JobResultApi", "STATUS_NAMES"]

_PATH = "/qm.grpc.v2.JobService/"
_SEVERITY = {0: "error", 1: "warning"}
# JobExecutionStatus -> the reference's status names (UNSET is not mapped there; "Unknown" here).
STATUS_NAMES = {common.UNSET: "Unknown", common.UNKNOWN: "Error", common.PENDING: "In queue",
                common.LOADING: "In queue", common.RUNNING: "Running", common.COMPLETED: "Done",
                common.CANCELED: "Canceled", common.ERROR: "Error", common.PROCESSING: "Processing"}
_FINAL = {"Done", "Canceled", "Error"}


def _success(response: object, what: str) -> object:
    if response.HasField("success"):  # type: ignore[attr-defined]
        return response.success  # type: ignore[attr-defined]
    if response.HasField("error"):  # type: ignore[attr-defined]
        raise DataFetchingError(f"{what}: {response.error.details}")  # type: ignore[attr-defined]
    raise DataFetchingError(f"{what}: the response carried neither success nor error")


class JobResultApi(ServiceBase):
    """v2 results service for one job; `supports_chunk_streaming` picks the data format read."""

    version = 2

    def __init__(self, connection_details: ConnectionDetails, job_id: str,
                 supports_chunk_streaming: bool = True):
        super().__init__(connection_details, job_id)
        self.supports_chunk_streaming = supports_chunk_streaming

    def _call(self, rpc: str, request: object, response_cls: object, what: str,
              timeout: float | None) -> object:
        r = self._unary(_PATH + rpc, request, response_cls, what, timeout)
        return _success(r, f"{what} of job {self.job_id!r}")

    def get_schema(self, timeout: float | None = None) -> list[SchemaItem]:
        s = self._call("GetJobResultSchema", pb.GetJobResultSchemaRequest(job_id=self.job_id),
                       pb.GetJobResultSchemaResponse, "GetJobResultSchema", timeout)
        return [SchemaItem(i.name, i.simple_dtype, i.is_single, i.expected_count, tuple(i.shape))
                for i in s.items]  # type: ignore[attr-defined]

    def get_state(self, timeout: float | None = None) -> JobResultState:
        s = self._call("GetJobResultState", pb.GetJobResultStateRequest(job_id=self.job_id),
                       pb.GetJobResultStateResponse, "GetJobResultState", timeout)
        return JobResultState(s.done, s.closed, s.has_dataloss)  # type: ignore[attr-defined]

    def get_status(self, timeout: float | None = None) -> str:
        """Execution status as the reference names it ("Running", "Done", "Canceled", "Error"...)."""
        s = self._call("GetJobStatus", pb.JobServiceGetJobStatusRequest(job_id=self.job_id),
                       pb.JobServiceGetJobStatusResponse, "GetJobStatus", timeout)
        return STATUS_NAMES.get(s.status, "Unknown")  # type: ignore[attr-defined]

    def get_header(self, name: str, flat: bool, timeout: float | None = None) -> Header:
        s = self._call("GetJobNamedResultHeader",
                       pb.GetJobNamedResultHeaderRequest(job_id=self.job_id, output_name=name,
                                                         flat_format=flat),
                       pb.GetJobNamedResultHeaderResponse, f"header of stream {name!r}", timeout)
        return Header(name, s.count_so_far, s.simple_dtype, tuple(s.shape) or (1,),  # type: ignore[attr-defined]
                      s.has_data_loss, False, s.is_single)  # type: ignore[attr-defined]

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
                   for h in s.headers}  # type: ignore[attr-defined]
        missing = [n for n, _ in outputs if n not in headers]
        if missing:
            raise DataFetchingError(f"the server sent no header for stream(s) {missing} of job {self.job_id!r}")
        return headers

    def fetch_range(self, header: Header, start: int, stop: int,
                    timeout: float | None = None) -> tuple[object, int]:
        """Items `[start, stop)` of one stream (GetNamedResult) as (uint8 buffer, count)."""
        what = f"data of stream {header.name!r}"
        request = pb.GetNamedResultRequest(job_id=self.job_id, output_name=header.name,
                                           limit=check_limit(start, stop, what))
        request.long_offset.SetInParent()
        request.long_offset.value = start
        messages = self._stream(_PATH + "GetNamedResult", request, what, timeout)
        return self._assemble(messages, [(header, start, stop)], what)[header.name]

    def fetch_ranges(self, requests: Sequence[tuple[Header, int, int]],
                     timeout: float | None = None) -> dict[str, tuple[object, int]]:
        """Several streams in one GetNamedResults RPC: {name: (uint8 buffer, count)}."""
        names = [h.name for h, _, _ in requests]
        if len(set(names)) != len(names):
            raise QmValueError(f"each stream can be asked for once per request, got {names}")
        outputs = []
        for header, start, stop in requests:
            rng: dict[str, object] = {"from": {"value": start}}
            rng["to"] = {"value": stop - 1}  # inclusive; stop - 1 < start is an empty range
            outputs.append({"output_name": header.name, "range": rng})
        request = pb.GetNamedResultsRequest(job_id=self.job_id, outputs=outputs)
        what = f"data of streams {names}"
        messages = self._stream(_PATH + "GetNamedResults", request, what, timeout)
        return self._assemble(messages, requests, what, chunked=True)

    def _assemble(self, messages: object, requests: Sequence[tuple[Header, int, int]], what: str,
                  chunked: bool | None = None) -> dict[str, tuple[object, int]]:
        chunked = self.supports_chunk_streaming if chunked is None else chunked
        job = f"job {self.job_id!r}"
        outs = {h.name: Assembler(h.itemsize, max(0, min(stop, h.count_so_far) - start),
                                  f"data of stream {h.name!r} of {job}")
                for h, start, stop in requests}
        single = requests[0][0].name if len(requests) == 1 else None
        pending: dict[str, int] = {}  # bytes received per stream since its last summary
        for message in messages:  # type: ignore[attr-defined]
            r = codec.decode_v2_result(message)
            if r.kind == "error":
                raise DataFetchingError(f"{what} of {job}: {r.details}")
            name = r.output_name or single
            out = outs.get(name or "")
            if not chunked:
                if r.kind not in ("legacy", "empty"):
                    raise DataFetchingError(f"{what} of {job}: unexpected {r.kind} message in the legacy format")
                if out is None:
                    raise DataFetchingError(f"{what} of {job}: data for unknown stream {name!r}")
                out.count += r.count
                if r.data:
                    out.add(r.data)
                continue
            if out is None:
                raise DataFetchingError(f"{what} of {job}: data for unrequested stream {name!r}")
            if r.kind == "chunk":
                out.add(r.data)
                pending[name] = pending.get(name, 0) + len(r.data)  # type: ignore[index]
            elif r.kind == "summary":
                if name not in pending:
                    raise DataFetchingError(f"{what} of {job}: a summary without data for {name!r}")
                out.count += r.count
                del pending[name]  # type: ignore[arg-type]
            else:
                raise DataFetchingError(f"{what} of {job}: a message with neither chunk nor summary")
        if any(pending.values()):
            raise DataFetchingError(f"{what} of {job}: data after the last summary of {sorted(pending)}")
        return {name: out.result() for name, out in outs.items()}

    def get_errors(self, timeout: float | None = None) -> list[tuple[int, str, str]]:
        s = self._call("GetErrors", pb.GetJobErrorsRequest(job_id=self.job_id), pb.GetJobErrorsResponse,
                       "GetErrors", timeout)
        return [(e.errorCode, _SEVERITY.get(e.errorSeverity, "error"), e.message)
                for e in s.errors]  # type: ignore[attr-defined]

    def wait_until_done(self, timeout: float, state_from_header: str | None = None) -> bool:
        """Follow the server's pushed status updates until the job ends (True if done)."""
        request = pb.JobServiceGetJobStatusRequest(job_id=self.job_id)
        try:
            for raw in self._stream(_PATH + "GetJobStatusUpdates", request, "GetJobStatusUpdates",
                                    timeout, pb.JobServiceGetJobStatusResponse.FromString):
                status = STATUS_NAMES.get(_success(raw, "GetJobStatusUpdates").status, "Unknown")  # type: ignore[attr-defined]
                if status in _FINAL:
                    return status == "Done"
        except QMTimeoutError:
            raise QMTimeoutError(f"job {self.job_id!r} was not done within {timeout} s") from None
        state = self.get_state()  # the stream ended without a final status
        return state.done
