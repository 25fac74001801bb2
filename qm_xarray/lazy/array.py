"""The array code of a stream: `StreamSlicer` (an array-like view of a source frozen at a count),
the chunk policy (`chunk_items`), and `StreamArray`, the xarray BackendArray of one variable
(lazy, thread-safe, picklable)."""

from __future__ import annotations

from typing import Any

import numpy as np
from xarray.backends import BackendArray
from xarray.core import indexing

from ..errors import QmIndexError, QmTypeError, QmValueError
from .source import StreamSource

__all__ = ["StreamArray", "StreamSlicer", "chunk_items", "DEFAULT_CHUNK_BYTES", "MAX_CHUNKS"]

DEFAULT_CHUNK_BYTES = 8 * 2**20  # measured: see benchmarks/bench_lazy.py and docs/lazy.md
MAX_CHUNKS = 10_000              # per variable; scheduler overhead is ~0.4 ms per chunk


def chunk_items(itemsize: int, count: int, chunk_bytes: int | None = None) -> int:
    """Items per chunk: `chunk_bytes` (default 8 MiB) of items, at most MAX_CHUNKS chunks."""
    target = DEFAULT_CHUNK_BYTES if chunk_bytes is None else int(chunk_bytes)
    if target <= 0:
        raise QmValueError(f"chunk size must be positive, got {chunk_bytes!r} bytes")
    per_chunk = max(1, target // max(itemsize, 1))
    return max(per_chunk, -(-count // MAX_CHUNKS), 1)


class StreamSlicer:
    """Array-like view of a source frozen at `count` items; `field` picks a record field."""

    __slots__ = ("source", "count", "field", "shape", "dtype", "ndim")

    def __init__(self, source: StreamSource, count: int, field: str | None = None):
        self._setup(source, count, field)

    def _setup(self, source: StreamSource, count: int, field: str | None) -> None:
        self.source = source
        self.count = count
        self.field = field
        dtype = source.dtype if field is None else source.dtype[field]
        sub = dtype.shape  # a record field may itself be a sub-array (timestamped buffers)
        self.dtype = dtype.base if sub else dtype
        self.shape = (count, *source.item_shape, *sub)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        """Items by (int | slice, *inner keys): one read of the covering item range."""
        key = key if isinstance(key, tuple) else (key,)
        first, rest = (key[0], key[1:]) if key else (slice(None), ())
        if isinstance(first, (int, np.integer)):
            index = int(first) + (self.count if first < 0 else 0)
            if not 0 <= index < self.count:
                raise QmIndexError(f"index {int(first)} is out of range for stream "
                                   f"{self.source.name!r} of {self.count} items")
            item: np.ndarray = self._read(index, index + 1)[0]
            return item[rest] if rest else item
        if not isinstance(first, slice):
            raise QmTypeError(f"unsupported index {first!r} on stream {self.source.name!r}")
        positions = range(*first.indices(self.count))
        if not positions:
            arr = np.empty((0, *self.shape[1:]), dtype=self.dtype)
        else:
            lo, hi = min(positions[0], positions[-1]), max(positions[0], positions[-1]) + 1
            arr = self._read(lo, hi)
            if positions.step != 1:
                arr = arr[positions[0] - lo::positions.step]
        return arr[(slice(None), *rest)] if rest else arr

    def _read(self, start: int, stop: int) -> np.ndarray:
        arr = self.source.read(start, stop)
        return arr[self.field] if self.field is not None else arr

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.source, self.count, self.field)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._setup(*state)

    def __dask_tokenize__(self) -> object:
        return ("qm_xarray.StreamSlicer", self.source.token(), self.count, self.field)



class StreamArray(BackendArray):
    """Frozen at a snapshot's count; a key fetches only the item range it covers.

    Declares BASIC indexing: xarray hands us ints and positive-step slices (a list index becomes
    its covering range) and applies the rest in numpy.
    """

    __slots__ = ("slicer", "identity", "shape", "dtype")

    def __init__(self, slicer: StreamSlicer, identity: object):
        self.slicer = slicer
        self.identity = identity
        self.shape = slicer.shape
        self.dtype = slicer.dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> Any:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC,
                                                  self._raw)

    def _raw(self, key: tuple[Any, ...]) -> np.ndarray:
        return self.slicer[key]

    def __dask_tokenize__(self) -> object:
        return ("qm_xarray.StreamArray", self.slicer.__dask_tokenize__(), self.identity)

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.slicer, self.identity)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.slicer, self.identity = state
        self.shape, self.dtype = self.slicer.shape, self.slicer.dtype
