"""qm-qua itself against the stand-in QOP servers and the gateway redirector.

`StandInQop` and `Redirector` are built from qm-qua's generated classes and the specs only, to test
our client against servers we did not write from our own server code. These tests validate the
stand-ins with the reference client: `QuantumMachinesManager` must find them, and every stream kind
must come back from them exactly as put in, on QOP 3 (chunked or legacy data, single- or
multi-stream fetching) and on QOP 2; metadata, token, TLS and redirect rules must behave as a QOP's.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest

pytest.importorskip("qm", reason="the reference client qm-qua is not installed")
pytestmark = pytest.mark.compat

import qm.user_config  # noqa: E402
from qm import QmJob, QuantumMachinesManager  # noqa: E402
from qm.api.models.capabilities import QopCaps  # noqa: E402
from qm.exceptions import (  # noqa: E402
    JobNotFoundException,
    QMTimeoutError,
    QmServerDetectionError,
    StreamProcessingDataLossError,
)
from qm.grpc.io.qualang.api.v1 import info_service_pb2, info_service_pb2_grpc  # noqa: E402
from qm.grpc.qm.grpc.v2 import job_api_pb2, job_api_pb2_grpc, qmm_api_pb2, qmm_api_pb2_grpc  # noqa: E402
from qm.grpc.qm.pb import job_results_pb2, job_results_pb2_grpc  # noqa: E402
from qm.simulate.credentials import CredentialOverrides  # noqa: E402

from qm_xarray.testing import STREAM_KINDS, Redirector, StandInQop, make_items  # noqa: E402
from qm_xarray.testing import tls  # noqa: E402
from qm_xarray.testing.tls import self_signed_certificate  # noqa: E402

JOB = "job-1"
GATEWAY = (("x-grpc-service", "gateway"), ("cluster_name", "any"), ("any_cluster", "true"))
WAIT = 10.0  # every wait in this module is bounded by this many seconds
# "Promptly", for a stop: what these stops end takes well under a second; the bound is only there
# to tell that from waiting out a deadline (a status stream's, or an idle connection's), with room
# for a slow or loaded machine. No test here depends on how fast the machine is.
PROMPT = 15.0
LONG_DEADLINE = 120.0  # a deadline that a prompt stop must not wait for (far beyond PROMPT)


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """qm-qua reads ~/.qm/config.json at each QMM: point it at an empty place (no host, no token)."""
    monkeypatch.setattr(qm.user_config, "CONFIG_PATH", str(tmp_path / "qm-config.json"))


@pytest.fixture
def connect() -> Iterator[Callable[..., QuantumMachinesManager]]:
    """`connect(port, **options)`: a QMM on 127.0.0.1 with a 10 s timeout, closed at teardown."""
    made: list[QuantumMachinesManager] = []

    def make(port: int, **options: Any) -> QuantumMachinesManager:
        options.setdefault("timeout", WAIT)
        options.setdefault("log_level", "ERROR")
        options.setdefault("async_trust_env", False)  # no proxy variables between us and 127.0.0.1
        qmm = QuantumMachinesManager(host="127.0.0.1", port=port, **options)
        made.append(qmm)
        return qmm

    yield make
    for qmm in made:
        qmm.close()


def streams(count: int = 5, seed: int = 0) -> dict[str, tuple[Any, np.ndarray]]:
    """One stream of each kind; "empty" has no items; single streams keep the last item."""
    return {name: (kind, make_items(kind, 0 if name == "empty" else count, seed + i))
            for i, (name, kind) in enumerate(STREAM_KINDS.items())}


def assert_items(result: Any, name: str, items: np.ndarray) -> None:
    """`result` (what qm-qua returned, nested or flat) holds exactly `items` of stream `name`."""
    kind = STREAM_KINDS[name]
    expected = np.asarray(items[-1] if kind.single else items)
    got = np.asarray(result)
    while got.dtype.names == ("value",):  # the nested form's one-field record
        got = got["value"]
    assert got.shape == expected.shape, (name, got.shape, expected.shape)
    if kind.timestamps:
        assert got.dtype.names == ("value", "timestamp"), (name, got.dtype)
        np.testing.assert_array_equal(got["value"], expected["value"])
        np.testing.assert_array_equal(got["timestamp"], expected["timestamp"])
        assert got["value"].dtype == np.dtype(kind.dtype) and got["timestamp"].dtype == np.int64
    else:
        assert got.dtype == np.dtype(kind.dtype), (name, got.dtype)
        np.testing.assert_array_equal(got, expected)


def assert_holds(handles: Any, written: dict[str, tuple[Any, np.ndarray]]) -> None:
    """qm-qua's StreamsManager of a finished job holds what was `written`: the streams in order,
    each through `fetch_all` (nested and flat) and through `fetch_results`."""
    assert list(handles.keys()) == list(written)
    assert handles.wait_for_all_values(timeout=WAIT) is True
    for name, (_, items) in written.items():
        for flat in (False, True):
            assert_items(handles.get(name).fetch_all(flat_struct=flat), name, items)
    results = handles.fetch_results(timeout=WAIT)
    assert set(results) == set(written)
    for name, (_, items) in written.items():
        assert_items(results[name], name, items)


def methods(qop: StandInQop) -> list[str]:
    return [method.rsplit("/", 1)[-1] for method, _ in qop.calls]


def until(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    """Wait (bounded) until `condition()` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


# --- QOP 3 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_streaming", [True, False], ids=["chunked", "legacy"])
@pytest.mark.parametrize("multiple_streams", [True, False], ids=["multi", "single"])
def test_qop3_every_stream_kind(connect: Callable[..., QuantumMachinesManager],
                                chunk_streaming: bool, multiple_streams: bool) -> None:
    written = streams()
    with StandInQop(3, chunk_streaming=chunk_streaming, multiple_streams=multiple_streams) as qop:
        qop.add_job(JOB, written, state="done")
        qmm = connect(qop.port)
        assert qmm.capabilities.supports(QopCaps.qop3)
        job = qmm.get_job(JOB)
        assert job.get_status() == "Done" and job.status == "completed" and job.is_finished()
        handles = job.result_handles
        assert_holds(handles, written)
        assert handles.get("I").count_so_far() == 5 and handles.get("avg").count_so_far() == 1
        assert not handles.get("I").has_dataloss() and not handles.is_processing()
        used = set(methods(qop))
        if multiple_streams:
            assert {"GetJobNamedResultsHeaders", "GetNamedResults"} <= used
            assert "GetNamedResult" not in used
        else:
            assert {"GetJobNamedResultHeader", "GetNamedResult"} <= used
            assert "GetNamedResults" not in used
        assert qmm.list_open_qms() == [] and qmm.version().gateway == "3.5.0"


def test_qop3_slices_agree_on_both_paths(connect: Callable[..., QuantumMachinesManager]) -> None:
    """Inclusive `Range.to` (multi-stream) and offset + limit (single-stream) give the same items."""
    written = streams(8)
    for multiple_streams in (True, False):
        with StandInQop(3, multiple_streams=multiple_streams) as qop:
            qop.add_job(JOB, written, state="done")
            handles = connect(qop.port).get_job(JOB).result_handles
            for name in ("I", "c", "ts", "img", "adc"):
                items = written[name][1]
                got = handles.get(name).fetch(slice(1, 3), flat_struct=True)
                assert_items(got, name, items[1:3])
                assert_items(handles.get(name).fetch(slice(2, None), flat_struct=True), name, items[2:])
                assert np.asarray(handles.get(name).fetch(slice(0, 0), flat_struct=True)).size == 0


def test_qop3_status_map_and_job_listing(connect: Callable[..., QuantumMachinesManager]) -> None:
    with StandInQop(3) as qop:
        qop.add_job(JOB, streams(), state="pending")
        qop.add_job("job-2", streams(), state="done")
        qmm = connect(qop.port)
        job = qmm.get_job(JOB)
        for state, status, old in [("pending", "In queue", "pending"), ("running", "Running", "running"),
                                   ("processing", "Processing", "running"), ("done", "Done", "completed"),
                                   ("canceled", "Canceled", "canceled"), ("error", "Error", "error")]:
            qop.set_state(JOB, state)
            assert job.get_status() == status and job.status == old
        assert {j.id for j in qmm.get_jobs()} == {JOB, "job-2"}  # an empty query lists every job
        assert [j.id for j in qmm.get_jobs(job_ids=["job-2"])] == ["job-2"]
        assert [j.id for j in qmm.get_jobs(status=["Done"])] == ["job-2"]
        with pytest.raises(JobNotFoundException):
            qmm.get_job("no-such-job")


def test_qop3_dataloss_and_errors(connect: Callable[..., QuantumMachinesManager]) -> None:
    with StandInQop(3) as qop:
        qop.add_job(JOB, streams(), state="done", errors=["first"])
        qop.add_error(JOB, "second", code=7, severity="warning")
        job = connect(qop.port).get_job(JOB)
        assert [(e.error_code, e.message) for e in job.get_errors()] == [(0, "first"), (7, "second")]
        handles = job.result_handles
        qop.set_dataloss(JOB)
        assert handles.get("I").has_dataloss()
        with pytest.raises(StreamProcessingDataLossError):
            handles.get("I").fetch_all()
        qop.set_dataloss(JOB, False)
        assert_items(handles.get("I").fetch_all(), "I", streams()["I"][1])


@pytest.mark.parametrize("multiple_streams", [True, False], ids=["multi", "single"])
def test_qop3_large_stream_in_bounded_messages(connect: Callable[..., QuantumMachinesManager],
                                               multiple_streams: bool) -> None:
    kind = STREAM_KINDS["I"]
    items = make_items(kind, 300_000)  # 2.4 MB
    with StandInQop(3, multiple_streams=multiple_streams) as qop:
        qop.add_job(JOB, {"I": (kind, items)}, state="done")
        assert_items(connect(qop.port).get_job(JOB).result_handles.get("I").fetch_all(), "I", items)
        with grpc.insecure_channel(qop.address) as channel:
            stub = job_api_pb2_grpc.JobServiceStub(channel)
            request = job_api_pb2.GetNamedResultsRequest(job_id=JOB, outputs=[
                {"output_name": "I", "range": {"from": {"value": 0}, "to": {"value": len(items) - 1}}}])
            replies = list(stub.GetNamedResults(request, metadata=GATEWAY, timeout=WAIT))
        assert max(r.ByteSize() for r in replies) <= (1 << 20) + 64
        counts = [r.success.data_summary.count for r in replies if r.success.HasField("data_summary")]
        assert len(counts) > 1 and sum(counts) == len(items)
        assert b"".join(r.success.data_chunk.data for r in replies) == items.astype("<f8").tobytes()


def test_qop3_status_updates_stream(connect: Callable[..., QuantumMachinesManager]) -> None:
    with StandInQop(3) as qop:
        qop.add_job(JOB, streams(), state="running")
        qop.add_job("finished", streams(), state="canceled")
        job = connect(qop.port).get_job(JOB)
        with pytest.raises(QMTimeoutError):
            job.wait_until("Done", timeout=0.3)  # stays open while the job runs: the deadline ends it
        with grpc.insecure_channel(qop.address) as channel:
            stub = job_api_pb2_grpc.JobServiceStub(channel)
            ask = job_api_pb2.JobServiceGetJobStatusRequest
            finished = list(stub.GetJobStatusUpdates(ask(job_id="finished"), metadata=GATEWAY, timeout=WAIT))
            assert [r.success.status for r in finished] == [5]  # CANCELED, then the end at once
            updates = stub.GetJobStatusUpdates(ask(job_id=JOB), metadata=GATEWAY, timeout=WAIT)
            assert next(updates).success.status == 3  # RUNNING
            qop.set_state(JOB, "processing")
            assert next(updates).success.status == 8
            qop.set_state(JOB, "done")
            assert [r.success.status for r in updates] == [4]  # COMPLETED, then the end
            with pytest.raises(grpc.RpcError) as err:
                list(stub.GetJobStatusUpdates(ask(job_id="nope"), metadata=GATEWAY, timeout=WAIT))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("qop_version", [3, 2])
def test_growing_job(connect: Callable[..., QuantumMachinesManager], qop_version: int) -> None:
    """Items appended while qm-qua waits; `set_state("done")` ends `wait_for_all_values`."""
    kind = STREAM_KINDS["c"]
    items = make_items(kind, 30)
    with StandInQop(qop_version) as qop:
        qop.add_job(JOB, {"c": (kind, items[:10]), "avg": (STREAM_KINDS["avg"], items[:0, 0])})
        qmm = connect(qop.port)
        handles = qmm.get_job(JOB).result_handles if qop_version == 3 else qmm.get_job_result_handles(JOB)
        assert handles.get("c").count_so_far() == 10 and handles.get("avg").fetch_all() is None
        outcome: list[Any] = []
        waiter = threading.Thread(target=lambda: outcome.append(handles.wait_for_all_values(timeout=WAIT)))
        waiter.start()
        wait_rpc = "GetJobStatusUpdates" if qop_version == 3 else "GetJobState"
        until(lambda: wait_rpc in methods(qop))
        qop.append(JOB, "c", items[10:20])
        qop.append(JOB, "avg", np.array([1.5, 2.5]))
        assert handles.get("c").count_so_far() == 20
        assert_items(handles.get("c").fetch_all(flat_struct=True), "c", items[:20])
        qop.append(JOB, "c", items[20:])
        assert waiter.is_alive() and not outcome  # still running: the wait goes on
        qop.set_state(JOB, "done")
        waiter.join(WAIT)
        assert outcome == [True]
        assert_items(handles.get("c").fetch_all(), "c", items)
        assert handles.get("avg").fetch_all() == 2.5


def test_canceled_job_ends_the_wait_with_false(connect: Callable[..., QuantumMachinesManager]) -> None:
    with StandInQop(3) as qop:
        qop.add_job(JOB, streams(), state="running")
        handles = connect(qop.port).get_job(JOB).result_handles
        outcome: list[Any] = []
        waiter = threading.Thread(target=lambda: outcome.append(handles.wait_for_all_values(timeout=WAIT)))
        waiter.start()
        until(lambda: "GetJobStatusUpdates" in methods(qop))
        qop.set_state(JOB, "canceled")
        waiter.join(WAIT)
        assert outcome == [False]


def test_no_v1_on_qop3_and_unknown_jobs() -> None:
    with StandInQop(3) as qop, grpc.insecure_channel(qop.address) as channel:
        qop.add_job(JOB, streams(), state="done")
        v1 = job_results_pb2_grpc.JobResultsServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            v1.GetJobResultSchema(job_results_pb2.GetJobResultSchemaRequest(jobId=JOB),
                                  metadata=GATEWAY, timeout=WAIT)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        v2 = job_api_pb2_grpc.JobServiceStub(channel)
        for call, request in [
                (v2.GetJobResultSchema, job_api_pb2.GetJobResultSchemaRequest(job_id="nope")),
                (v2.GetJobStatus, job_api_pb2.JobServiceGetJobStatusRequest(job_id="nope")),
                (v2.GetJobNamedResultHeader,
                 job_api_pb2.GetJobNamedResultHeaderRequest(job_id=JOB, output_name="nope"))]:
            with pytest.raises(grpc.RpcError) as err:
                call(request, metadata=GATEWAY, timeout=WAIT)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as err:
            list(v2.GetNamedResult(job_api_pb2.GetNamedResultRequest(job_id="nope", output_name="I"),
                                   metadata=GATEWAY, timeout=WAIT))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        # still serving after the bad requests
        schema = v2.GetJobResultSchema(job_api_pb2.GetJobResultSchemaRequest(job_id=JOB),
                                       metadata=GATEWAY, timeout=WAIT)
        assert [i.name for i in schema.success.items] == list(STREAM_KINDS)
        assert schema.success.items[0].simple_dtype == '[["value", "<f8"]]'


# --- QOP 2 ------------------------------------------------------------------------------------


def test_qop2_every_stream_kind(connect: Callable[..., QuantumMachinesManager]) -> None:
    written = streams()
    with StandInQop(2) as qop:
        qop.add_job(JOB, written, state="done")
        qmm = connect(qop.port)
        assert not qmm.capabilities.supports(QopCaps.qop3)
        with pytest.raises(NotImplementedError):
            qmm.get_job(JOB)
        handles = qmm.get_job_result_handles(JOB)
        assert_holds(handles, written)
        items = written["I"][1]
        assert_items(handles.get("I").fetch(slice(1, 3), flat_struct=True), "I", items[1:3])
        job = QmJob(JOB, "qm-1", qmm._frontend, qmm.capabilities)  # what `qm.get_job` would build
        assert job.status == "completed"
        qop.set_state(JOB, "running")
        assert job.status == "running"
        assert qmm.list_open_qms() == []
        assert "GetJobNamedResult" in methods(qop) and "GetNamedResult" not in methods(qop)
        with grpc.insecure_channel(qop.address) as channel:  # nothing of v2 on QOP 2
            for call, request in [
                    (job_api_pb2_grpc.JobServiceStub(channel).GetJobResultSchema,
                     job_api_pb2.GetJobResultSchemaRequest(job_id=JOB)),
                    (qmm_api_pb2_grpc.QmmServiceStub(channel).HealthCheck, qmm_api_pb2.HealthCheckRequest())]:
                with pytest.raises(grpc.RpcError) as err:
                    call(request, metadata=GATEWAY, timeout=WAIT)
                assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_qop2_execution_errors_and_dataloss(connect: Callable[..., QuantumMachinesManager]) -> None:
    with StandInQop(2) as qop:
        qop.add_job(JOB, streams(), state="error", errors=["boom"])
        handles = connect(qop.port).get_job_result_handles(JOB)
        assert handles.wait_for_all_values(timeout=WAIT) is False  # closed, not done
        with grpc.insecure_channel(qop.address) as channel:
            stub = job_results_pb2_grpc.JobResultsServiceStub(channel)
            header = stub.GetJobNamedResultHeader(job_results_pb2.GetJobNamedResultHeaderRequest(
                jobId=JOB, outputName="I"), metadata=GATEWAY, timeout=WAIT)
            assert header.hasExecutionErrors.value and header.closed and not header.done
            errors = stub.GetJobErrors(job_results_pb2.GetJobErrorsRequest(jobId=JOB),
                                       metadata=GATEWAY, timeout=WAIT)
            assert [e.message for e in errors.errors] == ["boom"]
        qop.set_dataloss(JOB)
        with pytest.raises(StreamProcessingDataLossError):
            handles.get("c").fetch_all()


# --- metadata: gateway headers and token -------------------------------------------------------


def test_gateway_headers_required(connect: Callable[..., QuantumMachinesManager]) -> None:
    with StandInQop(3) as qop:
        qop.add_job(JOB, streams(), state="done")
        qmm = connect(qop.port)
        qmm.get_job(JOB).result_handles.get("I").fetch_all()
        grpc_calls = [(m, md) for m, md in qop.calls if m != "/"]  # "/" is the redirect probe
        assert grpc_calls
        for _, metadata in grpc_calls:
            assert metadata["x-grpc-service"] == "gateway"
            assert metadata["cluster_name"] == "any" and metadata["any_cluster"] == "true"
        with grpc.insecure_channel(qop.address) as channel:
            stub = info_service_pb2_grpc.InfoServiceStub(channel)
            ask = info_service_pb2.GetInfoRequest()
            for metadata, code, words in [
                    ((), grpc.StatusCode.UNIMPLEMENTED, "x-grpc-service"),
                    ((("x-grpc-service", "gateway"),), grpc.StatusCode.NOT_FOUND, "no cluster named"),
                    ((("x-grpc-service", "gateway"), ("cluster_name", "lab-a")),
                     grpc.StatusCode.NOT_FOUND, "no cluster named 'lab-a'")]:
                with pytest.raises(grpc.RpcError) as err:
                    stub.GetInfo(ask, metadata=metadata, timeout=WAIT)
                assert err.value.code() == code and words in err.value.details()
            info = stub.GetInfo(ask, metadata=GATEWAY, timeout=WAIT)  # still serving
            assert info.implementation.name == "stand-in QOP" and not info.implementation.HasField(
                "proto_version")
            assert list(info.capabilities) == ["__qop3", "qm.job_streaming_state", "qm.chunk_streaming",
                                               "qm.multiple_streams_fetching"]
    with StandInQop(3, require_gateway_headers=False) as bare, grpc.insecure_channel(bare.address) as ch:
        info_service_pb2_grpc.InfoServiceStub(ch).GetInfo(info_service_pb2.GetInfoRequest(), timeout=WAIT)


def test_cluster_name(connect: Callable[..., QuantumMachinesManager]) -> None:
    with StandInQop(3, cluster_name="lab-a") as qop:
        qop.add_job(JOB, streams(), state="done")
        connect(qop.port, cluster_name="lab-a").get_job(JOB)
        assert qop.calls[-1][1]["cluster_name"] == "lab-a" and "any_cluster" not in qop.calls[-1][1]
        connect(qop.port).get_job(JOB)  # "any" is always accepted
        with pytest.raises(QmServerDetectionError):
            connect(qop.port, cluster_name="lab-b", log_level="CRITICAL")


def test_token(connect: Callable[..., QuantumMachinesManager], tmp_path: Any,
               monkeypatch: pytest.MonkeyPatch) -> None:
    with StandInQop(3, token="s3cret") as qop:
        qop.add_job(JOB, streams(), state="done")
        qmm = connect(qop.port, connection_headers={"authorization": "Bearer s3cret"})
        assert_items(qmm.get_job(JOB).result_handles.get("c").fetch_all(), "c", streams()["c"][1])
        assert all(md["authorization"] == "Bearer s3cret" for m, md in qop.calls if m != "/")
        for headers in (None, {"authorization": "Bearer wrong"}):
            with pytest.raises(QmServerDetectionError):
                connect(qop.port, connection_headers=headers, log_level="CRITICAL")
        with grpc.insecure_channel(qop.address) as channel:
            with pytest.raises(grpc.RpcError) as err:
                info_service_pb2_grpc.InfoServiceStub(channel).GetInfo(
                    info_service_pb2.GetInfoRequest(), metadata=GATEWAY, timeout=WAIT)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # the token from qm-qua's config file (its module-level path, pointed at a temporary file)
        config = tmp_path / "with-token.json"
        config.write_text('{"quantumMachinesManager_user_token": "s3cret"}')
        monkeypatch.setattr(qm.user_config, "CONFIG_PATH", str(config))
        connect(qop.port).get_job(JOB)


# --- redirector -----------------------------------------------------------------------------


def test_redirect_to_the_stand_in(connect: Callable[..., QuantumMachinesManager]) -> None:
    written = streams()
    with StandInQop(3) as qop, Redirector(qop.address) as gateway:
        qop.add_job(JOB, written, state="done")
        qmm = connect(gateway.port)
        assert_items(qmm.get_job(JOB).result_handles.get("ts").fetch_all(), "ts", written["ts"][1])
        assert len(gateway.requests) == 1
        probe = gateway.requests[0]
        assert (probe[":method"], probe[":path"], probe[":scheme"]) == ("POST", "/", "http")
        assert probe["content-type"] == "application/grpc" and probe["te"] == "trailers"
        assert probe["x-grpc-service"] == "gateway"
        assert probe["cluster_name"] == "any" and probe["any_cluster"] == "true"
        assert "/" not in [m for m, _ in qop.calls]  # the probe went to the gateway only
        assert methods(qop)[:2] == ["GetInfo", "HealthCheck"]


def test_redirect_400_is_cluster_not_found(connect: Callable[..., QuantumMachinesManager]) -> None:
    with Redirector(None, status=400) as gateway:
        with pytest.raises(QmServerDetectionError):
            connect(gateway.port, log_level="CRITICAL")
        assert len(gateway.requests) == 1 and gateway.requests[0][":path"] == "/"


def test_redirector_survives_bad_clients_and_stops_promptly() -> None:
    import httpx

    with Redirector("127.0.0.1:1", status=302) as gateway:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=WAIT) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # not HTTP/2: closed
            s.settimeout(WAIT)
            while s.recv(1024):
                pass
        idle = socket.create_connection(("127.0.0.1", gateway.port), timeout=WAIT)  # left open
        with httpx.Client(http1=False, http2=True, trust_env=False, timeout=WAIT) as client:
            reply = client.post(f"http://{gateway.address}/", content=b"", headers={"x-a": "1"})
        assert reply.status_code == 302 and reply.headers["location"] == "127.0.0.1:1"
        assert reply.content == b"" and gateway.requests[-1]["x-a"] == "1"
        start = time.monotonic()
    assert time.monotonic() - start < PROMPT
    idle.settimeout(WAIT)
    received = b""
    while chunk := idle.recv(1024):  # the server's SETTINGS, its GOAWAY, then the end of stream
        received += chunk
    idle.close()
    types = frame_types(received)
    assert types[:1] == [0x4]  # the first frame is SETTINGS (type 4)
    assert 0x7 in types  # GOAWAY: stop() ended the idle connection (its idle timeout sends none)


def frame_types(data: bytes) -> list[int]:
    """The types of the HTTP/2 frames in `data` (9-byte headers: length, type, flags, stream)."""
    types, pos = [], 0
    while pos + 9 <= len(data):
        types.append(data[pos + 3])
        pos += 9 + int.from_bytes(data[pos:pos + 3], "big")
    return types


# --- TLS ------------------------------------------------------------------------------------


def test_tls(connect: Callable[..., QuantumMachinesManager], tmp_path: Any) -> None:
    chain, key = self_signed_certificate()
    (tmp_path / "server.pem").write_bytes(chain)
    with StandInQop(3, tls=(chain, key)) as qop:
        qop.add_job(JOB, streams(), state="done")
        trust = CredentialOverrides(certificate_path=str(tmp_path / "server.pem"))
        qmm = connect(qop.port, credentials=trust, follow_gateway_redirections=False)
        assert_items(qmm.get_job(JOB).result_handles.get("img").fetch_all(), "img", streams()["img"][1])
        with pytest.raises(QmServerDetectionError):  # cleartext to a TLS port
            connect(qop.port, follow_gateway_redirections=False, log_level="CRITICAL", timeout=3)


def test_mutual_tls(connect: Callable[..., QuantumMachinesManager], tmp_path: Any) -> None:
    """A self-signed client certificate is its own CA: the server trusts exactly that one."""
    chain, key = self_signed_certificate()
    client_chain, client_key = self_signed_certificate()
    paths = {}
    for name, pem in [("server.pem", chain), ("client.pem", client_chain), ("client.key", client_key)]:
        (tmp_path / name).write_bytes(pem)
        paths[name] = str(tmp_path / name)
    with StandInQop(3, tls=(chain, key), client_ca=client_chain) as qop:
        qop.add_job(JOB, streams(), state="done")
        qmm = connect(qop.port, follow_gateway_redirections=False, credentials=CredentialOverrides(
            certificate_path=paths["server.pem"], client_cert_path=paths["client.pem"],
            client_key_path=paths["client.key"]))
        assert_items(qmm.get_job(JOB).result_handles.get("adc").fetch_all(), "adc", streams()["adc"][1])
        with pytest.raises(QmServerDetectionError):  # no client certificate
            connect(qop.port, follow_gateway_redirections=False, log_level="CRITICAL", timeout=3,
                    credentials=CredentialOverrides(certificate_path=paths["server.pem"]))


def test_mutual_tls_with_a_ca(connect: Callable[..., QuantumMachinesManager], tmp_path: Any) -> None:
    """Server and client certificates signed by one CA; a client certificate from another is refused."""
    authority = getattr(tls, "CertificateAuthority", None)
    if authority is None:
        pytest.skip("qm_xarray.testing.tls has no CertificateAuthority")
    ca, other = authority(), authority("another CA")
    pems = {"ca.pem": ca.certificate}
    pems["client.pem"], pems["client.key"] = ca.issue("client", client=True)
    pems["other.pem"], pems["other.key"] = other.issue("client", client=True)
    for name, pem in pems.items():
        (tmp_path / name).write_bytes(pem)
    paths = {name: str(tmp_path / name) for name in pems}
    with StandInQop(3, tls=ca.issue("127.0.0.1"), client_ca=ca.certificate) as qop:
        qop.add_job(JOB, streams(), state="done")
        qmm = connect(qop.port, follow_gateway_redirections=False, credentials=CredentialOverrides(
            certificate_path=paths["ca.pem"], client_cert_path=paths["client.pem"],
            client_key_path=paths["client.key"]))
        assert_items(qmm.get_job(JOB).result_handles.get("t1").fetch_all(), "t1", streams()["t1"][1])
        with pytest.raises(QmServerDetectionError):
            connect(qop.port, follow_gateway_redirections=False, log_level="CRITICAL", timeout=3,
                    credentials=CredentialOverrides(certificate_path=paths["ca.pem"],
                                                    client_cert_path=paths["other.pem"],
                                                    client_key_path=paths["other.key"]))


# --- lifecycle ------------------------------------------------------------------------------


def test_stop_is_prompt_with_open_streams(connect: Callable[..., QuantumMachinesManager]) -> None:
    """stop() ends an open status stream with an error at once: the waiter on it neither waits out
    its own (long) deadline nor reads the stop as the job's end."""
    qop = StandInQop(3).start()
    qop.add_job(JOB, streams(), state="running")
    handles = connect(qop.port).get_job(JOB).result_handles
    outcome: list[Any] = []

    def wait() -> None:
        try:
            outcome.append(handles.wait_for_all_values(timeout=LONG_DEADLINE))
        except Exception as error:  # the server went away
            outcome.append(error)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    until(lambda: "GetJobStatusUpdates" in methods(qop))
    start = time.monotonic()
    qop.stop()
    assert time.monotonic() - start < PROMPT
    waiter.join(PROMPT)
    assert not waiter.is_alive(), "the status stream outlived stop()"
    assert len(outcome) == 1 and isinstance(outcome[0], Exception)  # not True: a stop is no "Done"
    assert not isinstance(outcome[0], (QMTimeoutError, TimeoutError)), outcome  # nor a deadline
