"""The relay as it runs in a lab: real processes on 127.0.0.1 — an upstream (the QOP-3 stand-in
built from qm-qua's servicers, in a child process; or `qm-xarray serve` fed by `qm-xarray
simulate`), the relay (`qm-xarray serve --upstream ... --store DIR`) — and readers of the relay:
our client, qm-qua's `QuantumMachinesManager` and the engine on a `LocalCluster(processes=True)`.
Faults: kill -9 of the relay and of the upstream, and an upstream gone for good."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import qm_xarray as qx
from qm_xarray.testing.processes import ProducerProcess, ServerProcess, expected_items

pytest.importorskip("qm", reason="the QOP stand-in and the reference client come with qm-qua")
import qm.user_config  # noqa: E402
from qm import QuantumMachinesManager  # noqa: E402

from qm_xarray.testing.qop_process import QopProcess, known_items  # noqa: E402

pytestmark = pytest.mark.compat

JOB = "4c1d2e9a-relay"
STREAMS = {"I": {"dtype": "<f8"}, "adc": {"dtype": "<i8", "shape": [2], "timestamps": True},
           "last": {"dtype": "<f8", "single": True}}
WAIT = 60.0  # deadline of every wait for the relay (seconds); nothing here depends on speed


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(qm.user_config, "CONFIG_PATH", str(tmp_path / "qm-config.json"))


@pytest.fixture
def qop() -> Iterator[QopProcess]:
    with QopProcess(qop=3) as server:
        yield server


def _relay(store: Path, upstream: str, *options: str) -> ServerProcess:
    return ServerProcess(store, args=["--upstream", upstream, *options])


def _status(relay: ServerProcess, job_id: str, status: str) -> str:
    return relay.wait_for(lambda line: line.startswith(f"capture {job_id}: {status}"), WAIT)


def _read(conn: qx.Connection, name: str, job_id: str = JOB) -> np.ndarray:
    return np.asarray(conn.job(job_id).result_handles.get(name).fetch_all(flat_struct=True))


def _wait_copy(conn: qx.Connection, name: str, count: int, job_id: str = JOB) -> None:
    """Wait (by a deadline) until the relay's copy has `count` items of `name`."""
    end = time.monotonic() + WAIT
    while time.monotonic() < end:
        try:
            counts = {s.name: s.count for s in conn.job(job_id).summary().streams}
        except qx.JobNotFoundError:  # the capture has not made the copy yet
            counts = {}
        if counts.get(name, 0) >= count:
            return
        threading.Event().wait(0.05)
    raise AssertionError(f"the relay's copy did not reach {count} items of {name} within {WAIT} s")


def _same(a: np.ndarray, b: np.ndarray) -> None:
    assert (a.dtype.str, a.shape, a.tobytes()) == (b.dtype.str, b.shape, b.tobytes())


def _manager(address: str) -> QuantumMachinesManager:
    host, port = address.rsplit(":", 1)
    return QuantumMachinesManager(host=host, port=int(port), timeout=10)


def _everything(conn: qx.Connection, names: Any, job_id: str = JOB) -> tuple[Any, ...]:
    summary = conn.job(job_id).summary()
    return (summary.state, summary.has_dataloss, summary.errors,
            {name: _read(conn, name, job_id).tobytes() for name in names})


@pytest.fixture(scope="module")
def cluster_client() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        with distributed.Client(cluster, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)
            yield client


def test_readers_of_the_relay_get_what_readers_of_a_qop_get(qop: QopProcess, tmp_path: Path,
                                                            cluster_client: Any) -> None:
    qop.add_job(JOB, STREAMS)
    with _relay(tmp_path / "relay", qop.address, "--job", JOB) as relay:
        _status(relay, JOB, "capturing")
        conn = qx.connect(relay.address)
        qmm = _manager(relay.address)
        try:
            for step in range(1, 4):
                for name in STREAMS:
                    qop.grow(JOB, name, 300)
                # at any moment a reader of the relay holds a prefix of the upstream job
                theirs = np.asarray(qmm.get_job(JOB).result_handles.get("I").fetch_all())["value"]
                for got in (_read(conn, "I"), theirs):
                    _same(got, known_items(STREAMS["I"], 0, len(got), "I"))
                adc = _read(conn, "adc")
                _same(adc, known_items(STREAMS["adc"], 0, len(adc), "adc"))
            qop.set_state(JOB, "done")
            _status(relay, JOB, "complete")
            upstream = qx.connect(qop.address)
            theirs_all = _everything(upstream, STREAMS)
            direct = QuantumMachinesManager(host="127.0.0.1", port=qop.port, timeout=10,
                                            connection_headers={"cluster_name": "any"})
            theirs_qmqua = {name: np.asarray(direct.get_job(JOB).result_handles.get(name).fetch_all())
                            for name in STREAMS}
            direct.close()
            calls = qop.calls()
            # every reader below reads the relay: the upstream sees none of them
            assert _everything(conn, STREAMS) == theirs_all
            _same(_read(conn, "I"), known_items(STREAMS["I"], 0, 900, "I"))
            # qm-qua reading the relay, unchanged: the same as qm-qua reading the QOP
            res = qmm.get_job(JOB).result_handles
            assert res.wait_for_all_values(10) and not res.is_processing()
            for name in STREAMS:
                _same(np.asarray(res.get(name).fetch_all()), theirs_qmqua[name])
            # the engine, computed on worker processes, reads the relay's copy
            ds = xr.open_dataset(qmm.get_job(JOB), engine="qm", chunks={}, chunk_bytes=800)
            total = cluster_client.compute(ds.I.sum().data).result(timeout=60)
            assert float(total) == pytest.approx(float(known_items(STREAMS["I"], 0, 900, "I").sum()))
            assert qop.calls() == calls
        finally:
            qmm.close()


def test_a_relay_of_our_server_fed_by_simulate_copies_the_job_with_its_metadata(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "upstream") as upstream, \
            _relay(tmp_path / "relay", upstream.address, "--follow-new", "--poll", "0.2") as relay:
        relay.wait_for(lambda line: line.startswith("relaying"), WAIT)
        sim = subprocess.run(
            [sys.executable, "-m", "qm_xarray", "simulate", "rabi", "--address", upstream.address,
             "--job-id", "rabi-1", "--rate", "400", "--param", "n_avg=20", "--no-progress"],
            capture_output=True, text=True, timeout=120)
        assert sim.returncode == 0, sim.stderr
        _status(relay, "rabi-1", "complete")
        mine, theirs = qx.connect(relay.address), qx.connect(upstream.address)
        names = [s.name for s in theirs.job("rabi-1").summary().streams]
        assert _everything(mine, names, "rabi-1") == _everything(theirs, names, "rabi-1")
        assert mine.job("rabi-1").metadata() == theirs.job("rabi-1").metadata()
        assert mine.job("rabi-1").metadata().attrs["experiment"] == "rabi"
        a = xr.open_dataset(mine.job("rabi-1"), engine="qm").load()
        b = xr.open_dataset(theirs.job("rabi-1"), engine="qm").load()
        xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
        assert {k: v for k, v in a.attrs.items() if not k.startswith("qm_")} == \
               {k: v for k, v in b.attrs.items() if not k.startswith("qm_")}


def test_a_relay_killed_mid_job_resumes_on_its_store_without_duplicates(qop: QopProcess,
                                                                     tmp_path: Path) -> None:
    qop.add_job(JOB, STREAMS)
    store = tmp_path / "relay"
    relay = _relay(store, qop.address, "--job", JOB).start()
    try:
        for name in STREAMS:
            qop.grow(JOB, name, 400)
        _wait_copy(qx.connect(relay.address), "I", 1)
        relay.kill()  # SIGKILL, mid-capture
        for name in STREAMS:
            qop.grow(JOB, name, 400)
        relay.restart()
        _status(relay, JOB, "capturing")
        for name in STREAMS:
            qop.grow(JOB, name, 200)
        qop.add_error(JOB, "late warning", severity="warning")
        qop.set_state(JOB, "done")
        _status(relay, JOB, "complete")
        assert _everything(qx.connect(relay.address), STREAMS) == _everything(qx.connect(qop.address), STREAMS)
        counts = {s.name: s.count for s in qx.connect(relay.address).job(JOB).summary().streams}
        assert counts == {"I": 1000, "adc": 1000, "last": 1}
    finally:
        relay.stop()


def test_the_relay_rides_out_a_restart_of_its_upstream(tmp_path: Path) -> None:
    upstream = ServerProcess(tmp_path / "upstream").start()
    try:
        store = qx.RemoteStore(upstream.address)
        store.create_job("run-9", streams={"I": {"dtype": "<f8", "shape": [4]}})
        with _relay(tmp_path / "relay", upstream.address, "--job", "run-9") as relay:
            _status(relay, "run-9", "capturing")
            first = ProducerProcess(upstream.address, "run-9", "I", batch=50, batches=4)
            first.wait_acked(200, WAIT)
            first.wait(WAIT)
            upstream.kill()
            upstream.restart()
            second = ProducerProcess(upstream.address, "run-9", "I", batch=50, batches=4)
            second.wait_acked(400, WAIT)
            second.wait(WAIT)
            qx.RemoteStore(upstream.address).writer("run-9").finish()
            _status(relay, "run-9", "complete")
            assert not [line for line in relay.child.lines if "interrupted" in line]  # type: ignore[union-attr]
            got = _read(qx.connect(relay.address), "I", "run-9")
            _same(got, _read(qx.connect(upstream.address), "I", "run-9"))
            assert np.array_equal(got.reshape(-1), expected_items(0, 400, 4).reshape(-1))
    finally:
        upstream.stop()


def test_an_upstream_gone_for_good_leaves_an_interrupted_copy_that_readers_are_told_of(
        qop: QopProcess, tmp_path: Path) -> None:
    qop.add_job(JOB, STREAMS)
    for name in STREAMS:
        qop.grow(JOB, name, 100)
    with _relay(tmp_path / "relay", qop.address, "--job", JOB, "--capture-deadline", "1",
                "--retry", "600") as relay:
        _status(relay, JOB, "capturing")
        conn = qx.connect(relay.address)
        qop.kill()
        line = _status(relay, JOB, "interrupted")
        assert qop.address in line
        summary = conn.job(JOB).summary()
        assert summary.state == "running" and summary.origin is not None
        assert summary.origin.status == "interrupted" and qop.address in summary.origin.reason
        assert qx.connect(relay.address).job(JOB).summary().streams[0].count <= 100
        # what arrived is served; qm-qua still sees a job that has not ended
        qmm = _manager(relay.address)
        try:
            assert qmm.get_job(JOB).result_handles.is_processing()
        finally:
            qmm.close()


def test_data_loss_errors_and_cancellation_upstream_are_mirrored(qop: QopProcess, tmp_path: Path) -> None:
    qop.add_job(JOB, STREAMS)
    with _relay(tmp_path / "relay", qop.address, "--job", JOB) as relay:
        _status(relay, JOB, "capturing")
        for name in STREAMS:
            qop.grow(JOB, name, 50)
        qop.mark_dataloss(JOB)
        qop.add_error(JOB, "ADC overflow", code=12)
        qop.set_state(JOB, "canceled")
        _status(relay, JOB, "complete")
        mine = qx.connect(relay.address).job(JOB).summary()
        theirs = qx.connect(qop.address).job(JOB).summary()
        assert (mine.state, mine.has_dataloss, mine.errors) == (theirs.state, theirs.has_dataloss, theirs.errors)
        assert (mine.state, mine.has_dataloss) == ("closed", True) and mine.errors[0][2] == "ADC overflow"
        qmm = _manager(relay.address)
        try:
            res = qmm.get_job(JOB).result_handles
            assert not res.is_processing()
            with pytest.raises(Exception, match="(?i)data.?loss"):
                res.get("I").fetch_all()
        finally:
            qmm.close()


def test_an_upstream_that_stops_answering_is_waited_out_then_the_copy_is_interrupted(
        qop: QopProcess) -> None:
    """A hung upstream (SIGSTOP: the port accepts, nothing answers) makes calls time out: that is
    the upstream's failure, retried until the deadline, then the copy says it is interrupted."""
    qop.add_job(JOB, {"I": STREAMS["I"]})
    qop.grow(JOB, "I", 10)
    store = qx.ResultStore()
    out: dict[str, Any] = {}
    job = qx.connect(qop.address).job(JOB)
    thread = threading.Thread(target=lambda: out.update(
        result=qx.capture(job, store, deadline=3.0, call_timeout=0.5, max_interval=0.2)))
    thread.start()
    end = time.monotonic() + WAIT
    while time.monotonic() < end and (JOB not in [j.id for j in store.jobs()]
                                      or store.job(JOB).stream("I").count < 10):
        threading.Event().wait(0.02)
    os.kill(qop.pid, signal.SIGSTOP)
    try:
        thread.join(WAIT)
    finally:
        os.kill(qop.pid, signal.SIGCONT)
    result = out["result"]
    assert (result.status, result.state) == ("interrupted", "running"), result
    assert "QMTimeoutError" in result.reason and qop.address in result.reason
    origin = store.job(JOB).origin
    assert origin is not None and origin.interrupted and store.job(JOB).stream("I").count == 10
