"""What a simulated experiment is: a stream schema plus deterministic data, step by step.

A *step* is the unit of progress that `rate` counts (an averaging iteration, a shot, an
acquisition). Data are generated in fixed blocks of steps, each from its own seeded generator, so
the values are the same whatever the batching (and so whatever the rate or timing) of a run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from ..streams import StreamSpec

__all__ = ["Experiment", "StreamDecl"]

StreamDecl = StreamSpec  # one stream an experiment writes (`decl.declare(job)` declares it)


class Experiment(ABC):
    """Base of the simulated experiments.

    Subclasses set `name`, `description`, `unit` and `default_rate`, take their sizes as keyword
    arguments, and implement `streams()`, `_generate()` (raw per-step data of one block) and
    `_items()` (what to append for a range of steps, e.g. running averages).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    unit: ClassVar[str] = "iterations"
    default_rate: ClassVar[float] = 100.0
    block_steps: ClassVar[int] = 64

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self._block_index = -1
        self._block: dict[str, np.ndarray] = {}
        self._produced = 0

    @property
    @abstractmethod
    def n_steps(self) -> int:
        """Total number of steps of a complete run."""

    @abstractmethod
    def streams(self) -> list[StreamDecl]:
        """The streams this experiment writes, with their expected counts."""

    @abstractmethod
    def _generate(self, rng: np.random.Generator, start: int, stop: int) -> dict[str, np.ndarray]:
        """Raw data of steps `[start, stop)` (arrays whose first axis is the step)."""

    @abstractmethod
    def _items(self, raw: dict[str, np.ndarray], start: int, stop: int) -> dict[str, Any]:
        """Items to append, by stream name, after steps `[start, stop)` with their raw data."""

    @property
    def step_bytes(self) -> int:
        """Bytes appended per step by the `save_all` streams (to bound the size of a batch)."""
        return sum(s.item_bytes for s in self.streams() if not s.single) or 1

    def produce(self, start: int, stop: int) -> dict[str, Any]:
        """Items to append for steps `[start, stop)`; calls must cover the steps in order."""
        if start != self._produced or not start <= stop <= self.n_steps:
            raise ValueError(f"steps must be produced in order: expected start {self._produced} "
                             f"and stop <= {self.n_steps}, got [{start}, {stop})")
        parts: dict[str, list[np.ndarray]] = {}
        step = start
        while step < stop:
            block, offset = divmod(step, self.block_steps)
            data = self._block_data(block)
            take = min(stop - step, self.block_steps - offset)
            for key, values in data.items():
                parts.setdefault(key, []).append(values[offset:offset + take])
            step += take
        raw = {key: np.concatenate(chunks) for key, chunks in parts.items()}
        self._produced = stop
        return self._items(raw, start, stop) if stop > start else {}

    def _block_data(self, block: int) -> dict[str, np.ndarray]:
        if block != self._block_index:
            first = block * self.block_steps
            last = min(self.n_steps, first + self.block_steps)
            rng = np.random.default_rng([self.seed, block])
            self._block, self._block_index = self._generate(rng, first, last), block
        return self._block

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.n_steps} {self.unit}>"
