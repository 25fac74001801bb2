"""qm-qua's `QuantumMachinesManager` against our server: an unchanged qm-qua analysis script runs.

`qmm = QuantumMachinesManager(host, port)`, `job = qmm.get_job(id)`, `res = job.result_handles`,
`res.wait_for_all_values()`, `res.fetch_results()`: against the embedded server and `qm-xarray
serve` in a subprocess, with and without a token, equal to what our own client reads.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("qm", reason="the reference client qm-qua is not installed")
pytestmark = pytest.mark.compat

import qm.user_config  # noqa: E402
from qm import QuantumMachinesManager  # noqa: E402
from qm.exceptions import JobNotFoundException, QmServerDetectionError  # noqa: E402

import qm_xarray as qx  # noqa: E402
from qm_xarray.testing import make_job  # noqa: E402

TOKEN = "reader-T"


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setattr(qm.user_config, "CONFIG_PATH", str(tmp_path / "qm-config.json"))


def _manager(port: int, token: str | None = None) -> QuantumMachinesManager:
    headers = {"authorization": f"Bearer {token}"} if token else None
    return QuantumMachinesManager(host="127.0.0.1", port=port, timeout=10, connection_headers=headers)


def same(ours: Any, theirs: Any) -> None:
    if theirs is None:
        assert ours is None
        return
    a, b = np.asarray(ours), np.asarray(theirs)
    assert (a.dtype, a.shape, a.tobytes()) == (b.dtype, b.shape, b.tobytes())


def _the_script(port: int, job_id: str, token: str | None) -> dict[str, Any]:
    """What a qm-qua user runs, unchanged."""
    qmm = _manager(port, token)
    try:
        job = qmm.get_job(job_id)
        res = job.result_handles
        assert res.wait_for_all_values(10)
        return dict(res.fetch_results())
    finally:
        qmm.close()


@pytest.fixture
def embedded(request: pytest.FixtureRequest) -> Iterator[tuple[qx.ResultsServer, str | None]]:
    token = getattr(request, "param", None)
    with qx.serve(token=token) as server:
        yield server, token


@pytest.mark.parametrize("embedded", [None, TOKEN], ids=["no-token", "token"], indirect=True)
@pytest.mark.parametrize("state", ["done", "closed", "dataloss"])
def test_an_unchanged_qm_qua_script_runs_against_the_embedded_server(embedded, state):
    server, token = embedded
    job, _ = make_job(server.store, 9, job_id=f"j-{state}", state=state if state != "dataloss" else "done")
    ours = qx.connect(server.address, token=token).job(job.id).result_handles.fetch_results()
    qmm = _manager(server.port, token)
    try:
        res = qmm.get_job(job.id).result_handles
        if state == "done":
            assert res.wait_for_all_values(10)
        theirs = res.fetch_results()
    finally:
        qmm.close()
    assert list(ours) == list(theirs)
    for name in theirs:
        same(ours[name], theirs[name])


def test_job_status_and_a_wait_that_ends_when_the_job_does(embedded):
    server, _ = embedded
    writer = server.store.create_job(job_id="growing")
    stream = writer.add_stream("I", expected_count=4)
    qmm = _manager(server.port)
    try:
        job = qmm.get_job("growing")
        assert job.get_status() == "Running" and job.status == "running"
        res = job.result_handles
        done: list[bool] = []
        waiter = threading.Thread(target=lambda: done.append(res.wait_for_all_values(20)))
        waiter.start()
        stream.append(np.arange(4.0))
        writer.finish()
        waiter.join(30)
        assert done == [True]
        assert job.get_status() == "Done"
        np.testing.assert_array_equal(res.get("I").fetch_all(flat_struct=True), np.arange(4.0))
        assert qmm.list_open_qms() == [] and "qm-xarray" in qmm.version().gateway
        with pytest.raises(JobNotFoundException):
            qmm.get_job("no-such-job")
    finally:
        qmm.close()


def test_a_wrong_token_is_refused(caplog):
    """The token is checked on GetInfo too: qm-qua's detection fails, having been told why."""
    with qx.serve(token=TOKEN) as server:
        with pytest.raises(QmServerDetectionError):
            _manager(server.port, "wrong")
        assert "wrong token for GetInfo" in caplog.text
        assert _manager(server.port, TOKEN).get_job  # the right one passes


def test_get_info_says_what_we_are(embedded):
    server, _ = embedded
    info = qx.connect(server.address).server
    assert info.implementation == "qm-xarray" and info.qop == 3 and info.version == qx.__version__


@pytest.mark.parametrize("token", [None, TOKEN], ids=["no-token", "token"])
def test_an_unchanged_qm_qua_script_runs_against_qm_xarray_serve(tmp_path, token):
    command = [sys.executable, "-m", "qm_xarray", "serve", "--port", "0", *(["--token", token] if token else [])]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        match = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)\n", line)
        assert match, (line, proc.stderr.read() if proc.stderr else "")
        port = int(match[1])
        store = qx.RemoteStore(f"127.0.0.1:{port}", token=token)
        writer = store.create_job(job_id="remote-1")
        writer.add_stream("I", expected_count=5).append(np.arange(5.0))
        writer.add_stream("avg", single=True).append(np.array([2.5]))
        writer.finish()
        theirs = _the_script(port, "remote-1", token)
        ours = qx.connect(f"127.0.0.1:{port}", token=token).job("remote-1").result_handles.fetch_results()
        assert list(ours) == list(theirs)
        for name in theirs:
            same(ours[name], theirs[name])
    finally:
        proc.terminate()
        proc.wait(20)
