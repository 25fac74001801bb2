"""The `qm-xarray` command: `serve`, `simulate`, `jobs`, `info`, `export`, `plot` and `demo`.

Every command reports failures as one line on stderr with a non-zero exit code (2 for bad usage,
1 for runtime failures, 130 when interrupted), never a traceback. Commands that talk to a server
give up after `CONNECT_TIMEOUT` seconds if it cannot be reached; `--json` prints machine-readable
output on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from . import __version__
from .client.connection import ConnectionDetails, close_channels, parse_address
from .client.jobs import JobsClient, JobSummary
from .session import Connection
from .errors import JobNotFoundError, QMConnectionError, QmQuaException, QMTimeoutError, QmValueError
from .producer import RemoteStore
from .server.app import ResultsServer
from .server.store import ResultStore
from .simulator import EXPERIMENTS, Simulation

__all__ = ["main", "build_parser"]

DEFAULT_PORT = 9510
DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_PORT}"
POLL_SECONDS = 0.1       # demo: one GetJob per poll
PRINT_SECONDS = 0.5      # demo without a TTY: one progress line per this interval
# seconds to reach a server (and list or describe jobs) before giving up; tests may shorten it
CONNECT_TIMEOUT = float(os.environ.get("QM_XARRAY_CONNECT_TIMEOUT", "5"))
RPC_TIMEOUT = 120.0      # deadline of data RPCs of export and plot


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

    p = sub.add_parser("jobs", help="list the jobs of a server with state and progress")
    _add_address(p)
    _add_json(p)
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("info", help="describe a job (or an exported zarr store): schema, counts, state")
    p.add_argument("job", metavar="JOB", help="job id on --address, qm://HOST:PORT/JOB, or a zarr store path")
    _add_address(p)
    _add_json(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("export", help="write a job to a zarr store (resumable; --follow a running job)",
                       description="Write every stream of JOB to the zarr v3 store STORE, in the layout of "
                       "xr.open_dataset(job, engine='qm'). Rerunning on the same store resumes (after "
                       "Ctrl-C or a kill) and repairs a half-written append; a finished export is "
                       "left as it is.")
    p.add_argument("job", metavar="JOB", help="job id on --address, or qm://HOST:PORT/JOB")
    p.add_argument("store", metavar="STORE", help="path of the zarr store (created, or resumed)")
    p.add_argument("--follow", action="store_true", help="keep appending until the job ends")
    _add_address(p)
    p.add_argument("--every", type=float, default=0.5, metavar="S",
                   help="with --follow: seconds between rounds (default 0.5)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="with --follow: give up (exit 1, store resumable) after S seconds")
    p.add_argument("--no-compression", action="store_true", help="store chunks uncompressed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_json(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("plot", help="draw streams of a job or of a zarr store into a PNG file",
                       description="Draw in the form that suits the data: an I/Q scatter for a single-shot "
                       "pair (streams I and Q, coloured by state), a line for 1-D data, an image for "
                       "2-D data; save_all buffers are reduced over their items (--reduce).")
    p.add_argument("source", metavar="JOB_OR_STORE",
                   help="a zarr store written by export, a job id on --address, or qm://HOST:PORT/JOB")
    p.add_argument("-o", "--output", required=True, metavar="PNG", help="the PNG file to write")
    p.add_argument("--stream", action="append", metavar="NAME",
                   help="stream to draw (twice for an I/Q pair); default: the I/Q pair if there is "
                        "one, else the first save_all stream with data")
    p.add_argument("--reduce", default="auto", choices=["auto", "mean", "last", "none"],
                   help="how a save_all buffer is reduced over its items (auto: mean)")
    _add_address(p)
    p.add_argument("--width-px", type=int, default=None, metavar="W", help="width in pixels (default 800)")
    p.add_argument("--height-px", type=int, default=None, metavar="H", help="height in pixels (default 600)")
    p.add_argument("--size", default=None, metavar="WxH", help="size in pixels, e.g. 1200x800")
    p.add_argument("--title", default=None, help="title (default: job, what is drawn, state)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("demo", help="the tour: embedded server, simulated experiment, live progress, "
                                    "lazy dataset, followed zarr export, plot, check")
    p.add_argument("--experiment", default="rabi", help=f"one of: {', '.join(EXPERIMENTS)} (default rabi)")
    p.add_argument("--quiet", action="store_true", help="no progress lines or bar")
    p.add_argument("--timeout", type=float, default=60.0, help="give up if the job runs longer (s)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where to write the zarr store and the PNG (default: a new temporary directory)")
    _add_run_options(p)
    p.set_defaults(func=cmd_demo)
    return parser


def _add_address(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=DEFAULT_ADDRESS, metavar="HOST:PORT",
                   help=f"results server (default {DEFAULT_ADDRESS})")


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON (for scripts)")


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


# --------------------------------------------------------------------------- server connections
def _job_ref(job: str, address: str) -> tuple[str, str]:
    """(address, job id) of a JOB argument: an id on `address`, or a `qm://HOST:PORT/JOB` URL."""
    if job.startswith("qm://"):
        host, port, job_id = parse_address(job)
        if not job_id:
            raise UsageError(f"{job!r} names no job: expected qm://HOST:PORT/JOB")
        return (f"[{host}]" if ":" in host else host) + f":{port}", job_id
    return address, job


@contextmanager
def _connected(address: str, jobs_service: bool = False) -> Iterator[Connection]:
    """A Connection to `address`, checked to answer within CONNECT_TIMEOUT seconds (with our
    JobsService if `jobs_service`; a QM server has only the results services)."""
    details = ConnectionDetails.from_address(address, timeout=RPC_TIMEOUT)
    try:
        try:
            JobsClient(details).server_info(timeout=CONNECT_TIMEOUT)
        except QMConnectionError as exc:  # refused (retried until the deadline), reset, ...
            if "UNIMPLEMENTED" not in str(exc):
                raise QMConnectionError(f"cannot reach a results server at {address}: {exc}") from None
            if jobs_service:
                raise QMConnectionError(f"the server at {address} has no qm-xarray jobs service "
                                        f"(a QM server?): cannot list or describe its jobs") from None
        except QMTimeoutError:  # connected, but no answer
            raise QMConnectionError(f"cannot reach a results server at {address}: no answer within "
                                    f"{CONNECT_TIMEOUT:g} s") from None
        yield Connection(details)
    finally:
        close_channels(details)


def _summary(conn: Connection, job_id: str, address: str) -> JobSummary | None:
    """The job's summary (None on a server without our JobsService); unknown job: one clear error."""
    try:
        return JobsClient(conn.details).get_job(job_id, timeout=CONNECT_TIMEOUT)
    except JobNotFoundError:
        raise JobNotFoundError(f"no job {job_id!r} on {address} (list them: qm-xarray jobs --address "
                               f"{address})") from None
    except QMConnectionError as exc:
        if "UNIMPLEMENTED" in str(exc):
            return None
        raise


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2), flush=True)


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _time(unix: float) -> str:
    return datetime.fromtimestamp(unix).isoformat(sep=" ", timespec="seconds") if unix else ""


def job_json(job: JobSummary) -> dict[str, Any]:
    """A job summary as plain JSON data (the `--json` form of `jobs` and `info`)."""
    done, total = job_fraction(job)
    return {
        "job_id": job.job_id, "state": job.state, "has_dataloss": job.has_dataloss,
        "errors": [{"code": c, "severity": sev, "message": m} for c, sev, m in job.errors],
        "count": done, "expected": total, "created": job.created, "updated": job.updated,
        "streams": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape),
                     "save_mode": "save" if s.single else "save_all", "timestamps": s.timestamps,
                     "count": s.count, "expected_count": s.expected_count} for s in job.streams],
    }


def store_json(path: Path) -> dict[str, Any]:
    """The `info` of an exported zarr store, from its attributes (same keys as `job_json`)."""
    ds = _open_store(path)
    attrs = ds.attrs
    if "qm_job_id" not in attrs:
        raise QmValueError(f"{path} is a zarr store but not a qm-xarray export")
    counts = json.loads(attrs.get("qm_counts", "{}"))
    expected = json.loads(attrs.get("qm_expected_counts", "{}"))
    streams = []
    for name, var in ds.data_vars.items():
        single = var.attrs.get("qm_save_mode") == "save"
        streams.append({"name": str(name), "dtype": var.dtype.str,
                        "shape": list(var.shape if single else var.shape[1:]),
                        "save_mode": "save" if single else "save_all",
                        "timestamps": f"{name}_timestamp" in ds.variables,
                        "count": int(var.attrs.get("qm_count", counts.get(name, 0))),
                        "expected_count": int(var.attrs.get("qm_expected_count", expected.get(name, 0)))})
    growing = [s for s in streams if s["save_mode"] == "save_all" and s["expected_count"]]
    return {
        "job_id": attrs["qm_job_id"], "state": attrs.get("qm_job_state", "unknown"),
        "has_dataloss": bool(attrs.get("qm_has_dataloss", 0)),
        "errors": json.loads(attrs.get("qm_execution_errors", "[]")),
        "count": sum(min(s["count"], s["expected_count"]) for s in growing),
        "expected": sum(s["expected_count"] for s in growing),
        "store": str(path), "export_complete": bool(attrs.get("qm_export_complete", False)),
        "source": attrs.get("qm_source", ""), "snapshot_time": attrs.get("qm_snapshot_time", ""),
        "streams": streams,
    }


def _flags(info: dict[str, Any]) -> str:
    flags = ["DATA LOSS"] if info["has_dataloss"] else []
    flags += [f"{e['severity']} {e['code']}: {e['message']}" for e in info["errors"]]
    return "; ".join(flags)


def _progress_text(info: dict[str, Any]) -> str:
    done, total = info["count"], info["expected"]
    return f"{done}/{total}" + (f" ({100 * done / total:.0f}%)" if total else "")


# ------------------------------------------------------------------------------------ jobs, info
def cmd_jobs(args: argparse.Namespace) -> int:
    """List the jobs of the server: state, progress (items of save_all streams), flags."""
    with _connected(args.address, jobs_service=True) as conn:
        jobs = sorted(JobsClient(conn.details).list_jobs(timeout=CONNECT_TIMEOUT), key=lambda j: j.created)
    infos = [job_json(j) for j in jobs]
    if args.json:
        _print_json(infos)
        return 0
    if not infos:
        print(f"no jobs on {args.address}", flush=True)
        return 0
    rows = [("job", "state", "progress", "streams", "updated", "flags")]
    rows += [(i["job_id"], i["state"], _progress_text(i), str(len(i["streams"])), _time(i["updated"]),
              _flags(i)) for i in infos]
    print(_table(rows), flush=True)
    return 0


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.endswith(".zarr") or text.startswith((".", "~"))


def cmd_info(args: argparse.Namespace) -> int:
    """Describe a job of a server (or an exported store): state, flags, and one row per stream."""
    path = Path(args.job).expanduser()
    if not args.job.startswith("qm://") and (path.exists() or _looks_like_path(args.job)):
        info = store_json(path)
        where = f"store {path}" + ("" if info["export_complete"] else " (export not finished)")
    else:
        address, job_id = _job_ref(args.job, args.address)
        with _connected(address, jobs_service=True) as conn:
            summary = _summary(conn, job_id, address)
        assert summary is not None
        info = {**job_json(summary), "address": address}
        where = address
    if args.json:
        _print_json(info)
        return 0
    flags = _flags(info)
    lines = [f"job {info['job_id']} ({where}): {info['state']}" + (f" ({flags})" if flags else ""),
             f"progress: {_progress_text(info)} items of save_all streams",
             f"data loss: {'yes' if info['has_dataloss'] else 'no'}",
             "execution errors: " + ("; ".join(f"{e['severity']} {e['code']}: {e['message']}"
                                              for e in info["errors"]) or "none")]
    rows = [("stream", "mode", "dtype", "shape", "count/expected")]
    for s in info["streams"]:
        rows.append((s["name"], s["save_mode"], s["dtype"] + (" +ts" if s["timestamps"] else ""),
                     str(tuple(s["shape"])), f"{s['count']}/{s['expected_count'] or '?'}"))
    print("\n".join(lines) + "\n\n" + _table(rows), flush=True)
    return 0


# ---------------------------------------------------------------------------------------- export
def _positive_seconds(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise UsageError(f"{name} must be a positive number of seconds, got {value:g}")


def _export_line(result: Any, flags: str) -> str:
    counts = ", ".join(f"{dim} {n}" for dim, n in result.counts.items()) or "no save_all streams"
    if result.complete and result.rounds == 0:
        end = "already complete, nothing written"
    elif result.complete:
        end = "complete"
    else:
        end = "job still running: rerun (with --follow to wait for the end) to continue"
    return (f"exported job {result.job_id} ({result.state}{'; ' + flags if flags else ''}) to "
            f"{result.path}: {counts} items; {end}")


def cmd_export(args: argparse.Namespace) -> int:
    """`export_zarr` from the command line, with a progress bar (rate, ETA) on a terminal."""
    from .persist import export_zarr

    _positive_seconds("--every", args.every)
    _positive_seconds("--timeout", args.timeout)
    address, job_id = _job_ref(args.job, args.address)
    with _connected(address) as conn:
        _summary(conn, job_id, address)
        try:
            result = export_zarr(conn.job(job_id), args.store, follow=args.follow, every=args.every,
                                 timeout=args.timeout, progress=False if args.quiet else None,
                                 compression=None if args.no_compression else "default",
                                 on_dataloss="ignore")
        except KeyboardInterrupt:
            print(f"qm-xarray export: interrupted; rerun the same command to resume {args.store}",
                  file=sys.stderr)
            return 130
    info = store_json(Path(result.path))
    if args.json:
        _print_json({**dataclasses.asdict(result), "has_dataloss": info["has_dataloss"],
                     "errors": info["errors"]})
    else:
        print(_export_line(result, _flags(info)), flush=True)
    return 0


# ------------------------------------------------------------------------------------------ plot
def _plot_size(args: argparse.Namespace) -> tuple[int, int]:
    width, height = 800, 600
    if args.size is not None:
        if args.width_px is not None or args.height_px is not None:
            raise UsageError("give --size WxH, or --width-px/--height-px, not both")
        match = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", args.size)
        if not match:
            raise UsageError(f"--size takes WIDTHxHEIGHT in pixels, e.g. 1200x800; got {args.size!r}")
        width, height = int(match.group(1)), int(match.group(2))
    width = args.width_px if args.width_px is not None else width
    height = args.height_px if args.height_px is not None else height
    for name, value in (("width", width), ("height", height)):
        if not 50 <= value <= 20000:
            raise UsageError(f"{name} must be between 50 and 20000 pixels, got {value}")
    return width, height


def _open_store(path: Path) -> Any:
    """`xr.open_zarr` of an existing store; a missing or foreign path is one clear error."""
    import xarray as xr

    if not path.exists():
        raise FileNotFoundError(f"no such zarr store: {path}")
    if not path.is_dir() or not any((path / f).exists() for f in ("zarr.json", ".zgroup")):
        raise QmValueError(f"{path} is not a zarr store")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. a store being exported has no consolidated metadata
        try:
            return xr.open_zarr(str(path))
        except (KeyError, ValueError, OSError, TypeError) as exc:
            raise QmValueError(f"cannot open the zarr store {path}: {exc}") from None


def cmd_plot(args: argparse.Namespace) -> int:
    """Draw a job's or a store's streams into a PNG (see `qm_xarray.plot`)."""
    import xarray as xr

    from .plot import plot

    width, height = _plot_size(args)
    if args.stream is not None and len(args.stream) > 2:
        raise UsageError("--stream: give one stream, or two (an I/Q pair)")
    path = Path(args.source).expanduser()
    folder = Path(args.output).expanduser().parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {args.output}: no directory {folder}")
    with ExitStack() as stack:
        if not args.source.startswith("qm://") and (path.exists() or _looks_like_path(args.source)):
            ds = _open_store(path)
        else:
            address, job_id = _job_ref(args.source, args.address)
            conn = stack.enter_context(_connected(address))
            _summary(conn, job_id, address)
            ds = xr.open_dataset(conn.job(job_id), engine="qm", on_dataloss="ignore")
        drawn = plot(ds, args.output, streams=args.stream, reduce=args.reduce, width_px=width,
                     height_px=height, title=args.title)
    print(f"wrote {args.output} ({width}x{height} px, {drawn.kind}): {drawn.what}", flush=True)
    return 0


# ------------------------------------------------------------------------------------------ demo
class _Background:
    """A function run in a daemon thread; `result(timeout)` returns its value or re-raises."""

    def __init__(self, func: Callable[..., Any], *args: Any, **kwargs: Any):
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(func, args, kwargs), daemon=True,
                                       name="qm-xarray-demo-export")
        self.thread.start()

    def _run(self, func: Callable[..., Any], args: Any, kwargs: Any) -> None:
        try:
            self.value = func(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            self.error = exc

    def result(self, timeout: float) -> Any:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise QMTimeoutError(f"the export did not finish within {timeout:g} s")
        if self.error is not None:
            raise self.error
        return self.value


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
    out_dir: Path | None = None
    store_path: Path | None = None
    png_path: Path | None = None
    export: _Background | None = None
    live: Any = None
    started: float = dataclasses.field(default_factory=time.monotonic)
    step: int = 0

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def next(self, text: str) -> None:
        self.step += 1
        self.say(f"[{self.step}] {text}")

    def qm_job(self) -> Any:
        assert self.details is not None and self.sim is not None and self.sim.job_id is not None
        return Connection(self.details).job(self.sim.job_id)


def demo_serve(d: Demo) -> None:
    """An embedded results server on a free loopback port."""
    d.server = d.stack.enter_context(ResultsServer(ResultStore(), "127.0.0.1", 0))
    d.details = ConnectionDetails.from_address(d.server.address, timeout=10.0)
    d.stack.callback(close_channels, d.details)
    d.next(f"results server listening on {d.server.address}")


def demo_simulate(d: Demo) -> None:
    """The simulated experiment writes through the remote producer (gRPC)."""
    assert d.server is not None
    d.sim = _simulation(d.args, RemoteStore(d.server.address, timeout=10.0)).start()
    d.stack.callback(d.sim.stop)
    exp = d.sim.experiment
    d.next(f"simulating {exp.name!r} ({EXPERIMENTS[exp.name]}) as job {d.sim.job_id}: "
           f"{exp.n_steps} {exp.unit} at {d.sim.rate:g}/s")


def _free_path(directory: Path, stem: str, suffix: str) -> Path:
    path, n = directory / f"{stem}{suffix}", 1
    while path.exists():
        n += 1
        path = directory / f"{stem}-{n}{suffix}"
    return path


def demo_export(d: Demo) -> None:
    """A zarr export that follows the running job, in a thread (`export_zarr(follow=True)`)."""
    from .persist import export_zarr

    assert d.out_dir is not None and d.sim is not None and d.sim.job_id is not None
    d.store_path = _free_path(d.out_dir, d.sim.job_id, ".zarr")
    d.export = _Background(export_zarr, d.qm_job(), d.store_path, follow=True, every=0.2,
                           timeout=d.args.timeout, progress=False, on_dataloss="ignore")
    d.next(f"exporting job {d.sim.job_id} to {d.store_path} while it runs "
           f"(export_zarr(job, store, follow=True) in a thread)")


def demo_watch(d: Demo) -> None:
    """Poll the job over gRPC (JobsService.GetJob) until it ends, showing progress."""
    assert d.details is not None and d.sim is not None and d.sim.job_id is not None
    client, job_id = JobsClient(d.details), d.sim.job_id
    d.next(f"watching job {job_id} over gRPC")
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
    """The final table of streams."""
    assert d.job is not None
    d.next(f"job {d.job.job_id}: {d.job.state}" + _job_flags(d.job))
    d.say(format_table(d.job))


def demo_lazy(d: Demo) -> None:
    """The job as a lazy xarray Dataset: nothing is fetched until values are asked for."""
    import xarray as xr

    d.live = xr.open_dataset(d.qm_job(), engine="qm", on_dataloss="ignore")
    d.next('lazy dataset: xr.open_dataset(job, engine="qm")')
    d.say(str(d.live))


def demo_export_done(d: Demo) -> None:
    """The followed export ends with the job: final state recorded, metadata consolidated."""
    assert d.export is not None
    result = d.export.result(timeout=d.args.timeout)
    counts = ", ".join(f"{dim} {n}" for dim, n in result.counts.items())
    d.next(f"export followed the job in {result.rounds} rounds: {counts} items; state "
           f"{result.state}, {'complete' if result.complete else 'INCOMPLETE'}")


def demo_plot(d: Demo) -> None:
    """A PNG drawn from the zarr store (the same code draws a live job)."""
    from .plot import plot

    assert d.store_path is not None and d.out_dir is not None and d.sim is not None
    d.png_path = _free_path(d.out_dir, str(d.sim.job_id), ".png")
    drawn = plot(_open_store(d.store_path), d.png_path)
    d.next(f"plot of the store ({drawn.kind}: {drawn.what}): {d.png_path}")


def demo_check(d: Demo) -> None:
    """The zarr store equals the live data: `xr.testing.assert_equal(xr.open_zarr(store), live)`."""
    import xarray as xr

    assert d.store_path is not None
    try:
        xr.testing.assert_equal(_open_store(d.store_path), d.live)
    except AssertionError as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), "")
        raise RuntimeError(f"the zarr store {d.store_path} differs from the live data: {first}") from None
    d.next("check: xr.testing.assert_equal(xr.open_zarr(store), live) passed: the store equals the "
           "live data")


DEMO_STEPS: list[Callable[[Demo], None]] = [demo_serve, demo_simulate, demo_export, demo_watch,
                                            demo_table, demo_lazy, demo_export_done, demo_plot,
                                            demo_check]


def _demo_dir(out: str | None) -> Path:
    if out is None:
        return Path(tempfile.mkdtemp(prefix="qm-xarray-demo-"))
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out}: not a directory")
    path.mkdir(parents=True, exist_ok=True)
    return path


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo steps in order; exit 0 when the job reached the expected end state."""
    _simulation(args, ResultStore())  # bad options fail before anything starts
    if args.out is not None and Path(args.out).expanduser().is_file():
        raise UsageError(f"--out {args.out}: not a directory")
    with ExitStack() as stack:
        d = Demo(args, sys.stdout, stack, out_dir=_demo_dir(args.out))
        for step in DEMO_STEPS:
            step(d)
    d.say(f"done in {time.monotonic() - d.started:.1f} s; files in {d.out_dir}:\n"
          f"    zarr store: {d.store_path}   (xr.open_zarr)\n"
          f"    plot:       {d.png_path}")
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
