"""qm-qua's objects opened with the engine, and the time to the error on a refused port.

1. Throughput. One 128 MiB float64 save_all stream (16 Mi items; `_servers.py` `qx` server in
   another process on 127.0.0.1, job `bench`, stream `data`), opened with
   `xr.open_dataset(obj, engine="qm", chunks={})` (once, outside the timing) and timed as
   `ds["data"].sum().compute(scheduler="threads")`, where obj is
   - `our Job`:               `qx.connect(address).job("bench")`;
   - `qm-qua job`:            `QuantumMachinesManager(host, port, timeout=60).get_job("bench")`
                              (our server answers GetInfo and QmmService/GetJobs);
   - `qm-qua result_handles`: that job's `result_handles` (qm-qua's StreamsManager).
   The engine reads qm-qua's objects through our own client, so all three should run alike:
   target (issue "real QOP servers") qm-qua / ours >= 0.9 in throughput, in the same interleaved
   rounds (best/best, and the median of the per-round ratios); before the engine translated
   qm-qua's objects it was 0.3-0.5. Also the seconds of one `open_dataset` per object (interleaved,
   each a new open of the same object), and, on a `_jobs.py` `many` server of one small stream,
   the RPCs the server sees for building each object, for one `open_dataset` of it and for one
   sum of that (which service reads the data: ours for all three).
2. Time to the error on a refused port (a port bound by this process and not listening, so nobody
   else can take it): `qx.connect("127.0.0.1:PORT")` -> `qx.ServerUnreachableError` (first, cold
   try, then the median of 20), `xr.open_dataset("qm://127.0.0.1:PORT/job", engine="qm")` (the same
   error), and the CLI `qm-xarray jobs --address 127.0.0.1:PORT` as a subprocess (wall time with the
   interpreter's start-up; exit status 1), beside `qm-xarray --version` and `python -c pass`.

asv: `QopThroughput` (param: way; `track_*` from one interleaved run in `setup_cache`),
`QopJobOpen` (param: way; `time_sum`, `peakmem_sum`; the server starts once per benchmark
process), `RefusedPort` (`time_*`). The qm-qua ways are skipped without qm-qua. Script:
`python -m benchmarks.bench_qop [--rounds N]` prints every figure.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

try:
    from . import _jobs, _servers
except ImportError:  # asv imports benchmark files from the benchmark directory
    import _jobs  # type: ignore[no-redef]
    import _servers  # type: ignore[no-redef]

MiB = 1024 * 1024
NBYTES = 128 * MiB
ROUNDS = 8                      # asv; the script default too
OURS, QMQUA_JOB, QMQUA_STREAMS = "our Job", "qm-qua job", "qm-qua result_handles"
WAYS = (OURS, QMQUA_JOB, QMQUA_STREAMS)
QMM_TIMEOUT = 60
TARGET_VS_OURS = 0.9
REFUSED_TRIES = 20
CLI_TRIES = 7
RPC_STREAM_ITEMS = 1000


# --------------------------------------------------------------------------- the objects


def open_object(way: str, address: str, job_id: str) -> Any:
    """The object `way` names, on the server at `address` (builds a QuantumMachinesManager for
    the qm-qua ways: raises NotImplementedError without qm-qua)."""
    import qm_xarray as qx

    if way == OURS:
        return qx.connect(address).job(job_id)
    skipped = _jobs.reference_available()
    if skipped:
        raise NotImplementedError(skipped)
    from qm import QuantumMachinesManager

    _jobs.quiet_reference_logs()
    host, port = address.rsplit(":", 1)
    # log_level: the manager sets qm-qua's level itself (INFO by default, a line per health check)
    qmm = QuantumMachinesManager(host=host, port=int(port), timeout=QMM_TIMEOUT, log_level=logging.WARNING)
    job = qmm.get_job(job_id)
    if way == QMQUA_JOB:
        return job
    if way == QMQUA_STREAMS:
        return job.result_handles
    raise ValueError(f"unknown way {way!r}")


class QopBench:
    """The 128 MiB server, the three objects on it and a dataset opened from each."""

    def __init__(self, nbytes: int = NBYTES, qm_qua: bool = True, server: Any = None):
        import numpy as np
        import xarray as xr

        self.nbytes, self.n_items = nbytes, nbytes // 8
        self.qm_qua_skipped = _jobs.reference_available() if qm_qua else "not asked for"
        values = _servers.values(self.n_items)
        self.expected_sum = float(values.sum())
        del values
        self._np, self._xr = np, xr
        self._own_server = server is None
        self.server = _servers.start_server("qx", nbytes) if server is None else server
        try:
            ways = WAYS if self.qm_qua_skipped is None else (OURS,)
            self.objects = {way: open_object(way, self.server.address, _servers.JOB_ID) for way in ways}
            self.datasets = {way: xr.open_dataset(obj, engine="qm", chunks={})
                             for way, obj in self.objects.items()}
            self.chunks = {way: ds[_servers.STREAM].data.chunksize[0] * 8 for way, ds in self.datasets.items()}
        except BaseException:
            self.close()
            raise

    def sum_calls(self) -> dict[str, Callable[[], Any]]:
        return {way: (lambda ds=ds: ds[_servers.STREAM].sum().compute(scheduler="threads"))
                for way, ds in self.datasets.items()}

    def open_calls(self) -> dict[str, Callable[[], Any]]:
        xr = self._xr
        return {way: (lambda obj=obj: xr.open_dataset(obj, engine="qm", chunks={}))
                for way, obj in self.objects.items()}

    def check(self, name: str, result: Any) -> None:
        total = float(result)
        if not self._np.isclose(total, self.expected_sum, rtol=1e-9):
            raise AssertionError(f"{name}: sum {total!r}, expected {self.expected_sum!r}")

    def check_open(self, name: str, ds: Any) -> None:
        if ds[_servers.STREAM].shape != (self.n_items,):
            raise AssertionError(f"{name}: shape {ds[_servers.STREAM].shape}, expected ({self.n_items},)")
        ds.close()

    def measure(self, rounds: int = ROUNDS, warmup: int = 1, open_rounds: int | None = None) -> dict[str, Any]:
        """Interleaved sums (figures, ratios to ours, CPU per call), then interleaved opens."""
        fns = self.sum_calls()
        cpu: dict[str, Any] = {}
        times = _jobs.interleave(fns, rounds, warmup, self.check, cpu, dict.fromkeys(fns, self.server.pid))
        fig = _jobs.figures(self.nbytes, times, base=OURS)
        fig["cpu_ms"] = _jobs.mean_cpu_ms(cpu)
        fig["names"] = list(fns)
        fig["chunk_bytes"] = self.chunks
        fig["qm_qua_skipped"] = self.qm_qua_skipped
        opens = _jobs.interleave(self.open_calls(), open_rounds or max(rounds, 10), 1, self.check_open)
        fig["open_s"] = {way: {"best": min(ts), "median": statistics.median(ts)} for way, ts in opens.items()}
        return fig

    def close(self) -> None:
        for ds in getattr(self, "datasets", {}).values():
            ds.close()
        if self._own_server:
            self.server.stop()

    def __enter__(self) -> QopBench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def measure_rpcs(qm_qua: bool = True) -> dict[str, Any]:
    """RPCs the server sees to build each object and for one `open_dataset` of it (a `many`
    server: job `many` of one save_all stream of 1000 items, every RPC recorded)."""
    import xarray as xr

    ways = WAYS if qm_qua and _jobs.reference_available() is None else (OURS,)
    out: dict[str, Any] = {}
    with _jobs.start_many(1, RPC_STREAM_ITEMS, 1) as server:
        for way in ways:
            server.request("reset")
            obj = open_object(way, server.address, _jobs.MANY_JOB)
            built = server.request("counts")
            server.request("reset")
            ds = xr.open_dataset(obj, engine="qm", chunks={})
            opened = server.request("counts")
            if list(ds.data_vars) != ["s000"]:
                raise AssertionError(f"{way}: variables {list(ds.data_vars)}, expected ['s000']")
            server.request("reset")
            ds["s000"].sum().compute(scheduler="threads")
            computed = server.request("counts")
            ds.close()
            out[way] = {"build": built, "open": opened, "sum": computed}
    return out


# --------------------------------------------------------------------------- refused port


class RefusedAddress:
    """A loopback port bound by this process without listening: connecting to it is refused
    (RST), and no other process can take it while this object lives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RefusedAddress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect_refused(address: str) -> None:
    import qm_xarray as qx

    try:
        qx.connect(address)
    except qx.ServerUnreachableError as exc:
        if exc.kind != "refused":
            raise AssertionError(f"connect({address!r}): {exc.kind!r}, expected 'refused': {exc}") from None
        return
    raise AssertionError(f"connect({address!r}) did not fail")


def open_dataset_refused(address: str) -> None:
    import xarray as xr

    import qm_xarray as qx

    try:
        xr.open_dataset(f"qm://{address}/{_servers.JOB_ID}", engine="qm")
    except qx.ServerUnreachableError as exc:
        if exc.kind != "refused":
            raise AssertionError(f"open_dataset: {exc.kind!r}, expected 'refused': {exc}") from None
        return
    raise AssertionError(f"open_dataset of qm://{address}/{_servers.JOB_ID} did not fail")


def cli() -> list[str]:
    """The venv's `qm-xarray` script (`python -m qm_xarray` if it has none)."""
    found = shutil.which("qm-xarray", path=os.path.dirname(sys.executable))
    return [found] if found else [sys.executable, "-m", "qm_xarray"]


def run_cli(args: list[str], expect_rc: int, expect_text: str = "") -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != expect_rc or expect_text not in done.stdout + done.stderr:
        raise AssertionError(f"{args}: status {done.returncode} (expected {expect_rc}), "
                             f"output {(done.stdout + done.stderr).strip()!r}")
    return done


def cli_jobs_refused(address: str) -> None:
    run_cli([*cli(), "jobs", "--address", address], 1, "connection refused")


def cli_version() -> None:
    run_cli([*cli(), "--version"], 0, "qm-xarray")


def python_pass() -> None:
    run_cli([sys.executable, "-c", "pass"], 0)


def _timed(fn: Callable[[], Any], tries: int) -> dict[str, Any]:
    ts = []
    for _ in range(tries):
        start = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - start)
    return {"tries": tries, "best_s": min(ts), "median_s": statistics.median(ts), "max_s": max(ts)}


def measure_refused(tries: int = REFUSED_TRIES, cli_tries: int = CLI_TRIES) -> dict[str, Any]:
    """Seconds to the error on a refused port: in-process (first try cold, then `tries`) and CLI."""
    out: dict[str, Any] = {}
    with RefusedAddress() as refused:
        address = refused.address
        out["address"] = address
        for name, fn in (("connect", lambda: connect_refused(address)),
                         ("open_dataset", lambda: open_dataset_refused(address))):
            start = time.perf_counter()
            fn()  # the first try imports what the first contact needs
            first = time.perf_counter() - start
            out[name] = {"first_s": first, **_timed(fn, tries)}
        out["cli_jobs"] = _timed(lambda: cli_jobs_refused(address), cli_tries)
    out["cli_version"] = _timed(cli_version, cli_tries)
    out["python_pass"] = _timed(python_pass, cli_tries)
    out["cli"] = " ".join(cli())
    return out


# --------------------------------------------------------------------------- asv


class QopThroughput:
    """GB/s of `ds["data"].sum().compute()` per way of opening the 128 MiB stream, the ratio of
    each to ours in the same rounds (target >= 0.9; best/best and median of per-round ratios),
    and the seconds of one `open_dataset`. The qm-qua ways are skipped without qm-qua."""

    params = list(WAYS)
    param_names = ["way"]
    rounds = 1  # the figures come from setup_cache
    timeout = 600

    def setup_cache(self) -> dict[str, Any]:
        with QopBench() as bench:
            return bench.measure(rounds=ROUNDS)

    setup_cache.timeout = 600  # type: ignore[attr-defined]

    def setup(self, fig: dict[str, Any], way: str) -> None:
        if way not in fig:
            raise NotImplementedError(fig["qm_qua_skipped"] or f"{way} was not measured")

    def track_gbps(self, fig: dict[str, Any], way: str) -> float:
        return fig[way]["gbps"]

    def track_vs_ours(self, fig: dict[str, Any], way: str) -> float:
        return fig[way]["ratio"]

    def track_vs_ours_round_median(self, fig: dict[str, Any], way: str) -> float:
        return fig[way]["round_ratio_median"]

    def track_open_ms(self, fig: dict[str, Any], way: str) -> float:
        return 1000 * fig["open_s"][way]["median"]

    track_gbps.unit = "GB/s"  # type: ignore[attr-defined]
    track_vs_ours.unit = track_vs_ours_round_median.unit = "ratio"  # type: ignore[attr-defined]
    track_open_ms.unit = "ms"  # type: ignore[attr-defined]


_STATE: dict[Any, Any] = {}  # "server", ("dataset", way)


def _expected_sum(n: int) -> float:
    """The sum of `_servers.values(n)` (arange * 1.0000001 + 0.5) in closed form: no 128 MiB array
    in the process whose peak memory `peakmem_sum` reports."""
    return 1.0000001 * (n * (n - 1) / 2) + 0.5 * n


def _server() -> Any:
    """The 128 MiB server, once per benchmark process; the child ends when this process does."""
    if "server" not in _STATE:
        _STATE["server"] = _servers.start_server("qx", NBYTES)
    return _STATE["server"]


class QopJobOpen:
    """Seconds and peak memory of `ds["data"].sum().compute(scheduler="threads")` of the 128 MiB
    stream opened (in setup, with one checked, unmeasured sum) from our Job, qm-qua's job,
    qm-qua's result_handles. `peakmem_sum` is the process's peak RSS (qm-qua's import included)."""

    params = list(WAYS)
    param_names = ["way"]
    timeout = 300
    number = 1
    repeat = (1, 5, 30.0)

    def setup(self, way: str) -> None:
        import xarray as xr

        key = ("dataset", way)
        skipped = None if way == OURS else _jobs.reference_available()
        if skipped:
            raise NotImplementedError(skipped)  # asv: skipped, and no server started for nothing
        if key not in _STATE:
            server = _server()
            obj = open_object(way, server.address, _servers.JOB_ID)  # NotImplementedError: skip
            ds = xr.open_dataset(obj, engine="qm", chunks={})
            # one unmeasured sum: the channel's connection, dask's thread pool and the first page
            # faults would otherwise land in the only sample of `asv run --quick` (3-4x slower)
            total = float(ds[_servers.STREAM].sum().compute(scheduler="threads"))
            expected = _expected_sum(NBYTES // 8)
            if abs(total - expected) > 1e-9 * abs(expected):
                raise AssertionError(f"{way}: sum {total!r}, expected {expected!r}")
            _STATE[key] = (obj, ds)
        self.ds = _STATE[key][1]

    def time_sum(self, way: str) -> None:
        self.ds[_servers.STREAM].sum().compute(scheduler="threads")

    def peakmem_sum(self, way: str) -> None:
        self.ds[_servers.STREAM].sum().compute(scheduler="threads")


class RefusedPort:
    """Seconds to `ServerUnreachableError` on a refused loopback port: `qx.connect`, `open_dataset`
    of a `qm://` string (both warm: one try in setup), and the CLI `qm-xarray jobs --address` as a
    subprocess beside `qm-xarray --version` (the interpreter's and the CLI's start-up alone)."""

    timeout = 120
    repeat = (1, 10, 10.0)

    def setup(self) -> None:
        self.refused = RefusedAddress()
        connect_refused(self.refused.address)
        open_dataset_refused(self.refused.address)

    def teardown(self) -> None:
        self.refused.close()

    def time_connect_refused(self) -> None:
        connect_refused(self.refused.address)

    def time_open_dataset_refused(self) -> None:
        open_dataset_refused(self.refused.address)

    def time_cli_jobs_refused(self) -> None:
        cli_jobs_refused(self.refused.address)

    def time_cli_version(self) -> None:
        cli_version()

    time_cli_jobs_refused.repeat = time_cli_version.repeat = (1, 5, 10.0)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- script


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(fig: dict[str, Any] | None, rpcs: dict[str, Any] | None, refused: dict[str, Any] | None) -> list[str]:
    lines: list[str] = []
    if fig is not None:
        lines.append(f"# {fig['nbytes'] // MiB} MiB float64 save_all stream: ds[var].sum().compute(scheduler="
                     f"'threads') after open_dataset(obj, engine='qm', chunks={{}}), {os.cpu_count()} CPUs,"
                     f" {fig['rounds']} interleaved rounds (GB/s = 1e9 bytes/s)")
        if fig["qm_qua_skipped"]:
            lines.append(f"# qm-qua ways left out: {fig['qm_qua_skipped']}")
        lines.append(f"{'opened from':22} {'chunk':>7} {'best s':>7} {'median s':>8} {'best GB/s':>9}"
                     f" {'median GB/s':>11} {'vs ours':>7} {'round med':>9} {'client CPU ms':>13}"
                     f" {'server CPU ms':>13} {'open ms':>7}")
        for way in fig["names"]:
            f, cpu = fig[way], fig["cpu_ms"][way]
            lines.append(f"{way:22} {fig['chunk_bytes'][way] / MiB:3.0f} MiB {f['best_s']:7.3f} {f['median_s']:8.3f}"
                         f" {f['gbps']:9.3f} {f['gbps_median']:11.3f} {f['ratio']:7.3f}"
                         f" {f['round_ratio_median']:9.3f} {cpu['client']:13.1f} {cpu['server']:13.1f}"
                         f" {1000 * fig['open_s'][way]['median']:7.1f}")
        lines.append("# per-round seconds: " + "; ".join(
            f"{way}: " + " ".join(f"{t:.3f}" for t in fig[way]["times_s"]) for way in fig["names"]))
        lines.append("# vs ours: best time of ours / best time; round med: median over rounds of the ratio"
                     " within a round; CPU: mean per sum; open ms: median of one open_dataset")
        for way in fig["names"][1:]:
            r = fig[way]
            lines.append(f"# target: {way} vs our Job >= {TARGET_VS_OURS}: {r['ratio']:.3f}"
                         f" (round median {r['round_ratio_median']:.3f})"
                         f" {_verdict(r['ratio'] >= TARGET_VS_OURS)}")
    if rpcs is not None:
        lines.append(f"# RPCs at the server (a job of one {RPC_STREAM_ITEMS}-item stream, one chunk): to build"
                     " the object, for one open_dataset of it, and for one sum().compute() of that")
        for way, c in rpcs.items():
            for what in ("build", "open", "sum"):
                calls = ", ".join(f"{m} {n}" for m, n in c[what]["calls"].items())
                lines.append(f"{way:22} {what:5} {c[what]['total']:3d} RPCs  ({calls})")
    if refused is not None:
        lines.append(f"# time to the error on a refused port ({refused['address']}, bound and not listening)")
        for name, label in (("connect", "qx.connect -> ServerUnreachableError"),
                            ("open_dataset", "open_dataset('qm://...') -> same")):
            r = refused[name]
            lines.append(f"{label:38} first {1000 * r['first_s']:7.2f} ms; median of {r['tries']}"
                         f" {1000 * r['median_s']:6.2f} ms (best {1000 * r['best_s']:.2f}, max {1000 * r['max_s']:.2f})")
        for name, label in (("cli_jobs", "qm-xarray jobs --address (exit 1)"),
                            ("cli_version", "qm-xarray --version"), ("python_pass", "python -c pass")):
            r = refused[name]
            lines.append(f"{label:38} median of {r['tries']} {1000 * r['median_s']:7.1f} ms"
                         f" (best {1000 * r['best_s']:.1f}, max {1000 * r['max_s']:.1f}), wall, subprocess")
        extra = {k: 1000 * (refused["cli_jobs"][k] - refused["cli_version"][k]) for k in ("best_s", "median_s")}
        lines.append(f"# the CLI's refused-port error costs {extra['best_s']:.0f} ms (best) /"
                     f" {extra['median_s']:.0f} ms (median) more than its --version ({refused['cli']})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_qop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"measured rounds (default {ROUNDS})")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured, checked rounds first (default 1)")
    parser.add_argument("--mib", type=int, default=NBYTES // MiB, help="stream size in MiB (default 128)")
    parser.add_argument("--no-qm-qua", action="store_true", help="only our Job (no qm-qua objects)")
    parser.add_argument("--only", choices=("throughput", "refused"), default=None,
                        help="only the throughput (with the RPC counts), or only the refused port")
    args = parser.parse_args(argv)
    fig = rpcs = refused = None
    if args.only != "refused":
        with QopBench(args.mib * MiB, qm_qua=not args.no_qm_qua) as bench:
            print(f"# qx server pid {bench.server.pid} on {bench.server.address} ({bench.server.info['module']})")
            fig = bench.measure(rounds=args.rounds, warmup=max(args.warmup, 1))
        rpcs = measure_rpcs(qm_qua=not args.no_qm_qua)
    if args.only != "throughput":
        refused = measure_refused()
    print("\n".join(report(fig, rpcs, refused)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
