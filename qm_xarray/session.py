"""`qx.connect(...)`: a Connection to a results server (ours or a QOP) that knows what the server
is, and its Jobs; `as_job` reads any job object a user holds (ours or qm-qua's) through it."""

from __future__ import annotations

import time
import uuid
import weakref
from collections.abc import Mapping
from functools import cached_property
from typing import Any

from . import _tokens
from .client import (
    ConnectionDetails,
    JobResultApi,
    JobResultServiceApi,
    JobsClient,
    JobSummary,
    ServerCapabilities,
    StreamSummary,
    config,
    discovery,
    qmqua,
)
from .client.connection import DEFAULT_TIMEOUT, TlsCredentials, TlsOption, split_host
from .client.deadlines import check_timeout
from .client.models import ServerInfo
from .client.qmm import QmmClient
from .errors import QmTypeError, QmValueError
from .metadata import JobMetadata, change_of
from .producer import RemoteStore
from .results import StreamsManager

__all__ = ["connect", "Connection", "Job", "as_job", "describe", "MetadataNotKeptError"]


# What each server said of itself, by connection details, while they are in use: a Connection made
# again from the same details (the lazy layer does, for a StreamsManager) asks no second time.
_KNOWN_SERVERS: weakref.WeakKeyDictionary[ConnectionDetails, ServerInfo] = weakref.WeakKeyDictionary()


class MetadataNotKeptError(QmTypeError):
    """The server keeps no metadata (a QOP): nothing was stored; the message says where it can be."""


def connect(host: Any, port: int | None = None, *, cluster_name: str | None = None,
            token: str | None = None, tls: TlsOption = None, headers: Mapping[str, str] | None = None,
            timeout: float | None = None, connect_timeout: float | None = None,
            follow_redirects: bool = True) -> Connection:
    """Connect to a results server (ours or a QOP) the way qm-qua does, and learn what it is.

    `host` is a host name, `"HOST:PORT"`, `"qm://HOST:PORT"`, our `ConnectionDetails`, or a
    qm-qua `QuantumMachinesManager` (its connection is reused, nothing is sent). Without a port,
    qm-qua's configured port and then 80 are tried. The first contact follows the gateway's
    redirect (`follow_redirects`) and asks `GetInfo`; it fails within `connect_timeout` (default:
    `timeout` if shorter, else 5 s or `$QM_XARRAY_CONNECT_TIMEOUT`) with one message that says
    what to do. `timeout` is the deadline of each later RPC (default 120 s). The token is
    `token`, else `$QM_XARRAY_TOKEN`, else qm-qua's `~/.qm/config.json`; `tls` is True, a CA
    (path or PEM bytes) or `TlsCredentials` (mutual TLS); `cluster_name` and `headers` are sent
    on every call with the gateway's headers.
    """
    if qmqua.kind_of(host) == "manager":
        found = qmqua.describe(host)
        return Connection(found.details, found.server)
    rpc_timeout = DEFAULT_TIMEOUT if timeout is None else check_timeout(timeout)
    first = config.connect_timeout(connect_timeout) if connect_timeout is not None or timeout is None \
        else min(rpc_timeout, config.connect_timeout())
    if isinstance(host, ConnectionDetails):
        details, server = discovery.first_contact(host, first, follow_redirects)
        return Connection(details, server)
    if not isinstance(host, str):
        raise QmTypeError(f"connect takes an address ('HOST:PORT'), ConnectionDetails or a qm-qua "
                          f"QuantumMachinesManager, got {type(host).__name__}")
    name, given, _ = split_host(host)
    if port is not None and given is not None and port != given:
        raise QmValueError(f"two ports for {host!r}: {given} in the address and port={port}")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
        raise QmValueError(f"port must be a number from 1 to 65535, got {port!r}")
    chosen = port if port is not None else given
    ports = [chosen] if chosen is not None else config.default_ports()
    secret, material = config.resolve_token(token), TlsCredentials.coerce(tls)
    for i, candidate in enumerate(ports):
        details = ConnectionDetails(name, candidate, token=secret, tls=material,
                                    headers=tuple((headers or {}).items()), timeout=rpc_timeout,
                                    cluster_name=cluster_name)
        try:
            reached, server = discovery.first_contact(details, first, follow_redirects)
        except discovery.ServerUnreachableError:
            if i == len(ports) - 1:
                raise
            continue
        return Connection(reached, server)
    raise AssertionError("no port to try")  # pragma: no cover - ports is never empty


class Connection:
    """A results server. Picklable: only the connection details and what the server said travel."""

    def __init__(self, details: ConnectionDetails, server: ServerInfo | None = None):
        self.details = details
        self._server = server if server is not None else _KNOWN_SERVERS.get(details)
        if server is not None:
            _KNOWN_SERVERS[details] = server

    @property
    def server(self) -> ServerInfo:
        """What the server said of itself at first contact (asked now if it was not yet, once per
        process for the same connection details)."""
        if self._server is None:
            self._server = discovery.detect(self.details, config.connect_timeout())
            _KNOWN_SERVERS[self.details] = self._server
        return self._server

    @property
    def capabilities(self) -> ServerCapabilities:
        """What the server advertises (`__qop3`: a QOP 3, read through the v2 services)."""
        return ServerCapabilities.build(self.server.capabilities)

    def service(self, job_id: str) -> JobResultServiceApi | JobResultApi:
        """The best results service for the server: v2 on QOP 3 servers, else v1."""
        caps = self.capabilities
        if caps.is_qop3:
            return JobResultApi(self.details, job_id, caps.supports_chunk_streaming)
        return JobResultServiceApi(self.details, job_id)

    def job(self, job_id: str) -> Job:
        """A handle on a job (nothing is fetched until you ask)."""
        return Job(self, job_id)

    def jobs(self, timeout: float | None = None) -> list[JobSummary]:
        """Every job on the server: with state and per-stream counts from our JobsService; from a
        QOP 3's job listing (`QmmService/GetJobs`), with state and times only (no streams)."""
        if self.server.is_qm_xarray:
            return JobsClient(self.details).list_jobs(timeout)
        if self.server.qop != 3:
            raise QmTypeError(f"the server at {self.details.target} (QOP 2) cannot list its jobs: "
                              f"name the job, connection.job(JOB_ID)")
        return [JobSummary(r.job_id, r.state, False, (), (), r.created, r.updated)
                for r in QmmClient(self.details).get_jobs((), timeout)]

    def close(self) -> None:
        """Close the connection: later calls through it raise `QMConnectionError`."""
        self.details.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"details": self.details, "server": self._server}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.details, self._server = state["details"], state.get("server")

    def __dask_tokenize__(self) -> object:
        return ("qm_xarray.Connection", self.details.__dask_tokenize__())

    def __repr__(self) -> str:
        return f"<Connection {self.details.target}>"


class Job:
    """A job on a results server: `.id`, `.result_handles` (a StreamsManager), `.summary()`."""

    def __init__(self, connection: Connection, job_id: str):
        self.connection = connection
        self.id = job_id

    @cached_property
    def result_handles(self) -> StreamsManager:
        """The job's StreamsManager (reads the schema once, on first access)."""
        return StreamsManager(self.connection.service(self.id), self.connection.capabilities, None)

    def __dask_tokenize__(self) -> object:
        """The identity of the last snapshot opened from this job (its counts; random while the
        job runs), so that two opens of a growing job never share dask names."""
        token = _tokens.token_of(self)
        return ("qm_xarray.Job", self.connection.details.target, self.id,
                token if token is not None else uuid.uuid4().hex)

    def summary(self, timeout: float | None = None) -> JobSummary:
        """State, data loss, errors and per-stream counts: one call of our JobsService, or on
        another server (a QOP) the results RPCs (schema, state, headers, errors)."""
        if self.connection.server.is_qm_xarray:
            return JobsClient(self.connection.details).get_job(self.id, timeout)
        return _summary_from_results(self.connection, self.id, timeout)

    def metadata(self, timeout: float | None = None) -> JobMetadata:
        """What the job says of its results (axes, units, attributes): kept by our server; a
        server without our service (a QOP) has none (empty, no RPC)."""
        if not self.connection.server.is_qm_xarray:
            return JobMetadata()
        return JobsClient(self.connection.details).get_metadata(self.id, timeout)

    def describe(self, attrs: Mapping[str, Any] | None = None, coords: Mapping[str, Any] | None = None,
                 streams: Mapping[str, Any] | None = None, *, replace: bool = False,
                 token: str | None = None, timeout: float | None = None) -> JobMetadata:
        """`qx.describe(self, ...)`."""
        return describe(self, attrs, coords, streams, replace=replace, token=token, timeout=timeout)

    def __getstate__(self) -> dict[str, Any]:
        return {"connection": self.connection, "id": self.id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.connection, self.id = state["connection"], state["id"]

    def __repr__(self) -> str:
        return f"<Job {self.id!r} on {self.connection.details.target}>"


def as_job(obj: Any) -> Job:
    """Our Job for a job a user holds: ours, or qm-qua's job object, StreamsManager or fetcher
    (read by our own client: picklable, deterministic dask names). No I/O, no import of qm-qua."""
    if isinstance(obj, Job):
        return obj
    found = qmqua.describe(obj)
    if found.job_id is None:
        raise QmTypeError(f"a {type(obj).__name__} holds no job: use qx.connect(qmm).job(JOB_ID)")
    return Connection(found.details, found.server).job(found.job_id)


def describe(job: Any, attrs: Mapping[str, Any] | None = None, coords: Mapping[str, Any] | None = None,
             streams: Mapping[str, Any] | None = None, *, replace: bool = False, token: str | None = None,
             timeout: float | None = None) -> JobMetadata:
    """Describe an existing job's results from the client side, as a producer's
    `job_writer.describe` does (docs/metadata.md): `attrs`, `coords` and `streams` are merged
    into what the server keeps (a None value removes an entry; `replace` starts from nothing).

    Goes through our producer service, so it takes the producer's token where the server asks
    for one (`token`, else the connection's). `job` is our Job or qm-qua's job object. A server
    without our service (a QOP) keeps no metadata: `MetadataNotKeptError`, nothing is stored.
    Returns what the server keeps.
    """
    target = as_job(job)
    change = change_of(attrs, coords, streams, replace)  # checked before any I/O
    if timeout is not None:
        check_timeout(timeout)
    details = target.connection.details
    if not target.connection.server.is_qm_xarray:
        raise MetadataNotKeptError(
            f"the server at {details.target} is not a qm-xarray server (a QOP?) and keeps no metadata; "
            f"nothing was stored. Keep it with a copy of the job on a qm-xarray relay (qm-xarray serve "
            f"--upstream {details.target} --store DIR --follow-new, then describe the job there), or "
            f"pass dims= and coords= when you open: xr.open_dataset(job, engine='qm', dims=..., "
            f"coords=...)")
    store = RemoteStore(details, token=token, timeout=timeout or details.timeout)
    return store.apply(target.id, change)


def _summary_from_results(connection: Connection, job_id: str, timeout: float | None) -> JobSummary:
    service = connection.service(job_id)
    schema = service.get_schema(timeout)
    state = service.get_state(timeout)
    if connection.capabilities.supports_multiple_streams_fetching and isinstance(service, JobResultApi):
        headers = service.get_headers([(item.name, True) for item in schema], timeout) if schema else {}
    else:
        headers = {item.name: service.get_header(item.name, True, timeout) for item in schema}
    streams = [StreamSummary.from_header(item, headers[item.name]) for item in schema]
    ended = state.done or state.closed
    errors = tuple(service.get_errors(timeout)) if ended else ()
    return JobSummary(job_id, "done" if state.done else "closed" if state.closed else "running",
                      state.has_dataloss, errors, tuple(streams), 0.0, time.time())
