"""`qx.capture`: one upstream job mirrored into a ResultStore while it runs (in-process servers:
the QOP stand-ins built from qm-qua's servicers, and our own server)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qm_xarray as qx
from qm_xarray.relay import STOPPED, Capture
from qm_xarray.testing import StreamKind

pytest.importorskip("qm", reason="the QOP stand-ins are built from qm-qua's servicers")
from qm_xarray.testing.qop import StandInQop  # noqa: E402

JOB = "job-7f3a"
TS = np.dtype([("value", "<i8", (2,)), ("timestamp", "<i8")])
KINDS = {"I": StreamKind("<f8"), "adc": StreamKind("<i8", (2,), timestamps=True),
         "flag": StreamKind("|b1"), "last": StreamKind("<f8", single=True)}


def _items(name: str, start: int, stop: int) -> np.ndarray:
    n = np.arange(start, stop)
    if name == "adc":
        out = np.zeros(len(n), TS)
        out["value"] = np.stack([n, -n], axis=1)
        out["timestamp"] = n * 4
        return out
    if name == "flag":
        return n % 3 == 0
    return n * 0.5


def _grow(qop: StandInQop, start: int, stop: int) -> None:
    for name in ("I", "adc", "flag"):
        qop.append(JOB, name, _items(name, start, stop))
    qop.append(JOB, "last", np.array([float(stop)]))


def _bytes(conn: qx.Connection, name: str) -> tuple[str, tuple[int, ...], bytes]:
    a = np.asarray(conn.job(JOB).result_handles.get(name).fetch_all(flat_struct=True))
    return a.dtype.str, a.shape, a.tobytes()


@pytest.fixture(params=[3, 2], ids=["qop3", "qop2"])
def qop(request: pytest.FixtureRequest) -> Iterator[StandInQop]:
    with StandInQop(request.param, require_gateway_headers=False) as server:
        server.add_job(JOB, {name: (kind, _items(name, 0, 0) if not kind.single else np.zeros(0))
                             for name, kind in KINDS.items()})
        yield server


def _capturing(job: Any, store: qx.ResultStore, **options: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.update(result=qx.capture(job, store, **options)))
    thread.start()
    return thread, out


def _wait_count(store: qx.ResultStore, name: str, count: int, timeout: float = 20.0) -> None:
    job = None
    done = threading.Event()
    for _ in range(int(timeout / 0.02)):
        try:
            job = store.job(JOB)
        except qx.JobNotFoundError:
            job = None
        if job is not None and job.stream(name).count >= count:
            return
        done.wait(0.02)
    raise AssertionError(f"the copy did not reach {count} items of {name} within {timeout} s")


def test_the_copy_equals_the_upstream_at_every_step_and_at_the_end(qop: StandInQop) -> None:
    conn = qx.connect(qop.address)
    store = qx.ResultStore()
    thread, out = _capturing(conn.job(JOB), store)
    with qx.serve(store) as relay:
        copy = qx.connect(relay.address)
        for step in range(1, 4):
            _grow(qop, (step - 1) * 50, step * 50)
            _wait_count(store, "I", step * 50)
            got = np.asarray(copy.job(JOB).result_handles.get("I").fetch_all(flat_struct=True))
            assert got.tobytes() == _items("I", 0, len(got)).tobytes()  # a prefix of the upstream's
        qop.add_error(JOB, "pulse out of range", code=7, severity="warning")
        qop.set_state(JOB, "done")
        thread.join(30)
        assert out["result"].status == "complete"
        for name in KINDS:
            assert _bytes(copy, name) == _bytes(conn, name)
        mine, theirs = copy.job(JOB).summary(), conn.job(JOB).summary()
        assert (mine.state, mine.has_dataloss, mine.errors) == (theirs.state, theirs.has_dataloss, theirs.errors)
        assert mine.errors == ((7, "warning", "pulse out of range"),)
        assert mine.origin is not None and mine.origin.status == "complete"
        assert mine.origin.upstream == qop.address and mine.origin.job_id == JOB


def test_a_round_is_one_headers_call_and_one_data_call_where_the_upstream_allows() -> None:
    with StandInQop(3, require_gateway_headers=False) as qop:
        qop.add_job(JOB, {name: (kind, _items(name, 0, 10) if not kind.single else np.array([1.0]))
                          for name, kind in KINDS.items()}, state="done")
        result = qx.capture(qx.connect(qop.address).job(JOB), qx.ResultStore())
        methods = [method.rsplit("/", 1)[-1] for method, _ in qop.calls]
    assert result.status == "complete"
    assert "GetJobNamedResultHeader" not in methods and "GetNamedResult" not in methods  # per stream
    assert methods.count("GetNamedResults") == result.rounds  # one data call for all streams
    # one headers call per round, and one to learn the streams' kinds when the copy is made
    assert methods.count("GetJobNamedResultsHeaders") == result.rounds + 1


def test_data_loss_errors_and_cancellation_are_mirrored(qop: StandInQop) -> None:
    _grow(qop, 0, 20)
    qop.set_dataloss(JOB)
    qop.add_error(JOB, "overflow")
    qop.set_state(JOB, "canceled")
    store = qx.ResultStore()
    result = qx.capture(qx.connect(qop.address).job(JOB), store)
    job = store.job(JOB)
    assert (result.status, result.state) == ("complete", "closed")
    assert job.has_dataloss and [e.message for e in job.errors] == ["overflow"]
    with qx.serve(store) as relay, pytest.raises(qx.StreamProcessingDataLossError):
        qx.connect(relay.address).job(JOB).result_handles.get("I").fetch_all()


def test_a_stopped_capture_resumes_from_the_stores_counts_without_duplicates(tmp_path: Path) -> None:
    with StandInQop(3, require_gateway_headers=False) as qop:
        qop.add_job(JOB, {"I": (KINDS["I"], _items("I", 0, 0))})
        job = qx.connect(qop.address).job(JOB)
        store = qx.ResultStore(tmp_path / "relay")
        stop = threading.Event()
        thread = threading.Thread(target=lambda: Capture(job, store, stop=stop).run())
        thread.start()
        qop.append(JOB, "I", _items("I", 0, 100))
        _wait_count(store, "I", 100)
        stop.set()
        thread.join(30)
        store.close()
        qop.append(JOB, "I", _items("I", 100, 250))
        qop.set_state(JOB, "done")
        reopened = qx.ResultStore(tmp_path / "relay")
        assert reopened.job(JOB).stream("I").count == 100
        result = qx.capture(job, reopened)
        assert (result.status, result.counts) == ("complete", {"I": 250})
        assert reopened.job(JOB).stream("I").read_array().tobytes() == _items("I", 0, 250).tobytes()
        reopened.close()


def test_stop_leaves_the_copy_running_and_says_stopped() -> None:
    with StandInQop(3, require_gateway_headers=False) as qop:
        qop.add_job(JOB, {"I": (KINDS["I"], _items("I", 0, 5))})
        stop = threading.Event()
        stop.set()
        store = qx.ResultStore()
        result = qx.capture(qx.connect(qop.address).job(JOB), store, stop=stop)
    assert result.status == STOPPED and result.state == "running"


def test_an_upstream_gone_for_longer_than_the_deadline_marks_the_copy_interrupted() -> None:
    qop = StandInQop(3, require_gateway_headers=False).start()
    qop.add_job(JOB, {"I": (KINDS["I"], _items("I", 0, 30))})
    store = qx.ResultStore()
    thread, out = _capturing(qx.connect(qop.address).job(JOB), store, deadline=1.0, max_interval=0.2,
                             call_timeout=3.0)  # a slow call before the outage is not the outage
    _wait_count(store, "I", 30)
    qop.stop()
    thread.join(30)
    result = out["result"]
    assert (result.status, result.state) == ("interrupted", "running")  # not pretending it ended
    origin = store.job(JOB).origin
    assert origin is not None and origin.interrupted and qop.address in origin.reason
    assert store.job(JOB).stream("I").count == 30  # what arrived is kept
    with qx.serve(store) as relay:
        summary = qx.connect(relay.address).job(JOB).summary()
        assert summary.state == "running" and summary.origin is not None
        assert summary.origin.status == "interrupted" and summary.origin.reason == origin.reason


def test_an_interrupted_copy_resumes_when_the_upstream_answers_again() -> None:
    with StandInQop(3, require_gateway_headers=False) as qop:
        qop.add_job(JOB, {"I": (KINDS["I"], _items("I", 0, 40))}, state="done")
        store = qx.ResultStore()
        writer = store.create_job(JOB, streams=[qx.StreamSpec.create("I", "<f8")],
                                  origin=qx.Origin(qop.address, JOB))
        writer.stream("I").append(_items("I", 0, 10))
        writer.set_origin(qx.Origin(qop.address, JOB).interrupt("the upstream was away"))
        result = qx.capture(qx.connect(qop.address).job(JOB), store)
    assert result.status == "complete" and store.job(JOB).origin.status == "complete"  # type: ignore[union-attr]
    assert store.job(JOB).stream("I").read_array().tobytes() == _items("I", 0, 40).tobytes()


def test_an_upstream_with_fewer_items_than_the_copy_is_not_the_same_job() -> None:
    with StandInQop(3, require_gateway_headers=False) as qop:
        qop.add_job(JOB, {"I": (KINDS["I"], _items("I", 0, 5))})  # e.g. a restarted QOP reusing the id
        store = qx.ResultStore()
        writer = store.create_job(JOB, streams=[qx.StreamSpec.create("I", "<f8")],
                                  origin=qx.Origin(qop.address, JOB))
        writer.stream("I").append(_items("I", 0, 20))
        result = qx.capture(qx.connect(qop.address).job(JOB), store, deadline=30.0)
    assert result.status == "interrupted" and "no longer serves the job" in result.reason
    assert store.job(JOB).stream("I").count == 20  # nothing overwritten


def test_a_job_of_the_store_that_is_not_a_copy_is_refused() -> None:
    with StandInQop(3, require_gateway_headers=False) as qop:
        qop.add_job(JOB, {"I": (KINDS["I"], _items("I", 0, 5))}, state="done")
        store = qx.ResultStore()
        store.create_job(JOB)
        with pytest.raises(qx.QmValueError, match="not a copy"):
            qx.capture(qx.connect(qop.address).job(JOB), store)


def test_a_copy_of_our_server_keeps_its_metadata_and_new_streams() -> None:
    upstream = qx.ResultStore()
    writer = upstream.create_job(JOB, streams={"I": {"dtype": "<f8", "expected_count": 4}},
                                 metadata={"attrs": {"experiment": "rabi"},
                                           "coords": {"amplitude": np.linspace(0, 1, 4)},
                                           "streams": {"I": {"dims": ["amplitude"], "units": "V"}}})
    writer.stream("I").append(np.arange(4.0))
    with qx.serve(upstream) as server:
        store = qx.ResultStore()
        thread, out = _capturing(qx.connect(server.address).job(JOB), store)
        _wait_count(store, "I", 4)
        writer.add_stream("Q", dtype="<i8").append(np.arange(3))
        writer.describe(attrs={"operator": "ada"})
        writer.finish()
        thread.join(30)
    assert out["result"].status == "complete"
    copy = store.job(JOB)
    assert copy.metadata == upstream.job(JOB).metadata
    assert copy.stream("Q").read_array().tolist() == [0, 1, 2]


def test_producers_cannot_write_to_a_copy_but_may_end_an_interrupted_one() -> None:
    store = qx.ResultStore()
    origin = qx.Origin("10.0.0.7:9510", JOB)
    store.create_job(JOB, streams=[qx.StreamSpec.create("I", "<f8")], origin=origin)
    with qx.serve(store) as server:
        remote = qx.RemoteStore(server.address)
        with pytest.raises(qx.InvalidArgumentError, match="takes results only from there"):
            remote.writer(JOB).stream("I").append(np.arange(3.0))
        with pytest.raises(qx.InvalidArgumentError, match="copy"):
            remote.writer(JOB).cancel()
        store.writer(JOB).set_origin(origin.interrupt("gone"))
        remote.writer(JOB).add_error("closed by qm-xarray close")  # as `close --state failed` does
        remote.writer(JOB).cancel()
        with pytest.raises(qx.InvalidArgumentError):
            remote.writer(JOB).add_error("and once it has ended, nothing more")
    assert store.job(JOB).state.value == "closed" and store.job(JOB).stream("I").count == 0
    assert [e.message for e in store.job(JOB).errors] == ["closed by qm-xarray close"]


def test_a_copy_of_another_upstream_is_not_resumed_from_this_one() -> None:
    with StandInQop(3, require_gateway_headers=False) as qop:
        qop.add_job(JOB, {"I": (KINDS["I"], _items("I", 0, 50))}, state="done")
        store = qx.ResultStore()
        store.create_job(JOB, streams=[qx.StreamSpec.create("I", "<f8")],
                         origin=qx.Origin("10.1.2.3:9510", JOB))
        with pytest.raises(qx.QmValueError, match="10.1.2.3:9510"):
            qx.capture(qx.connect(qop.address).job(JOB), store)
    assert store.job(JOB).stream("I").count == 0


def test_a_backlog_is_taken_in_rounds_of_bounded_size_even_with_items_larger_than_a_round() -> None:
    from qm_xarray.limits import CAPTURE_ROUND_BYTES

    item = CAPTURE_ROUND_BYTES // 8 * 3 // 2  # 1.5 rounds' worth of float64s per item
    kind = StreamKind("<f8", (item,))
    items = np.arange(3 * item, dtype="<f8").reshape(3, item)
    with StandInQop(3, require_gateway_headers=False) as qop:
        qop.add_job(JOB, {"big": (kind, items), "I": (KINDS["I"], _items("I", 0, 10))}, state="done")
        store = qx.ResultStore()
        result = qx.capture(qx.connect(qop.address).job(JOB), store)
    assert result.status == "complete" and result.counts == {"big": 3, "I": 10}
    assert result.rounds >= 3  # one item per round: none fits the budget, each still moves
    assert result.bytes < 3 * items[0].nbytes + CAPTURE_ROUND_BYTES  # each item fetched once
    assert store.job(JOB).stream("big").read_array().tobytes() == items.tobytes()


def test_another_job_under_the_same_id_is_not_spliced_onto_the_copy() -> None:
    """A server that reuses ids (ours in memory, restarted) serves another job under the copy's id
    with more items: the copy is interrupted, not completed with the other job's items."""
    first = StandInQop(3, require_gateway_headers=False).start()
    port = first.port
    first.add_job(JOB, {"I": (KINDS["I"], np.ones(100))})
    store = qx.ResultStore()
    stop = threading.Event()
    thread = threading.Thread(target=lambda: Capture(qx.connect(first.address).job(JOB), store, stop=stop).run())
    thread.start()
    _wait_count(store, "I", 100)
    stop.set()
    thread.join(30)
    first.stop()
    with StandInQop(3, require_gateway_headers=False, port=port) as second:
        second.add_job(JOB, {"I": (KINDS["I"], np.full(300, 2.0))}, state="done")
        result = qx.capture(qx.connect(second.address).job(JOB), store)
    assert result.status == "interrupted" and "another job" in result.reason
    assert store.job(JOB).state.value == "running" and store.job(JOB).stream("I").count == 100


def test_a_stream_laid_out_otherwise_upstream_is_another_job() -> None:
    with StandInQop(3, require_gateway_headers=False) as qop:
        qop.add_job(JOB, {"I": (StreamKind("<i8"), np.arange(20))}, state="done")
        store = qx.ResultStore()
        store.create_job(JOB, streams=[qx.StreamSpec.create("I", "<f8")], origin=qx.Origin(qop.address, JOB))
        result = qx.capture(qx.connect(qop.address).job(JOB), store)
    assert result.status == "interrupted" and "laid out otherwise" in result.reason


def test_a_copy_ends_in_one_save_and_an_older_store_s_ended_copy_is_made_complete(tmp_path: Path) -> None:
    store = qx.ResultStore(tmp_path / "s")
    origin = qx.Origin("10.0.0.9:9510", JOB)
    store.create_job(JOB, origin=origin).end_copy(True, origin.complete())
    store.create_job("older", origin=qx.Origin("10.0.0.9:9510", "older")).finish()  # ended, "capturing"
    store.close()
    reopened = qx.ResultStore(tmp_path / "s")
    job = reopened.job(JOB)
    assert job.state.value == "done" and job.origin is not None and job.origin.status == "complete"
    with StandInQop(3, require_gateway_headers=False) as qop:
        conn = qx.connect(qop.address)
        older = qx.Origin(conn.details.target, "older")
        reopened.writer("older").set_origin(older)  # as a relay of this upstream left it
        result = qx.capture(conn.job("older"), reopened)
    assert result.status == "complete" and reopened.job("older").origin.status == "complete"  # type: ignore[union-attr]
    reopened.close()


def test_a_store_that_refuses_a_write_interrupts_the_copy_at_once(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    from qm_xarray.server import storage

    def full(self: Any, data: Any, n: int, publish: Any) -> None:
        raise OSError(28, "No space left on device")

    with StandInQop(3, require_gateway_headers=False) as qop:
        qop.add_job(JOB, {"I": (KINDS["I"], _items("I", 0, 10))})
        store = qx.ResultStore(tmp_path / "s")
        monkeypatch.setattr(storage.FileItems, "write", full)
        result = qx.capture(qx.connect(qop.address).job(JOB), store, deadline=600.0)
    assert result.status == "interrupted" and "No space left" in result.reason
    assert "relay's store could not append" in result.reason  # not blamed on the upstream
    origin = store.job(JOB).origin
    assert origin is not None and origin.interrupted
    store.close()


class _StopAfterOneRound(Capture):
    """A capture asked to stop right after its first round (as `Relay.stop` may at any time)."""

    def _round(self) -> None:
        super()._round()
        self.cancel()


def test_a_capture_asked_to_stop_while_it_drains_a_backlog_stops_there() -> None:
    from qm_xarray.limits import CAPTURE_ROUND_BYTES

    item = CAPTURE_ROUND_BYTES // 8
    items = np.arange(4 * item, dtype="<f8").reshape(4, item)
    with StandInQop(3, require_gateway_headers=False) as qop:
        qop.add_job(JOB, {"big": (StreamKind("<f8", (item,)), items)}, state="done")
        store = qx.ResultStore()
        job = qx.connect(qop.address).job(JOB)
        result = _StopAfterOneRound(job, store).run()
        assert (result.status, result.state) == ("stopped", "running")
        assert 0 < store.job(JOB).stream("big").count < 4
        assert qx.capture(job, store).status == "complete"  # and it resumes
    assert store.job(JOB).stream("big").read_array().tobytes() == items.tobytes()
