"""Conformance of the results API (seed-results-api.txt): the same bodies on qm-qua and on ours.

Every member of StreamsManager and of the fetchers, on every stream kind of STREAM_KINDS, both
`flat_struct` forms, v1 and the three v2 modes. Exact comparisons (type, dtype, shape, bytes).
Deliberate differences are marked `differs` and branch on `impl.ours` (see conftest.py).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import ItemsView, KeysView, Mapping, ValuesView

import numpy as np
import pytest

from qm_xarray.testing import STREAM_KINDS

NAMES = list(STREAM_KINDS)
FLAT = pytest.mark.parametrize("flat", [False, True], ids=["nested", "flat"])
NAME = pytest.mark.parametrize("name", NAMES)


def n_items(written, name):
    return len(written[name])


# ------------------------------------------------------------------------------------------
# the Mapping side of StreamsManager


def test_len_keys_values_items(impl, done_job):
    job, _ = done_job
    sm = impl.manager(job.id)
    assert len(sm) == len(STREAM_KINDS)
    keys = sm.keys()
    assert isinstance(keys, KeysView)
    assert list(keys) == NAMES                                   # schema order
    values = sm.values()
    assert isinstance(values, ValuesView)
    assert [h.name for h in values] == NAMES
    items = sm.items()
    assert isinstance(items, ItemsView)
    assert [(n, h.name) for n, h in items] == [(n, n) for n in NAMES]


def test_is_a_mapping(impl, done_job):
    """qm-qua's StreamsManager subclasses typing.Mapping (wire-protocol.md c: "a Mapping")."""
    sm = impl.manager(done_job[0].id)
    assert isinstance(sm, Mapping)
    assert isinstance(sm, impl.results.StreamsManager)


def test_contains(impl, done_job):
    job, _ = done_job
    sm = impl.manager(job.id)
    for name in NAMES:
        assert name in sm
    assert "nope" not in sm
    assert "" not in sm
    assert 3 not in sm                   # non-str keys are never present
    assert None not in sm
    assert ("I",) not in sm


def test_iteration_yields_name_and_handle(impl, done_job):
    """`for name, handle in job_results:` as the documentation shows."""
    job, _ = done_job
    sm = impl.manager(job.id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pairs = [(name, handle) for name, handle in sm]
    assert [n for n, _ in pairs] == NAMES
    assert [h.name for _, h in pairs] == NAMES
    if impl.reference:
        # qm-qua 1.4.1 deprecates iterating (DeprecationWarning since 1.2.0); the seed doc does not.
        assert any(issubclass(w.category, DeprecationWarning) for w in caught)


@NAME
def test_getitem_and_get_known(impl, done_job, name):
    job, _ = done_job
    sm = impl.manager(job.id)
    handle = sm[name]
    assert handle.name == name
    assert sm.get(name).name == name
    assert sm.get(name, "default").name == name


@pytest.mark.differs("get(name, default) returns default for unknown names (the doc wins)")
def test_get_unknown_returns_default(impl, done_job):
    job, _ = done_job
    sm = impl.manager(job.id)
    assert sm.get("nope") is None
    sentinel = object()
    assert sm.get(3) is None
    if impl.ours:
        assert sm.get("nope", sentinel) is sentinel
        assert sm.get("nope", 0) == 0
        assert sm.get("nope", default=sentinel) is sentinel
        assert sm.get(3, sentinel) is sentinel
    else:
        # qm-qua ignores `default` (always None)
        assert sm.get("nope", sentinel) is None


@pytest.mark.differs("sm['unknown'] raises KeyError (a Mapping); the reference returns None")
def test_getitem_unknown(impl, done_job, oracle):
    job, _ = done_job
    sm = impl.manager(job.id)
    if impl.ours:
        with pytest.raises(KeyError) as info:
            sm["nope"]
        # design.md: bad arguments raise both a QmQuaException and the matching builtin
        assert isinstance(info.value, impl.errors.QmQuaException)
        assert "nope" in str(info.value)
    else:
        assert sm["nope"] is None


def test_classes_and_aliases(impl, done_job):
    """StreamsManager, the fetcher classes and the compatibility aliases."""
    job, _ = done_job
    sm = impl.manager(job.id)
    mod = impl.results
    assert isinstance(sm, mod.StreamsManager)
    assert mod.StreamingResultFetcher is mod.StreamsManager
    assert mod.SingleStreamingResultFetcher is mod.SingleStreamSingleResultFetcher
    assert mod.MultipleStreamingResultFetcher is mod.SingleStreamMultipleResultFetcher
    for name, kind in STREAM_KINDS.items():
        handle = sm.get(name)
        assert isinstance(handle, mod.BaseSingleStreamFetcher)
        cls = mod.SingleStreamSingleResultFetcher if kind.single else mod.SingleStreamMultipleResultFetcher
        assert type(handle) is cls, name


def test_aliases_importable_from_results_package(impl):
    if impl.ours:
        from qm_xarray.results import (  # noqa: F401
            BaseSingleStreamFetcher,
            MultipleStreamingResultFetcher,
            SingleStreamingResultFetcher,
            SingleStreamMultipleResultFetcher,
            SingleStreamSingleResultFetcher,
            StreamingResultFetcher,
            StreamsManager,
        )
        assert StreamingResultFetcher is StreamsManager
        assert SingleStreamingResultFetcher is SingleStreamSingleResultFetcher
        assert MultipleStreamingResultFetcher is SingleStreamMultipleResultFetcher
    else:
        from qm import StreamsManager  # noqa: F401
        from qm._stream_results import StreamingResultFetcher  # noqa: F401


# ------------------------------------------------------------------------------------------
# handle properties and state


@NAME
def test_handle_properties(impl, done_job, oracle, name):
    job, written = done_job
    kind = STREAM_KINDS[name]
    handle = impl.manager(job.id).get(name)
    assert handle.name == name
    assert handle.job_id == job.id
    assert type(handle.job_id) is str
    assert handle.expected_count == (1 if kind.single else n_items(written, name))
    assert type(handle.expected_count) is int
    want = oracle.numpy_dtype(kind)
    assert handle.numpy_dtype == want
    assert type(handle.numpy_dtype) is type(want)


@NAME
def test_count_so_far_and_len(impl, done_job, name):
    job, written = done_job
    handle = impl.manager(job.id).get(name)
    n = n_items(written, name)
    assert handle.count_so_far() == n
    assert type(handle.count_so_far()) is int
    assert len(handle) == n


def test_done_job_state(impl, done_job):
    job, _ = done_job
    sm = impl.manager(job.id)
    assert sm.is_processing() is False
    for name in NAMES:
        h = sm.get(name)
        assert h.has_dataloss() is False
        assert h.is_processing() is False
    assert sm.get("I").wait_for_all_values(timeout=5) is True
    assert sm.get("avg").wait_for_all_values(timeout=5) is True
    assert sm.wait_for_all_values(timeout=5) is True
    assert sm.wait_for_all_values() is True            # default timeout
    sm.get("I").wait_for_values(3, timeout=5)          # already there: returns at once
    sm.get("avg").wait_for_values(1, timeout=5)
    assert sm.get("I").wait_for_values(timeout=5) is None


# ------------------------------------------------------------------------------------------
# data: fetch_all, fetch(int), fetch(slice), strict_fetch


@FLAT
@NAME
def test_fetch_all(impl, done_job, oracle, name, flat):
    job, written = done_job
    kind, items = STREAM_KINDS[name], written[name]
    handle = impl.manager(job.id).get(name)
    want = oracle.expected(kind, items, flat)
    oracle.same(handle.fetch_all(flat_struct=flat), want, f"{name} fetch_all")
    oracle.same(handle.fetch_all(flat_struct=flat, check_for_errors=False), want, f"{name} no check")
    if not flat:
        oracle.same(handle.fetch_all(), want, f"{name} fetch_all()")


@FLAT
@NAME
def test_fetch_int(impl, done_job, oracle, name, flat):
    job, written = done_job
    kind, items = STREAM_KINDS[name], written[name]
    handle = impl.manager(job.id).get(name)
    n = n_items(written, name)
    for i in ([0] if kind.single else range(n)):
        oracle.same(handle.fetch(i, flat_struct=flat), oracle.expected(kind, items, flat, i, i + 1),
                    f"{name} fetch({i})")
    if n:
        oracle.same(handle.fetch(0, flat_struct=flat, timeout=5, check_for_errors=True),
                    oracle.expected(kind, items, flat, 0, 1), f"{name} fetch(0, timeout=5)")


SLICES = [slice(1, 3), slice(None, 4), slice(2, None), slice(None), slice(0, None, 1),
          slice(5, 100), slice(3, 3), slice(7, None), slice(0, 1)]


@FLAT
@NAME
def test_fetch_slice(impl, done_job, oracle, name, flat):
    job, written = done_job
    kind, items = STREAM_KINDS[name], written[name]
    handle = impl.manager(job.id).get(name)
    for sl in SLICES:
        if sl.stop is None and (sl.start or 0) > len(items) and not kind.single:
            continue  # the reference sends a negative limit: see test_negative_slice
        oracle.same(handle.fetch(sl, flat_struct=flat),
                    oracle.expected(kind, items, flat, sl.start or 0, sl.stop),
                    f"{name} fetch({sl})")


@pytest.mark.parametrize("name", [n for n in NAMES if STREAM_KINDS[n].single])
def test_single_result_fetch_always_returns_its_value(impl, done_job, oracle, name, caplog):
    """A single result yields its one value whatever the item (with a WARNING for odd items)."""
    job, written = done_job
    kind, items = STREAM_KINDS[name], written[name]
    handle = impl.manager(job.id).get(name)
    want = oracle.expected(kind, items, False)
    for item in (0, slice(None), slice(1), slice(0, 1), slice(0, 1, 1)):
        oracle.same(handle.fetch(item), want, f"{name} fetch({item})")
    with caplog.at_level(logging.WARNING):
        for item in (slice(1, 3), -1):
            oracle.same(handle.fetch(item), want, f"{name} fetch({item})")
    if impl.reference:
        assert impl.logs(caplog, logging.WARNING), "qm-qua warns that a single result is one value"


@FLAT
@NAME
def test_strict_fetch(impl, done_job, oracle, name, flat):
    """strict_fetch: the raw array, no post-processing (single streams fetch the given slice)."""
    job, written = done_job
    kind, items = STREAM_KINDS[name], written[name]
    handle = impl.manager(job.id).get(name)
    cases = [(slice(1, 3), (1, 3)), (slice(0, None), (0, None)), (slice(None, 2), (0, 2)),
             (slice(2, 50), (2, 50))]
    if len(items):   # an int past the end is an IndexError for ours (test_out_of_range_int)
        cases.append((0, (0, 1)))
    for item, (start, stop) in cases:
        got = handle.strict_fetch(item, flat_struct=flat, timeout=5)
        oracle.same(got, oracle.raw(kind, items[start:stop], flat), f"{name} strict_fetch({item})")
        assert isinstance(got, np.ndarray)
    oracle.same(handle.strict_fetch(slice(1, 3), flat_struct=flat, check_for_errors=False),
                oracle.raw(kind, items[1:3], flat), f"{name} strict_fetch no check")


@FLAT
@NAME
def test_count_one_and_zero(impl, sparse_job, oracle, name, flat, caplog):
    """One item drops the leading axis (final-shape rule); an empty single result is None."""
    job, written = sparse_job
    kind, items = STREAM_KINDS[name], written[name]
    handle = impl.manager(job.id).get(name)
    assert handle.count_so_far() == len(items)
    with caplog.at_level(logging.WARNING):
        oracle.same(handle.fetch_all(flat_struct=flat), oracle.expected(kind, items, flat),
                    f"{name} fetch_all")
        if len(items) or kind.single:   # fetch(0) on an empty multi stream: test_out_of_range_int
            oracle.same(handle.fetch(0, flat_struct=flat),
                        oracle.expected(kind, items, flat, 0, 1), f"{name} fetch(0)")
        oracle.same(handle.strict_fetch(slice(0, None), flat_struct=flat),
                    oracle.raw(kind, items, flat), f"{name} strict_fetch")
    if impl.reference and kind.single:
        assert impl.logs(caplog, logging.WARNING), "qm-qua warns that there are no results yet"


# ------------------------------------------------------------------------------------------
# numpy index semantics (deliberate difference)


INDEX_NAMES = ["I", "c", "ts", "flags", "img", "adc", "empty"]


def _reference_rejects(impl, call):
    """qm-qua forwards a negative offset/limit raw; our server refuses it (INVALID_ARGUMENT)."""
    with pytest.raises(Exception) as info:
        call()
    if impl.mode in ("v2-legacy", "v2-multi"):
        import grpc  # these paths call the stub directly: the raw grpc.RpcError escapes

        assert isinstance(info.value, grpc.RpcError)
    else:
        assert isinstance(info.value, impl.errors.QMConnectionError)


@pytest.mark.differs("numpy indices: negative ints count from count_so_far (design.md Rules)")
@FLAT
@pytest.mark.parametrize("name", INDEX_NAMES)
def test_negative_int(impl, done_job, oracle, name, flat):
    job, written = done_job
    kind, items = STREAM_KINDS[name], written[name]
    handle = impl.manager(job.id).get(name)
    n = len(items)
    if impl.ours:
        for i in range(-n, 0):
            oracle.same(handle.fetch(i, flat_struct=flat),
                        oracle.expected(kind, items, flat, n + i, n + i + 1), f"{name} fetch({i})")
        if n:
            oracle.same(handle.strict_fetch(-1, flat_struct=flat),
                        oracle.raw(kind, items[n - 1:], flat), f"{name} strict_fetch(-1)")
    else:
        _reference_rejects(impl, lambda: handle.fetch(-1, flat_struct=flat))


@pytest.mark.differs("numpy slices: negative start/stop count from count_so_far; stop < start is empty")
@FLAT
@pytest.mark.parametrize("name", INDEX_NAMES)
def test_negative_slice(impl, done_job, oracle, name, flat):
    job, written = done_job
    kind, items = STREAM_KINDS[name], written[name]
    handle = impl.manager(job.id).get(name)
    cases = [slice(-3, None), slice(-3, -1), slice(None, -2), slice(-100, 2), slice(1, -100),
             slice(4, 2), slice(len(items) + 2, None)]
    if impl.ours:
        for sl in cases:
            oracle.same(handle.fetch(sl, flat_struct=flat),
                        oracle.expected(kind, items, flat, select=sl), f"{name} fetch({sl})")
        oracle.same(handle.strict_fetch(slice(-2, None), flat_struct=flat),
                    oracle.raw(kind, items[-2:], flat), f"{name} strict_fetch(-2:)")
    else:
        _reference_rejects(impl, lambda: handle.fetch(slice(-3, None), flat_struct=flat))
        # stop < start: a negative limit (v1, v2), an empty inclusive Range (v2 multi)
        if impl.multi:
            assert len(handle.fetch(slice(4, 2), flat_struct=True)) == 0
        else:
            _reference_rejects(impl, lambda: handle.fetch(slice(4, 2), flat_struct=flat))


@pytest.mark.differs("numpy slices: steps work (the covering range is fetched once)")
@FLAT
@pytest.mark.parametrize("name", INDEX_NAMES)
def test_stepped_slice(impl, done_job, oracle, name, flat):
    job, written = done_job
    kind, items = STREAM_KINDS[name], written[name]
    handle = impl.manager(job.id).get(name)
    # every case selects 0 or >= 2 items (a single selected item's shape is not pinned here)
    cases = [slice(None, None, 2), slice(1, 6, 3), slice(None, None, -1), slice(-1, 2, -2),
             slice(0, 7, 3)]
    if impl.ours:
        for sl in cases:
            oracle.same(handle.fetch(sl, flat_struct=flat),
                        oracle.expected(kind, items, flat, select=sl), f"{name} fetch({sl})")
    else:
        with pytest.raises(Exception) as info:
            handle.fetch(slice(None, None, 2), flat_struct=flat)
        assert type(info.value) is Exception and "step" in str(info.value)


@pytest.mark.differs("out-of-range ints raise IndexError; the reference returns an empty array")
@pytest.mark.parametrize("name", ["I", "c", "ts", "empty"])
def test_out_of_range_int(impl, done_job, name):
    job, written = done_job
    handle = impl.manager(job.id).get(name)
    n = len(written[name])
    if impl.ours:
        for i in (n, n + 5, -n - 1, 10**12):
            with pytest.raises(IndexError) as info:
                handle.fetch(i)
            assert isinstance(info.value, impl.errors.QmQuaException)
        with pytest.raises(IndexError):
            handle.strict_fetch(n)
    else:
        got = handle.fetch(n + 5, flat_struct=True)
        assert isinstance(got, np.ndarray) and got.shape[0] == 0
        assert handle.strict_fetch(n).shape[0] == 0


@pytest.mark.differs("out-of-range ints raise IndexError, in fetch_results too")
def test_fetch_results_int_past_a_short_stream(impl, done_job):
    """item=2 on every stream, one of which ("empty") has no items."""
    job, _ = done_job
    sm = impl.manager(job.id)
    if impl.ours:
        with pytest.raises(IndexError) as info:
            sm.fetch_results(timeout=5, item=2)
        assert "empty" in str(info.value)
    else:
        res = sm.fetch_results(timeout=5, item=2)
        assert res["empty"].shape == (0,)


@pytest.mark.differs("other index types raise TypeError; the reference raises a bare Exception")
@pytest.mark.parametrize("name", ["I", "ts"])
def test_wrong_index_type(impl, done_job, name):
    job, _ = done_job
    handle = impl.manager(job.id).get(name)
    for bad in ("x", 1.5, "0"):
        if impl.ours:
            with pytest.raises(TypeError) as info:
                handle.fetch(bad)
            assert isinstance(info.value, impl.errors.QmQuaException)
            with pytest.raises(TypeError):
                handle.strict_fetch(bad)
        else:
            with pytest.raises(Exception) as info:
                handle.fetch(bad)
            assert type(info.value) is Exception


@pytest.mark.differs("numpy integer scalars are indices (operator.index); the reference rejects them")
def test_numpy_integer_index(impl, done_job, oracle):
    job, written = done_job
    kind, items = STREAM_KINDS["I"], written["I"]
    handle = impl.manager(job.id).get("I")
    if impl.ours:
        oracle.same(handle.fetch(np.int64(2)), oracle.expected(kind, items, False, 2, 3), "np.int64(2)")
        oracle.same(handle.fetch(slice(np.int32(1), np.int64(3))),
                    oracle.expected(kind, items, False, 1, 3), "np slice")
    else:
        with pytest.raises(Exception) as info:
            handle.fetch(np.int64(2))
        assert type(info.value) is Exception


# ------------------------------------------------------------------------------------------
# fetch_results


def test_fetch_results_all_streams(impl, done_job, oracle):
    job, written = done_job
    sm = impl.manager(job.id)
    for kwargs in ({}, {"wait_until_done": True, "timeout": 5}, {"wait_until_done": False},
                   {"stream_names": None, "item": None}):
        res = sm.fetch_results(**kwargs)
        assert isinstance(res, Mapping)
        assert list(res) == NAMES, kwargs
        for name, kind in STREAM_KINDS.items():
            oracle.same(res[name], oracle.expected(kind, written[name], False), f"{name} {kwargs}")


@pytest.mark.parametrize("names", [["I", "ts", "avg"], ("t1", "c"), {"img", "flags"}, ["empty"]],
                         ids=["list", "tuple", "set", "empty-stream"])
def test_fetch_results_collection_of_names(impl, done_job, oracle, names):
    job, written = done_job
    res = impl.manager(job.id).fetch_results(timeout=5, stream_names=names)
    assert set(res) == set(names)
    for name in names:
        oracle.same(res[name], oracle.expected(STREAM_KINDS[name], written[name], False), name)


def test_fetch_results_item_int_on_every_stream(impl, done_job, oracle):
    job, written = done_job
    res = impl.manager(job.id).fetch_results(timeout=5, stream_names=["I", "c", "ts", "avg", "t1"],
                                            item=0)
    for name in ("I", "c", "ts", "avg", "t1"):
        oracle.same(res[name], oracle.expected(STREAM_KINDS[name], written[name], False, 0, 1), name)


@pytest.mark.differs("fetch_results with a non-zero item returns the single streams' value on "
                     "every path (the reference returns None on v2 multi-fetching, f.12)")
@pytest.mark.parametrize("item", [slice(1, 3), 2], ids=["slice1-3", "int2"])
def test_fetch_results_item_on_every_stream(impl, done_job, oracle, item, caplog):
    job, written = done_job
    sm = impl.manager(job.id)
    names = [n for n in NAMES if n != "empty"]   # ints past its end: test_fetch_results_int_past...
    with caplog.at_level(logging.WARNING):
        res = sm.fetch_results(timeout=5, item=item, stream_names=names)
    assert list(res) == names
    start, stop = (item.start, item.stop) if isinstance(item, slice) else (item, item + 1)
    for name in names:
        kind = STREAM_KINDS[name]
        if kind.single and impl.reference and impl.multi:
            assert res[name] is None, name           # the reference's inconsistency
            continue
        oracle.same(res[name], oracle.expected(kind, written[name], False, start, stop), name)


def test_fetch_results_dict_of_items(impl, done_job, oracle):
    job, written = done_job
    request = {"I": 2, "c": slice(1, 3), "avg": 0, "ts": slice(None), "img": slice(4, None),
               "empty": slice(None), "t1": slice(0, 1)}
    res = impl.manager(job.id).fetch_results(timeout=5, stream_names=request)
    assert set(res) == set(request)
    for name, item in request.items():
        sl = item if isinstance(item, slice) else slice(item, item + 1)
        oracle.same(res[name], oracle.expected(STREAM_KINDS[name], written[name], False,
                                               sl.start or 0, sl.stop), name)


def test_fetch_results_dict_with_item_is_an_error(impl, done_job, oracle):
    job, _ = done_job
    sm = impl.manager(job.id)
    with pytest.raises(Exception) as info:
        sm.fetch_results(stream_names={"I": 0}, item=1, timeout=5)
    assert "QmQuaException" in oracle.class_names(info.value)


@pytest.mark.parametrize("names", [["I", "nope"], {"nope": 0, "I": 1}, ("nope", "zilch")],
                         ids=["list", "dict", "tuple"])
def test_fetch_results_unknown_names(impl, running, oracle, names):
    """Unknown names raise a QmQuaException naming them, before any waiting (job still running)."""
    sm = impl.manager(running.id)
    import time

    t0 = time.monotonic()
    with pytest.raises(Exception) as info:
        sm.fetch_results(wait_until_done=True, timeout=20, stream_names=names)
    assert time.monotonic() - t0 < 5, "must not wait for the job before checking the names"
    assert "QmQuaException" in oracle.class_names(info.value)
    assert "nope" in str(info.value)


def test_fetch_results_no_names(impl, done_job):
    assert dict(impl.manager(done_job[0].id).fetch_results(timeout=5, stream_names=[])) == {}


@pytest.mark.differs("fetch_results gives the same result on every path (wire-protocol.md f.12): "
                     "single streams with no value yet are left out (with a WARNING); the "
                     "reference keeps them as None on v2 multi-fetching")
def test_fetch_results_single_streams_without_a_value(impl, sparse_job, oracle, caplog):
    job, written = sparse_job
    with caplog.at_level(logging.WARNING):
        res = impl.manager(job.id).fetch_results(timeout=5)
    present = [n for n in NAMES if not STREAM_KINDS[n].single]
    if impl.reference and impl.multi:
        assert list(res) == NAMES
        for name in oracle.single:
            assert res[name] is None
    else:
        assert list(res) == present
        warned = " ".join(r.getMessage() for r in impl.logs(caplog, logging.WARNING))
        for name in oracle.single:
            assert f"'{name}'" in warned, f"a WARNING names the left-out stream {name!r}"
    for name in present:
        oracle.same(res[name], oracle.expected(STREAM_KINDS[name], written[name], False), name)


@pytest.mark.differs("numpy indices in fetch_results too (negative bounds count from count_so_far)")
def test_fetch_results_negative_items(impl, done_job, oracle):
    job, written = done_job
    sm = impl.manager(job.id)
    request = {"I": -1, "c": slice(-2, None), "ts": slice(None, -5)}
    if impl.ours:
        res = sm.fetch_results(timeout=5, stream_names=request)
        n = len(written["I"])
        oracle.same(res["I"], oracle.expected(STREAM_KINDS["I"], written["I"], False, n - 1, n), "I")
        oracle.same(res["c"], oracle.expected(STREAM_KINDS["c"], written["c"], False,
                                              select=slice(-2, None)), "c")
        oracle.same(res["ts"], oracle.expected(STREAM_KINDS["ts"], written["ts"], False,
                                               select=slice(None, -5)), "ts")
    else:
        with pytest.raises(Exception):
            sm.fetch_results(timeout=5, stream_names=request)


def test_concurrent_fetches_from_one_manager(impl, done_job, oracle):
    """Handles of one manager used from several threads at once return exact results."""
    from concurrent.futures import ThreadPoolExecutor

    job, written = done_job
    sm = impl.manager(job.id)
    jobs = [(name, flat) for name in NAMES for flat in (False, True)] * 2

    def one(args):
        name, flat = args
        return sm.get(name).fetch_all(flat_struct=flat)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, jobs))
    for (name, flat), got in zip(jobs, results):
        oracle.same(got, oracle.expected(STREAM_KINDS[name], written[name], flat), f"{name} {flat}")
