"""What a `QuantumMachinesManager` asks of a QOP 3 before it reads results, over a ResultStore.

`io.qualang.api.v1.InfoService/GetInfo` (server detection: capabilities and version) and the part
of `qm.grpc.v2.QmmService` behind `QuantumMachinesManager(host, port)`, `qmm.get_job(id)`,
`qmm.list_open_qms()` and `qmm.version()` (facts: qop-connection.md sections 7 and 10). Machines,
configurations and program execution are not ours to answer: those RPCs stay UNIMPLEMENTED.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from .._version import IMPLEMENTATION, __version__
from ..errors import JobNotFoundError
from ..wire.pb.io.qualang.api.v1 import info_service_pb2 as info_pb
from ..wire.pb.qm.grpc.v2 import qmm_api_pb2 as pb
from ._rpc import handlers, rpc, unary
from .service_v2 import execution_status
from .store import Job, ResultStore

__all__ = ["InfoService", "QmmService"]

INFO_SERVICE = "io.qualang.api.v1.InfoService"
QMM_SERVICE = "qm.grpc.v2.QmmService"
URL = "https://github.com/qm-xarray/qm-xarray"


class InfoService:
    """Server detection: our implementation name and version, and the capabilities we honour."""

    def __init__(self, capabilities: Iterable[str]):
        self.capabilities = list(capabilities)

    @rpc
    def GetInfo(self, request: info_pb.GetInfoRequest, context: grpc.ServicerContext
                ) -> info_pb.GetInfoResponse:
        # no proto_version: qm-qua compares it with its own and we follow no QOP release
        return info_pb.GetInfoResponse(
            implementation=info_pb.ImplementationDetails(name=IMPLEMENTATION, version=__version__,
                                                         url=URL),
            capabilities=self.capabilities)

    def handler(self) -> grpc.GenericRpcHandler:
        return handlers(INFO_SERVICE, {"GetInfo": unary(self.GetInfo, info_pb.GetInfoRequest)})


def _timestamp(seconds: float) -> dict[str, int]:
    # a dict, not google's Timestamp class: our messages live in a private descriptor pool
    nanos = int(seconds * 1e9)
    return {"seconds": nanos // 10**9, "nanos": nanos % 10**9}


def job_data(job: Job) -> pb.JobResponseData:
    """A job as `GetJobs` describes it: id, execution status and times."""
    return pb.JobResponseData(
        job_id=job.id, status=execution_status(job), is_simulation=False,
        metadata=pb.JobMetadata(created_at=_timestamp(job.created), started_at=_timestamp(job.created),
                                last_status_updated_at=_timestamp(job.updated)))


class QmmService:
    """The manager RPCs of QOP 3 that reach jobs: health, job lookup and listing, version."""

    def __init__(self, store: ResultStore):
        self.store = store

    @rpc
    def HealthCheck(self, request: pb.HealthCheckRequest, context: grpc.ServicerContext
                    ) -> pb.HealthCheckResponse:
        return pb.HealthCheckResponse(success={"ok": True})

    @rpc
    def GetVersion(self, request: pb.GetVersionRequest, context: grpc.ServicerContext
                   ) -> pb.GetVersionResponse:
        return pb.GetVersionResponse(success={"gateway": f"{IMPLEMENTATION} {__version__}"})

    @rpc
    def ListOpenQuantumMachines(self, request: pb.ListOpenQuantumMachinesRequest,
                                context: grpc.ServicerContext) -> pb.ListOpenQuantumMachinesResponse:
        return pb.ListOpenQuantumMachinesResponse(success={})  # results only: no machines

    @rpc
    def GetJobs(self, request: pb.GetJobsRequest, context: grpc.ServicerContext) -> pb.GetJobsResponse:
        """The jobs named in `query.job_ids` that exist (unknown ids are left out, as a QOP does),
        or every job when no id is given; `query.status` filters by execution status."""
        query = request.query
        if query.job_ids:
            jobs = []
            for job_id in dict.fromkeys(query.job_ids):
                try:
                    jobs.append(self.store.job(job_id))
                except JobNotFoundError:
                    pass
        else:
            jobs = self.store.jobs()
        data = [job_data(job) for job in jobs]
        if query.status:
            wanted = set(query.status)
            data = [d for d in data if d.status in wanted]
        return pb.GetJobsResponse(success=pb.GetJobsSuccess(jobs=data))

    def handler(self) -> grpc.GenericRpcHandler:
        return handlers(QMM_SERVICE, {
            "HealthCheck": unary(self.HealthCheck, pb.HealthCheckRequest),
            "GetVersion": unary(self.GetVersion, pb.GetVersionRequest),
            "ListOpenQuantumMachines": unary(self.ListOpenQuantumMachines,
                                             pb.ListOpenQuantumMachinesRequest),
            "GetJobs": unary(self.GetJobs, pb.GetJobsRequest),
        })
