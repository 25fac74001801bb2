"""What the results services return, independent of protocol version."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .._version import IMPLEMENTATION
from ..dtypes import decode_simple_dtype, parse_simple_dtype
from ..execution_errors import SEVERITY_NAMES

__all__ = ["SEVERITY_NAMES", "SchemaItem", "JobResultItemSchema", "Header", "JobResultState", "ServerInfo",
           "dtype_of"]


@lru_cache(maxsize=1024)
def dtype_of(simple_dtype: str) -> np.dtype:
    """Parsed `simpleDType` (cached: a stream's description does not change)."""
    return parse_simple_dtype(simple_dtype)


@dataclass(frozen=True, slots=True)
class SchemaItem:
    """One stream of a job's result schema (`JobResultItemSchema` in the reference)."""

    name: str
    simple_dtype: str
    is_single: bool
    expected_count: int
    shape: tuple[int, ...]

    @property
    def numpy_dtype(self) -> Any:
        """The schema's `simpleDType` parsed from JSON (a str or nested lists), as the reference."""
        return decode_simple_dtype(self.simple_dtype)


JobResultItemSchema = SchemaItem


@dataclass(frozen=True, slots=True)
class Header:
    """A stream's header at one moment: count and how its items are described."""

    name: str
    count_so_far: int
    simple_dtype: str
    shape: tuple[int, ...]
    has_dataloss: bool
    has_execution_errors: bool = False
    is_single: bool = False
    done: bool | None = None    # deprecated v1 fields: job state for servers without
    closed: bool | None = None  # the `qm.job_streaming_state` capability

    @property
    def dtype(self) -> np.dtype:
        return dtype_of(self.simple_dtype)

    @property
    def itemsize(self) -> int:
        """Bytes per item: the dtype size times the per-item shape."""
        return self.dtype.itemsize * int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True, slots=True)
class JobResultState:
    done: bool
    closed: bool
    has_dataloss: bool


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What a server said of itself at first contact (`InfoService/GetInfo`)."""

    implementation: str
    version: str
    capabilities: tuple[str, ...]

    @property
    def qop(self) -> int:
        """3 for a QOP 3 server (capability `__qop3`: v2 services), else 2 (v1 results service)."""
        return 3 if "__qop3" in self.capabilities else 2

    @property
    def is_qm_xarray(self) -> bool:
        """True for our own server, which also lists jobs and takes producers."""
        return self.implementation == IMPLEMENTATION
