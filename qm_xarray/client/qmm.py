"""Client of QOP 3's `qm.grpc.v2.QmmService/GetJobs`: the jobs a QOP (or our server) knows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from ..errors import QMConnectionError
from ..wire.pb.qm.grpc.v2 import qmm_api_pb2 as pb
from . import retry
from .api_v2 import STATUS_NAMES
from .connection import ConnectionDetails
from .errors import map_rpc_error

__all__ = ["QmmClient", "JobRecord", "STATE_OF_STATUS"]

_PATH = "/qm.grpc.v2.QmmService/GetJobs"
# execution status -> our job states ("running" while it may still produce results)
STATE_OF_STATUS = {"Done": "done", "Canceled": "closed", "Error": "closed"}


@dataclass(frozen=True)
class JobRecord:
    """A job as QmmService describes it: id, execution status ("Running", "Done"...), times."""

    job_id: str
    status: str
    created: float
    updated: float

    @property
    def state(self) -> str:
        return STATE_OF_STATUS.get(self.status, "running")


class QmmClient:
    """`get_jobs(job_ids)` on a QOP 3 (every job when no id is given)."""

    def __init__(self, details: ConnectionDetails):
        self.details = details

    def get_jobs(self, job_ids: Sequence[str] = (), timeout: float | None = None) -> list[JobRecord]:
        call = self.details.channel().unary_unary(_PATH, request_serializer=pb.GetJobsRequest.SerializeToString,
                                                   response_deserializer=pb.GetJobsResponse.FromString)
        request = pb.GetJobsRequest(query={"job_ids": list(job_ids)})
        what = "GetJobs"
        try:
            response = retry.run(lambda left: call(request, timeout=left, metadata=self.details.metadata),
                                 timeout or self.details.timeout, what)
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, what) from None
        if response.HasField("error"):
            raise QMConnectionError(f"{what} of {self.details.target}: {response.error.details}")
        return [JobRecord(j.job_id, STATUS_NAMES.get(j.status, "Unknown"),
                          j.metadata.created_at.seconds + j.metadata.created_at.nanos / 1e9,
                          j.metadata.last_status_updated_at.seconds
                          + j.metadata.last_status_updated_at.nanos / 1e9)
                for j in response.success.jobs]

