"""Handles on one stream: `SingleStreamMultipleResultFetcher` (save_all) and
`SingleStreamSingleResultFetcher` (save), with the members of the seed documentation."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..client.api_v1 import JobResultServiceApi
from ..client.api_v2 import JobResultApi
from ..client.capabilities import ServerCapabilities
from ..client.deadlines import VERY_LONG_TIME, check_timeout, poll
from ..client.models import Header, JobResultState, SchemaItem
from ..errors import (
    QmInvalidSchemaError,
    QmValueError,
    StreamProcessingDataLossError,
)
from .indexing import Selection, select
from .multiple import MultipleStreamsFetcher
from .postprocess import build_array, postprocess_multiple, postprocess_single

__all__ = ["BaseSingleStreamFetcher", "SingleStreamSingleResultFetcher",
           "SingleStreamMultipleResultFetcher", "AnySingleStreamFetcher"]

log = logging.getLogger("qm_xarray.results")
Service = JobResultServiceApi | JobResultApi


def raise_if_lost(header: Header, job_id: str) -> None:
    """`StreamProcessingDataLossError` when a stream's header reports data loss: fetching it
    raises, as the reference does (the one place that says so)."""
    if header.has_dataloss:
        raise StreamProcessingDataLossError(
            f"data loss in job {job_id!r}: results of stream {header.name!r} are incomplete")


class SingleResultCountError(QmValueError, RuntimeError):
    """`wait_for_values(count != 1)` on a `save` stream (a RuntimeError in the reference too)."""


class BaseSingleStreamFetcher:
    """A handle on one named result stream of a job."""

    _single: bool

    def __init__(self, schema: SchemaItem, service: Service, capabilities: ServerCapabilities,
                 multiple_streams_fetcher: MultipleStreamsFetcher | None = None):
        if schema.is_single != self._single:
            raise QmInvalidSchemaError(
                f"stream {schema.name!r} is {'a save' if schema.is_single else 'a save_all'} "
                f"stream; {type(self).__name__} cannot handle it")
        self._schema = schema
        self._service = service
        self._capabilities = capabilities
        self._multiple = multiple_streams_fetcher

    @property
    def name(self) -> str:
        """The name of the result this handle is connected to."""
        return self._schema.name

    @property
    def job_id(self) -> str:
        """The job id this result came from."""
        return self._service.job_id

    @property
    def expected_count(self) -> int:
        return self._schema.expected_count

    @property
    def numpy_dtype(self) -> Any:
        """The schema's simpleDType, parsed from JSON (as the reference)."""
        return self._schema.numpy_dtype

    @property
    def results_service(self) -> Service:
        """The results service (our v1 or v2 client) this handle reads through; picklable, for
        the layers that read item ranges directly (the lazy layer)."""
        return self._service

    @property
    def schema_item(self) -> SchemaItem:
        """The stream's entry in the job's result schema (read when the job was opened)."""
        return self._schema

    def header(self, flat_struct: bool = True, timeout: float | None = None) -> Header:
        """The stream's header now: count, dtype and shape (flat or nested), data loss. One RPC."""
        return self._header(flat_struct, timeout=timeout)

    @property
    def _what(self) -> str:
        return f"stream {self.name!r} of job {self.job_id!r}"

    def _header(self, flat: bool, check_for_errors: bool = True, timeout: float | None = None) -> Header:
        if self._multiple is not None:
            header = self._multiple.headers([(self.name, flat)], timeout)[self.name]
        else:
            header = self._service.get_header(self.name, flat, timeout)
        if check_for_errors and header.has_execution_errors:
            log.error("runtime errors happened during the execution of job %r (stream %r); "
                      "read the job's execution report for details", self.job_id, self.name)
        return header

    def _state(self) -> JobResultState:
        if self._service.reads_state_rpc(self._capabilities):
            return self._service.get_state()
        h = self._header(False, check_for_errors=False)
        return JobResultState(bool(h.done), bool(h.closed), h.has_dataloss)

    def count_so_far(self) -> int:
        """The number of values this result has so far (also `len(handle)`)."""
        return self._header(False).count_so_far

    def __len__(self) -> int:
        return self.count_so_far()

    def has_dataloss(self) -> bool:
        """True if results of the job were lost."""
        return self._state().has_dataloss

    def is_processing(self) -> bool:
        """True while the job may still produce results."""
        state = self._state()
        return not (state.done or state.closed)

    def wait_for_values(self, count: int = 1, timeout: float = VERY_LONG_TIME) -> None:
        """Wait until at least `count` values were processed; `QMTimeoutError` at the deadline."""
        rpc = self._service.connection_details.timeout
        poll(lambda left: True if self._header(False, timeout=min(left, rpc)).count_so_far >= count
             else None, timeout, lambda: f"{self._what}: fewer than {count} values after {timeout} s")

    def wait_for_all_values(self, timeout: float = VERY_LONG_TIME) -> bool:
        """Wait until the job ends: True if it was done, False if closed before done."""
        header_state = None if self._service.reads_state_rpc(self._capabilities) else self.name
        return self._service.wait_until_done(check_timeout(timeout), header_state)

    def _fetch_array(self, item: object, check_for_errors: bool, flat_struct: bool,
                     timeout: float | None) -> np.ndarray:
        header = self._header(flat_struct, check_for_errors, timeout)
        raise_if_lost(header, self.job_id)
        sel = select(item, header.count_so_far, self._what)
        return self._fetch_selection(header, sel, timeout)

    def _fetch_selection(self, header: Header, sel: Selection, timeout: float | None) -> np.ndarray:
        if self._multiple is not None:
            buf, count = self._multiple.fetch([(header, sel.start, sel.stop)], timeout)[self.name]
        else:
            buf, count = self._service.fetch_range(header, sel.start, sel.stop, timeout)
        return build_array(buf, count, header, sel)

    def strict_fetch(self, item: int | slice, *, check_for_errors: bool = True,
                     flat_struct: bool = False, timeout: float | None = None) -> np.ndarray:
        """The raw array for an index or slice, without post-processing.

        Raises `StreamProcessingDataLossError` when the job lost data, `IndexError` for an
        out-of-range int, `TypeError` for anything but an int or a slice.
        """
        return self._fetch_array(item, check_for_errors, flat_struct, timeout)

    def fetch(self, item: int | slice, *, check_for_errors: bool = True, flat_struct: bool = False,
              timeout: float | None = None) -> Any:
        raise NotImplementedError

    def fetch_all(self, *, check_for_errors: bool = True, flat_struct: bool = False) -> Any:
        raise NotImplementedError

    def _postprocess(self, arr: np.ndarray, flat_struct: bool) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} of job {self.job_id!r}>"


class SingleStreamMultipleResultFetcher(BaseSingleStreamFetcher):
    """A handle to a result of a pipeline terminating with save_all."""

    _single = False

    def fetch(self, item: int | slice, *, check_for_errors: bool = True, flat_struct: bool = False,
              timeout: float | None = None) -> np.ndarray | np.void:
        """Items at an index or slice (numpy semantics: negative indices, steps); one timestamped
        item is an `np.void` (value, timestamp), as the reference returns it."""
        return postprocess_multiple(self._fetch_array(item, check_for_errors, flat_struct, timeout))

    def fetch_all(self, *, check_for_errors: bool = True, flat_struct: bool = False
                  ) -> np.ndarray | np.void:
        """All items available now (one timestamped item: an `np.void`, as `fetch`)."""
        return self.fetch(slice(0, None), check_for_errors=check_for_errors, flat_struct=flat_struct)

    def _postprocess(self, arr: np.ndarray, flat_struct: bool) -> np.ndarray | np.void:
        return postprocess_multiple(arr)


_ONE_VALUE = (0, slice(None), slice(1), slice(0, 1), slice(0, 1, 1))


class SingleStreamSingleResultFetcher(BaseSingleStreamFetcher):
    """A handle to a result of a pipeline terminating with save (one running value)."""

    _single = True

    def fetch(self, item: int | slice = 0, *, check_for_errors: bool = True, flat_struct: bool = False,
              timeout: float | None = None) -> Any:
        """The current value (None if there is none yet); any `item` gives that one value."""
        if not any(type(item) is type(ok) and item == ok for ok in _ONE_VALUE):
            log.warning("stream %r is a single result: fetch(%r) returns its one value", self.name, item)
        arr = self._fetch_array(slice(0, 1), check_for_errors, flat_struct, timeout)
        return self._postprocess(arr, flat_struct)

    def fetch_all(self, *, check_for_errors: bool = True, flat_struct: bool = False) -> Any:
        """The current value (None if there is none yet)."""
        return self.fetch(0, check_for_errors=check_for_errors, flat_struct=flat_struct)

    def wait_for_values(self, count: int = 1, timeout: float = VERY_LONG_TIME) -> None:
        if count != 1:
            raise SingleResultCountError(f"{self._what} holds one value; cannot wait for {count}")
        super().wait_for_values(count, timeout)

    def _postprocess(self, arr: np.ndarray, flat_struct: bool) -> Any:
        return postprocess_single(arr, flat_struct, self.name)


AnySingleStreamFetcher = SingleStreamSingleResultFetcher | SingleStreamMultipleResultFetcher
