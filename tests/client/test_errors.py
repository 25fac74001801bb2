"""Bad input gets a clear, typed error naming the stream and the job; the server keeps serving."""

from __future__ import annotations

import time

import numpy as np
import pytest

import qm_xarray as qx
from qm_xarray.errors import QmQuaException
from qm_xarray.testing import RecordingInterceptor, embedded_server, make_job, our_streams_manager

MODES = ["v1", "v2", "v2-multi"]


@pytest.fixture(scope="module")
def job(store):
    return make_job(store, counts=10)[0]


@pytest.fixture(params=MODES)
def sm(request, server, job):
    return our_streams_manager("127.0.0.1", server.port, job.id, request.param)


@pytest.mark.parametrize("item", ["0", 1.5, None, [1, 2], True, np.array([1])])
def test_wrong_index_types_are_type_errors(sm, item):
    with pytest.raises(TypeError) as info:
        sm["I"].fetch(item)
    assert isinstance(info.value, QmQuaException)
    assert "'I'" in str(info.value) and sm.job_id in str(info.value)


@pytest.mark.parametrize("item", [10, 11, -11, 2**40])
def test_out_of_range_ints_are_index_errors(sm, item):
    with pytest.raises(IndexError, match=rf"'I' of job '{sm.job_id}'.*{item}"):
        sm["I"].fetch(item)
    assert sm["I"].fetch(-1, flat_struct=True).shape == (1,)


def test_unknown_stream_names(sm):
    with pytest.raises(KeyError, match="'nope'"):
        sm["nope"]
    assert sm.get("nope", "fallback") == "fallback"
    with pytest.raises(AttributeError):
        sm.nope  # noqa: B018
    with pytest.raises(KeyError, match=r"\['nope'\]"):
        sm.fetch_results(stream_names=["I", "nope"], wait_until_done=False)
    with pytest.raises(ValueError, match="cannot be combined"):
        sm.fetch_results(stream_names={"I": 0}, item=1, wait_until_done=False)
    with pytest.raises(TypeError):
        sm.fetch_results(stream_names="I", wait_until_done=False)


def test_unknown_job(server):
    with pytest.raises(qx.QMConnectionError) as info:
        our_streams_manager("127.0.0.1", server.port, "no-such-job", "v2")
    assert isinstance(info.value, KeyError) and "no-such-job" in str(info.value)


def test_stream_removed_or_unknown_on_the_server(server, job):
    from qm_xarray.client import ConnectionDetails, JobResultServiceApi

    api = JobResultServiceApi(ConnectionDetails("127.0.0.1", server.port), job.id)
    with pytest.raises(KeyError, match=rf"'ghost'.*{job.id}|{job.id}.*'ghost'"):
        api.get_header("ghost", False)


def test_server_gone_is_a_connection_error():
    store = qx.ResultStore()
    job, _ = make_job(store, counts=3)
    with embedded_server(store) as srv:
        sm = our_streams_manager("127.0.0.1", srv.port, job.id, "v2-multi", timeout=2)
    with pytest.raises(qx.QMConnectionError, match="'I'") as info:
        sm["I"].fetch_all()
    assert job.id in str(info.value)


@pytest.mark.parametrize("mode", MODES)
def test_deadlines_are_qm_timeout_errors(mode):
    class Slow(RecordingInterceptor):
        def _record(self, method, request):
            if method in ("GetJobNamedResult", "GetNamedResult", "GetNamedResults"):
                time.sleep(0.5)

    store = qx.ResultStore()
    job, _ = make_job(store, counts=10)
    with embedded_server(store, interceptors=[Slow()]) as srv:
        sm = our_streams_manager("127.0.0.1", srv.port, job.id, mode)
        with pytest.raises(qx.QMTimeoutError, match="'I'") as info:
            sm["I"].fetch(slice(0, 5), timeout=0.2)
        assert isinstance(info.value, TimeoutError) and job.id in str(info.value)
        assert sm["I"].fetch(slice(0, 5), timeout=5).shape == (5,)


def test_single_stream_wait_for_values_count(sm):
    with pytest.raises(RuntimeError):
        sm["avg"].wait_for_values(2, timeout=1)
    with pytest.raises(ValueError):
        sm["avg"].wait_for_values(2, timeout=1)


def test_dataloss_raises_naming_job_and_stream(server, store):
    job, _ = make_job(store, counts=3, state="dataloss")
    for mode in MODES:
        sm = our_streams_manager("127.0.0.1", server.port, job.id, mode)
        assert sm["I"].has_dataloss()
        with pytest.raises(qx.StreamProcessingDataLossError, match=rf"{job.id}.*'I'"):
            sm["I"].fetch_all()
        with pytest.raises(qx.StreamProcessingDataLossError):
            sm.fetch_results(wait_until_done=False)
        assert sm["I"].count_so_far() == 3  # counting does not raise


@pytest.mark.parametrize(("timeout", "error"), [("x", TypeError), (True, TypeError), (-1, ValueError),
                                                (0, ValueError), (float("inf"), ValueError)])
def test_bad_timeouts_are_typed_errors(sm, timeout, error):
    for call in (lambda: sm["I"].fetch(0, timeout=timeout),
                 lambda: sm["I"].wait_for_values(1, timeout=timeout),
                 lambda: sm["I"].wait_for_all_values(timeout=timeout)):
        with pytest.raises(error) as info:
            call()
        assert isinstance(info.value, QmQuaException)
    with pytest.raises(error):
        qx.connect("127.0.0.1:1", timeout=timeout)
