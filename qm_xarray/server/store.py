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
from pathlib import Path
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from ..dtypes import StreamLayout
from . import durable
from .storage import MemoryItems, MemoryValue
from ..errors import JobFinishedError, JobNotFoundError, QmValueError, StreamNotFoundError

__all__ = ["ResultStore", "Job", "JobWriter", "Stream", "StreamWriter", "JobState", "ExecutionError"]

JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
STREAM_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")
MAX_COUNT = 2**31 - 1  # counts are int32 on the wire


class JobState(str, Enum):
    RUNNING = "running"
    DONE = "done"      # every result was produced
    CLOSED = "closed"  # ended before done: cancelled or failed


@dataclass(frozen=True, slots=True)
class ExecutionError:
    message: str
    code: int = 0
    severity: str = "error"  # "error" or "warning"


def check_stream_spec(name: Any, expected_count: Any) -> None:
    """Validate a stream's name and expected count (raises `QmValueError`)."""
    if not isinstance(name, str) or not STREAM_NAME_PATTERN.match(name):
        raise QmValueError(f"invalid stream name {name!r}: use letters, digits and _ . : -")
    if isinstance(expected_count, bool) or not isinstance(expected_count, (int, np.integer)) \
            or not 0 <= int(expected_count) <= MAX_COUNT:
        raise QmValueError(f"stream {name!r}: expected_count must be an int in [0, {MAX_COUNT}]")


class Stream:
    """One named result stream of a job (read side)."""

    def __init__(self, job: Job, name: str, layout: StreamLayout, single: bool, expected_count: int):
        self.job = job
        self.name = name
        self.layout = layout
        self.single = single
        self.expected_count = expected_count
        self._itemsize = layout.itemsize
        self._items, self._value = job.store._storage_for(job.id, name, layout, single)
        self._count = (1 if self._value.value is not None else 0) if single else self._items.count
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
        close = getattr(self._items, "close", None)
        if close is not None:
            close()


class Job:
    """A job: ordered streams, state, data-loss flag and execution errors (read side)."""

    def __init__(self, store: ResultStore, job_id: str):
        self.store = store
        self.id = job_id
        self.created = time.time()
        self.updated = self.created
        self._streams: dict[str, Stream] = {}
        self._state = JobState.RUNNING
        self._dataloss = False
        self._errors: list[ExecutionError] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._version = 0

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
    def errors(self) -> list[ExecutionError]:
        return list(self._errors)

    @property
    def has_execution_errors(self) -> bool:
        return any(e.severity == "error" for e in self._errors)

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

    def _add_stream(self, name: str, layout: StreamLayout, single: bool, expected_count: int) -> Stream:
        check_stream_spec(name, expected_count)
        with self._lock:
            self._check_open()
            if name in self._streams:
                raise QmValueError(f"job {self.id!r} already has a stream named {name!r}")
            stream = Stream(self, name, layout, bool(single), int(expected_count))
            self._streams = {**self._streams, name: stream}
        self._changed_metadata()
        return stream

    def _set_state(self, state: JobState) -> None:
        with self._lock:
            self._check_open()
            self._state = state
        self._changed_metadata()

    def _mark_dataloss(self) -> None:
        self._dataloss = True
        self._changed_metadata()

    def _add_error(self, error: ExecutionError) -> None:
        with self._lock:
            self._errors.append(error)
        self._changed_metadata()

    def _changed_metadata(self) -> None:
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

    def __repr__(self) -> str:
        return f"<StreamWriter {self.stream.job.id}/{self.name} count={self.count}>"


class JobWriter:
    """Producer handle on a job: add streams, append, then finish / cancel."""

    def __init__(self, job: Job):
        self.job = job

    @property
    def id(self) -> str:
        return self.job.id

    def add_stream(self, name: str, dtype: Any = "<f8", shape: Any = (), single: bool = False,
                   timestamps: bool = False, expected_count: int = 0) -> StreamWriter:
        """Declare a stream. `shape` is the per-item buffer shape; `single` a `save` stream."""
        layout = StreamLayout.create(dtype, shape, timestamps)
        return StreamWriter(self.job._add_stream(name, layout, single, expected_count))

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

    def add_error(self, message: str, code: int = 0, severity: str = "error") -> None:
        """Record an execution error (`severity` "error" or "warning"); the job goes on."""
        if severity not in ("error", "warning"):
            raise QmValueError(f"severity must be 'error' or 'warning', got {severity!r}")
        self.job._add_error(ExecutionError(str(message), int(code), severity))

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
        self._lock_fd: int | None = None
        if self.path is not None:
            self._lock_fd = durable.open_store(self.path)
            for job in durable.load_jobs(self):
                self._jobs[job.id] = job

    def close(self) -> None:
        """Release a durable store (its files and its lock); an in-memory store has nothing to do."""
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

    def _storage_for(self, job_id: str, name: str, layout: StreamLayout, single: bool) -> tuple[Any, Any]:
        if self.path is None:
            return MemoryItems(layout.itemsize), MemoryValue()
        return durable.stream_storage(self.path, job_id, name, layout, single, self.sync)

    def _save_job(self, job: Job) -> None:
        if self.path is not None and job.id in self._jobs:
            durable.save_job(self.path, job, self.sync)

    def create_job(self, job_id: str | None = None, streams: Iterable[dict[str, Any]] = ()) -> JobWriter:
        """Create a running job; `job_id` picks its id (else `job-N`).

        `streams` declares streams at once (each a dict of `JobWriter.add_stream` arguments); all
        are validated before anything is created, so a bad one leaves no job behind.
        """
        specs = []
        for spec in streams:
            spec = dict(spec)
            name = spec.pop("name", None)
            layout = StreamLayout.create(spec.pop("dtype", "<f8"), spec.pop("shape", ()),
                                         spec.pop("timestamps", False))
            single, expected = bool(spec.pop("single", False)), spec.pop("expected_count", 0)
            if spec:
                raise QmValueError(f"stream {name!r}: unknown options {sorted(spec)}")
            check_stream_spec(name, expected)
            specs.append((name, layout, single, int(expected)))
        names = [s[0] for s in specs]
        if len(set(names)) != len(names):
            raise QmValueError(f"stream names must be unique, got {names}")
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
                job._add_stream(*spec)
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
