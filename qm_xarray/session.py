"""`qx.connect(address)`: a Connection that learns the server's capabilities, and its Jobs."""

from __future__ import annotations

import uuid
from functools import cached_property
from typing import Any

from . import _tokens
from .client import (
    ConnectionDetails,
    JobResultApi,
    JobResultServiceApi,
    JobsClient,
    JobSummary,
    QopCaps,
    ServerCapabilities,
)
from .client.connection import DEFAULT_TIMEOUT
from .errors import QMConnectionError
from .results import StreamsManager

__all__ = ["connect", "Connection", "Job"]


def connect(address: str | ConnectionDetails, *, token: str | None = None, tls: bool | str | bytes = False,
            headers: dict[str, str] | None = None, timeout: float = DEFAULT_TIMEOUT) -> Connection:
    """Connect to a results server at `host:port` (or `qm://host:port`). Nothing is sent yet."""
    if isinstance(address, ConnectionDetails):
        return Connection(address)
    details = ConnectionDetails.from_address(address, token=token, tls=tls,
                                             headers=headers or {}, timeout=timeout)
    return Connection(details)


class Connection:
    """A results server. Picklable: only the connection details travel."""

    def __init__(self, details: ConnectionDetails):
        self.details = details

    @cached_property
    def capabilities(self) -> ServerCapabilities:
        """What the server advertises; a server without our JobsService is taken for QOP 2 (v1)."""
        try:
            info = JobsClient(self.details).server_info()
        except QMConnectionError as exc:
            if "UNIMPLEMENTED" not in str(exc):
                raise
            return ServerCapabilities({QopCaps.job_streaming_state})
        return ServerCapabilities.build(info.capabilities)

    def service(self, job_id: str) -> JobResultServiceApi | JobResultApi:
        """The best results service for the server: v2 on QOP 3 servers, else v1."""
        caps = self.capabilities
        if caps.is_qop3:
            return JobResultApi(self.details, job_id, caps.supports_chunk_streaming)
        return JobResultServiceApi(self.details, job_id)

    def job(self, job_id: str) -> Job:
        """A handle on a job (nothing is fetched until you ask)."""
        return Job(self, job_id)

    def jobs(self) -> list[JobSummary]:
        """Every job on the server, with state and per-stream counts."""
        return JobsClient(self.details).list_jobs()

    def close(self) -> None:
        """Close the connection: later calls through it raise `QMConnectionError`."""
        self.details.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"details": self.details}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.details = state["details"]

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

    def summary(self) -> JobSummary:
        """State, data loss, errors and per-stream counts (our JobsService)."""
        return JobsClient(self.connection.details).get_job(self.id)

    def __getstate__(self) -> dict[str, Any]:
        return {"connection": self.connection, "id": self.id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.connection, self.id = state["connection"], state["id"]

    def __repr__(self) -> str:
        return f"<Job {self.id!r} on {self.connection.details.target}>"
