"""`StreamsManager`: access to all the result streams of a job (the seed API's entry point)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection, ItemsView, Iterator, KeysView, Mapping, ValuesView
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, overload, TypeVar

import numpy as np

from .. import _tokens
from ..client.api_v1 import JobResultServiceApi
from ..client.api_v2 import JobResultApi
from ..client.capabilities import ServerCapabilities
from ..client.deadlines import VERY_LONG_TIME, check_timeout
from ..errors import QmKeyError, QmTypeError, QmValueError
from .fetchers import (
    AnySingleStreamFetcher,
    SingleStreamMultipleResultFetcher,
    SingleStreamSingleResultFetcher,
    raise_if_lost,
)
from .indexing import select
from .multiple import MultipleStreamsFetcher

__all__ = ["StreamsManager", "StreamingResultFetcher"]

log = logging.getLogger("qm_xarray.results")
_T = TypeVar("_T")
MAX_PARALLEL_FETCHES = 8


class StreamsManager(Mapping[str, AnySingleStreamFetcher]):
    """Access to the results of a job: a read-only mapping of stream name -> handle.

    Construction reads the job's result schema (one RPC). Iterating yields `(name, handle)`
    pairs, as the seed documentation shows; `keys()`, `values()` and `items()` are views.
    """

    def __init__(self, service: JobResultServiceApi | JobResultApi, capabilities: ServerCapabilities,
                 wait_until_func: Callable[[Literal["Done"], float], None] | None = None):
        self._service = service
        self._capabilities = capabilities
        self._wait_until_func = wait_until_func
        multiple = None
        if capabilities.supports_multiple_streams_fetching and isinstance(service, JobResultApi):
            multiple = MultipleStreamsFetcher(service)
        self._multiple = multiple
        self._fetchers: dict[str, AnySingleStreamFetcher] = {}
        for item in service.get_schema():
            cls = SingleStreamSingleResultFetcher if item.is_single else SingleStreamMultipleResultFetcher
            self._fetchers[item.name] = cls(item, service, capabilities, multiple)

    @property
    def job_id(self) -> str:
        return self._service.job_id

    @property
    def results_service(self) -> JobResultServiceApi | JobResultApi:
        """The results service (our v1 or v2 client) the manager reads through; picklable."""
        return self._service

    @property
    def server_capabilities(self) -> ServerCapabilities:
        """What the server can do (chosen when the manager was built)."""
        return self._capabilities

    # -- mapping -------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> AnySingleStreamFetcher:
        try:
            return self._fetchers[name]
        except (KeyError, TypeError):
            raise QmKeyError(f"job {self.job_id!r} has no stream named {name!r}") from None

    @overload
    def get(self, name: str, /) -> AnySingleStreamFetcher | None: ...

    @overload
    def get(self, name: str, /, default: AnySingleStreamFetcher | _T) -> AnySingleStreamFetcher | _T: ...

    def get(self, name: str, /, default: Any = None) -> Any:
        """The handle of a named result, or `default` if the name is unknown."""
        return self._fetchers.get(name, default) if isinstance(name, str) else default

    def __getattr__(self, name: str) -> AnySingleStreamFetcher:
        if name.startswith("_"):
            raise AttributeError(name)
        fetchers: dict[str, AnySingleStreamFetcher] = self.__dict__["_fetchers"]
        try:
            return fetchers[name]
        except KeyError:
            raise AttributeError(f"job has no stream or attribute named {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._fetchers

    def __len__(self) -> int:
        return len(self._fetchers)

    def __iter__(self) -> Iterator[tuple[str, AnySingleStreamFetcher]]:  # type: ignore[override]
        # As documented (and as the reference does): pairs, not keys. keys()/items() are views.
        return iter(self._fetchers.items())

    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def iterate_results(self) -> Iterator[tuple[str, AnySingleStreamFetcher]]:
        return iter(self._fetchers.items())

    def keys(self) -> KeysView[str]:
        return self._fetchers.keys()

    def values(self) -> ValuesView[AnySingleStreamFetcher]:
        return self._fetchers.values()

    def items(self) -> ItemsView[str, AnySingleStreamFetcher]:
        return self._fetchers.items()

    def __dask_tokenize__(self) -> object:
        token = _tokens.token_of(self)  # the lazy layer records it when opening
        return ("qm_xarray.StreamsManager", self._service.connection_details.target, self.job_id,
                token if token is not None else uuid.uuid4().hex)

    def __repr__(self) -> str:
        return f"<StreamsManager job {self.job_id!r}: {', '.join(self._fetchers)}>"

    # -- job state -----------------------------------------------------------------------------
    def is_processing(self) -> bool:
        """True while the job may still produce results (one state RPC for the job)."""
        state = self._job_state()
        return not (state.done or state.closed)

    def _job_state(self) -> Any:
        if self._service.reads_state_rpc(self._capabilities):
            return self._service.get_state()
        if not self._fetchers:
            raise QmValueError(f"job {self.job_id!r} has no streams to read its state from")
        return next(iter(self._fetchers.values()))._state()

    def wait_for_all_values(self, timeout: float | None = None) -> bool:
        """Wait until all values were processed: True if the job was done, False if closed early.

        v2 servers push status changes (one streaming RPC); v1 servers are polled with one state
        RPC per round for the whole job. The deadline raises `QMTimeoutError`.
        """
        timeout = VERY_LONG_TIME if not timeout else check_timeout(timeout)  # 0: none, as the reference
        if self._wait_until_func is not None:
            try:
                self._wait_until_func("Done", timeout)
            except Exception as exc:  # the reference's JobFailedError, or ours: ended, not done
                if type(exc).__name__ != "JobFailedError":
                    raise
                log.warning("job %r ended before it was done: %s", self.job_id, exc)
                return False
            return True
        header_state = None
        if not self._service.reads_state_rpc(self._capabilities):
            header_state = next(iter(self._fetchers), None)
        done = self._service.wait_until_done(timeout, header_state)
        if not done:
            log.warning("job %r was closed before it was done; some results may be missing", self.job_id)
        return done

    # -- fetching ------------------------------------------------------------------------------
    def fetch_results(self, wait_until_done: bool = True, timeout: float = VERY_LONG_TIME,
                      stream_names: Mapping[str, int | slice] | Collection[str] | None = None,
                      item: int | slice | None = None, *, align: bool = False) -> dict[str, Any]:
        """Fetch several streams at once.

        `stream_names` maps names to an index or slice, or lists names (each gets `item`, default
        all), or is None (all streams). With multiple-streams fetching (v2) this is one headers RPC
        and one data RPC; otherwise the streams are fetched in parallel. `timeout` is the deadline
        of each request. `align=True` cuts the multi-item results to their common length.
        """
        requests = self._requests(stream_names, item)
        if wait_until_done:
            self.wait_for_all_values(timeout)
        if self._multiple is not None:
            results = self._fetch_multiple(requests, timeout)
        else:
            results = self._fetch_parallel(requests, timeout)
        for name in [n for n, v in results.items() if v is None]:
            log.warning("stream %r has no results yet; it is left out", name)
            del results[name]
        return _align(results, self._fetchers) if align else results

    def _requests(self, stream_names: Any, item: Any) -> dict[str, int | slice]:
        if isinstance(stream_names, Mapping):
            if item is not None:
                raise QmValueError("stream_names as a mapping and item cannot be combined")
            requests = dict(stream_names)
        elif stream_names is None:
            requests = dict.fromkeys(self._fetchers, slice(None) if item is None else item)
        elif isinstance(stream_names, str) or not isinstance(stream_names, Collection):
            raise QmTypeError(f"stream_names must be a mapping or a collection of names, got {stream_names!r}")
        else:
            requests = dict.fromkeys(stream_names, slice(None) if item is None else item)
        unknown = [n for n in requests if n not in self]
        if unknown:
            raise QmKeyError(f"job {self.job_id!r} has no streams named {unknown}")
        return requests

    def _fetch_parallel(self, requests: dict[str, Any], timeout: float) -> dict[str, Any]:
        def one(name: str) -> Any:
            return self._fetchers[name].fetch(requests[name], timeout=timeout)

        if len(requests) <= 1:
            return {name: one(name) for name in requests}
        with ThreadPoolExecutor(min(MAX_PARALLEL_FETCHES, len(requests))) as pool:
            futures = {name: pool.submit(one, name) for name in requests}
            return {name: f.result() for name, f in futures.items()}

    def _fetch_multiple(self, requests: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self._multiple is not None
        headers = self._multiple.headers([(name, False) for name in requests])
        selections, ranges = {}, []
        for name, index in requests.items():
            header = headers[name]
            raise_if_lost(header, self.job_id)
            fetcher = self._fetchers[name]
            what = f"stream {name!r} of job {self.job_id!r}"
            index = slice(0, 1) if isinstance(fetcher, SingleStreamSingleResultFetcher) else index
            selections[name] = sel = select(index, header.count_so_far, what)
            ranges.append((header, sel.start, sel.stop))
        data = self._multiple.fetch(ranges, timeout) if ranges else {}
        from .postprocess import build_array

        return {name: self._fetchers[name]._postprocess(
            build_array(*data[name], headers[name], selections[name]), False)
            for name in requests}


def _align(results: dict[str, Any], fetchers: dict[str, Any]) -> dict[str, Any]:
    multi = [n for n, v in results.items()
             if isinstance(fetchers[n], SingleStreamMultipleResultFetcher) and isinstance(v, np.ndarray)
             and v.ndim >= 1]
    if not multi:
        return results
    common = min(len(results[n]) for n in multi)
    return {n: (v[:common] if n in multi else v) for n, v in results.items()}


StreamingResultFetcher = StreamsManager
