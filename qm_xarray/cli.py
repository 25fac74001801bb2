"""The `qm-xarray` command: `serve`, `simulate` and `demo`.

Every command reports failures as one line on stderr with a non-zero exit code (2 for bad usage,
1 for runtime failures, 130 when interrupted), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, TextIO

from . import __version__
from .client.connection import ConnectionDetails, close_channels
from .client.jobs import JobsClient, JobSummary
from .errors import QmQuaException, QMTimeoutError
from .producer import RemoteStore
from .server.app import ResultsServer
from .server.store import ResultStore
from .simulate import EXPERIMENTS, Simulation

__all__ = ["main", "build_parser"]

DEFAULT_PORT = 9510
DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_PORT}"
POLL_SECONDS = 0.1       # demo: one GetJob per poll
PRINT_SECONDS = 0.5      # demo without a TTY: one progress line per this interval


class UsageError(Exception):
    """Bad command-line input detected after parsing (exit code 2)."""


# ---------------------------------------------------------------------------------------- parser
def _params(items: Sequence[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items or ():
        name, sep, text = item.partition("=")
        if not sep or not name.isidentifier():
            raise UsageError(f"--param takes NAME=VALUE, got {item!r}")
        try:
            params[name] = int(text)
        except ValueError:
            try:
                params[name] = float(text)
            except ValueError:
                raise UsageError(f"--param {name}: {text!r} is not a number") from None
    return params


def _experiment_name(name: str) -> str:
    if name not in EXPERIMENTS:
        raise UsageError(f"unknown experiment {name!r}; choose one of: {', '.join(EXPERIMENTS)}")
    return name


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=float, default=None,
                   help="steps (iterations, shots, acquisitions) per second; default: the experiment's")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--job-id", default=None, help="id of the job to create (default: server picks)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="experiment size option, e.g. n_avg=50 (repeatable)")
    for fault, what in (("dataloss", "flag data loss"), ("error", "add an execution error and end"),
                        ("cancel", "cancel the job")):
        p.add_argument(f"--{fault}-at", type=float, default=None, metavar="F",
                       help=f"{what} at this fraction of progress (0..1)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `qm-xarray` (one subparser per command)."""
    parser = argparse.ArgumentParser(prog="qm-xarray", description="Quantum Machines result streams: "
                                     "results server, simulator and tools.")
    parser.add_argument("--version", action="version", version=f"qm-xarray {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("serve", help="run a results server until Ctrl-C / SIGTERM")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default loopback)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any)")
    p.add_argument("--no-chunk-streaming", action="store_true",
                   help="serve v2 results in the legacy format (for old clients)")
    p.set_defaults(func=cmd_serve)

    names = ", ".join(f"{k} ({v})" for k, v in EXPERIMENTS.items())
    p = sub.add_parser("simulate", help="write a simulated experiment into a running server",
                       description=f"Experiments: {names}.")
    p.add_argument("experiment", help=f"one of: {', '.join(EXPERIMENTS)}")
    p.add_argument("--address", default=DEFAULT_ADDRESS, help=f"server HOST:PORT (default {DEFAULT_ADDRESS})")
    p.add_argument("--timeout", type=float, default=30.0, help="deadline of each RPC, seconds")
    _add_run_options(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("demo", help="embedded server + simulated experiment, watched over gRPC")
    p.add_argument("--experiment", default="rabi", help=f"one of: {', '.join(EXPERIMENTS)} (default rabi)")
    p.add_argument("--quiet", action="store_true", help="no progress, only the final table")
    p.add_argument("--timeout", type=float, default=60.0, help="give up if the job runs longer (s)")
    _add_run_options(p)
    p.set_defaults(func=cmd_demo)
    return parser


def _simulation(args: argparse.Namespace, producer: Any) -> Simulation:
    """The Simulation the options describe (bad options raise `UsageError`; nothing starts)."""
    try:
        return Simulation(_experiment_name(args.experiment), producer, rate=args.rate, seed=args.seed,
                          job_id=args.job_id, dataloss_at=args.dataloss_at, error_at=args.error_at,
                          cancel_at=args.cancel_at, **_params(args.param))
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None


# ----------------------------------------------------------------------------------------- serve
def _check_port_free(host: str, port: int) -> None:
    """Fail with one clear line if `host:port` is taken (gRPC would also log a C-core error)."""
    if port == 0:
        return
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    except OSError:
        return  # let the server report an unknown host
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(addr)
        except OSError as exc:
            raise OSError(f"could not listen on {host}:{port}: {exc.strerror or exc}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve an in-memory store until SIGINT or SIGTERM, then stop cleanly."""
    _check_port_free(args.host, args.port)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            server = ResultsServer(ResultStore(), args.host, args.port,
                                   chunk_streaming=not args.no_chunk_streaming)
    except RuntimeError as exc:  # grpc reports a failed bind as RuntimeError
        raise OSError(f"could not listen on {args.host}:{args.port}: {exc}") from None
    for warning in caught:  # e.g. listening beyond loopback without TLS: one plain line
        print(f"qm-xarray serve: warning: {warning.message}", file=sys.stderr, flush=True)
    server.start()
    print(f"listening on {server.address}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop(grace=1.0)
    print("stopped", flush=True)
    return 0


# -------------------------------------------------------------------------------------- simulate
def cmd_simulate(args: argparse.Namespace) -> int:
    """Write a simulated experiment into the server at `--address`; prints the job id."""
    sim = _simulation(args, RemoteStore(args.address, timeout=args.timeout))
    sim.start()
    print(sim.job_id, flush=True)
    try:
        while not sim.join(0.2):
            pass
    except KeyboardInterrupt:
        sim.stop()
        sim.join(10.0)
        print(f"interrupted: job {sim.job_id} {sim.state}", file=sys.stderr)
        return 130
    unit = sim.experiment.unit
    print(f"job {sim.job_id}: {sim.state} after {sim.steps_done}/{sim.n_steps} {unit}", file=sys.stderr)
    return 0 if sim.state == sim.planned_state else 1


# ------------------------------------------------------------------------------------------ demo
@dataclass
class Demo:
    """What the demo steps share; each step reads what earlier steps set."""

    args: argparse.Namespace
    out: TextIO
    stack: ExitStack
    server: ResultsServer | None = None
    details: ConnectionDetails | None = None
    sim: Simulation | None = None
    job: JobSummary | None = None

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def demo_serve(d: Demo) -> None:
    """Step 1: an embedded results server on a free loopback port."""
    d.server = d.stack.enter_context(ResultsServer(ResultStore(), "127.0.0.1", 0))
    d.details = ConnectionDetails.from_address(d.server.address, timeout=10.0)
    d.stack.callback(close_channels, d.details)
    d.say(f"[1] results server listening on {d.server.address}")


def demo_simulate(d: Demo) -> None:
    """Step 2: the simulated experiment writes through the remote producer (gRPC)."""
    assert d.server is not None
    d.sim = _simulation(d.args, RemoteStore(d.server.address, timeout=10.0)).start()
    d.stack.callback(d.sim.stop)
    exp = d.sim.experiment
    d.say(f"[2] simulating {exp.name!r} ({EXPERIMENTS[exp.name]}) as job {d.sim.job_id}: "
          f"{exp.n_steps} {exp.unit} at {d.sim.rate:g}/s")


def demo_watch(d: Demo) -> None:
    """Step 3: poll the job over gRPC (JobsService.GetJob) until it ends, showing progress."""
    assert d.details is not None and d.sim is not None and d.sim.job_id is not None
    client, job_id = JobsClient(d.details), d.sim.job_id
    d.say(f"[3] watching job {job_id} over gRPC")
    show = _Progress(d.out, quiet=d.args.quiet)
    deadline = time.monotonic() + d.args.timeout
    try:
        while True:
            d.job = client.get_job(job_id, timeout=5.0)
            show.update(d.job)
            if d.job.state != "running":
                break
            if time.monotonic() > deadline:
                raise QMTimeoutError(f"demo: job {job_id} did not end within {d.args.timeout:g} s")
            time.sleep(POLL_SECONDS)
    finally:
        show.close()
    d.sim.join(10.0)  # re-raises a failure of the simulation itself


def demo_table(d: Demo) -> None:
    """Step 4: the final table of streams."""
    assert d.job is not None
    d.say(f"[4] job {d.job.job_id}: {d.job.state}" + _job_flags(d.job))
    d.say(format_table(d.job))


DEMO_STEPS: list[Callable[[Demo], None]] = [demo_serve, demo_simulate, demo_watch, demo_table]


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo steps in order; exit 0 when the job reached the expected end state."""
    _simulation(args, ResultStore())  # bad options fail before anything starts
    with ExitStack() as stack:
        d = Demo(args, sys.stdout, stack)
        for step in DEMO_STEPS:
            step(d)
    ok = d.job is not None and d.sim is not None and d.sim.state == d.sim.planned_state
    return 0 if ok else 1


# --------------------------------------------------------------------------------- job display
def job_fraction(job: JobSummary) -> tuple[int, int]:
    """(items so far, items expected) over the `save_all` streams (all streams if none)."""
    streams = [s for s in job.streams if s.expected_count and not s.single] or \
              [s for s in job.streams if s.expected_count]
    return (sum(min(s.count, s.expected_count) for s in streams),
            sum(s.expected_count for s in streams))


def _job_flags(job: JobSummary) -> str:
    flags = []
    if job.has_dataloss:
        flags.append("DATA LOSS")
    flags += [f"{severity} {code}: {message}" for code, severity, message in job.errors]
    return f" ({'; '.join(flags)})" if flags else ""


def _stream_counts(job: JobSummary) -> str:
    """`name count/expected` per stream, `save_all` streams first (they are the ones growing)."""
    streams = sorted(job.streams, key=lambda s: s.single)
    return ", ".join(f"{s.name} {s.count}/{s.expected_count or '?'}" for s in streams)


def format_table(job: JobSummary) -> str:
    """A plain-text table: stream, dtype, shape, count/expected, state."""
    rows = [("stream", "dtype", "shape", "count/expected", "state")]
    for s in job.streams:
        if job.state == "running":
            state = "growing"
        elif not s.expected_count:
            state = "ended"
        else:
            state = "complete" if s.count >= s.expected_count else "incomplete"
        rows.append((s.name, s.dtype + (" +ts" if s.timestamps else ""), str(s.shape),
                     f"{s.count}/{s.expected_count or '?'}", state + (" (save)" if s.single else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


class _Progress:
    """A tqdm bar for the whole job on a TTY; plain periodic lines otherwise."""

    def __init__(self, out: TextIO, quiet: bool):
        self.out, self.quiet = out, quiet
        self.start = time.monotonic()
        self.last_print = -float("inf")
        self.bar: Any = None
        self.tty = bool(getattr(out, "isatty", lambda: False)())

    def update(self, job: JobSummary) -> None:
        if self.quiet:
            return
        done, total = job_fraction(job)
        if self.tty:
            if self.bar is None:
                from tqdm import tqdm
                size = shutil.get_terminal_size()  # a fresh pseudo-terminal reports 0 x 0
                self.bar = tqdm(total=total, file=self.out, unit="item", desc=job.job_id, leave=True,
                                bar_format="{desc}: {percentage:3.0f}%|{bar:24}| {n_fmt}/{total_fmt} "
                                           "[{elapsed}{postfix}]",
                                ncols=size.columns if size.columns > 20 else 100,
                                nrows=size.lines if size.lines > 2 else 24)
            self.bar.n = done
            self.bar.set_postfix_str(_stream_counts(job), refresh=False)
            self.bar.refresh()
            return
        now = time.monotonic()
        if now - self.last_print >= PRINT_SECONDS or job.state != "running":
            self.last_print = now
            print(f"    {now - self.start:5.1f}s {job.state:8s} {done}/{total}: {_stream_counts(job)}",
                  file=self.out, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `qm-xarray`; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"qm-xarray {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qm-xarray {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `qm-xarray demo | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (QmQuaException, OSError, ValueError, TypeError, RuntimeError) as exc:
        print(f"qm-xarray {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug, still reported as one line
        if os.environ.get("QM_XARRAY_DEBUG"):
            raise
        print(f"qm-xarray {args.command}: internal error: {type(exc).__name__}: {exc} "
              "(set QM_XARRAY_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
