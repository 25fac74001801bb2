"""`qm-xarray demo`: the tour. An embedded server, a simulated experiment written through gRPC, live
progress, the lazy dataset, a zarr export that follows the job, a plot of the store, and a check
that the store equals the live data. Each step is a function of the shared `Demo` state (tour.py).
`qm-xarray demo --relay` is the tour of the relay instead (demo_relay.py)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from ..client.connection import ConnectionDetails, close_channels
from ..client.jobs import JobsClient
from ..errors import QMTimeoutError
from ..producer import RemoteStore
from ..server.app import ResultsServer
from ..server.store import ResultStore
from ..simulator import EXPERIMENTS
from .common import UsageError, open_store
from .display import format_table, job_flags
from .demo_relay import relay_tour
from .simulate import add_run_options, experiments_help, simulation
from .tour import Background, Demo, Progress, demo_dir, free_path, tranche

__all__ = ["DEMO_STEPS", "add_parser", "cmd_demo"]

POLL_SECONDS = 0.1       # one GetJob per poll


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="the tour: embedded server, simulated experiment, live progress, "
                                    "lazy dataset, followed zarr export, plot, check",
                       epilog=experiments_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="rabi", help=f"one of: {', '.join(EXPERIMENTS)} (default rabi)")
    p.add_argument("--quiet", action="store_true", help="no progress lines or bar")
    p.add_argument("--timeout", type=float, default=60.0, help="give up if the job runs longer (s)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where to write the zarr store and the PNG (default: a new temporary directory)")
    p.add_argument("--relay", action="store_true",
                   help="the relay tour instead (docs/relay.md): an upstream server standing for a QOP, "
                        "a relay keeping a durable copy of its job while it runs (in --out), readers "
                        "of the relay, and a check that the copy equals the upstream job")
    add_run_options(p)
    p.set_defaults(func=cmd_demo)



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
        d.sim.allow(tranche(d.sim.n_steps))
    d.sim.start()
    d.stack.callback(d.sim.stop)
    exp = d.sim.experiment
    d.next(f"simulating {exp.name!r} ({EXPERIMENTS[exp.name]}) as job {d.sim.job_id}: "
           f"{exp.n_steps} {exp.unit} at {d.sim.rate:g}/s")


def demo_export(d: Demo) -> None:
    """A zarr export that follows the running job, in a thread (`export_zarr(follow=True)`)."""
    from ..persist import export_zarr

    assert d.out_dir is not None and d.sim is not None and d.sim.job_id is not None
    d.store_path = free_path(d.out_dir, d.sim.job_id, ".zarr")
    d.export = Background(export_zarr, d.qm_job(), d.store_path, follow=True, every=0.2,
                           timeout=d.args.timeout, progress=False, on_dataloss="ignore")
    d.next(f"exporting job {d.sim.job_id} to {d.store_path} while it runs "
           f"(export_zarr(job, store, follow=True) in a thread)")


def demo_watch(d: Demo) -> None:
    """Poll the job over gRPC (JobsService.GetJob) until it ends, showing progress."""
    assert d.details is not None and d.sim is not None and d.sim.job_id is not None
    client, job_id = JobsClient(d.details), d.sim.job_id
    d.next(f"watching job {job_id} over gRPC")
    show = Progress(d.out, quiet=d.args.quiet)
    deadline = time.monotonic() + d.args.timeout
    try:
        while True:
            written = d.sim.steps_done >= d.sim.allowed  # before the read: the read includes it
            d.job = client.get_job(job_id, timeout=5.0)
            shown = show.update(d.job)
            if d.job.state != "running":
                break
            if shown and written:  # this part of the run was shown: release the next one
                d.sim.allow(d.sim.allowed + tranche(d.sim.n_steps))
            if time.monotonic() > deadline:
                raise QMTimeoutError(f"demo: job {job_id} did not end within {d.args.timeout:g} s")
            time.sleep(POLL_SECONDS)
    finally:
        show.close()
    d.sim.join(10.0)  # re-raises a failure of the simulation itself


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
    d.png_path = free_path(d.out_dir, str(d.sim.job_id), ".png")
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


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo steps in order (the relay tour's with --relay); exit 0 when the job reached the
    expected end state (and, with --relay, the copy equals it)."""
    simulation(args, ResultStore())  # bad options fail before anything starts
    if args.out is not None and Path(args.out).expanduser().is_file():
        raise UsageError(f"--out {args.out}: not a directory")
    if args.relay:
        return relay_tour(args)
    with ExitStack() as stack:
        d = Demo(args, sys.stdout, stack, out_dir=demo_dir(args.out))
        for step in DEMO_STEPS:
            step(d)
    d.say(f"done in {time.monotonic() - d.started:.1f} s; files in {d.out_dir}:\n"
          f"    zarr store: {d.store_path}   (xr.open_zarr)\n"
          f"    plot:       {d.png_path}")
    ok = d.job is not None and d.sim is not None and d.sim.state == d.sim.planned_state
    return 0 if ok else 1

