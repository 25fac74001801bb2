"""Fixtures of the lazy-layer acceptance tests: a real server that records every RPC it receives.

`recorded` is one results server per test module (127.0.0.1, port 0) with a `RecordingInterceptor`;
its helpers turn the recorded data RPCs of every protocol version into `(stream, start, stop)`
half-open item ranges (`qm_xarray.testing.recording.request_ranges`), so a test can assert exactly which items a lazy operation asked for:

- v2 `GetNamedResult`: `long_offset.value` and `limit`;
- v2 `GetNamedResults` (multiple-streams fetching): one `range.from` / `range.to` (inclusive) per output;
- v1 `GetJobNamedResult`: `longOffset.value` and `limit`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import qm_xarray as qx
from qm_xarray.testing import RecordingInterceptor, embedded_server, our_streams_manager
from qm_xarray.testing.recording import DATA_METHODS, request_ranges

@dataclass
class Recorded:
    """A running server, its store and the recorder of the RPCs it received."""

    store: qx.ResultStore
    server: qx.ResultsServer
    rec: RecordingInterceptor

    @property
    def address(self) -> str:
        return self.server.address

    def job(self, job_id: str) -> qx.Job:
        """A Job handle through `qx.connect` (v2 with multiple-streams fetching)."""
        return qx.connect(self.address).job(job_id)

    def opener(self, how: str, job_id: str) -> Any:
        """What to pass to `xr.open_dataset`: "job" (qx.connect), or our StreamsManager in a mode."""
        if how == "job":
            return self.job(job_id)
        return our_streams_manager("127.0.0.1", self.server.port, job_id, how)

    def clear(self) -> None:
        self.rec.clear()

    def methods(self) -> list[str]:
        return self.rec.methods()

    def data_calls(self) -> list[tuple[str, Any]]:
        return [(m, r) for m, r in list(self.rec.calls) if m in DATA_METHODS]

    def ranges(self, stream: str | None = None) -> list[tuple[str, int, int]]:
        """Every item range asked for since the last `clear()`, in order of arrival."""
        out = [r for m, req in self.data_calls() for r in request_ranges(m, req)]
        return [r for r in out if stream is None or r[0] == stream]

    def spans(self, stream: str) -> list[tuple[int, int]]:
        """`(start, stop)` of the ranges asked for one stream, sorted."""
        return sorted((a, b) for _, a, b in self.ranges(stream))


@pytest.fixture(scope="module")
def recorded() -> Iterator[Recorded]:
    rec = RecordingInterceptor()
    store = qx.ResultStore()
    with embedded_server(store, interceptors=[rec]) as srv:
        yield Recorded(store, srv, rec)

