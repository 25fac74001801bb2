"""Helpers of bench_fetch, bench_lazy and bench_export: job servers with counters in child
processes, the follow-mode exporter child, interleaved timing, and memory peaks.

The single-stream servers of these benchmarks are those of `_servers.py` (`start_server("qx", n)`:
job `bench`, stream `data` of n // 8 float64 values; `start_server("raw", n)`: the same bytes as
raw grpcio messages). This file adds, run as a script in a child process (`python _jobs.py KIND
...`), which prints one JSON line (its port) and then answers one JSON line per command read on
stdin, until stdin reaches end of file (parent closed it or died) or it reads `stop`:

- `many NSTREAMS ITEMS BIG`: a `qx.serve` of job `many` (NSTREAMS finished save_all float64
  streams `s000`... of ITEMS items) and job `items` (one finished stream `data` of BIG items),
  behind a `qm_xarray.testing.RecordingInterceptor` and an `ItemBytesInterceptor`. Commands:
  `reset` (forget the calls so far), `counts` (reply `{"calls": {method: n}, "item_bytes": n}`).
- `follow BATCH`: job `follow`, running, one float64 stream `data` holding one batch of BATCH
  items. Command `go N PERIOD`: append N more batches, one every PERIOD seconds (in a thread),
  then finish the job; reply at once. Command `times`: wait for the appends to end, reply
  `{"appends": [[time.monotonic() after the append, count after it], ...]}` (the monotonic clock
  is system-wide on Linux, so the parent compares it with its own).
- `export ADDRESS JOB PATH EVERY COMPRESSION`: not a server: runs `qx.export_zarr(job, PATH,
  follow=True, every=EVERY)` and prints the result as one JSON line when the job has ended.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import grpc

try:
    from . import _servers
except ImportError:  # run as a plain file (the child processes, or asv's flat import)
    import _servers  # type: ignore[no-redef]

MiB = 1024 * 1024
MANY_JOB = "many"
ITEMS_JOB = "items"
FOLLOW_JOB = "follow"
DATA_METHODS = {"GetJobNamedResult": "v1", "GetNamedResult": "v2", "GetNamedResults": "v2"}


# --------------------------------------------------------------------------- timing


def interleave(fns: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1,
               after: Callable[[str, Any], None] | None = None,
               cpu: dict[str, dict[str, list[float]]] | None = None,
               server_pids: dict[str, int] | None = None) -> dict[str, list[float]]:
    """`warmup` unmeasured rounds, then `rounds` rounds of every function, in an order rotated
    by one each round (so machine noise hits them alike); wall seconds per call by name.

    `after(name, result)` runs outside the timing after each call (checks; dropping the result).
    With a `cpu` dict, the CPU seconds of each measured call are added to it by name: `client`
    (this process, all threads) and, for names in `server_pids`, `server` (the CPU of the server
    process that name fetches from, read from /proc).
    """
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            pid = (server_pids or {}).get(name)
            server0, client0 = process_cpu(pid), own_cpu()
            start = time.perf_counter()
            result = fns[name]()
            elapsed = time.perf_counter() - start
            client1, server1 = own_cpu(), process_cpu(pid)
            if after is not None:
                after(name, result)
            del result
            if r >= warmup:
                times[name].append(elapsed)
                if cpu is not None:
                    entry = cpu.setdefault(name, {"client": [], "server": []})
                    entry["client"].append(client1 - client0)
                    if pid is not None:
                        entry["server"].append(server1 - server0)
    return times


def process_cpu(pid: int | None) -> float:
    """User + system CPU seconds of process `pid` (all threads) from /proc; 0 without one."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def mean_cpu_ms(cpu: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float | None]]:
    """Mean CPU milliseconds per call, by name and side (None when not measured)."""
    return {name: {side: (1000 * statistics.mean(v) if v else None) for side, v in sides.items()}
            for name, sides in cpu.items()}


def figures(nbytes: int, times: dict[str, list[float]], base: str | None = None) -> dict[str, Any]:
    """Per name: best and median seconds and GB/s (1e9 bytes/s); with `base`, each name's ratio
    of throughput to it: best/best (`ratio`) and the median over rounds of the ratio within the
    round (`round_ratio_median`, steadier when other work loads the machine)."""
    out: dict[str, Any] = {"nbytes": nbytes, "rounds": min(len(t) for t in times.values())}
    for name, ts in times.items():
        best, median = min(ts), statistics.median(ts)
        out[name] = {"best_s": best, "median_s": median, "gbps": nbytes / best / 1e9,
                     "gbps_median": nbytes / median / 1e9, "times_s": list(ts)}
    if base is not None:
        for name, ts in times.items():
            out[name]["ratio"] = min(times[base]) / min(ts)
            out[name]["round_ratio_median"] = statistics.median(
                b / t for b, t in zip(times[base], ts))
    return out


def ratio(times: dict[str, list[float]], name: str, base: str) -> dict[str, float]:
    """Throughput of `name` relative to `base` from the same rounds: best/best and round median."""
    return {"ratio": min(times[base]) / min(times[name]),
            "round_ratio_median": statistics.median(b / t for b, t in zip(times[base], times[name]))}


# --------------------------------------------------------------------------- memory


def _status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    """Reset this process's peak RSS (Linux: `5` into /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory(fn: Callable[[], Any]) -> dict[str, Any]:
    """Peak extra memory of one call of `fn`, relative to the size of what it returns.

    `tracemalloc_ratio`: the tracemalloc peak during the call above what was traced before it,
    over `result.nbytes` (Python and numpy allocations; gRPC's C buffers are not traced).
    `rss_ratio`: the rise of the process's peak RSS during the call over `result.nbytes` (every
    allocation; None where /proc/self/clear_refs is not available). A result built with one copy
    per byte is 1.0 on both.
    """
    gc.collect()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        rss0 = _status("VmRSS") if _reset_hwm() else None
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - before
        hwm = _status("VmHWM") if rss0 is not None else None
    finally:
        if not was_tracing:
            tracemalloc.stop()
    nbytes = int(getattr(result, "nbytes", 0)) or 1
    del result
    gc.collect()
    return {"result_bytes": nbytes, "tracemalloc_peak_bytes": peak, "tracemalloc_ratio": peak / nbytes,
            "rss_ratio": None if hwm is None or rss0 is None else (hwm - rss0) / nbytes}


# --------------------------------------------------------------------------- reference client


def reference_available() -> str | None:
    """None when the qm-qua reference client imports, else why not."""
    try:
        import qm._stream_results._streams_manager  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any failure means: skip the reference figures
        return f"qm-qua is not available ({type(exc).__name__}: {exc})"
    return None


def quiet_reference_logs() -> None:
    """qm-qua logs an INFO line per session on import; keep the benchmark output readable."""
    import logging

    logging.getLogger("qm").setLevel(logging.WARNING)


# --------------------------------------------------------------------------- parent side

JobServer = _servers.ServerProcess  # a child of this file: `info`, `request(command)`, `stop()`


def start_child(*args: str, timeout: float = _servers.START_TIMEOUT, first_line: bool = True) -> JobServer:
    """Run this file as a script with `args` in a child process; wait for its first JSON line."""
    return _servers.start_script(__file__, *args, timeout=timeout, first_line=first_line)


def start_many(n_streams: int, items: int, big_items: int) -> JobServer:
    """The `many` server: job `many` of `n_streams` streams, job `items` of one `big_items` stream."""
    return start_child("many", str(n_streams), str(items), str(big_items))


def start_follow(batch: int) -> JobServer:
    """The `follow` server: a running job whose stream `data` holds one batch; see `go`."""
    return start_child("follow", str(batch))


def start_exporter(address: str, job_id: str, path: str, every: float,
                   compression: str = "default") -> JobServer:
    """`export_zarr(follow=True)` in a child process; its one JSON line comes when it ends."""
    return start_child("export", address, job_id, path, repr(every), compression, first_line=False)


# --------------------------------------------------------------------------- child side


class ItemBytesInterceptor(grpc.ServerInterceptor):
    """Counts the item bytes the data RPCs send (the `data` payload of every response message)."""

    def __init__(self) -> None:
        self.item_bytes = 0
        self.messages = 0
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self.item_bytes = self.messages = 0

    def _count(self, protocol: str, message: Any) -> None:
        from qm_xarray.wire import codec

        if not isinstance(message, (bytes, bytearray, memoryview)):
            message = message.SerializeToString()
        if protocol == "v1":
            _, data = codec.decode_v1_data(message)
        else:
            data = codec.decode_v2_result(message).data
        with self._lock:
            self.item_bytes += len(data)
            self.messages += 1

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        method = details.method.rsplit("/", 1)[-1]
        protocol = DATA_METHODS.get(method)
        if handler is None or protocol is None or not handler.unary_stream:
            return handler
        inner, count = handler.unary_stream, self._count

        def stream(request: Any, context: Any) -> Iterator[Any]:
            for message in inner(request, context):
                count(protocol, message)
                yield message

        return grpc.unary_stream_rpc_method_handler(
            stream, handler.request_deserializer, handler.response_serializer)


def _serve_many(n_streams: int, items: int, big_items: int) -> tuple[Any, Callable[[str], Any]]:
    import numpy as np

    import qm_xarray as qx
    from qm_xarray.testing import RecordingInterceptor

    store = qx.ResultStore()
    job = store.create_job(MANY_JOB, streams=[{"name": f"s{i:03d}", "expected_count": items}
                                              for i in range(n_streams)])
    for i in range(n_streams):
        job.stream(f"s{i:03d}").append(np.arange(items, dtype=np.float64) + i)
    job.finish()
    big = store.create_job(ITEMS_JOB, streams=[{"name": "data", "expected_count": big_items}])
    big.stream("data").append(np.arange(big_items, dtype=np.float64))
    big.finish()
    recorder = RecordingInterceptor()
    item_bytes = ItemBytesInterceptor()
    server = qx.serve(store, host="127.0.0.1", port=0, interceptors=[recorder, item_bytes])

    def command(line: str) -> Any:
        if line == "reset":
            recorder.clear()
            item_bytes.clear()
            return {"ok": True}
        if line == "counts":
            calls: dict[str, int] = {}
            for method in recorder.methods():
                calls[method] = calls.get(method, 0) + 1
            return {"calls": calls, "total": sum(calls.values()), "item_bytes": item_bytes.item_bytes,
                    "data_messages": item_bytes.messages}
        raise ValueError(f"unknown command {line!r}")

    return server, command


def _serve_follow(batch: int) -> tuple[Any, Callable[[str], Any]]:
    import numpy as np

    import qm_xarray as qx

    store = qx.ResultStore()
    job = store.create_job(FOLLOW_JOB, streams=[{"name": "data"}])
    stream = job.stream("data")
    stream.append(np.arange(batch, dtype=np.float64))
    server = qx.serve(store, host="127.0.0.1", port=0)
    appends: list[tuple[float, int]] = []
    worker: list[threading.Thread] = []

    def run(n: int, period: float) -> None:
        next_at = time.monotonic()
        for k in range(n):
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))
            count = stream.append(np.arange(batch, dtype=np.float64) + (k + 1) * batch)
            appends.append((time.monotonic(), count))
        job.finish()

    def command(line: str) -> Any:
        words = line.split()
        if words[0] == "go":
            thread = threading.Thread(target=run, args=(int(words[1]), float(words[2])), daemon=True)
            worker.append(thread)
            thread.start()
            return {"ok": True, "count": stream.count}
        if words[0] == "times":
            for thread in worker:
                thread.join()
            return {"appends": appends}
        raise ValueError(f"unknown command {line!r}")

    return server, command


def _export(address: str, job_id: str, path: str, every: float, compression: str) -> int:
    import qm_xarray as qx

    start = time.monotonic()
    result = qx.export_zarr(qx.connect(address).job(job_id), path, follow=True, every=every,
                            compression=None if compression == "none" else compression, progress=False)
    sys.stdout.write(json.dumps({"rounds": result.rounds, "counts": result.counts, "state": result.state,
                                 "complete": result.complete, "seconds": time.monotonic() - start}) + "\n")
    sys.stdout.flush()
    return 0


def _main(argv: list[str]) -> int:
    kind, args = argv[0], argv[1:]
    if kind == "export":
        return _export(args[0], args[1], args[2], float(args[3]), args[4])
    if kind == "many":
        server, command = _serve_many(int(args[0]), int(args[1]), int(args[2]))
    elif kind == "follow":
        server, command = _serve_follow(int(args[0]))
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    _servers.serve_commands({"kind": kind, "port": server.port, "pid": os.getpid()}, command)
    server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
