"""The stand-in QOP in a child process (`qm_xarray.testing.qop_process`).

Real processes on 127.0.0.1, read by qm-qua's own client and by ours: what `grow` appends is what
`known_items` says, state changes are seen, a SIGKILLed stand-in comes back on the same port having
forgotten its jobs, and `calls()` counts the RPCs clients make. Every wait is bounded; no
assertion depends on how fast the machine is.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = [pytest.mark.compat,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux: PR_SET_PDEATHSIG")]
pytest.importorskip("qm", reason="the stand-in QOP and the reference client need qm-qua")

import qm.user_config
from qm import QuantumMachinesManager

import qm_xarray as qx
from qm_xarray.errors import JobNotFoundError
from qm_xarray.testing.jobs import StreamKind
from qm_xarray.testing.qop_process import QopProcess, known_items

TOKEN = "stand-in-secret"
CLUSTER = "lab-a"
WAIT = 10.0  # every client deadline in this module
KINDS = {
    "I": StreamKind("<f8"),                     # save_all
    "ts": StreamKind("<f8", timestamps=True),   # with_timestamps().save_all
    "avg": StreamKind("<f8", single=True),      # average().save
}


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No token or host from ~/.qm/config.json or the environment: only what each test passes."""
    monkeypatch.setattr(qm.user_config, "CONFIG_PATH", str(tmp_path / "qm-config.json"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("QM_XARRAY_TOKEN", raising=False)


@pytest.fixture(scope="module")
def qop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QopProcess]:
    """One stand-in QOP 3 child for the module, with a token and a cluster name (each test its own
    job ids)."""
    with QopProcess(3, token=TOKEN, cluster_name=CLUSTER, log_dir=tmp_path_factory.mktemp("qop")) as proc:
        yield proc


@pytest.fixture
def qmm(qop: QopProcess) -> Iterator[QuantumMachinesManager]:
    """qm-qua's manager for the stand-in, connected as its users would."""
    manager = QuantumMachinesManager(host="127.0.0.1", port=qop.port, cluster_name=CLUSTER, timeout=WAIT,
                                     log_level="ERROR", async_trust_env=False,
                                     connection_headers={"authorization": f"Bearer {TOKEN}"})
    yield manager
    manager.close()


def ours(qop: QopProcess) -> qx.Connection:
    return qx.connect(qop.address, cluster_name=CLUSTER, token=TOKEN, timeout=WAIT)


def held(name: str, grown: int) -> np.ndarray:
    """What the server holds of stream `name` once `grown` items were grown."""
    kind = KINDS[name]
    if kind.single:
        return known_items(kind, grown - 1, grown, name)[0]
    return known_items(kind, 0, grown, name)


def assert_same(got: Any, expected: np.ndarray) -> None:
    """`got` (a client's `fetch_all(flat_struct=True)`) is exactly `expected`: dtype, shape, values."""
    got = np.asarray(got)
    expected = np.asarray(expected)
    assert got.dtype == expected.dtype and got.shape == expected.shape, (got.dtype, got.shape,
                                                                        expected.dtype, expected.shape)
    assert got.tobytes() == expected.tobytes()


def test_both_clients_read_what_grow_appended(qop: QopProcess, qmm: QuantumMachinesManager) -> None:
    qop.add_job("read", KINDS)
    grown = {name: qop.grow("read", name, n) for name, n in (("I", 5), ("ts", 4), ("avg", 3))}
    assert grown == {"I": 5, "ts": 4, "avg": 3}
    assert (qop.count("read", "I"), qop.count("read", "avg"), qop.produced("read", "avg")) == (5, 1, 3)

    theirs = qmm.get_job("read").result_handles
    mine = ours(qop).job("read").result_handles
    for handles in (theirs, mine):
        for name, n in grown.items():
            assert_same(handles.get(name).fetch_all(flat_struct=True), held(name, n))

    # the job grows while both hold it: each sees the new items
    assert qop.grow("read", "I", 7) == 12 and qop.grow("read", "avg", 2) == 5
    for handles in (theirs, mine):
        assert_same(handles.get("I").fetch_all(flat_struct=True), held("I", 12))
        assert_same(handles.get("avg").fetch_all(flat_struct=True), held("avg", 5))
    assert ours(qop).job("read").result_handles.get("I").count_so_far() == 12


def test_the_options_reach_the_child(qop: QopProcess) -> None:
    with pytest.raises(qx.AuthenticationError):  # --token
        qx.connect(qop.address, cluster_name=CLUSTER, timeout=WAIT)
    with pytest.raises(qx.ClusterNotFoundError):  # --cluster-name
        qx.connect(qop.address, cluster_name="lab-b", token=TOKEN, timeout=WAIT)
    assert ours(qop).server.qop == 3  # --qop 3


def test_state_changes_dataloss_and_errors_are_seen(qop: QopProcess, qmm: QuantumMachinesManager) -> None:
    qop.add_job("states", {"I": KINDS["I"]})
    qop.grow("states", "I", 2)
    handles = ours(qop).job("states").result_handles
    assert handles.is_processing() and ours(qop).job("states").summary().state == "running"
    qop.set_state("states", "done")
    assert not handles.is_processing()
    assert ours(qop).job("states").summary().state == "done"
    assert qmm.get_job("states").get_status() == "Done"

    qop.add_job("failed", {"I": KINDS["I"]})
    qop.mark_dataloss("failed")
    qop.add_error("failed", "pulse overflow", code=7)
    qop.set_state("failed", "error")
    summary = ours(qop).job("failed").summary()
    assert summary.state == "closed" and summary.has_dataloss
    assert summary.errors == ((7, "error", "pulse overflow"),)


def test_calls_count_the_rpcs_of_a_read(qop: QopProcess) -> None:
    qop.add_job("counted", {"I": KINDS["I"]})
    qop.grow("counted", "I", 3)
    before = qop.calls()
    assert qop.calls() == before  # asking is not an RPC
    ours(qop).job("counted").result_handles.get("I").fetch_all()
    after = qop.calls()

    def data_calls(calls: dict[str, int]) -> int:
        return sum(n for method, n in calls.items() if method.startswith("GetNamedResult"))

    assert after["GetInfo"] > before.get("GetInfo", 0)  # the first contact of `qx.connect`
    assert data_calls(after) > data_calls(before)
    assert sum(after.values()) > sum(before.values())


def test_a_failed_command_names_itself_and_the_child_goes_on(qop: QopProcess) -> None:
    with pytest.raises(RuntimeError, match=r"^grow failed .*no stream 'I' in job 'no-such-job'"):
        qop.grow("no-such-job", "I", 1)
    qop.add_job("bad-state", {"I": KINDS["I"]})
    with pytest.raises(RuntimeError, match=r"^state failed .*unknown job state 'finished'"):
        qop.set_state("bad-state", "finished")
    with pytest.raises(RuntimeError, match=r"^add_job failed .*exists already"):
        qop.add_job("bad-state", {"I": KINDS["I"]})
    assert qop.grow("bad-state", "I", 2) == 2  # still answering, in step


def test_kill_then_restart_on_the_same_port_forgets_the_jobs(tmp_path: Path) -> None:
    with QopProcess(3, log_dir=tmp_path) as proc:
        proc.add_job("lost", {"I": KINDS["I"]})
        proc.grow("lost", "I", 4)
        assert_same(qx.connect(proc.address, timeout=WAIT).job("lost").result_handles.get("I")
                    .fetch_all(flat_struct=True), held("I", 4))
        port, pid = proc.port, proc.pid

        proc.kill()
        assert not proc.alive()
        with pytest.raises(qx.QMConnectionError):
            qx.connect(proc.address, timeout=WAIT, connect_timeout=2.0)
        with pytest.raises(RuntimeError, match="^count: .*not running"):
            proc.count("lost", "I")

        proc.restart()
        assert proc.alive() and proc.port == port and proc.pid != pid
        conn = qx.connect(proc.address, timeout=WAIT)
        assert conn.server.implementation == "stand-in QOP"
        with pytest.raises(JobNotFoundError):
            conn.job("lost").summary()
        assert proc.calls()["GetJobResultSchema"] >= 1  # the calls since this start only
        assert "GetNamedResult" not in proc.calls() and "GetNamedResults" not in proc.calls()

        proc.add_job("lost", {"I": KINDS["I"]})  # a new job of the same id starts from item 0
        assert proc.grow("lost", "I", 2) == 2
        assert_same(conn.job("lost").result_handles.get("I").fetch_all(flat_struct=True), held("I", 2))


def test_known_items_are_fixed_by_index_and_name() -> None:
    spec = {"dtype": "<f8", "shape": [], "single": False, "timestamps": False}
    whole = known_items(spec, 0, 6, "I")
    assert whole.dtype == np.float64 and whole.shape == (6,) and len(set(whole.tolist())) == 6
    np.testing.assert_array_equal(known_items(KINDS["I"], 2, 6, "I"), whole[2:])  # StreamKind or dict
    assert not np.intersect1d(known_items(spec, 0, 6, "Q"), whole).size  # another name, other items

    ts = known_items(KINDS["ts"], 3, 6, "ts")
    assert ts.dtype.names == ("value", "timestamp") and ts["timestamp"].tolist() == [3, 4, 5]
    np.testing.assert_array_equal(ts["value"], known_items(StreamKind("<f8"), 3, 6, "ts"))

    buffers = known_items({"dtype": "<i4", "shape": [2, 3]}, 0, 4, "c")
    assert buffers.dtype == np.int32 and buffers.shape == (4, 2, 3)
    flags = known_items({"dtype": "|b1"}, 0, 4, "flags")
    assert flags.dtype == np.bool_ and flags.tolist() in ([False, True] * 2, [True, False] * 2)
    assert known_items(spec, 5, 5, "I").shape == (0,)
