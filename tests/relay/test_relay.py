"""`qx.Relay`: many captures of one upstream — named jobs, every new job (`follow_new`), copies
resumed from the store, interrupted copies tried again (in-process QOP stand-ins)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import xarray as xr

import qm_xarray as qx
from qm_xarray.testing import StreamKind

pytest.importorskip("qm", reason="the QOP stand-ins are built from qm-qua's servicers")
from qm_xarray.testing.qop import StandInQop  # noqa: E402

KIND = StreamKind("<f8")
WAIT = 30.0


def _until(what: str, check: Callable[[], bool]) -> None:
    end = time.monotonic() + WAIT
    while time.monotonic() < end:
        if check():
            return
        threading.Event().wait(0.02)
    raise AssertionError(f"{what} did not happen within {WAIT} s")


def _status(relay: qx.Relay, job_id: str) -> str | None:
    result = relay.results().get(job_id)
    return None if result is None else result.status


def test_follow_new_captures_running_and_later_jobs_but_not_those_ended_before() -> None:
    with StandInQop(3, require_gateway_headers=False) as qop:
        qop.add_job("old", {"I": (KIND, np.arange(3.0))}, state="done")
        qop.add_job("live", {"I": (KIND, np.arange(5.0))})
        store = qx.ResultStore()
        with qx.Relay(qx.connect(qop.address), store, follow_new=True, poll=0.05) as relay:
            _until("the running job's capture", lambda: "live" in relay.results())
            qop.add_job("new", {"I": (KIND, np.arange(7.0))})
            _until("the new job's capture", lambda: "new" in relay.results())
            qop.set_state("live", "done")
            qop.set_state("new", "canceled")
            _until("both complete", lambda: _status(relay, "live") == _status(relay, "new") == "complete")
            assert "old" not in relay.results()
        assert {j.id: j.state.value for j in store.jobs()} == {"live": "done", "new": "closed"}
        assert store.job("new").stream("I").read_array().tolist() == list(np.arange(7.0))


def test_a_relay_resumes_the_stores_unfinished_copies_of_its_upstream() -> None:
    with StandInQop(3, require_gateway_headers=False) as qop:
        qop.add_job("r1", {"I": (KIND, np.arange(50.0))}, state="done")
        store = qx.ResultStore()
        writer = store.create_job("r1", streams=[qx.StreamSpec.create("I", "<f8")],
                                  origin=qx.Origin(qop.address, "r1"))
        writer.stream("I").append(np.arange(20.0))  # what a killed relay had copied
        store.create_job("elsewhere", origin=qx.Origin("10.9.9.9:80", "elsewhere"))  # another upstream's
        told: list[tuple[str, str]] = []
        with qx.Relay(qx.connect(qop.address), store, on_change=lambda *said: told.append(said)) as relay:
            _until("the copy resumed", lambda: _status(relay, "r1") == "complete")
            assert "elsewhere" not in relay.results()
        [(_, why)] = [t for t in told if t[0] == "elsewhere"]
        assert why.startswith("not resumed") and "--upstream 10.9.9.9:80" in why
        assert store.job("r1").stream("I").read_array().tolist() == list(np.arange(50.0))


def test_an_interrupted_copy_is_tried_again_and_completes_when_the_upstream_is_back() -> None:
    qop = StandInQop(3, require_gateway_headers=False).start()
    port = qop.port
    qop.add_job("j", {"I": (KIND, np.arange(10.0))})
    store = qx.ResultStore()
    relay = qx.Relay(qx.connect(qop.address), store, jobs=["j"], poll=0.05, deadline=0.5, retry=0.2,
                     max_interval=0.1, call_timeout=3.0).start()
    try:
        _until("the first items", lambda: "j" in [job.id for job in store.jobs()]
               and store.job("j").stream("I").count == 10)
        qop.stop()
        _until("the copy interrupted", lambda: store.job("j").origin is not None
               and store.job("j").origin.interrupted)  # type: ignore[union-attr]
        back = StandInQop(3, require_gateway_headers=False, port=port).start()  # a QOP that kept it
        try:
            back.add_job("j", {"I": (KIND, np.arange(30.0))}, state="done")
            _until("the copy complete", lambda: store.job("j").state.value == "done")
        finally:
            back.stop()
    finally:
        relay.stop()
    assert store.job("j").origin.status == "complete"  # type: ignore[union-attr]
    assert store.job("j").stream("I").read_array().tolist() == list(np.arange(30.0))


def test_a_copy_of_a_qop_job_keeps_the_metadata_the_qop_cannot() -> None:
    with StandInQop(3, require_gateway_headers=False) as qop:
        qop.add_job("m", {"I": (KIND, np.arange(4.0))}, state="done")
        with pytest.raises(qx.MetadataNotKeptError, match="serve --upstream"):
            qx.describe(qx.connect(qop.address).job("m"), attrs={"sample": "A"})
        store = qx.ResultStore()
        assert qx.capture(qx.connect(qop.address).job("m"), store).status == "complete"
    with qx.serve(store) as relay:
        job = qx.connect(relay.address).job("m")
        qx.describe(job, coords={"amplitude": np.linspace(0, 1, 4)},
                    streams={"I": {"dims": ["amplitude"], "units": "V"}})
        ds = xr.open_dataset(job, engine="qm")
        assert ds.I.dims == ("amplitude",) and ds.I.attrs["units"] == "V"
