"""Growing jobs: `refresh(ds)` (the next snapshot, same options) and `watch(job)` (live snapshots
that fetch only the new items)."""

from __future__ import annotations

import time
from dataclasses import replace
from collections.abc import Hashable, Iterator
from typing import Any

import numpy as np
import xarray as xr

from ..client.deadlines import check_timeout
from ..errors import QmValueError
from .layout import build_dataset
from .options import OpenOptions, check_interval
from .snapshots import JobSnapshot, metadata_of, origin_of, resolve_job, snapshot

__all__ = ["open_dataset", "refresh", "watch"]


def open_dataset(job: Any, *, chunks: Any = None, **options: Any) -> xr.Dataset:
    """Typed wrapper of `xr.open_dataset(job, engine="qm", chunks=chunks, **options)`."""
    return xr.open_dataset(job, engine="qm", chunks=chunks, **options)


def refresh(ds: xr.Dataset, *, wait: int | str | None = None, timeout: float | None = None,
            chunks: Any = None) -> xr.Dataset:
    """Reopen the job of `ds` with the same options: the next snapshot (old `ds` stays valid)."""
    job = ds.encoding.get("qm_job")
    opts = ds.encoding.get("qm_open_options")
    if job is None or opts is None:
        raise QmValueError("this dataset has lost its qm open options (xr.merge and some operations "
                           "drop encoding); reopen with xr.open_dataset(job, engine='qm', ...)")
    if chunks is None and any(v.chunks for v in ds.variables.values()):
        chunks = _chunks_as_opened(ds)
    return xr.open_dataset(job, engine="qm", chunks=chunks, wait=wait, timeout=timeout, **opts.kwargs())


def _chunks_as_opened(ds: xr.Dataset) -> dict[Hashable, int]:
    """`{}` (the preferred chunks) if `ds` was opened that way, else its explicit chunk sizes."""
    explicit = {}
    for var in ds.variables.values():
        if var.chunks is None:
            continue
        preferred = var.encoding.get("preferred_chunks", {})
        for dim, sizes in zip(var.dims, var.chunks):
            natural = min(preferred.get(dim, sum(sizes)), sum(sizes))  # what chunks={} gives
            if sizes[0] != natural:
                explicit[dim] = sizes[0]
    return explicit


def watch(job: Any, every: float = 1.0, *, timeout: float | None = None, **options: Any
          ) -> Iterator[xr.Dataset]:
    """Yield a Dataset per new snapshot until the job ends (the last one is final).

    Each round fetches only the items that arrived since the previous one and keeps the rest in
    memory, so traffic grows with the data, not with the number of rounds. Values are numpy.
    `options` are those of engine "qm" (`OpenOptions`); bad ones raise here, before any I/O.
    """
    every = check_interval(every)
    if timeout is not None:
        check_timeout(timeout)
    opts = OpenOptions.of(options)
    return _watch(resolve_job(job, timeout), every, timeout, opts)


def _watch(job: Any, every: float, timeout: float | None, opts: OpenOptions) -> Iterator[xr.Dataset]:
    streams = opts.streams
    cache: dict[str, _Fetched] = {}
    deadline = None if timeout is None else time.monotonic() + timeout
    last_counts: dict[str, int] | None = None
    while True:
        snap = snapshot(job, streams=streams, metadata=False)  # a round without news costs less
        if snap.counts != last_counts or snap.final:
            _extend(snap, cache)
            yield _materialized(replace(snap, metadata=metadata_of(job), origin=origin_of(job)), opts, cache)
            last_counts = snap.counts
        if snap.final:
            return
        if deadline is not None and time.monotonic() >= deadline:
            return
        time.sleep(every)


class _Fetched:
    """The items of one stream fetched so far, in a buffer that doubles when full: a round
    copies only its new items (no concatenation of everything each round). Items already
    handed out are never written again: a round writes past them."""

    def __init__(self, first: np.ndarray):
        self._buffer = first
        self.count = len(first)

    def extend(self, new: np.ndarray) -> None:
        need = self.count + len(new)
        if need > len(self._buffer):
            grown = np.empty((max(need, 2 * len(self._buffer)), *self._buffer.shape[1:]), self._buffer.dtype)
            grown[:self.count] = self._buffer[:self.count]
            self._buffer = grown
        self._buffer[self.count:need] = new
        self.count = need

    @property
    def items(self) -> np.ndarray:
        return self._buffer[:self.count]


def _extend(snap: JobSnapshot, cache: dict[str, _Fetched]) -> None:
    for name, s in snap.streams.items():
        if s.single:
            continue
        have = cache.get(name)
        start = 0 if have is None else have.count
        if have is None:
            cache[name] = _Fetched(snap.source(name).read(0, s.count))
        elif s.count > start:
            have.extend(snap.source(name).read(start, s.count))


class _CachedSource:
    """A source that serves items already fetched by `watch`."""

    def __init__(self, source: Any, data: np.ndarray):
        self.source, self.data = source, data
        self.name, self.dtype, self.item_shape = source.name, source.dtype, source.item_shape

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.data[start:stop]

    def token(self) -> tuple[Any, ...]:
        return ("qm_xarray.watch", self.source.token(), len(self.data))


def _materialized(snap: JobSnapshot, opts: OpenOptions, cache: dict[str, _Fetched]) -> xr.Dataset:
    sources = {n: (_CachedSource(snap.source(n), cache[n].items) if n in cache else snap.source(n))
               for n in snap.streams}
    return build_dataset(replace(snap, _sources=sources), opts).load()
