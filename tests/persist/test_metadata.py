"""Exports carry the job's metadata as CF attributes (`units`, `long_name`), its coordinates (a
growing item axis's values appended with the data) and its attributes; they reopen with them."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import xarray as xr

import qm_xarray as qx
from qm_xarray.metadata import Coordinate
from qm_xarray.persist import ExportStore, NotOurStoreError
from qm_xarray.testing import embedded_server

pytestmark = pytest.mark.filterwarnings(
    "ignore:Failed to open Zarr store with consolidated metadata:RuntimeWarning")

FREQS = np.linspace(5.0e9, 5.1e9, 3)
SHOTS = np.arange(8) * 10  # shot numbers for the whole run


@pytest.fixture
def served():
    store = qx.ResultStore()
    with embedded_server(store) as srv:
        yield store, srv


def test_export_writes_cf_attributes_and_reopens_with_them(served, tmp_path):
    store, srv = served
    w = store.create_job("j", streams=[{"name": "S", "shape": (3,), "expected_count": 8}], metadata={
        "attrs": {"experiment": "spectroscopy", "program": "with program() as prog: ..."},
        "coords": {"frequency": Coordinate.create(FREQS, "Hz", "readout frequency"),
                   "shot": ("shot", SHOTS, {"long_name": "shot number"})},
        "streams": {"S": {"dims": ("shot", "frequency"), "units": "V", "long_name": "signal"}}})
    job = qx.connect(srv.address).job("j")
    w.stream("S").append(np.ones((3, 3)))
    qx.export_zarr(job, tmp_path / "a.zarr")               # a first round: 3 shots
    w.stream("S").append(np.full((5, 3), 2.0))
    w.finish()
    job.describe(streams={"S": {"long_name": "transmitted signal"}})  # changed after the first round
    qx.export_zarr(job, tmp_path / "a.zarr")               # resumed: the rest
    z = xr.open_zarr(tmp_path / "a.zarr")
    assert z.S.dims == ("shot", "frequency")
    np.testing.assert_array_equal(z.shot, SHOTS)            # the growing coordinate, appended
    np.testing.assert_array_equal(z.frequency, FREQS)
    assert z.frequency.attrs == {"units": "Hz", "long_name": "readout frequency"}
    assert z.shot.attrs == {"long_name": "shot number"}
    assert z.S.attrs["units"] == "V" and z.S.attrs["long_name"] == "transmitted signal"
    assert z.attrs["experiment"] == "spectroscopy" and z.attrs["program"].startswith("with program()")
    live = xr.open_dataset(job, engine="qm").load()
    xr.testing.assert_equal(z.S.compute(), live.S)          # values, dims and coordinates


def test_a_description_that_renames_axes_mid_export_is_refused_not_mixed(served, tmp_path):
    store, srv = served
    w = store.create_job("k", streams=[{"name": "I", "expected_count": 8}])
    w.stream("I").append(np.ones(3))
    job = qx.connect(srv.address).job("k")
    qx.export_zarr(job, tmp_path / "k.zarr")
    w.describe(streams={"I": {"dims": ("shot",)}})
    w.stream("I").append(np.ones(3))
    with pytest.raises(NotOurStoreError, match="description changed"):
        qx.export_zarr(job, tmp_path / "k.zarr")
    np.testing.assert_array_equal(xr.open_zarr(tmp_path / "k.zarr").I, np.ones(3))  # kept as it was


def test_a_follow_export_stops_when_a_description_renames_its_axes(served, tmp_path):
    store, srv = served
    w = store.create_job("f", streams=[{"name": "I", "expected_count": 8}])
    w.stream("I").append(np.ones(3))
    job = qx.connect(srv.address).job("f")
    out = tmp_path / "f.zarr"
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(qx.export_zarr, job, out, follow=True, every=0.02, timeout=60)
        for _ in range(1000):  # until the first round has committed (bounded)
            if out.exists() and ExportStore(out).committed() == {"I_item": 3}:
                break
            time.sleep(0.02)
        w.describe(streams={"I": {"dims": ("shot",)}})
        with pytest.raises(NotOurStoreError, match="description changed"):
            running.result(timeout=60)
    np.testing.assert_array_equal(xr.open_zarr(out).I, np.ones(3))  # what was written stays whole
