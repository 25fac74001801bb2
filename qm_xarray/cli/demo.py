"""`qm-xarray demo`: the tour. An embedded server, a simulated experiment written through gRPC, live
progress, the lazy dataset, a zarr export that follows the job, a plot of the store, and a check
that the store equals the live data. Each step is a function of the shared `Demo` state."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ..client.connection import ConnectionDetails, close_channels
from ..client.jobs import JobsClient, JobSummary
from ..errors import QMTimeoutError
from ..producer import RemoteStore
from ..server.app import ResultsServer
from ..server.store import ResultStore
from ..session import Connection
from ..simulator import EXPERIMENTS, Simulation
from .common import UsageError, open_store
from .display import format_table, job_flags, job_fraction, stream_counts
from .simulate import add_run_options, experiments_help, simulation

__all__ = ["DEMO_STEPS", "Demo", "add_parser", "cmd_demo"]

POLL_SECONDS = 0.1       # one GetJob per poll
PRINT_SECONDS = 0.5      # without a TTY: one progress line per this interval
TRANCHES = 4             # the run is released in this many parts, each once shown


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="the tour: embedded server, simulated experiment, live progress, "
                                    "lazy dataset, followed zarr export, plot, check",
                       epilog=experiments_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="rabi", help=f"one of: {', '.join(EXPERIMENTS)} (default rabi)")
    p.add_argument("--quiet", action="store_true", help="no progress lines or bar")
    p.add_argument("--timeout", type=float, default=60.0, help="give up if the job runs longer (s)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where to write the zarr store and the PNG (default: a new temporary directory)")
    add_run_options(p)
    p.set_defaults(func=cmd_demo)


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


class _Progress:
    """A tqdm bar for the whole job on a TTY; plain periodic lines otherwise."""

    def __init__(self, out: TextIO, quiet: bool):
        self.out, self.quiet = out, quiet
        self.start = time.monotonic()
        self.last_print = -float("inf")
        self.bar: Any = None
        self.tty = bool(getattr(out, "isatty", lambda: False)())

    def update(self, job: JobSummary) -> bool:
        """Show the job's progress; True if it was shown now (a line printed, the bar redrawn)."""
        if self.quiet:
            return False
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
            self.bar.set_postfix_str(stream_counts(job), refresh=False)
            self.bar.refresh()
            return True
        now = time.monotonic()
        if now - self.last_print >= PRINT_SECONDS or job.state != "running":
            self.last_print = now
            print(f"    {now - self.start:5.1f}s {job.state:8s} {done}/{total}: {stream_counts(job)}",
                  file=self.out, flush=True)
            return True
        return False

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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
    d.sim = simulation(d.args, RemoteStore(d.server.address, timeout=10.0))
    if not d.args.quiet:  # the progress shown is paced by the demo, not by the machine's speed
        d.sim.allow(_tranche(d.sim.n_steps))
    d.sim.start()
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
    from ..persist import export_zarr

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
            written = d.sim.steps_done >= d.sim.allowed  # before the read: the read includes it
            d.job = client.get_job(job_id, timeout=5.0)
            shown = show.update(d.job)
            if d.job.state != "running":
                break
            if shown and written:  # this part of the run was shown: release the next one
                d.sim.allow(d.sim.allowed + _tranche(d.sim.n_steps))
            if time.monotonic() > deadline:
                raise QMTimeoutError(f"demo: job {job_id} did not end within {d.args.timeout:g} s")
            time.sleep(POLL_SECONDS)
    finally:
        show.close()
    d.sim.join(10.0)  # re-raises a failure of the simulation itself


def _tranche(n_steps: int) -> int:
    return max(1, -(-n_steps // TRANCHES))


def demo_table(d: Demo) -> None:
    """The final table of streams."""
    assert d.job is not None
    d.next(f"job {d.job.job_id}: {d.job.state}" + job_flags(d.job))
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
    from ..plot import plot

    assert d.store_path is not None and d.out_dir is not None and d.sim is not None
    d.png_path = _free_path(d.out_dir, str(d.sim.job_id), ".png")
    drawn = plot(open_store(d.store_path), d.png_path)
    d.next(f"plot of the store ({drawn.kind}: {drawn.what}): {d.png_path}")


def demo_check(d: Demo) -> None:
    """The zarr store equals the live data: `xr.testing.assert_equal(xr.open_zarr(store), live)`."""
    import xarray as xr

    assert d.store_path is not None
    try:
        xr.testing.assert_equal(open_store(d.store_path), d.live)
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
    simulation(args, ResultStore())  # bad options fail before anything starts
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
