"""Client of qm_xarray's own read-only JobsService: server info and job listing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import grpc

from ..metadata import JobMetadata
from ..origin import Origin
from ..wire.pb.qm_xarray.v1 import control_pb2 as pb
from ..wire.pb.qm_xarray.v1 import control_pb2_grpc as pb_grpc
from . import retry
from .connection import ConnectionDetails
from .errors import map_rpc_error
from ..dtypes import item_shape
from .models import Header, SchemaItem, ServerInfo

__all__ = ["JobsClient", "JobSummary", "StreamSummary", "ServerInfo"]

R = TypeVar("R")

_STATE = {pb.RUNNING: "running", pb.DONE: "done", pb.CLOSED: "closed"}


@dataclass(frozen=True)
class StreamSummary:
    name: str
    dtype: str
    shape: tuple[int, ...]
    single: bool
    timestamps: bool
    expected_count: int
    count: int

    @classmethod
    def from_header(cls, item: SchemaItem, header: Header) -> StreamSummary:
        """The declaration a results server's schema item and (flat) header describe: what a
        server of ours would need to serve the same bytes under the same headers."""
        dtype = header.dtype
        timestamps = dtype.names is not None and "timestamp" in dtype.names
        value = dtype["value"] if timestamps else dtype
        shape = value.shape or item_shape(header.shape)
        return cls(item.name, value.base.str, tuple(shape), item.is_single, timestamps,
                   item.expected_count, header.count_so_far)


@dataclass(frozen=True)
class JobSummary:
    job_id: str
    state: str  # "running", "done" or "closed"
    has_dataloss: bool
    errors: tuple[tuple[int, str, str], ...]  # (code, severity, message)
    streams: tuple[StreamSummary, ...]
    created: float
    updated: float
    origin: Origin | None = None  # on a relay: the upstream job this is a copy of, and its standing

    @classmethod
    def from_pb(cls, info: pb.JobInfo) -> JobSummary:
        return cls(
            job_id=info.job_id, state=_STATE.get(info.state, "unknown"),
            has_dataloss=info.has_dataloss,
            errors=tuple((e.code, e.severity, e.message) for e in info.errors),
            streams=tuple(StreamSummary(s.spec.name, s.spec.dtype, tuple(s.spec.shape), s.spec.single,
                                        s.spec.timestamps, s.spec.expected_count, s.count)
                          for s in info.streams),
            created=info.created_unix, updated=info.updated_unix,
            origin=Origin.from_message(info.capture) if info.HasField("capture") else None)


class JobsClient:
    """`server_info()`, `list_jobs()` and `get_job(id)` on a qm_xarray results server."""

    def __init__(self, details: ConnectionDetails):
        self.details = details

    def _call(self, method: str, request: object, response: type[R], what: str,
              timeout: float | None, unimplemented: R | None = None) -> R:
        call = getattr(pb_grpc.JobsServiceStub(self.details.channel()), method)
        try:  # read-only calls: retried after transient failures, within the deadline
            answer: R = retry.run(lambda left: call(request, timeout=left, metadata=self.details.metadata),
                                  timeout or self.details.timeout, what)
            return answer
        except grpc.RpcError as exc:
            if unimplemented is not None and exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                return unimplemented  # a server without this call: the answer it stands for
            raise map_rpc_error(exc, what) from None

    def server_info(self, timeout: float | None = None) -> ServerInfo:
        r = self._call("GetServerInfo", pb.GetServerInfoRequest(), pb.GetServerInfoResponse,
                       "GetServerInfo", timeout)
        return ServerInfo(r.implementation, r.version, tuple(r.capabilities))

    def list_jobs(self, timeout: float | None = None) -> list[JobSummary]:
        r = self._call("ListJobs", pb.ListJobsRequest(), pb.ListJobsResponse, "ListJobs", timeout)
        return [JobSummary.from_pb(j) for j in r.jobs]

    def get_metadata(self, job_id: str, timeout: float | None = None) -> JobMetadata:
        """The job's metadata; empty from a qm-xarray server older than metadata (UNIMPLEMENTED)."""
        r = self._call("GetMetadata", pb.GetMetadataRequest(job_id=job_id), pb.JobMetadata,
                       f"GetMetadata of job {job_id!r}", timeout, unimplemented=pb.JobMetadata())
        return JobMetadata.from_message(r)

    def get_job(self, job_id: str, timeout: float | None = None) -> JobSummary:
        r = self._call("GetJob", pb.GetJobRequest(job_id=job_id), pb.JobInfo, f"GetJob of job {job_id!r}",
                       timeout)
        return JobSummary.from_pb(r)
