"""`qm-xarray demo --relay`: the tour of the relay (docs/relay.md). An upstream server that stands
for a QOP, a relay that keeps a durable copy of its job while it runs (stopped and started again
half way), readers of the relay, and a check that the copy equals the upstream job byte for byte.
Its steps are in `RELAY_STEPS`, on the shared `RelayDemo` state. It paces the simulation by what
the readers of the relay have seen, never by the machine's speed, and every wait has a deadline."""

from __future__ import annotations

import argparse
import dataclasses
import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..client.connection import close_channels
from ..client.jobs import JobSummary
from ..errors import JobNotFoundError, QMTimeoutError, StreamProcessingDataLossError
from ..grpc_typing import ServerInterceptor
from ..origin import COMPLETE, INTERRUPTED
from ..producer import RemoteStore
from ..relay import Relay
from ..server.app import ResultsServer, serve
from ..server.store import Job as StoredJob
from ..server.store import JobState, ResultStore
from ..session import Connection, connect
from ..simulator import EXPERIMENTS
from .display import format_table, job_flags, job_fraction, stream_counts
from .simulate import simulation
from .tour import TRANCHES, Demo, demo_dir, free_path, tranche

__all__ = ["RELAY_STEPS", "RelayDemo", "relay_tour"]

WAIT_POLL_SECONDS = 0.02  # the relay tour looks this often for what it waits for (by a deadline)



class _Calls(ServerInterceptor):
    """Counts the calls a server receives, by service: what the relay tour says each server served."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        service = str(handler_call_details.method).strip("/").partition("/")[0].rpartition(".")[2]
        with self._lock:
            self.counts[service] += 1
        return continuation(handler_call_details)

    def readers(self) -> int:
        """Calls of readers: every service but the producers'."""
        with self._lock:
            return sum(n for service, n in self.counts.items() if service != "ProducerService")


@dataclass
class RelayDemo(Demo):
    """What the relay tour's steps share: `server` is the upstream (standing for a QOP)."""

    upstream_calls: _Calls = dataclasses.field(default_factory=_Calls)
    relay_calls: _Calls = dataclasses.field(default_factory=_Calls)
    relay_store: ResultStore | None = None
    relay_server: ResultsServer | None = None
    relay: Relay | None = None
    relay_conn: Connection | None = None
    reports: queue.Queue[tuple[str, str]] = dataclasses.field(default_factory=queue.Queue)
    outcome: str = ""             # how the capture ended: "complete", or "interrupted (REASON)"
    fetched: int = 0              # item bytes fetched from the upstream by the captures so far
    got: int = 0                  # item bytes the readers of the relay got
    view: JobSummary | None = None  # the copy, as a reader of the relay saw it last

    def on_change(self, job_id: str, status: str) -> None:
        """`Relay(on_change=...)`, from the relay's threads: kept until a step prints it (`told`)."""
        self.reports.put((job_id, status))

    def told(self, *wanted: str) -> str:
        """Print the relay's reports until one that starts with one of `wanted`, and return it
        (within --timeout): the steps print them in order, whatever the threads' timing."""
        deadline = time.monotonic() + self.args.timeout
        while True:
            try:
                job_id, status = self.reports.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise QMTimeoutError(f"demo: the relay did not report {' or '.join(wanted)} within "
                                     f"{self.args.timeout:g} s") from None
            self.say(f"    capture {job_id}: {status}")
            if status.startswith(wanted):
                return status

    @property
    def job_id(self) -> str:
        assert self.sim is not None and self.sim.job_id is not None
        return self.sim.job_id

    def upstream_job(self) -> StoredJob:
        assert self.server is not None
        return self.server.store.job(self.job_id)

    def copy(self) -> StoredJob:
        assert self.relay_store is not None
        return self.relay_store.job(self.job_id)

    def relay_job(self) -> Any:
        assert self.relay_conn is not None
        return self.relay_conn.job(self.job_id)


def _wait_for(check: Callable[[], Any], what: str, timeout: float) -> Any:
    """`check()`'s first true value, looked for every WAIT_POLL_SECONDS until `timeout` (seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise QMTimeoutError(f"demo: {what} did not happen within {timeout:g} s")
        time.sleep(WAIT_POLL_SECONDS)


def _item_bytes(job: StoredJob) -> int:
    return sum(s.count * s.layout.itemsize for s in job.streams.values())


def relay_upstream(d: RelayDemo) -> None:
    """The upstream: `qx.serve` of an in-memory store, standing for a QOP (only the relay reads it)."""
    d.server = serve(ResultStore(), interceptors=[d.upstream_calls])
    d.stack.callback(d.server.stop, None)
    d.next(f"upstream results server listening on {d.server.address} (it stands for a QOP: "
           f"only the relay reads it)")


def relay_simulate(d: RelayDemo) -> None:
    """The simulated experiment writes into the upstream, a quarter of the run at a time, each part
    released once the readers of the relay have seen the one before."""
    assert d.server is not None
    d.sim = simulation(d.args, RemoteStore(d.server.address, timeout=10.0))
    d.sim.allow(tranche(d.sim.n_steps))
    d.sim.start()
    d.stack.callback(d.sim.stop)
    exp = d.sim.experiment
    d.next(f"simulating {exp.name!r} ({EXPERIMENTS[exp.name]}) as job {d.sim.job_id} on the "
           f"upstream: {exp.n_steps} {exp.unit} at {d.sim.rate:g}/s")


def relay_start(d: RelayDemo) -> None:
    """The relay: a durable store, `qx.Relay(qx.connect(upstream), store, jobs=[job])`, served."""
    assert d.server is not None and d.out_dir is not None
    path = free_path(d.out_dir, "relay-store", "")
    d.relay_store = ResultStore(path=path)
    d.stack.callback(d.relay_store.close)
    upstream = connect(d.server.address)
    d.stack.callback(close_channels, upstream.details)
    d.relay_server = serve(d.relay_store, interceptors=[d.relay_calls])
    d.stack.callback(d.relay_server.stop, None)
    d.relay_conn = connect(d.relay_server.address)
    d.stack.callback(close_channels, d.relay_conn.details)
    d.next(f"relay: qx.Relay(qx.connect({d.server.address!r}), store, jobs=[{d.job_id!r}]) keeps a "
           f"durable copy in {path}, served on {d.relay_server.address} (qx.serve(store))")
    d.relay = Relay(upstream, d.relay_store, jobs=[d.job_id], on_change=d.on_change).start()
    d.stack.callback(lambda: d.relay.stop() if d.relay is not None else None)
    d.told("capturing")


def _show_copy(d: RelayDemo) -> JobSummary:
    """Wait until the simulation has written what it may and a reader of the relay sees all of it
    in the copy (or sees the copy ended); print what the reader saw, and return it."""
    sim = d.sim
    assert sim is not None
    timeout = d.args.timeout
    _wait_for(lambda: sim.steps_done >= sim.allowed or sim.state not in ("pending", "running"),
              f"the simulation's {sim.allowed} {sim.experiment.unit}", timeout)
    upstream = {name: s.count for name, s in d.upstream_job().streams.items()}

    def seen() -> JobSummary | None:
        try:
            view = d.relay_job().summary(timeout=5.0)
        except JobNotFoundError:  # the capture has not created the copy yet
            return None
        counts = {s.name: s.count for s in view.streams}
        caught_up = all(counts.get(name, -1) >= n for name, n in upstream.items())
        return view if caught_up or view.state != "running" else None

    view: JobSummary = _wait_for(seen, f"the copy of {sum(upstream.values())} items on the relay", timeout)
    d.view = view
    if not d.args.quiet:
        done, total = job_fraction(view)
        standing = view.origin.describe() if view.origin is not None else "not a copy"
        d.say(f"    {time.monotonic() - d.started:5.1f}s {view.state:8s} {done}/{total}: "
              f"{stream_counts(view)}; copy: {standing}")
    return view


def _sizes(ds: Any) -> str:
    return ", ".join(f"{dim} {n}" for dim, n in ds.sizes.items())


def relay_readers_while_running(d: RelayDemo) -> None:
    """Readers of the relay while the job runs: our JobsService (the counts, and the copy's
    standing: `conn.job(id).summary()`), then `xr.open_dataset` of the copy."""
    import xarray as xr

    assert d.relay_conn is not None
    d.next(f"readers of the relay while the job runs: qx.connect({d.relay_conn.details.target!r})"
           f".job({d.job_id!r}).summary(), then xr.open_dataset(job, engine=\"qm\")")
    view = _show_copy(d)
    ds = xr.open_dataset(d.relay_job(), engine="qm", on_dataloss="ignore").load()
    d.got += sum(int(v.nbytes) for v in ds.data_vars.values())
    d.say(f"    xr.open_dataset while the copy is {view.state}: {_sizes(ds)}; "
          f"qm_copy_of {ds.attrs.get('qm_copy_of', '-')}, qm_capture {ds.attrs.get('qm_capture', '-')}")


def relay_restart(d: RelayDemo) -> None:
    """The relay stopped half way, and a new one started on the same store: it resumes the copy from
    its counts (as `qm-xarray serve --upstream` does when started again after a crash)."""
    assert d.sim is not None and d.relay is not None and d.relay_store is not None
    d.sim.allow(2 * tranche(d.sim.n_steps))
    _show_copy(d)
    d.next("relay.stop(), then a new qx.Relay(upstream, store).start() on the same store: it resumes "
           "the copies that have not ended, from their counts")
    upstream = d.relay.upstream
    d.relay.stop()
    ended = d.told("stopped", COMPLETE, INTERRUPTED)
    result = d.relay.results().get(d.job_id)
    d.fetched += result.bytes if result is not None else 0
    d.relay = None
    copy = d.copy()
    held = sum(s.count for s in copy.streams.values() if not s.single)
    if ended != "stopped" or copy.state is not JobState.RUNNING:
        d.outcome = ended
        d.say(f"    the copy had already ended ({copy.state.value}, {held} items of save_all streams): "
              f"nothing to resume")
        return
    d.say(f"    stopped with {held} items of save_all streams in the copy")
    d.relay = Relay(upstream, d.relay_store, on_change=d.on_change).start()
    d.told("capturing")


def relay_until_done(d: RelayDemo) -> None:
    """The rest of the run, shown by a reader of the relay, until the capture ends."""
    assert d.sim is not None
    d.next(f"the rest of job {d.job_id}, read from the relay")
    for part in range(3, TRANCHES):
        if d.view is not None and d.view.state != "running":
            break
        d.sim.allow(part * tranche(d.sim.n_steps))
        _show_copy(d)
    d.sim.allow(d.sim.n_steps)
    if d.relay is not None:
        d.outcome = d.told(COMPLETE, INTERRUPTED)
        result = d.relay.results().get(d.job_id)
        d.fetched += result.bytes if result is not None else 0
    d.sim.join(10.0)  # re-raises a failure of the simulation itself
    d.job = d.relay_job().summary(timeout=10.0)
    standing = d.job.origin.describe() if d.job.origin is not None else "not a copy"
    d.say(f"    the copy on the relay: {d.job.state}{job_flags(d.job)}; capture {standing}")
    d.say(format_table(d.job))


def relay_readers(d: RelayDemo) -> None:
    """Readers of the finished copy: the results API and xarray, as they would read the QOP."""
    import xarray as xr

    res = d.relay_job().result_handles
    lost = []
    for name in res.keys():
        fetcher = res.get(name)
        assert fetcher is not None
        try:
            d.got += int(np.asarray(fetcher.fetch_all()).nbytes)
        except StreamProcessingDataLossError:  # as the upstream (and qm-qua) would say
            lost.append(name)
    ds = xr.open_dataset(d.relay_job(), engine="qm", on_dataloss="ignore").load()
    d.got += sum(int(v.nbytes) for v in ds.data_vars.values())
    d.next(f"readers of the relay: job.result_handles.get(name).fetch_all() of {', '.join(res.keys())}"
           + (f" ({', '.join(lost)}: StreamProcessingDataLossError, as from the upstream)" if lost else "")
           + f", and xr.open_dataset(job, engine=\"qm\") ({_sizes(ds)}; qm_capture "
           f"{ds.attrs.get('qm_capture', '-')})")


def relay_check(d: RelayDemo) -> None:
    """The copy equals the upstream job: every stream's items byte for byte, state, data loss,
    execution errors and metadata."""
    upstream, copy = d.upstream_job(), d.copy()
    differences = []
    if copy.state is not upstream.state:
        differences.append(f"state {copy.state.value} (upstream {upstream.state.value})")
    if copy.has_dataloss != upstream.has_dataloss:
        differences.append(f"data loss {copy.has_dataloss} (upstream {upstream.has_dataloss})")
    if copy.errors != upstream.errors:
        differences.append(f"{len(copy.errors)} execution errors (upstream {len(upstream.errors)})")
    if copy.metadata != upstream.metadata:
        differences.append("its metadata")
    if list(copy.streams) != list(upstream.streams):
        differences.append(f"streams {list(copy.streams)} (upstream {list(upstream.streams)})")
    for name, stream in upstream.streams.items():
        mine = copy.streams.get(name)
        if mine is None:
            continue
        if mine.layout != stream.layout or mine.count != stream.count:
            differences.append(f"stream {name}: {mine.count} items (upstream {stream.count})")
        elif _stream_bytes(mine) != _stream_bytes(stream):
            differences.append(f"stream {name}: other bytes")
    if differences or d.outcome != COMPLETE:
        what = "; ".join(differences) or f"the capture ended {d.outcome or 'without a result'}"
        raise RuntimeError(f"the relay's copy of job {d.job_id} differs from the upstream job: {what}")
    d.next(f"check: the relay's copy equals the upstream job: {len(copy.streams)} streams, "
           f"{_item_bytes(copy):,} bytes of items the same byte for byte, state {copy.state.value}, "
           f"data loss {'yes' if copy.has_dataloss else 'no'}, execution errors {len(copy.errors)}, "
           f"the same metadata; capture {d.outcome}")


def _stream_bytes(stream: Any) -> bytes:
    _, pieces = stream.read(0, stream.count)
    return b"".join(bytes(piece) for piece in pieces)


def relay_traffic(d: RelayDemo) -> None:
    """What the upstream served (one reader: the relay) against what the relay's readers got."""
    d.next(f"the upstream served one reader, the relay: {d.upstream_calls.readers()} calls, "
           f"{d.fetched:,} bytes of items; the relay's readers made {d.relay_calls.readers()} calls to the relay and "
           f"got {d.got:,} bytes of items, none of them from the upstream")


RELAY_STEPS: list[Callable[[RelayDemo], None]] = [relay_upstream, relay_simulate, relay_start,
                                                  relay_readers_while_running, relay_restart,
                                                  relay_until_done, relay_readers, relay_check,
                                                  relay_traffic]


def relay_tour(args: argparse.Namespace) -> int:
    with ExitStack() as stack:
        d = RelayDemo(args, sys.stdout, stack, out_dir=demo_dir(args.out))
        for step in RELAY_STEPS:
            step(d)
        store = d.relay_store
        assert store is not None and store.path is not None
    d.say(f"done in {time.monotonic() - d.started:.1f} s; files in {d.out_dir}:\n"
          f"    relay store: {store.path}   (serve it again: qm-xarray serve --store {store.path})")
    ok = d.sim is not None and d.sim.state == d.sim.planned_state
    return 0 if ok else 1
