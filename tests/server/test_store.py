"""ResultStore: producer API, validation, whole-item publication, job states."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import qm_xarray as qx
from qm_xarray.errors import JobFinishedError, JobNotFoundError, StreamNotFoundError
from qm_xarray.server import storage
from qm_xarray.testing import STREAM_KINDS, make_job


def test_round_trip_every_kind():
    store = qx.ResultStore()
    job, written = make_job(store, counts=7)
    for name, items in written.items():
        got = store.job(job.id).stream(name).read_array()
        assert got.shape == items.shape and got.dtype == items.dtype, name
        assert got.tobytes() == np.ascontiguousarray(items).tobytes(), name


def test_single_stream_keeps_only_the_last_value():
    store = qx.ResultStore()
    job = store.create_job()
    avg = job.add_stream("avg", single=True)
    assert avg.count == 0 and avg.stream.read(0, 1) == (0, [])
    avg.append(np.array([1.0, 2.0, 3.0]))
    avg.append(4.0)
    assert avg.count == 1
    assert avg.stream.read_array().tolist() == [4.0]


def test_ids_names_and_lookups():
    store = qx.ResultStore()
    a, b = store.create_job(), store.create_job("run-42")
    assert a.id == "job-1" and b.id == "run-42"
    assert store.create_job().id == "job-2"
    with pytest.raises(ValueError, match="already exists"):
        store.create_job("run-42")
    with pytest.raises(ValueError, match="invalid job id"):
        store.create_job("../etc")
    with pytest.raises(JobNotFoundError, match="nope"):
        store.job("nope")
    with pytest.raises(KeyError):
        store.job("nope")
    a.add_stream("I")
    with pytest.raises(ValueError, match="already has a stream"):
        a.add_stream("I")
    with pytest.raises(ValueError, match="invalid stream name"):
        a.add_stream("bad name")
    with pytest.raises(StreamNotFoundError, match="'Q'"):
        store.job(a.id).stream("Q")


def test_states_and_appends_after_the_end():
    store = qx.ResultStore()
    job = store.create_job()
    s = job.add_stream("I")
    assert (job.job.done, job.job.closed) == (False, False)
    job.mark_dataloss()
    job.add_error("oops", code=3, severity="warning")
    assert job.job.has_dataloss and not job.job.has_execution_errors
    job.finish()
    assert (job.job.done, job.job.closed) == (True, True)
    with pytest.raises(JobFinishedError):
        s.append([1.0])
    with pytest.raises(JobFinishedError):
        job.add_stream("Q")
    with pytest.raises(JobFinishedError):
        job.cancel()
    assert s.count == 0
    other = store.create_job()
    other.add_error("boom")
    other.cancel()
    assert (other.job.done, other.job.closed, other.job.has_execution_errors) == (False, True, True)


def test_bad_append_changes_nothing():
    store = qx.ResultStore()
    job = store.create_job()
    s = job.add_stream("c", "<i8", (3,))
    s.append(np.arange(6).reshape(2, 3))
    for bad in (np.zeros((2, 2), int), np.ones((1, 3)), "abc", [[1, 2, 3], [4, 5]]):
        with pytest.raises((TypeError, ValueError)):
            s.append(bad)
    with pytest.raises(ValueError, match="whole number"):
        s.stream.append_bytes(b"\x00" * 10, None)
    with pytest.raises(ValueError, match="does not match"):
        s.stream.append_bytes(b"\x00" * 24, 2)
    assert s.stream.read_array().tolist() == [[0, 1, 2], [3, 4, 5]]


def test_items_span_segments(monkeypatch):
    monkeypatch.setattr(storage, "SEGMENT_BYTES", 64)  # 8 float64 items per segment
    store = qx.ResultStore()
    s = store.create_job().add_stream("I")
    for chunk in np.array_split(np.arange(50.0), 7):
        s.append(chunk)
    n, pieces = s.stream.read(5, 30)
    pieces = list(pieces)
    assert n == 25 and len(pieces) > 1
    assert np.frombuffer(b"".join(pieces)).tolist() == list(np.arange(5.0, 30.0))
    assert s.stream.read(48, 100)[0] == 2 and s.stream.read(60, 70)[0] == 0


def test_wait_for_change_wakes_on_append():
    store = qx.ResultStore()
    job = store.create_job()
    s = job.add_stream("I")
    version = job.job.version
    timer = threading.Timer(0.05, lambda: s.append([1.0]))
    timer.start()
    assert job.job.wait_for_change(version, timeout=5) != version
    assert job.job.wait_for_change(job.job.version, timeout=0.01) == job.job.version


def test_stream_kinds_cover_the_protocol_table():
    assert {k.single for k in STREAM_KINDS.values()} == {True, False}
    assert any(k.timestamps and k.single for k in STREAM_KINDS.values())


def test_create_job_with_streams_is_all_or_nothing():
    store = qx.ResultStore()
    job = store.create_job("ok", streams=[{"name": "I"}, {"name": "c", "dtype": "<i8", "shape": (3,)}])
    assert list(job.job.streams) == ["I", "c"]
    for bad in ([{"name": "I"}, {"name": "bad name"}], [{"name": "I"}, {"name": "I"}],
                [{"name": "I", "expected_count": -1}], [{"name": "I", "dtype": "O"}],
                [{"name": "I", "colour": "red"}]):
        with pytest.raises(ValueError):
            store.create_job("bad", streams=bad)
        assert "bad" not in [j.id for j in store.jobs()]
