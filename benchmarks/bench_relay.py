"""The relay (docs/relay.md): upstream bytes with many readers, capture lag, and the throughput of a
captured job, all measured in one run.

Processes (each its own, all on 127.0.0.1, port 0):

- the upstream: this file run as a script (`python bench_relay.py upstream NBYTES`): a `qx.serve`
  of an in-memory `qx.ResultStore` holding job `big` (finished; one float64 stream `data` of
  NBYTES // 8 items, `_servers.values`, 128 MiB by default; its CRC-32 is in the child's first
  line) and job `live` (running; one float64 stream `t`, empty until the lag phase). Every gRPC
  response message it sends is counted per method by `bench_live.ResponseBytesInterceptor` (the
  serialized messages, after the handlers' serializers: every RPC, data and control; HTTP/2 framing
  and headers not included), reset and read over the child's stdin (`reset`, `counts`);
- the relays: `qm-xarray serve --store DIR --upstream 127.0.0.1:PORT --job ID` (the CLI: a durable
  `qx.ResultStore` in a temporary directory, filled by a `qx.Relay`, served by `qx.serve`), started
  with `qm_xarray.testing.processes.ServerProcess`: relay A (`--job big`) for the fan-out and the
  throughput, relay B (`--job live`) for the lag, each on its own store directory, so that no
  capture but the one measured talks to the upstream in a phase; and, for the throughput, a plain
  `qm-xarray serve --store DIR` of a copy of relay A's directory;
- 8 readers: this file run as a script (`reader`), started (interpreter and imports) before any
  counting; on `read ADDRESS JOB STREAM` each connects (`qx.connect`), waits until the job exists
  (`summary()`, for a copy the relay has not created yet), `result_handles.wait_for_all_values()`,
  then `result_handles[STREAM].fetch_all(flat_struct=True)`, and replies the item count, byte
  count and CRC-32 of what it received (checked by the parent against the upstream's).

Phases, in this order, in one run:

1. Fan-out, direct: the counters reset; the 8 readers read `big` from the upstream at once;
   the upstream's response bytes are read. Fan-out, relay: the counters reset; relay A starts
   (its connection to the upstream and every capture call count); the 8 readers are told at once to
   read `big` from relay A (they wait for its copy to be complete, then read it); after every
   reader replied and relay A printed `capture big: complete`, the counts are read. Figures: all
   response bytes the upstream sent over the job's bytes (`ratio`; the target is 1.0 with the relay,
   against 8.0 directly); the data RPCs' bytes alone beside them. Checked: every reader got every
   item and the upstream's CRC-32; with the relay, the upstream's data bytes are at least the job's
   (the copy came from it), the copy's summary on relay A is `done` with origin `complete`.
2. Throughput of the finished copy: `fetch_all(flat_struct=True)` of `big`/`data` from relay A (the
   relay process that captured it, serving it from its durable store), from `store` (a copy of
   relay A's store directory, served by a fresh `qm-xarray serve --store DIR`: the same files
   without the capture's history in the process) and `direct` (the upstream, memory), through the
   same client path (`qx.connect(address).job("big").result_handles["data"]`, built once), in
   this process, interleaved rounds with the order rotated each round, after one unmeasured warm-up
   round (`_jobs.interleave`); GB/s = 1e9 bytes/s of the best round, and the ratios to direct
   (best/best and the median of per-round ratios; target relay/direct >= 0.9). Every fetch's
   length and CRC-32 are checked (outside the timing). CPU per fetch of this process and of each
   server (/proc, 10 ms ticks), and each server's minor page faults per fetch (its count over the
   whole interleave, warm-up included, over its fetches; the servers are idle otherwise).
3. Capture lag: relay B starts following `live`; once its copy exists, the upstream appends one
   primer item (index 0) and, when the relay shows it, a thread in the upstream child appends items
   1..N (N = 200, one float64 each, the value its index) every PERIOD (25 ms) on a fixed schedule,
   noting the monotonic time (system-wide on Linux) just before each append, then finishes the job.
   This process polls relay B with `qx.connect(relay).job("live").summary()` (our JobsService: one
   RPC), pausing 2 ms between polls, and notes for each index the time the first reply that counted
   it arrived (an upper bound: it includes the poll's RPC and pause). Lag of item k = that time -
   its append time; p50, p95 and max over items 1..N. The relay's capture polls the upstream every
   50 ms (`qx.capture`'s default `interval`, doubling to 1 s while rounds find nothing; the CLI
   has no option for it): an item waits for the next round, so lags up to about one interval plus
   a round are expected. Checked: every index was
   seen, never before its append; the copy's values equal the upstream's and it ended `complete`.

asv: `Relay.track_*` (measured once in `setup_cache`). Script: `python -m benchmarks.bench_relay
[--rounds N] [--readers N] [--appends N] [--period S] [--mib N] [--dir DIR]` prints every figure.
Stores go under the system's temporary directory (a disk, as a relay's would), or `--dir` /
`QX_BENCH_RELAY_DIR`; removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any, Self

try:
    from . import _jobs, _servers, bench_live
except ImportError:  # asv imports benchmark files from the benchmark directory; the children too
    import _jobs  # type: ignore[no-redef,import-not-found]
    import _servers  # type: ignore[no-redef,import-not-found]
    import bench_live  # type: ignore[no-redef,import-not-found]

MiB = 1024 * 1024
NBYTES = 128 * MiB
BIG_JOB, BIG_STREAM = "big", "data"
LIVE_JOB, LIVE_STREAM = "live", "t"
READERS = 8
ROUNDS = 6                # throughput rounds (plus one warm-up round); asv and the script
APPENDS = 200             # paced appends of the lag phase (after one primer)
PERIOD = 0.025            # seconds between two appends
POLL_PAUSE = 0.002        # seconds between two polls of the relay
TIMEOUT = 300.0           # seconds any one step may take before the benchmark fails
TARGET_FANOUT = 1.0       # upstream bytes with the relay, over the job's bytes
FANOUT_SLACK = 0.01       # the control RPCs allowed on top of it (1 %)
TARGET_THROUGHPUT = 0.9   # relay / direct
DATA_METHODS = bench_live.DATA_METHODS
DIR_ENV = "QX_BENCH_RELAY_DIR"


def crc_of(array: Any) -> int:
    import numpy as np

    raw: Any = np.ascontiguousarray(array).view(np.uint8)
    return zlib.crc32(raw)


def minor_faults(pid: int) -> int:
    """Minor page faults of process `pid` so far (/proc; 0 where unreadable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[7])
    except (OSError, IndexError, ValueError):
        return 0


# --------------------------------------------------------------------------- child side


def _serve_upstream(nbytes: int) -> tuple[Any, Callable[[str], Any], dict[str, Any]]:
    import numpy as np

    import qm_xarray as qx

    store = qx.ResultStore()
    data = _servers.values(nbytes // 8)
    big = store.create_job(BIG_JOB)
    big.add_stream(BIG_STREAM, dtype="<f8").append(data)
    big.finish()
    crc = crc_of(data)
    del data
    live = store.create_job(LIVE_JOB)
    stream = live.add_stream(LIVE_STREAM, dtype="<f8")
    counter = bench_live.ResponseBytesInterceptor()
    server = qx.serve(store, host="127.0.0.1", port=0, interceptors=[counter])
    appended: list[tuple[float, int]] = []  # (monotonic time just before the append, item index)
    pacer: list[threading.Thread] = []

    def append(index: int) -> None:
        t = time.monotonic()
        count = stream.append(np.array([float(index)]))
        if count != index + 1:
            raise AssertionError(f"append of item {index}: count {count}")
        appended.append((t, index))

    def pace(n: int, period: float) -> None:
        next_at = time.monotonic()
        for k in range(1, n + 1):
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))
            append(k)
        live.finish()

    def command(line: str) -> Any:
        words = line.split()
        if words[0] == "reset":
            counter.clear()
            return {"ok": True}
        if words[0] == "counts":
            return counter.snapshot()
        if words[0] == "prime":  # item 0 of the live job
            append(0)
            return {"ok": True}
        if words[0] == "pace":  # pace N PERIOD: items 1..N, one every PERIOD seconds, then finish
            thread = threading.Thread(target=pace, args=(int(words[1]), float(words[2])), daemon=True)
            pacer.append(thread)
            thread.start()
            return {"ok": True}
        if words[0] == "times":
            for thread in pacer:
                thread.join()
            return {"appended": appended}
        raise ValueError(f"unknown command {line!r}")

    return server, command, {"crc32": crc, "nbytes": nbytes, "module": qx.__file__}


def _read(address: str, job_id: str, stream: str, timeout: float) -> dict[str, Any]:
    """One reader's read (see the module docstring)."""
    import qm_xarray as qx

    t0 = time.monotonic()
    connection = qx.connect(address)
    try:
        job = connection.job(job_id)
        while True:  # a relay creates its copy on its first capture round
            try:
                job.summary(timeout=10.0)
                break
            except qx.JobNotFoundError:
                if time.monotonic() - t0 > timeout:
                    raise
                time.sleep(0.02)
        res = job.result_handles
        done = res.wait_for_all_values(timeout)
        t1 = time.monotonic()
        data: Any = res[stream].fetch_all(flat_struct=True)
        t2 = time.monotonic()
        return {"done": bool(done), "count": len(data), "nbytes": int(data.nbytes),
                "crc32": crc_of(data), "wait_s": t1 - t0, "fetch_s": t2 - t1, "started": t0, "ended": t2}
    finally:
        connection.close()


def _main_child(argv: list[str]) -> int:
    kind = argv[0]
    if kind == "upstream":
        server, command, info = _serve_upstream(int(argv[1]))
        _servers.serve_commands({"kind": kind, "port": server.port, "pid": os.getpid(), **info}, command)
        server.stop(0)
        return 0
    if kind == "reader":
        def read(line: str) -> Any:
            words = line.split()
            if words[0] != "read":
                raise ValueError(f"unknown command {line!r}")
            return _read(words[1], words[2], words[3], float(words[4]))

        _servers.serve_commands({"kind": kind, "pid": os.getpid()}, read)
        return 0
    raise SystemExit(f"unknown kind {kind!r}")


# --------------------------------------------------------------------------- parent side


def _checked(reply: Any, who: str) -> Any:
    if isinstance(reply, dict) and "error" in reply:
        raise RuntimeError(f"{who} failed: {reply['error']}")
    return reply


def _bytes_of(counts: dict[str, Any]) -> dict[str, Any]:
    sent = counts["response_bytes"]
    return {"response_bytes": sum(sent.values()),
            "data_response_bytes": sum(n for m, n in sent.items() if m in DATA_METHODS),
            "request_bytes": sum(counts["request_bytes"].values()),
            "rpcs": sum(counts["calls"].values()), "calls": counts["calls"], "by_method": sent}


def captured(relay: Any, job_id: str) -> None:
    """Wait until the relay child says how its capture of `job_id` ended; it must be complete."""
    prefix = f"capture {job_id}: "
    line = relay.wait_for(lambda s: s.startswith(prefix) and s != prefix + "capturing", TIMEOUT)
    if line != prefix + "complete":
        raise AssertionError(f"the relay's capture ended otherwise: {line!r}")


def _percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between order statistics."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


class RelayBench:
    """The upstream child, the reader children, the relays, and the three measurements."""

    def __init__(self, nbytes: int = NBYTES, readers: int = READERS, directory: str | None = None):
        self.nbytes, self.n_items, self.n_readers = nbytes, nbytes // 8, readers
        self.dir = tempfile.mkdtemp(prefix="qx-bench-relay-", dir=directory or os.environ.get(DIR_ENV))
        self.upstream: _servers.ServerProcess | None = None
        self.readers: list[_servers.ServerProcess] = []
        self.served: dict[str, Any] = {}  # name -> qm_xarray.testing.processes.ServerProcess
        self._connections: list[Any] = []
        try:
            self.upstream = _servers.start_script(__file__, "upstream", str(nbytes))
            self.crc = int(self.upstream.info["crc32"])
            for _ in range(readers):  # start them all, then wait for each: the imports overlap
                self.readers.append(_servers.start_script(__file__, "reader", first_line=False))
            for reader in self.readers:
                reader.info = reader.read_json(_servers.START_TIMEOUT)
        except BaseException:
            self.close()
            raise

    # -- helpers -------------------------------------------------------------------------------

    @property
    def up(self) -> _servers.ServerProcess:
        assert self.upstream is not None
        return self.upstream

    def request(self, line: str) -> Any:
        return _checked(self.up.request(line), "the upstream child")

    def connect(self, address: str) -> Any:
        import qm_xarray as qx

        connection = qx.connect(address)
        self._connections.append(connection)
        return connection

    def start_relay(self, name: str, job_id: str) -> Any:
        """A relay child capturing `job_id` of the upstream into a new store directory."""
        from qm_xarray.testing.processes import ServerProcess

        store = os.path.join(self.dir, f"store-{name}")
        logs = os.path.join(self.dir, f"logs-{name}")
        os.makedirs(logs)
        relay = ServerProcess(store, log_dir=logs, args=["--upstream", self.up.address, "--job", job_id])
        self.served[name] = relay
        relay.start(timeout=60.0)
        return relay

    def read_all(self, address: str, meanwhile: Callable[[], None] | None = None
                 ) -> tuple[list[dict[str, Any]], float]:
        """Every reader reads `big` from `address` at once; their replies (checked) and the span
        from the first command sent to the last reply. `meanwhile()` runs once they were told."""
        t0 = time.monotonic()
        for reader in self.readers:
            reader.send(f"read {address} {BIG_JOB} {BIG_STREAM} {TIMEOUT}")
        if meanwhile is not None:
            meanwhile()
        replies = [_checked(reader.read_json(TIMEOUT), f"reader {i}")
                   for i, reader in enumerate(self.readers)]
        span = max(r["ended"] for r in replies) - t0
        for i, r in enumerate(replies):
            got = (r["count"], r["nbytes"], r["crc32"], r["done"])
            if got != (self.n_items, self.nbytes, self.crc, True):
                raise AssertionError(f"reader {i} read {r['count']} items, {r['nbytes']} bytes, CRC-32"
                                     f" {r['crc32']:#x} (done {r['done']}) from {address}; the job has"
                                     f" {self.n_items} items, {self.nbytes} bytes, CRC-32 {self.crc:#x}")
        return replies, span

    # -- 1. fan-out ----------------------------------------------------------------------------

    def _fanout_figures(self, counts: dict[str, Any], replies: list[dict[str, Any]],
                        span: float) -> dict[str, Any]:
        b = _bytes_of(counts)
        return {**b, "ratio": b["response_bytes"] / self.nbytes,
                "data_ratio": b["data_response_bytes"] / self.nbytes, "span_s": span,
                "fetch_s_median": statistics.median(r["fetch_s"] for r in replies),
                "wait_s_max": max(r["wait_s"] for r in replies),
                "delivered_gbps": self.n_readers * self.nbytes / span / 1e9}

    def measure_fanout(self) -> dict[str, Any]:
        out: dict[str, Any] = {"readers": self.n_readers, "job_bytes": self.nbytes}
        self.request("reset")
        replies, span = self.read_all(self.up.address)
        out["direct"] = self._fanout_figures(self.request("counts"), replies, span)

        self.request("reset")
        t0 = time.monotonic()
        relay = self.start_relay("fanout", BIG_JOB)
        started = time.monotonic() - t0
        replies, span = self.read_all(relay.address, lambda: captured(relay, BIG_JOB))
        counts = self.request("counts")
        out["relay"] = fig = self._fanout_figures(counts, replies, span + started)
        fig["relay_start_s"] = started
        if fig["data_response_bytes"] < self.nbytes:
            raise AssertionError(f"the upstream sent {fig['data_response_bytes']} data bytes with the relay,"
                                 f" less than the job's {self.nbytes}: the copy did not come from it")
        summary = self.connect(relay.address).job(BIG_JOB).summary(timeout=30.0)
        if summary.state != "done" or summary.origin is None or summary.origin.status != "complete":
            raise AssertionError(f"relay's copy of {BIG_JOB}: state {summary.state},"
                                 f" origin {summary.origin}")
        if [s.count for s in summary.streams] != [self.n_items]:
            raise AssertionError(f"relay's copy of {BIG_JOB}: counts {[s.count for s in summary.streams]}")
        return out

    # -- 2. throughput of the captured job -----------------------------------------------------

    def measure_throughput(self, rounds: int = ROUNDS, warmup: int = 1) -> dict[str, Any]:
        from qm_xarray.testing.processes import ServerProcess

        relay = self.served["fanout"]  # its capture is complete (measure_fanout checked it)
        source, copy = os.path.join(self.dir, "store-fanout"), os.path.join(self.dir, "store-copy")
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns("lock"))
        logs = os.path.join(self.dir, "logs-store")
        os.makedirs(logs)
        store = self.served["store"] = ServerProcess(copy, log_dir=logs)
        store.start(timeout=60.0)
        servers = {"relay": relay, "store": store, "direct": self.up}
        handles = {name: self.connect(server.address).job(BIG_JOB).result_handles[BIG_STREAM]
                   for name, server in servers.items()}

        def fetch(handle: Any) -> Callable[[], Any]:
            return lambda: handle.fetch_all(flat_struct=True)

        fns = {name: fetch(handle) for name, handle in handles.items()}

        def check(name: str, result: Any) -> None:
            if (len(result), result.nbytes, crc_of(result)) != (self.n_items, self.nbytes, self.crc):
                raise AssertionError(f"fetch_all from {name}: {len(result)} items, {result.nbytes} bytes,"
                                     f" CRC-32 {crc_of(result):#x}; expected {self.n_items}, {self.nbytes},"
                                     f" {self.crc:#x}")

        cpu: dict[str, dict[str, list[float]]] = {}
        pids = {name: server.pid for name, server in servers.items()}
        faults0 = {name: minor_faults(pid) for name, pid in pids.items()}
        times = _jobs.interleave(fns, rounds, warmup=warmup, after=check, cpu=cpu, server_pids=pids)
        out = _jobs.figures(self.nbytes, times, base="direct")
        out["cpu_ms"] = _jobs.mean_cpu_ms(cpu)
        out["server_faults"] = {name: (minor_faults(pid) - faults0[name]) / (rounds + warmup)
                                for name, pid in pids.items()}
        out["names"] = list(servers)
        store.stop()
        return out

    # -- 3. capture lag ------------------------------------------------------------------------

    def measure_lag(self, appends: int = APPENDS, period: float = PERIOD) -> dict[str, Any]:
        import numpy as np

        self.request("reset")
        relay = self.start_relay("lag", LIVE_JOB)
        import qm_xarray as qx

        job = self.connect(relay.address).job(LIVE_JOB)
        deadline = time.monotonic() + 60.0
        while True:  # the copy exists after the capture's first round
            try:
                job.summary(timeout=10.0)
                break
            except qx.JobNotFoundError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"relay B created no copy of {LIVE_JOB} in 60 s: {exc}") from exc
                time.sleep(0.01)

        seen: dict[int, float] = {}
        cycles: list[float] = []
        state = {"count": 0}

        def poll_until(count: int, ended: bool, limit: float) -> None:
            end = time.monotonic() + limit
            while True:
                t0 = time.monotonic()
                summary = job.summary(timeout=10.0)
                t1 = time.monotonic()
                cycles.append(t1 - t0)
                now = summary.streams[0].count if summary.streams else 0
                for k in range(state["count"], now):
                    seen[k] = t1
                state["count"] = max(state["count"], now)
                if state["count"] >= count and (not ended or summary.state != "running"):
                    return
                if t1 > end:
                    raise RuntimeError(f"relay B shows {state['count']} items of {LIVE_JOB} (state"
                                       f" {summary.state}), {count} expected, after {limit:.0f} s")
                time.sleep(POLL_PAUSE)

        self.request("prime")
        poll_until(1, False, 60.0)
        self.request(f"pace {appends} {period!r}")
        poll_until(appends + 1, True, 60.0 + 3 * appends * period)
        appended = {int(k): float(t) for t, k in self.request("times")["appended"]}
        captured(relay, LIVE_JOB)
        counts = self.request("counts")

        if sorted(appended) != list(range(appends + 1)) or sorted(seen) != list(range(appends + 1)):
            raise AssertionError(f"appended {len(appended)} and seen {len(seen)} of {appends + 1} items")
        lags = [seen[k] - appended[k] for k in range(1, appends + 1)]
        if min(lags) <= 0:
            raise AssertionError(f"an item was seen at the relay before its append ({min(lags):.6f} s)")
        copy: Any = job.result_handles[LIVE_STREAM].fetch_all(flat_struct=True)
        if not np.array_equal(copy, np.arange(appends + 1, dtype=np.float64)):
            raise AssertionError(f"relay's copy of {LIVE_JOB}: {len(copy)} items, not the upstream's"
                                 f" values")
        summary = job.summary(timeout=30.0)
        if summary.state != "done" or summary.origin is None or summary.origin.status != "complete":
            raise AssertionError(f"relay's copy of {LIVE_JOB}: state {summary.state},"
                                 f" origin {summary.origin}")
        relay.stop()
        b = _bytes_of(counts)
        return {"appends": appends, "period_s": period, "poll_pause_s": POLL_PAUSE,
                "p50_s": _percentile(lags, 50), "p95_s": _percentile(lags, 95), "max_s": max(lags),
                "min_s": min(lags), "mean_s": statistics.fmean(lags), "lags_s": lags,
                "primer_s": seen[0] - appended[0], "polls": len(cycles),
                "poll_rpc_ms_median": 1000 * statistics.median(cycles),
                "upstream_rpcs": b["rpcs"], "upstream_response_bytes": b["response_bytes"],
                "upstream_calls": b["calls"]}

    # -- all -----------------------------------------------------------------------------------

    def measure(self, rounds: int = ROUNDS, warmup: int = 1, appends: int = APPENDS,
                period: float = PERIOD) -> dict[str, Any]:
        import qm_xarray as qx

        fig: dict[str, Any] = {"nbytes": self.nbytes, "readers": self.n_readers, "cpus": os.cpu_count(),
                               "module": qx.__file__, "store_dir": self.dir}
        fig["fanout"] = self.measure_fanout()
        fig["throughput"] = self.measure_throughput(rounds, warmup)
        fig["lag"] = self.measure_lag(appends, period)
        return fig

    def close(self) -> None:
        for connection in self._connections:
            connection.close()
        for relay in self.served.values():
            relay.stop()
        for reader in self.readers:
            reader.stop()
        if self.upstream is not None:
            self.upstream.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- asv


class Relay:
    """A relay in front of an upstream, one run: the upstream's response bytes over the job's bytes
    while 8 readers each read a 128 MiB job through the relay (target 1.0) and directly (8.0); the
    lag from an upstream append to the item's availability at the relay (p50, p95); GB/s of
    `fetch_all` of the captured job from the relay and directly, and their ratio (target >= 0.9)."""

    rounds = 1  # the figures come from setup_cache; re-reading them proves nothing
    timeout = 600

    def setup_cache(self) -> dict[str, Any]:
        with RelayBench() as bench:
            return bench.measure()

    setup_cache.timeout = 600  # type: ignore[attr-defined]

    def track_fanout_upstream_bytes_ratio_relay(self, fig: dict[str, Any]) -> float:
        return float(fig["fanout"]["relay"]["ratio"])

    def track_fanout_upstream_bytes_ratio_direct(self, fig: dict[str, Any]) -> float:
        return float(fig["fanout"]["direct"]["ratio"])

    def track_fanout_upstream_bytes_relay(self, fig: dict[str, Any]) -> float:
        return float(fig["fanout"]["relay"]["response_bytes"])

    def track_fanout_upstream_bytes_direct(self, fig: dict[str, Any]) -> float:
        return float(fig["fanout"]["direct"]["response_bytes"])

    def track_capture_lag_p50_s(self, fig: dict[str, Any]) -> float:
        return float(fig["lag"]["p50_s"])

    def track_capture_lag_p95_s(self, fig: dict[str, Any]) -> float:
        return float(fig["lag"]["p95_s"])

    def track_capture_lag_max_s(self, fig: dict[str, Any]) -> float:
        return float(fig["lag"]["max_s"])

    def track_relay_gbps(self, fig: dict[str, Any]) -> float:
        return float(fig["throughput"]["relay"]["gbps"])

    def track_store_gbps(self, fig: dict[str, Any]) -> float:
        return float(fig["throughput"]["store"]["gbps"])

    def track_direct_gbps(self, fig: dict[str, Any]) -> float:
        return float(fig["throughput"]["direct"]["gbps"])

    def track_relay_vs_direct_throughput_ratio(self, fig: dict[str, Any]) -> float:
        return float(fig["throughput"]["relay"]["ratio"])

    def track_relay_vs_direct_throughput_ratio_round_median(self, fig: dict[str, Any]) -> float:
        return float(fig["throughput"]["relay"]["round_ratio_median"])

    def track_store_vs_direct_throughput_ratio(self, fig: dict[str, Any]) -> float:
        return float(fig["throughput"]["store"]["ratio"])

    def track_store_vs_direct_throughput_ratio_round_median(self, fig: dict[str, Any]) -> float:
        return float(fig["throughput"]["store"]["round_ratio_median"])

    def track_relay_server_cpu_ms(self, fig: dict[str, Any]) -> float:
        return float(fig["throughput"]["cpu_ms"]["relay"]["server"])

    def track_direct_server_cpu_ms(self, fig: dict[str, Any]) -> float:
        return float(fig["throughput"]["cpu_ms"]["direct"]["server"])

    track_fanout_upstream_bytes_ratio_relay.unit = "ratio"  # type: ignore[attr-defined]
    track_fanout_upstream_bytes_ratio_direct.unit = "ratio"  # type: ignore[attr-defined]
    track_fanout_upstream_bytes_relay.unit = "bytes"  # type: ignore[attr-defined]
    track_fanout_upstream_bytes_direct.unit = "bytes"  # type: ignore[attr-defined]
    track_capture_lag_p50_s.unit = track_capture_lag_p95_s.unit = "seconds"  # type: ignore[attr-defined]
    track_capture_lag_max_s.unit = "seconds"  # type: ignore[attr-defined]
    track_relay_gbps.unit = track_direct_gbps.unit = "GB/s"  # type: ignore[attr-defined]
    track_store_gbps.unit = "GB/s"  # type: ignore[attr-defined]
    track_store_vs_direct_throughput_ratio.unit = "ratio"  # type: ignore[attr-defined]
    track_store_vs_direct_throughput_ratio_round_median.unit = "ratio"  # type: ignore[attr-defined]
    track_relay_server_cpu_ms.unit = track_direct_server_cpu_ms.unit = "ms"  # type: ignore[attr-defined]
    track_relay_vs_direct_throughput_ratio.unit = "ratio"  # type: ignore[attr-defined]
    track_relay_vs_direct_throughput_ratio_round_median.unit = "ratio"  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- script


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(fig: dict[str, Any]) -> list[str]:
    """Every figure as text lines."""
    fan, thr, lag = fig["fanout"], fig["throughput"], fig["lag"]
    lines = [(f"# relay: job {BIG_JOB!r}, {fig['nbytes'] // MiB} MiB float64 ({fig['nbytes']} bytes),"
              f" {fig['readers']} reader processes, {fig['cpus']} CPUs;"
              f" stores under {os.path.dirname(fig['store_dir'])}"),
             ("## fan-out: bytes the upstream sent (every response message, all RPCs) while the readers"
              " each read the job"),
             (f"{'readers via':12} {'response bytes':>15} {'x job':>8} {'data bytes':>14} {'x job':>8}"
              f" {'RPCs':>5} {'request bytes':>13} {'span s':>7} {'fetch s med':>11} {'GB/s out':>8}")]
    for name in ("relay", "direct"):
        f = fan[name]
        lines.append(f"{name:12} {f['response_bytes']:15d} {f['ratio']:8.4f} {f['data_response_bytes']:14d}"
                     f" {f['data_ratio']:8.4f} {f['rpcs']:5d} {f['request_bytes']:13d} {f['span_s']:7.2f}"
                     f" {f['fetch_s_median']:11.3f} {f['delivered_gbps']:8.3f}")
    lines.append("# span: the first read command to the last reader's end (relay: from the relay's start,"
                 f" {fan['relay']['relay_start_s']:.2f} s of it, so it includes the capture); GB/s out:"
                 " readers x job bytes / span")
    for name in ("relay", "direct"):
        sent = fan[name]["by_method"]
        lines.append(f"# upstream RPCs ({name}): " + ", ".join(
            f"{m} {n} ({sent.get(m, 0)} B)" for m, n in sorted(fan[name]["calls"].items())))
    lines.append(f"## throughput of the captured job: fetch_all(flat_struct=True), best of {thr['rounds']}"
                 " interleaved rounds (GB/s = 1e9 bytes/s)")
    lines.append(f"{'from':12} {'best s':>7} {'best GB/s':>9} {'median GB/s':>11} {'vs direct':>9}"
                 f" {'round med':>9} {'client CPU ms':>13} {'server CPU ms':>13} {'server faults':>13}")
    for name in thr["names"]:
        f, cpu = thr[name], thr["cpu_ms"][name]
        lines.append(f"{name:12} {f['best_s']:7.3f} {f['gbps']:9.3f} {f['gbps_median']:11.3f}"
                     f" {f['ratio']:9.3f} {f['round_ratio_median']:9.3f} {cpu['client']:13.1f}"
                     f" {cpu['server']:13.1f} {thr['server_faults'][name]:13.0f}")
    lines.append("# relay: the relay process that captured the job; store: a copy of its store directory"
                 " served by a fresh `qm-xarray serve --store`; direct: the upstream (memory). CPU: mean"
                 " per fetch; server faults: the server's minor page faults per fetch")
    lines.append(f"## capture lag: {lag['appends']} appends, one every {1000 * lag['period_s']:.0f} ms,"
                 " upstream append -> first poll of the relay's summary that counts it (poll RPC median"
                 f" {lag['poll_rpc_ms_median']:.2f} ms + {1000 * lag['poll_pause_s']:.0f} ms pause,"
                 f" {lag['polls']} polls)")
    lines.append(f"p50 {1000 * lag['p50_s']:.1f} ms, p95 {1000 * lag['p95_s']:.1f} ms, max"
                 f" {1000 * lag['max_s']:.1f} ms, min {1000 * lag['min_s']:.1f} ms, mean"
                 f" {1000 * lag['mean_s']:.1f} ms; primer item {1000 * lag['primer_s']:.1f} ms")
    lines.append(f"# upstream during the lag phase (relay B's capture): {lag['upstream_rpcs']} RPCs,"
                 f" {lag['upstream_response_bytes']} response bytes: " + ", ".join(
                     f"{m} {n}" for m, n in sorted(lag["upstream_calls"].items())))
    r, t, store = fan["relay"]["ratio"], thr["relay"], thr["store"]
    lines += ["# targets:",
              (f"#   upstream bytes via the relay = {TARGET_FANOUT:.1f}x the job (within"
               f" {100 * FANOUT_SLACK:.0f} % for control RPCs): {r:.4f}x"
               f" {_verdict(r <= TARGET_FANOUT + FANOUT_SLACK)} (directly: {fan['direct']['ratio']:.4f}x)"),
              (f"#   relay / direct throughput >= {TARGET_THROUGHPUT}: {t['ratio']:.3f}"
               f" {_verdict(t['ratio'] >= TARGET_THROUGHPUT)} (round median {t['round_ratio_median']:.3f});"
               f" the same copy served by a fresh process: {store['ratio']:.3f} (round median"
               f" {store['round_ratio_median']:.3f})"),
              f"#   capture lag (no target): p50 {lag['p50_s']:.4f} s, p95 {lag['p95_s']:.4f} s"]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_relay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=ROUNDS,
                        help=f"throughput rounds (default {ROUNDS})")
    parser.add_argument("--warmup", type=int, default=1,
                        help="unmeasured throughput rounds first (default 1)")
    parser.add_argument("--mib", type=int, default=NBYTES // MiB, help="job size in MiB (default 128)")
    parser.add_argument("--readers", type=int, default=READERS,
                        help=f"reader processes (default {READERS})")
    parser.add_argument("--appends", type=int, default=APPENDS,
                        help=f"paced appends of the lag phase (default {APPENDS})")
    parser.add_argument("--period", type=float, default=PERIOD,
                        help=f"seconds between appends (default {PERIOD})")
    parser.add_argument("--dir", default=None,
                        help=f"where the stores go (default ${DIR_ENV}, else the system's temporary"
                             " directory)")
    args = parser.parse_args(argv)
    with RelayBench(args.mib * MiB, args.readers, args.dir) as bench:
        print(f"# upstream pid {bench.up.pid} on {bench.up.address} ({bench.up.info['module']})", flush=True)
        fig = bench.measure(rounds=args.rounds, warmup=max(args.warmup, 1), appends=args.appends,
                            period=args.period)
    print("\n".join(report(fig)))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] in (["upstream"], ["reader"]):  # a child
        sys.exit(_main_child(sys.argv[1:]))
    raise SystemExit(main())
