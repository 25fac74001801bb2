"""A relay's copy of an upstream job, as readers see it: the `copy` column of `qm-xarray jobs`, the
`copy of:` line of `info`, the "origin" of their JSON, the attrs of the datasets (and of an
export), and the warning of an interrupted copy. A job that is not a copy shows none of it.

The copies are made directly in a store (`create_job(..., origin=)`, `set_origin`), without the
relay's capture loop, and served with `qx.serve`.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import qm_xarray as qx
from qm_xarray.cli import jobs as jobs_cli
from qm_xarray.cli import main
from qm_xarray.testing import RecordingInterceptor, embedded_server, our_streams_manager


UPSTREAM = "10.0.0.1:9510"
STREAMS = [{"name": "I", "expected_count": 4}]


@dataclass
class Relay:
    """A served store holding a plain job and copies in each standing."""

    store: qx.ResultStore
    server: qx.ResultsServer
    rec: RecordingInterceptor
    writers: dict[str, qx.JobWriter]

    @property
    def address(self) -> str:
        return self.server.address

    def job(self, job_id: str) -> qx.Job:
        return qx.connect(self.address).job(job_id)

    def origin(self, job_id: str) -> qx.Origin:
        """What the store says of a copy now."""
        origin = self.store.job(job_id).origin
        assert origin is not None
        return origin


def copy_of(store: qx.ResultStore, job_id: str, items: int) -> tuple[qx.JobWriter, qx.Origin]:
    origin = qx.Origin(UPSTREAM, job_id)
    writer = store.create_job(job_id, streams=STREAMS, origin=origin)
    writer.stream("I").append(np.arange(items, dtype=float))
    return writer, origin


@pytest.fixture()
def relay() -> Iterator[Relay]:
    store = qx.ResultStore()
    plain = store.create_job("plain", streams=STREAMS)
    plain.stream("I").append(np.arange(4.0))
    plain.finish()
    writers = {"plain": plain}
    live, origin = copy_of(store, "live", 2)
    live.set_origin(origin.progress(0))
    behind, origin = copy_of(store, "behind", 1)
    behind.set_origin(origin.progress(12345))
    cut, origin = copy_of(store, "cut", 3)
    cut.set_origin(origin.progress(0))
    cut.set_origin(origin.interrupt("gone"))
    whole, origin = copy_of(store, "whole", 4)
    whole.finish()
    whole.set_origin(origin.complete())
    writers.update(live=live, behind=behind, cut=cut, whole=whole)
    rec = RecordingInterceptor()
    with embedded_server(store, interceptors=[rec]) as server:
        yield Relay(store, server, rec, writers)


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def rows_of(table: str) -> tuple[list[str], dict[str, list[str]]]:
    """The header and the rows (by job id) of a `jobs` table, as their columns' text."""
    lines = table.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
    def cut(line: str) -> list[str]:
        ends = [*starts[1:], None]
        return [line[a:b].strip() for a, b in zip(starts, ends)]
    return cut(lines[0]), {cut(line)[0]: cut(line) for line in lines[1:]}


# -- qm-xarray jobs --------------------------------------------------------------------------------


def test_jobs_shows_how_far_each_copy_is(relay: Relay, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "jobs", "--address", relay.address)
    assert (code, err) == (0, "")
    header, rows = rows_of(out)
    assert header == ["job", "state", "progress", "streams", "updated", "copy", "flags"]
    copy = {job: row[header.index("copy")] for job, row in rows.items()}
    assert re.fullmatch(r"live \d+\.\d s", copy.pop("live")), out
    assert copy == {"plain": "", "behind": "12,345 behind", "cut": "interrupted", "whole": "complete"}
    assert rows["cut"][1] == "running"  # nobody knows how the upstream job ended


def test_jobs_json_gives_each_copy_its_origin(relay: Relay, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "jobs", "--address", relay.address, "--json")
    assert (code, err) == (0, "")
    listed = {j["job_id"]: j for j in json.loads(out)}
    assert listed["plain"]["origin"] is None
    for job_id in ("live", "behind", "cut", "whole"):
        assert listed[job_id]["origin"] == relay.origin(job_id).to_json()
    assert listed["cut"]["origin"]["status"] == "interrupted" and listed["cut"]["origin"]["reason"] == "gone"
    assert listed["behind"]["origin"]["behind"] == 12345


def test_jobs_of_a_server_without_copies_look_as_before(capsys: pytest.CaptureFixture[str]) -> None:
    store = qx.ResultStore()
    store.create_job("p", streams=STREAMS).stream("I").append(np.zeros(2))
    with embedded_server(store) as server:
        code, out, err = run_main(capsys, "jobs", "--address", server.address)
        assert (code, err) == (0, "")
        assert out.splitlines()[0].split() == ["job", "state", "progress", "streams", "updated", "flags"]
        assert re.fullmatch(r"p\s+running\s+2/4 \(50%\)\s+1\s+\S+ \S+", out.splitlines()[1])
        code, out, err = run_main(capsys, "jobs", "--address", server.address, "--json")
    assert code == 0 and json.loads(out)[0]["origin"] is None  # the key is there, null


def stepper(steps: list[Callable[[], None]]) -> Callable[[float], None]:
    """A `pause` of `jobs --watch` that runs the next step instead of sleeping."""
    def pause(seconds: float) -> None:
        if steps:
            steps.pop(0)()
    return pause


def test_watch_reprints_when_a_copy_changes_standing_not_when_it_is_checked(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    store = qx.ResultStore()
    writer, origin = copy_of(store, "w", 1)
    writer.set_origin(origin.progress(3))
    def end() -> None:
        writer.stream("I").append(np.zeros(3))
        writer.finish()
        writer.set_origin(origin.complete())

    steps = [lambda: writer.set_origin(origin.progress(3)),  # checked again, same standing: nothing
             lambda: writer.set_origin(origin.interrupt("upstream gone")),
             end]
    monkeypatch.setattr(jobs_cli, "pause", stepper(steps))
    with embedded_server(store) as server:
        code, out, err = run_main(capsys, "jobs", "--watch", "--until-done", "--every", "0.01",
                                  "--timeout", "60", "--address", server.address)
        # an interrupted copy will not end by itself: --until-done stops there
        assert (code, err) == (0, "") and steps == [end]
        tables = [t for t in out.split("\n\n") if t.strip()]
        assert [rows_of(t)[1]["w"][5] for t in tables] == ["3 behind", "interrupted"], out
        end()

        code, out, err = run_main(capsys, "jobs", "--watch", "--json", "--until-done", "--address",
                                  server.address)
    assert (code, err) == (0, "")
    (line,) = out.splitlines()
    assert json.loads(line)[0]["origin"]["status"] == "complete"


# -- qm-xarray info --------------------------------------------------------------------------------


def test_info_says_whose_copy_a_job_is_and_how_it_stands(relay: Relay,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    a = relay.address
    code, out, err = run_main(capsys, "info", "cut", "--address", a)
    assert (code, err) == (0, "")
    assert out.splitlines()[:2] == [
        f"job cut ({a}): running",
        f"copy of: job cut on {UPSTREAM}, interrupted: gone; the data stops where the copy stopped"]
    code, out, err = run_main(capsys, "info", "whole", "--address", a)
    assert out.splitlines()[1] == f"copy of: job whole on {UPSTREAM}, complete"
    code, out, err = run_main(capsys, "info", "live", "--address", a)
    assert re.fullmatch(rf"copy of: job live on {UPSTREAM}, capturing, up to date, checked \d+\.\d s ago",
                        out.splitlines()[1]), out
    code, out, err = run_main(capsys, "info", "behind", "--address", a)
    assert out.splitlines()[1].startswith(f"copy of: job behind on {UPSTREAM}, capturing, 12345 items behind")

    code, out, err = run_main(capsys, "info", "plain", "--address", a)
    assert code == 0 and "copy" not in out and out.splitlines()[1].startswith("progress: ")

    code, out, err = run_main(capsys, "info", "cut", "--address", a, "--json")
    assert code == 0 and json.loads(out)["origin"] == relay.origin("cut").to_json()
    code, out, err = run_main(capsys, "info", "plain", "--address", a, "--json")
    assert code == 0 and json.loads(out)["origin"] is None


# -- datasets -------------------------------------------------------------------------------------


def test_a_copy_s_dataset_says_what_it_is_a_copy_of(relay: Relay) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a copy that is not interrupted does not warn
        whole = xr.open_dataset(relay.job("whole"), engine="qm")
        live = xr.open_dataset(relay.job("live"), engine="qm")
    assert (whole.attrs["qm_copy_of"], whole.attrs["qm_capture"]) == (f"{UPSTREAM}/whole", "complete")
    assert (live.attrs["qm_copy_of"], live.attrs["qm_capture"]) == (f"{UPSTREAM}/live", "capturing")
    assert "qm_capture_reason" not in whole.attrs and "qm_capture_reason" not in live.attrs
    np.testing.assert_array_equal(whole.I.values, np.arange(4.0))


def test_an_interrupted_copy_warns_once_and_names_upstream_and_reason(relay: Relay) -> None:
    assert issubclass(qx.CaptureInterruptedWarning, UserWarning)
    with pytest.warns(qx.CaptureInterruptedWarning) as record:
        ds = xr.open_dataset(relay.job("cut"), engine="qm")
    assert len(record) == 1 and record[0].filename == __file__
    message = str(record[0].message)
    assert UPSTREAM in message and "gone" in message and "the data stops where the copy stopped" in message
    assert ds.attrs["qm_capture"] == "interrupted" and ds.attrs["qm_capture_reason"] == "gone"
    assert ds.attrs["qm_copy_of"] == f"{UPSTREAM}/cut"
    np.testing.assert_array_equal(ds.I.values, np.arange(3.0))  # what arrived before


def test_a_job_that_is_not_a_copy_has_no_copy_attrs(relay: Relay) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_dataset(relay.job("plain"), engine="qm")
    assert not [k for k in ds.attrs if k.startswith(("qm_copy", "qm_capture"))]
    snap = qx.snapshot(relay.job("plain"))
    assert snap.origin is None


@pytest.mark.parametrize("how", ["job", "v2"])
def test_the_snapshot_reads_the_origin_with_the_metadata_in_one_call(relay: Relay, how: str) -> None:
    opened = relay.job("cut") if how == "job" else our_streams_manager("127.0.0.1", relay.server.port,
                                                                         "cut", how)
    relay.rec.clear()
    snap = qx.snapshot(opened)
    assert snap.origin == relay.origin("cut")
    assert relay.rec.count("GetJob") == 1 and relay.rec.count("GetMetadata") == 1
    relay.rec.clear()
    assert qx.snapshot(opened, metadata=False).origin is None  # neither is asked
    assert relay.rec.count("GetJob") == 0 and relay.rec.count("GetMetadata") == 0


def test_refresh_follows_the_copy_s_standing(relay: Relay) -> None:
    writer = relay.writers["cut"]
    with pytest.warns(qx.CaptureInterruptedWarning):
        ds = xr.open_dataset(relay.job("cut"), engine="qm")
    origin = relay.origin("cut")
    writer.set_origin(origin.progress(0))  # the relay reached the upstream again
    writer.stream("I").append(np.ones(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = qx.refresh(ds)
    assert again.attrs["qm_capture"] == "capturing" and "qm_capture_reason" not in again.attrs
    assert again.sizes["I_item"] == 4
    writer.set_origin(origin.interrupt("timed out"))
    with pytest.warns(qx.CaptureInterruptedWarning, match="timed out"):
        assert qx.refresh(again).attrs["qm_capture_reason"] == "timed out"


def test_watch_of_a_copy_carries_the_copy_attrs(relay: Relay) -> None:
    frames = list(qx.watch(relay.job("whole"), every=0.01, timeout=30))
    assert frames[-1].attrs["qm_copy_of"] == f"{UPSTREAM}/whole"
    assert frames[-1].attrs["qm_capture"] == "complete"


def test_a_job_of_a_qop_is_asked_nothing_about_copies() -> None:
    qop_module = pytest.importorskip("qm_xarray.testing.qop")
    from qm_xarray.testing import STREAM_KINDS, make_items

    kind = STREAM_KINDS["c"]
    with qop_module.StandInQop(qop=3, require_gateway_headers=False) as qop:
        qop.add_job("j", {"I": (kind, make_items(kind, 3))}, state="done")
        job = qx.connect(qop.address).job("j")
        snap = qx.snapshot(job)
        ds = xr.open_dataset(job, engine="qm")
        assert snap.origin is None and "qm_copy_of" not in ds.attrs and "qm_capture" not in ds.attrs
        assert not [m for m, _ in qop.calls if "qm_xarray" in m]  # no GetJob of our JobsService


# -- export ---------------------------------------------------------------------------------------


def test_an_export_of_a_copy_keeps_its_attrs_and_info_of_the_store_shows_them(
        relay: Relay, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cut.zarr"
    with pytest.warns(qx.CaptureInterruptedWarning):
        qx.export_zarr(relay.job("cut"), path)
    stored = xr.open_zarr(path, consolidated=False).attrs  # the job runs: the export is not finished
    assert (stored["qm_copy_of"], stored["qm_capture"], stored["qm_capture_reason"]) == \
        (f"{UPSTREAM}/cut", "interrupted", "gone")
    code, out, err = run_main(capsys, "info", str(path))
    assert code == 0 and out.splitlines()[1] == \
        f"copy of: job cut on {UPSTREAM}, interrupted: gone; the data stops where the copy stopped"
    code, out, err = run_main(capsys, "info", str(path), "--json")
    assert json.loads(out)["origin"] == qx.Origin(UPSTREAM, "cut", "interrupted", "gone").to_json()

    # the copy resumed, and its job ended: the resumed export holds the new standing, no old reason
    writer, origin = relay.writers["cut"], relay.origin("cut")
    writer.set_origin(origin.progress(0))
    writer.stream("I").append(np.ones(1))
    writer.finish()
    writer.set_origin(origin.complete())
    result = qx.export_zarr(relay.job("cut"), path)
    assert result.resumed and result.complete
    stored = xr.open_zarr(path).attrs
    assert (stored["qm_copy_of"], stored["qm_capture"]) == (f"{UPSTREAM}/cut", "complete")
    assert "qm_capture_reason" not in stored
    code, out, err = run_main(capsys, "info", str(path))
    assert (code, err) == (0, "") and out.splitlines()[1] == f"copy of: job cut on {UPSTREAM}, complete"

    plain = tmp_path / "plain.zarr"
    qx.export_zarr(relay.job("plain"), plain)
    assert not [k for k in xr.open_zarr(plain).attrs if k.startswith(("qm_copy", "qm_capture"))]
    code, out, _ = run_main(capsys, "info", str(plain), "--json")
    assert code == 0 and json.loads(out)["origin"] is None


def test_the_command_line_shows_the_warning_of_an_interrupted_copy_as_one_line(
        relay: Relay, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "cut", str(tmp_path / "cut.zarr"), "--address", relay.address]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    warned = [line for line in err if "warning" in line]
    assert warned and warned[0].startswith("qm-xarray export: warning: ") and "gone" in warned[0]
    assert not any("warnings.warn" in line or ".py:" in line for line in err)  # no Python source shown
