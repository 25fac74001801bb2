"""Lazy layer: dask compute against `fetch_all`, chunk sizes, RPCs of `open_dataset`, graph build.

1. Throughput. A 256 MiB float64 stream (`_servers.py` `qx` server in another process, job `bench`,
   stream `data`), opened with `xr.open_dataset(job, engine="qm", chunks={}, chunk_bytes=C)` for
   C = 2, 8, 16, 32 MiB (the datasets are opened once, outside the timing), each timed as
   `ds["data"].sum().compute(scheduler="threads")`, interleaved in the same rounds with
   `handle.fetch_all(flat_struct=True)` of the same stream (the handle of the same Job). Ratios
   are lazy/fetch_all throughput (best/best, and the median of the per-round ratios); target
   >= 0.9 for the default chunk size (`qm_xarray.lazy.DEFAULT_CHUNK_BYTES`, 8 MiB). Also, at the
   default chunk size, `sum(skipna=False)`: xarray's default for floats (skipna=True) runs nansum,
   which copies and masks every chunk; the difference is xarray's cost, not the lazy layer's.
2. RPCs of `open_dataset` on a job of 100 finished save_all streams (`_jobs.py` `many` server, which
   counts every RPC with `qm_xarray.testing.RecordingInterceptor` and the item bytes that data RPCs
   send): through a new `qx.connect(addr).job(id)` (capabilities included), and through our
   StreamsManagers of each mode (built before counting). Target <= 2 + 1 per stream, 0 item bytes.
3. Graph build: `qx.to_dask(handle, chunks=1)` of a 10^4-item stream (10^4 chunks), a `time_*`
   benchmark; also with the graph materialized (`dict(arr.__dask_graph__())`).

asv: `LazyThroughput`, `LazyChunks` (param: chunk MiB) and `LazyOpenRpcs` (`track_*` from
`setup_cache`), `ToDaskBuild` (`time_*`; its server starts once per benchmark process). Script:
`python -m benchmarks.bench_lazy [--rounds N]` prints every figure.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

try:
    from . import _jobs, _servers
except ImportError:  # asv imports benchmark files from the benchmark directory
    import _jobs  # type: ignore[no-redef]
    import _servers  # type: ignore[no-redef]

MiB = 1024 * 1024
NBYTES = 256 * MiB
ROUNDS = 8                      # asv; the script default too
CHUNK_MIB = (2, 8, 16, 32)
N_STREAMS = 100
STREAM_ITEMS = 1000
GRAPH_ITEMS = 10_000
TARGET_VS_FETCH_ALL = 0.9
NO_SKIPNA = "lazy-default-skipna=False"


def _lazy_name(mib: int) -> str:
    return f"lazy-{mib}MiB"


class LazyBench:
    """The 256 MiB server, a Job on it, its `data` handle, and one dataset per chunk size."""

    def __init__(self, nbytes: int = NBYTES, chunk_mib: tuple[int, ...] = CHUNK_MIB):
        import numpy as np
        import xarray as xr

        import qm_xarray as qx
        from qm_xarray.lazy import DEFAULT_CHUNK_BYTES

        self.nbytes, self.n_items = nbytes, nbytes // 8
        self.default_mib = DEFAULT_CHUNK_BYTES / MiB
        extra = {int(self.default_mib)} if self.default_mib == int(self.default_mib) else set()
        self.chunk_mib = tuple(sorted(set(chunk_mib) | extra))  # the default is always measured
        values = _servers.values(self.n_items)
        self.expected_sum = float(values.sum())
        del values
        self._np = np
        self.server = _servers.start_server("qx", nbytes)
        try:
            self.job = qx.connect(self.server.address).job(_servers.JOB_ID)
            self.handle = self.job.result_handles[_servers.STREAM]
            self.datasets = {mib: xr.open_dataset(self.job, engine="qm", chunks={}, chunk_bytes=mib * MiB)
                             for mib in self.chunk_mib}
            self.chunks = {mib: ds[_servers.STREAM].data.chunksize[0] * 8
                           for mib, ds in self.datasets.items()}
        except BaseException:
            self.server.stop()
            raise

    def calls(self) -> dict[str, Any]:
        fns: dict[str, Any] = {"fetch_all": lambda: self.handle.fetch_all(flat_struct=True)}
        for mib, ds in self.datasets.items():
            fns[_lazy_name(mib)] = lambda ds=ds: ds[_servers.STREAM].sum().compute(scheduler="threads")
        # the same at the default chunk size without xarray's NaN skipping (a plain sum per chunk,
        # where skipna=True, the default for floats, runs nansum: a copy and a mask per chunk)
        ds = self.datasets[int(self.default_mib)]
        fns[NO_SKIPNA] = lambda: ds[_servers.STREAM].sum(skipna=False).compute(scheduler="threads")
        return fns

    def check(self, name: str, result: Any) -> None:
        np = self._np
        if name == "fetch_all":
            if result.shape != (self.n_items,):
                raise AssertionError(f"fetch_all: shape {result.shape}, expected ({self.n_items},)")
            total = float(result.sum())
        else:
            total = float(result)
        if not np.isclose(total, self.expected_sum, rtol=1e-9):
            raise AssertionError(f"{name}: sum {total!r}, expected {self.expected_sum!r}")

    def measure(self, rounds: int = ROUNDS, warmup: int = 1) -> dict[str, Any]:
        fns = self.calls()
        cpu: dict[str, Any] = {}
        times = _jobs.interleave(fns, rounds, warmup, self.check, cpu,
                                 dict.fromkeys(fns, self.server.pid))
        fig = _jobs.figures(self.nbytes, times, base="fetch_all")
        fig["cpu_ms"] = _jobs.mean_cpu_ms(cpu)
        fig["names"] = list(fns)
        fig["chunk_bytes"] = {str(mib): b for mib, b in self.chunks.items()}
        fig["default_mib"] = self.default_mib
        best = min(self.chunk_mib, key=lambda mib: min(times[_lazy_name(mib)]))
        best_median = max(self.chunk_mib, key=lambda mib: fig[_lazy_name(mib)]["round_ratio_median"])
        fig["best_chunk_mib"], fig["best_chunk_mib_round_median"] = best, best_median
        return fig

    def close(self) -> None:
        self.server.stop()

    def __enter__(self) -> LazyBench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def measure_open_rpcs(n_streams: int = N_STREAMS, items: int = STREAM_ITEMS) -> dict[str, Any]:
    """RPCs and item bytes of one `open_dataset` of the `many` job, per way of opening it."""
    import xarray as xr

    import qm_xarray as qx
    from qm_xarray.testing import our_streams_manager

    out: dict[str, Any] = {"n_streams": n_streams, "target": 2 + n_streams}
    with _jobs.start_many(n_streams, items, GRAPH_ITEMS) as server:
        port = server.info["port"]
        ways: dict[str, Any] = {"job": None}
        server.request("reset")
        for mode in ("v1", "v2", "v2-multi"):
            ways[f"manager-{mode}"] = our_streams_manager("127.0.0.1", port, _jobs.MANY_JOB, mode)
        out["manager_construction"] = server.request("counts")  # the schema RPC of each manager
        for way, obj in ways.items():
            if obj is None:  # a new Connection: its capabilities RPC counts too
                obj = qx.connect(server.address).job(_jobs.MANY_JOB)
            server.request("reset")
            ds = xr.open_dataset(obj, engine="qm", chunks={})
            counts = server.request("counts")
            if len(ds.data_vars) != n_streams:
                raise AssertionError(f"{way}: {len(ds.data_vars)} variables, expected {n_streams}")
            out[way] = counts
            ds.close()
    return out


# --------------------------------------------------------------------------- asv


class _LazyRun:
    """The throughput measurement shared by `LazyThroughput` and `LazyChunks`."""

    rounds = 1
    timeout = 600

    def setup_cache(self) -> dict[str, Any]:
        with LazyBench() as bench:
            return bench.measure(rounds=ROUNDS)

    setup_cache.timeout = 600  # type: ignore[attr-defined]


class LazyThroughput(_LazyRun):
    """`fetch_all` GB/s; the default chunk size's lazy/fetch_all ratio (target >= 0.9); the chunk
    size (MiB) that was fastest in this run."""

    def track_fetch_all_gbps(self, fig: dict[str, Any]) -> float:
        return fig["fetch_all"]["gbps"]

    def track_default_vs_fetch_all(self, fig: dict[str, Any]) -> float:
        return fig[_lazy_name(int(fig["default_mib"]))]["ratio"]

    def track_default_vs_fetch_all_round_median(self, fig: dict[str, Any]) -> float:
        return fig[_lazy_name(int(fig["default_mib"]))]["round_ratio_median"]

    def track_best_chunk_mib(self, fig: dict[str, Any]) -> float:
        return fig["best_chunk_mib"]

    def track_default_no_skipna_vs_fetch_all(self, fig: dict[str, Any]) -> float:
        return fig[NO_SKIPNA]["ratio"]

    track_fetch_all_gbps.unit = "GB/s"  # type: ignore[attr-defined]
    track_default_vs_fetch_all.unit = "ratio"  # type: ignore[attr-defined]
    track_default_no_skipna_vs_fetch_all.unit = "ratio"  # type: ignore[attr-defined]
    track_default_vs_fetch_all_round_median.unit = "ratio"  # type: ignore[attr-defined]
    track_best_chunk_mib.unit = "MiB"  # type: ignore[attr-defined]


class LazyChunks(_LazyRun):
    """Per chunk size: lazy sum GB/s and its ratio to `fetch_all` in the same rounds."""

    params = list(CHUNK_MIB)
    param_names = ["chunk_mib"]

    def track_lazy_gbps(self, fig: dict[str, Any], mib: int) -> float:
        return fig[_lazy_name(mib)]["gbps"]

    def track_vs_fetch_all(self, fig: dict[str, Any], mib: int) -> float:
        return fig[_lazy_name(mib)]["ratio"]

    def track_vs_fetch_all_round_median(self, fig: dict[str, Any], mib: int) -> float:
        return fig[_lazy_name(mib)]["round_ratio_median"]

    track_lazy_gbps.unit = "GB/s"  # type: ignore[attr-defined]
    track_vs_fetch_all.unit = track_vs_fetch_all_round_median.unit = "ratio"  # type: ignore[attr-defined]


class LazyOpenRpcs:
    """`open_dataset` of a job with 100 save_all streams: RPCs at the server (target <= 102) and
    item bytes sent (target 0), through a new Job and through our v1 / v2 / v2-multi managers."""

    rounds = 1
    timeout = 300

    def setup_cache(self) -> dict[str, Any]:
        return measure_open_rpcs()

    setup_cache.timeout = 300  # type: ignore[attr-defined]

    def track_rpcs_job(self, fig: dict[str, Any]) -> float:
        return fig["job"]["total"]

    def track_rpcs_manager_v1(self, fig: dict[str, Any]) -> float:
        return fig["manager-v1"]["total"]

    def track_rpcs_manager_v2(self, fig: dict[str, Any]) -> float:
        return fig["manager-v2"]["total"]

    def track_rpcs_manager_v2_multi(self, fig: dict[str, Any]) -> float:
        return fig["manager-v2-multi"]["total"]

    def track_item_bytes(self, fig: dict[str, Any]) -> float:
        return max(fig[way]["item_bytes"] for way in ("job", "manager-v1", "manager-v2", "manager-v2-multi"))

    track_rpcs_job.unit = track_rpcs_manager_v1.unit = "RPCs"  # type: ignore[attr-defined]
    track_rpcs_manager_v2.unit = track_rpcs_manager_v2_multi.unit = "RPCs"  # type: ignore[attr-defined]
    track_item_bytes.unit = "bytes"  # type: ignore[attr-defined]


_GRAPH: dict[str, Any] = {}


def _graph_handle() -> Any:
    """The `data` handle of job `items` (10^4 items), one server per benchmark process; the server
    child ends when this process does (its stdin reaches end of file)."""
    if "handle" not in _GRAPH:
        import qm_xarray as qx

        _GRAPH["server"] = server = _jobs.start_many(1, 1, GRAPH_ITEMS)
        _GRAPH["handle"] = handle = qx.connect(server.address).job(_jobs.ITEMS_JOB).result_handles["data"]
        arr = qx.to_dask(handle, chunks=1)  # warm-up and check, outside any timing
        if arr.numblocks != (GRAPH_ITEMS,):
            raise AssertionError(f"to_dask(chunks=1) made {arr.numblocks} blocks, expected ({GRAPH_ITEMS},)")
    return _GRAPH["handle"]


class ToDaskBuild:
    """Seconds to build `qx.to_dask(handle, chunks=1)` over 10^4 items (10^4 chunks); includes its
    two RPCs (header, job state). `time_to_dask_materialized` also builds the graph's dict."""

    timeout = 300
    repeat = (3, 10, 20.0)

    def setup(self) -> None:
        self.handle = _graph_handle()

    def time_to_dask(self) -> None:
        import qm_xarray as qx

        qx.to_dask(self.handle, chunks=1)

    def time_to_dask_materialized(self) -> None:
        import qm_xarray as qx

        dict(qx.to_dask(self.handle, chunks=1).__dask_graph__())


def measure_graph_build(repeats: int = 20) -> dict[str, Any]:
    """Best and median seconds of the two `ToDaskBuild` operations (for the script)."""
    import statistics
    import time

    import qm_xarray as qx

    handle = _graph_handle()
    out = {}
    for name, fn in (("to_dask", lambda: qx.to_dask(handle, chunks=1)),
                     ("to_dask_materialized", lambda: dict(qx.to_dask(handle, chunks=1).__dask_graph__()))):
        ts = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - start)
        out[name] = {"best_s": min(ts), "median_s": statistics.median(ts)}
    return out


# --------------------------------------------------------------------------- script


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(fig: dict[str, Any], rpcs: dict[str, Any] | None, graph: dict[str, Any] | None) -> list[str]:
    lines = [f"# {fig['nbytes'] // MiB} MiB float64: ds[var].sum().compute(scheduler='threads') vs fetch_all,"
             f" {os.cpu_count()} CPUs, best of {fig['rounds']} interleaved rounds (GB/s = 1e9 bytes/s)",
             f"{'run':25} {'chunk':>9} {'best GB/s':>9} {'median GB/s':>11} {'vs fetch_all':>12}"
             f" {'round med':>9} {'client CPU ms':>13} {'server CPU ms':>13}"]
    for name in fig["names"]:
        f = fig[name]
        chunk = ("" if name == "fetch_all" else f"{fig['default_mib']:g} MiB" if name == NO_SKIPNA
                 else f"{fig['chunk_bytes'][name[5:-3]] / MiB:.0f} MiB")
        cpu = fig["cpu_ms"][name]
        lines.append(f"{name:25} {chunk:>9} {f['gbps']:9.3f} {f['gbps_median']:11.3f} {f['ratio']:12.3f}"
                     f" {f['round_ratio_median']:9.3f} {cpu['client']:13.1f} {cpu['server']:13.1f}")
    default = fig[_lazy_name(int(fig["default_mib"]))]
    lines.append(f"# fastest chunk size: {fig['best_chunk_mib']} MiB (best time),"
                 f" {fig['best_chunk_mib_round_median']} MiB (median round ratio);"
                 f" default {fig['default_mib']:g} MiB")
    lines.append(f"# target: default chunks vs fetch_all >= {TARGET_VS_FETCH_ALL}: {default['ratio']:.3f}"
                 f" (round median {default['round_ratio_median']:.3f})"
                 f" {_verdict(default['ratio'] >= TARGET_VS_FETCH_ALL)};"
                 f" with skipna=False {fig[NO_SKIPNA]['ratio']:.3f}"
                 f" (round median {fig[NO_SKIPNA]['round_ratio_median']:.3f})")
    if rpcs is not None:
        lines.append(f"# open_dataset of a job of {rpcs['n_streams']} save_all streams: RPCs at the server"
                     f" (target <= {rpcs['target']}), item bytes sent (target 0)")
        for way in ("job", "manager-v1", "manager-v2", "manager-v2-multi"):
            c = rpcs[way]
            calls = ", ".join(f"{m} {n}" for m, n in c["calls"].items())
            lines.append(f"{way:17} {c['total']:4d} RPCs, {c['item_bytes']} item bytes"
                         f" {_verdict(c['total'] <= rpcs['target'] and c['item_bytes'] == 0)}  ({calls})")
        built = rpcs["manager_construction"]["total"]
        lines.append(f"# (building the three managers beforehand: {built} RPCs, not counted above)")
    if graph is not None:
        for name, g in graph.items():
            lines.append(f"{name:22} over {GRAPH_ITEMS} chunks: best {1000 * g['best_s']:.2f} ms,"
                         f" median {1000 * g['median_s']:.2f} ms")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_lazy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8, help="measured rounds (default 8)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first (default 1)")
    parser.add_argument("--mib", type=int, default=NBYTES // MiB, help="stream size in MiB (default 256)")
    parser.add_argument("--chunks", default=",".join(map(str, CHUNK_MIB)),
                        help="chunk sizes in MiB, comma-separated (default 2,8,16,32)")
    parser.add_argument("--only-throughput", action="store_true", help="skip the RPC counts and graph build")
    args = parser.parse_args(argv)
    chunks = tuple(int(c) for c in args.chunks.split(",") if c)
    with LazyBench(args.mib * MiB, chunks) as bench:
        fig = bench.measure(rounds=args.rounds, warmup=args.warmup)
    rpcs = graph = None
    if not args.only_throughput:
        rpcs = measure_open_rpcs()
        graph = measure_graph_build()
    print("\n".join(report(fig, rpcs, graph)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
