"""What a simulated experiment is: a stream schema plus deterministic data, step by step.

A *step* is the unit of progress that `rate` counts (an averaging iteration, a shot, an
acquisition). Data are generated in fixed blocks of steps, each from its own seeded generator, so
the values are the same whatever the batching (and so whatever the rate or timing) of a run.

An experiment also describes its results (`metadata()`: the keyword arguments of
`job_w.describe(...)`): the names of every axis, the sweep values along them with units and long
names, the units and long names of every stream, and the run's attributes (experiment name,
parameters, producer). Its parameters are the keyword arguments of its `__init__`
(`parameters()`: names and defaults, read from the signature, the one list of them).
"""

from __future__ import annotations

import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ..limits import MAX_METADATA_BYTES
from ..streams import StreamSpec

__all__ = ["COORDS_BUDGET", "PRODUCER", "Experiment", "StreamDecl"]

StreamDecl = StreamSpec  # one stream an experiment writes (`decl.declare(job)` declares it)
PRODUCER = "qm-xarray simulator"  # the job attribute "producer" of every simulated job
# the bytes of coordinate values a description may hold: the rest of the server's limit on a
# job's metadata is left to the stream descriptions, attributes and the encoding; a coordinate
# that would not fit (a very long run or buffer) is left out, its axis still named
COORDS_BUDGET = MAX_METADATA_BYTES // 2


class Experiment(ABC):
    """Base of the simulated experiments.

    Subclasses set `name`, `description`, `unit` and `default_rate`, take their parameters as
    keyword arguments with defaults (each kept as the attribute of the same name), and implement
    `streams()`, `_generate()` (raw per-step data of one block), `_items()` (what to append for a
    range of steps, e.g. running averages) and `_describe()` (coordinates and stream descriptions).
    `parameter_units` gives the units of the parameters that have one (shown by `--help`).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    unit: ClassVar[str] = "iterations"
    default_rate: ClassVar[float] = 100.0
    block_steps: ClassVar[int] = 64
    parameter_units: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def parameters(cls) -> dict[str, Any]:
        """The experiment's parameters and their defaults, from `__init__`'s signature (the seed,
        an option of every run, excluded)."""
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return {name: p.default for name, p in inspect.signature(cls).parameters.items()
                if name != "seed" and p.kind in kinds}

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

    def parameter_values(self) -> dict[str, Any]:
        """The values of this run's parameters (the seed first), as plain Python numbers."""
        values = {"seed": self.seed, **{name: getattr(self, name) for name in self.parameters()}}
        return {name: v.item() if isinstance(v, np.generic) else v for name, v in values.items()}

    @abstractmethod
    def _describe(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """Coordinates (name -> `(dim, values, {"units", "long_name"})`) and stream descriptions
        (stream -> `{"dims", "units", "long_name"}`) of this run."""

    def metadata(self) -> dict[str, Any]:
        """What the job's results are, as the keyword arguments of `job_w.describe(...)`:
        `attrs` (experiment, description, parameters as JSON, producer), `coords` and `streams`."""
        coords, streams = self._describe()
        attrs = {"experiment": self.name, "description": self.description,
                 "parameters": json.dumps(self.parameter_values()), "producer": PRODUCER}
        # leave out the largest coordinates until the rest fits the budget
        kept, used = {}, 0
        for name, spec in sorted(coords.items(), key=lambda kv: np.asarray(kv[1][1]).nbytes):
            size = np.asarray(spec[1]).nbytes
            if used + size <= COORDS_BUDGET:
                kept[name], used = spec, used + size
        return {"attrs": attrs, "coords": {name: kept[name] for name in coords if name in kept},
                "streams": streams}

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
