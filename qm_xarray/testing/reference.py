"""Build the reference client's (qm-qua) StreamsManager against any results server.

qm-qua is a test-only dependency; `reference_streams_manager` raises ImportError without it.
Modes: "v1" (QOP 2 style), "v2-legacy" (v2 without chunk streaming), "v2" (chunked data),
"v2-multi" (chunked + multiple-streams fetching). Facts: wire-protocol.md sections c and g.
"""

from __future__ import annotations

from typing import Any

__all__ = ["REFERENCE_MODES", "reference_streams_manager", "our_streams_manager"]

REFERENCE_MODES = ("v1", "v2-legacy", "v2", "v2-multi")


def reference_streams_manager(host: str, port: int, job_id: str, mode: str = "v1",
                              timeout: float = 30.0) -> Any:
    """A qm-qua `StreamsManager` for `job_id` on `host:port`, built as QM's managers build it."""
    from qm._stream_results._streams_manager import StreamsManager
    from qm.api.job_result_api import JobResultServiceApi
    from qm.api.models.capabilities import QopCaps, ServerCapabilities
    from qm.api.models.server_details import ConnectionDetails
    from qm.api.v2.job_result_api import JobResultApi

    details = ConnectionDetails(host, port, timeout=timeout)
    return _build(mode, details, job_id, StreamsManager, JobResultServiceApi, JobResultApi, QopCaps,
                  ServerCapabilities, lambda: _status_waiter(details, job_id))


def _status_waiter(details: Any, job_id: str) -> Any:
    """`wait_until(status, timeout)` as qm-qua's JobApi does: follow GetJobStatusUpdates."""
    import grpc

    from ..wire.pb.qm.grpc.v2 import common_types_pb2 as common
    from ..wire.pb.qm.grpc.v2 import job_api_pb2 as pb

    names = {common.COMPLETED: "Done", common.CANCELED: "Canceled", common.ERROR: "Error",
             common.RUNNING: "Running", common.PENDING: "In queue", common.PROCESSING: "Processing"}

    def wait_until(state: str, timeout: float) -> None:
        channel = grpc.insecure_channel(f"{details.host}:{details.port}")
        try:
            call = channel.unary_stream("/qm.grpc.v2.JobService/GetJobStatusUpdates",
                                        request_serializer=pb.JobServiceGetJobStatusRequest.SerializeToString,
                                        response_deserializer=pb.JobServiceGetJobStatusResponse.FromString)
            for update in call(pb.JobServiceGetJobStatusRequest(job_id=job_id), timeout=timeout):
                status = names.get(update.success.status, "Error")
                if status == state:
                    return
                if status in ("Error", "Canceled"):
                    from qm.exceptions import JobFailedError  # the reference's own error
                    raise JobFailedError(f"job {job_id} ended with status {status}")
        finally:
            channel.close()

    return wait_until


def our_streams_manager(host: str, port: int, job_id: str, mode: str = "v1",
                        timeout: float = 30.0) -> Any:
    """Our `StreamsManager`, built exactly as `reference_streams_manager` builds the reference's."""
    from ..client import (
        ConnectionDetails,
        JobResultApi,
        JobResultServiceApi,
        QopCaps,
        ServerCapabilities,
    )
    from ..results import StreamsManager

    details = ConnectionDetails(host, port, timeout=timeout)
    return _build(mode, details, job_id, StreamsManager, JobResultServiceApi, JobResultApi, QopCaps,
                  ServerCapabilities, lambda: None)


def _build(mode: str, details: Any, job_id: str, manager: Any, v1: Any, v2: Any, caps_names: Any,
           capabilities: Any, waiter: Any) -> Any:
    """A StreamsManager for a mode, from one client's classes (theirs or ours): same recipe."""
    if mode not in REFERENCE_MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {REFERENCE_MODES}")
    if mode == "v1":
        return manager(v1(details, job_id), capabilities({caps_names.job_streaming_state}), None)
    caps = {caps_names.job_streaming_state}
    if mode != "v2-legacy":
        caps.add(caps_names.chunk_streaming)
    if mode == "v2-multi":
        caps.add(caps_names.multiple_streams_fetching)
    return manager(v2(details, job_id, mode != "v2-legacy"), capabilities(caps), waiter())
