"""`qm-xarray simulate`: write a simulated experiment into a running server; also the options
that describe a run (`--rate`, `--param`, faults), which `demo` shares."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from ..client.connection import close_channels
from ..producer import RemoteStore
from ..simulator import EXPERIMENTS, Simulation
from .common import UsageError, add_producer_target, credentials

__all__ = ["add_parser", "add_run_options", "simulation", "cmd_simulate"]


def params(items: Sequence[str] | None) -> dict[str, Any]:
    """`--param NAME=VALUE` options as a dict of numbers."""
    found: dict[str, Any] = {}
    for item in items or ():
        name, sep, text = item.partition("=")
        if not sep or not name.isidentifier():
            raise UsageError(f"--param takes NAME=VALUE, got {item!r}")
        try:
            found[name] = int(text)
        except ValueError:
            try:
                found[name] = float(text)
            except ValueError:
                raise UsageError(f"--param {name}: {text!r} is not a number") from None
    return found


def experiment_name(name: str) -> str:
    if name not in EXPERIMENTS:
        raise UsageError(f"unknown experiment {name!r}; choose one of: {', '.join(EXPERIMENTS)}")
    return name


def add_run_options(p: argparse.ArgumentParser) -> None:
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


def simulation(args: argparse.Namespace, producer: Any) -> Simulation:
    """The Simulation the options describe (bad options raise `UsageError`; nothing starts)."""
    try:
        return Simulation(experiment_name(args.experiment), producer, rate=args.rate, seed=args.seed,
                          job_id=args.job_id, dataloss_at=args.dataloss_at, error_at=args.error_at,
                          cancel_at=args.cancel_at, **params(args.param))
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    names = ", ".join(f"{k} ({v})" for k, v in EXPERIMENTS.items())
    p = sub.add_parser("simulate", help="write a simulated experiment into a running server",
                       description=f"Experiments: {names}.")
    p.add_argument("experiment", help=f"one of: {', '.join(EXPERIMENTS)}")
    add_producer_target(p, timeout=30.0)
    add_run_options(p)
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    """Write a simulated experiment into the server at `--address`; prints the job id."""
    details = credentials(args, producer=True).details(args.address, args.timeout)
    try:
        sim = simulation(args, RemoteStore(details, timeout=args.timeout))
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
    finally:
        close_channels(details)
    unit = sim.experiment.unit
    print(f"job {sim.job_id}: {sim.state} after {sim.steps_done}/{sim.n_steps} {unit}", file=sys.stderr)
    return 0 if sim.state == sim.planned_state else 1
