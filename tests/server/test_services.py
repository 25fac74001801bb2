"""The gRPC services over a real server: compatibility checklist (wire-protocol.md h) and errors."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest

import qm_xarray as qx
from qm_xarray.wire.pb.qm.grpc.v2 import common_types_pb2 as common
from qm_xarray.wire.pb.qm.grpc.v2 import job_api_pb2 as v2
from qm_xarray.wire.pb.qm.grpc.v2 import job_api_pb2_grpc as v2_grpc
from qm_xarray.wire.pb.qm.pb import job_results_pb2 as v1
from qm_xarray.wire.pb.qm.pb import job_results_pb2_grpc as v1_grpc
from qm_xarray.wire.pb.qm_xarray.v1 import control_pb2 as ctl
from qm_xarray.wire.pb.qm_xarray.v1 import control_pb2_grpc as ctl_grpc


@pytest.fixture
def job(store):
    w = store.create_job()
    w.add_stream("I").append(np.arange(10.0))
    w.add_stream("c", "<i8", (3,)).append(np.arange(12).reshape(4, 3))
    w.add_stream("avg", single=True).append([1.0, 2.5])
    return w


@pytest.fixture
def s1(channel):
    return v1_grpc.JobResultsServiceStub(channel)


@pytest.fixture
def s2(channel):
    return v2_grpc.JobServiceStub(channel)


def fetch_v1(s1, job_id, name, limit, long_offset=None, offset=0):
    req = v1.GetJobNamedResultRequest(jobId=job_id, outputName=name, limit=limit, offset=offset)
    if long_offset is not None:
        req.longOffset.SetInParent()
        req.longOffset.value = long_offset
    msgs = list(s1.GetJobNamedResult(req, timeout=10))
    return sum(m.countOfItems for m in msgs), b"".join(m.data for m in msgs), msgs


def groups_v2(responses):
    """Assemble chunk/summary groups per output_name as a client must; checks the format rules."""
    pending, out = {}, {}
    for r in responses:
        s = r.success
        assert s.output_name, "output_name must be echoed"
        if s.HasField("data_chunk"):
            pending.setdefault(s.output_name, bytearray()).extend(s.data_chunk.data)
        else:
            assert s.HasField("data_summary")
            assert s.output_name in pending, "a chunk must precede each summary"
            count, data = out.get(s.output_name, (0, b""))
            out[s.output_name] = (count + s.data_summary.count, data + bytes(pending.pop(s.output_name)))
    assert not pending, "chunks after the last summary"
    return out


def test_v1_data_long_offset_wins_over_offset(s1, job):
    count, data, _ = fetch_v1(s1, job.id, "I", 3, long_offset=2, offset=7)
    assert count == 3 and np.frombuffer(data).tolist() == [2.0, 3.0, 4.0]
    count, data, _ = fetch_v1(s1, job.id, "I", 2, offset=7)  # no longOffset: legacy offset
    assert np.frombuffer(data).tolist() == [7.0, 8.0]


def test_v1_range_past_the_end_returns_what_exists(s1, job):
    count, data, _ = fetch_v1(s1, job.id, "I", 100, long_offset=8)
    assert count == 2 and np.frombuffer(data).tolist() == [8.0, 9.0]
    assert fetch_v1(s1, job.id, "I", 5, long_offset=50)[0] == 0
    assert fetch_v1(s1, job.id, "I", 0, long_offset=0)[0] == 0


@pytest.mark.parametrize(("long_offset", "offset", "limit"), [(-1, 0, 1), (None, -5, 2), (0, 0, -1)])
def test_v1_negative_offset_or_limit_is_invalid_argument(s1, job, long_offset, offset, limit):
    with pytest.raises(grpc.RpcError) as info:
        fetch_v1(s1, job.id, "I", limit, long_offset=long_offset, offset=offset)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert fetch_v1(s1, job.id, "I", 1, long_offset=0)[0] == 1  # still serving


def test_unknown_job_and_stream_are_not_found_naming_them(s1, s2, job):
    with pytest.raises(grpc.RpcError) as info:
        s1.GetJobResultSchema(v1.GetJobResultSchemaRequest(jobId="no-such-job"), timeout=5)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND and "no-such-job" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        fetch_v1(s1, job.id, "Q", 1, long_offset=0)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND and "'Q'" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        list(s2.GetNamedResults(v2.GetNamedResultsRequest(job_id=job.id, outputs=[
            {"output_name": "I"}, {"output_name": "nope"}]), timeout=5))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND and "'nope'" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        s2.GetJobResultState(v2.GetJobResultStateRequest(job_id="zzz"), timeout=5)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


def test_v1_header_fills_deprecated_state_and_flags(s1, store):
    w = store.create_job()
    w.add_stream("n", "<i8", (3,)).append(np.zeros((4, 3), int))
    w.add_error("overflow", code=12)
    w.finish()
    for flat, dtype, shape in ((False, '[["value", "<i8", [3]]]', [1]), (True, '"<i8"', [3])):
        h = s1.GetJobNamedResultHeader(v1.GetJobNamedResultHeaderRequest(
            jobId=w.id, outputName="n", flatFormat=flat), timeout=5)
        assert (h.countSoFar, h.simpleDType, list(h.shape)) == (4, dtype, shape)
        assert (h.done, h.closed, h.hasDataloss, h.isSingle) == (True, True, False, False)
        assert h.HasField("hasExecutionErrors") and h.hasExecutionErrors.value
    state = s1.GetJobState(v1.GetJobStateRequest(jobId=w.id), timeout=5)
    assert (state.done, state.closed) == (True, True)
    errors = s1.GetJobErrors(v1.GetJobErrorsRequest(jobId=w.id), timeout=5)
    assert errors.jobId == w.id and [(e.errorCode, e.message) for e in errors.errors] == [(12, "overflow")]


def test_v2_ranges_are_inclusive_and_chunked(s2, job):
    req = v2.GetNamedResultsRequest(job_id=job.id, outputs=[
        {"output_name": "I", "range": {"from": {"value": 2}, "to": {"value": 4}}},
        {"output_name": "c", "range": {"from": {"value": 0}, "to": {"value": -1}}},  # empty
        {"output_name": "c"},  # no range: everything
        {"output_name": "avg", "range": {"from": {"value": 0}, "to": {"value": 0}}},
    ])
    groups = groups_v2(s2.GetNamedResults(req, timeout=5))
    assert groups["I"][0] == 3 and np.frombuffer(groups["I"][1]).tolist() == [2.0, 3.0, 4.0]
    assert groups["c"][0] == 4  # the empty range contributed an empty group
    assert np.frombuffer(groups["avg"][1]).tolist() == [2.5]
    with pytest.raises(grpc.RpcError) as info:
        list(s2.GetNamedResults(v2.GetNamedResultsRequest(job_id=job.id, outputs=[
            {"output_name": "I", "range": {"from": {"value": -1}, "to": {"value": -1}}}]), timeout=5))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_v2_single_stream_formats(s2, job, legacy_server):
    req = v2.GetNamedResultRequest(job_id=job.id, output_name="I", limit=4, long_offset={"value": 1})
    chunked = groups_v2(s2.GetNamedResult(req, timeout=5))
    assert np.frombuffer(chunked["I"][1]).tolist() == [1.0, 2.0, 3.0, 4.0]
    with grpc.insecure_channel(legacy_server.address) as ch:
        legacy = list(v2_grpc.JobServiceStub(ch).GetNamedResult(req, timeout=5))
    assert all(not m.success.HasField("data_chunk") for m in legacy)
    assert sum(m.success.count_of_items for m in legacy) == 4
    assert np.frombuffer(b"".join(m.success.data for m in legacy)).tolist() == [1.0, 2.0, 3.0, 4.0]


def test_v2_headers_echo_names_and_forms(s2, job):
    r = s2.GetJobNamedResultsHeaders(v2.GetJobNamedResultsHeadersRequest(job_id=job.id, outputs=[
        {"output_name": "c", "flat_format": True}, {"output_name": "c"}, {"output_name": "avg"}]),
        timeout=5)
    h = r.success.headers
    assert [x.output_name for x in h] == ["c", "c", "avg"]
    assert (h[0].simple_dtype, list(h[0].shape), h[0].count_so_far) == ('"<i8"', [3], 4)
    assert (h[1].simple_dtype, list(h[1].shape)) == ('[["value", "<i8", [3]]]', [1])
    assert h[2].count_so_far == 1
    schema = s2.GetJobResultSchema(v2.GetJobResultSchemaRequest(job_id=job.id), timeout=5)
    assert [(i.name, i.is_single) for i in schema.success.items] == [("I", False), ("c", False),
                                                                       ("avg", True)]


def test_v2_status_and_pushed_updates(s2, store):
    w = store.create_job()
    w.add_stream("I")
    stat = s2.GetJobStatus(v2.JobServiceGetJobStatusRequest(job_id=w.id), timeout=5)
    assert stat.success.status == common.RUNNING
    updates = s2.GetJobStatusUpdates(v2.JobServiceGetJobStatusRequest(job_id=w.id), timeout=10)
    threading.Timer(0.2, w.finish).start()
    assert [u.success.status for u in updates] == [common.RUNNING, common.COMPLETED]
    failed = store.create_job()
    failed.add_error("boom")
    failed.cancel()
    cancelled = store.create_job()
    cancelled.cancel()
    for w2, status in ((failed, common.ERROR), (cancelled, common.CANCELED)):
        assert s2.GetJobStatus(v2.JobServiceGetJobStatusRequest(job_id=w2.id), timeout=5).success.status == status
    state = s2.GetJobResultState(v2.GetJobResultStateRequest(job_id=cancelled.id), timeout=5).success
    assert (state.done, state.closed) == (False, True)


def test_other_v2_rpcs_are_unimplemented(channel):
    call = channel.unary_unary("/qm.grpc.v2.JobService/Pause")
    with pytest.raises(grpc.RpcError) as info:
        call(b"", timeout=5)
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_large_fetch_stays_under_stock_message_limit(s1, s2, store):
    """10 MiB through a stock channel (4 MiB limit): every message is ~1 MiB of whole items."""
    w = store.create_job()
    data = np.random.default_rng(1).normal(size=(10 * 2**20) // 8)
    w.add_stream("big").append(data)
    count, raw, msgs = fetch_v1(s1, w.id, "big", data.size, long_offset=0)
    assert count == data.size and raw == data.tobytes()
    assert max(m.ByteSize() for m in msgs) <= 2**20 + 16
    assert all(len(m.data) % 8 == 0 for m in msgs)
    groups = groups_v2(s2.GetNamedResults(v2.GetNamedResultsRequest(job_id=w.id, outputs=[
        {"output_name": "big"}]), timeout=10))
    assert groups["big"] == (data.size, data.tobytes())


def test_huge_items_span_messages(s1, s2, store):
    w = store.create_job()
    item = np.arange(3 * 2**20 // 8 + 5, dtype="<i8")  # one item of ~3 MiB
    w.add_stream("raw", "<i8", item.shape).append(np.stack([item, item + 1]))
    count, raw, msgs = fetch_v1(s1, w.id, "raw", 2, long_offset=0)
    assert count == 2 and len(msgs) > 2 and raw == np.stack([item, item + 1]).tobytes()
    groups = groups_v2(s2.GetNamedResults(v2.GetNamedResultsRequest(job_id=w.id, outputs=[
        {"output_name": "raw", "range": {"from": {"value": 1}}}]), timeout=10))
    assert groups["raw"] == (1, (item + 1).tobytes())


def test_malformed_request_bytes_do_not_stop_the_server(channel, job, s1):
    call = channel.unary_unary("/qm.grpc.results_analyser.JobResultsService/GetJobState")
    with pytest.raises(grpc.RpcError) as info:
        call(b"\xff\xff\xff", timeout=5)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "malformed" in info.value.details()
    assert s1.GetJobState(v1.GetJobStateRequest(jobId=job.id), timeout=5).closed is False


def test_control_service_lists_creates_appends(channel, store):
    jobs = ctl_grpc.JobsServiceStub(channel)
    prod = ctl_grpc.ProducerServiceStub(channel)
    info = jobs.GetServerInfo(ctl.GetServerInfoRequest(), timeout=5)
    assert "qm.multiple_streams_fetching" in info.capabilities and info.implementation == "qm-xarray"
    created = prod.CreateJob(ctl.CreateJobRequest(job_id="ctl-1", streams=[
        ctl.StreamSpec(name="I", dtype="<f8", expected_count=4),
        ctl.StreamSpec(name="c", dtype="<i8", shape=[2])]), timeout=5)
    assert [s.spec.name for s in created.streams] == ["I", "c"]
    with pytest.raises(grpc.RpcError) as bad:  # invalid spec: nothing is created
        prod.CreateJob(ctl.CreateJobRequest(job_id="ctl-2", streams=[
            ctl.StreamSpec(name="I", dtype="<f8"), ctl.StreamSpec(name="x", dtype="O")]), timeout=5)
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "ctl-2" not in [j.job_id for j in jobs.ListJobs(ctl.ListJobsRequest(), timeout=5).jobs]
    acks = prod.AppendItems(iter([
        ctl.AppendItemsRequest(job_id="ctl-1", stream="I", count=2, data=np.arange(2.0).tobytes()),
        ctl.AppendItemsRequest(job_id="ctl-1", stream="c", count=1, data=np.arange(2).tobytes())]),
        timeout=5)
    assert {s.spec.name: s.count for s in acks.streams} == {"I": 2, "c": 1}
    with pytest.raises(grpc.RpcError) as bad:  # a torn item is refused, nothing of it stored
        prod.AppendItems(iter([ctl.AppendItemsRequest(job_id="ctl-1", stream="I", count=1,
                                                      data=b"\x00" * 5)]), timeout=5)
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert store.job("ctl-1").stream("I").count == 2
    prod.SetJobState(ctl.SetJobStateRequest(job_id="ctl-1", transition=ctl.SetJobStateRequest.FINISH),
                     timeout=5)
    with pytest.raises(grpc.RpcError) as late:
        prod.AppendItems(iter([ctl.AppendItemsRequest(job_id="ctl-1", stream="I", count=1,
                                                      data=b"\x00" * 8)]), timeout=5)
    assert late.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert jobs.GetJob(ctl.GetJobRequest(job_id="ctl-1"), timeout=5).state == ctl.DONE


def test_serve_warns_beyond_loopback():
    with pytest.warns(UserWarning, match="beyond loopback"):
        server = qx.ResultsServer(qx.ResultStore(), host="0.0.0.0", port=0)
    server.stop()
    with qx.serve(qx.ResultStore()) as srv:
        assert srv.address.startswith("127.0.0.1:")


def test_a_port_in_use_is_an_os_error(server):
    with pytest.raises(OSError, match="could not listen"):
        qx.ResultsServer(qx.ResultStore(), port=server.port)


def test_malformed_and_oversized_requests_are_invalid_argument(channel, store):
    append = channel.stream_unary("/qm_xarray.v1.ProducerService/AppendItems")
    with pytest.raises(grpc.RpcError) as info:
        append(iter([b"\x0a\xff"]), timeout=5)  # a truncated string field
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "malformed" in info.value.details()
    headers = channel.unary_unary("/qm.grpc.v2.JobService/GetJobNamedResultsHeaders")
    with pytest.raises(grpc.RpcError) as info:
        headers(b"\x0a\x01x" * (2**20 // 3 + 10), timeout=5)  # more than 1 MiB of request
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "limit" in info.value.details()


def test_a_stream_whose_client_stops_reading_is_cancelled(store, monkeypatch):
    from qm_xarray.server import _rpc

    monkeypatch.setattr(_rpc.WATCHDOG, "stall_seconds", 0.3)
    w = store.create_job()
    w.add_stream("big").append(np.zeros(16 * 2**20 // 8))  # 16 MiB: more than the flow-control window
    # no BDP probing: the window stays small, so the server cannot hand everything to the transport
    options = [("grpc.http2.bdp_probe", 0)]
    with qx.serve(store) as srv, grpc.insecure_channel(srv.address, options=options) as ch:
        call = ch.unary_stream("/qm.grpc.results_analyser.JobResultsService/GetJobNamedResult",
                               request_serializer=v1.GetJobNamedResultRequest.SerializeToString,
                               response_deserializer=None)
        req = v1.GetJobNamedResultRequest(jobId=w.id, outputName="big", limit=2**31 - 1)
        req.longOffset.SetInParent()
        stream = call(req, timeout=30)
        next(stream)  # read one message, then stop reading
        for _ in range(600):  # until the watchdog has cancelled it (bounded; no timing assumed)
            if not _rpc.WATCHDOG._active:
                break
            time.sleep(0.05)
        with pytest.raises(grpc.RpcError) as info:
            for _ in stream:
                pass
        assert info.value.code() is grpc.StatusCode.CANCELLED
