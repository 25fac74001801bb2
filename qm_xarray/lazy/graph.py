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

from ..client import qmqua
from ..errors import QmTypeError
from ..results import BaseSingleStreamFetcher, SingleStreamSingleResultFetcher, raise_if_lost
from ..session import as_job
from .array import StreamSlicer, chunk_items
from .source import ServiceSource, StreamSource

__all__ = ["to_dask", "dask_from_source"]


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
    array: da.Array = da.from_array(slicer, chunks=chunks, name=name, asarray=False,
                                    inline_array=False, meta=meta, lock=False)
    return array


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
    service = handle.results_service
    header = handle.header(flat_struct)
    raise_if_lost(header, handle.job_id)
    state = service.get_state()
    source = ServiceSource(service, header)
    identity = "final" if (state.done or state.closed) else uuid.uuid4().hex
    return dask_from_source(source, header.count_so_far, identity, chunks=chunks,
                            chunk_bytes=chunk_bytes)
