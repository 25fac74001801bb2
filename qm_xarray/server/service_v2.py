"""Results RPCs of v2 `qm.grpc.v2.JobService` over a ResultStore (QOP 3.x clients).

Unary answers use the `success` branch; failures are gRPC status codes (NOT_FOUND,
INVALID_ARGUMENT), which every client surfaces, rather than the `error` branch that the reference
client's legacy data path ignores. Data RPCs are hand-encoded (`wire.codec`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import grpc

from ..execution_errors import SEVERITY_CODES
from ..wire import codec
from ..wire.pb.qm.grpc.v2 import common_types_pb2 as common
from ..wire.pb.qm.grpc.v2 import job_api_pb2 as pb
from ._rpc import check_range, handlers, item_messages, rpc, server_stream, unary
from .store import Job, JobState, ResultStore, Stream

SERVICE = "qm.grpc.v2.JobService"
STATUS_POLL_SECONDS = 1.0  # how often a status-updates stream checks that its client is still there

_SchemaSuccess = pb.GetJobResultSchemaResponse.GetJobResultSchemaResponseSuccess
_StateSuccess = pb.GetJobResultStateResponse.GetJobResultStateResponseSuccess
_HeaderSuccess = pb.GetJobNamedResultHeaderResponse.GetJobNamedResultHeaderResponseSuccess
_HeadersSuccess = pb.GetJobNamedResultsHeadersResponse.GetJobNamedResultsHeadersResponseSuccess
_ErrorsSuccess = pb.GetJobErrorsResponse.GetJobErrorsResponseSuccess
_Severity = _ErrorsSuccess.ExecutionErrorSeverity


def execution_status(job: Job) -> common.JobExecutionStatus:
    """The v2 `JobExecutionStatus` of a job."""
    if job.state is JobState.RUNNING:
        return common.RUNNING
    if job.state is JobState.DONE:
        return common.COMPLETED
    return common.ERROR if job.has_execution_errors else common.CANCELED


def _stop(stream: Stream, to_inclusive: int | None) -> int:
    return stream.count if to_inclusive is None else to_inclusive + 1


class JobServiceV2:
    """The results subset of `JobService`; `chunk_streaming` picks GetNamedResult's data format."""

    def __init__(self, store: ResultStore, chunk_streaming: bool = True):
        self.store = store
        self.chunk_streaming = chunk_streaming

    @rpc
    def GetJobStatus(self, request: pb.JobServiceGetJobStatusRequest,
                     context: grpc.ServicerContext) -> pb.JobServiceGetJobStatusResponse:
        job = self.store.job(request.job_id)
        return pb.JobServiceGetJobStatusResponse(success={"status": execution_status(job)})

    @rpc
    def GetJobStatusUpdates(self, request: pb.JobServiceGetJobStatusRequest,
                            context: grpc.ServicerContext) -> Iterator[pb.JobServiceGetJobStatusResponse]:
        """Push the status now and on every change, until the job has ended or the client leaves."""
        job = self.store.job(request.job_id)
        last = None
        version = -1
        while context.is_active():
            status = execution_status(job)
            if status != last:
                yield pb.JobServiceGetJobStatusResponse(success={"status": status})
                last = status
            if job.state is not JobState.RUNNING:
                return
            version = job.wait_for_change(version, STATUS_POLL_SECONDS)

    @rpc
    def GetJobResultSchema(self, request: pb.GetJobResultSchemaRequest,
                           context: grpc.ServicerContext) -> pb.GetJobResultSchemaResponse:
        job = self.store.job(request.job_id)
        item = _SchemaSuccess.Item
        return pb.GetJobResultSchemaResponse(success=_SchemaSuccess(items=[
            item(name=s.name, simple_dtype=s.layout.simple_dtype(False), is_single=s.single,
                 expected_count=s.expected_count, shape=s.layout.header_shape(False))
            for s in job.streams.values()
        ]))

    @rpc
    def GetJobResultState(self, request: pb.GetJobResultStateRequest,
                          context: grpc.ServicerContext) -> pb.GetJobResultStateResponse:
        job = self.store.job(request.job_id)
        return pb.GetJobResultStateResponse(success=_StateSuccess(
            done=job.done, closed=job.closed, has_dataloss=job.has_dataloss))

    @rpc
    def GetJobNamedResultHeader(self, request: pb.GetJobNamedResultHeaderRequest,
                                context: grpc.ServicerContext) -> pb.GetJobNamedResultHeaderResponse:
        job = self.store.job(request.job_id)
        s = job.stream(request.output_name)
        flat = request.flat_format
        return pb.GetJobNamedResultHeaderResponse(success=_HeaderSuccess(
            is_single=s.single, count_so_far=s.count, simple_dtype=s.layout.simple_dtype(flat),
            has_data_loss=job.has_dataloss, shape=s.layout.header_shape(flat), output_name=s.name))

    @rpc
    def GetJobNamedResultsHeaders(self, request: pb.GetJobNamedResultsHeadersRequest,
                                  context: grpc.ServicerContext) -> pb.GetJobNamedResultsHeadersResponse:
        job = self.store.job(request.job_id)
        header = _HeadersSuccess.OutputHeader
        headers = []
        for output in request.outputs:
            s = job.stream(output.output_name)
            flat = output.flat_format
            headers.append(header(count_so_far=s.count, has_data_loss=job.has_dataloss,
                                  output_name=s.name, simple_dtype=s.layout.simple_dtype(flat),
                                  shape=s.layout.header_shape(flat)))
        return pb.GetJobNamedResultsHeadersResponse(success=_HeadersSuccess(headers=headers))

    @rpc
    def GetNamedResult(self, request: pb.GetNamedResultRequest,
                       context: grpc.ServicerContext) -> Iterator[bytes]:
        s = self.store.job(request.job_id).stream(request.output_name)
        offset = request.long_offset.value
        check_range(offset, request.limit, f"stream {s.name!r} of job {s.job.id!r}")
        if self.chunk_streaming:
            yield from _chunk_groups(s, offset, offset + request.limit)
            return
        _, pieces = s.read(offset, offset + request.limit)
        for count, payload in item_messages(s.layout.itemsize, pieces):
            yield codec.v2_legacy(count, payload, s.name)

    @rpc
    def GetNamedResults(self, request: pb.GetNamedResultsRequest,
                        context: grpc.ServicerContext) -> Iterator[bytes]:
        job = self.store.job(request.job_id)
        ranges = []
        for output in request.outputs:  # check every output before sending anything
            s = job.stream(output.output_name)
            rng = output.range
            start = getattr(rng, "from").value if rng.HasField("from") else 0
            to = rng.to.value if rng.HasField("to") else None
            check_range(start, None, f"stream {s.name!r} of job {job.id!r}")
            ranges.append((s, start, _stop(s, to)))
        for s, start, stop in ranges:
            yield from _chunk_groups(s, start, stop)

    @rpc
    def GetErrors(self, request: pb.GetJobErrorsRequest,
                  context: grpc.ServicerContext) -> pb.GetJobErrorsResponse:
        job = self.store.job(request.job_id)
        return pb.GetJobErrorsResponse(success=_ErrorsSuccess(errors=[
            _ErrorsSuccess.Error(
                errorCode=e.code, message=e.message,
                errorSeverity=cast(_Severity, SEVERITY_CODES[e.severity]))  # an enum is its number
            for e in job.errors
        ]))

    def handler(self) -> grpc.GenericRpcHandler:
        return handlers(SERVICE, {
            "GetJobStatus": unary(self.GetJobStatus, pb.JobServiceGetJobStatusRequest),
            "GetJobStatusUpdates": server_stream(self.GetJobStatusUpdates,
                                                 pb.JobServiceGetJobStatusRequest),
            "GetJobResultSchema": unary(self.GetJobResultSchema, pb.GetJobResultSchemaRequest),
            "GetJobResultState": unary(self.GetJobResultState, pb.GetJobResultStateRequest),
            "GetJobNamedResultHeader": unary(self.GetJobNamedResultHeader,
                                             pb.GetJobNamedResultHeaderRequest),
            "GetJobNamedResultsHeaders": unary(self.GetJobNamedResultsHeaders,
                                               pb.GetJobNamedResultsHeadersRequest),
            "GetNamedResult": server_stream(self.GetNamedResult, pb.GetNamedResultRequest, raw=True),
            "GetNamedResults": server_stream(self.GetNamedResults, pb.GetNamedResultsRequest,
                                             raw=True),
            "GetErrors": unary(self.GetErrors, pb.GetJobErrorsRequest),
        })


GROUP_CHUNKS = 2  # chunk messages per group: fewer summaries, yet small groups for clients that
                  # join a group's bytes by concatenation (benchmarks/bench_server.py)


def _chunk_groups(s: Stream, start: int, stop: int) -> Iterator[bytes]:
    """Chunk format: message-sized runs of whole items, a summary after every GROUP_CHUNKS chunks.

    A zero-item range still sends an empty chunk before its summary, which clients require.
    """
    _, pieces = s.read(start, stop)
    sent = False
    pending = chunks = 0
    for count, payload in item_messages(s.layout.itemsize, pieces):
        yield codec.v2_chunk(s.name, payload)
        pending, chunks, sent = pending + count, chunks + 1, True
        if pending and chunks >= GROUP_CHUNKS:
            yield codec.v2_summary(s.name, pending)
            pending = chunks = 0
    if pending:
        yield codec.v2_summary(s.name, pending)
    elif not sent:
        yield codec.v2_chunk(s.name, [])
        yield codec.v2_summary(s.name, 0)
