"""Server throughput: 128 MiB of float64 over loopback, qm_xarray's server against raw grpcio.

Three fetches of the same bytes, each from a server in another process (`_servers.py`), each received
in this process and copied once into a preallocated numpy array:

- `raw`: a grpcio generic unary-stream handler sending prebuilt 1 MiB `bytes` messages, received
  with the identity deserializer (no protobuf anywhere): the transport's ceiling.
- `v1`:  `qm.grpc.results_analyser.JobResultsService/GetJobNamedResult` from `qx.serve`, each
  message decoded with `codec.decode_v1_data`.
- `v2`:  `qm.grpc.v2.JobService/GetNamedResults` (chunk format) from `qx.serve`, each message
  decoded with `codec.decode_v2_result`.

A round fetches all three, in an order that rotates from round to round, so machine noise hits them
alike; figures are the best of the rounds, and the ratios v1/raw and v2/raw come from the same
rounds. Every fetch checks its length and item count; the first fetch of each kind also checks a
CRC-32 of all received bytes against the one the server computed.

asv: `ServerThroughput.track_*` (GB/s and ratios, measured once in `setup_cache`) and
`FetchTime.time_fetch` (seconds per 128 MiB fetch). Script: `python -m benchmarks.bench_server`
prints the figures (see `--help`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import zlib
from collections.abc import Callable
from typing import Any

try:
    from . import _servers
except ImportError:  # run as a plain file
    import _servers  # type: ignore[no-redef]

MiB = 1024 * 1024
NBYTES = 128 * MiB                 # 16 Mi float64 items
ROUNDS = 10                        # measured rounds for the asv track figures (after one warm-up)
KINDS = ("raw", "v1", "v2")
CALL_TIMEOUT = 120.0
V1_METHOD = "/qm.grpc.results_analyser.JobResultsService/GetJobNamedResult"
V2_METHOD = "/qm.grpc.v2.JobService/GetNamedResults"
# The client channel options of qm_xarray.client.connection, used for all three fetches.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 * MiB),
                   ("grpc.max_send_message_length", 64 * MiB),
                   ("grpc.enable_retries", 0)]


class FetchCheckError(AssertionError):
    """A fetch did not deliver exactly the expected bytes."""


class ThroughputBench:
    """Servers in child processes, one channel to each, and a preallocated destination array.

    `kinds` picks which fetches to prepare (a `qx` server serves both v1 and v2). Use as a context
    manager, or call `close()`.
    """

    def __init__(self, nbytes: int = NBYTES, kinds: tuple[str, ...] = KINDS,
                 pythonpath: str | None = None, alt_pythonpath: str | None = None):
        import grpc
        import numpy as np

        from qm_xarray.wire.pb.qm.grpc.v2 import job_api_pb2
        from qm_xarray.wire.pb.qm.pb import job_results_pb2

        if nbytes % 8:
            raise ValueError("nbytes must be a whole number of float64 items")
        self.nbytes = nbytes
        self.n_items = nbytes // 8
        self.kinds = tuple(kinds)
        self.out = np.empty(nbytes, dtype=np.uint8)
        self.out[:] = 0  # touch every page now, not during the first fetch
        self._np = np
        self.servers: dict[str, _servers.ServerProcess] = {}
        self._channels: list[Any] = []
        self._calls: dict[str, Callable[[], int]] = {}
        self.verified: set[str] = set()
        try:
            for key in dict.fromkeys(_server_key(kind) for kind in self.kinds):
                if key == "qx:alt" and not alt_pythonpath:
                    raise ValueError("the ':alt' kinds need alt_pythonpath (--alt-server-path)")
                self.servers[key] = _servers.start_server(
                    "raw" if key == "raw" else "qx", nbytes,
                    pythonpath=alt_pythonpath if key == "qx:alt" else pythonpath)
            for kind in self.kinds:
                server = self.servers[_server_key(kind)]
                channel = grpc.insecure_channel(server.address, options=CHANNEL_OPTIONS)
                self._channels.append(channel)
                grpc.channel_ready_future(channel).result(timeout=30)
                if kind == "raw":
                    call = channel.unary_stream(_servers.RAW_METHOD, request_serializer=None,
                                                response_deserializer=None)
                    self._calls[kind] = self._raw_fetch(call)
                elif kind.startswith("v1"):
                    call = channel.unary_stream(
                        V1_METHOD,
                        request_serializer=job_results_pb2.GetJobNamedResultRequest.SerializeToString,
                        response_deserializer=None)
                    request = job_results_pb2.GetJobNamedResultRequest(
                        jobId=_servers.JOB_ID, outputName=_servers.STREAM, limit=self.n_items,
                        longOffset={"value": 0})
                    self._calls[kind] = self._v1_fetch(call, request)
                elif kind.startswith("v2"):
                    call = channel.unary_stream(
                        V2_METHOD,
                        request_serializer=job_api_pb2.GetNamedResultsRequest.SerializeToString,
                        response_deserializer=None)
                    request = job_api_pb2.GetNamedResultsRequest(
                        job_id=_servers.JOB_ID,
                        outputs=[{"output_name": _servers.STREAM,
                                  "range": {"from": {"value": 0}, "to": {"value": self.n_items - 1}}}])
                    self._calls[kind] = self._v2_fetch(call, request)
                else:
                    raise ValueError(f"unknown fetch kind {kind!r}")
        except BaseException:
            self.close()
            raise

    # -- the three clients: receive, decode, copy once into self.out; return the item count

    def _raw_fetch(self, call: Any) -> Callable[[], int]:
        np, out = self._np, self.out

        def fetch() -> int:
            pos = 0
            for msg in call(b"", timeout=CALL_TIMEOUT):
                end = pos + len(msg)
                out[pos:end] = np.frombuffer(msg, dtype=np.uint8)
                pos = end
            return pos // 8
        return fetch

    def _v1_fetch(self, call: Any, request: Any) -> Callable[[], int]:
        from qm_xarray.wire.codec import decode_v1_data

        np, out = self._np, self.out

        def fetch() -> int:
            pos = count = 0
            for msg in call(request, timeout=CALL_TIMEOUT):
                n, data = decode_v1_data(msg)
                end = pos + len(data)
                out[pos:end] = np.frombuffer(data, dtype=np.uint8)
                pos = end
                count += n
            if pos != count * 8:
                raise FetchCheckError(f"v1: {pos} bytes for {count} items")
            return count
        return fetch

    def _v2_fetch(self, call: Any, request: Any) -> Callable[[], int]:
        from qm_xarray.wire.codec import decode_v2_result

        np, out = self._np, self.out

        def fetch() -> int:
            pos = count = 0
            for msg in call(request, timeout=CALL_TIMEOUT):
                result = decode_v2_result(msg)
                if result.kind == "chunk":
                    data = result.data
                    end = pos + len(data)
                    out[pos:end] = np.frombuffer(data, dtype=np.uint8)
                    pos = end
                elif result.kind == "summary":
                    count += result.count
                else:
                    raise FetchCheckError(f"v2: unexpected {result.kind} message {result}")
            if pos != count * 8:
                raise FetchCheckError(f"v2: {pos} bytes for {count} items")
            return count
        return fetch

    # -- measuring

    def fetch(self, kind: str) -> float:
        """One whole fetch of `kind` into `self.out`; returns its wall time in seconds."""
        fetch = self._calls[kind]
        self.out[:8] = 0xFF  # a stale first item must not pass the check
        start = time.perf_counter()
        count = fetch()
        elapsed = time.perf_counter() - start
        if count != self.n_items:
            raise FetchCheckError(f"{kind}: received {count} items, expected {self.n_items}")
        if kind not in self.verified:
            self.verify(kind)
        return elapsed

    def verify(self, kind: str) -> None:
        """Check the bytes now in `self.out` against the server's CRC-32 and the expected values."""
        server = self.servers[_server_key(kind)]
        crc = zlib.crc32(self.out)
        if crc != server.info["crc32"]:
            raise FetchCheckError(f"{kind}: CRC-32 {crc:#010x} != server's {server.info['crc32']:#010x}")
        if not self._np.array_equal(self.out.view("<f8"), _servers.values(self.n_items)):
            raise FetchCheckError(f"{kind}: received values differ from the expected ones")
        self.verified.add(kind)

    def measure(self, rounds: int = ROUNDS, warmup: int = 1) -> dict[str, Any]:
        """`warmup` unmeasured rounds, then `rounds` interleaved rounds; figures as a dict.

        Round r runs the kinds rotated by r (raw v1 v2, v1 v2 raw, v2 raw v1, ...).
        """
        times: dict[str, list[float]] = {k: [] for k in self.kinds}
        cpu = {k: [0.0, 0.0] for k in self.kinds}  # server, client CPU seconds over the rounds
        for _ in range(warmup):
            for kind in self.kinds:
                self.fetch(kind)
        for r in range(rounds):
            shift = r % len(self.kinds)
            for kind in self.kinds[shift:] + self.kinds[:shift]:
                pid = self.servers[_server_key(kind)].pid
                server0, client0 = _process_cpu(pid), _own_cpu()
                times[kind].append(self.fetch(kind))
                cpu[kind][0] += _process_cpu(pid) - server0
                cpu[kind][1] += _own_cpu() - client0
        result = figures(self.nbytes, times)
        for kind, (server, client) in cpu.items():
            result[kind]["server_cpu_s"] = server / max(rounds, 1) if server >= 0 else None
            result[kind]["client_cpu_s"] = client / max(rounds, 1)
        return result

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        for server in self.servers.values():
            server.stop()

    def __enter__(self) -> ThroughputBench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of process `pid` (all threads) from /proc; -inf off Linux."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("-inf")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _server_key(kind: str) -> str:
    """Which server a kind fetches from: "raw", "qx", or "qx:alt" (for "v1:alt", "v2:alt")."""
    protocol, _, variant = kind.partition(":")
    if protocol not in KINDS or variant not in ("", "alt") or kind == "raw:alt":
        raise ValueError(f"unknown fetch kind {kind!r}: use raw, v1, v2, v1:alt or v2:alt")
    return "raw" if protocol == "raw" else ("qx:alt" if variant else "qx")


def figures(nbytes: int, times: dict[str, list[float]]) -> dict[str, Any]:
    """Best-of-rounds throughput (GB/s, 1e9 bytes) per kind, and each kind's ratio to raw.

    `ratio` is best/best_raw; `round_ratio_median` the median over rounds of that round's ratio.
    """
    result: dict[str, Any] = {"nbytes": nbytes, "rounds": min(len(t) for t in times.values())}
    for kind, ts in times.items():
        result[kind] = {"best_s": min(ts), "median_s": statistics.median(ts),
                        "gbps": nbytes / min(ts) / 1e9, "gbps_median": nbytes / statistics.median(ts) / 1e9,
                        "times_s": ts}
    if "raw" in times:
        raw = times["raw"]
        for kind in times:
            if kind != "raw":
                result[kind]["ratio"] = min(raw) / min(times[kind])
                result[kind]["round_ratio_median"] = statistics.median(
                    r / t for r, t in zip(raw, times[kind]))
    return result


# --------------------------------------------------------------------------- asv


class ServerThroughput:
    """GB/s of raw, v1 and v2, and v1/raw, v2/raw: all from one interleaved run in `setup_cache`.

    `*_vs_raw` is best/best; `*_vs_raw_round_median` the median over rounds of the ratio within a
    round, which moves less when other work loads the machine.
    """

    rounds = 1  # the figures come from setup_cache; re-reading them proves nothing
    timeout = 300

    def setup_cache(self) -> dict[str, Any]:
        with ThroughputBench() as bench:
            return bench.measure(rounds=ROUNDS)

    setup_cache.timeout = 300  # type: ignore[attr-defined]

    def track_raw_gbps(self, fig: dict[str, Any]) -> float:
        return fig["raw"]["gbps"]

    def track_v1_gbps(self, fig: dict[str, Any]) -> float:
        return fig["v1"]["gbps"]

    def track_v2_gbps(self, fig: dict[str, Any]) -> float:
        return fig["v2"]["gbps"]

    def track_v1_vs_raw(self, fig: dict[str, Any]) -> float:
        return fig["v1"]["ratio"]

    def track_v2_vs_raw(self, fig: dict[str, Any]) -> float:
        return fig["v2"]["ratio"]

    def track_v1_vs_raw_round_median(self, fig: dict[str, Any]) -> float:
        return fig["v1"]["round_ratio_median"]

    def track_v2_vs_raw_round_median(self, fig: dict[str, Any]) -> float:
        return fig["v2"]["round_ratio_median"]

    track_raw_gbps.unit = track_v1_gbps.unit = track_v2_gbps.unit = "GB/s"  # type: ignore[attr-defined]
    track_v1_vs_raw.unit = track_v2_vs_raw.unit = "ratio"  # type: ignore[attr-defined]
    track_v1_vs_raw_round_median.unit = "ratio"  # type: ignore[attr-defined]
    track_v2_vs_raw_round_median.unit = "ratio"  # type: ignore[attr-defined]


_SHARED: dict[str, ThroughputBench] = {}


def _shared_bench(kind: str) -> ThroughputBench:
    """One bench per kind and process, kept across asv's per-sample setup calls.

    The server children end when this process exits (their stdin reaches end of file).
    """
    bench = _SHARED.get(kind)
    if bench is None:
        bench = _SHARED[kind] = ThroughputBench(kinds=(kind,))
        bench.fetch(kind)  # warm-up and full check, outside any timing
    return bench


class FetchTime:
    """Seconds per 128 MiB fetch, one kind at a time (servers start once per process)."""

    params = list(KINDS)
    param_names = ["protocol"]
    timeout = 300
    repeat = (3, 10, 20.0)

    def setup(self, kind: str) -> None:
        self.bench = _shared_bench(kind)

    def time_fetch(self, kind: str) -> None:
        self.bench.fetch(kind)


# --------------------------------------------------------------------------- script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8, help="measured rounds (default 8)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first (default 1)")
    parser.add_argument("--mib", type=int, default=NBYTES // MiB, help="stream size in MiB (default 128)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma list of raw,v1,v2")
    parser.add_argument("--server-path", default=None,
                        help="prepend to the qx server's PYTHONPATH (a scratch copy of qm_xarray)")
    parser.add_argument("--alt-server-path", default=None,
                        help="a second qx server from this PYTHONPATH, fetched as kinds v1:alt, v2:alt"
                             " (A/B test of a server change, interleaved with the others)")
    args = parser.parse_args(argv)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    if args.alt_server_path and args.kinds == parser.get_default("kinds"):
        kinds += ("v1:alt", "v2:alt")
    with ThroughputBench(args.mib * MiB, kinds, pythonpath=args.server_path,
                         alt_pythonpath=args.alt_server_path) as bench:
        for kind, server in bench.servers.items():
            print(f"# {kind} server pid {server.pid} on {server.address} ({server.info['module']})")
        fig = bench.measure(rounds=args.rounds, warmup=args.warmup)
    print(f"# {args.mib} MiB float64, {os.cpu_count()} CPUs, best of {fig['rounds']} interleaved rounds"
          f" (GB/s = 1e9 bytes/s)")
    print(f"{'kind':6} {'best GB/s':>9} {'median GB/s':>11} {'vs raw':>7} {'median round ratio':>18}"
          f" {'server CPU ms':>13} {'client CPU ms':>13}")
    for kind in kinds:
        f = fig[kind]
        ratio = f.get("ratio", 1.0)
        rmed = f.get("round_ratio_median", 1.0)
        server_cpu = f"{1000 * f['server_cpu_s']:13.1f}" if f["server_cpu_s"] is not None else f"{'?':>13}"
        print(f"{kind:6} {f['gbps']:9.3f} {f['gbps_median']:11.3f} {ratio:7.3f} {rmed:18.3f}"
              f" {server_cpu} {1000 * f['client_cpu_s']:13.1f}")
    print("# vs raw: best/best_raw; median round ratio: median over rounds of raw_time/time in that"
          " round; CPU: mean per fetch (server from /proc, client this process)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
