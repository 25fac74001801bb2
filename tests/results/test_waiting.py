"""Running jobs: growing streams, state, and every wait (ending in time, ending early, timing out).

Timers grow or end the job from another thread. Timeouts are short (0.2-0.3 s) and successful
waits get 5 s. The reference's waits poll every 0.1 s (handles, v1 manager) or follow
GetJobStatusUpdates (v2 manager, through JobApi.wait_until).
"""

from __future__ import annotations

import logging
import re
import time

import pytest

from qm_xarray.testing import STREAM_KINDS

NAMES = list(STREAM_KINDS)
SHORT = 0.2


def test_running_job_state(impl, running):
    sm = impl.manager(running.id)
    assert sm.is_processing() is True
    for name in ("I", "avg", "empty"):
        h = sm.get(name)
        assert h.is_processing() is True
        assert h.has_dataloss() is False
    running.job.finish()
    assert sm.is_processing() is False
    assert sm.get("I").is_processing() is False


@pytest.mark.parametrize("flat", [False, True], ids=["nested", "flat"])
def test_running_job_grows(impl, running, oracle, flat):
    sm = impl.manager(running.id)
    for name, kind in STREAM_KINDS.items():
        oracle.same(sm.get(name).fetch_all(flat_struct=flat),
                    oracle.expected(kind, running.written[name], flat), f"{name} before")
    running.append_all(4)
    for name, kind in STREAM_KINDS.items():
        h = sm.get(name)
        n = len(running.written[name])
        assert h.count_so_far() == n and len(h) == n
        oracle.same(h.fetch_all(flat_struct=flat),
                    oracle.expected(kind, running.written[name], flat), f"{name} after")
        oracle.same(h.fetch(slice(2, 5), flat_struct=flat),
                    oracle.expected(kind, running.written[name], flat, 2, 5), f"{name} [2:5]")


def test_fetch_results_without_waiting(impl, running, oracle):
    sm = impl.manager(running.id)
    t0 = time.monotonic()
    res = sm.fetch_results(wait_until_done=False, timeout=5)
    assert time.monotonic() - t0 < 2
    for name, kind in STREAM_KINDS.items():
        oracle.same(res[name], oracle.expected(kind, running.written[name], False), name)


# ------------------------------------------------------------------------------------------
# waits that succeed


def test_handle_wait_for_values(impl, running):
    sm = impl.manager(running.id)
    h = sm.get("I")
    assert h.wait_for_values(1, timeout=5) is None            # already 3
    h.wait_for_values(3, timeout=5)
    running.later(0.1, lambda: running.append("I", 3))
    t0 = time.monotonic()
    h.wait_for_values(6, timeout=5)
    assert time.monotonic() - t0 < 4
    assert h.count_so_far() >= 6
    sm.get("avg").wait_for_values(1, timeout=5)
    sm.get("avg").wait_for_values(timeout=5)


def test_handle_wait_for_all_values_until_done(impl, running):
    h = impl.manager(running.id).get("c")
    running.later(0.1, running.job.finish)
    assert h.wait_for_all_values(timeout=5) is True


def test_handle_wait_for_all_values_until_cancelled(impl, running):
    h = impl.manager(running.id).get("avg")
    running.later(0.1, running.job.cancel)
    assert h.wait_for_all_values(timeout=5) is False


def test_manager_wait_for_all_values_until_done(impl, running):
    sm = impl.manager(running.id)
    running.later(0.1, running.job.finish)
    assert sm.wait_for_all_values(timeout=5) is True
    assert sm.is_processing() is False


def test_manager_wait_for_all_values_until_cancelled(impl, running, caplog):
    sm = impl.manager(running.id)
    running.later(0.1, running.job.cancel)
    with caplog.at_level(logging.WARNING):
        assert sm.wait_for_all_values(timeout=5) is False
    if impl.reference:
        assert impl.logs(caplog, logging.WARNING)


def test_fetch_results_waits_for_the_end(impl, running, oracle):
    sm = impl.manager(running.id)

    def grow_and_finish():
        running.append_all(2)
        running.job.finish()

    running.later(0.1, grow_and_finish)
    res = sm.fetch_results(wait_until_done=True, timeout=5)
    assert list(res) == NAMES
    for name, kind in STREAM_KINDS.items():
        assert (len(running.written[name]) == (1 if kind.single else 5)) or name == "empty"
        oracle.same(res[name], oracle.expected(kind, running.written[name], False), name)


# ------------------------------------------------------------------------------------------
# waits that time out


def _assert_ours_timeout(impl, exc, *names):
    """Ours: one QMTimeoutError (also a builtin TimeoutError) naming what was awaited.

    `names`: the message must contain at least one of them (the stream, or the job whose end
    was awaited)."""
    assert isinstance(exc, impl.errors.QMTimeoutError)
    assert isinstance(exc, TimeoutError)
    if names:
        msg = str(exc)
        assert any(re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", msg) for n in names), \
            f"{msg!r} should name one of {names}"


@pytest.mark.differs("consistent QMTimeoutError (a TimeoutError) from every wait (design.md Rules)")
def test_handle_wait_for_values_timeout(impl, running):
    h = impl.manager(running.id).get("I")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        h.wait_for_values(100, timeout=SHORT)
    assert time.monotonic() - t0 < 3
    if impl.ours:
        _assert_ours_timeout(impl, info.value, "I")
    else:
        assert type(info.value) is TimeoutError and "I" in str(info.value)


@pytest.mark.differs("consistent QMTimeoutError (a TimeoutError) from every wait (design.md Rules)")
def test_handle_wait_for_all_values_timeout(impl, running):
    h = impl.manager(running.id).get("ts")
    with pytest.raises(TimeoutError) as info:
        h.wait_for_all_values(timeout=SHORT)
    if impl.ours:
        _assert_ours_timeout(impl, info.value, "ts", running.id)
    else:
        assert type(info.value) is TimeoutError and "ts" in str(info.value)


@pytest.mark.differs("consistent QMTimeoutError (a TimeoutError) from every wait (design.md Rules)")
def test_manager_wait_for_all_values_timeout(impl, running):
    sm = impl.manager(running.id)
    t0 = time.monotonic()
    with pytest.raises(Exception) as info:
        sm.wait_for_all_values(timeout=SHORT)
    assert time.monotonic() - t0 < 3
    if impl.ours:
        _assert_ours_timeout(impl, info.value, running.id)
    elif impl.v1:
        assert type(info.value) is TimeoutError           # builtin, from the polling loop
    else:
        assert type(info.value) is impl.errors.QMTimeoutError   # from JobApi.wait_until
        assert not isinstance(info.value, TimeoutError)         # qm's is not a builtin one


def test_fetch_results_timeout(impl, running):
    sm = impl.manager(running.id)
    t0 = time.monotonic()
    with pytest.raises(impl.errors.QMTimeoutError) as info:
        sm.fetch_results(wait_until_done=True, timeout=SHORT)
    assert time.monotonic() - t0 < 3
    if impl.ours:
        _assert_ours_timeout(impl, info.value)


def test_single_result_waits_for_one_value_only(impl, running):
    h = impl.manager(running.id).get("avg")
    if impl.reference:
        with pytest.raises(RuntimeError):
            h.wait_for_values(2, timeout=SHORT)
    else:
        # not in the seed doc; ours must refuse too (it can never be satisfied), not hang
        t0 = time.monotonic()
        with pytest.raises((RuntimeError, ValueError, TimeoutError)):
            h.wait_for_values(2, timeout=SHORT)
        assert time.monotonic() - t0 < 3
