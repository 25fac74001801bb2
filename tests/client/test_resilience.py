"""Transient failures are retried within the deadline; broken data streams resume where they stopped.

Faults are injected at a real server (127.0.0.1, port 0) by an interceptor that also records every
call, so the tests see the exact ranges that each attempt asks for.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import grpc
import numpy as np
import pytest

import qm_xarray as qx
from qm_xarray.client import ConnectionDetails, JobResultApi, JobResultServiceApi
from qm_xarray.client import retry
from qm_xarray.client.retry import ServerUnavailableError, is_transient
from qm_xarray.errors import InvalidArgumentError, JobNotFoundError
from qm_xarray.server._rpc import MESSAGE_BYTES
from qm_xarray.server.service_v2 import GROUP_CHUNKS
from qm_xarray.testing import RecordingInterceptor, embedded_server, our_streams_manager

pytestmark = pytest.mark.slow

N_I = 600_000  # "I": <f8, 4.8 MiB: 5 data messages (v1, legacy) or 5 chunk groups (10 messages)
N_C = 200_000  # "c": <i8 x 3, 4.8 MiB
DATA_METHOD = {"v1": "GetJobNamedResult", "v2": "GetNamedResult", "v2-legacy": "GetNamedResult",
               "v2-multi": "GetNamedResults"}


@dataclass
class Fault:
    code: grpc.StatusCode
    after: int = 0  # data messages sent before the abort (streams only)
    times: int = 1
    details: str = "injected fault"


class FaultInjector(RecordingInterceptor):
    """Records every call; the next `times` calls of a method fail as its `Fault` says."""

    def __init__(self) -> None:
        super().__init__()
        self.faults: dict[str, Fault] = {}
        self.pace = 0.0  # seconds slept before each streamed message
        self.streaming = threading.Event()  # set once a stream has sent 3 messages

    def _take(self, method: str) -> Fault | None:
        with self._lock:
            fault = self.faults.get(method)
            if fault is None or fault.times <= 0:
                return None
            fault.times -= 1
            return fault

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method.rsplit("/", 1)[-1]
        if handler.unary_unary:
            inner = handler.unary_unary

            def unary(request, context):
                self._record(method, request)
                fault = self._take(method)
                if fault is not None:
                    context.abort(fault.code, fault.details)
                return inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            def stream(request, context):
                self._record(method, request)
                fault = self._take(method)
                sent = 0
                for message in inner_stream(request, context):
                    if fault is not None and sent == fault.after:
                        context.abort(fault.code, fault.details)
                    time.sleep(self.pace)
                    yield message
                    sent += 1
                    if sent == 3:  # a chunk-format stream has a whole group by then
                        self.streaming.set()
                if fault is not None:  # broken after the last message, before the status
                    context.abort(fault.code, fault.details)

            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer)
        return super().intercept_service(lambda _: handler, details)


@pytest.fixture(scope="module")
def big():
    """A done job with two multi-MiB streams, and their bytes as stored."""
    store = qx.ResultStore()
    job = store.create_job()
    job.add_stream("I").append(np.random.default_rng(1).normal(size=N_I))
    job.add_stream("c", "<i8", (3,)).append(np.arange(3 * N_C, dtype="<i8").reshape(N_C, 3))
    job.finish()
    stored = {name: store.job(job.id).stream(name).read_array().tobytes() for name in ("I", "c")}
    return store, job.id, stored


@pytest.fixture(scope="module")
def faulty(big):
    """Servers of the big job, chunked and legacy, each behind its own fault injector."""
    store = big[0]
    chunked, legacy = FaultInjector(), FaultInjector()
    with embedded_server(store, interceptors=[chunked]) as srv, \
            embedded_server(store, interceptors=[legacy], chunk_streaming=False) as legacy_srv:
        yield {"chunked": (srv, chunked), "legacy": (legacy_srv, legacy)}


def _api(mode, port, job_id, timeout=30.0):
    details = ConnectionDetails("127.0.0.1", port, timeout=timeout)
    if mode == "v1":
        return JobResultServiceApi(details, job_id)
    return JobResultApi(details, job_id, supports_chunk_streaming=mode != "v2-legacy")


def _setup(faulty, mode):
    srv, rec = faulty["legacy" if mode == "v2-legacy" else "chunked"]
    rec.clear()
    rec.faults.clear()
    return srv, rec


def _offsets(rec, mode):
    if mode == "v1":
        return [(r.longOffset.value, r.limit) for r in rec.requests("GetJobNamedResult")]
    return [(r.long_offset.value, r.limit) for r in rec.requests("GetNamedResult")]


def _items_before_break(mode, after, itemsize=8):
    """Whole items the client holds when a stream breaks after `after` messages."""
    per_message = MESSAGE_BYTES // itemsize
    if mode in ("v1", "v2-legacy"):
        return after * per_message
    # chunk format: GROUP_CHUNKS chunks then a summary; only whole groups count
    return after // (GROUP_CHUNKS + 1) * GROUP_CHUNKS * per_message


_I_CHUNKS = -(-N_I * 8 // MESSAGE_BYTES)
I_MESSAGES = _I_CHUNKS + -(-_I_CHUNKS // GROUP_CHUNKS)  # "I" in chunk format: chunks and summaries


@pytest.mark.parametrize("mode", ["v1", "v2", "v2-legacy"])
@pytest.mark.parametrize("after,times", [(3, 1), (1, 3), (0, 2)])
def test_broken_stream_resumes_where_it_stopped(faulty, big, mode, after, times):
    _, job_id, stored = big
    srv, rec = _setup(faulty, mode)
    api = _api(mode, srv.port, job_id)
    header = api.get_header("I", False)
    rec.faults[DATA_METHOD[mode]] = Fault(grpc.StatusCode.UNAVAILABLE, after=after, times=times)
    buf, count = api.fetch_range(header, 0, N_I)
    assert count == N_I and buf.tobytes() == stored["I"]
    step = _items_before_break(mode, after)
    expected = [(k * step, N_I - k * step) for k in range(times + 1)]
    assert _offsets(rec, mode) == expected  # each attempt asks only for what is missing


@pytest.mark.parametrize("mode", ["v1", "v2", "v2-legacy"])
def test_break_after_the_last_message_asks_nothing_more(faulty, big, mode):
    _, job_id, stored = big
    srv, rec = _setup(faulty, mode)
    api = _api(mode, srv.port, job_id)
    header = api.get_header("I", False)
    rec.faults[DATA_METHOD[mode]] = Fault(grpc.StatusCode.UNAVAILABLE, after=10**6)
    buf, count = api.fetch_range(header, 1000, N_I)
    assert count == N_I - 1000 and buf.tobytes() == stored["I"][8000:]
    assert _offsets(rec, mode) == [(1000, N_I - 1000)]  # everything arrived: no second request


def _ranges(request):
    return [(o.output_name, getattr(o.range, "from").value, o.range.to.value) for o in request.outputs]


@pytest.mark.parametrize("after,second", [
    (3, [("I", _items_before_break("v2", 3), N_I - 1), ("c", 0, N_C - 1)]),  # inside "I": both again
    (I_MESSAGES + 5, [("c", _items_before_break("v2", 5, 24), N_C - 1)]),  # "I" complete: only "c"
])
def test_multi_stream_fetch_resumes_each_stream(faulty, big, after, second):
    _, job_id, stored = big
    srv, rec = _setup(faulty, "v2-multi")
    api = _api("v2-multi", srv.port, job_id)
    headers = api.get_headers([("I", False), ("c", False)])
    rec.faults["GetNamedResults"] = Fault(grpc.StatusCode.UNAVAILABLE, after=after)
    got = api.fetch_ranges([(headers["I"], 0, N_I), (headers["c"], 0, N_C)])
    assert got["I"][1] == N_I and got["I"][0].tobytes() == stored["I"]
    assert got["c"][1] == N_C and got["c"][0].tobytes() == stored["c"]
    requests = rec.requests("GetNamedResults")
    assert [_ranges(r) for r in requests] == [[("I", 0, N_I - 1), ("c", 0, N_C - 1)], second]


@pytest.mark.parametrize("details", ["Received RST_STREAM with error code 2", "Socket closed"])
def test_transport_breaks_reported_as_internal_are_retried(faulty, big, details):
    _, job_id, stored = big
    srv, rec = _setup(faulty, "v2")
    api = _api("v2", srv.port, job_id)
    header = api.get_header("I", False)
    rec.faults["GetNamedResult"] = Fault(grpc.StatusCode.INTERNAL, after=5, details=details)
    buf, _ = api.fetch_range(header, 0, N_I)
    assert buf.tobytes() == stored["I"]
    assert [offset for offset, _ in _offsets(rec, "v2")] == [0, _items_before_break("v2", 5)]


def test_unary_call_retried_after_unavailable(faulty, big):
    _, job_id, _ = big
    srv, rec = _setup(faulty, "v1")
    api = _api("v1", srv.port, job_id)
    rec.faults["GetJobNamedResultHeader"] = Fault(grpc.StatusCode.UNAVAILABLE, times=2)
    assert api.get_header("I", False).count_so_far == N_I
    assert rec.count("GetJobNamedResultHeader") == 3


@pytest.mark.parametrize("code,error", [
    (grpc.StatusCode.NOT_FOUND, JobNotFoundError),
    (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
    (grpc.StatusCode.DEADLINE_EXCEEDED, qx.QMTimeoutError),
    (grpc.StatusCode.INTERNAL, qx.QMConnectionError),  # a server bug, not a broken transport
    (grpc.StatusCode.DATA_LOSS, qx.QMConnectionError),
])
@pytest.mark.parametrize("mode", ["v1", "v2-multi"])
def test_other_errors_are_not_retried(faulty, big, code, error, mode):
    _, job_id, _ = big
    srv, rec = _setup(faulty, mode)
    api = _api(mode, srv.port, job_id)
    header = api.get_header("I", False)
    rec.faults["GetJobState" if mode == "v1" else "GetJobResultState"] = Fault(code)
    rec.faults[DATA_METHOD[mode]] = Fault(code, after=2)
    with pytest.raises(error, match=job_id):
        api.get_state()
    with pytest.raises(error, match=rf"'I'.*{job_id}") as info:
        if mode == "v1":
            api.fetch_range(header, 0, N_I)
        else:
            api.fetch_ranges([(header, 0, N_I)])
    assert not isinstance(info.value, ServerUnavailableError)
    assert len(rec.calls) == 3  # header, state, data: each once


def test_retries_end_at_the_deadline(faulty, big):
    _, job_id, _ = big
    srv, rec = _setup(faulty, "v2")
    api = _api("v2", srv.port, job_id)
    rec.faults["GetJobResultState"] = Fault(grpc.StatusCode.UNAVAILABLE, times=10**6)
    start = time.monotonic()
    with pytest.raises(ServerUnavailableError, match=rf"GetJobResultState of job '{job_id}'"):
        api.get_state(timeout=0.6)
    assert time.monotonic() - start < 0.6 + 5  # ends by its deadline (plus the machine's slack)
    assert 3 <= rec.count("GetJobResultState") < 40  # backoff, not a busy loop


def test_status_updates_follow_a_broken_stream(faulty, big):
    _, job_id, _ = big
    srv, rec = _setup(faulty, "v2")
    rec.faults["GetJobStatusUpdates"] = Fault(grpc.StatusCode.UNAVAILABLE, times=2)
    assert _api("v2", srv.port, job_id).wait_until_done(timeout=10) is True
    assert rec.count("GetJobStatusUpdates") == 3


def test_server_down_for_the_whole_deadline(big):
    """Documented choice: `ServerUnavailableError`, both a QMTimeoutError and a QMConnectionError."""
    store, job_id, _ = big
    with embedded_server(store) as srv:
        port = srv.port
        api = _api("v2", port, job_id)
        header = api.get_header("I", False)
    for call in (lambda: api.fetch_range(header, 0, N_I, timeout=1.0),
                 lambda: api.get_state(timeout=1.0)):
        start = time.monotonic()
        with pytest.raises(ServerUnavailableError) as info:
            call()
        elapsed = time.monotonic() - start
        assert 0.8 < elapsed < 1.0 + 5  # retried until the deadline, then gave up
        assert isinstance(info.value, qx.QMTimeoutError) and isinstance(info.value, qx.QMConnectionError)
        assert job_id in str(info.value) and "UNAVAILABLE" in str(info.value)
    with pytest.raises(ServerUnavailableError, match="'I'"):
        api.fetch_range(header, 0, N_I, timeout=0.3)


@pytest.mark.parametrize("mode", ["v1", "v2", "v2-multi"])
def test_fetch_survives_a_server_restart_on_the_same_port(big, mode):
    store, job_id, stored = big
    slow = FaultInjector()
    slow.pace = 0.15  # a fetch of 5-10 messages takes long enough to be cut by the restart
    first = qx.serve(store, port=0, interceptors=[slow])
    port = first.port
    second: list[qx.ResultsServer] = []
    rec = RecordingInterceptor()

    def restart():
        slow.streaming.wait(20)
        first.stop(grace=None)
        time.sleep(0.3)
        second.append(qx.serve(store, port=port, interceptors=[rec]))

    try:
        sm = our_streams_manager("127.0.0.1", port, job_id, mode)
        thread = threading.Thread(target=restart)
        thread.start()
        values = sm["I"].fetch_all(flat_struct=True)
        thread.join()
        assert values.tobytes() == stored["I"]
        assert slow.count(DATA_METHOD[mode]) == 1
        resumed = rec.requests(DATA_METHOD[mode])
        assert resumed, "the fetch ended before the restart"
        if mode == "v2-multi":
            assert getattr(resumed[0].outputs[0].range, "from").value > 0
        else:
            assert (resumed[0].longOffset if mode == "v1" else resumed[0].long_offset).value > 0
    finally:
        first.stop(grace=None)
        for srv in second:
            srv.stop(grace=None)


class _Error(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


@pytest.mark.parametrize("code,details,transient", [
    (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses", True),
    (grpc.StatusCode.UNAVAILABLE, "Cancelling all calls", True),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "too many concurrent streams", True),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max (5 vs. 4)", False),
    (grpc.StatusCode.INTERNAL, "Received RST_STREAM with error code 2", True),
    (grpc.StatusCode.UNKNOWN, "Stream removed", True),
    (grpc.StatusCode.CANCELLED, "Channel closed!", False),
    (grpc.StatusCode.INTERNAL, "internal server error: KeyError", False),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", False),
    (grpc.StatusCode.NOT_FOUND, "no job", False),
    (grpc.StatusCode.PERMISSION_DENIED, "", False),
])
def test_which_errors_are_transient(code, details, transient):
    assert is_transient(_Error(code, details)) is transient
    assert is_transient(ValueError("Cannot invoke RPC on closed channel!")) is False


def test_policy_defaults():
    assert retry.INITIAL_BACKOFF == 0.05 and retry.MAX_BACKOFF == 2.0 and retry.MAX_ATTEMPTS is None
