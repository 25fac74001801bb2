"""`Relay`: capture the jobs of one upstream server into a store, each in its own thread.

It captures the jobs it is told to (`jobs`, `add`), resumes every copy of this upstream's jobs the
store holds that has not ended (after a restart of the relay), and with `follow_new` every job the
upstream lists (QOP 3's job listing, our JobsService) that is running or appears later. An
interrupted copy is tried again every `retry` seconds: when the upstream comes back, it resumes.
Served with `qx.serve(store)` (or `qm-xarray serve --upstream`), the store's readers never reach
the upstream: it sees one reader, the relay.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..errors import QmQuaException, QmValueError
from ..origin import INTERRUPTED
from ..server.store import JobState, ResultStore
from ..session import Connection
from .capturing import STOPPED, Capture, CaptureResult

__all__ = ["Relay"]

log = logging.getLogger("qm_xarray.relay")


@dataclass
class _Worker:
    capture: Capture
    thread: threading.Thread
    result: CaptureResult | None = None
    ended: float = 0.0


class Relay:
    """Keeps copies of `upstream`'s jobs in `store` while they run (see the module docstring).

    `poll` is how often the upstream's job list is read (`follow_new`) and finished captures are
    looked at; `deadline`, `interval`, `max_interval` and `call_timeout` are each capture's (see
    `qx.capture`).
    `on_change(job_id, status)` is called as each capture starts ("capturing") and ends.
    """

    def __init__(self, upstream: Connection, store: ResultStore, *, jobs: Iterable[str] = (),
                 follow_new: bool = False, poll: float = 1.0, deadline: float = 60.0,
                 retry: float = 30.0, interval: float = 0.05, max_interval: float = 1.0,
                 call_timeout: float | None = None, on_change: Callable[[str, str], None] | None = None):
        self.upstream = upstream
        self.store = store
        self.follow_new = follow_new
        self.poll, self.deadline, self.retry = poll, deadline, retry
        self.interval, self.max_interval, self.call_timeout = interval, max_interval, call_timeout
        self._wanted: list[str] = list(dict.fromkeys(jobs))
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listed_at_start: set[str] | None = None
        self._supervisor: threading.Thread | None = None
        self._on_change = on_change

    @property
    def address(self) -> str:
        return self.upstream.details.target

    def start(self) -> Relay:
        """Resume the store's unfinished copies of this upstream's jobs, then start capturing.
        An unfinished copy of another upstream (or of this one, reached under another address)
        is left as it is, and `on_change` says so."""
        for job in self.store.jobs():
            origin = job.origin
            if origin is None or job.state is not JobState.RUNNING:
                continue
            if origin.upstream == self.address:
                self._wanted.append(job.id)
            elif job.id not in self._wanted:
                self._tell(job.id, f"not resumed: a copy of the job of {origin.upstream}, not of "
                                   f"{self.address} (start a relay with --upstream {origin.upstream})")
        self._supervisor = threading.Thread(target=self._supervise, name="qx-relay", daemon=True)
        self._supervisor.start()
        return self

    def add(self, job_id: str) -> None:
        """Capture this upstream job too (from the next round of the supervisor, within `poll`)."""
        with self._lock:
            if job_id not in self._wanted:
                self._wanted.append(job_id)

    def results(self) -> dict[str, CaptureResult | None]:
        """How each capture ended so far (None: still capturing)."""
        with self._lock:
            return {job_id: w.result for job_id, w in self._workers.items()}

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop every capture between two rounds (the copies stay resumable) and wait for them,
        for at most `timeout` seconds; True if all have stopped."""
        with self._lock:
            self._stop.set()  # under the lock: no capture starts after this
            workers = list(self._workers.values())
        for worker in workers:
            worker.capture.cancel()
        end = time.monotonic() + timeout
        if self._supervisor is not None:
            self._supervisor.join(max(0.0, end - time.monotonic()))
        for worker in workers:
            worker.thread.join(max(0.0, end - time.monotonic()))
        return not any(w.thread.is_alive() for w in workers)

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the supervisor --------------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._stop.is_set():
            try:
                if self.follow_new:
                    self._look_for_new_jobs()
            except QmQuaException as exc:
                log.warning("relay: cannot list the jobs of %s: %s", self.address, exc)
            with self._lock:
                wanted = list(self._wanted)
            for job_id in wanted:
                self._ensure(job_id)
            self._stop.wait(self.poll)

    def _look_for_new_jobs(self) -> None:
        listed = self.upstream.jobs(timeout=max(self.poll, 5.0))
        if self._listed_at_start is None:  # jobs that had ended before the relay started are left
            self._listed_at_start = {j.job_id for j in listed if j.state != "running"}
        for summary in listed:
            if summary.job_id not in self._listed_at_start:
                self.add(summary.job_id)

    def _ensure(self, job_id: str) -> None:
        """A capture of `job_id` runs, unless it is complete (or stopped), or interrupted and
        waiting for its next try."""
        worker = self._workers.get(job_id)
        if worker is not None:
            result = worker.result
            if result is None or result.status != INTERRUPTED:
                return
            if time.monotonic() - worker.ended < self.retry:
                return
        capture = Capture(self.upstream.job(job_id), self.store, interval=self.interval,
                          max_interval=self.max_interval, deadline=self.deadline,
                          call_timeout=self.call_timeout)
        thread = threading.Thread(target=self._run, args=(job_id,), name=f"qx-capture-{job_id}", daemon=True)
        with self._lock:
            if self._stop.is_set():
                return
            self._workers[job_id] = _Worker(capture, thread)
        log.info("relay: capturing job %s of %s", job_id, self.address)
        self._tell(job_id, "capturing")
        thread.start()

    def _run(self, job_id: str) -> None:
        worker = self._workers[job_id]
        try:
            result = worker.capture.run()
        except QmValueError as exc:  # the store refuses this copy (another upstream's...): for good
            result = CaptureResult(job_id, STOPPED, "running", {}, reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - one job's failure must not stop the relay
            log.exception("relay: the capture of job %s failed", job_id)
            result = CaptureResult(job_id, INTERRUPTED, "running", {}, reason=f"{type(exc).__name__}: {exc}")
        log.info("relay: job %s: %s", job_id, result.status + (f" ({result.reason})" if result.reason else ""))
        with self._lock:
            worker.result, worker.ended = result, time.monotonic()
        self._tell(job_id, result.status + (f" ({result.reason})" if result.reason else ""))

    def _tell(self, job_id: str, status: str) -> None:
        if self._on_change is not None:
            try:
                self._on_change(job_id, status)
            except Exception:  # noqa: BLE001 - a listener's failure is not the relay's
                log.exception("relay: on_change failed")
