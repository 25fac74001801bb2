"""`qm-xarray simulate`: write a simulated experiment into a running server, with a progress bar
on a terminal; also the options that describe a run (`--rate`, `--param`, faults) and the list of
the experiments' parameters, which `demo` shares."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ..client.connection import close_channels
from ..producer import RemoteStore
from ..simulator import EXPERIMENT_CLASSES, EXPERIMENTS, Simulation
from .common import UsageError, add_producer_target, credentials

__all__ = ["ProgressBar", "add_parser", "add_run_options", "cmd_simulate", "experiments_help",
           "simulation"]

POLL_SECONDS = 0.2  # the bar is redrawn, and the run's end looked for, this often


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


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def experiments_help() -> str:
    """The experiments, each with its parameters and their defaults (read from the experiment
    classes' signatures: `Experiment.parameters()`), for the epilog of `--help`."""
    width = max(map(len, EXPERIMENT_CLASSES))
    lines = ["experiments and their parameters (set with --param NAME=VALUE; defaults shown):"]
    for name, cls in EXPERIMENT_CLASSES.items():
        lines.append(f"  {name:<{width}}  {cls.description}")
        params = [f"{p}={_value(default)}" + (f" {unit}" if (unit := cls.parameter_units.get(p)) else "")
                  for p, default in cls.parameters().items()]
        lines.append(f"  {'':<{width}}    " + ", ".join(params))
    return "\n".join(lines)


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=float, default=None,
                   help="steps (iterations, shots, acquisitions) per second; default: the experiment's")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--job-id", default=None, help="id of the job to create (default: server picks)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="experiment parameter, e.g. n_avg=50 (repeatable; listed below)")
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
    p = sub.add_parser("simulate", help="write a simulated experiment into a running server",
                       description="Create a job on the server and write a simulated experiment into\n"
                                   "it over time, through the producer service; the job id goes to\n"
                                   "stdout, progress and a summary to stderr.",
                       epilog=experiments_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", help=f"one of: {', '.join(EXPERIMENTS)}")
    add_producer_target(p, timeout=30.0)
    add_run_options(p)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="a progress bar on stderr (default: when stderr is a terminal)")
    p.set_defaults(func=cmd_simulate)


class ProgressBar:
    """A tqdm bar of a simulation's steps on `out`, when `enabled` (None: when `out` is a
    terminal); does nothing otherwise."""

    def __init__(self, sim: Simulation, out: TextIO, enabled: bool | None = None):
        if enabled is None:
            enabled = bool(getattr(out, "isatty", lambda: False)())
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm
            try:
                columns, lines = os.get_terminal_size(out.fileno())
            except (AttributeError, OSError, ValueError):
                columns, lines = 0, 0
            exp = sim.experiment
            # a fresh pseudo-terminal reports 0 x 0, and tqdm draws nothing in 0 rows
            self.bar = tqdm(total=sim.n_steps, file=out, desc=f"{exp.name} {sim.job_id}",
                            unit=f" {exp.unit}", leave=True, mininterval=0,
                            ncols=columns if columns > 20 else 100, nrows=lines if lines > 2 else 24,
                            bar_format="{desc}: {percentage:3.0f}%|{bar:24}| {n_fmt}/{total_fmt}"
                                       "{unit} [{elapsed}<{remaining}, {rate_fmt}]")

    def update(self, steps: int) -> None:
        if self.bar is not None and steps > self.bar.n:
            self.bar.update(steps - self.bar.n)

    def close(self, steps: int) -> None:
        if self.bar is not None:
            self.update(steps)
            self.bar.close()
            self.bar = None


def cmd_simulate(args: argparse.Namespace) -> int:
    """Write a simulated experiment into the server at `--address`; prints the job id."""
    details = credentials(args, producer=True).details(args.address, args.timeout)
    try:
        sim = simulation(args, RemoteStore(details, timeout=args.timeout))
        sim.start()
        print(sim.job_id, flush=True)
        bar = ProgressBar(sim, sys.stderr, args.progress)
        try:
            while not sim.join(POLL_SECONDS):
                bar.update(sim.steps_done)
        except KeyboardInterrupt:
            sim.stop()
            sim.join(10.0)
            bar.close(sim.steps_done)
            print(f"interrupted: job {sim.job_id} {sim.state}", file=sys.stderr)
            return 130
        finally:
            bar.close(sim.steps_done)
    finally:
        close_channels(details)
    unit = sim.experiment.unit
    print(f"job {sim.job_id}: {sim.state} after {sim.steps_done}/{sim.n_steps} {unit}", file=sys.stderr)
    return 0 if sim.state == sim.planned_state else 1
