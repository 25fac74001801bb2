"""JobSnapshot: the state of a job at one moment — per-stream counts and layouts, job state.

Everything lazy is built on a snapshot, so a growing job never changes an array already opened:
shapes are frozen at the snapshot's counts and reads never ask past them. The dask token of a
snapshot includes its counts, so a later snapshot of a grown job never reuses old graph keys.

A job of a relay (docs/relay.md) that is a copy of an upstream job says so when its metadata is
read: `JobSnapshot.origin` (the upstream, and how the copy stands); the datasets built from it
carry that in their attrs, and an interrupted copy warns (`CaptureInterruptedWarning`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from dask.base import normalize_token

from .. import _tokens
from ..client import Header, JobResultApi, SchemaItem, qmqua
from ..client.assembly import to_array
from ..client.deadlines import VERY_LONG_TIME, poll
from ..errors import QmKeyError, QmTypeError, QmValueError
from ..metadata import JobMetadata
from ..origin import Origin
from ..results import MultipleStreamsFetcher, StreamsManager
from ..results.postprocess import postprocess_single
from ..session import Connection, Job, as_job, connect
from .source import ServiceSource, StreamSource

__all__ = ["JobSnapshot", "StreamSnapshot", "snapshot", "resolve_job", "default_streams", "metadata_of",
           "origin_of", "CaptureInterruptedWarning"]


class CaptureInterruptedWarning(UserWarning):
    """A dataset of a relay's copy whose capture was interrupted: the upstream could not be
    reached (or forgot the job), so the data stops where the copy stopped, and the job reads as
    running although nobody knows how it ended (docs/relay.md)."""


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
    metadata: JobMetadata = field(default_factory=JobMetadata, compare=False)  # axes, units, attrs
    # on a relay, read with the metadata: the upstream job this job is a copy of, and its standing
    origin: Origin | None = field(default=None, compare=False)
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


def resolve_job(obj: Any, timeout: float | None = None) -> Job | StreamsManager:
    """What the lazy layer reads: our Job or StreamsManager as given; a Job for a `qm://` string
    (connecting within `timeout`) and for qm-qua's job objects, StreamsManagers and fetchers,
    which are read by our own client (no I/O here for those)."""
    if isinstance(obj, (Job, StreamsManager)):
        return obj
    if isinstance(obj, str) and obj.startswith("qm://"):
        from ..client import parse_address

        _, _, job_id = parse_address(obj)
        if not job_id:
            raise QmValueError(f"{obj!r} names no job: expected 'qm://HOST:PORT/JOB_ID'")
        return connect(obj, connect_timeout=timeout).job(job_id)
    if qmqua.kind_of(obj) in ("job", "streams", "fetcher"):
        return as_job(obj)
    if isinstance(obj, (str, os.PathLike)) and _is_zarr_store(obj):
        raise QmValueError(f"{os.fspath(obj)!r} is a zarr store (an export?): open it with "
                           f"xr.open_zarr({os.fspath(obj)!r}), not with engine 'qm'")
    raise QmTypeError(f"cannot read results from {type(obj).__name__}: expected a job (qx.connect(...)"
                      f".job(id), or qm-qua's job from qm.execute / qmm.get_job), a StreamsManager "
                      f"(job.result_handles), or a 'qm://HOST:PORT/JOB_ID' string")


def _register_qm_qua() -> None:
    """Deterministic dask names for qm-qua's objects opened with the engine (dask calls this the
    first time it tokenizes an object of qm-qua, which is therefore imported already)."""
    from qm._stream_results._single_stream_fetchers import BaseSingleStreamFetcher
    from qm._stream_results._streams_manager import StreamsManager as QmStreamsManager
    from qm.api.v2.job_api.job_api import JobApi
    from qm.jobs.base_job import QmBaseJob

    def _normalize(obj: Any) -> object:
        found = qmqua.describe(obj)
        token = _tokens.token_of(obj)
        return ("qm-qua", found.kind, found.details.target, found.job_id, found.stream,
                token if token is not None else uuid.uuid4().hex)

    normalize_token.register((JobApi, QmBaseJob, QmStreamsManager, BaseSingleStreamFetcher))(_normalize)


normalize_token.register_lazy("qm")(_register_qm_qua)  # on the first qm-qua object tokenized


def _is_zarr_store(path: str | os.PathLike[str]) -> bool:
    root = Path(path)
    return root.is_dir() and any((root / name).exists() for name in ("zarr.json", ".zgroup"))


def default_streams(obj: Any) -> list[str] | None:
    """The streams to open when none are named: a qm-qua fetcher's own stream, else all."""
    return [str(obj.name)] if qmqua.kind_of(obj) == "fetcher" else None


def snapshot(job: Any, *, streams: Sequence[str] | None = None, wait: int | str | None = None,
             timeout: float | None = None, metadata: bool = True) -> JobSnapshot:
    """Take a snapshot of a job (see `resolve_job` for what is accepted).

    `wait=n` first waits until every selected `save_all` stream has n items, `wait="all"` until
    the job has ended; `timeout` bounds the wait (`QMTimeoutError`). On a v2 server with
    multiple-streams fetching this costs four RPCs whatever the number of streams: schema,
    state, all headers, and one data RPC for the current values of `save` streams; on our server
    a fifth asks for the job's metadata and a sixth whether it is a relay's copy (`origin`; a
    QOP is asked neither; `metadata=False`: not asked).
    """
    job = resolve_job(job, timeout)
    if isinstance(job, Job):
        caps = job.connection.capabilities
        service = job.connection.service(job.id)
        known = None
    else:
        caps, service = job.server_capabilities, job.results_service
        known = [h.schema_item for h in job.values()]  # read when the manager was built: no RPC
    multiple = None
    if caps.supports_multiple_streams_fetching and isinstance(service, JobResultApi):
        multiple = MultipleStreamsFetcher(service)
    snap = _service_snapshot(service, multiple, streams, wait, timeout, known)
    if not metadata:
        return snap
    return replace(snap, metadata=metadata_of(job, timeout), origin=origin_of(job, timeout))


def metadata_of(job: Job | StreamsManager, timeout: float | None = None) -> JobMetadata:
    """The stored metadata of a job (`resolve_job`'s result): empty from a server that keeps none."""
    return _our_job(job).metadata(timeout)


def origin_of(job: Job | StreamsManager, timeout: float | None = None) -> Origin | None:
    """The upstream job that a job (`resolve_job`'s result) of a relay is a copy of, and how the
    copy stands; None for any other job. One `GetJob` of our JobsService; no call to a QOP."""
    ours = _our_job(job)
    if not ours.connection.server.is_qm_xarray:
        return None
    return ours.summary(timeout).origin


def _our_job(job: Job | StreamsManager) -> Job:
    if isinstance(job, Job):
        return job
    service = job.results_service
    return Connection(service.connection_details).job(service.job_id)


def _wait_counts(headers_of: Any, names: list[str], wait: int | str, timeout: float, job_id: str) -> None:
    if isinstance(wait, bool) or not isinstance(wait, int) or wait < 0:
        raise QmValueError(f"wait must be None, a count or 'all', got {wait!r}")
    short: list[str] = []

    def enough(left: float) -> bool | None:
        short[:] = [n for n, h in headers_of(names).items() if h.count_so_far < wait]
        return True if not short else None

    poll(enough, timeout, lambda: f"job {job_id!r}: streams {short} have fewer than {wait} items")


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
        _wait_counts(headers_of, [n for n in names if n not in singles], wait, limit, service.job_id)
    state = service.get_state()  # before the headers: a final state means final counts
    headers = headers_of(names)
    values = _single_values(service, multiple, [headers[n] for n in names if n in singles])
    errors = tuple(service.get_errors()) if state.closed or state.done else ()
    sources: dict[str, StreamSource] = {n: ServiceSource(service, headers[n]) for n in names}
    snaps = {n: StreamSnapshot(schema[n], headers[n], min(headers[n].count_so_far, 1) if n in singles
                               else headers[n].count_so_far, values.get(n)) for n in names}
    return JobSnapshot(service.job_id, service.connection_details.target, snaps,
                       "done" if state.done else "closed" if state.closed else "running",
                       state.has_dataloss, errors, _now(), _sources=sources)


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
