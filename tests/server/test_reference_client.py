"""The real qm-qua client reads every stream kind from our server and gets exactly what was written.

The oracle below is the reference's documented behaviour (wire-protocol.md sections c-e) applied to
the items the producer wrote: build the array from the header's description, then post-process.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from qm_xarray.dtypes import StreamLayout, final_shape, parse_simple_dtype
from qm_xarray.testing import REFERENCE_MODES, STREAM_KINDS, make_job, reference_streams_manager

pytest.importorskip("qm", reason="the reference client qm-qua is not installed")
pytestmark = pytest.mark.compat


def expected(kind, items: np.ndarray, flat: bool, start: int = 0, stop: int | None = None):
    """What the reference returns for items[start:stop] of a stream of this kind."""
    layout = StreamLayout.create(kind.dtype, kind.shape, kind.timestamps)
    part = items[0:1] if kind.single else items[start:stop]
    n = len(part)
    dt = parse_simple_dtype(layout.simple_dtype(flat))
    arr = np.frombuffer(np.ascontiguousarray(part).tobytes(), dtype=dt).reshape(
        final_shape(n, layout.header_shape(flat)))
    if kind.single:
        if n == 0:
            return None
        value = arr if flat else arr[0]
        return value[0] if len(value) == 1 else value
    names = dt.names or ()
    if names == ("value",) and set(dt["value"].names or ()) == {"value", "timestamp"}:
        arr = arr["value"]
        if len(arr) == 1:
            return arr[0]
    return arr


def assert_same(got, want, what):
    if want is None:
        assert got is None, what
        return
    assert type(got) is type(want), f"{what}: {type(got)} != {type(want)}"
    assert got.dtype == want.dtype, what
    assert np.shape(got) == np.shape(want), what
    assert got.tobytes() == want.tobytes(), what


@pytest.fixture(scope="module")
def finished_job(store):
    return make_job(store, counts={**{k: 7 for k in STREAM_KINDS}, "empty": 0})


@pytest.fixture(params=REFERENCE_MODES)
def manager(request, server, legacy_server, finished_job):
    srv = legacy_server if request.param == "v2-legacy" else server
    job, written = finished_job
    return reference_streams_manager("127.0.0.1", srv.port, job.id, request.param), written


@pytest.mark.parametrize("name", list(STREAM_KINDS))
@pytest.mark.parametrize("flat", [False, True], ids=["nested", "flat"])
def test_fetch_all_and_fetch_slice(manager, name, flat, caplog):
    sm, written = manager
    kind, items = STREAM_KINDS[name], written[name]
    handle = sm.get(name)
    assert handle.name == name and (handle.expected_count == (1 if kind.single else len(items)))
    with caplog.at_level(logging.ERROR):
        assert_same(handle.fetch_all(flat_struct=flat), expected(kind, items, flat), f"{name} fetch_all")
        assert_same(handle.fetch(slice(1, 3), flat_struct=flat),
                    expected(kind, items, flat, 1, 3), f"{name} fetch(1:3)")
        assert_same(handle.fetch(0, flat_struct=flat), expected(kind, items, flat, 0, 1), f"{name} fetch(0)")
        if not kind.single:
            assert_same(handle.fetch(slice(5, 100), flat_struct=flat),
                        expected(kind, items, flat, 5, 100), f"{name} past the end")
    assert handle.count_so_far() == (min(1, len(items)) if kind.single else len(items))


def test_fetch_results_all_streams(manager):
    sm, written = manager
    results = sm.fetch_results(wait_until_done=True, timeout=10)
    assert set(results) == set(STREAM_KINDS)
    for name, kind in STREAM_KINDS.items():
        assert_same(results[name], expected(kind, written[name], False), f"fetch_results {name}")
    assert sm.is_processing() is False and sm.get("I").has_dataloss() is False
    assert sm.wait_for_all_values(timeout=5) is True


def test_dataloss_raises_in_the_reference(server, store):
    from qm.exceptions import StreamProcessingDataLossError

    job, _ = make_job(store, counts=3, state="dataloss")
    sm = reference_streams_manager("127.0.0.1", server.port, job.id, "v2-multi")
    assert sm.get("I").has_dataloss() is True
    with pytest.raises(StreamProcessingDataLossError):
        sm.get("I").fetch_all()


def test_cancelled_job_wait_returns_false(server, store):
    job, _ = make_job(store, counts=3, state="closed")
    sm = reference_streams_manager("127.0.0.1", server.port, job.id, "v1")
    assert sm.wait_for_all_values(timeout=5) is False
    assert sm.get("I").fetch_all(flat_struct=True).shape == (3,)


def test_unknown_job_fails_at_construction(server):
    from qm.exceptions import QMConnectionError

    with pytest.raises(QMConnectionError):
        reference_streams_manager("127.0.0.1", server.port, "no-such-job", "v1")
