"""The upstream side of a capture: one job read through our client, a round at a time.

`Upstream` picks the fewest calls the server allows: on a server that fetches several streams at
once (QOP 3, ours) a round is one headers call and one data call for all streams; elsewhere (QOP 2)
one of each per stream. State changes come pushed (v2 `GetJobStatusUpdates`, followed by a
`StatusWatch`) or, on a v1 server, from one state call per round.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np

from ..client import JobResultApi, JobsClient, StreamSummary
from ..client.api_v2 import FINAL_STATUSES
from ..client.models import Header, JobResultState, SchemaItem
from ..errors import QmQuaException, QMTimeoutError
from ..metadata import JobMetadata
from ..session import Job

__all__ = ["Upstream", "StatusWatch", "Want", "PUSH_WINDOW"]

PUSH_WINDOW = 10.0  # seconds one status-updates call is held before it is opened again

Want = tuple[Header, int, int]  # a stream's header and the item range [start, stop) asked for


class Upstream:
    """Reads one upstream job: schema, headers, item ranges, state, errors, metadata.

    `timeout` is the deadline of each call (short: a capture rides out a dead upstream by retrying
    rounds, not by waiting inside one). Counts what it fetched (`calls`, `bytes`).
    """

    def __init__(self, job: Job, timeout: float):
        self.job = job
        self.timeout = timeout
        connection = job.connection
        self.address = connection.details.target
        self.ours = connection.server.is_qm_xarray
        self.service = connection.service(job.id)
        self.pushes = isinstance(self.service, JobResultApi)
        self.multiple = self.pushes and connection.capabilities.supports_multiple_streams_fetching
        self.calls = 0
        self.bytes = 0

    def schema(self) -> list[SchemaItem]:
        self.calls += 1
        return self.service.get_schema(self.timeout)

    def headers(self, names: Sequence[str]) -> dict[str, Header]:
        """Flat headers of these streams: one call where the server allows, else one each."""
        if not names:
            return {}
        if self.multiple:
            assert isinstance(self.service, JobResultApi)
            self.calls += 1
            return self.service.get_headers([(n, True) for n in names], self.timeout)
        self.calls += len(names)
        return {n: self.service.get_header(n, True, self.timeout) for n in names}

    def declarations(self, schema: Sequence[SchemaItem]) -> list[StreamSummary]:
        """What each stream of `schema` is, from its header (dtype, shape, kind, count)."""
        headers = self.headers([item.name for item in schema])
        return [StreamSummary.from_header(item, headers[item.name]) for item in schema]

    def fetch(self, wants: Sequence[Want]) -> dict[str, tuple[np.ndarray, int]]:
        """The items asked for, as (uint8 buffer, whole items) per stream: one call where the
        server fetches several streams at once, else one per stream."""
        if not wants:
            return {}
        if self.multiple:
            assert isinstance(self.service, JobResultApi)
            self.calls += 1
            got = self.service.fetch_ranges(wants, self.timeout)
        else:
            self.calls += len(wants)
            got = {h.name: self.service.fetch_range(h, start, stop, self.timeout) for h, start, stop in wants}
        self.bytes += sum(int(buffer.nbytes) for buffer, _ in got.values())
        return got

    def state(self) -> JobResultState:
        self.calls += 1
        return self.service.get_state(self.timeout)

    def errors(self) -> list[tuple[int, str, str]]:
        self.calls += 1
        return self.service.get_errors(self.timeout)

    def metadata(self) -> JobMetadata:
        """The job's metadata where the upstream keeps it (our service), else empty (no call)."""
        if not self.ours:
            return JobMetadata()
        self.calls += 1
        return JobsClient(self.job.connection.details).get_metadata(self.job.id, self.timeout)

    def follow_status(self, on_status: Callable[[str], bool], window: float) -> None:
        """Pushed status changes for `window` seconds (v2 only; see `JobResultApi.follow_status`)."""
        assert isinstance(self.service, JobResultApi), "only a v2 server pushes status changes"
        self.service.follow_status(on_status, window)


class StatusWatch:
    """Follows the status changes a v2 upstream pushes, in a daemon thread: sets `wake` on each,
    and `ended` once the job has a final status. Failures are left to the capture's own calls
    (which decide when the upstream is gone); `close` ends it within `PUSH_WINDOW`."""

    def __init__(self, upstream: Upstream, wake: threading.Event, job_id: str):
        self.upstream, self.wake = upstream, wake
        self.status: str | None = None
        self._closed = threading.Event()
        threading.Thread(target=self._follow, name=f"qx-capture-status-{job_id}", daemon=True).start()

    @property
    def ended(self) -> bool:
        return self.status in FINAL_STATUSES

    def close(self) -> None:
        self._closed.set()

    def _follow(self) -> None:
        while not self._closed.is_set() and not self.ended:
            try:
                self.upstream.follow_status(self._on_status, PUSH_WINDOW)
            except QMTimeoutError:
                continue  # the window passed (or the upstream is away): open it again
            except QmQuaException:
                self._closed.wait(1.0)
                continue
            self._closed.wait(0.2)  # the server ended the stream: open it again

    def _on_status(self, status: str) -> bool:
        if status != self.status:
            self.status = status
            self.wake.set()
        return self.ended or self._closed.is_set()
