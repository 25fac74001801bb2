"""Client of v1 `qm.grpc.results_analyser.JobResultsService` (QOP 2.x servers)."""

from __future__ import annotations

import numpy as np

from ..wire import codec
from ..wire.pb.qm.pb import job_results_pb2 as pb
from ._base import ServiceBase, check_limit
from .assembly import Assembler
from .connection import ConnectionDetails
from .deadlines import poll
from .models import SEVERITY_NAMES, Header, JobResultState, SchemaItem

__all__ = ["JobResultServiceApi"]

_PATH = "/qm.grpc.results_analyser.JobResultsService/"


class JobResultServiceApi(ServiceBase):
    """v1 results service for one job: schema, state, headers, data ranges, errors."""

    def __init__(self, connection_details: ConnectionDetails, job_id: str):
        super().__init__(connection_details, job_id)

    version = 1

    def get_schema(self, timeout: float | None = None) -> list[SchemaItem]:
        r = self._unary(_PATH + "GetJobResultSchema", pb.GetJobResultSchemaRequest(jobId=self.job_id),
                        pb.GetJobResultSchemaResponse, "GetJobResultSchema", timeout)
        return [SchemaItem(i.name, i.simpleDType, i.isSingle, i.expectedCount, tuple(i.shape))
                for i in r.items]

    def get_state(self, timeout: float | None = None) -> JobResultState:
        r = self._unary(_PATH + "GetJobState", pb.GetJobStateRequest(jobId=self.job_id),
                        pb.GetJobStateResponse, "GetJobState", timeout)
        return JobResultState(r.done, r.closed, r.hasDataloss)

    def get_header(self, name: str, flat: bool, timeout: float | None = None) -> Header:
        r = self._unary(_PATH + "GetJobNamedResultHeader",
                        pb.GetJobNamedResultHeaderRequest(jobId=self.job_id, outputName=name,
                                                          flatFormat=flat),
                        pb.GetJobNamedResultHeaderResponse, f"header of stream {name!r}", timeout)
        return Header(name, r.countSoFar, r.simpleDType, tuple(r.shape) or (1,), r.hasDataloss,
                      r.hasExecutionErrors.value, r.isSingle, r.done, r.closed)

    def fetch_range(self, header: Header, start: int, stop: int,
                    timeout: float | None = None) -> tuple[np.ndarray, int]:
        """Items `[start, stop)` of a stream as (uint8 buffer, count); one copy per byte.

        A stream broken by a transient failure resumes after the whole items received.
        """
        what = f"data of stream {header.name!r}"
        limit = check_limit(start, stop, what)
        expected = max(0, min(stop, header.count_so_far) - start)
        out = Assembler(header.itemsize, expected, f"{what} of job {self.job_id!r}")

        def next_request() -> pb.GetJobNamedResultRequest | None:
            left = out.resume(limit)
            if left is None:
                return None
            request = pb.GetJobNamedResultRequest(jobId=self.job_id, outputName=header.name, limit=left)
            request.longOffset.SetInParent()
            request.longOffset.value = start + out.count
            return request

        def on_message(message: bytes) -> None:
            count, data = codec.decode_v1_data(message)
            out.count += count
            if data:
                out.add(data)

        self._streaming(_PATH + "GetJobNamedResult", what, timeout, next_request, on_message)
        return out.result()

    def get_errors(self, timeout: float | None = None) -> list[tuple[int, str, str]]:
        r = self._unary(_PATH + "GetJobErrors", pb.GetJobErrorsRequest(jobId=self.job_id),
                        pb.GetJobErrorsResponse, "GetJobErrors", timeout)
        return [(e.errorCode, SEVERITY_NAMES.get(e.errorSeverity, "error"), e.message) for e in r.errors]

    def wait_until_done(self, timeout: float, state_from_header: str | None = None) -> bool:
        """Poll the job state (one RPC per round, with backoff) until done or closed.

        Returns True when done, False when closed before done. Raises `QMTimeoutError`.
        Servers without `qm.job_streaming_state` report state in the header of a stream: pass its
        name as `state_from_header`.
        """
        rpc = self.connection_details.timeout

        def ended(left: float) -> bool | None:
            if state_from_header is None:
                state = self.get_state(timeout=min(left, rpc))
                done, closed = state.done, state.closed
            else:
                h = self.get_header(state_from_header, False, min(left, rpc))
                done, closed = bool(h.done), bool(h.closed)
            return done if done or closed else None

        return poll(ended, timeout, lambda: f"job {self.job_id!r} was not done within {timeout} s")
