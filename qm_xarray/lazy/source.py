"""Where the lazy layer reads item ranges from: one stream of one job, frozen at a snapshot.

A source reads `[start, stop)` and returns an array of shape `(n, *item_shape)` in the flat form
(element dtype, or a `(value, timestamp)` record). `ServiceSource` talks to the results service
directly (no header RPC per read) and pickles to connection details only, so dask workers open
their own channel, once per process. qm-qua's objects are read through it too (translated to our
connection details by `client.qmqua`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..client import Header, JobResultApi, JobResultServiceApi
from ..dtypes import item_shape
from ..errors import DataFetchingError

__all__ = ["StreamSource", "ServiceSource", "item_shape_of"]


def item_shape_of(header: Header) -> tuple[int, ...]:
    """Per-item shape from a flat header (`[1]` means a scalar or a record item)."""
    return item_shape(header.shape)


class StreamSource(Protocol):
    """Where a stream's items come from (read-only attributes; ServiceSource, watch's cache)."""

    @property
    def name(self) -> str: ...

    @property
    def dtype(self) -> np.dtype: ...

    @property
    def item_shape(self) -> tuple[int, ...]: ...

    def read(self, start: int, stop: int) -> np.ndarray: ...

    def token(self) -> tuple[Any, ...]: ...


@dataclass(frozen=True)
class ServiceSource:
    """A stream read through our results-service clients (v1 or v2), from its flat header.

    Holds the service itself (connection details, job id, data format: all picklable), so a
    chunk read costs the data RPC only.
    """

    service: JobResultServiceApi | JobResultApi
    header: Header
    timeout: float | None = None

    @property
    def name(self) -> str:
        return self.header.name

    @property
    def job_id(self) -> str:
        return self.service.job_id

    @property
    def dtype(self) -> np.dtype:
        return self.header.dtype

    @property
    def item_shape(self) -> tuple[int, ...]:
        return item_shape_of(self.header)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Items `[start, stop)`; raises `DataFetchingError` if the server has fewer."""
        buf, count = self.service.fetch_range(self.header, start, stop, self.timeout)
        if count != stop - start:
            raise DataFetchingError(
                f"stream {self.name!r} of job {self.job_id!r}: asked for items [{start}, {stop}), "
                f"the server returned {count}")
        return buf.view(self.dtype).reshape((count, *self.item_shape))

    def token(self) -> tuple[Any, ...]:
        return ("qm_xarray.ServiceSource", self.service.connection_details.target, self.job_id,
                self.header.name, self.header.simple_dtype, tuple(self.header.shape))
