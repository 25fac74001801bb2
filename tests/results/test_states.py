"""Jobs that ended badly: cancelled ("closed"), with data loss, with execution errors.

wire-protocol.md section c, "Data loss and execution errors": data loss raises
StreamProcessingDataLossError on every fetch (not on count_so_far); v1 headers carry the
execution-error flag, which logs an ERROR when `check_for_errors` (never raises); a job closed
before done makes `wait_for_all_values` return False while fetches return what exists.
"""

from __future__ import annotations

import logging

import pytest

from qm_xarray.testing import STREAM_KINDS

NAMES = list(STREAM_KINDS)


# ------------------------------------------------------------------------------------------
# cancelled


def test_closed_job_state_and_waits(impl, closed_job, caplog):
    job, _ = closed_job
    sm = impl.manager(job.id)
    assert sm.is_processing() is False
    for name in ("I", "avg"):
        h = sm.get(name)
        assert h.is_processing() is False
        assert h.has_dataloss() is False
        assert h.wait_for_all_values(timeout=5) is False
    with caplog.at_level(logging.WARNING):
        assert sm.wait_for_all_values(timeout=5) is False
    if impl.reference:
        assert impl.logs(caplog, logging.WARNING), "qm-qua warns that not all data is available"


@pytest.mark.parametrize("flat", [False, True], ids=["nested", "flat"])
def test_closed_job_fetches_what_exists(impl, closed_job, oracle, flat):
    job, written = closed_job
    sm = impl.manager(job.id)
    for name, kind in STREAM_KINDS.items():
        h = sm.get(name)
        assert h.count_so_far() == len(written[name])
        oracle.same(h.fetch_all(flat_struct=flat), oracle.expected(kind, written[name], flat), name)
        oracle.same(h.fetch(slice(1, 3), flat_struct=flat),
                    oracle.expected(kind, written[name], flat, 1, 3), name)


def test_closed_job_fetch_results_ignores_the_early_end(impl, closed_job, oracle, caplog):
    job, written = closed_job
    with caplog.at_level(logging.WARNING):
        res = impl.manager(job.id).fetch_results(wait_until_done=True, timeout=5)
    assert list(res) == NAMES
    for name, kind in STREAM_KINDS.items():
        oracle.same(res[name], oracle.expected(kind, written[name], False), name)


# ------------------------------------------------------------------------------------------
# data loss


def test_dataloss_state(impl, dataloss_job):
    job, written = dataloss_job
    sm = impl.manager(job.id)
    assert sm.is_processing() is False
    for name in NAMES:
        h = sm.get(name)
        assert h.has_dataloss() is True
        assert h.count_so_far() == len(written[name])      # does not raise
        assert len(h) == len(written[name])
    assert sm.wait_for_all_values(timeout=5) is True         # the job is done
    assert sm.get("I").wait_for_all_values(timeout=5) is True


@pytest.mark.parametrize("name", NAMES)
def test_dataloss_raises_on_every_fetch(impl, dataloss_job, name):
    job, _ = dataloss_job
    h = impl.manager(job.id).get(name)
    error = impl.errors.StreamProcessingDataLossError
    calls = {
        "fetch_all()": lambda: h.fetch_all(),
        "fetch_all(flat_struct=True)": lambda: h.fetch_all(flat_struct=True),
        "fetch_all(check_for_errors=False)": lambda: h.fetch_all(check_for_errors=False),
        "fetch(0)": lambda: h.fetch(0),
        "fetch(slice(0, 2))": lambda: h.fetch(slice(0, 2), flat_struct=True),
        "strict_fetch(0)": lambda: h.strict_fetch(0),
        "strict_fetch(slice(None))": lambda: h.strict_fetch(slice(None), flat_struct=True),
    }
    for what, call in calls.items():
        with pytest.raises(error) as info:
            call()
        assert job.id in str(info.value), f"{what}: the message names the job"


@pytest.mark.parametrize("kwargs", [{}, {"stream_names": ["I"]}, {"stream_names": {"avg": 0}},
                                    {"wait_until_done": False, "item": 0}],
                         ids=["all", "list", "dict", "nowait-item"])
def test_dataloss_raises_on_fetch_results(impl, dataloss_job, kwargs):
    job, _ = dataloss_job
    with pytest.raises(impl.errors.StreamProcessingDataLossError):
        impl.manager(job.id).fetch_results(timeout=5, **kwargs)


# ------------------------------------------------------------------------------------------
# execution errors


def test_error_job_state(impl, error_job):
    job, _ = error_job
    sm = impl.manager(job.id)
    assert sm.is_processing() is False
    assert sm.get("I").has_dataloss() is False
    assert sm.get("I").wait_for_all_values(timeout=5) is False
    assert sm.wait_for_all_values(timeout=5) is False


@pytest.mark.parametrize("flat", [False, True], ids=["nested", "flat"])
def test_error_job_data_and_logs(impl, error_job, oracle, flat, caplog):
    """Data is returned; on v1 each header call logs an ERROR (unless check_for_errors=False)."""
    job, written = error_job
    sm = impl.manager(job.id)
    for name in ("I", "ts", "avg"):
        kind, items = STREAM_KINDS[name], written[name]
        h = sm.get(name)
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            oracle.same(h.fetch_all(flat_struct=flat, check_for_errors=False),
                        oracle.expected(kind, items, flat), name)
            oracle.same(h.strict_fetch(slice(0, 2), flat_struct=flat, check_for_errors=False),
                        oracle.raw(kind, items[0:2], flat), name)
        assert not impl.logs(caplog, logging.ERROR), f"{name}: check_for_errors=False must not log"
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            oracle.same(h.fetch_all(flat_struct=flat), oracle.expected(kind, items, flat), name)
        errors = impl.logs(caplog, logging.ERROR)
        if impl.v1:
            assert errors, f"{name}: v1 reports execution errors with an ERROR log"
            assert any(name in r.getMessage() for r in errors), "the log names the stream"
        elif impl.reference:
            assert not errors, "the v2 header has no execution-error flag: qm-qua never logs"


def test_error_job_fetch_results(impl, error_job, oracle, caplog):
    job, written = error_job
    with caplog.at_level(logging.WARNING):
        res = impl.manager(job.id).fetch_results(timeout=5, stream_names=["I", "c", "avg", "t1"])
    for name in ("I", "c", "avg", "t1"):
        oracle.same(res[name], oracle.expected(STREAM_KINDS[name], written[name], False), name)


# ------------------------------------------------------------------------------------------
# unknown job


def test_unknown_job_fails_at_construction(impl):
    with pytest.raises(Exception) as info:
        impl.new_manager("no-such-job")
    assert isinstance(info.value, impl.errors.QmQuaException)
    if impl.reference:
        assert isinstance(info.value, impl.errors.QMConnectionError)
