"""Round trips and waiting: what each operation asks of the server (counted at the server)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import qm_xarray as qx
from qm_xarray.testing import RecordingInterceptor, embedded_server, make_job, our_streams_manager


@pytest.fixture(scope="module")
def recorded():
    rec = RecordingInterceptor()
    store = qx.ResultStore()
    with embedded_server(store, interceptors=[rec]) as srv:
        yield store, srv, rec


def test_fetch_results_v2_multi_is_two_rpcs(recorded):
    store, srv, rec = recorded
    job, written = make_job(store, counts=50)
    sm = our_streams_manager("127.0.0.1", srv.port, job.id, "v2-multi")
    rec.clear()
    results = sm.fetch_results(wait_until_done=False)
    assert rec.methods() == ["GetJobNamedResultsHeaders", "GetNamedResults"]
    assert np.array_equal(results["I"]["value"], written["I"])
    assert results["avg"] == written["avg"][0]


def test_fetch_results_v1_fetches_streams_concurrently(store, server):
    """Each data RPC waits until 3 are in flight at once: a sequential client would time out."""
    barrier = threading.Barrier(3, timeout=10)

    class Gate(RecordingInterceptor):
        def _record(self, method, request):
            super()._record(method, request)
            if method == "GetJobNamedResult":
                barrier.wait()

    local = qx.ResultStore()
    job, _ = make_job(local, counts=5, kinds={k: v for k, v in
                                              __import__("qm_xarray.testing", fromlist=["x"]).STREAM_KINDS.items()
                                              if k in ("I", "c", "img")})
    with embedded_server(local, interceptors=[Gate()]) as srv:
        sm = our_streams_manager("127.0.0.1", srv.port, job.id, "v1")
        results = sm.fetch_results(wait_until_done=True, timeout=20)
    assert set(results) == {"I", "c", "img"}


def test_v1_wait_is_one_state_rpc_per_round(recorded):
    store, srv, rec = recorded
    job, _ = make_job(store, counts=3, state="running")
    sm = our_streams_manager("127.0.0.1", srv.port, job.id, "v1")
    rec.clear()
    threading.Timer(0.3, job.finish).start()
    assert sm.wait_for_all_values(timeout=10) is True
    methods = rec.methods()
    assert set(methods) == {"GetJobState"}  # never per stream, never headers
    assert 2 <= len(methods) < 20  # backoff, not a busy loop


def test_v2_wait_uses_pushed_status(recorded):
    store, srv, rec = recorded
    job, _ = make_job(store, counts=3, state="running")
    sm = our_streams_manager("127.0.0.1", srv.port, job.id, "v2")
    rec.clear()
    threading.Timer(0.2, job.cancel).start()
    assert sm.wait_for_all_values(timeout=10) is False
    assert rec.methods() == ["GetJobStatusUpdates"]


@pytest.mark.parametrize("mode", ["v1", "v2", "v2-multi"])
def test_wait_timeouts_are_qm_timeout_errors(recorded, mode):
    store, srv, _ = recorded
    job, _ = make_job(store, counts=3, state="running")
    sm = our_streams_manager("127.0.0.1", srv.port, job.id, mode)
    start = time.monotonic()
    with pytest.raises(qx.QMTimeoutError, match=job.id):
        sm.wait_for_all_values(timeout=0.3)
    with pytest.raises(TimeoutError, match="'I'"):
        sm["I"].wait_for_values(10, timeout=0.2)
    with pytest.raises(qx.QMTimeoutError):
        sm.fetch_results(wait_until_done=True, timeout=0.2)
    assert time.monotonic() - start < 30  # each wait ended at its own deadline (not the 2e6 s default)
    job.finish()


def test_wait_for_values_returns_when_items_arrive(recorded):
    store, srv, _ = recorded
    job = store.create_job()
    stream = job.add_stream("I")
    sm = our_streams_manager("127.0.0.1", srv.port, job.id, "v2")
    threading.Timer(0.2, lambda: stream.append(np.arange(5.0))).start()
    sm["I"].wait_for_values(5, timeout=10)
    assert len(sm["I"]) == 5


def test_fetch_is_header_plus_one_data_rpc(recorded):
    store, srv, rec = recorded
    job, _ = make_job(store, counts=20)
    for mode, expected in (("v1", ["GetJobNamedResultHeader", "GetJobNamedResult"]),
                           ("v2", ["GetJobNamedResultHeader", "GetNamedResult"]),
                           ("v2-multi", ["GetJobNamedResultsHeaders", "GetNamedResults"])):
        sm = our_streams_manager("127.0.0.1", srv.port, job.id, mode)
        rec.clear()
        sm["I"].fetch(slice(-10, None, 3))
        assert rec.methods() == expected
        data_request = rec.calls[1][1]
        if mode == "v2-multi":
            rng = data_request.outputs[0].range
            assert (getattr(rng, "from").value, rng.to.value) == (10, 19)  # covering range, once
        else:
            offset = data_request.longOffset.value if mode == "v1" else data_request.long_offset.value
            assert (offset, data_request.limit) == (10, 10)


def test_align_cuts_multi_item_streams_to_common_length(recorded):
    store, srv, _ = recorded
    job = store.create_job()
    job.add_stream("I").append(np.arange(10.0))
    job.add_stream("Q").append(np.arange(7.0))
    job.add_stream("avg", single=True).append(1.0)
    for mode in ("v1", "v2-multi"):
        sm = our_streams_manager("127.0.0.1", srv.port, job.id, mode)
        r = sm.fetch_results(wait_until_done=False, align=True)
        assert len(r["I"]) == len(r["Q"]) == 7 and r["avg"] == 1.0
        assert len(sm.fetch_results(wait_until_done=False)["I"]) == 10
