"""Our client against stand-in QOPs built only from qm-qua's generated servicers (not our server).

QOP 3 (GetInfo with `__qop3`, QmmService, v2 JobService, no v1) and QOP 2 (GetInfo without it,
Frontend, v1): both require the token and the gateway headers on every call. Our client must read
every stream kind byte-identical to what qm-qua reads from the same server, through v2 on QOP 3
and v1 on QOP 2; the job objects a qm-qua user holds open with the engine, pickle and compute on
worker processes.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator
from typing import Any

import cloudpickle
import numpy as np
import pytest
import xarray as xr

pytest.importorskip("qm", reason="the reference client qm-qua is not installed")
pytestmark = pytest.mark.compat

import qm.user_config  # noqa: E402
from qm import QmJob, QuantumMachinesManager  # noqa: E402

import qm_xarray as qx  # noqa: E402
from qm_xarray.testing import STREAM_KINDS, StandInQop, make_items  # noqa: E402

JOB = "qop-job-1"
TOKEN = "qop-secret"
N = 7
V1 = "/qm.grpc.results_analyser.JobResultsService/"
V2 = "/qm.grpc.v2.JobService/"


def streams(n: int = N) -> dict[str, tuple[Any, np.ndarray]]:
    out = {}
    for i, (name, kind) in enumerate(STREAM_KINDS.items()):
        count = 0 if name == "empty" else n
        out[name] = (kind, make_items(kind, count, seed=i))
    return out


@pytest.fixture(scope="module", params=[3, 2], ids=["qop3", "qop2"])
def qop(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandInQop]:
    with pytest.MonkeyPatch.context() as mp:  # qm-qua finds no user config (no token, no host)
        mp.setattr(qm.user_config, "CONFIG_PATH", str(tmp_path_factory.mktemp("qm") / "config.json"))
        with StandInQop(qop=request.param, token=TOKEN) as server:
            server.add_job(JOB, streams(), state="done")
            yield server


@pytest.fixture(scope="module")
def qmm(qop: StandInQop) -> Iterator[QuantumMachinesManager]:
    manager = QuantumMachinesManager(host="127.0.0.1", port=qop.port, timeout=10,
                                     connection_headers={"authorization": f"Bearer {TOKEN}"})
    yield manager
    manager.close()


def reference(qmm: QuantumMachinesManager, qop: StandInQop) -> Any:
    """qm-qua's StreamsManager for JOB, as its users get it on each QOP."""
    if "__qop3" in qop.capabilities:
        return qmm.get_job(JOB).result_handles
    return qmm.get_job_result_handles(JOB)


def same(ours: Any, theirs: Any) -> None:
    """Byte-identical results: same type, dtype, shape and bytes (None stays None)."""
    if theirs is None:
        assert ours is None
        return
    a, b = np.asarray(ours), np.asarray(theirs)
    assert (a.dtype, a.shape) == (b.dtype, b.shape)
    assert a.tobytes() == b.tobytes()


def test_first_contact_detects_the_qop(qop: StandInQop) -> None:
    conn = qx.connect(qop.address, token=TOKEN)
    assert conn.server.qop == (3 if "__qop3" in qop.capabilities else 2)
    assert conn.server.implementation == "stand-in QOP" and not conn.server.is_qm_xarray
    assert conn.server.version == qop.version
    service = conn.service(JOB)
    assert isinstance(service, qx.JobResultApi if conn.server.qop == 3 else qx.JobResultServiceApi)


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "nested"])
def test_every_stream_kind_reads_like_qm_qua(qop: StandInQop, qmm: QuantumMachinesManager,
                                             flat: bool) -> None:
    theirs = reference(qmm, qop)
    qop.calls.clear()
    ours = qx.connect(qop.address, token=TOKEN).job(JOB).result_handles
    assert sorted(ours.keys()) == sorted(theirs.keys())
    for name in STREAM_KINDS:
        same(ours.get(name).fetch_all(flat_struct=flat), theirs.get(name).fetch_all(flat_struct=flat))
        same(ours.get(name).fetch(slice(1, 4), flat_struct=flat),
             theirs.get(name).fetch(slice(1, 4), flat_struct=flat))
    paths = [path for path, _ in qop.calls if path != "/"]
    wanted, other = (V2, V1) if "__qop3" in qop.capabilities else (V1, V2)
    assert any(p.startswith(wanted) for p in paths) and not any(p.startswith(other) for p in paths)


def test_fetch_results_equals_qm_qua(qop: StandInQop, qmm: QuantumMachinesManager) -> None:
    ours = qx.connect(qop.address, token=TOKEN).job(JOB).result_handles.fetch_results()
    theirs = reference(qmm, qop).fetch_results()
    assert list(ours) == list(theirs)
    for name in theirs:
        same(ours[name], theirs[name])


def test_every_call_carries_the_gateway_headers_and_token(qop: StandInQop) -> None:
    qop.calls.clear()
    qx.connect(qop.address, token=TOKEN, headers={"x-lab": "a"}).job(JOB).result_handles.get("I").fetch_all()
    assert qop.calls
    for path, metadata in qop.calls:
        assert metadata["x-grpc-service"] == "gateway", path
        assert (metadata["cluster_name"], metadata["any_cluster"]) == ("any", "true"), path
        assert metadata["authorization"] == f"Bearer {TOKEN}", path
        assert metadata["x-lab"] == "a", path


def test_a_missing_token_is_refused_at_first_contact(qop: StandInQop, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Any) -> None:
    monkeypatch.delenv("QM_XARRAY_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(qx.AuthenticationError, match="refused the call"):
        qx.connect(qop.address)


def test_a_cluster_name_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    with StandInQop(qop=3, cluster_name="lab-a") as server:
        server.add_job(JOB, {"I": (STREAM_KINDS["I"], make_items(STREAM_KINDS["I"], 3))}, state="done")
        conn = qx.connect(server.address, cluster_name="lab-a")
        np.testing.assert_array_equal(conn.job(JOB).result_handles.get("I").fetch_all(flat_struct=True),
                                      make_items(STREAM_KINDS["I"], 3))
        assert all(m["cluster_name"] == "lab-a" and "any_cluster" not in m for _, m in server.calls)
        with pytest.raises(qx.QMConnectionError, match="no cluster named"):
            qx.connect(server.address, cluster_name="lab-b")


# -- the job objects of qm-qua, read by our client ---------------------------------------------------


def held_objects(qmm: QuantumMachinesManager, qop: StandInQop) -> dict[str, Any]:
    """What a qm-qua user holds for JOB on this QOP: the job (QOP 3), its result handles, a fetcher."""
    res = reference(qmm, qop)
    held = {"result_handles": res, "fetcher": res.get("I")}
    if "__qop3" in qop.capabilities:
        held["job"] = qmm.get_job(JOB)
    else:  # what `qm.get_job(id)` of a QOP 2 QuantumMachine builds
        held["job"] = QmJob(JOB, "qm-1", qmm._frontend, qmm.capabilities)
    return held


def test_guess_can_open_recognises_qm_qua_objects_without_io(qop: StandInQop,
                                                             qmm: QuantumMachinesManager) -> None:
    held = held_objects(qmm, qop)
    qop.calls.clear()
    engine = xr.backends.list_engines()["qm"]
    assert all(engine.guess_can_open(obj) for obj in held.values())
    assert not engine.guess_can_open(qmm)  # a manager holds no job
    assert qop.calls == []


def test_open_dataset_of_what_qm_qua_users_hold(qop: StandInQop, qmm: QuantumMachinesManager) -> None:
    theirs = reference(qmm, qop)
    for what, obj in held_objects(qmm, qop).items():
        ds = xr.open_dataset(obj, engine="qm", chunks={})
        names = ["I"] if what == "fetcher" else [n for n in STREAM_KINDS if not STREAM_KINDS[n].single]
        assert sorted(ds.data_vars) == sorted(names + ([] if what == "fetcher" else ["avg", "ab", "t1"]))
        for name in names:
            expected = theirs.get(name).fetch_all(flat_struct=True)
            if STREAM_KINDS[name].timestamps:
                np.testing.assert_array_equal(ds[f"{name}_timestamp"].values, expected["timestamp"])
                expected = expected["value"]
            np.testing.assert_array_equal(ds[name].values, expected, err_msg=f"{what}: {name}")
        again = xr.open_dataset(obj, engine="qm", chunks={})
        assert ds.I.data.name == again.I.data.name  # deterministic dask names (a finished job)
        back = pickle.loads(pickle.dumps(ds))
        np.testing.assert_array_equal(back.I.values, ds.I.values)
        graph = cloudpickle.dumps(dict(ds.I.data.__dask_graph__()))
        assert b"qm.api" not in graph and b"qm._stream" not in graph  # workers need no qm-qua


def test_to_dask_of_a_qm_qua_fetcher(qop: StandInQop, qmm: QuantumMachinesManager) -> None:
    fetcher = reference(qmm, qop).get("c")
    arr = qx.to_dask(fetcher)
    np.testing.assert_array_equal(arr.compute(), fetcher.fetch_all(flat_struct=True))
    assert arr.name == qx.to_dask(fetcher).name


def test_connect_takes_a_quantum_machines_manager(qop: StandInQop, qmm: QuantumMachinesManager) -> None:
    qop.calls.clear()
    conn = qx.connect(qmm)
    assert qop.calls == []  # its connection and capabilities are reused: nothing sent
    assert conn.details.token == TOKEN and conn.server.qop == (3 if "__qop3" in qop.capabilities else 2)
    same(conn.job(JOB).result_handles.get("img").fetch_all(flat_struct=True),
         reference(qmm, qop).get("img").fetch_all(flat_struct=True))


def test_info_of_a_job_on_a_qop(qop: StandInQop) -> None:
    summary = qx.connect(qop.address, token=TOKEN).job(JOB).summary()
    assert summary.state == "done" and not summary.has_dataloss
    counts = {s.name: s.count for s in summary.streams}
    assert counts == {name: 0 if name == "empty" else (1 if kind.single else N)
                      for name, kind in STREAM_KINDS.items()}
    adc = next(s for s in summary.streams if s.name == "adc")
    assert (adc.dtype, adc.shape, adc.timestamps) == ("<i8", (4,), True)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        with distributed.Client(cluster, set_as_default=False) as c:
            c.wait_for_workers(2, timeout=60)
            yield c


def test_a_qm_qua_job_computes_on_worker_processes(client: Any) -> None:
    """QOP 3: `xr.open_dataset(qmm.get_job(id))` computes on a LocalCluster(processes=True)."""
    with StandInQop(qop=3, token=TOKEN) as server:
        kind = STREAM_KINDS["I"]
        items = make_items(kind, 5000)
        server.add_job(JOB, {"I": (kind, items)}, state="done")
        qmm = QuantumMachinesManager(host="127.0.0.1", port=server.port, timeout=10,
                                     connection_headers={"authorization": f"Bearer {TOKEN}"})
        try:
            for obj in (qmm.get_job(JOB), qmm.get_job(JOB).result_handles):
                ds = xr.open_dataset(obj, engine="qm", chunks={}, chunk_bytes=8000)
                total = client.compute(ds.I.sum().data).result(timeout=60)
                assert float(total) == pytest.approx(float(items.sum()))
        finally:
            qmm.close()


# -- growing jobs: watch, refresh, export -------------------------------------------------------------


@pytest.fixture
def growing() -> Iterator[tuple[StandInQop, QuantumMachinesManager, np.ndarray]]:
    kind = STREAM_KINDS["I"]
    items = make_items(kind, 40, seed=9)
    with StandInQop(qop=3) as server:
        server.add_job("grow", {"I": (kind, items[:10])}, state="running")
        qmm = QuantumMachinesManager(host="127.0.0.1", port=server.port, timeout=10)
        try:
            yield server, qmm, items
        finally:
            qmm.close()


def test_refresh_of_a_dataset_opened_from_a_qm_qua_job(growing) -> None:
    server, qmm, items = growing
    ds = xr.open_dataset(qmm.get_job("grow"), engine="qm", chunks={})
    server.append("grow", "I", items[10:25])
    later = qx.refresh(ds, wait=25, timeout=10)
    assert ds.I.shape == (10,) and later.I.shape == (25,) and ds.I.data.name != later.I.data.name
    np.testing.assert_array_equal(later.I.values, items[:25])


def test_watch_and_export_a_qm_qua_job_while_it_runs(growing, tmp_path: Any) -> None:
    server, qmm, items = growing
    job = qmm.get_job("grow")
    frames = []
    for ds in qx.watch(job, every=0.05, timeout=30):
        frames.append(ds.I.size)
        if ds.I.size == 10:
            server.append("grow", "I", items[10:])
            server.set_state("grow", "done")
    assert frames[0] == 10 and frames[-1] == 40
    np.testing.assert_array_equal(ds.I.values, items)
    result = qx.export_zarr(job, tmp_path / "grow.zarr", progress=False)
    np.testing.assert_array_equal(xr.open_zarr(result.path).I.values, items)


def test_jobs_are_listed_by_a_qop_3_and_not_by_a_qop_2(qop: StandInQop) -> None:
    conn = qx.connect(qop.address, token=TOKEN)
    if "__qop3" in qop.capabilities:
        assert [(j.job_id, j.state, j.streams) for j in conn.jobs()] == [(JOB, "done", ())]
    else:
        with pytest.raises(TypeError, match="QOP 2.*cannot list its jobs"):
            conn.jobs()
