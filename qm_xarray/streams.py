"""Stream declarations: what `add_stream` takes, as one frozen `StreamSpec`, and the rules for it.

A declaration is a stream's name, element dtype, per-item (buffer) shape, `single` (a `save`
stream), timestamps and expected count. The store, the producer service, the durable store, the
remote producer, the simulator and the test helpers all hold one as a `StreamSpec`, checked here
once, with the errors users see:

- `StreamSpec.create`: what a store accepts (layout: `QmInvalidSchemaError`; name and expected
  count: `QmValueError`);
- `StreamSpec.parse`: what a remote producer checks before sending (types and layout), leaving the
  store's rules to the server, which answers INVALID_ARGUMENT;
- `declarations`: the `streams=` argument of `create_job` (specs, dicts, or name -> options).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from .dtypes import StreamLayout
from .errors import QmTypeError, QmValueError
from .limits import MAX_COUNT
from .wire.pb.qm_xarray.v1 import control_pb2 as pb

__all__ = ["StreamSpec", "StreamDeclarer", "StreamDeclarations", "declarations", "OPTIONS",
           "STREAM_NAME_PATTERN", "DEFAULT_DTYPE"]

STREAM_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")
DEFAULT_DTYPE = "<f8"
OPTIONS = ("dtype", "shape", "single", "timestamps", "expected_count")  # besides the name

W_co = TypeVar("W_co", covariant=True)
W = TypeVar("W")  # the stream writer a job writer returns


class StreamDeclarer(Protocol[W_co]):
    """A job writer, local (`JobWriter`) or remote (`RemoteJobWriter`): it declares streams."""

    def add_stream(self, name: str, dtype: Any = ..., shape: Any = ..., single: bool = ...,
                   timestamps: bool = ..., expected_count: int = ...) -> W_co: ...


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """One stream declaration. Build it with `create` (or `parse`) to have it checked and
    normalised: `dtype` a numpy type string ("|b1" for bool), `shape` a tuple of ints."""

    name: str
    dtype: str = DEFAULT_DTYPE
    shape: tuple[int, ...] = ()
    single: bool = False
    timestamps: bool = False
    expected_count: int = 0

    @staticmethod
    def create(name: Any, dtype: Any = DEFAULT_DTYPE, shape: Any = (), single: Any = False,
               timestamps: Any = False, expected_count: Any = 0) -> StreamSpec:
        """The declaration as a store accepts it: a valid layout, one of our stream names and an
        expected count in [0, MAX_COUNT]."""
        layout = StreamLayout.create(dtype, shape, timestamps)
        if not isinstance(name, str) or not STREAM_NAME_PATTERN.match(name):
            raise QmValueError(f"invalid stream name {name!r}: use letters, digits and _ . : -")
        if isinstance(expected_count, bool) or not isinstance(expected_count, (int, np.integer)) \
                or not 0 <= int(expected_count) <= MAX_COUNT:
            raise QmValueError(f"stream {name!r}: expected_count must be an int in [0, {MAX_COUNT}]")
        return StreamSpec._of(name, layout, single, int(expected_count))

    @staticmethod
    def parse(name: Any, dtype: Any = DEFAULT_DTYPE, shape: Any = (), single: Any = False,
              timestamps: Any = False, expected_count: Any = 0) -> StreamSpec:
        """The declaration as a remote producer checks it before sending: a string name (else
        `QmTypeError`), a valid layout and an integer count; the server then applies `create`."""
        if not isinstance(name, str):
            raise QmTypeError(f"stream name must be a string, got {type(name).__name__}")
        layout = StreamLayout.create(dtype, shape, timestamps)
        try:
            expected = int(expected_count)
        except (TypeError, ValueError):
            raise QmTypeError(f"stream {name!r}: expected_count must be an int, got {expected_count!r}") from None
        return StreamSpec._of(name, layout, single, expected)

    @staticmethod
    def _of(name: str, layout: StreamLayout, single: Any, expected_count: int) -> StreamSpec:
        return StreamSpec(name, layout.dtype.str, layout.shape, bool(single), layout.timestamps,
                          expected_count)

    @staticmethod
    def from_message(message: pb.StreamSpec) -> StreamSpec:
        """From our protocol's `StreamSpec` message, checked as a store checks it."""
        return StreamSpec.create(message.name, message.dtype, tuple(message.shape), message.single,
                                 message.timestamps, message.expected_count)

    def to_message(self) -> pb.StreamSpec:
        """As our protocol's `StreamSpec` message."""
        return pb.StreamSpec(name=self.name, dtype=self.dtype, shape=list(self.shape), single=self.single,
                             timestamps=self.timestamps, expected_count=self.expected_count)

    @property
    def layout(self) -> StreamLayout:
        """How one item is laid out (`QmInvalidSchemaError` if dtype or shape is invalid)."""
        return StreamLayout.create(self.dtype, self.shape, self.timestamps)

    @property
    def item_bytes(self) -> int:
        """Bytes of one item (value and timestamp)."""
        return self.layout.itemsize

    def declare(self, job: StreamDeclarer[W], name: str | None = None,
                expected_count: int | None = None) -> W:
        """Declare this stream on a job writer (local or remote), under `name` and with
        `expected_count` if given; returns the writer's stream writer."""
        return job.add_stream(self.name if name is None else name, self.dtype, self.shape, self.single,
                              self.timestamps,
                              self.expected_count if expected_count is None else expected_count)


StreamDeclarations = Iterable[StreamSpec | Mapping[str, Any]] | Mapping[str, Mapping[str, Any]]


def declarations(streams: StreamDeclarations,
                 make: Callable[..., StreamSpec] = StreamSpec.create) -> list[StreamSpec]:
    """The streams of `create_job(streams=...)`, each checked by `make` (`StreamSpec.create`, or
    `StreamSpec.parse` for a remote producer).

    `streams` holds `StreamSpec`s or dicts of `add_stream` arguments with a "name", or is a mapping
    name -> arguments. An unknown argument raises `QmValueError`.
    """
    if isinstance(streams, Mapping):
        streams = [{"name": name, **options} for name, options in streams.items()]
    specs = []
    for stream in streams:
        if isinstance(stream, StreamSpec):
            specs.append(make(stream.name, stream.dtype, stream.shape, stream.single, stream.timestamps,
                              stream.expected_count))
            continue
        options = dict(stream)
        name = options.pop("name", None)
        unknown = set(options) - set(OPTIONS)
        if unknown:
            raise QmValueError(f"stream {name!r}: unknown options {sorted(unknown)}")
        specs.append(make(name, **options))
    return specs
