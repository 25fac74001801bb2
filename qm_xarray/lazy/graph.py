"""`to_dask`: a dask array over one stream whose every block is one streaming fetch of its range.

Built with `da.from_array` on a tiny picklable slicer (a lazy Blockwise layer: no per-chunk Python
work at build time); the graph name is deterministic and includes the snapshot's count, so a grown
stream never reuses an old name. Chunks are sized by bytes (a block is one RPC that streams many
~1 MiB messages, so it is not bounded by the gRPC message limit).
"""

from __future__ import annotations

import uuid
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from ..errors import QmIndexError, QmTypeError, QmValueError, StreamProcessingDataLossError
from ..client import qmqua
from ..results import BaseSingleStreamFetcher, SingleStreamSingleResultFetcher
from ..session import as_job
from .source import ServiceSource, StreamSource

__all__ = ["to_dask", "chunk_items", "StreamSlicer", "DEFAULT_CHUNK_BYTES", "MAX_CHUNKS"]

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
            item = self._read(index, index + 1)[0]
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
        self.__init__(*state)  # type: ignore[misc]

    def __dask_tokenize__(self) -> object:
        return ("qm_xarray.StreamSlicer", self.source.token(), self.count, self.field)


def dask_from_source(source: StreamSource, count: int, identity: object, *, field: str | None = None,
                     chunks: Any = None, chunk_bytes: int | None = None) -> da.Array:
    """The dask array of `count` items of a source (`identity` makes the name snapshot-unique)."""
    slicer = StreamSlicer(source, count, field)
    itemsize = slicer.dtype.itemsize * int(np.prod(slicer.shape[1:], dtype=np.int64))
    if chunks is None:
        chunks = (chunk_items(itemsize, count, chunk_bytes), *slicer.shape[1:])
    elif isinstance(chunks, (int, np.integer)):
        chunks = (int(chunks), *slicer.shape[1:])
    name = f"qm-{source.name}{'-' + field if field else ''}-" + tokenize(
        slicer, identity, chunks)
    meta = np.empty((0,) * slicer.ndim, dtype=slicer.dtype)
    return da.from_array(slicer, chunks=chunks, name=name, asarray=False, inline_array=False,
                         meta=meta, lock=False)


def to_dask(handle: BaseSingleStreamFetcher, chunks: Any = None, flat_struct: bool = True, *,
            chunk_bytes: int | None = None) -> da.Array:
    """A dask array of the items a `save_all` stream has now; each block calls `fetch(slice)`.

    `chunks` is items per chunk (or a dask chunks spec); by default about `chunk_bytes` (8 MiB)
    of items. Costs two RPCs (header and job state); builds no per-chunk Python work. A qm-qua
    fetcher is read through our client (one more RPC: the job's schema).
    """
    if qmqua.kind_of(handle) == "fetcher":
        handle = as_job(handle).result_handles[str(handle.name)]
    if not isinstance(handle, BaseSingleStreamFetcher):
        raise QmTypeError(f"to_dask takes a stream handle (job.result_handles.get(NAME), ours or "
                          f"qm-qua's), got "
                          f"{type(handle).__name__}")
    if isinstance(handle, SingleStreamSingleResultFetcher):
        raise QmTypeError(f"stream {handle.name!r} is a single (save) result: use fetch_all()")
    service = handle._service
    header = handle._header(flat_struct)
    if header.has_dataloss:
        raise StreamProcessingDataLossError(
            f"data loss in job {handle.job_id!r}: results of stream {handle.name!r} are incomplete")
    state = service.get_state()
    version = getattr(service, "version", 2)
    source = ServiceSource(service.connection_details, service.job_id, header, version,
                           getattr(service, "supports_chunk_streaming", True))
    identity = "final" if (state.done or state.closed) else uuid.uuid4().hex
    return dask_from_source(source, header.count_so_far, identity, chunks=chunks,
                            chunk_bytes=chunk_bytes)
