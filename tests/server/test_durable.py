"""The durable store: reopening serves the same jobs, torn tails are cut, one server per store."""

from __future__ import annotations

import json

import numpy as np
import pytest

import qm_xarray as qx
from qm_xarray.testing import STREAM_KINDS, make_job


def test_reopen_serves_every_kind_and_state(tmp_path):
    path = tmp_path / "store"
    with qx.ResultStore(path) as store:
        job, written = make_job(store, counts=50, state="running")
        job.stream("I").append(np.arange(3.0))
        job.mark_dataloss()
        job.add_error("overflow", code=9, severity="warning")
        other, _ = make_job(store, counts=4, state="error")
    with qx.ResultStore(path) as again:
        reopened = again.job(job.id)
        assert reopened.state is job.job.state and reopened.has_dataloss
        assert [(e.code, e.severity, e.message) for e in reopened.errors] == [(9, "warning", "overflow")]
        assert again.job(other.id).closed and again.job(other.id).has_execution_errors
        for name, kind in STREAM_KINDS.items():
            stream = reopened.stream(name)
            want = np.concatenate([written[name], np.arange(3.0)]) if name == "I" else written[name]
            assert stream.read_array().tobytes() == np.ascontiguousarray(want).tobytes(), name
            assert (stream.single, stream.layout.shape, stream.layout.timestamps) == \
                (kind.single, kind.shape, kind.timestamps)
        again.writer(job.id).stream("I").append([9.0])  # the job goes on after a restart
        again.writer(job.id).finish()
    with qx.ResultStore(path) as third:
        assert third.job(job.id).done and third.job(job.id).stream("I").count == 54


def test_a_torn_tail_is_cut_and_never_served(tmp_path):
    path = tmp_path / "store"
    with qx.ResultStore(path) as store:
        job = store.create_job("run")
        job.add_stream("c", "<i8", (3,)).append(np.arange(12).reshape(4, 3))
    items = path / "jobs" / "run" / "c.items"
    with open(items, "ab") as f:
        f.write(b"\x01" * 13)  # a crash in the middle of the fifth item
    with qx.ResultStore(path) as again:
        stream = again.job("run").stream("c")
        assert stream.count == 4 and stream.read_array().tolist() == np.arange(12).reshape(4, 3).tolist()
        assert items.stat().st_size == 4 * 24


def test_one_store_one_owner_and_foreign_directories_refused(tmp_path):
    path = tmp_path / "store"
    store = qx.ResultStore(path)
    with pytest.raises(ValueError, match="in use"):
        qx.ResultStore(path)
    store.close()
    qx.ResultStore(path).close()  # free again
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a qm-xarray store"):
        qx.ResultStore(tmp_path / "other")
    (path / "qm-xarray-store.json").write_text(json.dumps({"format": "x", "version": 9}))
    with pytest.raises(ValueError, match="format"):
        qx.ResultStore(path)


def test_failed_appends_leave_the_files_untouched(tmp_path):
    with qx.ResultStore(tmp_path / "s") as store:
        stream = store.create_job("j").add_stream("n", "<i4")
        stream.append([1, 2, 3])
        for bad in ([1.5], [2**40], np.zeros((2, 2), "<i4")):
            with pytest.raises((TypeError, ValueError)):
                stream.append(bad)
    assert (tmp_path / "s" / "jobs" / "j" / "n.items").read_bytes() == np.array([1, 2, 3], "<i4").tobytes()


def test_a_failed_write_is_undone(tmp_path, monkeypatch):
    import errno
    import os

    from qm_xarray.server import storage

    with qx.ResultStore(tmp_path / "s") as store:
        stream = store.create_job("j").add_stream("I")
        stream.append([0.0, 1.0, 2.0, 3.0])
        real = os.pwrite

        def disk_full(fd, data, offset):
            real(fd, bytes(data)[:12], offset)  # a partial write, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(storage.os, "pwrite", disk_full)
        with pytest.raises(OSError):
            stream.append([4.0, 5.0])
        monkeypatch.setattr(storage.os, "pwrite", real)
        stream.append([4.0, 5.0])
        assert stream.stream.read_array().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    with qx.ResultStore(tmp_path / "s") as again:
        assert again.job("j").stream("I").read_array().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_last_update_survives_reopening(tmp_path):
    import time

    with qx.ResultStore(tmp_path / "s") as store:
        job = store.create_job("j")
        job.add_stream("I").append([1.0])
        updated = job.job.updated
    time.sleep(0.05)
    with qx.ResultStore(tmp_path / "s") as again:
        assert abs(again.job("j").updated - updated) < 0.05
