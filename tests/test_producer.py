"""The remote producer (RemoteStore over gRPC) against a real server: same bytes as local writes."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest

import qm_xarray as qx
from qm_xarray.client.connection import ConnectionDetails
from qm_xarray.errors import (
    InvalidArgumentError,
    JobFinishedError,
    JobNotFoundError,
    QMConnectionError,
    QmInvalidSchemaError,
    StreamNotFoundError,
)
from qm_xarray.producer import RemoteStore, RemoteStreamWriter
from qm_xarray.server.store import JobState
from qm_xarray.wire.pb.qm_xarray.v1 import control_pb2 as pb
from qm_xarray.wire.pb.qm_xarray.v1 import control_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def local() -> qx.ResultStore:
    return qx.ResultStore()


@pytest.fixture(scope="module")
def address(local: qx.ResultStore) -> Iterator[str]:
    with qx.serve(local, host="127.0.0.1", port=0) as server:
        yield server.address


@pytest.fixture(scope="module")
def remote(address: str) -> RemoteStore:
    return RemoteStore(address, timeout=10.0)


def _records(values: np.ndarray, stamps: np.ndarray) -> np.ndarray:
    field = ("value", values.dtype, values.shape[1:]) if values.ndim > 1 else ("value", values.dtype)
    out = np.empty(len(values), dtype=[field, ("timestamp", "<i8")])
    out["value"], out["timestamp"] = values, stamps
    return out


rng = np.random.default_rng(7)
KINDS = {  # name: (add_stream options, batches of items to append)
    "scalar_float": ({"dtype": "<f8"}, [rng.normal(size=5), np.float64(2.5), rng.normal(size=3)]),
    "int_buffer": ({"dtype": "<i8", "shape": (4,)}, [rng.integers(-9, 9, (6, 4)), np.arange(4)]),
    "buffer_2d": ({"dtype": "<f4", "shape": (3, 5)}, [rng.normal(size=(2, 3, 5)).astype("<f4")]),
    "bool": ({"dtype": "bool"}, [rng.random(7) < 0.5, np.True_]),
    "timestamps": ({"dtype": "<i2", "shape": (8,), "timestamps": True},
                   [_records(rng.integers(-2048, 2047, (4, 8)).astype("<i2"), np.arange(4) * 100)]),
    "scalar_timestamps": ({"dtype": "<f8", "timestamps": True},
                          [_records(rng.normal(size=3), np.array([5, 6, 7]))]),
    "single": ({"dtype": "<f8", "shape": (10,), "single": True},
               [rng.normal(size=(3, 10)), rng.normal(size=10)]),
    "single_int": ({"dtype": "<i8", "single": True}, [np.int64(1), np.arange(5)]),
}


def _bytes(store: qx.ResultStore, job_id: str, name: str) -> bytes:
    stream = store.job(job_id).stream(name)
    n, pieces = stream.read(0, stream.count)
    return b"".join(bytes(p) for p in pieces)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_remote_writes_equal_local_writes(kind: str, local: qx.ResultStore, remote: RemoteStore) -> None:
    options, batches = KINDS[kind]
    lw, rw = local.create_job(), remote.create_job()
    ls, rs = lw.add_stream("x", expected_count=9, **options), rw.add_stream("x", expected_count=9, **options)
    for batch in batches:
        assert rs.append(batch) == ls.append(batch)
        assert rs.count == ls.count
    lw.finish()
    rw.finish()
    assert _bytes(local, rw.id, "x") == _bytes(local, lw.id, "x")
    assert local.job(rw.id).stream("x").layout == local.job(lw.id).stream("x").layout
    assert local.job(rw.id).stream("x").single == local.job(lw.id).stream("x").single
    assert local.job(rw.id).stream("x").expected_count == 9
    assert local.job(rw.id).state is JobState.DONE


def test_create_job_with_streams_and_attach(local: qx.ResultStore, remote: RemoteStore) -> None:
    job = remote.create_job("prod-attach", streams=[{"name": "I", "expected_count": 3},
                                                    {"name": "c", "dtype": "<i8", "shape": (2,)}])
    assert job.id == "prod-attach"
    assert job.stream("I").append([1.0, 2.0]) == 2
    other = remote.writer("prod-attach")  # e.g. another process ending a job whose producer died
    assert sorted(other.streams) == ["I", "c"]
    assert other.stream("I").count == 2
    assert other.stream("c").layout.shape == (2,)
    job.add_stream("late")
    assert other.stream("late").name == "late"  # asks the server for streams declared elsewhere
    other.cancel()
    assert local.job("prod-attach").state is JobState.CLOSED
    np.testing.assert_array_equal(local.job("prod-attach").stream("I").read_array(), [1.0, 2.0])


def test_create_job_streams_are_atomic(local: qx.ResultStore, remote: RemoteStore) -> None:
    job = remote.create_job(streams={"a": {"shape": (3,)}, "b": {"dtype": "|b1", "single": True}})
    assert [(s.name, s.layout.shape, s.single) for s in job.streams.values()] == [
        ("a", (3,), False), ("b", (), True)]
    before = len(local.jobs())
    with pytest.raises(ValueError, match="unknown options"):
        remote.create_job(streams=[{"name": "x", "colour": "red"}])
    with pytest.raises(ValueError):
        remote.create_job("prod-atomic", streams=[{"name": "ok"}, {"name": "bad name"}])
    with pytest.raises(ValueError):
        remote.create_job("prod-atomic", streams=[{"name": "ok"}, {"name": "ok"}])
    assert len(local.jobs()) == before  # a bad spec creates nothing
    assert remote.create_job("prod-atomic").id == "prod-atomic"


def test_large_append_spans_several_messages(local: qx.ResultStore, remote: RemoteStore,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    original = RemoteStreamWriter._messages

    def spy(self: RemoteStreamWriter, data: memoryview, n: int) -> Iterator[pb.AppendItemsRequest]:
        for message in original(self, data, n):
            sizes.append(len(message.data))
            yield message

    monkeypatch.setattr(RemoteStreamWriter, "_messages", spy)
    job = remote.create_job()
    big = np.random.default_rng(1).normal(size=(3000, 160))  # 3.66 MiB of 1280-byte items
    stream = job.add_stream("big", shape=(160,))
    assert stream.append(big) == 3000
    assert len(sizes) >= 4 and max(sizes) <= 1024 * 1024 and all(s % 1280 == 0 for s in sizes)
    np.testing.assert_array_equal(local.job(job.id).stream("big").read_array(), big)


def test_single_stream_sends_only_the_last_item(local: qx.ResultStore, remote: RemoteStore) -> None:
    job = remote.create_job()
    stream = job.add_stream("avg", shape=(2,), single=True)
    assert stream.append(np.arange(8.0).reshape(4, 2)) == 1
    np.testing.assert_array_equal(local.job(job.id).stream("avg").read_array(), [[6.0, 7.0]])


def test_empty_append_returns_count(remote: RemoteStore) -> None:
    job = remote.create_job()
    stream = job.add_stream("e", dtype="<i8", shape=(3,))
    assert stream.append(np.zeros((0, 3), dtype="<i8")) == 0
    assert stream.append(np.ones((2, 3), dtype="<i8")) == 2
    assert stream.append(np.zeros((0, 3), dtype="<i8")) == 2


def test_job_state_dataloss_and_errors(local: qx.ResultStore, remote: RemoteStore) -> None:
    job = remote.create_job()
    job.mark_dataloss()
    job.add_error("overflow", code=7)
    job.add_error("slow", severity="warning")
    with pytest.raises(ValueError):
        job.add_error("x", severity="fatal")
    stored = local.job(job.id)
    assert stored.has_dataloss and stored.state is JobState.RUNNING
    assert [(e.message, e.code, e.severity) for e in stored.errors] == [
        ("overflow", 7, "error"), ("slow", 0, "warning")]
    job.cancel()
    assert stored.state is JobState.CLOSED


def test_errors_map_to_exceptions(local: qx.ResultStore, remote: RemoteStore) -> None:
    with pytest.raises(JobNotFoundError, match="no-such-job"):
        remote.writer("no-such-job")
    job = remote.create_job("prod-errors")
    with pytest.raises(ValueError, match="already exists"):
        remote.create_job("prod-errors")
    with pytest.raises(QmInvalidSchemaError):
        job.add_stream("bad", dtype="<U4")
    with pytest.raises(InvalidArgumentError):
        job.add_stream("bad name!")
    ints = job.add_stream("n", dtype="<i8", shape=(2,))
    with pytest.raises(InvalidArgumentError, match="already has"):
        job.add_stream("n")
    with pytest.raises(StreamNotFoundError):
        job.stream("nope")
    with pytest.raises(TypeError):
        ints.append(np.array([[1.5, 2.0]]))  # floats into ints: refused before sending
    with pytest.raises(ValueError):
        ints.append(np.zeros((2, 3), dtype="<i8"))
    assert local.job(job.id).stream("n").count == 0
    job.finish()
    with pytest.raises(JobFinishedError):
        ints.append([1, 2])
    with pytest.raises(JobFinishedError):
        job.add_stream("late")
    with pytest.raises(JobFinishedError):
        job.cancel()


def test_server_keeps_serving_after_bad_input(local: qx.ResultStore, remote: RemoteStore,
                                             address: str) -> None:
    job = remote.create_job()
    stream = job.add_stream("v", dtype="<i8")
    stub = pb_grpc.ProducerServiceStub(remote.details.channel())
    bad = [
        [pb.AppendItemsRequest(job_id=job.id, stream="v", count=1, data=b"\x00" * 7)],
        [pb.AppendItemsRequest(job_id=job.id, stream="v", count=3, data=b"\x00" * 8)],
        [pb.AppendItemsRequest(job_id=job.id, stream="nope", count=1, data=b"\x00" * 8)],
        [pb.AppendItemsRequest(job_id="missing", stream="v", count=1, data=b"\x00" * 8)],
    ]
    for messages in bad:
        with pytest.raises(grpc.RpcError) as info:
            stub.AppendItems(iter(messages), timeout=10)
        assert info.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    with pytest.raises(grpc.RpcError):
        stub.SetJobState(pb.SetJobStateRequest(job_id=job.id, transition=99), timeout=10)
    with pytest.raises(grpc.RpcError):
        stub.CreateJob(pb.CreateJobRequest(streams=[pb.StreamSpec(name="x", dtype="garbage")]), timeout=10)
    assert stream.append(np.arange(4)) == 4  # still serving, nothing stored by the bad calls
    np.testing.assert_array_equal(local.job(job.id).stream("v").read_array(), np.arange(4))


def test_connection_details_and_unreachable_server(address: str) -> None:
    details = ConnectionDetails.from_address(address)
    store = RemoteStore(details, token="secret")
    assert store.details.token == "secret" and store.address == details.target
    assert store.create_job().id
    with pytest.raises(ValueError):
        RemoteStore("no-port")
    with pytest.raises(QMConnectionError):
        RemoteStore("127.0.0.1:1", timeout=5).create_job()


def test_remote_writers_mirror_local_writers(local: qx.ResultStore, remote: RemoteStore) -> None:
    lj, rj = local.create_job(), remote.create_job()
    for lw, rw, internal in ((lj, rj, "job"), (lj.add_stream("s"), rj.add_stream("s"), "stream")):
        # set_origin, end_copy: a copy's standing is set by the relay that holds the store, never remotely
        public = {name for name in dir(lw) if not name.startswith("_")} - {internal, "set_origin", "end_copy"}
        assert public <= set(dir(rw)), public - set(dir(rw))
    assert rj.stream("s").layout == lj.stream("s").layout and rj.stream("s").name == "s"
    assert qx.RemoteStore is RemoteStore
