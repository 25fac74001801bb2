"""`export_zarr`: real server (127.0.0.1, port 0), real zarr stores on disk under tmp_path."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import re
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr

import qm_xarray as qx
from qm_xarray.persist import ExportStore, NotOurStoreError, export_zarr
from qm_xarray.simulator import Simulation
from qm_xarray.testing import STREAM_KINDS, StreamKind, make_items, make_job

pytestmark = pytest.mark.filterwarnings(
    "ignore:Failed to open Zarr store with consolidated metadata:RuntimeWarning",
    "ignore:.*reports data loss:RuntimeWarning")

EXPORT_ATTRS = ("qm_committed", "qm_export_complete")  # what the store adds to the dataset attrs


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def job_of(server: qx.ResultsServer, job_id: str) -> qx.Job:
    return qx.connect(server.address).job(job_id)


def open_store(path: Path) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return xr.open_zarr(str(path))


def assert_store_equals_live(path: Path, job: qx.Job, **options: Any) -> xr.Dataset:
    """Values, dims and coords equal, and every attribute but the snapshot time (and the store's own)."""
    stored = open_store(path)
    live = xr.open_dataset(job, engine="qm", on_dataloss="ignore", **options)
    xr.testing.assert_equal(stored, live)
    ignore = ("qm_snapshot_time", *EXPORT_ATTRS)
    assert {k: v for k, v in stored.attrs.items() if k not in ignore} == \
        {k: v for k, v in live.attrs.items() if k not in ignore}
    for name, var in live.variables.items():
        assert stored[name].attrs == var.attrs, name
        assert stored[name].dtype == var.dtype, name
    assert set(stored.coords) == set(live.coords)
    return stored


def tree_digest(path: Path) -> dict[str, str]:
    """Every file of a store with the hash of its bytes (to prove nothing was rewritten)."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------ equality
@pytest.mark.parametrize("kind", list(STREAM_KINDS))
def test_every_stream_kind_round_trips(kind: str, store: qx.ResultStore, server: qx.ResultsServer,
                                       tmp_path: Path) -> None:
    job_id = new_id(f"kind-{kind}")
    make_job(store, 7, kinds={kind: STREAM_KINDS[kind]}, job_id=job_id)
    result = export_zarr(job_of(server, job_id), tmp_path / "s.zarr")
    assert result.complete and result.state == "done" and not result.resumed
    stored = assert_store_equals_live(tmp_path / "s.zarr", job_of(server, job_id))
    assert stored.attrs["qm_export_complete"] is True
    assert json.loads((tmp_path / "s.zarr" / "zarr.json").read_text()).get("consolidated_metadata")


def test_all_kinds_in_one_job_with_different_counts(store: qx.ResultStore, server: qx.ResultsServer,
                                                   tmp_path: Path) -> None:
    job_id = new_id("all")
    counts = {name: 3 + i for i, name in enumerate(STREAM_KINDS)} | {"empty": 0}
    _, written = make_job(store, counts, job_id=job_id)
    export_zarr(job_of(server, job_id), tmp_path / "s.zarr")
    stored = assert_store_equals_live(tmp_path / "s.zarr", job_of(server, job_id))
    np.testing.assert_array_equal(stored["adc"].values, written["adc"]["value"])
    np.testing.assert_array_equal(stored["adc_timestamp"].values, written["adc"]["timestamp"])
    assert "adc_timestamp" in stored.coords and stored.sizes["empty_item"] == 0


def test_dims_coords_and_align_options(store: qx.ResultStore, server: qx.ResultsServer,
                                       tmp_path: Path) -> None:
    job_id = new_id("opts")
    kinds = {"I": STREAM_KINDS["I"], "flags": STREAM_KINDS["flags"], "c": STREAM_KINDS["c"],
             "img": STREAM_KINDS["img"], "ab": STREAM_KINDS["ab"]}
    make_job(store, {"I": 9, "flags": 6, "c": 5, "img": 4, "ab": 1}, kinds=kinds, job_id=job_id)
    options: dict[str, Any] = {
        "align": ["I", "flags"], "item_dim": "shot",
        "dims": {"c": ("rep", "channel"), "img": ("frame", "row", "col"), "ab": ("freq",)},
        "coords": {"channel": xr.DataArray([1.0, 2.0, 3.0], dims="channel", attrs={"units": "V"}),
                   "shot_time": ("shot", np.arange(100) * 0.5),  # the whole run; cut to the count
                   "freq": ("freq", np.linspace(4e9, 5e9, 4))},
    }
    job = job_of(server, job_id)
    result = export_zarr(job, tmp_path / "s.zarr", **options)
    assert result.counts == {"shot": 6, "rep": 5, "frame": 4}
    stored = assert_store_equals_live(tmp_path / "s.zarr", job, **options)
    assert stored["channel"].attrs["units"] == "V" and stored.sizes["shot"] == 6
    assert stored["I"].dims == ("shot",) and stored["c"].dims == ("rep", "channel")


def test_chunks_follow_the_largest_items(store: qx.ResultStore, server: qx.ResultsServer,
                                         tmp_path: Path) -> None:
    """The chunk of an item dimension is the page of its largest items, not of its timestamps."""
    job_id = new_id("chunks")
    make_job(store, 300, kinds={"adc": STREAM_KINDS["adc"]}, job_id=job_id)  # 32 B values, 8 B stamps
    export_zarr(job_of(server, job_id), tmp_path / "s.zarr", chunk_bytes=4096)
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    items = group["adc"].chunks[0]  # a page of at most 4096 bytes of values
    assert group["adc"].chunks == (items, 4) and group["adc_timestamp"].chunks == (items,)
    assert 64 <= items <= 4096 // 32
    assert_store_equals_live(tmp_path / "s.zarr", job_of(server, job_id))


@pytest.mark.parametrize("compression", [None, "default"])
def test_compression_none_or_default(compression: str | None, store: qx.ResultStore,
                                     server: qx.ResultsServer, tmp_path: Path) -> None:
    job_id = new_id("codec")
    make_job(store, 50, job_id=job_id)
    export_zarr(job_of(server, job_id), tmp_path / "s.zarr", compression=compression)
    assert_store_equals_live(tmp_path / "s.zarr", job_of(server, job_id))
    compressors = zarr.open_array(str(tmp_path / "s.zarr" / "img"), mode="r").compressors
    if compression is None:
        assert compressors == ()
    else:
        assert [type(c).__name__ for c in compressors] == ["BloscCodec"]


def test_bad_compression_is_refused(store: qx.ResultStore, server: qx.ResultsServer,
                                    tmp_path: Path) -> None:
    job_id = new_id("lz4")
    make_job(store, 3, job_id=job_id)
    with pytest.raises(ValueError, match="compression"):
        export_zarr(job_of(server, job_id), tmp_path / "s.zarr", compression="lz4")
    assert not (tmp_path / "s.zarr").exists()


# ---------------------------------------------------------------------------- job states, follow
@pytest.mark.parametrize("experiment, params", [  # each run lasts about 0.8 s
    ("rabi", {"n_avg": 40, "n_amplitudes": 20, "rate": 50}),
    ("single_shot", {"n_shots": 3000, "rate": 3750}),
    ("adc_trace", {"n_acquisitions": 40, "n_samples": 200, "rate": 50}),
])
def test_follow_a_running_simulation(experiment: str, params: dict[str, int], store: qx.ResultStore,
                                     server: qx.ResultsServer, tmp_path: Path) -> None:
    sim = Simulation(experiment, store, **params).start()
    job = job_of(server, str(sim.job_id))
    result = export_zarr(job, tmp_path / "s.zarr", follow=True, every=0.05, timeout=30)
    assert sim.join(10) and sim.state == "done"
    assert result.complete and result.state == "done" and result.rounds >= 2
    stored = assert_store_equals_live(tmp_path / "s.zarr", job)
    assert stored.attrs["qm_job_state"] == "done" and stored.attrs["qm_export_complete"] is True
    for name, var in stored.data_vars.items():  # save_all counts of the final snapshot, not the first
        if var.attrs["qm_save_mode"] == "save_all":
            assert var.attrs["qm_count"] == var.sizes[var.dims[0]] == var.attrs["qm_expected_count"]


def test_follow_times_out_and_resumes(store: qx.ResultStore, server: qx.ResultsServer,
                                      tmp_path: Path) -> None:
    job_id = new_id("slow")
    writer, _ = make_job(store, 4, kinds={"I": STREAM_KINDS["I"]}, job_id=job_id, state="running")
    job = job_of(server, job_id)
    with pytest.raises(qx.QMTimeoutError, match="still running"):
        export_zarr(job, tmp_path / "s.zarr", follow=True, every=0.05, timeout=0.3)
    assert ExportStore(tmp_path / "s.zarr").committed() == {"I_item": 4}
    writer.stream("I").append(np.arange(3.0))
    writer.finish()
    result = export_zarr(job, tmp_path / "s.zarr", follow=True)
    assert result.resumed and result.complete and result.counts == {"I_item": 7}
    assert_store_equals_live(tmp_path / "s.zarr", job)


@pytest.mark.parametrize("state", ["dataloss", "error", "closed"])
def test_data_loss_and_execution_errors_are_recorded(state: str, store: qx.ResultStore,
                                                     server: qx.ResultsServer, tmp_path: Path) -> None:
    job_id = new_id(state)
    make_job(store, 5, job_id=job_id, state=state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = export_zarr(job_of(server, job_id), tmp_path / "s.zarr")
    assert result.complete
    stored = assert_store_equals_live(tmp_path / "s.zarr", job_of(server, job_id))
    errors = json.loads(stored.attrs["qm_execution_errors"])
    assert stored.attrs["qm_has_dataloss"] == (1 if state == "dataloss" else 0)
    assert stored.attrs["qm_job_state"] == ("done" if state == "dataloss" else "closed")
    if state == "error":
        assert errors == [{"code": 7, "severity": "error", "message": "simulated execution error"}]
    else:
        assert errors == []


def test_rerun_after_completion_is_a_no_op(store: qx.ResultStore, server: qx.ResultsServer,
                                           tmp_path: Path) -> None:
    job_id = new_id("again")
    make_job(store, 20, job_id=job_id)
    job = job_of(server, job_id)
    first = export_zarr(job, tmp_path / "s.zarr")
    before = tree_digest(tmp_path / "s.zarr")
    again = export_zarr(job, tmp_path / "s.zarr", follow=True)
    assert again.complete and again.resumed and again.rounds == 0 and again.counts == first.counts
    assert tree_digest(tmp_path / "s.zarr") == before  # not one byte rewritten
    assert_store_equals_live(tmp_path / "s.zarr", job)


def test_interrupted_finalization_is_finished_on_rerun(store: qx.ResultStore, server: qx.ResultsServer,
                                                       tmp_path: Path) -> None:
    job_id = new_id("final")
    make_job(store, 5, job_id=job_id)
    job = job_of(server, job_id)
    export_zarr(job, tmp_path / "s.zarr")
    ExportStore(tmp_path / "s.zarr").unfinalize()  # killed after marking complete, before consolidating
    result = export_zarr(job, tmp_path / "s.zarr")
    assert result.complete and result.rounds == 1
    assert ExportStore(tmp_path / "s.zarr").is_consolidated()
    assert_store_equals_live(tmp_path / "s.zarr", job)


# ---------------------------------------------------------------------------------- refusals
def test_a_store_of_another_job_is_refused(store: qx.ResultStore, server: qx.ResultsServer,
                                           tmp_path: Path) -> None:
    a, b = new_id("a"), new_id("b")
    make_job(store, 3, job_id=a)
    make_job(store, 3, job_id=b)
    export_zarr(job_of(server, a), tmp_path / "s.zarr")
    before = tree_digest(tmp_path / "s.zarr")
    with pytest.raises(NotOurStoreError, match=f"holds job '{a}', not job '{b}'") as info:
        export_zarr(job_of(server, b), tmp_path / "s.zarr")
    assert isinstance(info.value, ValueError)
    assert tree_digest(tmp_path / "s.zarr") == before


def test_other_paths_are_refused(store: qx.ResultStore, server: qx.ResultsServer, tmp_path: Path) -> None:
    job_id = new_id("paths")
    make_job(store, 3, job_id=job_id)
    job = job_of(server, job_id)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "notes.txt").write_text("mine")
    with pytest.raises(NotOurStoreError, match="not a zarr store"):
        export_zarr(job, tmp_path / "dir")
    assert (tmp_path / "dir" / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotOurStoreError, match="is a file"):
        export_zarr(job, tmp_path / "file")
    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w").attrs["title"] = "someone else's"
    with pytest.raises(NotOurStoreError, match="no qm-xarray export"):
        export_zarr(job, tmp_path / "foreign.zarr")
    (tmp_path / "empty").mkdir()  # an empty directory is fine
    assert export_zarr(job, tmp_path / "empty").complete
    assert_store_equals_live(tmp_path / "empty", job)


def test_resuming_with_other_options_is_refused(store: qx.ResultStore, server: qx.ResultsServer,
                                                tmp_path: Path) -> None:
    job_id = new_id("layout")
    kinds = {"I": STREAM_KINDS["I"], "flags": STREAM_KINDS["flags"]}
    make_job(store, 5, kinds=kinds, job_id=job_id, state="running")
    job = job_of(server, job_id)
    export_zarr(job, tmp_path / "s.zarr")
    before = tree_digest(tmp_path / "s.zarr")
    with pytest.raises(NotOurStoreError, match="exported with other dims"):
        export_zarr(job, tmp_path / "s.zarr", align=True)
    with pytest.raises(NotOurStoreError, match="exported with other dims"):
        export_zarr(job, tmp_path / "s.zarr", dims={"I": ("shot",)})
    assert tree_digest(tmp_path / "s.zarr") == before


# ------------------------------------------------------------------------------------ repairs
def test_half_written_append_is_repaired_on_resume(store: qx.ResultStore, server: qx.ResultsServer,
                                                   tmp_path: Path) -> None:
    job_id = new_id("repair")
    kinds = {n: STREAM_KINDS[n] for n in ("I", "adc", "img", "avg")}
    writer, _ = make_job(store, 6, kinds=kinds, job_id=job_id, state="running")
    job = job_of(server, job_id)
    path = tmp_path / "s.zarr"
    assert not export_zarr(job, path).complete
    committed = ExportStore(path).committed()
    assert committed == {"I_item": 6, "adc_item": 6, "img_item": 6}
    # a killed append: arrays grown past the commit marker and filled with junk, some not yet grown
    group = zarr.open_group(str(path), mode="r+")
    for name in ("I", "adc", "adc_timestamp"):
        array = group[name]
        array.resize((10, *array.shape[1:]))
        array[6:10] = -99
    assert ExportStore(path).committed() == committed
    for name, kind in kinds.items():
        if not kind.single:
            writer.stream(name).append(make_items(kind, 3, seed=42))
    writer.finish()
    result = export_zarr(job, path)
    assert result.resumed and result.complete and sorted(result.repaired) == ["I", "adc", "adc_timestamp"]
    stored = assert_store_equals_live(path, job)
    assert stored.sizes["I_item"] == 9 and not (stored["I"].values == -99).any()


def test_a_killed_template_write_leaves_nothing_in_the_way(store: qx.ResultStore,
                                                          server: qx.ResultsServer,
                                                          tmp_path: Path) -> None:
    """The template is written beside the target and moved in: a leftover scratch is cleared."""
    job_id = new_id("tpl")
    make_job(store, 4, job_id=job_id)
    scratch = tmp_path / ".s.zarr.qm-partial"
    (scratch / "I").mkdir(parents=True)
    (scratch / "zarr.json").write_text("{}")  # what a kill in the middle of `to_zarr` leaves
    assert export_zarr(job_of(server, job_id), tmp_path / "s.zarr").complete
    assert not scratch.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]
    assert_store_equals_live(tmp_path / "s.zarr", job_of(server, job_id))


def test_streams_declared_while_exporting(store: qx.ResultStore, server: qx.ResultsServer,
                                          tmp_path: Path) -> None:
    """save_all (timestamped) and save streams that appear later get their arrays and attrs."""
    job_id = new_id("late")
    writer, _ = make_job(store, 5, kinds={"I": STREAM_KINDS["I"]}, job_id=job_id, state="running")
    job = job_of(server, job_id)
    export_zarr(job, tmp_path / "s.zarr")
    late = StreamKind("<i8", (4,), timestamps=True)
    late.declare(writer, "late", expected_count=8).append(make_items(late, 8))
    StreamKind("<f8", (3,), single=True).declare(writer, "late_avg", 1).append(np.ones((1, 3)))
    writer.stream("I").append(np.arange(2.0))
    export_zarr(job, tmp_path / "s.zarr")  # the job still runs: the new streams appear
    assert ExportStore(tmp_path / "s.zarr").committed() == {"I_item": 7, "late_item": 8}
    writer.finish()
    assert export_zarr(job, tmp_path / "s.zarr").complete
    stored = assert_store_equals_live(tmp_path / "s.zarr", job)
    assert "late_timestamp" in stored.coords and stored["late_avg"].attrs["qm_save_mode"] == "save"


def test_progress_bar_shows_rate_and_eta(store: qx.ResultStore, server: qx.ResultsServer,
                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = new_id("bar")
    make_job(store, 40, kinds={"I": STREAM_KINDS["I"], "c": STREAM_KINDS["c"]}, job_id=job_id)
    export_zarr(job_of(server, job_id), tmp_path / "s.zarr", progress=True, chunk_bytes=64)
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()
    frames = [line for line in last if "item" in line]
    assert frames and re.search(r"100%.*80(\.0)?/80", frames[-1])
    assert "item/s" in frames[-1] and "<" in frames[-1]  # rate, elapsed<remaining
    export_zarr(job_of(server, job_id), tmp_path / "quiet.zarr", progress=False)
    assert capsys.readouterr().err == ""


def test_follow_needs_no_more_than_the_new_items(store: qx.ResultStore, server: qx.ResultsServer,
                                                 tmp_path: Path) -> None:
    """A second round appends only what is new (commit marker grows, old chunks stay)."""
    job_id = new_id("incr")
    writer, _ = make_job(store, 1000, kinds={"I": STREAM_KINDS["I"]}, job_id=job_id, state="running")
    job = job_of(server, job_id)
    export_zarr(job, tmp_path / "s.zarr", chunk_bytes=800)  # 100 items per chunk
    before = tree_digest(tmp_path / "s.zarr")
    writer.stream("I").append(np.arange(50.0))
    writer.finish()
    export_zarr(job, tmp_path / "s.zarr")
    after = tree_digest(tmp_path / "s.zarr")
    full_chunks = [k for k in before if k.startswith("I/c/") and int(k.rsplit("/", 1)[1]) < 10]
    assert len(full_chunks) == 10 and all(before[k] == after[k] for k in full_chunks)
    assert_store_equals_live(tmp_path / "s.zarr", job)
    assert math.isclose(open_store(tmp_path / "s.zarr")["I"].values[-1], 49.0)


def test_a_store_that_cannot_be_written_is_named_as_asked(server, tmp_path):
    """The error names the store the user asked for: no scratch file name, no bare errno."""
    store = qx.ResultStore()
    make_job(store, 3, kinds={"I": STREAM_KINDS["I"]}, job_id="unwritable")
    with qx.serve(store) as srv:
        job = qx.connect(srv.address).job("unwritable")
        (tmp_path / "notes.txt").write_text("a file, not a folder")
        target = tmp_path / "notes.txt" / "run.zarr"
        with pytest.raises(OSError) as info:
            qx.export_zarr(job, target)
    text = str(info.value)
    assert text.startswith(f"cannot write the zarr store {target}: ")
    assert text.endswith(f" (check that {target.parent} is a folder you can write to, or choose "
                         "another path)")
    assert "qm-partial" not in text and "Errno" not in text
    assert info.value.errno in (errno.EEXIST, errno.ENOTDIR)
