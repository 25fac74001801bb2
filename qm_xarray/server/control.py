"""qm_xarray's own services (`qm_xarray.v1`): job listing and the producer side."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import grpc

from .._version import IMPLEMENTATION, __version__
from ..execution_errors import ERROR
from ..metadata import JobMetadata, MetadataChange
from ..streams import StreamSpec
from ..wire.pb.qm_xarray.v1 import control_pb2 as pb
from ._rpc import InvalidRequest, client_stream, handlers, rpc, unary
from .store import Job, JobState, JobWriter, ResultStore, Stream

JOBS_SERVICE = "qm_xarray.v1.JobsService"
PRODUCER_SERVICE = "qm_xarray.v1.ProducerService"

_STATE = {JobState.RUNNING: pb.RUNNING, JobState.DONE: pb.DONE, JobState.CLOSED: pb.CLOSED}
_TRANSITIONS: dict[int, Callable[[JobWriter], None]] = {
    pb.SetJobStateRequest.FINISH: JobWriter.finish,
    pb.SetJobStateRequest.CANCEL: JobWriter.cancel,
    pb.SetJobStateRequest.MARK_DATALOSS: JobWriter.mark_dataloss,
}


def stream_info(s: Stream) -> pb.StreamInfo:
    return pb.StreamInfo(spec=s.spec.to_message(), count=s.count)


def job_info(job: Job) -> pb.JobInfo:
    return pb.JobInfo(
        job_id=job.id, state=_STATE[job.state], has_dataloss=job.has_dataloss,
        errors=[pb.ExecutionError(code=e.code, severity=e.severity, message=e.message)
                for e in job.errors],
        streams=[stream_info(s) for s in job.streams.values()],
        created_unix=job.created, updated_unix=job.updated,
        capture=job.origin.to_message() if job.origin is not None else None)


def producer_writer(store: ResultStore, job_id: str, *, settling: bool = False) -> JobWriter:
    """The writer of a job a producer may change. A relay's copy of an upstream job takes results
    only from its upstream; an interrupted copy may be ended by hand (`settling`: `qm-xarray close`)."""
    writer = store.writer(job_id)
    origin = writer.job.origin
    if origin is not None and not (settling and origin.interrupted and not writer.job.closed):
        raise InvalidRequest(
            f"job {job_id!r} is a relay's copy of job {origin.job_id!r} of {origin.upstream}: it takes "
            f"results only from there" +
            ("; an interrupted copy can be ended with qm-xarray close" if settling else ""))
    return writer


def _specs(messages: Iterable[pb.StreamSpec]) -> list[StreamSpec]:
    """Every declaration of a request, checked before any is used (a bad one changes nothing)."""
    return [StreamSpec.from_message(m) for m in messages]


class JobsService:
    """Read-only: server info (capabilities) and job listing."""

    def __init__(self, store: ResultStore, capabilities: Iterable[str]):
        self.store = store
        self.capabilities = list(capabilities)

    @rpc
    def GetServerInfo(self, request: pb.GetServerInfoRequest,
                      context: grpc.ServicerContext) -> pb.GetServerInfoResponse:
        return pb.GetServerInfoResponse(implementation=IMPLEMENTATION, version=__version__,
                                        capabilities=self.capabilities)

    @rpc
    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsResponse:
        return pb.ListJobsResponse(jobs=[job_info(j) for j in self.store.jobs()])

    @rpc
    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.JobInfo:
        return job_info(self.store.job(request.job_id))

    @rpc
    def GetMetadata(self, request: pb.GetMetadataRequest, context: grpc.ServicerContext) -> pb.JobMetadata:
        return self.store.job(request.job_id).metadata.to_message()

    def handler(self) -> grpc.GenericRpcHandler:
        return handlers(JOBS_SERVICE, {
            "GetServerInfo": unary(self.GetServerInfo, pb.GetServerInfoRequest),
            "ListJobs": unary(self.ListJobs, pb.ListJobsRequest),
            "GetJob": unary(self.GetJob, pb.GetJobRequest),
            "GetMetadata": unary(self.GetMetadata, pb.GetMetadataRequest),
        })


class ProducerService:
    """Create jobs, declare streams, append items and end jobs, from another process."""

    def __init__(self, store: ResultStore):
        self.store = store

    @rpc
    def CreateJob(self, request: pb.CreateJobRequest, context: grpc.ServicerContext) -> pb.JobInfo:
        metadata = JobMetadata.from_message(request.metadata) if request.HasField("metadata") else None
        writer = self.store.create_job(request.job_id or None, streams=_specs(request.streams),
                                       metadata=metadata)
        return job_info(writer.job)

    @rpc
    def AddStreams(self, request: pb.AddStreamsRequest, context: grpc.ServicerContext) -> pb.JobInfo:
        writer = producer_writer(self.store, request.job_id)
        for spec in _specs(request.streams):
            writer.declare(spec)
        return job_info(writer.job)

    @rpc
    def AppendItems(self, requests: Iterator[pb.AppendItemsRequest],
                    context: grpc.ServicerContext) -> pb.AppendItemsResponse:
        touched: dict[tuple[str, str], Stream] = {}
        for request in requests:
            key = (request.job_id, request.stream)
            stream = touched.get(key) or producer_writer(self.store, request.job_id).job.stream(request.stream)
            stream.append_bytes(request.data, request.count)
            touched[key] = stream
        return pb.AppendItemsResponse(streams=[stream_info(s) for s in touched.values()])

    @rpc
    def SetJobState(self, request: pb.SetJobStateRequest, context: grpc.ServicerContext) -> pb.JobInfo:
        writer = producer_writer(self.store, request.job_id, settling=True)
        transition = _TRANSITIONS.get(request.transition)
        if transition is None:
            raise InvalidRequest(f"unknown job state transition {request.transition}")
        transition(writer)
        return job_info(writer.job)

    @rpc
    def AddError(self, request: pb.AddErrorRequest, context: grpc.ServicerContext) -> pb.JobInfo:
        writer = producer_writer(self.store, request.job_id, settling=True)  # close --state failed
        e = request.error
        writer.add_error(e.message, e.code, e.severity or ERROR)  # checks the severity
        return job_info(writer.job)

    @rpc
    def DescribeJob(self, request: pb.DescribeJobRequest, context: grpc.ServicerContext) -> pb.JobMetadata:
        writer = self.store.writer(request.job_id)
        return writer.apply(MetadataChange.from_request(request)).to_message()

    def handler(self) -> grpc.GenericRpcHandler:
        return handlers(PRODUCER_SERVICE, {
            "CreateJob": unary(self.CreateJob, pb.CreateJobRequest),
            "AddStreams": unary(self.AddStreams, pb.AddStreamsRequest),
            "AppendItems": client_stream(self.AppendItems, pb.AppendItemsRequest),
            "SetJobState": unary(self.SetJobState, pb.SetJobStateRequest),
            "AddError": unary(self.AddError, pb.AddErrorRequest),
            "DescribeJob": unary(self.DescribeJob, pb.DescribeJobRequest),
        })
