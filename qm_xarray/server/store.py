"""ResultStore: jobs and their result streams, safe for concurrent use; in memory or on disk.

Producers append whole items; readers only ever see whole, published items. An append stores the
items past the published end (storage.py) and then publishes the new count, so readers never wait
on a writer and bytes once published never change (`save_all` streams). A `save` (single) stream
holds one running value that an append replaces atomically.

With `ResultStore(path=DIR)` every job lives on disk (durable.py): an acknowledged append survives
a crash of the server process (SIGKILL), and reopening the directory serves the old jobs.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from ..dtypes import StreamLayout
from ..errors import JobFinishedError, JobNotFoundError, QmValueError, StreamNotFoundError
from ..execution_errors import ExecutionError
from ..limits import MAX_COUNT
from ..metadata import JobMetadata, MetadataChange, as_change, change_of, names_of, stream_change
from ..origin import Origin
from ..streams import DEFAULT_DTYPE, StreamDeclarations, StreamSpec, declarations
from . import durable
from .storage import Items, MemoryItems, MemoryValue

__all__ = ["ResultStore", "Job", "JobWriter", "Stream", "StreamWriter", "JobState", "ExecutionError"]

JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class JobState(str, Enum):
    RUNNING = "running"
    DONE = "done"      # every result was produced
    CLOSED = "closed"  # ended before done: cancelled or failed


class Stream:
    """One named result stream of a job (read side); `spec` is its declaration."""

    def __init__(self, job: Job, spec: StreamSpec):
        self.job = job
        self.spec = spec
        self.name = spec.name
        self.layout = spec.layout
        self.single = spec.single
        self.expected_count = spec.expected_count
        self._itemsize = self.layout.itemsize
        self._items, self._value = job.store._storage_for(job.id, spec)
        self._count = (1 if self._value.value is not None else 0) if spec.single else self._items.count
        self._write_lock = threading.Lock()

    @property
    def count(self) -> int:
        """Number of published items (0 or 1 for a single stream)."""
        return self._count

    def read(self, start: int, stop: int) -> tuple[int, Iterable[memoryview]]:
        """Published items `[start, stop)` clipped to the count: (n_items, byte pieces, lazily)."""
        if self.single:
            value = self._value.value  # one atomic read: the value is replaced, never mutated
            if value is None or start >= 1 or stop <= start:
                return 0, []
            return 1, [memoryview(value)]
        stop = min(stop, self._count)
        if stop <= start:
            return 0, []
        return stop - start, self._items.read(start, stop)

    def read_array(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Published items as an array of `layout.item_dtype` (a copy; for tests and tools)."""
        n, pieces = self.read(start, self._count if stop is None else stop)
        raw = b"".join(pieces)
        return np.frombuffer(raw, dtype=self.layout.item_dtype, count=n).copy()

    def append(self, items: Any) -> int:
        """Append items (array of shape (n,)+shape, or one item); returns the new count."""
        return self.append_bytes(self.layout.pack(items, self.name).tobytes(), None)

    def append_bytes(self, data: bytes | memoryview, count: int | None) -> int:
        """Append packed item bytes (the wire layout); `count` is checked against the size."""
        size = self._itemsize
        nbytes = len(data)
        if nbytes % size:
            raise QmValueError(
                f"stream {self.name!r}: {nbytes} bytes is not a whole number of {size}-byte items"
            )
        n = nbytes // size
        if count is not None and count != n:
            raise QmValueError(f"stream {self.name!r}: count {count} does not match {n} items of data")
        with self._write_lock:
            self.job._check_open()
            if n == 0:
                return self._count
            if self.single:
                self._value.set(bytes(memoryview(data)[(n - 1) * size:]))
                self._count = 1
            else:
                if self._count + n > MAX_COUNT:
                    raise QmValueError(f"stream {self.name!r} would exceed {MAX_COUNT} items")
                self._items.write(memoryview(data).cast("B"), n, self._publish)
        self.job._touch()
        return self._count

    def _publish(self, count: int) -> None:
        self._count = count

    def _close(self) -> None:
        self._items.close()


class Job:
    """A job: ordered streams, state, data-loss flag and execution errors (read side).

    Its changes come through a `JobWriter`; `record()` is its plain form (what a durable store
    saves) and `Job.restore` rebuilds a job from one.
    """

    def __init__(self, store: ResultStore, job_id: str):
        self.store = store
        self.id = job_id
        self.created = time.time()
        self.updated = self.created
        self._streams: dict[str, Stream] = {}
        self._state = JobState.RUNNING
        self._dataloss = False
        self._errors: list[ExecutionError] = []
        self._metadata = JobMetadata()
        self._origin: Origin | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._version = 0
        self._save_lock = threading.Lock()  # one save at a time: the last one saved is the newest

    @classmethod
    def restore(cls, store: ResultStore, record: durable.JobRecord) -> Job:
        """The job that `record` describes, its streams reopened from the store's storage."""
        job = cls(store, record.id)
        job.created = record.created
        for spec in record.streams:
            job._add_stream(spec)
        job._state = JobState(record.state)
        job._dataloss = record.has_dataloss
        job._errors = list(record.errors)
        job._metadata = record.metadata
        job._origin = record.origin
        job.updated = record.updated
        return job

    def record(self) -> durable.JobRecord:
        """The job's metadata and stream declarations as plain values."""
        return durable.JobRecord(
            id=self.id, created=self.created, updated=self.updated, state=self._state.value,
            has_dataloss=self._dataloss, errors=tuple(self._errors),
            streams=tuple(s.spec for s in self._streams.values()), metadata=self._metadata,
            origin=self._origin)

    @property
    def streams(self) -> dict[str, Stream]:
        return dict(self._streams)

    def stream(self, name: str) -> Stream:
        try:
            return self._streams[name]
        except KeyError:
            raise StreamNotFoundError(f"job {self.id!r} has no stream named {name!r}") from None

    @property
    def state(self) -> JobState:
        return self._state

    @property
    def done(self) -> bool:
        return self._state is JobState.DONE

    @property
    def closed(self) -> bool:
        """True once the job has ended, done or not (no more results will come)."""
        return self._state is not JobState.RUNNING

    @property
    def has_dataloss(self) -> bool:
        return self._dataloss

    @property
    def metadata(self) -> JobMetadata:
        """What the job says of its results: axes, units, names and attributes (metadata.py)."""
        return self._metadata

    @property
    def origin(self) -> Origin | None:
        """On a relay, the upstream job this job is a copy of and how the copy stands."""
        return self._origin

    @property
    def errors(self) -> list[ExecutionError]:
        return list(self._errors)

    @property
    def has_execution_errors(self) -> bool:
        return any(e.is_error for e in self._errors)

    @property
    def version(self) -> int:
        """Increases on every change (append, state, error); see `wait_for_change`."""
        return self._version

    def wait_for_change(self, version: int, timeout: float | None) -> int:
        """Block until `version` is outdated or `timeout` passes; returns the current version."""
        with self._changed:
            self._changed.wait_for(lambda: self._version != version, timeout)
            return self._version

    def _touch(self) -> None:
        with self._changed:
            self._version += 1
            self.updated = time.time()
            self._changed.notify_all()

    def _check_open(self) -> None:
        if self._state is not JobState.RUNNING:
            raise JobFinishedError(f"job {self.id!r} is {self._state.value}; it takes no more results")

    def _add_stream(self, spec: StreamSpec) -> Stream:
        with self._lock:
            self._check_open()
            if spec.name in self._streams:
                raise QmValueError(f"job {self.id!r} already has a stream named {spec.name!r}")
            self._metadata.check({**self._specs(), spec.name: spec})  # a new name may clash
            stream = Stream(self, spec)
            self._streams = {**self._streams, spec.name: stream}
        self._changed_metadata()
        return stream

    def _specs(self) -> dict[str, StreamSpec]:
        return names_of(s.spec for s in self._streams.values())

    def _describe(self, change: MetadataChange) -> JobMetadata:
        """Make `change`, checked against the streams as a whole (refused: nothing changes).
        Metadata can be changed after the job has ended: it describes results, it adds none."""
        with self._lock:
            merged = self._metadata.apply(change)
            merged.check(self._specs())
            self._metadata = merged
        self._changed_metadata()
        return merged

    def _set_state(self, state: JobState, origin: Origin | None = None) -> None:
        """End the job (and with `origin`, say how its copy stands): one change, one save."""
        with self._lock:
            self._check_open()
            self._state = state
            if origin is not None:
                self._origin = origin
        self._changed_metadata()

    def _mark_dataloss(self) -> None:
        self._dataloss = True
        self._changed_metadata()

    def _add_error(self, error: ExecutionError) -> None:
        with self._lock:
            self._errors.append(error)
        self._changed_metadata()

    def _set_origin(self, origin: Origin) -> None:
        """Saved (and readers woken) when the copy's standing changes; a round's live figures
        (`checked`, `behind`) are only kept in memory: no file is rewritten per round."""
        standing_changed = not origin.same_standing(self._origin)
        self._origin = origin
        if standing_changed:
            self._changed_metadata()

    def _changed_metadata(self) -> None:
        with self._save_lock:  # the record is taken under it: a slower save never rolls back a newer
            self.store._save_job(self)
        self._touch()


class StreamWriter:
    """Producer handle on one stream: `append(items)`."""

    def __init__(self, stream: Stream):
        self.stream = stream

    @property
    def name(self) -> str:
        return self.stream.name

    @property
    def count(self) -> int:
        return self.stream.count

    @property
    def layout(self) -> StreamLayout:
        return self.stream.layout

    def append(self, items: Any) -> int:
        """Append items: an array of shape (n,)+shape, or one item. Returns the new count."""
        return self.stream.append(items)

    def describe(self, dims: Any = None, units: str | None = None, long_name: str | None = None,
                 coords: Mapping[str, Any] | None = None) -> JobMetadata:
        """Describe this stream: its dimension names (every axis, the item axis first for a
        `save_all` stream), the units and long name of its values, and coordinates along its
        axes (`JobWriter.describe` takes the same). Returns the job's metadata."""
        return self.stream.job._describe(stream_change(self.name, dims, units, long_name, coords))

    def __repr__(self) -> str:
        return f"<StreamWriter {self.stream.job.id}/{self.name} count={self.count}>"


class JobWriter:
    """Producer handle on a job: add streams, append, then finish / cancel."""

    def __init__(self, job: Job):
        self.job = job

    @property
    def id(self) -> str:
        return self.job.id

    def add_stream(self, name: str, dtype: Any = DEFAULT_DTYPE, shape: Any = (), single: bool = False,
                   timestamps: bool = False, expected_count: int = 0) -> StreamWriter:
        """Declare a stream. `shape` is the per-item buffer shape; `single` a `save` stream."""
        spec = StreamSpec.create(name, dtype, shape, single, timestamps, expected_count)
        return StreamWriter(self.job._add_stream(spec))

    def declare(self, spec: StreamSpec) -> StreamWriter:
        """Declare a stream from its declaration (checked as `add_stream` checks its arguments)."""
        return spec.declare(self)

    def stream(self, name: str) -> StreamWriter:
        return StreamWriter(self.job.stream(name))

    def finish(self) -> None:
        """The job is done: every result was produced."""
        self.job._set_state(JobState.DONE)

    def cancel(self) -> None:
        """The job ended early (closed, not done)."""
        self.job._set_state(JobState.CLOSED)

    def mark_dataloss(self) -> None:
        self.job._mark_dataloss()

    def describe(self, attrs: Mapping[str, Any] | None = None, coords: Mapping[str, Any] | None = None,
                 streams: Mapping[str, Any] | None = None, replace: bool = False) -> JobMetadata:
        """Describe the job's results (docs/metadata.md): free `attrs` (JSON values), `coords`
        (name -> `Coordinate`, 1-D values along the dimension of that name, or `(dim, values,
        {"units": ..., "long_name": ...})`) and `streams` (name -> {"dims", "units", "long_name"}).
        Merged into what is kept (a None value removes an entry), or replacing it all with
        `replace`; checked against the streams as a whole. Returns the job's metadata."""
        return self.apply(change_of(attrs, coords, streams, replace))

    def apply(self, change: MetadataChange) -> JobMetadata:
        """Make a metadata change as `describe` builds it (the producer service's seam)."""
        return self.job._describe(change)

    def add_error(self, message: str, code: int = 0, severity: str = "error") -> None:
        """Record an execution error (`severity` "error" or "warning"); the job goes on."""
        self.job._add_error(ExecutionError.create(message, code, severity))

    def set_origin(self, origin: Origin) -> None:
        """Say where this job is copied from and how the copy stands (the relay's seam)."""
        self.job._set_origin(origin)

    def end_copy(self, done: bool, origin: Origin) -> None:
        """End a relay's copy the way its upstream job ended (done, else closed) and say how the
        copy stands, in one change and one save: no reader, nor a crash, sees one without the other."""
        self.job._set_state(JobState.DONE if done else JobState.CLOSED, origin)

    def __repr__(self) -> str:
        return f"<JobWriter {self.id} {self.job.state.value}>"


class ResultStore:
    """Thread-safe container of jobs; pass it to `qx.serve` to serve it over gRPC.

    `ResultStore()` keeps everything in memory. `ResultStore(path=DIR)` keeps jobs on disk and
    serves the jobs already in DIR; `sync=True` also fsyncs every append (power-loss safe, slower).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, sync: bool = False):
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.path = None if path is None else Path(path)
        self.sync = sync
        self._closed = False
        self._lock_fd: int | None = None
        if self.path is not None:
            self._lock_fd = durable.open_store(self.path)
            for record in durable.load_records(self.path):
                self._jobs[record.id] = Job.restore(self, record)

    def close(self) -> None:
        """Release a durable store (its files and its lock); an in-memory store has nothing to do."""
        self._closed = True  # no job.json is written from now on
        if self._lock_fd is not None:
            for job in self._jobs.values():
                for stream in job.streams.values():
                    stream._close()
            durable.release(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "in memory" if self.path is None else str(self.path)
        return f"<ResultStore {where}: {len(self._jobs)} jobs>"

    def _storage_for(self, job_id: str, spec: StreamSpec) -> tuple[Items, MemoryValue]:
        if self.path is None:
            return MemoryItems(spec.item_bytes), MemoryValue()
        return durable.stream_storage(self.path, job_id, spec, self.sync)

    def _save_job(self, job: Job) -> None:
        if self.path is not None and job.id in self._jobs and not self._closed:
            durable.save_record(self.path, job.record(), self.sync)

    def create_job(self, job_id: str | None = None, streams: StreamDeclarations = (),
                   metadata: JobMetadata | Mapping[str, Any] | None = None,
                   origin: Origin | None = None) -> JobWriter:
        """Create a running job; `job_id` picks its id (else `job-N`).

        `streams` declares streams at once (`StreamSpec`s, or dicts of `JobWriter.add_stream`
        arguments with a "name", or a mapping name -> arguments), and `metadata` describes them
        (a `JobMetadata`, or `JobWriter.describe`'s arguments as a dict); all are validated
        before anything is created, so a bad one leaves no job behind. `origin` makes it a copy of
        an upstream job (a relay's), saved with it from the start.
        """
        specs = declarations(streams)
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise QmValueError(f"stream names must be unique, got {names}")
        change = as_change(metadata)
        described = JobMetadata().apply(change) if change is not None else JobMetadata()
        described.check(names_of(specs))
        with self._lock:
            if job_id is None:
                job_id = next(f"job-{n}" for n in self._ids if f"job-{n}" not in self._jobs)
            elif not isinstance(job_id, str) or not JOB_ID_PATTERN.match(job_id):
                raise QmValueError(
                    f"invalid job id {job_id!r}: 1-128 characters of letters, digits and . _ : -"
                )
            elif job_id in self._jobs:
                raise QmValueError(f"a job with id {job_id!r} already exists")
            job = Job(self, job_id)
            for spec in specs:
                job._add_stream(spec)
            job._metadata = described
            job._origin = origin
            self._jobs[job_id] = job
        self._save_job(job)
        return JobWriter(job)

    def job(self, job_id: str) -> Job:
        """The job with this id (raises `JobNotFoundError`)."""
        try:
            return self._jobs[job_id]
        except (KeyError, TypeError):
            raise JobNotFoundError(f"no job with id {job_id!r}") from None

    def writer(self, job_id: str) -> JobWriter:
        return JobWriter(self.job(job_id))

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())
