"""Results API: `fetch_all(flat_struct=True)` of a 128 MiB float64 stream, against the transport and
against the reference client.

Servers (`_servers.py`, each in its own process on 127.0.0.1): `qx` (a `qx.serve` of job `bench`,
stream `data`) and `raw` (a grpcio generic handler sending the same bytes as prebuilt 1 MiB
messages, the size of our data messages). Fetches, all in this process:

- `raw`:          the raw stream received with the identity deserializer and copied once into a new
                  numpy array (the least a fetch that returns a new array can do);
- `raw-prealloc`: the same into one preallocated array (as `bench_server.py`), for comparison;
- `v1`, `v2`, `v2-multi`: `fetch_all(flat_struct=True)` through our StreamsManager
                  (`qm_xarray.testing.our_streams_manager(host, port, job, mode)`);
- `ref-v1`, `ref-v2-multi`: the same call through qm-qua 1.4.1's StreamsManager
                  (`reference_streams_manager`); left out, and their asv figures skipped, without
                  qm-qua.

A round calls each once, in an order rotated from round to round (machine noise hits all alike);
throughputs are best of rounds, ratios come from the same rounds (best/best, and the median of the
per-round ratios). Every result is checked (length; all values on the warm-up round). Memory: the
peak extra memory of one `fetch_all` over the result's size (tracemalloc peak during the call; the
process's peak-RSS rise as a second opinion), measured after the timing rounds, one call at a time.

Targets (issue "results API"): ours/raw >= 0.8; ours/reference >= 3x; memory <= 1.2x the result.

asv: `FetchThroughput`, `FetchMemory`, `FetchVsReference` (`track_*`, all from one measurement in a
shared `setup_cache`). Script: `python -m benchmarks.bench_fetch [--rounds N]` prints every figure.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

try:
    from . import _jobs, _servers
except ImportError:  # asv imports benchmark files from the benchmark directory
    import _jobs  # type: ignore[no-redef]
    import _servers  # type: ignore[no-redef]

MiB = 1024 * 1024
NBYTES = 128 * MiB
ROUNDS = 10               # asv; the script defaults to 8
OUR_MODES = ("v1", "v2", "v2-multi")
REF_MODES = ("v1", "v2-multi")
CALL_TIMEOUT = 120.0
# The client channel options of qm_xarray.client.connection (message limit 100 MiB, no retries).
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 100 * MiB),
                   ("grpc.max_send_message_length", 100 * MiB),
                   ("grpc.enable_retries", 0)]
TARGET_VS_RAW = 0.8
TARGET_VS_REF = 3.0
TARGET_MEMORY = 1.2


class FetchBench:
    """The two servers, a channel for `raw`, and our (and the reference's) handles on `data`."""

    def __init__(self, nbytes: int = NBYTES, reference: bool = True, alt_pythonpath: str | None = None):
        import grpc
        import numpy as np

        from qm_xarray.testing import our_streams_manager, reference_streams_manager

        self.nbytes, self.n_items = nbytes, nbytes // 8
        self._np = np
        self.expected = _servers.values(self.n_items)
        self.reference_skipped = _jobs.reference_available() if reference else "not asked for"
        self.servers: dict[str, Any] = {}
        self._channel = None
        try:
            for kind in ("qx", "raw"):
                self.servers[kind] = _servers.start_server(kind, nbytes)
            if alt_pythonpath:  # A/B of a server change: a second qx server from a scratch copy
                self.servers["alt"] = _servers.start_server("qx", nbytes, pythonpath=alt_pythonpath)
            self._channel = grpc.insecure_channel(self.servers["raw"].address, options=CHANNEL_OPTIONS)
            grpc.channel_ready_future(self._channel).result(timeout=30)
            self._raw_call = self._channel.unary_stream(_servers.RAW_METHOD, request_serializer=None,
                                                        response_deserializer=None)
            self.prealloc = np.empty(nbytes, dtype=np.uint8)
            self.prealloc[:] = 0  # resident before the first fetch
            port = self.servers["qx"].port
            self.handles: dict[str, Any] = {
                mode: our_streams_manager("127.0.0.1", port, _servers.JOB_ID, mode)[_servers.STREAM]
                for mode in OUR_MODES}
            if self.reference_skipped is None:
                _jobs.quiet_reference_logs()
                for mode in REF_MODES:
                    manager = reference_streams_manager("127.0.0.1", port, _servers.JOB_ID, mode)
                    self.handles[f"ref-{mode}"] = manager.get(_servers.STREAM)
            if "alt" in self.servers:
                alt = self.servers["alt"].port
                for mode in OUR_MODES:
                    manager = our_streams_manager("127.0.0.1", alt, _servers.JOB_ID, mode)
                    self.handles[f"{mode}:alt"] = manager[_servers.STREAM]
                if self.reference_skipped is None:
                    for mode in REF_MODES:
                        manager = reference_streams_manager("127.0.0.1", alt, _servers.JOB_ID, mode)
                        self.handles[f"ref-{mode}:alt"] = manager.get(_servers.STREAM)
        except BaseException:
            self.close()
            raise

    def _raw(self, out: Any = None) -> Any:
        np = self._np
        out = np.empty(self.nbytes, dtype=np.uint8) if out is None else out
        pos = 0
        for msg in self._raw_call(b"", timeout=CALL_TIMEOUT):
            end = pos + len(msg)
            out[pos:end] = np.frombuffer(msg, dtype=np.uint8)
            pos = end
        if pos != self.nbytes:
            raise AssertionError(f"raw: received {pos} bytes, expected {self.nbytes}")
        return out.view("<f8")

    def calls(self) -> dict[str, Callable[[], Any]]:
        """The fetches of a round, by name."""
        fns: dict[str, Callable[[], Any]] = {"raw": self._raw,
                                             "raw-prealloc": lambda: self._raw(self.prealloc)}
        for name, handle in self.handles.items():
            fns[name] = lambda h=handle: h.fetch_all(flat_struct=True)
        return fns

    def check(self, name: str, result: Any, full: bool) -> None:
        np = self._np
        if result.shape != (self.n_items,) or result.dtype != np.float64:
            raise AssertionError(
                f"{name}: got {result.dtype} {result.shape}, expected float64 ({self.n_items},)")
        if full and not np.array_equal(result, self.expected):
            raise AssertionError(f"{name}: the fetched values differ from the stream's")

    def measure(self, rounds: int = ROUNDS, warmup: int = 1, memory: bool = True,
                only: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Interleaved rounds (the first `warmup` check every value), then the memory peaks.

        `only` limits the fetches to these names (`raw` and `raw-prealloc` always run).
        """
        fns = self.calls()
        if only is not None:
            fns = {n: f for n, f in fns.items() if n in only or n.startswith("raw")}
        checked: set[str] = set()

        def after(name: str, result: Any) -> None:
            self.check(name, result, name not in checked)
            checked.add(name)

        cpu: dict[str, Any] = {}
        pids = {name: self.servers["raw" if name.startswith("raw") else "alt" if name.endswith(":alt")
                                   else "qx"].pid for name in fns}
        times = _jobs.interleave(fns, rounds, warmup, after, cpu, pids)
        fig = _jobs.figures(self.nbytes, times, base="raw")
        fig["cpu_ms"] = _jobs.mean_cpu_ms(cpu)
        fig["names"] = list(fns)
        fig["reference_skipped"] = self.reference_skipped
        fig["vs_ref"] = {mode: _jobs.ratio(times, mode, f"ref-{mode}")
                         for mode in (*REF_MODES, *(f"{m}:alt" for m in REF_MODES))
                         if f"ref-{mode}" in times}
        fig["vs_raw_prealloc"] = {mode: _jobs.ratio(times, mode, "raw-prealloc") for mode in OUR_MODES
                                  if mode in times}
        if memory:
            fig["memory"] = {name: _jobs.peak_memory(fns[name]) for name in self.handles if name in fns}
        return fig

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        for server in self.servers.values():
            server.stop()

    def __enter__(self) -> FetchBench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- asv


class _FetchRun:
    """One measurement shared by the classes below (their `setup_cache` is this one function)."""

    rounds = 1  # the figures come from setup_cache; re-reading them proves nothing
    timeout = 600

    def setup_cache(self) -> dict[str, Any]:
        with FetchBench() as bench:
            return bench.measure(rounds=ROUNDS)

    setup_cache.timeout = 600  # type: ignore[attr-defined]


class FetchThroughput(_FetchRun):
    """GB/s (1e9 bytes/s) of `fetch_all(flat_struct=True)` and of the raw stream, and the ratios
    ours/raw (target >= 0.8): best/best and the median of per-round ratios."""

    def track_raw_gbps(self, fig: dict[str, Any]) -> float:
        return fig["raw"]["gbps"]

    def track_v1_gbps(self, fig: dict[str, Any]) -> float:
        return fig["v1"]["gbps"]

    def track_v2_gbps(self, fig: dict[str, Any]) -> float:
        return fig["v2"]["gbps"]

    def track_v2_multi_gbps(self, fig: dict[str, Any]) -> float:
        return fig["v2-multi"]["gbps"]

    def track_v1_vs_raw(self, fig: dict[str, Any]) -> float:
        return fig["v1"]["ratio"]

    def track_v2_vs_raw(self, fig: dict[str, Any]) -> float:
        return fig["v2"]["ratio"]

    def track_v2_multi_vs_raw(self, fig: dict[str, Any]) -> float:
        return fig["v2-multi"]["ratio"]

    def track_v1_vs_raw_round_median(self, fig: dict[str, Any]) -> float:
        return fig["v1"]["round_ratio_median"]

    def track_v2_vs_raw_round_median(self, fig: dict[str, Any]) -> float:
        return fig["v2"]["round_ratio_median"]

    def track_v2_multi_vs_raw_round_median(self, fig: dict[str, Any]) -> float:
        return fig["v2-multi"]["round_ratio_median"]

    track_raw_gbps.unit = "GB/s"  # type: ignore[attr-defined]
    track_v1_gbps.unit = track_v2_gbps.unit = track_v2_multi_gbps.unit = "GB/s"  # type: ignore[attr-defined]
    track_v1_vs_raw.unit = track_v2_vs_raw.unit = "ratio"  # type: ignore[attr-defined]
    track_v2_multi_vs_raw.unit = "ratio"  # type: ignore[attr-defined]
    track_v1_vs_raw_round_median.unit = "ratio"  # type: ignore[attr-defined]
    track_v2_vs_raw_round_median.unit = "ratio"  # type: ignore[attr-defined]
    track_v2_multi_vs_raw_round_median.unit = "ratio"  # type: ignore[attr-defined]


class FetchMemory(_FetchRun):
    """Peak extra memory of one `fetch_all` over the result's size (tracemalloc; target <= 1.2)."""

    def track_v1_peak_memory(self, fig: dict[str, Any]) -> float:
        return fig["memory"]["v1"]["tracemalloc_ratio"]

    def track_v2_peak_memory(self, fig: dict[str, Any]) -> float:
        return fig["memory"]["v2"]["tracemalloc_ratio"]

    def track_v2_multi_peak_memory(self, fig: dict[str, Any]) -> float:
        return fig["memory"]["v2-multi"]["tracemalloc_ratio"]

    track_v1_peak_memory.unit = "x result"  # type: ignore[attr-defined]
    track_v2_peak_memory.unit = track_v2_multi_peak_memory.unit = "x result"  # type: ignore[attr-defined]


class FetchVsReference(_FetchRun):
    """Ours against qm-qua 1.4.1 on the same stream, same rounds (target >= 3x); the reference's
    GB/s and peak memory. Skipped without qm-qua."""

    def setup(self, fig: dict[str, Any]) -> None:
        if fig["reference_skipped"]:
            raise NotImplementedError(fig["reference_skipped"])

    def track_ref_v1_gbps(self, fig: dict[str, Any]) -> float:
        return fig["ref-v1"]["gbps"]

    def track_ref_v2_multi_gbps(self, fig: dict[str, Any]) -> float:
        return fig["ref-v2-multi"]["gbps"]

    def track_v1_vs_ref(self, fig: dict[str, Any]) -> float:
        return fig["vs_ref"]["v1"]["ratio"]

    def track_v2_multi_vs_ref(self, fig: dict[str, Any]) -> float:
        return fig["vs_ref"]["v2-multi"]["ratio"]

    def track_v1_vs_ref_round_median(self, fig: dict[str, Any]) -> float:
        return fig["vs_ref"]["v1"]["round_ratio_median"]

    def track_v2_multi_vs_ref_round_median(self, fig: dict[str, Any]) -> float:
        return fig["vs_ref"]["v2-multi"]["round_ratio_median"]

    def track_ref_v1_peak_memory(self, fig: dict[str, Any]) -> float:
        return fig["memory"]["ref-v1"]["tracemalloc_ratio"]

    def track_ref_v2_multi_peak_memory(self, fig: dict[str, Any]) -> float:
        return fig["memory"]["ref-v2-multi"]["tracemalloc_ratio"]

    track_ref_v1_gbps.unit = track_ref_v2_multi_gbps.unit = "GB/s"  # type: ignore[attr-defined]
    track_v1_vs_ref.unit = track_v2_multi_vs_ref.unit = "ratio"  # type: ignore[attr-defined]
    track_v1_vs_ref_round_median.unit = "ratio"  # type: ignore[attr-defined]
    track_v2_multi_vs_ref_round_median.unit = "ratio"  # type: ignore[attr-defined]
    track_ref_v1_peak_memory.unit = "x result"  # type: ignore[attr-defined]
    track_ref_v2_multi_peak_memory.unit = "x result"  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- script


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(fig: dict[str, Any]) -> list[str]:
    """The figures as text lines (also used by the closing notes)."""
    lines = [f"# fetch_all(flat_struct=True) of {fig['nbytes'] // MiB} MiB float64, {os.cpu_count()} CPUs,"
             f" best of {fig['rounds']} interleaved rounds (GB/s = 1e9 bytes/s)"]
    if fig["reference_skipped"]:
        lines.append(f"# reference client left out: {fig['reference_skipped']}")
    lines.append(f"{'fetch':17} {'best GB/s':>9} {'median GB/s':>11} {'vs raw':>7} {'round med':>9}"
                 f" {'vs ref':>7} {'round med':>9} {'client CPU ms':>13} {'server CPU ms':>13}")
    for name in fig["names"]:
        f = fig[name]
        ref = fig["vs_ref"].get(name)
        vs_ref = f"{ref['ratio']:7.2f} {ref['round_ratio_median']:9.2f}" if ref else f"{'':7} {'':9}"
        cpu = fig["cpu_ms"][name]
        lines.append(f"{name:17} {f['gbps']:9.3f} {f['gbps_median']:11.3f} {f['ratio']:7.3f}"
                     f" {f['round_ratio_median']:9.3f} {vs_ref} {cpu['client']:13.1f} {cpu['server']:13.1f}")
    lines.append("# vs raw: best raw time / best time (raw = raw stream copied into a new array);"
                 " round med: median over rounds of the ratio within a round; CPU: mean per fetch")
    for mode, r in fig["vs_raw_prealloc"].items():
        lines.append(f"# {mode} vs raw-prealloc (bench_server's raw): {r['ratio']:.3f}"
                     f" (round median {r['round_ratio_median']:.3f})")
    if "memory" in fig:
        lines.append(f"{'peak memory':17} {'tracemalloc x result':>20} {'peak RSS x result':>17}")
        for name, m in fig["memory"].items():
            rss = f"{m['rss_ratio']:17.2f}" if m["rss_ratio"] is not None else f"{'?':>17}"
            lines.append(f"{name:17} {m['tracemalloc_ratio']:20.2f} {rss}")
    lines.append("# targets:")
    for mode in (m for m in OUR_MODES if m in fig):
        r = fig[mode]["ratio"]
        lines.append(f"#   {mode} vs raw >= {TARGET_VS_RAW}: {r:.3f} {_verdict(r >= TARGET_VS_RAW)}")
    for mode, r in fig["vs_ref"].items():
        lines.append(f"#   {mode} vs reference {mode} >= {TARGET_VS_REF}x: {r['ratio']:.2f}"
                     f" {_verdict(r['ratio'] >= TARGET_VS_REF)}")
    for mode in OUR_MODES:
        m = fig.get("memory", {}).get(mode)
        if m:
            lines.append(f"#   {mode} peak memory <= {TARGET_MEMORY}x result: {m['tracemalloc_ratio']:.2f}"
                         f" {_verdict(m['tracemalloc_ratio'] <= TARGET_MEMORY)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_fetch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8, help="measured rounds (default 8)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured, fully checked rounds first")
    parser.add_argument("--mib", type=int, default=NBYTES // MiB, help="stream size in MiB (default 128)")
    parser.add_argument("--no-reference", action="store_true", help="leave the qm-qua client out")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory peaks")
    parser.add_argument("--alt-server-path", default=None,
                        help="A/B test of a server change: a second qx server with this PYTHONPATH"
                             " (a scratch copy of qm_xarray), fetched as v1:alt, v2:alt, v2-multi:alt"
                             " (and ref-*:alt), interleaved with the others")
    parser.add_argument("--only", default=None,
                        help="comma-separated fetch names to run (raw and raw-prealloc always run),"
                             " e.g. v2,v2:alt")
    args = parser.parse_args(argv)
    with FetchBench(args.mib * MiB, reference=not args.no_reference,
                    alt_pythonpath=args.alt_server_path) as bench:
        for name, server in bench.servers.items():
            print(f"# {name} server pid {server.pid} on {server.address} ({server.info['module']})")
        only = tuple(args.only.split(",")) if args.only else None
        fig = bench.measure(rounds=args.rounds, warmup=max(args.warmup, 1), memory=not args.no_memory,
                            only=only)
    print("\n".join(report(fig)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
