"""Persistence: `export_zarr` throughput against `fetch_all`, and the lag of follow mode.

1. Throughput. A finished 256 MiB float64 stream (`_servers.py` `qx` server in another process, job
   `bench`, stream `data`), exported with `qx.export_zarr(job, path, compression=None)` and with
   the default compressor (Blosc zstd 3, byte shuffle), each to a new store (removed after each
   call, outside the timing), interleaved in the same rounds with `fetch_all(flat_struct=True)` of
   the same stream and with a plain write of the same 256 MiB to a file in the same directory
   (the storage's own ceiling). Ratios are export/fetch_all throughput (best/best, and the median
   of per-round ratios); target >= 0.5 without compression. The stores go to a directory under
   /dev/shm (memory, so that the figures are about the code rather than the disk) unless
   `QX_BENCH_EXPORT_DIR` (or the script's `--dir`) names another; the first export is checked
   value for value. Note the benchmark's values are smooth (an arithmetic sequence), so the
   default compressor shrinks them very well; the compressed size is reported.
2. Follow-mode lag. A job runs in a server child process (`_jobs.py` `follow`), appending a batch
   of 1000 float64 items every 50 ms; `export_zarr(job, path, follow=True, every=0.05)` runs in
   another child process; this process polls the store's `qm_committed` attribute (the commit
   marker, in the root `zarr.json`) every millisecond or two. The lag of an append is the time
   from the append (its monotonic time, reported by the server child) to the first poll that
   sees the store committed up to it. Reported: median, p95 and max.

asv: `ExportThroughput` and `FollowLag` (`track_*`, measured in `setup_cache`). Script:
`python -m benchmarks.bench_export [--rounds N] [--dir DIR]` prints every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    from . import _jobs, _servers
except ImportError:  # asv imports benchmark files from the benchmark directory
    import _jobs  # type: ignore[no-redef]
    import _servers  # type: ignore[no-redef]

MiB = 1024 * 1024
NBYTES = 256 * MiB
ROUNDS = 6                  # asv; the script default too
FOLLOW_BATCH = 1000         # items per append
FOLLOW_PERIOD = 0.05        # seconds between appends
FOLLOW_APPENDS = 60         # asv; the script defaults to 100
FOLLOW_EVERY = 0.05         # export_zarr(every=...)
POLL_SECONDS = 0.001
TARGET_VS_FETCH_ALL = 0.5


def export_dir() -> str | None:
    """Where the benchmark's stores go: $QX_BENCH_EXPORT_DIR, else /dev/shm if there, else the
    system's temporary directory."""
    chosen = os.environ.get("QX_BENCH_EXPORT_DIR")
    if chosen:
        return chosen
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class ExportBench:
    """The 256 MiB server, a Job on it, its `data` handle, and a scratch directory."""

    def __init__(self, nbytes: int = NBYTES, directory: str | None = None, alt_path: str | None = None):
        import numpy as np

        import qm_xarray as qx

        self.nbytes, self.n_items = nbytes, nbytes // 8
        self._np = np
        self.expected = _servers.values(self.n_items)
        self.tmp = Path(tempfile.mkdtemp(prefix="qx-bench-export-", dir=directory or export_dir()))
        self.server = None
        try:
            self.server = _servers.start_server("qx", nbytes)
            self.job = qx.connect(self.server.address).job(_servers.JOB_ID)
            self.handle = self.job.result_handles[_servers.STREAM]
        except BaseException:
            self.close()
            raise
        self.sizes: dict[str, int] = {}
        self.checked: set[str] = set()
        self.alt = None if alt_path is None else load_alt_persist(alt_path)

    def _export(self, compression: str | None, alt: bool = False) -> Any:
        import qm_xarray as qx

        export_zarr = self.alt.export_zarr if alt else qx.export_zarr  # type: ignore[union-attr]
        path = self.tmp / f"export-{compression or 'none'}{'-alt' if alt else ''}.zarr"
        return export_zarr(self.job, path, compression=compression, progress=False)

    def _write(self) -> Any:
        with open(self.tmp / "plain.bin", "wb") as f:
            f.write(memoryview(self.expected).cast("B"))
        return self.tmp / "plain.bin"

    def calls(self) -> dict[str, Any]:
        fns = {"fetch_all": lambda: self.handle.fetch_all(flat_struct=True),
               "export-none": lambda: self._export(None),
               "export-default": lambda: self._export("default"),
               "plain-write": self._write}
        if self.alt is not None:
            fns["export-none:alt"] = lambda: self._export(None, alt=True)
            fns["export-default:alt"] = lambda: self._export("default", alt=True)
        return fns

    def after(self, name: str, result: Any) -> None:
        """Check (fully, the first time) and remove what a call left, outside the timing."""
        np = self._np
        if name == "fetch_all":
            if result.shape != (self.n_items,):
                raise AssertionError(f"fetch_all: shape {result.shape}")
            return
        path = Path(result) if name == "plain-write" else Path(result.path)
        if name.startswith("export"):
            if not result.complete or result.counts != {"data_item": self.n_items}:
                raise AssertionError(f"{name}: incomplete export {result}")
            self.sizes[name] = _tree_bytes(path)
            if name not in self.checked:
                # read back with zarr itself: a read through xr.open_zarr (dask) leaves this process
                # in a state where zarr's writes cost less CPU (measured: the write time of an
                # export drops by about a third), which a fresh `qm-xarray export` process lacks
                import zarr

                stored = zarr.open_group(str(path), mode="r")[_servers.STREAM][:]
                if not np.array_equal(stored, self.expected):
                    raise AssertionError(f"{name}: the exported values differ from the stream's")
                del stored
                self.checked.add(name)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()

    def measure(self, rounds: int = ROUNDS, warmup: int = 1) -> dict[str, Any]:
        fns = self.calls()
        cpu: dict[str, Any] = {}
        pids = {name: self.server.pid for name in fns if name != "plain-write"}  # type: ignore[union-attr]
        times = _jobs.interleave(fns, rounds, warmup, self.after, cpu, pids)
        fig = _jobs.figures(self.nbytes, times, base="fetch_all")
        fig["cpu_ms"] = _jobs.mean_cpu_ms(cpu)
        fig["names"] = list(fns)
        fig["store_bytes"] = dict(self.sizes)
        fig["directory"] = str(self.tmp.parent)
        return fig

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> ExportBench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_alt_persist(path: str) -> Any:
    """`qm_xarray.persist` from a scratch copy of the repository at `path` (A/B tests of an export
    change in one process): loaded as the package `qm_xarray._alt_persist`, so that its relative
    imports take the scratch copy's `export.py` and `store.py` and the installed rest of qm_xarray."""
    import importlib.util
    import sys

    import qm_xarray  # noqa: F401 - the parent package of the alternative

    name = "qm_xarray._alt_persist"
    if name in sys.modules:
        return sys.modules[name]
    folder = Path(path) / "qm_xarray" / "persist"
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    if spec is None or spec.loader is None:
        raise ImportError(f"no qm_xarray/persist package under {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _committed(path: Path) -> int | None:
    """The store's committed item count (sum over item dims), or None if not readable now."""
    try:
        meta = json.loads((path / "zarr.json").read_bytes())
    except (OSError, ValueError):
        return None  # not there yet, or caught mid-write
    value = meta.get("attributes", {}).get("qm_committed")
    return None if value is None else sum(int(v) for v in value.values())


def measure_follow_lag(appends: int = FOLLOW_APPENDS, batch: int = FOLLOW_BATCH,
                       period: float = FOLLOW_PERIOD, every: float = FOLLOW_EVERY,
                       directory: str | None = None, timeout: float = 120.0) -> dict[str, Any]:
    """Lag from each append to the store's commit of it, with the exporter in a child process."""
    tmp = Path(tempfile.mkdtemp(prefix="qx-bench-follow-", dir=directory or export_dir()))
    path = tmp / "follow.zarr"
    try:
        with _jobs.start_follow(batch) as server:
            exporter = _jobs.start_exporter(server.address, _jobs.FOLLOW_JOB, str(path), every)
            try:
                deadline = time.monotonic() + timeout
                while (_committed(path) or 0) < batch:  # the exporter's first round is done
                    if exporter.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the exporter did not commit its first round (status"
                                           f" {exporter.proc.poll()})")
                    time.sleep(0.01)
                server.request(f"go {appends} {period}")
                seen: list[tuple[float, int]] = []
                last = batch
                total = batch * (appends + 1)
                while last < total:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the store had {last} of {total} items after {timeout} s")
                    count = _committed(path)
                    now = time.monotonic()
                    if count is not None and count > last:
                        seen.append((now, count))
                        last = count
                    time.sleep(POLL_SECONDS)
                done = exporter.read_json(timeout=max(deadline - time.monotonic(), 1.0))
                stamps = server.request("times")["appends"]
            finally:
                exporter.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lags = []
    for at, count in stamps:
        first = next(t for t, c in seen if c >= count)
        lags.append(first - at)
    lags.sort()
    p95 = lags[min(len(lags) - 1, max(0, round(0.95 * len(lags)) - 1))]
    return {"appends": len(lags), "batch": batch, "period_s": period, "every_s": every,
            "lag_median_ms": 1000 * statistics.median(lags), "lag_p95_ms": 1000 * p95,
            "lag_max_ms": 1000 * lags[-1], "lag_min_ms": 1000 * lags[0],
            "commits_seen": len(seen), "export_rounds": done["rounds"], "export_state": done["state"]}


# --------------------------------------------------------------------------- asv


class ExportThroughput:
    """GB/s of `export_zarr` (no compression, default compressor) and of `fetch_all`, and the
    ratios export/fetch_all from the same rounds (target >= 0.5 without compression)."""

    rounds = 1
    timeout = 600

    def setup_cache(self) -> dict[str, Any]:
        with ExportBench() as bench:
            return bench.measure(rounds=ROUNDS)

    setup_cache.timeout = 600  # type: ignore[attr-defined]

    def track_fetch_all_gbps(self, fig: dict[str, Any]) -> float:
        return fig["fetch_all"]["gbps"]

    def track_export_none_gbps(self, fig: dict[str, Any]) -> float:
        return fig["export-none"]["gbps"]

    def track_export_default_gbps(self, fig: dict[str, Any]) -> float:
        return fig["export-default"]["gbps"]

    def track_plain_write_gbps(self, fig: dict[str, Any]) -> float:
        return fig["plain-write"]["gbps"]

    def track_export_none_vs_fetch_all(self, fig: dict[str, Any]) -> float:
        return fig["export-none"]["ratio"]

    def track_export_default_vs_fetch_all(self, fig: dict[str, Any]) -> float:
        return fig["export-default"]["ratio"]

    def track_export_none_vs_fetch_all_round_median(self, fig: dict[str, Any]) -> float:
        return fig["export-none"]["round_ratio_median"]

    def track_export_default_vs_fetch_all_round_median(self, fig: dict[str, Any]) -> float:
        return fig["export-default"]["round_ratio_median"]

    track_fetch_all_gbps.unit = track_export_none_gbps.unit = "GB/s"  # type: ignore[attr-defined]
    track_export_default_gbps.unit = track_plain_write_gbps.unit = "GB/s"  # type: ignore[attr-defined]
    track_export_none_vs_fetch_all.unit = "ratio"  # type: ignore[attr-defined]
    track_export_default_vs_fetch_all.unit = "ratio"  # type: ignore[attr-defined]
    track_export_none_vs_fetch_all_round_median.unit = "ratio"  # type: ignore[attr-defined]
    track_export_default_vs_fetch_all_round_median.unit = "ratio"  # type: ignore[attr-defined]


class FollowLag:
    """Milliseconds from an append (every 50 ms) to its commit in the zarr store, while
    `export_zarr(follow=True, every=0.05)` runs in another process: median, p95, max."""

    rounds = 1
    timeout = 300

    def setup_cache(self) -> dict[str, Any]:
        return measure_follow_lag()

    setup_cache.timeout = 300  # type: ignore[attr-defined]

    def track_lag_median(self, fig: dict[str, Any]) -> float:
        return fig["lag_median_ms"]

    def track_lag_p95(self, fig: dict[str, Any]) -> float:
        return fig["lag_p95_ms"]

    def track_lag_max(self, fig: dict[str, Any]) -> float:
        return fig["lag_max_ms"]

    track_lag_median.unit = track_lag_p95.unit = track_lag_max.unit = "ms"  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- script


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(fig: dict[str, Any] | None, lag: dict[str, Any] | None) -> list[str]:
    lines = []
    if fig is not None:
        lines += [f"# export_zarr of a finished {fig['nbytes'] // MiB} MiB float64 stream vs fetch_all,"
                  f" stores under {fig['directory']}, {os.cpu_count()} CPUs, best of {fig['rounds']}"
                  f" interleaved rounds (GB/s = 1e9 bytes/s)",
                  f"{'run':15} {'best GB/s':>9} {'median GB/s':>11} {'vs fetch_all':>12} {'round med':>9}"
                  f" {'client CPU ms':>13} {'server CPU ms':>13} {'store MiB':>9}"]
        for name in fig["names"]:
            f, cpu = fig[name], fig["cpu_ms"][name]
            size = fig["store_bytes"].get(name)
            server = f"{cpu['server']:13.1f}" if cpu["server"] is not None else f"{'':>13}"
            lines.append(f"{name:15} {f['gbps']:9.3f} {f['gbps_median']:11.3f} {f['ratio']:12.3f}"
                         f" {f['round_ratio_median']:9.3f} {cpu['client']:13.1f} {server}"
                         f" {'' if size is None else f'{size / MiB:9.1f}'}")
        for name in fig["names"]:
            if name.endswith(":alt"):
                base = name[:-4]
                median = fig[name]["round_ratio_median"] / fig[base]["round_ratio_median"]
                lines.append(f"# {name} vs {base}: {fig[base]['best_s'] / fig[name]['best_s']:.3f}"
                             f" (round median {median:.3f})")
        r = fig["export-none"]["ratio"]
        lines.append(f"# target: export (no compression) vs fetch_all >= {TARGET_VS_FETCH_ALL}: {r:.3f}"
                     f" (round median {fig['export-none']['round_ratio_median']:.3f})"
                     f" {_verdict(r >= TARGET_VS_FETCH_ALL)};"
                     f" default compressor: {fig['export-default']['ratio']:.3f}"
                     f" (round median {fig['export-default']['round_ratio_median']:.3f})")
    if lag is not None:
        lines.append(f"# follow mode: {lag['appends']} appends of {lag['batch']} items every"
                     f" {1000 * lag['period_s']:.0f} ms, export_zarr(follow=True, every={lag['every_s']})"
                     f" in another process; {lag['commits_seen']} commits seen,"
                     f" {lag['export_rounds']} export rounds")
        lines.append(f"follow lag: median {lag['lag_median_ms']:.1f} ms, p95 {lag['lag_p95_ms']:.1f} ms,"
                     f" max {lag['lag_max_ms']:.1f} ms, min {lag['lag_min_ms']:.1f} ms")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6, help="measured rounds (default 6)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first (default 1)")
    parser.add_argument("--mib", type=int, default=NBYTES // MiB, help="stream size in MiB (default 256)")
    parser.add_argument("--dir", default=None, help="where the stores go (default /dev/shm, or"
                        " $QX_BENCH_EXPORT_DIR)")
    parser.add_argument("--appends", type=int, default=100, help="follow mode: appends (default 100)")
    parser.add_argument("--every", type=float, default=FOLLOW_EVERY, help="follow mode: export_zarr every=")
    parser.add_argument("--only", choices=("throughput", "follow"), default=None)
    parser.add_argument("--alt-path", default=None,
                        help="A/B test of an export change: also run export_zarr from the"
                             " qm_xarray/persist of this scratch copy of the repository, interleaved"
                             " (as export-none:alt, export-default:alt)")
    args = parser.parse_args(argv)
    fig = lag = None
    if args.only != "follow":
        with ExportBench(args.mib * MiB, args.dir, args.alt_path) as bench:
            fig = bench.measure(rounds=args.rounds, warmup=args.warmup)
    if args.only != "throughput":
        lag = measure_follow_lag(appends=args.appends, every=args.every, directory=args.dir)
    print("\n".join(report(fig, lag)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
