"""Growing jobs: every open is a snapshot; snapshots never share dask names unless they are equal.

The trap (lazy-layer notes, finding 1): xarray names a chunked variable from a token of the opened
object, not of its shape. If a grown job's second open reused the first open's names, dask would
silently compute the old length. `refresh` reopens with the same options; `watch` yields growing
datasets and fetches each item once.
"""

from __future__ import annotations

import threading
import time
import warnings

import dask
import numpy as np
import pytest
import xarray as xr

import qm_xarray as qx
from qm_xarray.testing import STREAM_KINDS, StreamKind, make_items, make_job

KINDS = {"I": StreamKind("<f8"), "Q": StreamKind("<f8"), "ts": STREAM_KINDS["ts"],
         "img": STREAM_KINDS["img"], "avg": STREAM_KINDS["avg"]}


class Growing:
    """A running job whose items the test appends; `written` tracks everything appended."""

    def __init__(self, store: qx.ResultStore, counts: dict[str, int], kinds=KINDS, seed: int = 0):
        self.writer, self.written = make_job(store, counts=counts, kinds=kinds, state="running", seed=seed)
        self.kinds = kinds
        self.seed = seed

    @property
    def id(self) -> str:
        return self.writer.id

    def append(self, name: str, n: int) -> None:
        self.seed += 1
        kind = self.kinds[name]
        new = make_items(kind, n, self.seed)
        self.writer.stream(name).append(new)
        self.written[name] = new[-1:] if kind.single else np.concatenate([self.written[name], new])


def test_a_grown_job_reopened_has_the_new_length_and_new_names(recorded):
    g = Growing(recorded.store, {"I": 1000, "Q": 1000, "ts": 1000, "img": 100, "avg": 1})
    job = recorded.job(g.id)
    ds1 = xr.open_dataset(job, engine="qm", chunks={})
    first = g.written["I"].copy()
    g.append("I", 200)
    g.append("ts", 50)
    ds2 = xr.open_dataset(job, engine="qm", chunks={})
    assert ds1.I.shape == (1000,) and ds2.I.shape == (1200,)
    assert ds2.ts.shape == ds2.ts_timestamp.shape == (1050,)
    assert ds1.I.data.name != ds2.I.data.name
    assert ds1.ts_timestamp.data.name != ds2.ts_timestamp.data.name
    # the wrong-result trap: both arrays in one graph
    total = (ds1.I.sum() + ds2.I.sum()).compute()
    assert float(total) == pytest.approx(first.sum() + g.written["I"].sum())
    both = xr.concat([ds1.ts_timestamp, ds2.ts_timestamp], dim="ts_item").values
    np.testing.assert_array_equal(both, np.concatenate([g.written["ts"]["timestamp"][:1000],
                                                        g.written["ts"]["timestamp"]]))
    # the old snapshot stays valid for its own count and never asks past it
    g.append("I", 300)
    recorded.clear()
    np.testing.assert_array_equal(ds1.I.values, first)
    assert max(b for _, _, b in recorded.ranges("I")) == 1000
    g.writer.finish()


def test_a_grown_streams_manager_reopened_has_new_names(recorded):
    g = Growing(recorded.store, {"I": 10, "Q": 10, "ts": 10, "img": 10, "avg": 1}, seed=5)
    manager = recorded.job(g.id).result_handles
    ds1 = xr.open_dataset(manager, engine="qm", chunks={})
    g.append("I", 5)
    ds2 = xr.open_dataset(manager, engine="qm", chunks={})
    assert ds1.I.data.name != ds2.I.data.name
    assert float((ds1.I.sum() + ds2.I.sum()).compute()) == pytest.approx(
        g.written["I"][:10].sum() + g.written["I"].sum())
    g.writer.finish()


def test_a_finished_job_opened_twice_has_identical_names(recorded):
    job, _ = make_job(recorded.store, counts=20, kinds=KINDS, seed=7)
    handle = recorded.job(job.id)
    with dask.config.set({"tokenize.ensure-deterministic": True}):  # no pickling/uuid fallback
        a = xr.open_dataset(handle, engine="qm", chunks={})
        b = xr.open_dataset(handle, engine="qm", chunks={})
        c = xr.open_dataset(recorded.job(job.id), engine="qm", chunks={})        # another Job object
        d = xr.open_dataset(recorded.job(job.id).result_handles, engine="qm", chunks={})
        e = xr.open_dataset(handle, engine="qm", chunks={}, streams=["I", "ts"])  # other options
    for name in ("I", "ts", "ts_timestamp", "img"):
        assert a[name].data.name == b[name].data.name == c[name].data.name, name
    assert a.I.data.name != e.I.data.name  # different options are a different dataset
    assert d.I.data.name  # a StreamsManager tokenizes deterministically too (no error above)
    with dask.config.set({"tokenize.ensure-deterministic": True}):
        assert xr.open_dataset(handle.result_handles, engine="qm", chunks={}).I.data.name == d.I.data.name


def test_refresh_is_the_next_snapshot_with_the_same_options(recorded):
    g = Growing(recorded.store, {"I": 30, "Q": 20, "ts": 10, "img": 4, "avg": 1}, seed=9)
    job = recorded.job(g.id)
    shots = np.arange(1000) * 0.5
    ds = xr.open_dataset(job, engine="qm", chunks={}, align=["I", "Q"], item_dim="shot",
                         dims={"img": ("frame", "row", "col")}, coords={"shot_time": ("shot", shots)},
                         timestamps="variable", streams=["I", "Q", "ts", "img"])
    assert ds.I.dims == ds.Q.dims == ("shot",) and ds.sizes["shot"] == 20
    g.append("Q", 15)
    g.append("I", 2)
    g.append("img", 3)
    g.append("ts", 1)
    ds2 = qx.refresh(ds)
    assert ds2.sizes["shot"] == 32 and ds2.I.dims == ("shot",) and ds2.Q.dims == ("shot",)
    assert ds2.img.dims == ("frame", "row", "col") and ds2.sizes["frame"] == 7
    np.testing.assert_array_equal(ds2.shot_time.values, shots[:32])
    assert "ts_timestamp" in ds2.data_vars and ds2.ts.shape == (11,)
    assert set(ds2.data_vars) == {"I", "Q", "ts", "ts_timestamp", "img"}  # streams= kept
    assert ds2.I.chunks is not None  # still dask
    np.testing.assert_array_equal(ds2.Q.values, g.written["Q"][:32])
    assert ds.sizes["shot"] == 20  # the old dataset is unchanged
    lazy = xr.open_dataset(job, engine="qm")
    g.append("I", 1)
    lazy2 = qx.refresh(lazy)
    assert lazy2.I.chunks is None and lazy2.I.shape == (33,)
    g.writer.finish()
    assert qx.refresh(lazy2).attrs["qm_job_state"] == "done"


def test_refresh_without_qm_options_says_how_to_reopen(recorded):
    job, _ = make_job(recorded.store, counts=3, kinds={"I": KINDS["I"]}, seed=2)
    ds = xr.open_dataset(recorded.job(job.id), engine="qm")
    merged = xr.merge([ds, xr.Dataset({"x": ("x", [1, 2])})])
    with pytest.raises(qx.QmQuaException, match="open_dataset"):
        qx.refresh(merged)


def test_watch_yields_growing_datasets_and_fetches_each_item_once(recorded):
    kinds = {"I": StreamKind("<f8"), "c": STREAM_KINDS["c"], "ts": STREAM_KINDS["ts"],
             "avg": STREAM_KINDS["avg"], "late": StreamKind("<i4")}
    g = Growing(recorded.store, {"I": 10, "c": 3, "ts": 0, "avg": 1, "late": 0}, kinds=kinds, seed=13)
    stop = threading.Event()
    first_round = threading.Event()

    def produce() -> None:
        first_round.wait(10)  # the first dataset shows the initial items
        for i in range(6):
            time.sleep(0.07)
            g.append("I", 10)
            if i % 2:
                g.append("c", 7)
            g.append("ts", 4)
            g.append("avg", 1)
            if i == 3:
                g.append("late", 5)
        stop.set()
        g.writer.finish()

    recorded.clear()
    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    seen = []
    for ds in qx.watch(recorded.job(g.id), every=0.05, timeout=20):
        assert all(not isinstance(v.data, dask.array.Array) for v in ds.variables.values())
        seen.append((ds.sizes["I_item"], ds.sizes["c_item"], ds.sizes["ts_item"], ds.sizes["late_item"],
                     ds.attrs["qm_job_state"]))
        last = ds
        first_round.set()
    producer.join(10)
    assert stop.is_set()
    assert len(seen) >= 2
    assert all(a <= b for prev, cur in zip(seen, seen[1:]) for a, b in zip(prev[:4], cur[:4])), seen
    assert seen[0] == (10, 3, 0, 0, "running"), seen
    assert seen[-1] == (70, 24, 24, 5, "done"), seen
    assert [s[4] for s in seen[:-1]].count("done") == 0  # the final dataset ends the iteration
    for name in ("I", "c", "late"):
        np.testing.assert_array_equal(last[name].values, g.written[name])
    np.testing.assert_array_equal(last.ts_timestamp.values, g.written["ts"]["timestamp"])
    assert last.avg.values == g.written["avg"][0]
    # every save_all item was asked for exactly once across all rounds
    for name, total in (("I", 70), ("c", 24), ("ts", 24), ("late", 5)):
        spans = [s for s in recorded.spans(name) if s[1] > s[0]]
        assert all(a2 >= b1 for (_, b1), (a2, _) in zip(spans, spans[1:])), (name, spans)
        assert sum(b - a for a, b in spans) == total and spans[0][0] == 0, (name, spans)


def test_watch_never_changes_a_dataset_it_has_yielded(recorded):
    """Rounds write new items past those handed out (into a buffer that grows): old frames stay."""
    writer = recorded.store.create_job(f"frames-{time.monotonic_ns()}", streams=[{"name": "I"}])
    writer.stream("I").append(np.arange(3.0))
    frames = []
    for ds in qx.watch(recorded.job(writer.id), every=0.01, timeout=30):
        frames.append((ds, ds.I.values.copy()))
        if len(frames) < 5:
            writer.stream("I").append(-np.arange(len(frames) * 7.0))
        elif len(frames) == 5:
            writer.finish()
    assert len(frames) >= 5
    for ds, values in frames:
        np.testing.assert_array_equal(ds.I.values, values)
    np.testing.assert_array_equal(frames[-1][0].I.values, recorded.store.job(writer.id).stream("I").read_array())


def test_watch_of_a_finished_job_yields_once(recorded):
    job, written = make_job(recorded.store, counts=12, kinds={"I": KINDS["I"]}, seed=17)
    out = list(qx.watch(recorded.job(job.id), every=0.01))
    assert len(out) == 1 and out[0].attrs["qm_job_state"] == "done"
    np.testing.assert_array_equal(out[0].I.values, written["I"])


def test_a_qm_address_string_opens(recorded):
    job, written = make_job(recorded.store, counts=9, kinds=KINDS, seed=19)
    url = f"qm://{recorded.address}/{job.id}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a finished job: deterministic, no warning
        ds = xr.open_dataset(url, engine="qm", chunks={})
        again = xr.open_dataset(url, engine="qm", chunks={})
    np.testing.assert_array_equal(ds.I.values, written["I"])
    assert ds.I.data.name == again.I.data.name
    assert ds.encoding["source"] == url
    with pytest.raises(qx.QmQuaException, match="JOB"):
        xr.open_dataset(f"qm://{recorded.address}", engine="qm")


def test_a_qm_address_string_of_a_running_job_warns(recorded):
    g = Growing(recorded.store, {"I": 4, "Q": 4, "ts": 4, "img": 4, "avg": 1}, seed=23)
    with pytest.warns(UserWarning, match="running job") as record:
        ds = xr.open_dataset(f"qm://{recorded.address}/{g.id}", engine="qm")
    assert record[0].filename == __file__  # points at the caller's line
    np.testing.assert_array_equal(ds.I.values, g.written["I"])
    g.writer.finish()


def test_concurrent_opens_of_one_job_never_share_names(recorded, monkeypatch):
    """Thread A has taken its snapshot but xarray has not tokenized the Job yet when thread B opens
    the grown job: A must still get names of its own (the interleaving is forced with events)."""
    import xarray.backends.api as api

    chunk_ds = getattr(api, "_chunk_ds", None)
    if chunk_ds is None:
        pytest.skip("xarray's open_dataset no longer goes through backends.api._chunk_ds")
    g = Growing(recorded.store, {"I": 100, "Q": 1, "ts": 1, "img": 1, "avg": 1}, seed=29)
    job = recorded.job(g.id)
    a_opened, b_opened = threading.Event(), threading.Event()

    def pausing_chunk_ds(*args, **kwargs):  # runs between the backend's snapshot and the token
        if threading.current_thread().name == "open-A":
            a_opened.set()
            b_opened.wait(10)
        return chunk_ds(*args, **kwargs)

    monkeypatch.setattr(api, "_chunk_ds", pausing_chunk_ds)
    out = {}
    thread = threading.Thread(target=lambda: out.update(a=xr.open_dataset(job, engine="qm", chunks={})),
                              name="open-A")
    thread.start()
    assert a_opened.wait(10)
    g.append("I", 50)
    b = xr.open_dataset(job, engine="qm", chunks={})
    b_opened.set()
    thread.join(10)
    a = out["a"]
    g.writer.finish()
    assert a.I.shape == (100,) and b.I.shape == (150,)
    assert a.I.data.name != b.I.data.name
    assert float((a.I.sum() + b.I.sum()).compute()) == pytest.approx(
        g.written["I"][:100].sum() + g.written["I"].sum())
