"""qm_xarray's own services (`qm_xarray.v1`): job listing and the producer side."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import grpc

from .._version import IMPLEMENTATION, __version__
from ..dtypes import StreamLayout
from ..wire.pb.qm_xarray.v1 import control_pb2 as pb
from ._rpc import InvalidRequest, client_stream, handlers, rpc, unary
from .store import ExecutionError, Job, JobState, ResultStore, Stream

JOBS_SERVICE = "qm_xarray.v1.JobsService"
PRODUCER_SERVICE = "qm_xarray.v1.ProducerService"

_STATE = {JobState.RUNNING: pb.RUNNING, JobState.DONE: pb.DONE, JobState.CLOSED: pb.CLOSED}


def stream_spec(s: Stream) -> pb.StreamSpec:
    return pb.StreamSpec(name=s.name, dtype=s.layout.dtype.str, shape=list(s.layout.shape),
                         single=s.single, timestamps=s.layout.timestamps,
                         expected_count=s.expected_count)


def job_info(job: Job) -> pb.JobInfo:
    return pb.JobInfo(
        job_id=job.id, state=_STATE[job.state], has_dataloss=job.has_dataloss,
        errors=[pb.ExecutionError(code=e.code, severity=e.severity, message=e.message)
                for e in job.errors],
        streams=[pb.StreamInfo(spec=stream_spec(s), count=s.count) for s in job.streams.values()],
        created_unix=job.created, updated_unix=job.updated)


def _layouts(specs: Iterable[pb.StreamSpec]) -> list[tuple[pb.StreamSpec, StreamLayout]]:
    return [(spec, StreamLayout.create(spec.dtype, tuple(spec.shape), spec.timestamps))
            for spec in specs]


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

    def handler(self) -> grpc.GenericRpcHandler:
        return handlers(JOBS_SERVICE, {
            "GetServerInfo": unary(self.GetServerInfo, pb.GetServerInfoRequest),
            "ListJobs": unary(self.ListJobs, pb.ListJobsRequest),
            "GetJob": unary(self.GetJob, pb.GetJobRequest),
        })


class ProducerService:
    """Create jobs, declare streams, append items and end jobs, from another process."""

    def __init__(self, store: ResultStore):
        self.store = store

    @rpc
    def CreateJob(self, request: pb.CreateJobRequest, context: grpc.ServicerContext) -> pb.JobInfo:
        writer = self.store.create_job(request.job_id or None, streams=[
            {"name": s.name, "dtype": s.dtype, "shape": tuple(s.shape), "single": s.single,
             "timestamps": s.timestamps, "expected_count": s.expected_count}
            for s in request.streams])  # validated as a whole: a bad spec creates nothing
        return job_info(writer.job)

    @rpc
    def AddStreams(self, request: pb.AddStreamsRequest, context: grpc.ServicerContext) -> pb.JobInfo:
        job = self.store.job(request.job_id)
        for spec, layout in _layouts(request.streams):
            job._add_stream(spec.name, layout, spec.single, spec.expected_count)
        return job_info(job)

    @rpc
    def AppendItems(self, requests: Iterator[pb.AppendItemsRequest],
                    context: grpc.ServicerContext) -> pb.AppendItemsResponse:
        touched: dict[tuple[str, str], Stream] = {}
        for request in requests:
            key = (request.job_id, request.stream)
            stream = touched.get(key) or self.store.job(request.job_id).stream(request.stream)
            stream.append_bytes(request.data, request.count)
            touched[key] = stream
        return pb.AppendItemsResponse(streams=[
            pb.StreamInfo(spec=stream_spec(s), count=s.count) for s in touched.values()])

    @rpc
    def SetJobState(self, request: pb.SetJobStateRequest, context: grpc.ServicerContext) -> pb.JobInfo:
        job = self.store.job(request.job_id)
        t = pb.SetJobStateRequest
        if request.transition == t.FINISH:
            job._set_state(JobState.DONE)
        elif request.transition == t.CANCEL:
            job._set_state(JobState.CLOSED)
        elif request.transition == t.MARK_DATALOSS:
            job._mark_dataloss()
        else:
            raise InvalidRequest(f"unknown job state transition {request.transition}")
        return job_info(job)

    @rpc
    def AddError(self, request: pb.AddErrorRequest, context: grpc.ServicerContext) -> pb.JobInfo:
        job = self.store.job(request.job_id)
        e = request.error
        severity = e.severity or "error"
        if severity not in ("error", "warning"):
            raise InvalidRequest(f"severity must be 'error' or 'warning', got {severity!r}")
        job._add_error(ExecutionError(e.message, e.code, severity))
        return job_info(job)

    def handler(self) -> grpc.GenericRpcHandler:
        return handlers(PRODUCER_SERVICE, {
            "CreateJob": unary(self.CreateJob, pb.CreateJobRequest),
            "AddStreams": unary(self.AddStreams, pb.AddStreamsRequest),
            "AppendItems": client_stream(self.AppendItems, pb.AppendItemsRequest),
            "SetJobState": unary(self.SetJobState, pb.SetJobStateRequest),
            "AddError": unary(self.AddError, pb.AddErrorRequest),
        })
