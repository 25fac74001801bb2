"""Property: a lazy dataset holds exactly what our StreamsManager's eager `fetch_all` returns.

For random stream kinds (element dtype, 0-2 buffer axes, timestamps, save / save_all), counts and
index expressions along the item axis, the dataset opened with `chunks=None` (lazy indexing) and
with `chunks={}` (dask, several chunks thanks to a small `chunk_bytes`) equals
`fetch_all(flat_struct=True)`: the value variable, and the `<name>_timestamp` coordinate for
timestamped streams. One server for the module; a new job per example in its store.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import qm_xarray as qx
from qm_xarray.testing import embedded_server, make_job, our_streams_manager

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from qm_xarray.testing.strategies import index_expressions, stream_kinds  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def rt():
    store = qx.ResultStore()
    with embedded_server(store) as srv:
        yield store, srv


@st.composite
def cases(draw):
    kinds = draw(st.lists(stream_kinds(), min_size=1, max_size=3))
    names = [f"s{i}" for i in range(len(kinds))]
    counts = {n: draw(st.integers(0, 40)) for n in names}
    indices = {n: [draw(index_expressions(counts[n])) for _ in range(2)] for n in names}
    return {
        "kinds": dict(zip(names, kinds)),
        "counts": counts,
        "indices": indices,
        "opener": draw(st.sampled_from(["job", "v1", "v2", "v2-multi"])),
        "chunk_bytes": draw(st.integers(1, 200)),
        "seed": draw(st.integers(0, 2**16)),
    }


def _item_shape(kind) -> tuple[int, ...]:
    """The per-item shape the protocol conveys: a flat header of [1] is a scalar item, so a
    `buffer(1)` stream reads as scalars (as in qm-qua); a timestamped record keeps its (1,) value."""
    return () if kind.shape == (1,) and not kind.timestamps else kind.shape


def _expected(kind, eager, count):
    """(values, timestamps or None) of a fetch_all(flat_struct=True) result, item axis kept."""
    shape = _item_shape(kind)
    if kind.single:
        if eager is None:
            return np.full(shape, np.nan), (np.array(np.nan) if kind.timestamps else None)
        record = np.asarray(eager)
        if kind.timestamps:
            return record["value"].reshape(shape), record["timestamp"].reshape(())
        return record.reshape(shape), None
    arr = np.asarray(eager)
    if kind.timestamps:
        arr = arr.reshape(count)  # the final-shape rule drops the item axis of a single item
        return arr["value"].reshape((count, *shape)), arr["timestamp"]
    return arr.reshape((count, *shape)), None


def _same(got: xr.DataArray, want: np.ndarray, what: str) -> None:
    values = got.values
    assert values.shape == want.shape, f"{what}: shape {values.shape} != {want.shape}"
    if want.dtype.kind == "f" and np.isnan(want).all():
        assert np.isnan(values).all(), what
        return
    got_dtype, want_dtype = values.dtype, want.dtype
    if values.ndim == 0:  # numpy scalars are native-endian: a dask 0-d result loses '>' order
        got_dtype, want_dtype = got_dtype.newbyteorder("="), want_dtype.newbyteorder("=")
    assert got_dtype == want_dtype, f"{what}: dtype {values.dtype} != {want.dtype}"
    np.testing.assert_array_equal(values, want, err_msg=what)


@SETTINGS
@given(case=cases())
def test_lazy_dataset_equals_eager_fetch_all(rt, case):
    store, srv = rt
    kinds, counts = case["kinds"], case["counts"]
    job, _ = make_job(store, counts=counts, kinds=kinds, seed=case["seed"])
    manager = our_streams_manager("127.0.0.1", srv.port, job.id, "v2")
    eager = {n: manager[n].fetch_all(flat_struct=True) for n in kinds}
    if case["opener"] == "job":
        opener = qx.connect(srv.address).job(job.id)
    else:
        opener = our_streams_manager("127.0.0.1", srv.port, job.id, case["opener"])

    for chunks in (None, {}):
        ds = xr.open_dataset(opener, engine="qm", chunks=chunks, chunk_bytes=case["chunk_bytes"])
        for name, kind in kinds.items():
            count = counts[name]
            values, stamps = _expected(kind, eager[name], count)
            var = ds[name]
            what = f"{name} {kind} count={count} chunks={chunks}"
            if kind.single:
                assert var.dims == tuple(f"{name}_dim_{k}" for k in range(len(_item_shape(kind)))), what
                _same(var, values, what)
                if stamps is not None:
                    _same(ds[f"{name}_timestamp"], stamps, what + " timestamp")
                continue
            item = f"{name}_item"
            assert var.dims[0] == item and var.shape == (count, *_item_shape(kind)), what
            if chunks is not None:
                assert var.chunks is not None
                if count:
                    assert len(var.chunks[0]) == -(-count // ds[name].encoding["preferred_chunks"][item])
            _same(var, values, what)
            if stamps is not None:
                assert f"{name}_timestamp" in var.coords, what
                _same(var[f"{name}_timestamp"], stamps, what + " timestamp")
            for index in case["indices"][name]:
                _same(var.isel({item: index}), values[index, ...], f"{what} [{index}]")  # 0-d: dtype kept
                if stamps is not None:
                    _same(ds[f"{name}_timestamp"].isel({item: index}), stamps[index, ...],
                          f"{what} timestamp [{index}]")
