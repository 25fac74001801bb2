"""Append throughput of the ResultStore: in memory, durable (append-only files), durable + fsync.

The durable store writes each append to the OS before acknowledging it (survives kill -9 of the
server); with `sync=True` it also fsyncs (survives a power loss). 128 MiB of float64 are appended
in batches of 1 MiB (throughput) and 10^4 single items (per-append overhead).

asv: `StoreAppend.track_*` (MB/s, appends/s and the durable/memory ratio, measured once in
`setup_cache`). Script: `python -m benchmarks.bench_store` prints the figures.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from typing import Any

import numpy as np

import qm_xarray as qx

MiB = 1024 * 1024
TOTAL = 128 * MiB
BATCH = 1 * MiB
SMALL_APPENDS = 10_000
KINDS = ("memory", "durable", "durable+fsync")


def _store(kind: str, root: str) -> qx.ResultStore:
    if kind == "memory":
        return qx.ResultStore()
    return qx.ResultStore(f"{root}/{kind}", sync=kind.endswith("fsync"))


def measure(rounds: int = 3) -> dict[str, float]:
    """Best-of-`rounds` figures for every kind, interleaved."""
    batch = np.random.default_rng(0).normal(size=BATCH // 8)
    one = np.array([1.0])
    best: dict[str, float] = {}
    for _ in range(rounds):
        for kind in KINDS:
            root = tempfile.mkdtemp(prefix="qx-bench-store-")
            try:
                store = _store(kind, root)
                stream = store.create_job().add_stream("I")
                n = TOTAL // BATCH if kind != "durable+fsync" else 16  # fsync is slow: 16 MiB
                start = time.perf_counter()
                for _ in range(n):
                    stream.append(batch)
                rate = n * BATCH / (time.perf_counter() - start) / 1e6
                small = store.create_job().add_stream("n")
                m = SMALL_APPENDS if kind != "durable+fsync" else 500
                start = time.perf_counter()
                for _ in range(m):
                    small.append(one)
                per_second = m / (time.perf_counter() - start)
            finally:
                shutil.rmtree(root, ignore_errors=True)
            best[f"{kind} MB/s"] = max(best.get(f"{kind} MB/s", 0.0), rate)
            best[f"{kind} appends/s"] = max(best.get(f"{kind} appends/s", 0.0), per_second)
    best["durable/memory MB/s"] = best["durable MB/s"] / best["memory MB/s"]
    return best


class StoreAppend:
    timeout = 600

    def setup_cache(self) -> dict[str, float]:
        return measure()

    def track_memory_mb_s(self, figures: dict[str, float]) -> float:
        return figures["memory MB/s"]

    def track_durable_mb_s(self, figures: dict[str, float]) -> float:
        return figures["durable MB/s"]

    def track_durable_fsync_mb_s(self, figures: dict[str, float]) -> float:
        return figures["durable+fsync MB/s"]

    def track_durable_appends_per_s(self, figures: dict[str, float]) -> float:
        return figures["durable appends/s"]

    def track_durable_over_memory(self, figures: dict[str, float]) -> float:
        return figures["durable/memory MB/s"]


for _name in ("track_memory_mb_s", "track_durable_mb_s", "track_durable_fsync_mb_s"):
    getattr(StoreAppend, _name).unit = "MB/s"
StoreAppend.track_durable_appends_per_s.unit = "appends/s"
StoreAppend.track_durable_over_memory.unit = "ratio"


def main() -> None:
    figures: dict[str, Any] = measure()
    for key, value in figures.items():
        print(f"{key:24s} {value:12.2f}")


if __name__ == "__main__":
    main()
