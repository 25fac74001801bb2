"""v1 `qm.grpc.results_analyser.JobResultsService` over a ResultStore (QOP 2.x clients)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import grpc

from ..execution_errors import SEVERITY_CODES
from ..wire import codec
from ..wire.pb.qm.pb import job_results_pb2 as pb
from ._rpc import check_range, handlers, item_messages, rpc, server_stream, unary
from .store import ResultStore

SERVICE = "qm.grpc.results_analyser.JobResultsService"

_Severity = pb.GetJobErrorsResponse.ExecutionErrorSeverity


class JobResultsServiceV1:
    """The five v1 RPCs. Data messages are hand-encoded (`wire.codec`)."""

    def __init__(self, store: ResultStore):
        self.store = store

    @rpc
    def GetJobResultSchema(self, request: pb.GetJobResultSchemaRequest,
                           context: grpc.ServicerContext) -> pb.GetJobResultSchemaResponse:
        job = self.store.job(request.jobId)
        return pb.GetJobResultSchemaResponse(items=[
            pb.GetJobResultSchemaResponse.Item(
                name=s.name, simpleDType=s.layout.simple_dtype(False), isSingle=s.single,
                expectedCount=s.expected_count, shape=s.layout.header_shape(False))
            for s in job.streams.values()
        ])

    @rpc
    def GetJobState(self, request: pb.GetJobStateRequest,
                    context: grpc.ServicerContext) -> pb.GetJobStateResponse:
        job = self.store.job(request.jobId)
        return pb.GetJobStateResponse(done=job.done, closed=job.closed, hasDataloss=job.has_dataloss)

    @rpc
    def GetJobNamedResultHeader(self, request: pb.GetJobNamedResultHeaderRequest,
                                context: grpc.ServicerContext) -> pb.GetJobNamedResultHeaderResponse:
        job = self.store.job(request.jobId)
        stream = job.stream(request.outputName)
        flat = request.flatFormat
        response = pb.GetJobNamedResultHeaderResponse(
            isSingle=stream.single, countSoFar=stream.count,
            simpleDType=stream.layout.simple_dtype(flat), done=job.done, closed=job.closed,
            hasDataloss=job.has_dataloss, shape=stream.layout.header_shape(flat))
        response.hasExecutionErrors.value = job.has_execution_errors
        return response

    @rpc
    def GetJobNamedResult(self, request: pb.GetJobNamedResultRequest,
                          context: grpc.ServicerContext) -> Iterator[bytes]:
        stream = self.store.job(request.jobId).stream(request.outputName)
        offset = request.longOffset.value if request.HasField("longOffset") else request.offset
        check_range(offset, request.limit, f"stream {stream.name!r} of job {stream.job.id!r}")
        _, pieces = stream.read(offset, offset + request.limit)
        for count, payload in item_messages(stream.layout.itemsize, pieces):
            yield codec.v1_data(count, payload)

    @rpc
    def GetJobErrors(self, request: pb.GetJobErrorsRequest,
                     context: grpc.ServicerContext) -> pb.GetJobErrorsResponse:
        job = self.store.job(request.jobId)
        return pb.GetJobErrorsResponse(jobId=job.id, errors=[
            pb.GetJobErrorsResponse.Error(
                errorCode=e.code, message=e.message,
                errorSeverity=cast(_Severity, SEVERITY_CODES[e.severity]))  # an enum is its number
            for e in job.errors
        ])

    def handler(self) -> grpc.GenericRpcHandler:
        return handlers(SERVICE, {
            "GetJobResultSchema": unary(self.GetJobResultSchema, pb.GetJobResultSchemaRequest),
            "GetJobState": unary(self.GetJobState, pb.GetJobStateRequest),
            "GetJobNamedResultHeader": unary(self.GetJobNamedResultHeader,
                                             pb.GetJobNamedResultHeaderRequest),
            "GetJobNamedResult": server_stream(self.GetJobNamedResult, pb.GetJobNamedResultRequest,
                                               raw=True),
            "GetJobErrors": unary(self.GetJobErrors, pb.GetJobErrorsRequest),
        })
