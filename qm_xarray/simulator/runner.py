"""Run a simulated experiment through a producer at a given rate, with optional injected faults.

The producer is anything with `create_job(job_id=None)` returning a job writer (`ResultStore` in
process, `RemoteStore` over gRPC); an address string or `ConnectionDetails` means a `RemoteStore`.
The job is described (`job_w.describe(**experiment.metadata())`: axes, sweep values, units, run
attributes) once its streams are declared, before any item is written.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from typing import Any

from ..client.connection import ConnectionDetails
from ..errors import QmTypeError, QmValueError
from ..producer import RemoteStore
from .base import Experiment
from .experiments import EXPERIMENT_CLASSES

__all__ = ["Simulation", "simulate"]

BATCH_BYTES = 4 * 1024 * 1024  # at most this much save_all data per batch of appends
MIN_INTERVAL = 0.02            # seconds between batches when pacing (at most 50 updates/s)
ERROR_CODE = 1


def _experiment(experiment: str | Experiment, seed: int, params: dict[str, Any]) -> Experiment:
    if isinstance(experiment, Experiment):
        if params:
            raise QmTypeError(f"size options {sorted(params)} apply only to an experiment given by name")
        return experiment
    cls = EXPERIMENT_CLASSES.get(experiment) if isinstance(experiment, str) else None
    if cls is None:
        raise QmValueError(f"unknown experiment {experiment!r}; choose one of {sorted(EXPERIMENT_CLASSES)}")
    options = list(cls.parameters())
    unknown = sorted(set(params) - set(options))
    if unknown:
        raise QmTypeError(f"experiment {experiment!r} has no option {', '.join(unknown)}; "
                          f"its options are: {', '.join(options)}")
    return cls(seed=seed, **params)


def _producer(target: Any) -> Any:
    if isinstance(target, (str, ConnectionDetails)):
        return RemoteStore(target)
    if not callable(getattr(target, "create_job", None)):
        raise QmTypeError(f"target must be a ResultStore, a RemoteStore or an address, got {target!r}")
    return target


def _fraction(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if not 0.0 <= float(value) <= 1.0:
        raise QmValueError(f"{name} must be a fraction of progress in [0, 1], got {value!r}")
    return float(value)


class Simulation:
    """One run of a simulated experiment, writing its streams through `producer` over time.

    `rate` is steps (iterations, shots, acquisitions) per second; None uses the experiment's
    default (a few seconds per run), `math.inf` writes as fast as possible. `dataloss_at`,
    `error_at` and `cancel_at` are fractions of progress at which to flag data loss, record an
    execution error and end the job closed, or cancel it. Size options (e.g. `n_avg=50`) go to
    the experiment. The job is created by `run()` / `start()`; `.job_id` is known from then on.
    """

    def __init__(self, experiment: str | Experiment, producer: Any, *, rate: float | None = None,
                 seed: int = 0, dataloss_at: float | None = None, error_at: float | None = None,
                 cancel_at: float | None = None, job_id: str | None = None, **params: Any):
        self.experiment = _experiment(experiment, seed, params)
        self.producer = _producer(producer)
        rate = self.experiment.default_rate if rate is None else float(rate)
        if not rate > 0:
            raise QmValueError(f"rate must be > 0 steps per second, got {rate!r}")
        self.rate = rate
        self.requested_job_id = job_id
        self._events = sorted(
            (self._step_at(f), order, kind)
            for order, (kind, f) in enumerate((("dataloss", _fraction("dataloss_at", dataloss_at)),
                                              ("error", _fraction("error_at", error_at)),
                                              ("cancel", _fraction("cancel_at", cancel_at))))
            if f is not None)
        self.job: Any = None
        self.state = "pending"  # then running, and done / cancelled / failed / crashed
        self.steps_done = 0
        self.allowed = self.experiment.n_steps  # steps it may write so far (see `allow`)
        self.exception: BaseException | None = None
        self._writers: dict[str, Any] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by stop() and allow(): the loop need not wait longer
        self._ended = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def job_id(self) -> str | None:
        """The job's id, once `run()` or `start()` created it."""
        return None if self.job is None else self.job.id

    @property
    def n_steps(self) -> int:
        return self.experiment.n_steps

    @property
    def planned_state(self) -> str:
        """The state a run reaches unless stopped or broken: done, or the first injected end."""
        ends = [kind for _, _, kind in self._events if kind != "dataloss"]
        return {"error": "failed", "cancel": "cancelled"}[ends[0]] if ends else "done"

    def _step_at(self, fraction: float) -> int:
        return min(self.experiment.n_steps, round(fraction * self.experiment.n_steps))

    def _open(self) -> None:
        if self.state != "pending":
            raise RuntimeError(f"this simulation already ran (state {self.state!r}); make a new one")
        self.state = "running"
        try:
            job_id = self.requested_job_id
            self.job = self.producer.create_job(job_id) if job_id else self.producer.create_job()
            for decl in self.experiment.streams():
                self._writers[decl.name] = decl.declare(self.job)
            self.job.describe(**self.experiment.metadata())
        except BaseException as exc:
            self.state, self.exception = "crashed", exc
            self._cancel_quietly()
            self._ended.set()
            raise

    def _cancel_quietly(self) -> None:
        """Best effort: a crashed producer leaves no job running."""
        if self.job is not None:
            with contextlib.suppress(Exception):
                self.job.cancel()

    def run(self) -> str:
        """Create the job, write every step at `rate`, end the job; returns the final state."""
        self._open()
        self._guarded_loop()
        if self.exception is not None:
            raise self.exception
        return self.state

    def start(self) -> Simulation:
        """Create the job now (errors raise here), then write in a background thread."""
        self._open()
        self._thread = threading.Thread(target=self._guarded_loop, name="qm-xarray-simulate",
                                        daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait for a started run; True once it ended. Re-raises an error of the run."""
        if self.state == "pending":
            return False
        # an Event, not Thread.join: a Ctrl-C during Thread.join can leave the thread "alive"
        if not self._ended.wait(timeout):
            return False
        if self.exception is not None:
            raise self.exception
        return self.state not in ("pending", "running")

    def stop(self) -> None:
        """Ask the run to cancel its job at the next step (returns at once; see `join`)."""
        self._stop.set()
        self._wake.set()

    def allow(self, steps: int) -> None:
        """Write no further than `steps` steps until allowed more: a caller that shows the job
        (the demo) paces the run by what it has shown, whatever the speed of the machine."""
        self.allowed = max(0, min(int(steps), self.experiment.n_steps))
        self._wake.set()

    def _guarded_loop(self) -> None:
        try:
            self.state = self._loop()
        except BaseException as exc:  # noqa: BLE001 - kept for join()/run() to re-raise
            self.state, self.exception = "crashed", exc
            self._cancel_quietly()
        finally:
            self._ended.set()

    def _loop(self) -> str:
        exp, job, n = self.experiment, self.job, self.experiment.n_steps
        pending = list(self._events)
        max_batch = max(1, BATCH_BYTES // exp.step_bytes)
        start, last_write = time.monotonic(), -math.inf
        while True:
            while pending and pending[0][0] <= self.steps_done:
                _, _, kind = pending.pop(0)
                if kind == "dataloss":
                    job.mark_dataloss()
                elif kind == "error":
                    job.add_error(f"simulated execution error in {exp.name} after {self.steps_done} of "
                                  f"{n} {exp.unit}", code=ERROR_CODE, severity="error")
                    job.cancel()
                    return "failed"
                else:
                    job.cancel()
                    return "cancelled"
            if self._stop.is_set():
                job.cancel()
                return "cancelled"
            if self.steps_done >= n:
                break
            now = time.monotonic()
            due = n if math.isinf(self.rate) else int((now - start) * self.rate)
            limit = min(n, self.steps_done + max_batch, pending[0][0] if pending else n, self.allowed)
            target = min(due, limit)
            if target > self.steps_done and (math.isinf(self.rate) or now - last_write >= MIN_INTERVAL):
                self._write(self.steps_done, target)
                last_write = now
                continue
            next_due = start + (self.steps_done + 1) / self.rate
            held = self.steps_done >= self.allowed  # until allow() says more: no busy loop
            delay = 0.1 if held else max(next_due, last_write + MIN_INTERVAL) - now
            self._wake.wait(min(0.1, max(delay, 0.001)))
            self._wake.clear()
        job.finish()
        return "done"

    def _write(self, first: int, last: int) -> None:
        items = self.experiment.produce(first, last)
        for name, writer in self._writers.items():
            if name in items:
                writer.append(items[name])
        self.steps_done = last

    def __repr__(self) -> str:
        return (f"<Simulation {self.experiment.name} job={self.job_id} {self.state} "
                f"{self.steps_done}/{self.n_steps} {self.experiment.unit}>")


def simulate(experiment: str | Experiment, target: Any, *, background: bool = False,
             **options: Any) -> Simulation:
    """Run `experiment` into `target` (a ResultStore, a RemoteStore or an address "host:port").

    Blocks until the job ends unless `background=True` (then `join()` the returned Simulation).
    `options` are those of `Simulation` (rate, seed, faults, job_id, size options).
    """
    sim = Simulation(experiment, target, **options)
    if background:
        return sim.start()
    sim.run()
    return sim
