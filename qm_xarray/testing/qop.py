"""A stand-in QOP server (QOP 2 or QOP 3), built only from qm-qua's generated servicers and messages.

Compatibility tests point clients (qm-qua itself, or ours) at this server. It shares no code with
qm_xarray's own server, wire, codec or dtype modules, so that a misunderstanding of the protocol
cannot hide by being made the same way at both ends: the `simpleDType` strings, shapes and item
bytes are produced here from the facts of `wire-protocol.md` (sections a, b, d, e) and the RPCs
behind `QuantumMachinesManager` from `qop-connection.md` (sections 5, 6, 7, 10).

What it enforces on every RPC (see `StandInQop`): gateway metadata (`x-grpc-service`,
`cluster_name`/`any_cluster`), an optional bearer token, and NOT_FOUND for unknown jobs and streams.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
import numpy as np
from google.protobuf import wrappers_pb2
from qm.grpc.io.qualang.api.v1 import info_service_pb2 as info_pb
from qm.grpc.io.qualang.api.v1 import info_service_pb2_grpc as info_grpc
from qm.grpc.qm.grpc.v2 import common_types_pb2 as common_pb
from qm.grpc.qm.grpc.v2 import job_api_pb2 as job_pb
from qm.grpc.qm.grpc.v2 import job_api_pb2_grpc as job_grpc
from qm.grpc.qm.grpc.v2 import qmm_api_pb2 as qmm_pb
from qm.grpc.qm.grpc.v2 import qmm_api_pb2_grpc as qmm_grpc
from qm.grpc.qm.pb import frontend_pb2 as frontend_pb
from qm.grpc.qm.pb import frontend_pb2_grpc as frontend_grpc
from qm.grpc.qm.pb import job_results_pb2 as v1_pb
from qm.grpc.qm.pb import job_results_pb2_grpc as v1_grpc
from qm.grpc.qm.pb import qm_manager_pb2 as qm_manager_pb

from ..grpc_typing import ServerInterceptor

if TYPE_CHECKING:
    from .jobs import StreamKind

__all__ = ["StandInQop"]

MAX_WORKERS = 32
MAX_MESSAGE_BYTES = 1 << 20  # payload bytes per data message: well under a stock client's 4 MiB
QOP2_VERSION = "2.70-cb7c3ee"
QOP3_VERSION = "3.5.0"

# job state -> qm.grpc.v2.JobExecutionStatus, and -> the member of the QOP 2 Frontend status oneof
_V2_STATUS: dict[str, common_pb.JobExecutionStatus] = {
    "unknown": common_pb.UNKNOWN, "pending": common_pb.PENDING, "loading": common_pb.LOADING,
    "running": common_pb.RUNNING, "processing": common_pb.PROCESSING, "done": common_pb.COMPLETED,
    "canceled": common_pb.CANCELED, "error": common_pb.ERROR,
}
_FRONTEND_STATUS: dict[str, str] = {
    "unknown": "unknown", "pending": "pending", "loading": "loading", "running": "running",
    "processing": "processing", "done": "completed", "canceled": "canceled", "error": "error",
}
_FINISHED = frozenset({"done", "canceled", "error"})
_SEVERITY = {"error": 0, "warning": 1}  # ExecutionErrorSeverity, the same numbers in v1 and v2


# ---------------------------------------------------------------------------------------------
# Stream layout: the simpleDType strings and item bytes, written from the spec


def _type_code(dtype: np.dtype[Any]) -> str:
    """The element type as QM servers spell it: `"<f8"`, `"<i8"`, and `"bool8"` for booleans."""
    if dtype.kind == "b":
        return "bool8"  # the numpy-1 name real servers send; qm-qua patches it to `|b1`
    return dtype.newbyteorder("<").str


def _field(name: str, code: Any, dims: tuple[int, ...]) -> list[Any]:
    """One `[name, type]` or `[name, type, [dims]]` entry of an npy `descr`."""
    return [name, code, list(dims)] if dims else [name, code]


@dataclass
class _Stream:
    """One result stream: its layout, and its items as packed little-endian bytes."""

    name: str
    element: np.dtype[Any]  # little-endian element type
    dims: tuple[int, ...]   # buffer dimensions of one item (empty for a scalar stream)
    single: bool
    timestamps: bool
    data: bytearray = field(default_factory=bytearray)
    count: int = 0

    @property
    def item_dtype(self) -> np.dtype[Any]:
        """The packed numpy layout of one item on the wire (value then timestamp if timestamped)."""
        value: tuple[Any, ...] = (self.element, self.dims) if self.dims else (self.element,)
        if self.timestamps:
            return np.dtype([("value", *value), ("timestamp", "<i8")])
        return np.dtype(value if self.dims else self.element)

    @property
    def itemsize(self) -> int:
        return self.item_dtype.itemsize

    def _value_descr(self) -> Any:
        """The record of one timestamped item, as `[["value", T(, dims)], ["timestamp", "<i8"]]`."""
        return [_field("value", _type_code(self.element), self.dims), ["timestamp", "<i8"]]

    def descr(self, flat: bool) -> tuple[str, list[int]]:
        """(simpleDType JSON, per-item shape) in the nested (`flat=False`) or the flat form."""
        code = _type_code(self.element)
        if flat:
            if self.timestamps:
                return json.dumps(self._value_descr()), [1]
            return json.dumps(code), list(self.dims) or [1]
        if self.timestamps:
            return json.dumps([["value", self._value_descr()]]), [1]
        return json.dumps([_field("value", code, self.dims)]), [1]

    def encode(self, items: np.ndarray) -> tuple[int, bytes]:
        """(count, bytes) of `items`, laid out as the wire needs (C order, packed, little-endian)."""
        arr = np.asarray(items)
        if self.timestamps:
            if arr.dtype.names is None or not {"value", "timestamp"} <= set(arr.dtype.names):
                raise ValueError(f"stream {self.name!r} takes (value, timestamp) records")
            arr = arr.reshape(-1)
            out = np.empty(arr.shape[0], dtype=self.item_dtype)
            out["value"] = arr["value"].reshape((arr.shape[0], *self.dims))
            out["timestamp"] = arr["timestamp"]
            return out.shape[0], out.tobytes()
        if arr.ndim == len(self.dims):  # one item given without its leading axis
            arr = arr[np.newaxis]
        if arr.shape[1:] != self.dims:
            raise ValueError(f"stream {self.name!r} takes items of shape {self.dims}, got {arr.shape[1:]}")
        out = np.ascontiguousarray(arr, dtype=self.element)
        return out.shape[0], out.tobytes()

    def append(self, items: np.ndarray) -> None:
        count, data = self.encode(items)
        if not count:
            return
        if self.single:  # a `save` stream holds one value: the last one
            self.data = bytearray(data[-self.itemsize:])
            self.count = 1
        else:
            self.data += data
            self.count += count

    def window(self, offset: int, limit: int) -> tuple[int, bytes]:
        """(count, bytes) of up to `limit` items from `offset`; a negative offset counts from the end."""
        start = offset if offset >= 0 else max(0, self.count + offset)
        stop = min(self.count, start + max(0, limit))
        if stop <= start:
            return 0, b""
        size = self.itemsize
        return stop - start, bytes(self.data[start * size:stop * size])


@dataclass
class _Job:
    job_id: str
    streams: dict[str, _Stream]
    history: list[str]  # every state the job went through, the current one last
    dataloss: bool = False
    errors: list[tuple[int, int, str]] = field(default_factory=list)  # (code, severity, message)

    @property
    def state(self) -> str:
        return self.history[-1]


def _check_state(state: str) -> str:
    if state not in _V2_STATUS:
        raise ValueError(f"unknown job state {state!r}; one of {sorted(_V2_STATUS)}")
    return state


def _groups(itemsize: int, count: int, data: bytes) -> Iterator[tuple[int, list[bytes]]]:
    """Split `count` items into groups of whole items, each as chunks of at most MAX_MESSAGE_BYTES."""
    per_group = max(1, MAX_MESSAGE_BYTES // max(1, itemsize))
    for first in range(0, count, per_group):
        n = min(per_group, count - first)
        block = data[first * itemsize:(first + n) * itemsize]
        yield n, [block[i:i + MAX_MESSAGE_BYTES] for i in range(0, len(block), MAX_MESSAGE_BYTES)]


# ---------------------------------------------------------------------------------------------
# Metadata checks


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    """End the call with `code` (`context.abort` raises; the raise below only tells type checkers)."""
    context.abort(code, details)
    raise AssertionError("unreachable: grpc's abort raises")


def _refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, details: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that only ends the call with `code`."""

    def refuse(request: Any, context: grpc.ServicerContext) -> NoReturn:
        _abort(context, code, details)

    def refuse_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        _abort(context, code, details)
        yield  # pragma: no cover (a generator, as grpc expects of a streaming handler)

    deserialize, serialize = handler.request_deserializer, handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse, deserialize, serialize)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, deserialize, serialize)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, deserialize, serialize)
    return grpc.stream_stream_rpc_method_handler(refuse_stream, deserialize, serialize)


class _Gate(ServerInterceptor):
    """Records every call, then applies the gateway and token rules of the owning StandInQop."""

    def __init__(self, qop: StandInQop) -> None:
        self._qop = qop

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          handler_call_details: grpc.HandlerCallDetails) -> Any:
        metadata = {key: value if isinstance(value, str) else value.decode("latin-1")
                    for key, value in handler_call_details.invocation_metadata or ()}
        self._qop._record(handler_call_details.method, metadata)
        handler = continuation(handler_call_details)
        if handler is None:  # not served (v1 on QOP 3, the redirect probe `/`...): UNIMPLEMENTED
            return None
        refused = self._qop._check_metadata(metadata)
        return handler if refused is None else _refusal(handler, *refused)


# ---------------------------------------------------------------------------------------------
# The server


class StandInQop:
    """A stand-in for a real QOP server, built only from qm-qua's generated servicers.

    `qop=3` serves InfoService, `qm.grpc.v2.QmmService` and `qm.grpc.v2.JobService` (nothing of v1);
    `qop=2` serves InfoService, `qm.grpc.frontend.Frontend` and the v1
    `qm.grpc.results_analyser.JobResultsService` (nothing of v2). Rules applied to every RPC, in order:

    1. `require_gateway_headers`: `x-grpc-service: gateway`, else UNIMPLEMENTED ("the gateway cannot
       route a call without `x-grpc-service: gateway`"); then `cluster_name: <cluster_name>`, or
       `cluster_name: any` with `any_cluster: true` (always accepted, with or without a configured
       name, as qm-qua sends it when given no name); anything else is NOT_FOUND ("no cluster named ...").
    2. `token`: `authorization: Bearer <token>`, else UNAUTHENTICATED.
    3. an unknown job (or stream) is NOT_FOUND, except `QmmService/GetJobs`, which just lists nothing.

    Offsets: a negative offset counts from the end of the stream's current items; a v2 `Range`
    is read as offset `from`, limit `to - from + 1` (`to` inclusive), so both data paths of qm-qua
    give the same items for the same slice. Data messages carry at most 1 MiB of item bytes.
    """

    def __init__(self, qop: int = 3, *, token: str | None = None, require_gateway_headers: bool = True,
                 cluster_name: str | None = None, chunk_streaming: bool = True,
                 multiple_streams: bool = True, tls: tuple[bytes, bytes] | None = None,
                 client_ca: bytes | None = None, host: str = "127.0.0.1", port: int = 0,
                 version: str | None = None) -> None:
        if qop not in (2, 3):
            raise ValueError("qop must be 2 or 3")
        if client_ca is not None and tls is None:
            raise ValueError("client_ca (mutual TLS) needs tls=(certificate chain, private key)")
        self.qop = qop
        self.token = token
        self.require_gateway_headers = require_gateway_headers
        self.cluster_name = cluster_name
        self.chunk_streaming = chunk_streaming
        self.multiple_streams = multiple_streams
        self.version = version or (QOP3_VERSION if qop == 3 else QOP2_VERSION)
        self.host = host
        self.port = port
        self.calls: list[tuple[str, dict[str, str]]] = []
        self._tls = tls
        self._client_ca = client_ca
        self._jobs: dict[str, _Job] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._server: grpc.Server | None = None
        self._executor: ThreadPoolExecutor | None = None

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def capabilities(self) -> list[str]:
        """What GetInfo advertises."""
        if self.qop == 2:
            return ["qm.job_streaming_state", "qm.new_grpc_structure"]
        caps = ["__qop3", "qm.job_streaming_state"]
        if self.chunk_streaming:
            caps.append("qm.chunk_streaming")
        if self.multiple_streams:
            caps.append("qm.multiple_streams_fetching")
        return caps

    def start(self) -> StandInQop:
        """Bind (port 0 picks a free port, then `port`/`address` tell which) and serve."""
        if self._server is not None:
            raise RuntimeError("already started")
        self._stopping = False
        self._executor = ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="stand-in-qop")
        server = grpc.server(self._executor, interceptors=[_Gate(self)],
                             options=[("grpc.so_reuseport", 0)])
        info_grpc.add_InfoServiceServicer_to_server(_InfoService(self), server)
        if self.qop == 3:
            qmm_grpc.add_QmmServiceServicer_to_server(_QmmService(self), server)
            job_grpc.add_JobServiceServicer_to_server(_JobService(self), server)
        else:
            frontend_grpc.add_FrontendServicer_to_server(_Frontend(self), server)
            v1_grpc.add_JobResultsServiceServicer_to_server(_JobResultsV1(self), server)
        target = f"{self.host}:{self.port}"
        if self._tls is None:
            bound = server.add_insecure_port(target)
        else:
            chain, key = self._tls
            credentials = grpc.ssl_server_credentials(
                [(key, chain)], root_certificates=self._client_ca,
                require_client_auth=self._client_ca is not None)
            bound = server.add_secure_port(target, credentials)
        if not bound:
            self._executor.shutdown(wait=False)
            raise OSError(f"could not bind {target}")
        self.port = bound
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        """Stop serving within about a second: new calls are refused at once, open calls (status
        streams included) are cancelled after 0.2 s, so that no client mistakes the stop for the
        normal end of a status stream (which qm-qua reads as "done")."""
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace=0.2).wait(timeout=1.0)
        with self._cond:  # anything still waiting in `_status_updates` ends now
            self._stopping = True
            self._cond.notify_all()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> StandInQop:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- jobs --------------------------------------------------------------------------------

    def add_job(self, job_id: str, streams: dict[str, tuple[StreamKind, np.ndarray]], *,
                state: str = "running", dataloss: bool = False, errors: Sequence[str] = ()) -> None:
        """Add a job whose streams (in this order) hold these items: `{name: (kind, items)}`."""
        made: dict[str, _Stream] = {}
        for name, (kind, items) in streams.items():
            stream = _Stream(name, np.dtype(kind.dtype).newbyteorder("<"), tuple(kind.shape),
                             bool(kind.single), bool(kind.timestamps))
            stream.append(items)
            made[name] = stream
        job = _Job(job_id, made, [_check_state(state)], dataloss,
                   [(0, _SEVERITY["error"], message) for message in errors])
        with self._cond:
            if job_id in self._jobs:
                raise ValueError(f"job {job_id!r} exists already")
            self._jobs[job_id] = job
            self._cond.notify_all()

    def job_ids(self) -> list[str]:
        """The ids of the jobs it serves, in the order they were added."""
        return [job.job_id for job in self._jobs_list()]

    def append(self, job_id: str, name: str, items: np.ndarray) -> None:
        """Add items to a stream of a job (a job that grows); a `single` stream keeps the last one."""
        with self._cond:
            self._jobs[job_id].streams[name].append(items)
            self._cond.notify_all()

    def set_state(self, job_id: str, state: str) -> None:
        """Move a job to "running", "done", "canceled", "error" (or "pending", "processing"...);
        wakes the status-update streams."""
        with self._cond:
            self._jobs[job_id].history.append(_check_state(state))
            self._cond.notify_all()

    def set_dataloss(self, job_id: str, flag: bool = True) -> None:
        with self._cond:
            self._jobs[job_id].dataloss = flag

    def add_error(self, job_id: str, message: str, code: int = 0, severity: str = "error") -> None:
        """Add an execution error (severity "error" or "warning") to the job's report."""
        with self._cond:
            self._jobs[job_id].errors.append((code, _SEVERITY[severity], message))

    # --- used by the interceptor and the servicers --------------------------------------------

    def _record(self, method: str, metadata: dict[str, str]) -> None:
        with self._cond:
            self.calls.append((method, metadata))

    def _check_metadata(self, metadata: dict[str, str]) -> tuple[grpc.StatusCode, str] | None:
        """None if the call may go on, else the (status, details) to end it with."""
        if self.require_gateway_headers:
            service = metadata.get("x-grpc-service")
            if service is None:
                return (grpc.StatusCode.UNIMPLEMENTED,
                        "the gateway cannot route a call without `x-grpc-service: gateway`")
            if service != "gateway":
                return grpc.StatusCode.UNIMPLEMENTED, f"the gateway has no service named {service!r}"
            cluster = metadata.get("cluster_name")
            any_cluster = cluster == "any" and metadata.get("any_cluster") == "true"
            if not any_cluster and (cluster is None or cluster != self.cluster_name):
                return grpc.StatusCode.NOT_FOUND, f"no cluster named {cluster!r}"
        if self.token is not None and metadata.get("authorization") != f"Bearer {self.token}":
            return grpc.StatusCode.UNAUTHENTICATED, "missing or wrong `authorization: Bearer <token>`"
        return None

    def _job(self, job_id: str, context: grpc.ServicerContext) -> _Job:
        with self._cond:
            job = self._jobs.get(job_id)
        if job is None:
            _abort(context, grpc.StatusCode.NOT_FOUND, f"job {job_id!r} not found")
        return job

    def _stream(self, job_id: str, name: str, context: grpc.ServicerContext) -> tuple[_Job, _Stream]:
        job = self._job(job_id, context)
        stream = job.streams.get(name)
        if stream is None:
            _abort(context, grpc.StatusCode.NOT_FOUND, f"job {job_id!r} has no stream named {name!r}")
        return job, stream

    def _jobs_list(self) -> list[_Job]:
        with self._cond:
            return list(self._jobs.values())

    def _window(self, stream: _Stream, offset: int, limit: int) -> tuple[int, bytes]:
        with self._cond:
            return stream.window(offset, limit)

    def _result_state(self, job: _Job) -> tuple[bool, bool, bool]:
        """(done, closed, has_dataloss): closed once the job can produce no more data."""
        with self._cond:
            return job.state == "done", job.state in _FINISHED, job.dataloss

    def _status_updates(self, job: _Job, context: grpc.ServicerContext) -> Iterator[str]:
        """The current state, then each later one, until a finished state, a cancel or a stop."""
        def wake() -> None:
            with self._cond:
                self._cond.notify_all()

        context.add_callback(wake)  # the client's cancel or deadline wakes the wait below
        with self._cond:
            index = len(job.history) - 1
        while True:
            with self._cond:
                while index >= len(job.history) and context.is_active() and not self._stopping:
                    self._cond.wait(0.5)
                if index >= len(job.history) or not context.is_active():
                    return
                state = job.history[index]
            yield state
            if state in _FINISHED:
                return
            index += 1


# ---------------------------------------------------------------------------------------------
# Servicers


class _InfoService(info_grpc.InfoServiceServicer):
    def __init__(self, qop: StandInQop) -> None:
        self._qop = qop

    def GetInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        return info_pb.GetInfoResponse(
            implementation=info_pb.ImplementationDetails(name="stand-in QOP", version=self._qop.version),
            capabilities=self._qop.capabilities)


class _QmmService(qmm_grpc.QmmServiceServicer):
    """QOP 3 manager: what `QuantumMachinesManager` and `qmm.get_job` call."""

    def __init__(self, qop: StandInQop) -> None:
        self._qop = qop

    def HealthCheck(self, request: Any, context: grpc.ServicerContext) -> Any:
        return qmm_pb.HealthCheckResponse(success={"ok": True})

    def GetVersion(self, request: Any, context: grpc.ServicerContext) -> Any:
        return qmm_pb.GetVersionResponse(success={"gateway": self._qop.version})

    def ListOpenQuantumMachines(self, request: Any, context: grpc.ServicerContext) -> Any:
        return qmm_pb.ListOpenQuantumMachinesResponse(success={})

    def GetJobs(self, request: Any, context: grpc.ServicerContext) -> Any:
        ids = set(request.query.job_ids)
        statuses = set(request.query.status)
        jobs = []
        for job in self._qop._jobs_list():
            status = _V2_STATUS[job.state]
            if (ids and job.job_id not in ids) or (statuses and status not in statuses):
                continue
            jobs.append(qmm_pb.JobResponseData(job_id=job.job_id, status=status, is_simulation=False))
        return qmm_pb.GetJobsResponse(success=qmm_pb.GetJobsSuccess(jobs=jobs))


_NamedSuccess = job_pb.GetNamedResultResponse.GetNamedResultResponseSuccess


def _chunked(stream: _Stream, count: int, data: bytes) -> Iterator[Any]:
    """v2 chunk format: per group of whole items, its chunks then a summary of its count."""
    for n, chunks in _groups(stream.itemsize, count, data):
        for chunk in chunks:
            yield job_pb.GetNamedResultResponse(success=_NamedSuccess(
                data_chunk={"data": chunk}, output_name=stream.name))
        yield job_pb.GetNamedResultResponse(success=_NamedSuccess(
            data_summary={"count": n}, output_name=stream.name))


def _messages(stream: _Stream, count: int, data: bytes) -> Iterator[tuple[int, bytes]]:
    """(count, bytes) messages of whole items (v1 and the v2 legacy format)."""
    per_message = max(1, MAX_MESSAGE_BYTES // max(1, stream.itemsize))
    size = stream.itemsize
    for first in range(0, count, per_message):
        n = min(per_message, count - first)
        yield n, data[first * size:(first + n) * size]


class _JobService(job_grpc.JobServiceServicer):
    """QOP 3 job: status, status updates, results (v2) and the execution report."""

    def __init__(self, qop: StandInQop) -> None:
        self._qop = qop

    def GetJobStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        job = self._qop._job(request.job_id, context)
        return job_pb.JobServiceGetJobStatusResponse(success={"status": _V2_STATUS[job.state]})

    def GetJobStatusUpdates(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        job = self._qop._job(request.job_id, context)
        for state in self._qop._status_updates(job, context):
            yield job_pb.JobServiceGetJobStatusResponse(success={"status": _V2_STATUS[state]})

    def GetJobResultSchema(self, request: Any, context: grpc.ServicerContext) -> Any:
        job = self._qop._job(request.job_id, context)
        item = job_pb.GetJobResultSchemaResponse.GetJobResultSchemaResponseSuccess.Item
        items = []
        for stream in job.streams.values():
            dtype, shape = stream.descr(flat=False)
            items.append(item(name=stream.name, simple_dtype=dtype, is_single=stream.single,
                              expected_count=0, shape=shape))
        return job_pb.GetJobResultSchemaResponse(success={"items": items})

    def GetJobResultState(self, request: Any, context: grpc.ServicerContext) -> Any:
        done, closed, dataloss = self._qop._result_state(self._qop._job(request.job_id, context))
        return job_pb.GetJobResultStateResponse(success={"done": done, "closed": closed,
                                                         "has_dataloss": dataloss})

    def GetJobNamedResultHeader(self, request: Any, context: grpc.ServicerContext) -> Any:
        job, stream = self._qop._stream(request.job_id, request.output_name, context)
        dtype, shape = stream.descr(request.flat_format)
        with self._qop._cond:
            count, dataloss = stream.count, job.dataloss
        return job_pb.GetJobNamedResultHeaderResponse(success={
            "is_single": stream.single, "count_so_far": count, "simple_dtype": dtype,
            "has_data_loss": dataloss, "shape": shape, "output_name": stream.name})

    def GetJobNamedResultsHeaders(self, request: Any, context: grpc.ServicerContext) -> Any:
        job = self._qop._job(request.job_id, context)
        wanted = [(o.output_name, o.flat_format) for o in request.outputs] or \
                 [(name, False) for name in job.streams]
        headers = []
        for name, flat in wanted:
            _, stream = self._qop._stream(request.job_id, name, context)
            dtype, shape = stream.descr(flat)
            with self._qop._cond:
                count, dataloss = stream.count, job.dataloss
            headers.append({"count_so_far": count, "has_data_loss": dataloss, "output_name": name,
                            "simple_dtype": dtype, "shape": shape})
        return job_pb.GetJobNamedResultsHeadersResponse(success={"headers": headers})

    def GetNamedResult(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        _, stream = self._qop._stream(request.job_id, request.output_name, context)
        offset = request.long_offset.value if request.HasField("long_offset") else 0
        count, data = self._qop._window(stream, offset, request.limit)
        if self._qop.chunk_streaming:
            yield from _chunked(stream, count, data)
            return
        for n, block in _messages(stream, count, data):
            yield job_pb.GetNamedResultResponse(success=_NamedSuccess(
                count_of_items=n, data=block, output_name=stream.name))

    def GetNamedResults(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        wanted = []
        for output in request.outputs:  # every name checked before anything is sent
            _, stream = self._qop._stream(request.job_id, output.output_name, context)
            span = output.range
            start = getattr(span, "from").value if span.HasField("from") else 0
            if span.HasField("to"):
                limit = span.to.value - start + 1
            else:
                limit = 2**31 - 1
            wanted.append((stream, start, limit))
        for stream, start, limit in wanted:
            yield from _chunked(stream, *self._qop._window(stream, start, limit))

    def GetErrors(self, request: Any, context: grpc.ServicerContext) -> Any:
        job = self._qop._job(request.job_id, context)
        with self._qop._cond:
            errors = list(job.errors)
        return job_pb.GetJobErrorsResponse(success={"errors": [
            {"errorCode": code, "errorSeverity": severity, "message": message}
            for code, severity, message in errors]})


class _Frontend(frontend_grpc.FrontendServicer):
    """QOP 2 manager and job status."""

    def __init__(self, qop: StandInQop) -> None:
        self._qop = qop

    def GetVersion(self, request: Any, context: grpc.ServicerContext) -> Any:
        return wrappers_pb2.StringValue(value=self._qop.version)

    def HealthCheck(self, request: Any, context: grpc.ServicerContext) -> Any:
        return frontend_pb.HealthCheckResponse(ok=True)

    def ListOpenQuantumMachines(self, request: Any, context: grpc.ServicerContext) -> Any:
        return qm_manager_pb.ListOpenQuantumMachinesResponse()

    def GetJobExecutionStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        job = self._qop._job(request.jobId, context)
        status = frontend_pb.JobExecutionStatus()
        getattr(status, _FRONTEND_STATUS[job.state]).SetInParent()  # sets that oneof member
        return frontend_pb.GetJobExecutionStatusResponse(status=status)


class _JobResultsV1(v1_grpc.JobResultsServiceServicer):
    """QOP 2 results (`qm.grpc.results_analyser.JobResultsService`)."""

    def __init__(self, qop: StandInQop) -> None:
        self._qop = qop

    def GetJobResultSchema(self, request: Any, context: grpc.ServicerContext) -> Any:
        job = self._qop._job(request.jobId, context)
        items = []
        for stream in job.streams.values():
            dtype, shape = stream.descr(flat=False)
            items.append(v1_pb.GetJobResultSchemaResponse.Item(
                name=stream.name, simpleDType=dtype, isSingle=stream.single, expectedCount=0,
                shape=shape))
        return v1_pb.GetJobResultSchemaResponse(items=items)

    def GetJobState(self, request: Any, context: grpc.ServicerContext) -> Any:
        done, closed, dataloss = self._qop._result_state(self._qop._job(request.jobId, context))
        return v1_pb.GetJobStateResponse(done=done, closed=closed, hasDataloss=dataloss)

    def GetJobNamedResultHeader(self, request: Any, context: grpc.ServicerContext) -> Any:
        job, stream = self._qop._stream(request.jobId, request.outputName, context)
        dtype, shape = stream.descr(request.flatFormat)
        done, closed, dataloss = self._qop._result_state(job)
        with self._qop._cond:
            count, errors = stream.count, bool(job.errors)
        return v1_pb.GetJobNamedResultHeaderResponse(
            isSingle=stream.single, countSoFar=count, simpleDType=dtype, done=done, closed=closed,
            hasDataloss=dataloss, shape=shape, hasExecutionErrors=wrappers_pb2.BoolValue(value=errors))

    def GetJobNamedResult(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        _, stream = self._qop._stream(request.jobId, request.outputName, context)
        offset = request.longOffset.value if request.HasField("longOffset") else request.offset
        count, data = self._qop._window(stream, offset, request.limit)
        for n, block in _messages(stream, count, data):
            yield v1_pb.GetJobNamedResultResponse(countOfItems=n, data=block)

    def GetJobErrors(self, request: Any, context: grpc.ServicerContext) -> Any:
        job = self._qop._job(request.jobId, context)
        with self._qop._cond:
            errors = list(job.errors)
        return v1_pb.GetJobErrorsResponse(jobId=job.job_id, errors=[
            {"errorCode": code, "errorSeverity": severity, "message": message}
            for code, severity, message in errors])
