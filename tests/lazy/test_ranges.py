"""Exact item ranges: what the server is asked for when a lazy dataset is indexed (counted at the server).

- `chunks=None` (lazy xarray indexing): every selection fetches exactly the item range it covers
  (BASIC indexing: ints and slices are pushed down, a list index fetches its covering range, chained
  selections merge, inner buffer axes are cut in memory after fetching the covering items);
- `chunks={}` (dask): a selection fetches at most one chunk's rounding on each side, chunks being
  the `encoding["preferred_chunks"]` the backend sets;
- opening a job and looking at it (`repr`, `.shape`) transfers no item data.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import qm_xarray as qx

from qm_xarray.testing import STREAM_KINDS, StreamKind, make_job

N = 5000
KINDS = {k: STREAM_KINDS[k] for k in ("I", "img", "ts", "adc", "avg")}
OPENERS = ["job", "v2", "v1"]  # qx.connect(addr).job(id) (v2 multi), our StreamsManager v2 / v1


@pytest.fixture(scope="module")
def big(recorded):
    """A finished job: 5000 items in each save_all stream, one `save` stream."""
    job, written = make_job(recorded.store, counts={n: N for n in KINDS}, kinds=KINDS, seed=11)
    return job.id, written


@pytest.fixture(params=OPENERS)
def lazy(request, recorded, big):
    """(dataset opened with chunks=None, written items); the recorder is cleared after the open."""
    job_id, written = big
    ds = xr.open_dataset(recorded.opener(request.param, job_id), engine="qm")
    recorded.clear()
    return ds, written


# -- chunks=None: exact ranges -----------------------------------------------------------------


def test_tail_fetches_exactly_the_tail(recorded, lazy):
    ds, written = lazy
    got = ds.I[-1000:].values
    assert recorded.ranges() == [("I", N - 1000, N)]
    np.testing.assert_array_equal(got, written["I"][-1000:])


@pytest.mark.parametrize("index, covering", [
    (slice(1234, 2345), (1234, 2345)),
    (slice(10, 100, 7), (10, 95)),        # the step is applied in memory on the covering range
    (slice(None, 3), (0, 3)),
    (slice(N - 1, None), (N - 1, N)),
    ([990, 5, 17], (5, 991)),             # a list fetches its covering range, once
])
def test_isel_slice_fetches_its_covering_range(recorded, lazy, index, covering):
    ds, written = lazy
    got = ds.I.isel(I_item=index).values
    assert recorded.ranges() == [("I", *covering)]
    np.testing.assert_array_equal(got, written["I"][index])


@pytest.mark.parametrize("index", [0, 4321, N - 1, -1, -N])
def test_int_isel_fetches_one_item(recorded, lazy, index):
    ds, written = lazy
    got = ds.I.isel(I_item=index).values
    start = index % N
    assert recorded.ranges() == [("I", start, start + 1)]
    assert got.shape == () and got == written["I"][index]


def test_chained_selections_merge_into_one_fetch(recorded, lazy):
    ds, written = lazy
    got = ds.I.isel(I_item=slice(100, 200)).isel(I_item=slice(10, 20)).values
    assert recorded.ranges() == [("I", 110, 120)]
    np.testing.assert_array_equal(got, written["I"][110:120])


def test_buffer_inner_slice_fetches_only_the_covering_items(recorded, lazy):
    ds, written = lazy
    got = ds.img.isel(img_item=7, img_dim_1=slice(1, 3)).values
    assert recorded.ranges() == [("img", 7, 8)]
    np.testing.assert_array_equal(got, written["img"][7, :, 1:3])
    recorded.clear()
    got = ds.img[-3:, 0, ::2].values
    assert recorded.ranges() == [("img", N - 3, N)]
    np.testing.assert_array_equal(got, written["img"][-3:, 0, ::2])


def test_timestamp_coordinate_fetches_the_same_range(recorded, lazy):
    ds, written = lazy
    got = ds.ts_timestamp[40:50].values
    assert recorded.ranges() == [("ts", 40, 50)]
    np.testing.assert_array_equal(got, written["ts"]["timestamp"][40:50])
    recorded.clear()
    got = ds.adc.isel(adc_item=slice(-5, None), adc_dim_0=2).values
    assert recorded.ranges() == [("adc", N - 5, N)]
    np.testing.assert_array_equal(got, written["adc"]["value"][-5:, 2])


def test_repr_shape_and_attrs_fetch_nothing(recorded, lazy):
    ds, _ = lazy
    repr(ds), repr(ds.I), ds._repr_html_()
    assert ds.I.shape == (N,) and ds.img.shape == (N, 2, 5) and ds.sizes["ts_item"] == N
    ds.I.dtype, ds.I.attrs, ds.attrs, ds.I.encoding, ds.isel(I_item=slice(5, 9))
    assert recorded.methods() == []


def test_repr_of_a_dask_dataset_fetches_nothing(recorded, big):
    job_id, _ = big
    ds = xr.open_dataset(recorded.job(job_id), engine="qm", chunks={})
    assert [r for r in recorded.ranges() if r[0] != "avg"] == []  # only the save value at open
    recorded.clear()
    repr(ds), ds._repr_html_(), ds.I.shape, ds.I.data.name, ds.img[5:10].chunks
    assert recorded.methods() == []


# -- chunks={}: at most one chunk's rounding --------------------------------------------------


CHUNK = 700  # items per chunk: chunk_bytes = 700 float64 items


@pytest.fixture(params=["job", "v1"])
def chunked(request, recorded, big):
    job_id, written = big
    ds = xr.open_dataset(recorded.opener(request.param, job_id), engine="qm", chunks={},
                         chunk_bytes=8 * CHUNK)
    recorded.clear()
    return ds, written


def _check_rounding(spans, lo, hi, chunk):
    """Fetched spans are disjoint, cover [lo, hi) and stay within one chunk's rounding of it."""
    spans = sorted(spans)
    assert spans, "nothing was fetched"
    assert all(b > a for a, b in spans)
    assert all(a2 >= b1 for (_, b1), (a2, _) in zip(spans, spans[1:])), f"overlapping fetches {spans}"
    assert spans[0][0] <= lo and spans[-1][1] >= hi, f"{spans} do not cover [{lo}, {hi})"
    assert spans[0][0] >= lo // chunk * chunk, f"{spans} start more than a chunk before {lo}"
    assert spans[-1][1] <= -(-hi // chunk) * chunk, f"{spans} end more than a chunk after {hi}"
    covered = sum(b - a for a, b in spans)
    assert covered == spans[-1][1] - spans[0][0], f"gaps in {spans}"


@pytest.mark.parametrize("index, lo, hi", [
    (slice(1000, 100, -10), 110, 1001),
    (slice(-5, -2000, -7), N - 1999, N - 4),
    ([4990, 5, 3], 3, 4991),
    (np.array([-1, -N]), 0, N),
])
def test_reversed_and_list_selections_stay_within_their_rounded_range(recorded, chunked, index, lo, hi):
    ds, written = chunked
    np.testing.assert_array_equal(ds.I.isel(I_item=index).values, written["I"][index])
    spans = recorded.spans("I")
    assert spans[0][0] >= lo // CHUNK * CHUNK and spans[-1][1] <= -(-hi // CHUNK) * CHUNK, spans
    assert all(a2 >= b1 for (_, b1), (a2, _) in zip(spans, spans[1:])), spans


def test_vectorized_selections_are_correct(chunked):
    ds, written = chunked
    pick = xr.DataArray([[1, 2], [3, N - 1]], dims=("a", "b"))
    np.testing.assert_array_equal(ds.I.isel(I_item=pick).values, written["I"][[[1, 2], [3, N - 1]]])
    points = dict(img_item=xr.DataArray([1, 4000], dims="p"), img_dim_1=xr.DataArray([0, 4], dims="p"))
    np.testing.assert_array_equal(ds.img.isel(points).values, written["img"][[1, 4000], :, [0, 4]])


def test_preferred_chunks_set_the_dask_chunks(chunked):
    ds, _ = chunked
    assert ds.I.encoding["preferred_chunks"] == {"I_item": CHUNK}
    assert ds.I.chunks == ((CHUNK,) * (N // CHUNK) + (N % CHUNK,),)
    assert "chunks" not in ds.I.encoding  # it would leak into to_zarr


@pytest.mark.parametrize("lo, hi", [(1000, 1100), (650, 1450), (0, N), (N - 1000, N), (1400, 1401)])
def test_dask_selection_fetches_at_most_one_chunk_rounding(recorded, chunked, lo, hi):
    ds, written = chunked
    got = ds.I[lo:hi].values
    np.testing.assert_array_equal(got, written["I"][lo:hi])
    assert {s for s, _, _ in recorded.ranges()} == {"I"}
    _check_rounding(recorded.spans("I"), lo, hi, ds.I.encoding["preferred_chunks"]["I_item"])


def test_dask_int_selection_fetches_within_its_chunk(recorded, chunked):
    ds, written = chunked
    assert ds.I[-1].values == written["I"][-1]
    _check_rounding(recorded.spans("I"), N - 1, N, CHUNK)
    recorded.clear()
    got = ds.img.isel(img_item=3000, img_dim_0=1).values
    np.testing.assert_array_equal(got, written["img"][3000, 1])
    chunk = ds.img.encoding["preferred_chunks"]["img_item"]
    _check_rounding(recorded.spans("img"), 3000, 3001, chunk)


def test_dask_reduction_fetches_each_chunk_once(recorded, chunked):
    ds, written = chunked
    assert float(ds.I.sum()) == pytest.approx(written["I"].sum())
    bounds = np.cumsum((0, *ds.I.chunks[0]))
    assert recorded.spans("I") == list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


# -- opening: metadata only --------------------------------------------------------------------


@pytest.mark.parametrize("chunks", [None, {}])
def test_opening_a_job_of_100_streams_transfers_no_items(recorded, chunks):
    kinds = {f"s{i:03d}": StreamKind("<f8" if i % 2 else "<i4", () if i % 3 else (3,)) for i in range(100)}
    job, _ = make_job(recorded.store, counts=50, kinds=kinds, seed=3)
    recorded.clear()
    conn = qx.connect(recorded.address)
    assert recorded.methods() == ["GetInfo"]  # the first contact: what the server is
    recorded.clear()
    handle = conn.job(job.id)
    assert recorded.methods() == []  # .job sends nothing
    ds = xr.open_dataset(handle, engine="qm", chunks=chunks)
    repr(ds)
    methods = recorded.methods()
    assert not set(methods) & {"GetNamedResult", "GetNamedResults", "GetJobNamedResult"}, methods
    assert len(methods) <= 2 + len(kinds), methods
    assert len(ds.data_vars) == 100 and ds.s001.shape == (50,) and ds.s000.shape == (50, 3)


@pytest.mark.parametrize("how, method", [("job", "GetNamedResults"), ("v2", "GetNamedResult"),
                                         ("v1", "GetJobNamedResult")])
def test_open_fetches_only_the_current_value_of_save_streams(recorded, big, how, method):
    job_id, written = big
    opener = recorded.opener(how, job_id)
    recorded.clear()
    ds = xr.open_dataset(opener, engine="qm", chunks={})
    assert [m for m, _ in recorded.data_calls()] == [method]
    assert recorded.ranges() == [("avg", 0, 1)]
    assert ds.avg.values == written["avg"][0]


def test_open_reads_each_header_once_on_v1_and_v2(recorded):
    """Without multiple-streams fetching, a header per stream, still no item data for save_all."""
    kinds = {f"s{i}": StreamKind() for i in range(20)}
    job, _ = make_job(recorded.store, counts=10, kinds=kinds, seed=4)
    for how, header in (("v1", "GetJobNamedResultHeader"), ("v2", "GetJobNamedResultHeader")):
        manager = recorded.opener(how, job.id)
        recorded.clear()
        xr.open_dataset(manager, engine="qm", chunks={})
        methods = recorded.methods()
        assert methods.count(header) == 20, methods
        assert not set(methods) & {"GetNamedResult", "GetNamedResults", "GetJobNamedResult"}, methods
