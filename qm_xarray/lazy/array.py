"""`StreamArray`: the xarray BackendArray of one stream variable (lazy, thread-safe, picklable)."""

from __future__ import annotations

from typing import Any

import numpy as np
from xarray.backends import BackendArray
from xarray.core import indexing

from .graph import StreamSlicer

__all__ = ["StreamArray"]


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
