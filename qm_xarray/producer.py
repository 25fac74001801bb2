"""The producer API over gRPC: create jobs, declare streams, append items and end jobs remotely.

`RemoteStore` mirrors `ResultStore.create_job` / `.writer`, and `RemoteJobWriter` /
`RemoteStreamWriter` mirror the local `JobWriter` / `StreamWriter`, so code that produces results
(the simulator, a user's acquisition loop) runs unchanged against an embedded store or a server in
another process. Items are validated locally (`StreamLayout.pack`) before anything is sent, and sent
as whole items in messages of about 1 MiB through the client-streaming `AppendItems` RPC.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import grpc
import numpy as np

from .client.connection import ConnectionDetails
from .client.errors import map_rpc_error
from .dtypes import StreamLayout
from .errors import QmTypeError, QmValueError, StreamNotFoundError
from .execution_errors import ExecutionError
from .metadata import JobMetadata, MetadataChange, as_change, change_of, stream_change
from .limits import MESSAGE_BYTES  # payload per AppendItems message (whole items; one item if larger)
from .streams import DEFAULT_DTYPE, StreamDeclarations, StreamSpec, declarations
from .wire.pb.qm_xarray.v1 import control_pb2 as pb
from .wire.pb.qm_xarray.v1 import control_pb2_grpc as pb_grpc

__all__ = ["RemoteStore", "RemoteJobWriter", "RemoteStreamWriter", "MESSAGE_BYTES"]

MIN_SEND_RATE = 10e6  # bytes/s: an append's deadline grows with its size at this pessimistic rate

_TRANSITION = pb.SetJobStateRequest


class RemoteStore:
    """A results server seen from a producer: `create_job()` and `writer(job_id)`.

    `target` is `"host:port"` (or `qm://host:port`) or a `ConnectionDetails`; `token` overrides
    its token. `timeout` is the deadline, in seconds, of every RPC (appends get more time for
    large payloads).
    """

    def __init__(self, target: str | ConnectionDetails, *, token: str | None = None,
                 timeout: float = 30.0):
        if isinstance(target, ConnectionDetails):
            details = target if token is None else replace(target, token=token)
        else:
            details = ConnectionDetails.from_address(target, token=token)
        if not timeout or timeout <= 0:
            raise QmValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.details = details
        self.timeout = float(timeout)

    @property
    def address(self) -> str:
        return self.details.target

    def _producer(self) -> pb_grpc.ProducerServiceStub:
        return pb_grpc.ProducerServiceStub(self.details.channel())

    def _unary(self, method: str, request: Any, what: str) -> Any:
        stub = self._producer()
        try:
            return getattr(stub, method)(request, timeout=self.timeout, metadata=self.details.metadata)
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, what) from None

    def _job_info(self, job_id: str) -> pb.JobInfo:
        stub = pb_grpc.JobsServiceStub(self.details.channel())
        try:
            info: pb.JobInfo = stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=self.timeout,
                                           metadata=self.details.metadata)
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, f"GetJob of job {job_id!r} on {self.address}") from None
        return info

    def create_job(self, job_id: str | None = None, streams: StreamDeclarations = (),
                   metadata: JobMetadata | Mapping[str, Any] | None = None) -> RemoteJobWriter:
        """Create a running job on the server; `job_id` picks its id (else the server's `job-N`).

        `streams` declares streams with the job, atomically, as `ResultStore.create_job` takes
        them: `StreamSpec`s or dicts of `add_stream` arguments with a `"name"` (or a mapping
        name -> arguments), and `metadata` describes them (`describe`'s arguments as a dict, or
        a `JobMetadata`). Types and layouts are checked here, the rest by the server.
        """
        if job_id is not None and not isinstance(job_id, str):
            raise QmTypeError(f"job_id must be a string, got {type(job_id).__name__}")
        specs = [s.to_message() for s in declarations(streams, StreamSpec.parse)]
        change = as_change(metadata)
        request = pb.CreateJobRequest(job_id=job_id or "", streams=specs)
        if change is not None:
            request.metadata.CopyFrom(change.metadata.to_message())
        what = f"CreateJob {job_id!r} on {self.address}" if job_id else f"CreateJob on {self.address}"
        info = self._unary("CreateJob", request, what)
        return RemoteJobWriter(self, info)

    def writer(self, job_id: str) -> RemoteJobWriter:
        """Attach to an existing job (e.g. to end a job whose producer died)."""
        return RemoteJobWriter(self, self._job_info(job_id))

    def apply(self, job_id: str, change: MetadataChange) -> JobMetadata:
        """Make a metadata change (as `describe` builds it) on a job; returns what is kept."""
        answer: pb.JobMetadata = self._unary("DescribeJob", change.to_request(job_id),
                                             f"DescribeJob of job {job_id!r} on {self.address}")
        return JobMetadata.from_message(answer)

    def __repr__(self) -> str:
        return f"<RemoteStore {self.address}>"


class RemoteJobWriter:
    """Producer handle on a remote job: add streams, append, then finish / cancel."""

    def __init__(self, store: RemoteStore, info: pb.JobInfo):
        self.store = store
        self._id = info.job_id
        self._streams: dict[str, RemoteStreamWriter] = {}
        self._lock = threading.Lock()
        self._update(info)

    @property
    def id(self) -> str:
        return self._id

    def _update(self, info: pb.JobInfo) -> None:
        with self._lock:
            for s in info.streams:
                if s.spec.name not in self._streams:
                    self._streams[s.spec.name] = RemoteStreamWriter(
                        self, StreamSpec.from_message(s.spec), s.count)

    def add_stream(self, name: str, dtype: Any = DEFAULT_DTYPE, shape: Any = (), single: bool = False,
                   timestamps: bool = False, expected_count: int = 0) -> RemoteStreamWriter:
        """Declare a stream. `shape` is the per-item buffer shape; `single` a `save` stream.

        Types and the layout are checked here; the server checks the name and expected count
        (`InvalidArgumentError`)."""
        spec = StreamSpec.parse(name, dtype, shape, single, timestamps, expected_count).to_message()
        info = self.store._unary("AddStreams", pb.AddStreamsRequest(job_id=self._id, streams=[spec]),
                                 f"AddStreams {name!r} to job {self._id!r}")
        self._update(info)
        return self._streams[name]

    def declare(self, spec: StreamSpec) -> RemoteStreamWriter:
        """Declare a stream from its declaration (as `add_stream` with its fields)."""
        return spec.declare(self)

    def stream(self, name: str) -> RemoteStreamWriter:
        """The writer of a declared stream (asks the server for streams declared elsewhere)."""
        if name not in self._streams:
            self._update(self.store._job_info(self._id))
        try:
            return self._streams[name]
        except KeyError:
            raise StreamNotFoundError(f"job {self._id!r} has no stream named {name!r}") from None

    @property
    def streams(self) -> dict[str, RemoteStreamWriter]:
        """The writers of the streams known to this handle, by name."""
        return dict(self._streams)

    def _transition(self, transition: pb.SetJobStateRequest.Transition, what: str) -> None:
        self.store._unary("SetJobState", pb.SetJobStateRequest(job_id=self._id, transition=transition),
                          f"{what} job {self._id!r}")

    def finish(self) -> None:
        """The job is done: every result was produced."""
        self._transition(_TRANSITION.FINISH, "finish")

    def cancel(self) -> None:
        """The job ended early (closed, not done)."""
        self._transition(_TRANSITION.CANCEL, "cancel")

    def mark_dataloss(self) -> None:
        """Flag that results of this job were lost (readers then get a data-loss error)."""
        self._transition(_TRANSITION.MARK_DATALOSS, "mark data loss of")

    def add_error(self, message: str, code: int = 0, severity: str = "error") -> None:
        """Record an execution error (`severity` "error" or "warning"); the job goes on."""
        e = ExecutionError.create(message, code, severity)
        error = pb.ExecutionError(code=e.code, severity=e.severity, message=e.message)
        self.store._unary("AddError", pb.AddErrorRequest(job_id=self._id, error=error),
                          f"AddError to job {self._id!r}")

    def describe(self, attrs: Mapping[str, Any] | None = None, coords: Mapping[str, Any] | None = None,
                 streams: Mapping[str, Any] | None = None, replace: bool = False) -> JobMetadata:
        """Describe the job's results, as `JobWriter.describe` (arguments checked here, the
        whole against the job's streams by the server). Returns the job's metadata."""
        return self.apply(change_of(attrs, coords, streams, replace))

    def apply(self, change: MetadataChange) -> JobMetadata:
        """Send a metadata change as `describe` builds it; returns what the server keeps."""
        return self.store.apply(self._id, change)

    def __repr__(self) -> str:
        return f"<RemoteJobWriter {self._id} at {self.store.address}>"


class RemoteStreamWriter:
    """Producer handle on one remote stream: `append(items)`.

    `count` is the count the server last acknowledged to this handle (it does not ask the server).
    """

    def __init__(self, job: RemoteJobWriter, spec: StreamSpec, count: int):
        self.job = job
        self.spec = spec
        self.name = spec.name
        self.layout: StreamLayout = spec.layout
        self.single = spec.single
        self.expected_count = spec.expected_count
        self._count = count

    @property
    def count(self) -> int:
        return self._count

    def append(self, items: Any) -> int:
        """Append items: an array of shape (n,)+shape, or one item. Returns the new count.

        Items are checked here (wrong dtype: `TypeError`, wrong shape: `ValueError`) before
        anything is sent; a `save` stream sends only its last item (the value it keeps).
        """
        arr = self.layout.pack(items, self.name)
        if self.single and len(arr) > 1:
            arr = arr[-1:]
        data = arr.reshape(-1).view(np.uint8).data
        timeout = self.job.store.timeout + len(data) / MIN_SEND_RATE
        what = f"AppendItems to stream {self.name!r} of job {self.job.id!r}"
        stub = self.job.store._producer()
        try:
            response = stub.AppendItems(self._messages(data, len(arr)), timeout=timeout,
                                        metadata=self.job.store.details.metadata)
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, what) from None
        for s in response.streams:
            if s.spec.name == self.name:
                self._count = int(s.count)
        return self._count

    def describe(self, dims: Any = None, units: str | None = None, long_name: str | None = None,
                 coords: Mapping[str, Any] | None = None) -> JobMetadata:
        """Describe this stream, as `StreamWriter.describe`; returns the job's metadata."""
        return self.job.apply(stream_change(self.name, dims, units, long_name, coords))

    def _messages(self, data: memoryview, n: int) -> Iterator[pb.AppendItemsRequest]:
        """Whole items in messages of about `MESSAGE_BYTES` (one item each if items are larger)."""
        job_id, name, size = self.job.id, self.name, self.layout.itemsize
        if n == 0:
            yield pb.AppendItemsRequest(job_id=job_id, stream=name, count=0, data=b"")
            return
        per_message = max(1, MESSAGE_BYTES // size)
        for first in range(0, n, per_message):
            last = min(n, first + per_message)
            yield pb.AppendItemsRequest(job_id=job_id, stream=name, count=last - first,
                                        data=bytes(data[first * size:last * size]))

    def __repr__(self) -> str:
        return f"<RemoteStreamWriter {self.job.id}/{self.name} count={self._count}>"
