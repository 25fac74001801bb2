"""Stored metadata applied by every view: engine "qm" (a Job, our StreamsManager in every mode),
refresh and watch; explicit dims=/coords= win with the same checks; a QOP without our service."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import qm_xarray as qx
from qm_xarray.errors import QmValueError
from qm_xarray.metadata import Coordinate
from qm_xarray.testing import REFERENCE_MODES, STREAM_KINDS, make_items

AMPS = np.linspace(0.0, 1.99, 4)
STREAMS = [{"name": "I", "shape": (4,), "single": True},
           {"name": "I_all", "shape": (4,), "expected_count": 6},
           {"name": "Q_all", "shape": (4,), "expected_count": 6},
           {"name": "shots"}]
RABI = {"attrs": {"experiment": "rabi", "n_avg": 6},
        "coords": {"amplitude": Coordinate.create(AMPS, units="V", long_name="drive amplitude"),
                   "iteration": ("iteration", np.arange(6), {"long_name": "averaging iteration"})},
        "streams": {"I": {"dims": "amplitude", "units": "V", "long_name": "I quadrature"},
                    "I_all": {"dims": ("iteration", "amplitude"), "units": "V", "long_name": "I per iteration"},
                    "Q_all": {"dims": ("iteration", "amplitude"), "units": "V"}}}


@pytest.fixture
def rabi(recorded, request):
    """A running Rabi-like job: I_all has 3 iterations, Q_all 2 (the producer is between them)."""
    job_id = request.node.name.replace("[", "-").replace("]", "")[:100]
    writer = recorded.store.create_job(job_id, streams=STREAMS, metadata=RABI)
    writer.stream("I").append(np.arange(4.0))
    writer.stream("I_all").append(np.ones((3, 4)))
    writer.stream("Q_all").append(np.ones((2, 4)))
    return writer


def check_rabi(ds: xr.Dataset, iterations: int = 2) -> None:
    assert ds.I.dims == ("amplitude",) and ds.I_all.dims == ("iteration", "amplitude")
    assert ds.sizes == {"amplitude": 4, "iteration": iterations, "shots_item": 0}  # cut to the common count
    np.testing.assert_array_equal(ds.amplitude, AMPS)
    assert ds.amplitude.attrs == {"units": "V", "long_name": "drive amplitude"}
    np.testing.assert_array_equal(ds.iteration, np.arange(iterations))
    assert ds.iteration.attrs == {"long_name": "averaging iteration"}
    assert ds.I.attrs["units"] == "V" and ds.I.attrs["long_name"] == "I quadrature"
    assert ds.I_all.attrs["long_name"] == "I per iteration" and ds.Q_all.attrs["units"] == "V"
    assert ds.shots.dims == ("shots_item",) and "units" not in ds.shots.attrs  # undescribed: defaults
    assert ds.attrs["experiment"] == "rabi" and ds.attrs["n_avg"] == 6


@pytest.mark.parametrize("how", ["job", *(m for m in REFERENCE_MODES if m != "v2-legacy")])  # a chunking server
def test_the_engine_applies_stored_metadata(recorded, rabi, how):
    ds = xr.open_dataset(recorded.opener(how, rabi.id), engine="qm")
    check_rabi(ds)
    np.testing.assert_array_equal(ds.I.values, np.arange(4.0))
    assert "long_name" not in ds.Q_all.attrs


def test_explicit_options_win_with_the_same_checks(recorded, rabi):
    job = recorded.job(rabi.id)
    ds = xr.open_dataset(job, engine="qm", dims={"I": ("amp",)},
                         coords={"amplitude": ("amplitude", AMPS * 1000, {"units": "mV"}),
                                 "amp": ("amp", AMPS)})
    assert ds.I.dims == ("amp",) and ds.I_all.dims == ("iteration", "amplitude")
    np.testing.assert_array_equal(ds.amplitude, AMPS * 1000)
    assert ds.amplitude.attrs == {"units": "mV"}
    with pytest.raises(QmValueError, match="got 3 names"):
        xr.open_dataset(job, engine="qm", dims={"I": ("a", "b", "c")})
    with pytest.raises(QmValueError, match="has 5 values"):
        xr.open_dataset(job, engine="qm", coords={"amplitude": np.arange(5.0)})


def test_stored_coordinates_of_a_renamed_axis_are_left_out(recorded, rabi):
    ds = xr.open_dataset(recorded.job(rabi.id), engine="qm",
                         dims={n: ("it", "a") for n in ("I_all", "Q_all")} | {"I": ("a",)})
    assert "amplitude" not in ds.coords and "iteration" not in ds.coords
    assert ds.sizes == {"a": 4, "it": 2, "shots_item": 0}


def test_refresh_and_watch_apply_it_and_follow_changes(recorded, rabi):
    job = recorded.job(rabi.id)
    ds = xr.open_dataset(job, engine="qm")
    rabi.stream("Q_all").append(np.ones((1, 4)))
    rabi.describe(attrs={"user": "ada"}, streams={"Q_all": {"long_name": "Q per iteration"}})
    again = qx.refresh(ds)
    check_rabi(again, iterations=3)
    assert again.attrs["user"] == "ada" and again.Q_all.attrs["long_name"] == "Q per iteration"
    rabi.finish()
    frames = list(qx.watch(job, every=0.01, timeout=30))
    check_rabi(frames[-1], iterations=3)


def test_a_qop_without_our_service_opens_and_keeps_nothing():
    qop_module = pytest.importorskip("qm_xarray.testing.qop")
    kind = STREAM_KINDS["c"]
    with qop_module.StandInQop(qop=3, require_gateway_headers=False) as qop:
        qop.add_job("j", {"I": (kind, make_items(kind, 3))}, state="done")
        job = qx.connect(qop.address).job("j")
        ds = xr.open_dataset(job, engine="qm")
        assert ds.I.dims[0] == "I_item" and "units" not in ds.I.attrs
        assert job.metadata() == qx.JobMetadata()
        with pytest.raises(qx.MetadataNotKeptError, match="dims= and coords="):
            qx.describe(job, attrs={"user": "ada"})
        assert not [m for m, _ in qop.calls if "qm_xarray" in m]  # never asked for what it lacks


def test_snapshots_of_a_streams_manager_ask_what_the_server_is_once(recorded, rabi):
    """The metadata of a StreamsManager's job needs to know the server is ours: asked once."""
    manager = recorded.opener("v2", rabi.id)
    recorded.clear()
    for _ in range(3):
        check_rabi(xr.open_dataset(manager, engine="qm"))
    assert recorded.methods().count("GetInfo") <= 1
    assert recorded.methods().count("GetMetadata") == 3


def test_a_stored_coordinate_shorter_than_its_grown_axis_is_left_out_with_a_warning(recorded):
    writer = recorded.store.create_job("overrun", streams=[{"name": "I", "expected_count": 3}],
                                       metadata={"coords": {"shot": np.arange(3)},
                                                 "streams": {"I": {"dims": "shot"}}})
    writer.stream("I").append(np.ones(5))  # more items than the producer announced
    with pytest.warns(RuntimeWarning, match="'shot' has 3 values but 'shot' has 5; left out"):
        ds = xr.open_dataset(recorded.job("overrun"), engine="qm")
    assert ds.I.dims == ("shot",) and "shot" not in ds.coords


def test_a_server_without_get_metadata_answers_none():
    """An older qm-xarray server (or any server without the call) has no metadata: not an error."""
    qop_module = pytest.importorskip("qm_xarray.testing.qop")
    from qm_xarray.client import ConnectionDetails, JobsClient

    with qop_module.StandInQop(qop=3, require_gateway_headers=False) as qop:
        assert JobsClient(ConnectionDetails.from_address(qop.address)).get_metadata("j") == qx.JobMetadata()


def test_watch_asks_for_metadata_only_when_it_yields(recorded):
    """Rounds that find no new items cost no metadata call (a description can be large)."""
    import threading
    import time

    writer = recorded.store.create_job("idle", streams=[{"name": "I"}], metadata={"attrs": {"a": 1}})
    writer.stream("I").append(np.ones(2))
    frames = qx.watch(recorded.job("idle"), every=0.01, timeout=60)
    recorded.clear()
    assert next(frames).attrs["a"] == 1

    def append_after_idle_rounds() -> None:
        for _ in range(3000):  # bounded: until watch has polled a few times without news
            if recorded.methods().count("GetJobResultState") >= 4:
                break
            time.sleep(0.01)
        writer.stream("I").append(np.ones(3))

    thread = threading.Thread(target=append_after_idle_rounds)
    thread.start()
    assert next(frames).sizes["I_item"] == 5
    thread.join(30)
    assert recorded.methods().count("GetJobResultState") >= 5
    assert recorded.methods().count("GetMetadata") == 2  # one per dataset yielded
    frames.close()
