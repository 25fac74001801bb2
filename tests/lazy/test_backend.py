"""The xarray engine "qm" and `qx.to_dask`: registration, options, layout, attrs, data loss, graphs.

Layout (qm_xarray/lazy/layout.py): a variable per stream, `<stream>_item` / `<stream>_dim_<k>`
dimensions, `dims=` / `coords=` / `align=` options, timestamps as a coordinate, a variable or
dropped, `save` streams as values read at snapshot time (NaN while empty).
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import pickle
import time
import warnings
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr

import qm_xarray as qx
from qm_xarray.client.connection import _POOL
from qm_xarray.lazy.backend import QmBackendEntrypoint
from qm_xarray.testing import STREAM_KINDS, StreamKind, make_job, reference_streams_manager

MULTI = [n for n, k in STREAM_KINDS.items() if not k.single]
SINGLE = [n for n, k in STREAM_KINDS.items() if k.single]


@pytest.fixture(scope="module")
def done(recorded):
    """Every stream kind, 7 items per save_all stream (0 in "empty"), finished."""
    job, written = make_job(recorded.store, counts=7, seed=31)
    return job.id, written


def _open(recorded, job_id, **kwargs):
    return xr.open_dataset(recorded.job(job_id), engine="qm", **kwargs)


def _check_all_streams(ds, written):
    """Every stream of STREAM_KINDS in `ds` equals what the producer wrote (default layout)."""
    for name in MULTI:
        kind, items = STREAM_KINDS[name], written[name]
        if kind.timestamps:
            np.testing.assert_array_equal(ds[name].values, items["value"], err_msg=name)
            np.testing.assert_array_equal(ds[f"{name}_timestamp"].values, items["timestamp"], err_msg=name)
        else:
            np.testing.assert_array_equal(ds[name].values, items, err_msg=name)
        assert ds[name].dims[0] == f"{name}_item"
    assert ds.avg.values == written["avg"][0]
    np.testing.assert_array_equal(ds.ab.values, written["ab"][0])
    assert ds.t1.values == written["t1"]["value"][0]
    assert ds.t1_timestamp.values == written["t1"]["timestamp"][0]


# -- registration and parameters ---------------------------------------------------------------


def test_the_engine_is_registered():
    engines = xr.backends.list_engines()
    assert "qm" in engines
    assert isinstance(engines["qm"], QmBackendEntrypoint)
    assert engines["qm"].description and engines["qm"].url


def test_open_dataset_parameters_are_derived_from_the_options():
    """One definition: the options of OpenOptions, then this open's wait/timeout, then xarray's
    decoders (the signature names the last two; the options go through **options, checked)."""
    from qm_xarray.lazy.options import OPTION_NAMES, OpenOptions

    params = QmBackendEntrypoint.open_dataset_parameters
    assert isinstance(params, tuple)
    assert OPTION_NAMES == tuple(f.name for f in dataclasses.fields(OpenOptions))
    signature = inspect.signature(QmBackendEntrypoint.open_dataset)
    explicit = [p for p, v in signature.parameters.items() if p != "self" and v.kind != v.VAR_KEYWORD]
    assert list(params) == [explicit[0], *OPTION_NAMES, *explicit[1:]]
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['colour'\] of engine 'qm'"):
        xr.open_dataset("qm://127.0.0.1:1/j", engine="qm", colour="red")
    for decoder in ("mask_and_scale", "decode_times", "decode_timedelta", "use_cftime",
                    "concat_characters", "decode_coords", "drop_variables"):
        assert decoder in params


def test_guess_can_open_is_an_offline_type_check(recorded, done):
    backend = QmBackendEntrypoint()
    manager = recorded.job(done[0]).result_handles
    recorded.clear()
    # no server there: no I/O allowed (a Connection made from details contacts no one until used)
    unreachable = qx.Connection(qx.ConnectionDetails("127.0.0.1", 1)).job("nowhere")
    assert backend.guess_can_open(unreachable)
    assert backend.guess_can_open(manager)
    assert backend.guess_can_open("qm://127.0.0.1:1/job-1")
    for other in ("results.nc", "data.zarr", "/tmp/qm://x", "qmx://h:1/j", Path("x.nc"), Path("qm:"),
                  42, None, {"I": [1]}, io.BytesIO(b"CDF"), xr.Dataset(), manager["I"]):
        assert not backend.guess_can_open(other), other
    assert recorded.methods() == []


def test_guess_can_open_accepts_a_reference_streams_manager(recorded, done):
    pytest.importorskip("qm", reason="the reference client qm-qua is not installed")
    ref = reference_streams_manager("127.0.0.1", recorded.server.port, done[0], "v2")
    recorded.clear()
    assert QmBackendEntrypoint().guess_can_open(ref)
    assert recorded.methods() == []


def test_engine_none_opens_a_job_and_a_streams_manager(recorded, done):
    job_id, written = done
    _check_all_streams(xr.open_dataset(recorded.job(job_id)), written)
    _check_all_streams(xr.open_dataset(recorded.job(job_id).result_handles, chunks={}), written)


def test_the_typed_wrapper_is_the_engine(recorded, done):
    job_id, written = done
    ds = qx.open_dataset(recorded.job(job_id), chunks={}, streams=["I", "img"])
    assert set(ds.data_vars) == {"I", "img"} and ds.I.chunks is not None
    np.testing.assert_array_equal(ds.img.values, written["img"])


@pytest.mark.parametrize("engine", ["qm", QmBackendEntrypoint])
@pytest.mark.parametrize("decoders", [
    {"decode_cf": False},
    {"mask_and_scale": True, "decode_times": True, "decode_timedelta": False, "use_cftime": False,
     "concat_characters": True, "decode_coords": "all"},
    {"decode_times": False, "decode_coords": False},
])
def test_xarray_decoder_arguments_are_accepted(recorded, done, engine, decoders):
    job_id, written = done
    ds = xr.open_dataset(recorded.job(job_id), engine=engine, **decoders)
    _check_all_streams(ds, written)


@pytest.mark.parametrize("mode", ["v1", "v2", "v2-multi"])
@pytest.mark.parametrize("chunks", [None, {}])
def test_a_reference_streams_manager_opens(recorded, done, mode, chunks):
    pytest.importorskip("qm", reason="the reference client qm-qua is not installed")
    job_id, written = done
    ref = reference_streams_manager("127.0.0.1", recorded.server.port, job_id, mode)
    ds = xr.open_dataset(ref, engine="qm", chunks=chunks)
    _check_all_streams(ds, written)
    assert ds.attrs["qm_job_id"] == job_id and ds.attrs["qm_job_state"] == "done"
    assert ds.empty.shape == (0,)


def test_a_growing_reference_streams_manager_reopened_has_new_names(recorded):
    pytest.importorskip("qm", reason="the reference client qm-qua is not installed")
    job, written = make_job(recorded.store, counts=6, kinds={"I": STREAM_KINDS["I"]}, state="running", seed=3)
    ref = reference_streams_manager("127.0.0.1", recorded.server.port, job.id, "v2")
    a = xr.open_dataset(ref, engine="qm", chunks={})
    job.stream("I").append(np.arange(4.0))
    b = xr.open_dataset(ref, engine="qm", chunks={}, wait=10, timeout=10)
    job.finish()
    assert a.I.shape == (6,) and b.I.shape == (10,) and a.I.data.name != b.I.data.name
    assert float((a.I.sum() + b.I.sum()).compute()) == pytest.approx(2 * written["I"].sum() + 6)


def test_encoding_source_is_the_job_address(recorded, done):
    ds = _open(recorded, done[0])
    assert ds.encoding["source"] == f"qm://{recorded.address}/{done[0]}"


# -- dims, coords, align -----------------------------------------------------------------------


def test_dims_rename_axes_and_a_wrong_number_of_names_names_the_stream(recorded, done):
    job_id, written = done
    ds = _open(recorded, job_id, dims={"img": ("frame", "row", "col"), "I": "shot"})
    assert ds.img.dims == ("frame", "row", "col") and ds.I.dims == ("shot",)
    np.testing.assert_array_equal(ds.img.isel(row=1).values, written["img"][:, 1])
    with pytest.raises(qx.QmQuaException, match=r"'img'.*3 axes") as info:
        _open(recorded, job_id, dims={"img": ("frame", "row")})
    assert isinstance(info.value, ValueError)
    with pytest.raises(qx.QmQuaException, match=r"'I'"):
        _open(recorded, job_id, dims={"I": ("shot", "freq")})
    with pytest.raises(qx.QmQuaException, match=r"'ab'"):
        _open(recorded, job_id, dims={"ab": ()})
    with pytest.raises(qx.QmQuaException, match=r"'I'.*dims="):  # a dim named like a variable
        _open(recorded, job_id, dims={"c": ("c_item", "I")})


def test_coords_are_checked_against_the_sizes(recorded, done):
    job_id, _ = done
    ds = _open(recorded, job_id, coords={"x": ("img_dim_1", np.linspace(0, 1, 5)), "c_dim_0": [7, 8, 9]})
    np.testing.assert_array_equal(ds.x.values, np.linspace(0, 1, 5))
    assert list(ds.c.c_dim_0.values) == [7, 8, 9]
    with pytest.raises(qx.QmQuaException, match=r"'x'.*4 values.*'img_dim_1'.*5") as info:
        _open(recorded, job_id, coords={"x": ("img_dim_1", np.arange(4))})
    assert isinstance(info.value, ValueError)
    with pytest.raises(qx.QmQuaException, match=r"'shot'.*'I_item'"):
        _open(recorded, job_id, coords={"shot": ("I_item", np.arange(3))})  # shorter than the items
    with pytest.raises(qx.QmQuaException, match=r"'f'.*'nope'"):
        _open(recorded, job_id, coords={"f": ("nope", np.arange(3))})
    with pytest.raises(qx.QmQuaException, match=r"'grid'.*1-D"):
        _open(recorded, job_id, coords={"grid": (("I_item", "c_dim_0"), np.zeros((7, 3)))})


def test_a_coordinate_longer_than_a_growing_item_axis_is_cut(recorded):
    job, _ = make_job(recorded.store, counts=4, kinds={"I": StreamKind(), "img": STREAM_KINDS["img"]},
                      state="running", seed=37)
    sweep = np.arange(100) * 1e6
    ds = _open(recorded, job.id, coords={"freq": ("I_item", sweep)}, chunks={})
    np.testing.assert_array_equal(ds.freq.values, sweep[:4])
    job.stream("I").append(np.ones(6))
    job.finish()
    ds = qx.refresh(ds)
    np.testing.assert_array_equal(ds.freq.values, sweep[:10])
    assert ds.I.sel(freq=sweep[7]).values == 1.0


def test_align_puts_streams_on_one_dimension_cut_to_the_common_length(recorded):
    kinds = {"I": StreamKind("<f8"), "Q": StreamKind("<f8"), "n": StreamKind("<i4"),
             "avg": STREAM_KINDS["avg"]}
    counts = {"I": 10, "Q": 7, "n": 12, "avg": 1}
    job, written = make_job(recorded.store, counts=counts, kinds=kinds, seed=41)
    ds = _open(recorded, job.id, align=["I", "Q"])
    assert ds.I.dims == ds.Q.dims == ("item",) and ds.sizes["item"] == 7
    assert ds.n.dims == ("n_item",) and ds.sizes["n_item"] == 12
    np.testing.assert_array_equal(ds.I.values, written["I"][:7])
    np.testing.assert_array_equal((ds.I + 1j * ds.Q).values, written["I"][:7] + 1j * written["Q"])
    every = _open(recorded, job.id, align=True, item_dim="shot", chunks={})
    assert every.sizes["shot"] == 7 and {every.I.dims, every.Q.dims, every.n.dims} == {("shot",)}
    assert every.avg.dims == ()
    assert int(every.n.sum()) == written["n"][:7].sum()
    with pytest.raises(qx.QmQuaException, match=r"'avg'"):
        _open(recorded, job.id, align=["I", "avg"])
    with pytest.raises(qx.QmQuaException, match=r"'nope'"):
        _open(recorded, job.id, align=["I", "nope"])


def test_a_timestamp_coordinate_is_chunked_like_its_value(recorded):
    """Value and timestamp come from one record: same chunks (spec 5.3), and `ds.chunks` works."""
    kinds = {"ts": StreamKind("<f4", timestamps=True), "adc": STREAM_KINDS["adc"],
             "I": StreamKind("<f8"), "Q": StreamKind("<i4")}
    job, _ = make_job(recorded.store, counts=1000, kinds=kinds, seed=43)
    ds = _open(recorded, job.id, chunks={}, chunk_bytes=800)
    assert ds.ts.chunks[0] == ds.ts_timestamp.chunks[0]
    assert ds.adc.chunks[0] == ds.adc_timestamp.chunks[0]
    ds.chunks  # noqa: B018  raises "inconsistent chunks" when the two differ


def test_aligned_streams_share_their_chunks(recorded):
    kinds = {"I": StreamKind("<f8"), "Q": StreamKind("<i4")}
    job, _ = make_job(recorded.store, counts=1000, kinds=kinds, seed=44)
    ds = _open(recorded, job.id, chunks={}, chunk_bytes=800, align=True)
    assert ds.I.chunks == ds.Q.chunks
    ds.chunks  # noqa: B018


# -- timestamps, save streams, drop_variables ---------------------------------------------------


def test_timestamps_as_coordinate_variable_or_dropped(recorded, done):
    job_id, written = done
    ds = _open(recorded, job_id)
    assert "ts_timestamp" in ds.coords and "ts_timestamp" in ds.ts.coords
    assert ds.ts_timestamp.dims == ("ts_item",) and ds.adc_timestamp.dims == ("adc_item",)
    assert ds.ts.dtype == np.float64 and ds.ts_timestamp.dtype == np.int64
    var = _open(recorded, job_id, timestamps="variable")
    assert "ts_timestamp" in var.data_vars and "ts_timestamp" not in var.coords
    np.testing.assert_array_equal(var.adc_timestamp.values, written["adc"]["timestamp"])
    dropped = _open(recorded, job_id, timestamps="drop")
    assert not [v for v in dropped.variables if str(v).endswith("_timestamp")]
    np.testing.assert_array_equal(dropped.ts.values, written["ts"]["value"])
    with pytest.raises(qx.QmQuaException, match="timestamps"):
        _open(recorded, job_id, timestamps="index")


def test_save_streams_are_values_read_at_snapshot_time(recorded, done):
    job_id, written = done
    ds = _open(recorded, job_id, chunks={})
    assert ds.avg.dims == () and ds.avg.values == written["avg"][0]
    assert ds.ab.dims == ("ab_dim_0",) and ds.ab.shape == (4,)
    np.testing.assert_array_equal(ds.ab.values, written["ab"][0])
    assert ds.t1.dims == ds.t1_timestamp.dims == ()
    assert ds.avg.attrs["qm_save_mode"] == "save" and ds.I.attrs["qm_save_mode"] == "save_all"


def test_empty_save_streams_are_nan(recorded):
    counts = {n: 0 for n in STREAM_KINDS}
    job, _ = make_job(recorded.store, counts=counts, state="running", seed=47)
    ds = _open(recorded, job.id)
    assert ds.avg.shape == () and np.isnan(ds.avg.values)
    assert ds.ab.shape == (4,) and np.isnan(ds.ab.values).all()
    assert np.isnan(ds.t1.values) and np.isnan(ds.t1_timestamp.values)
    assert ds.I.shape == (0,) and ds.img.shape == (0, 2, 5) and ds.adc.shape == (0, 4)
    assert ds.I.values.shape == (0,)
    job.stream("avg").append(2.5)
    job.finish()
    assert float(qx.refresh(ds).avg) == 2.5
    assert float(ds.avg.isnull()) == 1  # the old snapshot keeps its value


def test_streams_selects_variables(recorded, done):
    job_id, _ = done
    ds = _open(recorded, job_id, streams=["I", "ts", "avg"])
    assert set(ds.variables) == {"I", "ts", "ts_timestamp", "avg"}
    with pytest.raises(qx.QmQuaException, match="nope"):
        _open(recorded, job_id, streams=["I", "nope"])


def test_drop_variables_drops_streams(recorded, done):
    job_id, _ = done
    ds = _open(recorded, job_id, drop_variables="I")
    assert "I" not in ds.variables and "c" in ds.variables
    ds = _open(recorded, job_id, drop_variables=["ts", "avg"])
    assert not {"ts", "ts_timestamp", "avg"} & set(ds.variables)


def test_drop_variables_drops_a_timestamp_variable(recorded, done):
    job_id, _ = done
    ds = _open(recorded, job_id, drop_variables=["ts_timestamp"])
    assert "ts" in ds.variables and "ts_timestamp" not in ds.variables


# -- attrs and data loss ------------------------------------------------------------------------


def test_dataset_attrs_describe_the_snapshot(recorded, done):
    job_id, written = done
    ds = _open(recorded, job_id)
    counts = {n: (7 if n != "empty" else 0) if not STREAM_KINDS[n].single else 1 for n in STREAM_KINDS}
    assert ds.attrs["qm_job_id"] == job_id
    assert json.loads(ds.attrs["qm_counts"]) == counts
    assert json.loads(ds.attrs["qm_expected_counts"]) == counts
    assert ds.attrs["qm_has_dataloss"] == 0
    assert ds.attrs["qm_job_state"] == "done"
    assert ds.attrs["qm_schema_version"] == 1
    assert ds.I.attrs["qm_count"] == 7 and ds.I.attrs["qm_stream"] == "I"
    for value in ds.attrs.values():  # netCDF/zarr-safe attribute types
        assert isinstance(value, (str, int, float)), value


@pytest.mark.parametrize("state, expected", [("running", "running"), ("closed", "closed"),
                                             ("error", "closed")])
def test_job_state_attr(recorded, state, expected):
    job, _ = make_job(recorded.store, counts=2, kinds={"I": StreamKind()}, state=state, seed=53)
    assert _open(recorded, job.id).attrs["qm_job_state"] == expected
    if state == "running":
        job.finish()


def test_data_loss_warns_by_default_and_raises_when_asked(recorded):
    job, written = make_job(recorded.store, counts=4, kinds={"I": StreamKind()}, state="dataloss", seed=59)
    with pytest.warns(RuntimeWarning, match="data loss") as record:
        ds = _open(recorded, job.id)
    assert record[0].filename == __file__
    assert ds.attrs["qm_has_dataloss"] == 1
    np.testing.assert_array_equal(ds.I.values, written["I"])
    with pytest.raises(qx.StreamProcessingDataLossError, match=job.id):
        _open(recorded, job.id, on_dataloss="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _open(recorded, job.id, on_dataloss="ignore")
    with pytest.raises(qx.QmQuaException, match="on_dataloss"):
        _open(recorded, job.id, on_dataloss="maybe")


# -- qx.to_dask ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_job(recorded):
    kinds = {"I": StreamKind("<f8"), "ts": STREAM_KINDS["ts"], "avg": STREAM_KINDS["avg"]}
    job, written = make_job(recorded.store, counts={"I": 10_000, "ts": 50, "avg": 1}, kinds=kinds, seed=61)
    return job.id, written


def test_to_dask_of_a_finished_job_is_deterministic(recorded, long_job):
    job_id, written = long_job
    handle = recorded.job(job_id).result_handles["I"]
    with dask.config.set({"tokenize.ensure-deterministic": True}):
        a = qx.to_dask(handle, chunks=1000)
        b = qx.to_dask(handle, chunks=1000)
        c = qx.to_dask(recorded.job(job_id).result_handles["I"], chunks=1000)
    assert a.name == b.name == c.name
    assert qx.to_dask(handle, chunks=500).name != a.name
    np.testing.assert_array_equal(a[2500:2600].compute(), written["I"][2500:2600])
    assert a.chunks == ((1000,) * 10,)
    assert qx.to_dask(handle, chunk_bytes=800).chunks[0][0] == 100


def test_to_dask_names_include_the_counts(recorded):
    """Two snapshots of a grown stream never share a name; equal identity + other count differ too."""
    job, written = make_job(recorded.store, counts=100, kinds={"I": StreamKind()}, state="running", seed=67)
    handle = recorded.job(job.id).result_handles["I"]
    a = qx.to_dask(handle, chunks=30)
    job.stream("I").append(np.ones(50))
    job.finish()
    b = qx.to_dask(handle, chunks=30)
    assert a.shape == (100,) and b.shape == (150,) and a.name != b.name
    assert float((a.sum() + b.sum()).compute()) == pytest.approx(2 * written["I"].sum() + 50)

    from qm_xarray.lazy.graph import dask_from_source
    from qm_xarray.lazy.source import ServiceSource

    source = ServiceSource(handle.results_service, handle.header(True))
    names = {dask_from_source(source, n, "final", chunks=30).name for n in (100, 120, 150)}
    assert len(names) == 3


def test_to_dask_of_timestamped_stream_is_the_flat_record(recorded, long_job):
    job_id, written = long_job
    arr = qx.to_dask(recorded.job(job_id).result_handles["ts"], chunks=7)
    assert arr.dtype == written["ts"].dtype
    np.testing.assert_array_equal(arr.compute(), written["ts"])


def test_to_dask_refuses_save_streams_and_other_handles(recorded, long_job):
    job_id, _ = long_job
    with pytest.raises(qx.QmQuaException, match="'avg'"):
        qx.to_dask(recorded.job(job_id).result_handles["avg"])
    with pytest.raises(TypeError):
        qx.to_dask(np.arange(3))
    job, _ = make_job(recorded.store, counts=4, kinds={"I": StreamKind()}, state="dataloss", seed=71)
    with pytest.raises(qx.StreamProcessingDataLossError):
        qx.to_dask(recorded.job(job.id).result_handles["I"])


def test_a_graph_of_ten_thousand_chunks_costs_no_rpc_per_chunk(recorded, long_job):
    job_id, written = long_job
    handle = recorded.job(job_id).result_handles["I"]
    recorded.clear()
    start = time.perf_counter()
    arr = qx.to_dask(handle, chunks=1)
    built = time.perf_counter() - start
    assert arr.numblocks == (10_000,)
    assert len(recorded.methods()) <= 2, recorded.methods()  # header and job state
    assert recorded.data_calls() == []
    assert built < 1.0
    recorded.clear()
    np.testing.assert_array_equal(arr[5:8].compute(), written["I"][5:8])
    assert recorded.spans("I") == [(5, 6), (6, 7), (7, 8)]


def test_a_pickled_graph_carries_connection_details_only(recorded, long_job):
    job_id, written = long_job
    handle = recorded.job(job_id).result_handles["I"]
    arr = qx.to_dask(handle, chunks=1)
    many = pickle.dumps(arr)
    few = pickle.dumps(qx.to_dask(handle, chunks=5000))
    assert len(many) < 200_000, len(many)  # 10^4 chunks
    assert len(few) < 10_000, len(few)     # no item data: the stream holds 80 kB
    assert written["I"][:4].tobytes() not in many
    arr[:3].compute()  # this process has its channel now
    channels = dict(_POOL._channels)
    recorded.clear()
    again = pickle.loads(many)
    assert recorded.methods() == []  # unpickling connects to nothing
    np.testing.assert_array_equal(again[9990:].compute(), written["I"][9990:])
    assert dict(_POOL._channels) == channels and all(
        _POOL._channels[k] is v for k, v in channels.items())  # the pooled channel is reused
    assert len(recorded.spans("I")) == 10


def test_a_lazy_dataset_pickles_small_and_computes_after_unpickling(recorded, long_job):
    job_id, written = long_job
    ds = _open(recorded, job_id, chunks={}, chunk_bytes=800)
    blob = pickle.dumps(ds)
    assert len(blob) < 100_000
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back.I[-5:].values, written["I"][-5:])
    assert back.I.data.name == ds.I.data.name


def test_a_manager_stays_picklable_after_opening(server, store):
    import pickle

    from qm_xarray.testing import make_job, our_streams_manager

    job, _ = make_job(store, counts=6, state="running")
    sm = our_streams_manager("127.0.0.1", server.port, job.id, "v2")
    ds = xr.open_dataset(sm, engine="qm", chunks={})
    pickle.dumps(sm)
    assert pickle.loads(pickle.dumps(ds)).I.shape == (6,)


def test_a_slicer_refuses_out_of_range_ints(server, store):
    from qm_xarray.testing import make_job

    job, _ = make_job(store, counts=6)
    arr = qx.to_dask(qx.connect(server.address).job(job.id).result_handles["I"])
    slicer = next(iter(arr.dask.values()))
    slicer = getattr(slicer, "slicer", slicer)
    with pytest.raises(IndexError):
        slicer[6]
    assert slicer[-6].shape == ()
