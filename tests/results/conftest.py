"""Conformance fixtures for the results API: one test body, two clients (h5netcdf style).

`impl` is parametrized over ("reference", "ours") x the four modes of
`qm_xarray.testing.REFERENCE_MODES`; `impl.manager(job_id)` builds that client's StreamsManager for
a job of the session store. Reference params skip when qm-qua is not installed; "ours" params skip
while `qm_xarray.results` does not import.

Both clients are built by the one recipe of `qm_xarray.testing.reference.streams_manager_factory`,
the reference exactly as qm-qua builds it (QOP 3: `JobApi.wait_until` as the wait function, as
`JobApi.result_handles` does), so its waits raise what the real client raises.

Tests that pin a DELIBERATE difference (design.md "Rules that hold everywhere", wire-protocol.md
section f) carry `@pytest.mark.differs("<the improvement>")` and branch on `impl.ours`; the reference
branch asserts the reference's actual behaviour so the difference stays pinned.

The oracle (`oracle.expected`, `oracle.raw`) is the reference's documented behaviour
(wire-protocol.md sections c-e) applied to the items the producer wrote; `oracle.same` compares
exactly: type, dtype, shape, bytes (None only equals None).
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest

import qm_xarray as qx
from qm_xarray.dtypes import StreamLayout, decode_simple_dtype, final_shape, parse_simple_dtype
from qm_xarray.testing import REFERENCE_MODES, STREAM_KINDS, make_items, make_job
from qm_xarray.testing.reference import CLIENTS, streams_manager_factory

MODES = REFERENCE_MODES
IMPLS = CLIENTS
MULTI = [n for n, k in STREAM_KINDS.items() if not k.single]
SINGLE = [n for n, k in STREAM_KINDS.items() if k.single]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "differs(reason): pins a deliberate, documented difference from qm-qua 1.4.1")


# --------------------------------------------------------------------------------------------
# the two clients


def _ours_missing() -> str | None:
    try:
        importlib.import_module("qm_xarray.results")
    except ImportError as exc:
        return f"qm_xarray.results is not importable: {exc}"
    return None


@dataclass
class Impl:
    """One client in one mode, against the session's servers."""

    name: str            # "reference" | "ours"
    mode: str            # "v1" | "v2-legacy" | "v2" | "v2-multi"
    port: int
    build: Callable[[str], Any]
    errors: SimpleNamespace   # QmQuaException, QMTimeoutError, StreamProcessingDataLossError, ...
    results: ModuleType       # the module holding StreamsManager, fetchers and the aliases
    logger_prefix: str        # the logger family the client logs on
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ours(self) -> bool:
        return self.name == "ours"

    @property
    def reference(self) -> bool:
        return self.name == "reference"

    @property
    def v1(self) -> bool:
        return self.mode == "v1"

    @property
    def multi(self) -> bool:
        return self.mode == "v2-multi"

    def manager(self, job_id: str) -> Any:
        """The StreamsManager for `job_id` (built once per impl and job)."""
        if job_id not in self._cache:
            self._cache[job_id] = self.build(job_id)
        return self._cache[job_id]

    def new_manager(self, job_id: str) -> Any:
        return self.build(job_id)

    def logs(self, caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
        """Records at exactly `level` logged by this client."""
        return [r for r in caplog.records if r.levelno == level
                and (r.name == self.logger_prefix or r.name.startswith(self.logger_prefix + "."))]


_IMPLS: dict[tuple[str, str], Impl] = {}


@pytest.fixture(params=[(i, m) for i in IMPLS for m in MODES], ids=lambda p: f"{p[0]}-{p[1]}")
def impl(request: pytest.FixtureRequest) -> Impl:
    name, mode = request.param
    if name == "reference":
        pytest.importorskip("qm", reason="the reference client qm-qua is not installed")
    else:
        missing = _ours_missing()
        if missing:
            pytest.skip(missing)
    srv = request.getfixturevalue("legacy_server" if mode == "v2-legacy" else "server")
    key = (name, mode)
    if key not in _IMPLS or _IMPLS[key].port != srv.port:
        if name == "reference":
            import qm._stream_results as results
            import qm.exceptions as errors

            _IMPLS[key] = Impl(name, mode, srv.port, streams_manager_factory(name, "127.0.0.1", srv.port, mode),
                               SimpleNamespace(**{n: getattr(errors, n) for n in _ERROR_NAMES}),
                               results, "qm")
        else:
            import qm_xarray.errors as errors
            results = importlib.import_module("qm_xarray.results")
            _IMPLS[key] = Impl(name, mode, srv.port, streams_manager_factory(name, "127.0.0.1", srv.port, mode),
                               SimpleNamespace(**{n: getattr(errors, n) for n in _ERROR_NAMES}),
                               results, "qm_xarray")
    return _IMPLS[key]


_ERROR_NAMES = ("QmQuaException", "QMTimeoutError", "StreamProcessingDataLossError",
                "QMConnectionError")


# --------------------------------------------------------------------------------------------
# jobs (module scope: one of each state per test module, on the session store)


@pytest.fixture(scope="module")
def done_job(store: qx.ResultStore):
    """Every stream kind, 7 items each ("empty": 0; single streams keep their last item)."""
    return make_job(store, counts=7, state="done", seed=1)


@pytest.fixture(scope="module")
def sparse_job(store: qx.ResultStore):
    """Count 1 on multi streams (the final-shape rule drops the leading axis), 0 on singles."""
    counts = {n: (0 if k.single or n == "empty" else 1) for n, k in STREAM_KINDS.items()}
    return make_job(store, counts=counts, state="done", seed=2)


@pytest.fixture(scope="module")
def closed_job(store: qx.ResultStore):
    return make_job(store, counts=5, state="closed", seed=3)


@pytest.fixture(scope="module")
def dataloss_job(store: qx.ResultStore):
    return make_job(store, counts=4, state="dataloss", seed=4)


@pytest.fixture(scope="module")
def error_job(store: qx.ResultStore):
    return make_job(store, counts=4, state="error", seed=5)


class Running:
    """A running job (3 items per stream) that a test grows and ends, now or from a timer."""

    def __init__(self, store: qx.ResultStore, seed: int = 6):
        self.job, self.written = make_job(store, counts=3, state="running", seed=seed)
        self._seed = seed
        self._timers: list[threading.Timer] = []
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        return self.job.id

    def append(self, name: str, n: int) -> None:
        kind = STREAM_KINDS[name]
        self._seed += 101
        new = make_items(kind, n, self._seed)
        with self._lock:
            self.job.stream(name).append(new)
            self.written[name] = new[-1:] if kind.single else np.concatenate([self.written[name], new])

    def append_all(self, n: int = 2) -> None:
        for name in STREAM_KINDS:
            self.append(name, n)

    def later(self, delay: float, action: Callable[[], None]) -> None:
        timer = threading.Timer(delay, action)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def close(self) -> None:
        for t in self._timers:
            t.join(10)
        try:
            self.job.finish()
        except Exception:  # already ended by the test
            pass


@pytest.fixture
def running(store: qx.ResultStore) -> Iterator[Running]:
    r = Running(store)
    yield r
    r.close()


# --------------------------------------------------------------------------------------------
# the oracle


def _layout(kind):
    return StreamLayout.create(kind.dtype, kind.shape, kind.timestamps)


def raw(kind, part: np.ndarray, flat: bool) -> np.ndarray:
    """The array the reference builds from these items (strict_fetch: no post-processing)."""
    layout = _layout(kind)
    dt = parse_simple_dtype(layout.simple_dtype(flat))
    return np.frombuffer(np.ascontiguousarray(part).tobytes(), dtype=dt).reshape(
        final_shape(len(part), layout.header_shape(flat)))


def postprocess(kind, arr: np.ndarray, flat: bool):
    """The reference's post-processing of a fetched array (wire-protocol.md section c)."""
    if kind.single:
        if len(arr) == 0:
            return None
        value = arr if flat else arr[0]
        return value[0] if len(value) == 1 else value
    names = arr.dtype.names or ()
    if names == ("value",) and set(arr.dtype["value"].names or ()) == {"value", "timestamp"}:
        arr = arr["value"]
        if len(arr) == 1:
            return arr[0]
    return arr


def expected(kind, items: np.ndarray, flat: bool, start: int = 0, stop: int | None = None, *,
             select: Any = None):
    """What `fetch` returns for items[start:stop] (or items[select]) of a stream of this kind."""
    if kind.single:
        part = items[0:1]
    else:
        part = items[select] if select is not None else items[start:stop]
    return postprocess(kind, raw(kind, part, flat), flat)


def same(got: Any, want: Any, what: str = "") -> None:
    """Exact equality: None is None; else same type, dtype, shape and bytes."""
    if want is None:
        assert got is None, f"{what}: expected None, got {type(got).__name__} {got!r}"
        return
    assert type(got) is type(want), f"{what}: type {type(got).__name__} != {type(want).__name__}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    assert np.shape(got) == np.shape(want), f"{what}: shape {np.shape(got)} != {np.shape(want)}"
    assert got.tobytes() == want.tobytes(), f"{what}: bytes differ: {got!r} != {want!r}"


def numpy_dtype(kind) -> Any:
    """`numpy_dtype` of a handle: the schema's simpleDType parsed from JSON (not a numpy.dtype)."""
    return decode_simple_dtype(_layout(kind).simple_dtype(False))


def class_names(exc: BaseException) -> set[str]:
    return {c.__name__ for c in type(exc).__mro__}


@pytest.fixture(scope="session")
def oracle() -> SimpleNamespace:
    return SimpleNamespace(raw=raw, postprocess=postprocess, expected=expected, same=same,
                           numpy_dtype=numpy_dtype, class_names=class_names, kinds=STREAM_KINDS,
                           multi=MULTI, single=SINGLE)
