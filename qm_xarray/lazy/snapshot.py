"""JobSnapshot: the state of a job at one moment — per-stream counts and layouts, job state.

Everything lazy is built on a snapshot, so a growing job never changes an array already opened:
shapes are frozen at the snapshot's counts and reads never ask past them. The dask token of a
snapshot includes its counts, so a later snapshot of a grown job never reuses old graph keys.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from ..client import Header, JobResultApi, SchemaItem
from ..client._base import VERY_LONG_TIME, Backoff
from ..client.assembly import to_array
from ..session import Job, connect
from ..errors import QmKeyError, QMTimeoutError, QmTypeError, QmValueError
from ..results import MultipleStreamsFetcher, StreamsManager
from ..results.postprocess import postprocess_single
from .source import FetcherSource, ServiceSource, StreamSource

__all__ = ["JobSnapshot", "StreamSnapshot", "snapshot", "resolve_job"]


@dataclass(frozen=True)
class StreamSnapshot:
    schema: SchemaItem
    header: Header          # flat form, at snapshot time
    count: int
    value: Any = None       # `save` streams: the value read at snapshot time (flat form)

    @property
    def name(self) -> str:
        return self.schema.name

    @property
    def single(self) -> bool:
        return self.schema.is_single


@dataclass(frozen=True)
class JobSnapshot:
    job_id: str
    target: str
    streams: dict[str, StreamSnapshot]
    state: str               # "running", "done" or "closed"
    has_dataloss: bool
    errors: tuple[tuple[int, str, str], ...] = ()
    taken: str = ""          # ISO 8601 time of the snapshot
    snapshot_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    _sources: dict[str, StreamSource] = field(default_factory=dict, repr=False, compare=False)

    @property
    def final(self) -> bool:
        """True once the job has ended: the counts cannot grow any more."""
        return self.state != "running"

    @property
    def counts(self) -> dict[str, int]:
        return {name: s.count for name, s in self.streams.items()}

    def source(self, name: str) -> StreamSource:
        return self._sources[name]

    def __dask_tokenize__(self) -> object:
        identity = "final" if self.final else self.snapshot_id
        return ("qm_xarray.JobSnapshot", self.target, self.job_id,
                tuple(sorted(self.counts.items())), identity)


def resolve_job(obj: Any) -> Any:
    """A Job for a `qm://` string; our Job, our or a reference StreamsManager pass through."""
    if isinstance(obj, str):
        if not obj.startswith("qm://"):
            raise QmValueError(f"expected 'qm://HOST:PORT/JOB_ID', got {obj!r}")
        from ..client import parse_address

        _, _, job_id = parse_address(obj)
        if not job_id:
            raise QmValueError(f"{obj!r} names no job: expected 'qm://HOST:PORT/JOB_ID'")
        return connect(obj).job(job_id)
    if isinstance(obj, (Job, StreamsManager)) or _is_reference_manager(obj):
        return obj
    raise QmTypeError(f"cannot read results from {type(obj).__name__}: expected a qm_xarray Job, "
                      f"a StreamsManager or a 'qm://HOST:PORT/JOB_ID' string")


def _is_reference_manager(obj: Any) -> bool:
    return type(obj).__name__ == "StreamsManager" and hasattr(obj, "get") and hasattr(obj, "keys")


def snapshot(job: Any, *, streams: Sequence[str] | None = None, wait: int | str | None = None,
             timeout: float | None = None) -> JobSnapshot:
    """Take a snapshot of a job (our Job, a StreamsManager, or `qm://HOST:PORT/JOB_ID`).

    `wait=n` first waits until every selected `save_all` stream has n items, `wait="all"` until
    the job has ended; `timeout` bounds the wait (`QMTimeoutError`). On a v2 server with
    multiple-streams fetching this costs four RPCs whatever the number of streams: schema,
    state, all headers, and one data RPC for the current values of `save` streams.
    """
    job = resolve_job(job)
    if isinstance(job, Job):
        caps = job.connection.capabilities
        service = job.connection.service(job.id)
        known = None
    elif isinstance(job, StreamsManager):
        caps, service = job._capabilities, job._service
        known = [h._schema for h in job.values()]  # read when the manager was built: no RPC
    else:
        return _reference_snapshot(job, streams, wait, timeout)
    multiple = None
    if caps.supports_multiple_streams_fetching and isinstance(service, JobResultApi):
        multiple = MultipleStreamsFetcher(service)
    return _service_snapshot(service, multiple, streams, wait, timeout, known)


def _wait_counts(headers_of: Any, names: list[str], wait: int, deadline: float, job_id: str) -> None:
    if isinstance(wait, bool) or not isinstance(wait, int) or wait < 0:
        raise QmValueError(f"wait must be None, a count or 'all', got {wait!r}")
    backoff = Backoff(deadline)
    while True:
        short = [n for n, h in headers_of(names).items() if h.count_so_far < wait]
        if not short:
            return
        if not backoff.sleep():
            raise QMTimeoutError(f"job {job_id!r}: streams {short} have fewer than {wait} items")


def _wait_reference(manager: Any, names: list[str], singles: set[str], wait: int | str | None,
                    timeout: float | None) -> None:
    """`wait=` through the public API of any StreamsManager; its timeouts become QMTimeoutError."""
    if wait is None:
        return
    limit = VERY_LONG_TIME if timeout is None else timeout
    deadline = time.monotonic() + limit
    try:
        if wait == "all":
            manager.wait_for_all_values(limit)
        elif isinstance(wait, bool) or not isinstance(wait, int) or wait < 0:
            raise QmValueError(f"wait must be None, a count or 'all', got {wait!r}")
        else:
            for name in names:
                if name not in singles:
                    manager.get(name).wait_for_values(wait, max(deadline - time.monotonic(), 0.0))
    except TimeoutError as exc:
        if isinstance(exc, QMTimeoutError):
            raise
        raise QMTimeoutError(f"waiting for {wait!r}: {exc}") from None


def _select(available: list[str], streams: Sequence[str] | None) -> list[str]:
    if streams is None:
        return available
    unknown = [s for s in streams if s not in available]
    if unknown:
        raise QmKeyError(f"the job has no streams named {unknown}; it has {available}")
    return list(streams)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _service_snapshot(service: Any, multiple: MultipleStreamsFetcher | None,
                      streams: Sequence[str] | None, wait: int | str | None,
                      timeout: float | None, known: list[SchemaItem] | None = None) -> JobSnapshot:
    schema = {item.name: item for item in (service.get_schema() if known is None else known)}
    names = _select(list(schema), streams)
    singles = {n for n in names if schema[n].is_single}

    def headers_of(selected: list[str]) -> dict[str, Header]:
        if not selected:
            return {}
        if multiple is not None:
            return multiple.headers([(n, True) for n in selected])
        if len(selected) == 1:
            return {selected[0]: service.get_header(selected[0], True)}
        with ThreadPoolExecutor(min(8, len(selected))) as pool:
            return dict(zip(selected, pool.map(lambda n: service.get_header(n, True), selected)))

    limit = VERY_LONG_TIME if timeout is None else timeout
    if wait == "all":
        service.wait_until_done(limit)
    elif wait is not None:
        _wait_counts(headers_of, [n for n in names if n not in singles], wait,  # type: ignore[arg-type]
                     time.monotonic() + limit, service.job_id)
    state = service.get_state()  # before the headers: a final state means final counts
    headers = headers_of(names)
    values = _single_values(service, multiple, [headers[n] for n in names if n in singles])
    errors = tuple(service.get_errors()) if state.closed or state.done else ()
    version = 2 if isinstance(service, JobResultApi) else 1
    chunked = getattr(service, "supports_chunk_streaming", True)
    sources = {n: ServiceSource(service.connection_details, service.job_id, headers[n], version, chunked)
               for n in names}
    snaps = {n: StreamSnapshot(schema[n], headers[n], min(headers[n].count_so_far, 1) if n in singles
                               else headers[n].count_so_far, values.get(n)) for n in names}
    return JobSnapshot(service.job_id, service.connection_details.target, snaps,
                       "done" if state.done else "closed" if state.closed else "running",
                       state.has_dataloss, errors, _now(), _sources=sources)  # type: ignore[arg-type]


def _single_values(service: Any, multiple: Any, headers: list[Header]) -> dict[str, Any]:
    """The current value of each `save` stream (one data RPC for all on v2 multi-fetch servers)."""
    present = [h for h in headers if h.count_so_far > 0]
    if not present:
        return {}
    if multiple is not None:
        data = multiple.fetch([(h, 0, 1) for h in present])
    else:
        data = {h.name: service.fetch_range(h, 0, 1) for h in present}
    out = {}
    for h in present:
        buf, count = data[h.name]
        arr = to_array(buf, count, h)
        out[h.name] = np.asarray(postprocess_single(arr, True, h.name))
    return out


def _reference_snapshot(manager: Any, streams: Sequence[str] | None, wait: int | str | None,
                        timeout: float | None) -> JobSnapshot:
    """A snapshot through the public API of any StreamsManager (e.g. the reference client's)."""
    available = list(manager.keys())
    names = _select(available, streams)
    handles = {n: manager.get(n) for n in names}
    singles = {n for n, h in handles.items() if type(h).__name__.startswith("SingleStreamSingle")}
    _wait_reference(manager, names, singles, wait, timeout)
    processing = manager.is_processing()
    job_id = next(iter(handles.values())).job_id if handles else "unknown"
    snaps, sources = {}, {}
    dataloss = False
    for name, handle in handles.items():
        count = handle.count_so_far()
        empty = np.asarray(handle.strict_fetch(slice(0, 0), flat_struct=True))
        shape = tuple(empty.shape[1:]) or (1,)
        header = Header(name, count, _descr_json(empty.dtype), shape, False)
        dataloss = dataloss or handle.has_dataloss()
        value = np.asarray(handle.fetch_all(flat_struct=True)) if name in singles and count else None
        schema = SchemaItem(name, _descr_json(empty.dtype), name in singles, handle.expected_count,
                            shape)
        snaps[name] = StreamSnapshot(schema, header, min(count, 1) if name in singles else count, value)
        sources[name] = FetcherSource(handle, job_id, header)
    state = "running" if processing else "done"
    return JobSnapshot(job_id, "reference-client", snaps, state, dataloss, (), _now(),
                       _sources=sources)


def _descr_json(dtype: np.dtype) -> str:
    import json

    from numpy.lib import format as npy_format

    return json.dumps(npy_format.dtype_to_descr(dtype))


