"""The load measurement of a results server (reliability suite and closing-note figures).

`run_load(...)`: N readers x M fetches while P producers append, against a server subprocess;
returns items/s, fetch latency percentiles, the server's peak RSS and the count of inconsistent
fetches (a fetch that is not a prefix of what was written, or holds a partial item).

`python -m qm_xarray.testing.load [--readers 8 --fetches 25 ...]` prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .processes import ProducerProcess, ServerProcess, cli_supports_store, expected_items

__all__ = ["ServerProcess", "ProducerProcess", "expected_items", "run_load", "LoadFigures",
           "cli_supports_store"]


@dataclass
class LoadFigures:
    readers: int
    fetches_per_reader: int
    producers: int
    fetches: int = 0
    items_fetched: int = 0
    bytes_fetched: int = 0
    items_appended: int = 0
    seconds: float = 0.0
    items_per_second: float = 0.0
    mib_per_second: float = 0.0
    appended_items_per_second: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    latency_max_ms: float = 0.0
    server_peak_rss_mib: float = 0.0
    inconsistent: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_load(readers: int = 8, fetches: int = 25, producers: int = 2, *, width: int = 128,
             batch: int = 256, batches: int = 200, pause: float = 0.005, max_fetch: int = 4096,
             store_dir: str | os.PathLike[str] | None = None, timeout: float = 120.0,
             seed: int = 0) -> LoadFigures:
    """`readers` threads x `fetches` fetches while `producers` threads append; server in a subprocess.

    Each producer appends batches of `batch` known float64 items of `width` elements to a stream of
    its own job, until the readers are done (at most `batches` batches), then finishes the job. Each fetch picks a stream and fetches its tail, a random range or all of it
    (at most `max_fetch` items) through `qx.connect`; it must equal the known items (a prefix of what
    was written, whole items). `store_dir` serves a durable store there (a temporary one if None).
    Nothing here asserts timings: the caller decides what to check.
    """
    import qm_xarray as qx

    figures = LoadFigures(readers, fetches, producers)
    with tempfile.TemporaryDirectory(prefix="qx-load-") as tmp:
        directory = Path(store_dir) if store_dir is not None else Path(tmp) / "store"
        with ServerProcess(directory, log_dir=tmp) as server:
            remote = qx.RemoteStore(server.address, timeout=30.0)
            jobs = [remote.create_job(streams=[{"name": "data", "shape": (width,)}])
                    for _ in range(producers)]
            for job in jobs:  # one item before readers start, so that every stream has data
                job.stream("data").append(expected_items(0, 1, width, seed + jobs.index(job)))
            conn = qx.connect(server.address, timeout=timeout)
            handles = [conn.job(job.id).result_handles["data"] for job in jobs]
            lock = threading.Lock()
            latencies: list[float] = []
            start_barrier = threading.Barrier(readers + producers)
            readers_done = threading.Event()
            readers_left = [readers]
            stop_at = time.monotonic() + timeout

            def note_error(text: str) -> None:
                with lock:
                    if len(figures.errors) < 20:
                        figures.errors.append(text)

            def produce(index: int) -> None:
                writer = jobs[index].stream("data")
                start_barrier.wait()
                count = writer.count
                try:
                    for _ in range(batches):  # until the readers are done (at most `batches`)
                        if readers_done.is_set() or time.monotonic() > stop_at:
                            break
                        count = writer.append(expected_items(count, count + batch, width, seed + index))
                        with lock:
                            figures.items_appended += batch
                        time.sleep(pause)
                    jobs[index].finish()
                except Exception as exc:  # noqa: BLE001 - reported in the figures
                    note_error(f"producer {index}: {type(exc).__name__}: {exc}")

            def read(index: int) -> None:
                try:
                    fetch_loop(index)
                finally:
                    with lock:
                        readers_left[0] -= 1
                        if not readers_left[0]:
                            readers_done.set()

            def fetch_loop(index: int) -> None:
                rng = np.random.default_rng(seed * 1000 + index)
                start_barrier.wait()
                for _ in range(fetches):
                    if time.monotonic() > stop_at:
                        break
                    which = int(rng.integers(producers))
                    handle = handles[which]
                    t0 = time.perf_counter()
                    try:
                        count = handle.count_so_far()
                        mode = rng.integers(3)
                        if mode == 0:  # the tail
                            lo = max(0, count - max_fetch)
                        elif mode == 1:  # a random range
                            lo = int(rng.integers(0, max(1, count)))
                        else:  # everything (bounded)
                            lo = 0
                        hi = min(count, lo + max_fetch)
                        got = handle.fetch(slice(lo, hi), flat_struct=True)
                    except Exception as exc:  # noqa: BLE001 - counted as inconsistent
                        with lock:
                            figures.inconsistent += 1
                        note_error(f"reader {index}: {type(exc).__name__}: {exc}")
                        continue
                    elapsed = time.perf_counter() - t0
                    got = np.asarray(got).reshape(-1, width) if np.size(got) else np.empty((0, width))
                    want = expected_items(lo, lo + len(got), width, seed + which)
                    ok = len(got) == hi - lo and np.array_equal(got, want)
                    with lock:
                        latencies.append(elapsed)
                        figures.fetches += 1
                        figures.items_fetched += len(got)
                        figures.bytes_fetched += got.nbytes
                        if not ok:
                            figures.inconsistent += 1
                    if not ok:
                        note_error(f"reader {index}: fetch [{lo}:{hi}] of job {jobs[which].id} "
                                   f"returned {len(got)} items that are not the written ones")

            threads = [threading.Thread(target=produce, args=(i,), daemon=True) for i in range(producers)]
            threads += [threading.Thread(target=read, args=(i,), daemon=True) for i in range(readers)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join(max(0.0, stop_at - time.monotonic()) + 5)
            figures.seconds = time.perf_counter() - t0
            if any(t.is_alive() for t in threads):
                note_error(f"threads still running after {timeout} s")
            figures.server_peak_rss_mib = server.peak_rss() / 2**20
            conn.close()
    if latencies:
        lat = np.sort(np.array(latencies)) * 1e3
        figures.latency_p50_ms = float(np.percentile(lat, 50))
        figures.latency_p99_ms = float(np.percentile(lat, 99))
        figures.latency_max_ms = float(lat[-1])
    if figures.seconds > 0:
        figures.items_per_second = figures.items_fetched / figures.seconds
        figures.mib_per_second = figures.bytes_fetched / 2**20 / figures.seconds
        figures.appended_items_per_second = figures.items_appended / figures.seconds
    return figures


def format_figures(f: LoadFigures) -> str:
    return (f"load: {f.readers} readers x {f.fetches_per_reader} fetches, {f.producers} producers, "
            f"{f.seconds:.2f} s: {f.fetches} fetches, {f.items_per_second:,.0f} items/s "
            f"({f.mib_per_second:,.1f} MiB/s) fetched, {f.appended_items_per_second:,.0f} items/s "
            f"appended; fetch latency p50 {f.latency_p50_ms:.1f} ms, p99 {f.latency_p99_ms:.1f} ms, "
            f"max {f.latency_max_ms:.1f} ms; server peak RSS {f.server_peak_rss_mib:.0f} MiB; "
            f"inconsistent fetches {f.inconsistent}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qm_xarray.testing.load",
                                     description="Measure a results server under load (subprocess).")
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--fetches", type=int, default=25, help="fetches per reader")
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--width", type=int, default=128, help="float64 elements per item")
    parser.add_argument("--batch", type=int, default=256, help="items per append")
    parser.add_argument("--batches", type=int, default=200, help="appends per producer at most")
    parser.add_argument("--max-fetch", type=int, default=4096, help="items per fetch at most")
    parser.add_argument("--store", default=None, help="durable store directory (default: a temporary one)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    figures = run_load(args.readers, args.fetches, args.producers, width=args.width, batch=args.batch,
                       batches=args.batches, max_fetch=args.max_fetch, store_dir=args.store)
    print(format_figures(figures), file=sys.stderr)
    text = json.dumps(figures.as_dict(), indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 1 if figures.inconsistent or figures.errors else 0


if __name__ == "__main__":
    sys.exit(main())
