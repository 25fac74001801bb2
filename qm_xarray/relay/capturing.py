"""`qx.capture(job, store)`: keep a copy of one upstream job in a ResultStore while it runs.

A round asks the upstream for its streams' headers and fetches only the items the copy lacks (one
call each for all streams where the upstream fetches several at once), then appends them: whole
items only, each exactly once, since every round starts from the copy's own counts. That is also
how a capture resumes after a crash (kill -9) of its process: a durable store cuts a torn item
off when reopened, and the next capture starts from what is there.

State changes come pushed where the upstream pushes them (v2 `GetJobStatusUpdates`), else from one
state call per round; rounds back off (`interval` doubling to `max_interval`) while nothing comes.
When the upstream job has ended, a last round takes its final items, errors, data-loss flag and
metadata, and the copy ends the same way (done or closed) and is `complete`.

A failing upstream (down, restarting, forgetting the job) is retried until it has not answered
for `deadline` seconds; then the copy is marked `interrupted` (docs/relay.md) and `capture`
returns: the job is not ended, since nobody knows how it ended. Capturing it again resumes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..client import StreamSummary
from ..client.deadlines import check_timeout
from ..errors import QmQuaException, QmValueError
from ..limits import CAPTURE_ROUND_BYTES
from ..metadata import MetadataChange
from ..origin import COMPLETE, INTERRUPTED, Origin
from ..server.store import Job as StoredJob
from ..server.store import JobState, JobWriter, ResultStore
from ..session import Job, as_job
from ..streams import StreamSpec
from .upstream import StatusWatch, Upstream, Want

__all__ = ["capture", "Capture", "CaptureResult", "CopyNotKeptError", "STOPPED", "UpstreamMismatchError"]

log = logging.getLogger("qm_xarray.relay")

STOPPED = "stopped"  # a capture's outcome when asked to stop: the copy stays as it is, resumable
REFRESH_SECONDS = 2.0  # how often errors, metadata and (ours) new streams are read while running


@dataclass
class CaptureResult:
    """How a capture ended: `status` is "complete", "interrupted" or "stopped"."""

    job_id: str
    status: str
    state: str                      # the copy's job state: "running", "done" or "closed"
    counts: dict[str, int]          # items per stream in the copy
    rounds: int = 0                 # rounds that reached the upstream
    calls: int = 0                  # calls made to the upstream
    bytes: int = 0                  # item bytes fetched from the upstream
    reason: str = ""                # why it was interrupted


class UpstreamMismatchError(QmValueError):
    """The upstream job is not the one the copy holds (fewer items, other items where the copy
    ends, other stream layouts): not retried, the copy is interrupted at once."""


class CopyNotKeptError(QmValueError):
    """The relay's own store refused a write (disk full, a stream or metadata it cannot keep):
    not the upstream's fault and not retried; the copy is interrupted at once, saying so."""


def spec_of(stream: StreamSummary) -> StreamSpec:
    """The declaration under which the copy keeps an upstream stream (checked: `QmValueError`)."""
    return StreamSpec.create(stream.name, stream.dtype, stream.shape, stream.single, stream.timestamps,
                             stream.expected_count)


def _layout(s: StreamSpec | StreamSummary) -> tuple[str, tuple[int, ...], bool, bool]:
    """What must agree between a copy's stream and the upstream's for their items to be the same
    bytes: dtype, item shape, save or save_all, timestamps (dtype spelled as a store spells it)."""
    try:
        dtype = StreamSpec.create(s.name, s.dtype, s.shape, s.single, s.timestamps).dtype
    except QmValueError:
        dtype = f"unkept {s.dtype}"
    return dtype, tuple(s.shape), bool(s.single), bool(s.timestamps)


@contextmanager
def keeping(what: str) -> Iterator[None]:
    """A write to the relay's own store: its failure is `CopyNotKeptError`, never taken for the
    upstream's (which is waited out)."""
    try:
        yield
    except (QmQuaException, OSError) as exc:
        raise CopyNotKeptError(f"the relay's store could not {what}: {type(exc).__name__}: {exc}") from exc


class Capture:
    """One upstream job mirrored into `store` (see the module docstring); `run()` does it.

    `stop` (an Event) ends it between rounds with the copy resumable; `call_timeout` is the
    deadline of each upstream call (default: the shorter of 10 s and `deadline`).
    """

    def __init__(self, job: Any, store: ResultStore, *, interval: float = 0.05, max_interval: float = 1.0,
                 deadline: float = 60.0, call_timeout: float | None = None,
                 stop: threading.Event | None = None):
        self.source: Job = as_job(job)
        self.store = store
        self.interval = check_timeout(interval)
        self.max_interval = max(check_timeout(max_interval), self.interval)
        self.deadline = check_timeout(deadline)
        self.call_timeout = check_timeout(call_timeout) if call_timeout is not None else min(10.0, deadline)
        self.stop = stop if stop is not None else threading.Event()
        self.upstream: Upstream | None = None
        self.writer: JobWriter | None = None
        self._wake = threading.Event()  # set by `cancel` and by each status the upstream pushes
        self._watch: StatusWatch | None = None
        self._rounds = 0
        self._moved = False  # the last round appended something
        self._behind = 0  # items the upstream had after the last round that the copy has not
        self._refreshed = 0.0
        self._metadata_seen: Any = None

    @property
    def job_id(self) -> str:
        return self.source.id

    def cancel(self) -> None:
        """Stop at once (between rounds): sets `stop` and ends the pause between rounds."""
        self.stop.set()
        self._wake.set()

    # --- the loop ------------------------------------------------------------------------------

    def run(self) -> CaptureResult:
        """Capture until the job ends upstream (complete), the upstream is gone for longer than
        the deadline (interrupted) or `stop` is set (stopped)."""
        try:
            return self._run()
        finally:
            if self._watch is not None:
                self._watch.close()

    def _run(self) -> CaptureResult:
        existing = self._existing()
        if existing is not None and existing.state is not JobState.RUNNING:
            origin = existing.origin
            if origin is not None and origin.interrupted:  # ended by hand (qm-xarray close)
                result = self._result(STOPPED)
                result.reason = "the copy was ended on the relay before it was complete"
                return result
            if origin is not None and origin.status != COMPLETE:  # a store of an older relay
                JobWriter(existing).set_origin(origin.complete())  # only a capture ends a copy
            return self._result(COMPLETE)
        last_ok, backoff = time.monotonic(), self.interval
        while not self.stop.is_set():
            try:
                if self.upstream is None:
                    self.upstream = Upstream(self.source, self.call_timeout)
                if self.writer is None:
                    self.writer = self._open(existing)
                if self._watch is None and self.upstream.pushes:
                    self._watch = StatusWatch(self.upstream, self._wake, self.job_id)
                self._wake.clear()  # a push from now on wakes the pause after this round
                ended = self._round_and_maybe_finish()
                if ended is not None:
                    return ended
                last_ok = time.monotonic()
                backoff = self.interval if self._moved else min(backoff * 2, self.max_interval)
            except (UpstreamMismatchError, CopyNotKeptError) as exc:
                return self._interrupt(str(exc))
            except (QmQuaException, ConnectionError, TimeoutError) as exc:  # the upstream's failures
                silent = time.monotonic() - last_ok
                log.info("capture of %s: the upstream failed (%s); retrying", self.job_id, exc)
                if silent >= self.deadline:
                    return self._interrupt(f"the upstream {self._address} failed for {silent:.0f} s "
                                           f"(last: {type(exc).__name__}: {exc})")
                backoff = min(max(backoff, self.interval) * 2, self.max_interval)
            self._wake.wait(backoff)
        return self._result(STOPPED)

    def _round_and_maybe_finish(self) -> CaptureResult | None:
        """One round; when the upstream job has ended, the last rounds and the copy's end (its
        result; "stopped" if asked to stop before the copy holds everything)."""
        upstream = self.upstream
        assert upstream is not None
        ended = None
        refresh_due = time.monotonic() - self._refreshed >= REFRESH_SECONDS
        # pushed: ask for the state once the push says it ended (and now and then, should a
        # push go missing); else every round
        pushed_end = self._watch is not None and self._watch.ended
        if not upstream.pushes or pushed_end or refresh_due:
            state = upstream.state()
            ended = state if (state.done or state.closed) else None
        if ended is not None or refresh_due:
            self._refresh()  # first: a stream declared since is in this round
        self._round()
        if ended is None:
            return None
        while self._behind:  # a round takes at most CAPTURE_ROUND_BYTES: drain what is left
            if self.stop.is_set():
                return self._result(STOPPED)
            self._round()
        writer = self._writer
        with keeping("end the copy"):
            if ended.has_dataloss and not writer.job.has_dataloss:
                writer.mark_dataloss()
            writer.end_copy(ended.done, self._origin.complete())
        return self._result(COMPLETE)

    def _round(self) -> None:
        """Fetch the items the copy lacks (at most CAPTURE_ROUND_BYTES) and append them."""
        upstream, job = self.upstream, self._writer.job
        assert upstream is not None
        streams = job.streams
        headers = upstream.headers(list(streams))
        wants: list[Want] = []
        budget = CAPTURE_ROUND_BYTES
        behind = 0
        for name, header in headers.items():
            local = streams[name]
            if local.single:
                if header.count_so_far > 0:
                    wants.append((header, 0, 1))
                continue
            have = local.count
            if header.count_so_far < have:
                raise UpstreamMismatchError(
                    f"stream {name!r} of the upstream job has {header.count_so_far} items and the copy "
                    f"{have}: the upstream {self._address} no longer serves the job that was copied")
            behind += header.count_so_far - have
            take = min(header.count_so_far - have, max(1, budget // local.layout.itemsize))
            if take > 0:
                wants.append((header, have, have + take))
                budget -= take * local.layout.itemsize
        if any(h.has_dataloss for h in headers.values()) and not job.has_dataloss:
            with keeping("flag the data loss"):
                self._writer.mark_dataloss()
        moved = 0
        for name, (buffer, count) in upstream.fetch(wants).items():
            local = streams[name]
            size = local.layout.itemsize
            data = buffer.data[:count * size]
            if local.single:
                _, pieces = local.read(0, 1)
                if count and b"".join(pieces) == data.tobytes():
                    continue  # the same value as before: nothing to write
            else:
                behind -= count
            with keeping(f"append to stream {name!r}"):
                local.append_bytes(data, count)
            moved += count
        self._moved, self._behind = moved > 0, behind
        self._rounds += 1
        with keeping("note the copy's progress"):
            self._writer.set_origin(self._origin.progress(behind))

    def _refresh(self) -> None:
        """What changes rarely: execution errors, metadata and (our upstream) new streams."""
        upstream, writer = self.upstream, self._writer
        assert upstream is not None
        self._refreshed = time.monotonic()
        errors = upstream.errors()
        have = len(writer.job.errors)
        with keeping("add the execution errors"):
            for code, severity, message in errors[have:]:
                writer.add_error(message, code, severity)
        if not upstream.ours:
            return
        known = writer.job.streams
        new = [item for item in upstream.schema() if item.name not in known]
        if new:
            declared = upstream.declarations(new)
            with keeping("declare the upstream's new streams"):
                for s in declared:
                    writer.declare(spec_of(s))
        metadata = upstream.metadata()
        if metadata != self._metadata_seen:
            # merged: what the upstream says wins, and a description added on the relay stays
            with keeping("keep the upstream's metadata"):
                writer.apply(MetadataChange(metadata))
            self._metadata_seen = metadata

    # --- the copy ------------------------------------------------------------------------------

    def _existing(self) -> StoredJob | None:
        try:
            job = self.store.job(self.job_id)
        except QmQuaException:
            return None
        if job.origin is None:
            raise QmValueError(f"the store already holds a job {self.job_id!r} that is not a copy of an "
                               f"upstream job: capture into another store, or remove that job")
        if job.origin.upstream != self._address:
            raise QmValueError(f"the store's job {self.job_id!r} is a copy of the job of {job.origin.upstream}, "
                               f"not of {self._address}: capture into another store (a relay per upstream)")
        return job

    def _open(self, existing: StoredJob | None) -> JobWriter:
        """The copy: resumed from the store (once checked to be of the same job), or created from
        the upstream's schema."""
        upstream = self.upstream
        assert upstream is not None
        if existing is not None:
            self._check_same_job(existing)
            return JobWriter(existing)
        declared = upstream.declarations(upstream.schema())
        metadata = upstream.metadata()
        self._metadata_seen = metadata
        with keeping(f"keep a copy of job {self.job_id!r}"):
            return self.store.create_job(self.job_id, streams=[spec_of(s) for s in declared],
                                         metadata=metadata, origin=Origin(self._address, self.job_id))

    def _check_same_job(self, existing: StoredJob) -> None:
        """Before resuming: the upstream's streams are laid out as the copy's, and where the copy
        ends the upstream holds the same item (a server that reuses ids, e.g. ours in memory after
        a restart, may serve another job under the same id)."""
        upstream = self.upstream
        assert upstream is not None
        mine = existing.streams
        theirs = {s.name: s for s in upstream.declarations(upstream.schema()) if s.name in mine}
        for name, stream in mine.items():
            other = theirs.get(name)
            if other is not None and _layout(other) != _layout(stream.spec):
                raise UpstreamMismatchError(
                    f"stream {name!r} of the upstream job is laid out otherwise than the copy's "
                    f"({_layout(other)} vs {_layout(stream.spec)}): {self._address} serves another job "
                    f"under the id {self.job_id!r}")
        last = [(name, s) for name, s in mine.items() if not s.single and s.count and name in theirs]
        if not last:
            return
        headers = upstream.headers([name for name, _ in last])
        wants = [(headers[name], s.count - 1, s.count) for name, s in last
                 if headers[name].count_so_far >= s.count]
        for name, (buffer, count) in upstream.fetch(wants).items():
            stream = mine[name]
            _, pieces = stream.read(stream.count - 1, stream.count)
            if count != 1 or buffer.data[:stream.layout.itemsize].tobytes() != b"".join(pieces):
                raise UpstreamMismatchError(
                    f"item {stream.count - 1} of stream {name!r} differs between the upstream and the "
                    f"copy: {self._address} serves another job under the id {self.job_id!r}")

    @property
    def _address(self) -> str:
        return self.source.connection.details.target

    @property
    def _writer(self) -> JobWriter:
        assert self.writer is not None
        return self.writer

    @property
    def _origin(self) -> Origin:
        origin = self._writer.job.origin
        return origin if origin is not None else Origin(self._address, self.job_id)

    def _interrupt(self, reason: str) -> CaptureResult:
        log.info("capture of %s interrupted: %s", self.job_id, reason)  # the result says so too
        if self.writer is not None:
            try:
                self.writer.set_origin(self._origin.interrupt(reason))
            except (QmQuaException, OSError) as exc:  # e.g. the disk is full: the result still says so
                log.warning("capture of %s: could not mark the copy interrupted: %s", self.job_id, exc)
        result = self._result(INTERRUPTED)
        result.reason = reason
        return result

    def _result(self, status: str) -> CaptureResult:
        try:
            job = self.store.job(self.job_id)
        except QmQuaException:
            return CaptureResult(self.job_id, status, "running", {}, self._rounds)
        upstream = self.upstream
        return CaptureResult(self.job_id, status, job.state.value,
                             {name: s.count for name, s in job.streams.items()}, self._rounds,
                             upstream.calls if upstream else 0, upstream.bytes if upstream else 0,
                             job.origin.reason if job.origin is not None else "")


def capture(job: Any, store: ResultStore, *, interval: float = 0.05, max_interval: float = 1.0,
            deadline: float = 60.0, call_timeout: float | None = None,
            stop: threading.Event | None = None) -> CaptureResult:
    """Copy `job` (our Job, or qm-qua's job objects) into `store` while it runs, until it ends.

    Returns how it ended: "complete" (the copy equals the upstream job, ended the same way),
    "interrupted" (the upstream did not answer for `deadline` seconds; the copy says so) or
    "stopped" (`stop` was set). Run again on the same store to resume. docs/relay.md.
    """
    return Capture(job, store, interval=interval, max_interval=max_interval, deadline=deadline,
                   call_timeout=call_timeout, stop=stop).run()
