"""`SteppedJob`: a simulated experiment that the test writes itself, a few steps at a time, in
the test's own thread: the job grows exactly when the test says, whatever the speed of the machine
(`Simulation` is the same experiment written by a thread at a rate)."""

from __future__ import annotations

from typing import Any

from ..server import ResultStore
from ..simulator import EXPERIMENT_CLASSES

__all__ = ["SteppedJob"]


class SteppedJob:
    """Experiment `experiment` (a name of `EXPERIMENT_CLASSES`, with its `params`) as job `job_id`
    of `store`, its streams declared and described; `advance(n)` writes the next n steps and ends
    the job after the last one."""

    def __init__(self, store: ResultStore, experiment: str, job_id: str, **params: Any) -> None:
        self.experiment = EXPERIMENT_CLASSES[experiment](**params)
        self.job = store.create_job(job_id)
        self.id = job_id
        self.writers = {d.name: d.declare(self.job) for d in self.experiment.streams()}
        self.job.describe(**self.experiment.metadata())
        self.done = 0
        self.finished = False

    @property
    def n_steps(self) -> int:
        return self.experiment.n_steps

    def advance(self, steps: int) -> None:
        """Write the next `steps` steps; end the job after the last one."""
        stop = min(self.n_steps, self.done + steps)
        if stop > self.done:
            items = self.experiment.produce(self.done, stop)
            for name, writer in self.writers.items():
                if name in items:
                    writer.append(items[name])
            self.done = stop
        if self.done >= self.n_steps and not self.finished:
            self.job.finish()
            self.finished = True
