"""Live loops: `qx.watch` (fetches only new items) against re-fetching every stream with
`fetch_all` at every refresh (the loop users write around the seed API today).

A job on a `qx.serve` server in a child process (this file run as a script, `python bench_live.py
live`; 127.0.0.1, port 0) grows to 10^6 items: two save_all float64 streams `I` and `Q` of
500 000 scalars each (`expected_count` 500 000), in 50 steps of 10 000 items per stream. After
each step the benchmark process refreshes once:

- `watch`: `it = qx.watch(job, every=1e-4)` is created before the first step; each refresh is one
  `next(it)` (the job's counts changed, so watch yields the new snapshot after its `every` pause:
  ~0.1 ms, 50 times). It fetches the new items only and returns a loaded (numpy) Dataset.
- `fetch_all`: `res = job.result_handles` (built in the first refresh: its schema RPC counts),
  then at every refresh `res.is_processing()` and `handle.fetch_all()` for every `(name, handle)
  in res` (the structured array of the seed API; `["value"]` taken as users do).

Both loops run in the same process, against the same server, each on a new job of the same
server (job ids `live-<round>-<loop>`), in rounds whose order alternates (watch first, then
fetch_all first), after one unmeasured warm-up round. Time of a loop: the sum of its 50 refreshes
(the appends, which are commands to the child over a pipe, are outside it); figures are the best
and the median over rounds, and the ratio fetch_all/watch from the same rounds (best/best and the
median of per-round ratios). Bytes: the server child counts the bytes of every gRPC response
message it sends (the serialized messages, after our serializers: every RPC, data and control;
HTTP/2 framing and headers not included), per method, with an interceptor that wraps each
handler's response serializer; and the request bytes it receives. Counted per loop (reset before,
read after); the first measured round's counts are reported (they are the same every round).
CPU seconds of the refreshes (median over rounds): this process's (`time.process_time`, all
threads) and the server child's (/proc, in 10 ms clock ticks, summed per refresh: rough).
Every refresh's sizes are checked, and the last one's values against the expected arrays.

asv: `LiveLoop.track_*` (measured once in `setup_cache`). Script: `python -m benchmarks.bench_live
[--rounds N] [--items N] [--steps N]` prints every figure.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Self

import grpc

try:
    from . import _jobs, _servers
except ImportError:  # asv imports benchmark files from the benchmark directory; the child too
    import _jobs  # type: ignore[no-redef]
    import _servers  # type: ignore[no-redef]

STREAMS = ("I", "Q")
ITEMS = 500_000             # per stream: 10^6 items in all
STEPS = 50                  # appends, each followed by one refresh
EVERY = 1e-4                # watch(every=...): its pause before each poll
ROUNDS = 5                  # asv (plus one warm-up round); the script default too
LOOPS = ("watch", "fetch_all")
DATA_METHODS = ("GetJobNamedResult", "GetNamedResult", "GetNamedResults")


def values(name: str, start: int, stop: int) -> Any:
    """The items [start, stop) of stream `name`: distinct float64 values (Q = -I)."""
    import numpy as np

    v = np.arange(start, stop, dtype=np.float64) * 1.0000001 + 0.5
    return v if name == "I" else -v


# --------------------------------------------------------------------------- child side


class ResponseBytesInterceptor(grpc.ServerInterceptor):
    """Counts, per method, the RPCs, the bytes of every response message the server sends (the
    output of the handler's response serializer, or the raw `bytes` messages of handlers without
    one) and the bytes of the request messages it receives. Cheap: a `len` per message."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self.calls: dict[str, int] = {}
            self.response_bytes: dict[str, int] = {}
            self.response_messages: dict[str, int] = {}
            self.request_bytes: dict[str, int] = {}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"calls": dict(self.calls), "response_bytes": dict(self.response_bytes),
                    "response_messages": dict(self.response_messages),
                    "request_bytes": dict(self.request_bytes)}

    def _add(self, table: dict[str, int], method: str, n: int) -> None:
        with self._lock:
            table[method] = table.get(method, 0) + n

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method.rsplit("/", 1)[-1]
        add, calls, sent, messages, received = (self._add, self.calls, self.response_bytes,
                                                self.response_messages, self.request_bytes)
        serialize, deserialize = handler.response_serializer, handler.request_deserializer

        def counted_serializer(message: Any) -> bytes:
            raw = message if serialize is None else serialize(message)
            add(sent, method, len(raw))
            add(messages, method, 1)
            return raw  # type: ignore[no-any-return]

        def counted_deserializer(raw: bytes) -> Any:
            add(received, method, len(raw))
            return raw if deserialize is None else deserialize(raw)

        def called(behaviour: Callable[..., Any]) -> Callable[..., Any]:
            def run(request: Any, context: Any) -> Any:
                add(calls, method, 1)
                return behaviour(request, context)
            return run

        for kind, build in (("unary_unary", grpc.unary_unary_rpc_method_handler),
                            ("unary_stream", grpc.unary_stream_rpc_method_handler),
                            ("stream_unary", grpc.stream_unary_rpc_method_handler),
                            ("stream_stream", grpc.stream_stream_rpc_method_handler)):
            behaviour = getattr(handler, kind)
            if behaviour is not None:
                return build(called(behaviour), counted_deserializer, counted_serializer)
        return handler


def _serve_live() -> tuple[Any, Callable[[str], Any]]:
    import qm_xarray as qx

    store = qx.ResultStore()
    counter = ResponseBytesInterceptor()
    server = qx.serve(store, host="127.0.0.1", port=0, interceptors=[counter])
    jobs: dict[str, Any] = {}

    def command(line: str) -> Any:
        words = line.split()
        if words[0] == "new":  # new JOB_ID EXPECTED: a running job of streams I and Q
            job = store.create_job(words[1])
            for name in STREAMS:
                job.add_stream(name, dtype="<f8", expected_count=int(words[2]))
            jobs[words[1]] = job
            return {"ok": True}
        if words[0] == "append":  # append JOB_ID START STOP: items [START, STOP) to every stream
            job, start, stop = jobs[words[1]], int(words[2]), int(words[3])
            return {"counts": {name: job.stream(name).append(values(name, start, stop))
                               for name in STREAMS}}
        if words[0] == "finish":
            jobs.pop(words[1]).finish()
            return {"ok": True}
        if words[0] == "reset":
            counter.clear()
            return {"ok": True}
        if words[0] == "counts":
            return counter.snapshot()
        raise ValueError(f"unknown command {line!r}")

    return server, command


def _main_child(argv: list[str]) -> int:
    if argv[:1] != ["live"]:
        raise SystemExit(f"unknown kind {argv[:1]!r}")
    server, command = _serve_live()
    _servers.serve_commands({"kind": "live", "port": server.port, "pid": os.getpid()}, command)
    server.stop(0)
    return 0


# --------------------------------------------------------------------------- parent side


def start_live_server() -> _servers.ServerProcess:
    """The `live` server child: this file as a script."""
    return _servers.start_script(__file__, "live")


def _checked(reply: Any) -> Any:
    if isinstance(reply, dict) and "error" in reply:
        raise RuntimeError(f"the live server child failed: {reply['error']}")
    return reply


class LiveBench:
    """The server child, one connection to it, and the two loops."""

    def __init__(self, items: int = ITEMS, steps: int = STEPS, every: float = EVERY):
        import qm_xarray as qx

        if items % steps:
            raise ValueError(f"items ({items}) must be a multiple of steps ({steps})")
        self.items, self.steps, self.every = items, steps, every
        self.server = start_live_server()
        try:
            self.connection = qx.connect(self.server.address)
            caps = self.connection.capabilities
            self.protocol = ("v2" if caps.is_qop3 else "v1") + (
                "-multi" if caps.supports_multiple_streams_fetching else "")
        except BaseException:
            self.server.stop()
            raise

    def request(self, line: str) -> Any:
        return _checked(self.server.request(line))

    # -- the two loops; each returns (seconds of its refreshes, the server's counts) -----------

    def _loop(self, job_id: str, start: Callable[[Any], Any],
              refresh: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        """Grow a new job in `steps` appends; after each, time one `refresh(state)` (`state` =
        `start(job)`, called inside the first refresh's timing) and check the sizes it saw."""
        np = __import__("numpy")
        per_step = self.items // self.steps
        self.request(f"new {job_id} {self.items}")
        job = self.connection.job(job_id)
        gc.collect()
        self.request("reset")
        state, seconds, last = None, [], None
        client_cpu = server_cpu = 0.0
        for k in range(self.steps):
            self.request(f"append {job_id} {k * per_step} {(k + 1) * per_step}")
            s0, c0, t0 = _jobs.process_cpu(self.server.pid), time.process_time(), time.perf_counter()
            if state is None:
                state = start(job)
            arrays = refresh(state)
            t1, c1, s1 = time.perf_counter(), time.process_time(), _jobs.process_cpu(self.server.pid)
            seconds.append(t1 - t0)
            client_cpu += c1 - c0
            server_cpu += s1 - s0
            sizes = {name: len(a) for name, a in arrays.items()}
            if sizes != {name: (k + 1) * per_step for name in STREAMS}:
                raise AssertionError(f"{job_id} refresh {k + 1}: sizes {sizes}")
            last = arrays
        counts = self.request("counts")
        assert last is not None
        for name in STREAMS:
            if not np.array_equal(np.asarray(last[name]), values(name, 0, self.items)):
                raise AssertionError(f"{job_id}: the last refresh's {name} differs from the stream")
        close = getattr(state, "close", None)
        if close is not None:
            close()  # the watch generator
        self.request(f"finish {job_id}")
        return {"seconds": sum(seconds), "refresh_s": seconds, "counts": counts,
                "client_cpu_s": client_cpu, "server_cpu_s": server_cpu}

    def run_watch(self, job_id: str) -> dict[str, Any]:
        import qm_xarray as qx

        def start(job: Any) -> Iterator[Any]:
            return qx.watch(job, every=self.every)

        def refresh(it: Iterator[Any]) -> dict[str, Any]:
            ds = next(it)
            return {name: ds[name].values for name in STREAMS}

        return self._loop(job_id, start, refresh)

    def run_fetch_all(self, job_id: str) -> dict[str, Any]:
        def start(job: Any) -> Any:
            return job.result_handles

        def refresh(res: Any) -> dict[str, Any]:
            res.is_processing()
            return {name: handle.fetch_all()["value"] for name, handle in res}

        return self._loop(job_id, start, refresh)

    def measure(self, rounds: int = ROUNDS, warmup: int = 1) -> dict[str, Any]:
        runs = {"watch": self.run_watch, "fetch_all": self.run_fetch_all}
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in LOOPS}
        for r in range(warmup + rounds):
            order = LOOPS if r % 2 == 0 else LOOPS[::-1]
            for name in order:
                result = runs[name](f"live-{r}-{name}")
                if r >= warmup:
                    results[name].append(result)
        return figures(results, self)

    def close(self) -> None:
        try:
            self.connection.close()
        finally:
            self.server.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _bytes_of(counts: dict[str, Any]) -> dict[str, int]:
    sent = counts["response_bytes"]
    return {"response_bytes": sum(sent.values()),
            "data_response_bytes": sum(n for m, n in sent.items() if m in DATA_METHODS),
            "request_bytes": sum(counts["request_bytes"].values()),
            "rpcs": sum(counts["calls"].values())}


def figures(results: dict[str, list[dict[str, Any]]], bench: LiveBench) -> dict[str, Any]:
    per_step = bench.items // bench.steps
    item_bytes = 8 * len(STREAMS)
    out: dict[str, Any] = {
        "items": bench.items * len(STREAMS), "steps": bench.steps, "every": bench.every,
        "protocol": bench.protocol, "rounds": len(results["watch"]),
        # the item bytes each loop must move at least: watch the new items once, fetch_all every
        # item present at each refresh
        "min_item_bytes": {"watch": bench.items * item_bytes,
                           "fetch_all": item_bytes * per_step * bench.steps * (bench.steps + 1) // 2},
    }
    for name in LOOPS:
        runs = results[name]
        times = [run["seconds"] for run in runs]
        first = runs[0]["counts"]
        for run in runs[1:]:
            if _bytes_of(run["counts"])["response_bytes"] != _bytes_of(first)["response_bytes"]:
                out.setdefault("bytes_varied", []).append(name)
        out[name] = {"best_s": min(times), "median_s": statistics.median(times), "times_s": times,
                     "last_refresh_s": min(run["refresh_s"][-1] for run in runs),
                     "first_refresh_s": min(run["refresh_s"][0] for run in runs),
                     "client_cpu_s": statistics.median(run["client_cpu_s"] for run in runs),
                     "server_cpu_s": statistics.median(run["server_cpu_s"] for run in runs),
                     **_bytes_of(first), "by_method": first}
    w, f = out["watch"], out["fetch_all"]
    out["time_ratio"] = f["best_s"] / w["best_s"]  # fetch_all / watch: how many times slower
    out["time_ratio_round_median"] = statistics.median(
        a["seconds"] / b["seconds"] for a, b in zip(results["fetch_all"], results["watch"]))
    out["bytes_ratio"] = f["response_bytes"] / w["response_bytes"]
    return out


# --------------------------------------------------------------------------- asv


class LiveLoop:
    """A job growing to 10^6 items (I and Q, 5 * 10^5 each) in 50 appends, one refresh after
    each: `watch` against `fetch_all` of every stream, in the same run. Seconds of the 50
    refreshes (best of 5 rounds), response bytes the server sent, and fetch_all/watch ratios."""

    rounds = 1
    timeout = 600

    def setup_cache(self) -> dict[str, Any]:
        with LiveBench() as bench:
            return bench.measure(rounds=ROUNDS)

    setup_cache.timeout = 600  # type: ignore[attr-defined]

    def track_watch_seconds(self, fig: dict[str, Any]) -> float:
        return float(fig["watch"]["best_s"])

    def track_fetch_all_seconds(self, fig: dict[str, Any]) -> float:
        return float(fig["fetch_all"]["best_s"])

    def track_fetch_all_over_watch_time(self, fig: dict[str, Any]) -> float:
        return float(fig["time_ratio"])

    def track_fetch_all_over_watch_time_round_median(self, fig: dict[str, Any]) -> float:
        return float(fig["time_ratio_round_median"])

    def track_watch_bytes(self, fig: dict[str, Any]) -> float:
        return float(fig["watch"]["response_bytes"])

    def track_fetch_all_bytes(self, fig: dict[str, Any]) -> float:
        return float(fig["fetch_all"]["response_bytes"])

    def track_fetch_all_over_watch_bytes(self, fig: dict[str, Any]) -> float:
        return float(fig["bytes_ratio"])

    def track_watch_client_cpu_seconds(self, fig: dict[str, Any]) -> float:
        return float(fig["watch"]["client_cpu_s"])

    def track_fetch_all_client_cpu_seconds(self, fig: dict[str, Any]) -> float:
        return float(fig["fetch_all"]["client_cpu_s"])

    def track_watch_last_refresh_ms(self, fig: dict[str, Any]) -> float:
        return float(1000 * fig["watch"]["last_refresh_s"])

    def track_fetch_all_last_refresh_ms(self, fig: dict[str, Any]) -> float:
        return float(1000 * fig["fetch_all"]["last_refresh_s"])

    track_watch_seconds.unit = track_fetch_all_seconds.unit = "seconds"  # type: ignore[attr-defined]
    track_fetch_all_over_watch_time.unit = "ratio"  # type: ignore[attr-defined]
    track_fetch_all_over_watch_time_round_median.unit = "ratio"  # type: ignore[attr-defined]
    track_watch_bytes.unit = track_fetch_all_bytes.unit = "bytes"  # type: ignore[attr-defined]
    track_fetch_all_over_watch_bytes.unit = "ratio"  # type: ignore[attr-defined]
    track_watch_last_refresh_ms.unit = track_fetch_all_last_refresh_ms.unit = "ms"  # type: ignore[attr-defined]
    track_watch_client_cpu_seconds.unit = "seconds"  # type: ignore[attr-defined]
    track_fetch_all_client_cpu_seconds.unit = "seconds"  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- script


def report(fig: dict[str, Any]) -> list[str]:
    title = (f"# live loop: a job growing to {fig['items']} items ({', '.join(STREAMS)}, float64) in"
             f" {fig['steps']} appends, one refresh after each; server protocol {fig['protocol']},"
             f" {os.cpu_count()} CPUs; best of {fig['rounds']} alternating rounds;"
             f" watch(every={fig['every']})")
    header = (f"{'loop':10} {'best s':>8} {'median s':>8} {'first ms':>8} {'last ms':>8}"
              f" {'response bytes':>15} {'data bytes':>12} {'min item bytes':>15} {'request bytes':>13}"
              f" {'RPCs':>5} {'client CPU s':>12} {'server CPU s':>12}")
    lines = [title, header]
    for name in LOOPS:
        f = fig[name]
        lines.append(f"{name:10} {f['best_s']:8.3f} {f['median_s']:8.3f} {1000 * f['first_refresh_s']:8.1f}"
                     f" {1000 * f['last_refresh_s']:8.1f} {f['response_bytes']:15d}"
                     f" {f['data_response_bytes']:12d} {fig['min_item_bytes'][name]:15d}"
                     f" {f['request_bytes']:13d} {f['rpcs']:5d} {f['client_cpu_s']:12.3f}"
                     f" {f['server_cpu_s']:12.3f}")
    lines.append(f"# fetch_all / watch: time {fig['time_ratio']:.2f}x (round median"
                 f" {fig['time_ratio_round_median']:.2f}x), bytes {fig['bytes_ratio']:.2f}x;"
                 f" watch / fetch_all: time {1 / fig['time_ratio']:.3f}, bytes {1 / fig['bytes_ratio']:.4f}")
    for name in LOOPS:
        calls = fig[name]["by_method"]["calls"]
        sent = fig[name]["by_method"]["response_bytes"]
        lines.append(f"# {name} RPCs: " + ", ".join(f"{m} {n} ({sent.get(m, 0)} B)"
                                                   for m, n in sorted(calls.items())))
    if fig.get("bytes_varied"):
        lines.append(f"# note: response bytes differed between rounds for {fig['bytes_varied']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_live", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"measured rounds (default {ROUNDS})")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first (default 1)")
    parser.add_argument("--items", type=int, default=ITEMS, help=f"items per stream (default {ITEMS})")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"appends and refreshes (default {STEPS})")
    parser.add_argument("--every", type=float, default=EVERY, help=f"watch(every=...) (default {EVERY})")
    args = parser.parse_args(argv)
    with LiveBench(args.items, args.steps, args.every) as bench:
        fig = bench.measure(rounds=args.rounds, warmup=args.warmup)
    print("\n".join(report(fig)))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["live"]:  # the server child
        sys.exit(_main_child(sys.argv[1:]))
    raise SystemExit(main())
