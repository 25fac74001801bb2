"""`qx.live_plot` (`qm_xarray.plot.live`): one figure redrawn from `watch` while a simulated job
grows, each item fetched once, the last frame the final data; notebooks, given figures, Ctrl-C.

A run is paced by what it has drawn: the test writes a few more steps of a simulated experiment
after each frame (in a wrapper of `watch`), so every run has the same frames, whatever the speed
of the machine.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import qm_xarray as qx
from qm_xarray.plot import live
from qm_xarray.errors import QmValueError
from qm_xarray.testing import RecordingInterceptor, embedded_server
from qm_xarray.testing.stepped import SteppedJob as Stepped
from qm_xarray.testing.terminal import png_size

pytest.importorskip("matplotlib")

DATA_METHODS = ("GetNamedResult", "GetNamedResults", "GetJobNamedResult")
WATCH = live.watch  # the real one, wrapped below


def paced(run: Stepped, step: int, seen: list[xr.Dataset]) -> Any:
    """A `watch` that writes `step` more steps of `run` after each dataset it yields."""
    def watch(*args: Any, **kwargs: Any) -> Iterator[xr.Dataset]:
        for ds in WATCH(*args, **kwargs):
            seen.append(ds)
            yield ds
            run.advance(step)
    return watch


class Saves:
    """Counts the images written (`save_figure`) and keeps each one's title."""

    def __init__(self) -> None:
        self.titles: list[str] = []
        self.save = live.save_figure

    def __call__(self, fig: Any, out: Any, fmt: Any = None) -> None:
        self.titles.append(fig.get_suptitle())
        self.save(fig, out, fmt)


@pytest.fixture()
def recorded() -> Iterator[tuple[qx.ResultStore, Any, RecordingInterceptor]]:
    rec = RecordingInterceptor()
    store = qx.ResultStore()
    with embedded_server(store, interceptors=[rec]) as srv:
        yield store, srv, rec


@pytest.fixture(autouse=True)
def no_display(monkeypatch: pytest.MonkeyPatch) -> None:
    """No window: the tests draw into files (and into figures they give)."""
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


@pytest.mark.parametrize("experiment, params, step, kind", [
    ("single_shot", {"n_shots": 3000}, 500, "iq"),
    ("rabi", {"n_avg": 40, "n_amplitudes": 20}, 8, "line"),
    ("adc_trace", {"n_acquisitions": 30, "n_samples": 200}, 6, "trace"),
    ("sweep_2d", {"n_avg": 10, "n_flux": 6, "n_freq": 8}, 2, "image"),
])
def test_live_plot_of_a_growing_job_fetches_each_item_once(
        recorded: tuple[qx.ResultStore, Any, RecordingInterceptor], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, experiment: str, params: dict[str, int], step: int,
        kind: str) -> None:
    store, srv, rec = recorded
    run = Stepped(store, experiment, f"live-{experiment}", **params)
    run.advance(step)
    seen: list[xr.Dataset] = []
    saves = Saves()
    monkeypatch.setattr(live, "watch", paced(run, step, seen))
    monkeypatch.setattr(live, "save_figure", saves)
    out = tmp_path / "live.png"
    job = qx.connect(srv.address).job(run.id)
    result = live.follow(job, every=0.02, out=out, timeout=120, width_px=640, height_px=480)
    assert run.finished and result.dataset.attrs["qm_job_state"] == "done"
    assert result.final and not result.interrupted and result.plan is not None
    assert result.plan.kind == kind
    n_frames = len(seen)
    assert n_frames == run.n_steps // step and result.frames == n_frames
    assert len(saves.titles) == n_frames  # the image was rewritten at each frame
    assert png_size(out) == (640, 480)
    assert not [p for p in tmp_path.iterdir() if p.name != "live.png"]  # no temporary file left

    # every item of every save_all stream was fetched once over the whole run
    final_counts = {s.name: s.count for s in job.summary().streams if not s.single}
    for name, count in final_counts.items():
        got = rec.spans(name)
        assert sum(b - a for a, b in got) == count, (name, got)
        assert all(b1 <= a2 for (_, b1), (a2, _) in itertools.pairwise(got)), (name, got)

    # the last frame is the final data; the title showed the progress as it grew
    final = xr.open_dataset(job, engine="qm").load()
    xr.testing.assert_equal(result.dataset, final)
    done, total = live.progress(final)
    assert done == total > 0
    assert f"{total}/{total} items (100%)" in saves.titles[-1] and "(done)" in saves.titles[-1]
    assert any("(running)" in t for t in saves.titles[:-1])
    fractions = [int(t.split(" items (")[0].rsplit(" ", 1)[1].split("/")[0]) for t in saves.titles]
    assert fractions == sorted(fractions) and fractions[0] < total


def test_live_plot_returns_the_final_dataset(recorded: tuple[qx.ResultStore, Any, RecordingInterceptor],
                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, srv, _ = recorded
    run = Stepped(store, "single_shot", "live-returns", n_shots=800)
    run.advance(200)
    seen: list[xr.Dataset] = []
    monkeypatch.setattr(live, "watch", paced(run, 200, seen))
    job = qx.connect(srv.address).job("live-returns")
    ds = live.live_plot(job, every=0.02, out=tmp_path / "shots.svg", timeout=120)
    xr.testing.assert_equal(ds, xr.open_dataset(job, engine="qm").load())
    assert (tmp_path / "shots.svg").read_bytes().lstrip().startswith((b"<?xml", b"<svg"))
    assert len(seen) == 4


# ------------------------------------------------------------------------------ hand-made snapshots
def snapshot(n: int, state: str = "running", expected: int = 100, **attrs: Any) -> xr.Dataset:
    """A dataset as `watch` yields it: I, Q single shots of `n` items, of `expected`."""
    rng = np.random.default_rng(n)
    def var(values: np.ndarray, name: str) -> xr.DataArray:
        return xr.DataArray(values, dims=(f"{name}_item",),
                            attrs={"qm_save_mode": "save_all", "qm_count": len(values),
                                   "qm_expected_count": expected, "units": "V"})
    return xr.Dataset({"I": var(rng.normal(size=n), "I"), "Q": var(rng.normal(size=n), "Q")},
                      attrs={"qm_job_id": "j", "qm_job_state": state, "qm_has_dataloss": 0,
                             "qm_execution_errors": "[]", **attrs})


def fake_watch(*frames: xr.Dataset | BaseException) -> Any:
    """A `watch` that yields these datasets (and raises the exceptions among them)."""
    calls: list[tuple[Any, ...]] = []

    def watch(job: Any, every: float, **kwargs: Any) -> Iterator[xr.Dataset]:
        calls.append((job, every, kwargs))
        for f in frames:
            if isinstance(f, BaseException):
                raise f
            yield f
    watch.calls = calls  # type: ignore[attr-defined]
    return watch


def test_ctrl_c_stops_cleanly_and_returns_the_last_dataset(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = snapshot(10), snapshot(20)
    monkeypatch.setattr(live, "watch", fake_watch(first, second, KeyboardInterrupt()))
    out = tmp_path / "x.png"
    ds = live.live_plot("job", every=0.5, out=out)
    assert ds is second
    assert png_size(out) == (800, 600)  # the last image stays

    monkeypatch.setattr(live, "watch", fake_watch(snapshot(5), KeyboardInterrupt()))
    result = live.follow("job", out=out)
    assert result.interrupted and result.frames == 1 and not result.final

    monkeypatch.setattr(live, "watch", fake_watch(KeyboardInterrupt()))
    empty = live.live_plot("job")  # interrupted before the first snapshot
    assert isinstance(empty, xr.Dataset) and not empty.data_vars


def test_options_go_to_watch_and_bad_ones_fail_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    watch = fake_watch(snapshot(100, "done"))
    monkeypatch.setattr(live, "watch", watch)
    live.live_plot("job", every=0.25, timeout=9, dims={"I": ("shot",)})
    assert watch.calls == [("job", 0.25, {"timeout": 9, "dims": {"I": ("shot",)}, "on_dataloss": "ignore"})]
    for bad, error in [({"every": 0}, QmValueError), ({"view": "polar"}, QmValueError),
                       ({"reduce": "max"}, QmValueError), ({"out": tmp_path / "x.bmp"}, QmValueError),
                       ({"out": tmp_path / "no" / "x.png"}, FileNotFoundError), ({"timeout": -1}, ValueError)]:
        with pytest.raises(error):
            live.live_plot("job", **bad)
    assert len(watch.calls) == 1  # nothing was watched for the bad ones


def test_waiting_for_data_then_drawing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saves = Saves()
    monkeypatch.setattr(live, "save_figure", saves)
    monkeypatch.setattr(live, "watch", fake_watch(snapshot(0), snapshot(30), snapshot(100, "done")))
    result = live.follow("job", out=tmp_path / "x.png")
    assert result.frames == 3 and result.final and result.plan is not None and result.plan.kind == "iq"
    assert saves.titles[0].startswith("j: waiting for data (running) · 0/200 items (0%)")
    assert saves.titles[1].startswith("j: Q vs I, 30 shots (running) · 60/200 items (30%)")
    assert saves.titles[2].startswith("j: Q vs I, 100 shots (done) · 200/200 items (100%)")

    # a job that ended with nothing to draw: the reason, as an error
    monkeypatch.setattr(live, "watch", fake_watch(snapshot(0, "done")))
    with pytest.raises(QmValueError, match="data yet"):
        live.live_plot("job")


def test_a_frame_shows_the_items_both_streams_of_a_pair_have(monkeypatch: pytest.MonkeyPatch) -> None:
    full = snapshot(12)  # Q appended after I: one step behind
    ahead = xr.Dataset({"I": full.I, "Q": full.Q.isel(Q_item=slice(0, 9))}, attrs=full.attrs)
    trimmed = live.common_items(ahead)
    assert (trimmed.sizes["I_item"], trimmed.sizes["Q_item"]) == (9, 9)
    monkeypatch.setattr(live, "watch", fake_watch(ahead))
    result = live.follow("job")
    assert result.plan is not None and result.plan.what == "Q vs I, 9 shots"
    assert result.dataset.sizes["I_item"] == 12  # the dataset returned is the one watch gave


def test_data_loss_and_errors_are_in_the_title(monkeypatch: pytest.MonkeyPatch) -> None:
    errors = json.dumps([{"code": 3, "severity": "error", "message": "boom"}])
    monkeypatch.setattr(live, "watch", fake_watch(snapshot(40, "closed", qm_has_dataloss=1,
                                                           qm_execution_errors=errors)))
    result = live.follow("job")
    text = result.figure.get_suptitle()
    assert "(failed) · 80/200 items (40%)" in text and "DATA LOSS; error 3: boom" in text


def test_a_given_figure_is_updated_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure()
    FigureCanvasAgg(fig)
    redraws = []
    monkeypatch.setattr(fig.canvas, "draw_idle", lambda: redraws.append(fig.get_suptitle()))
    monkeypatch.setattr(live, "watch", fake_watch(snapshot(10), snapshot(100, "done")))
    result = live.follow("job", figure=fig)
    assert result.figure is fig and result.mode == "canvas" and len(redraws) == 2
    assert "(done)" in redraws[-1] and fig.axes  # drawn into the figure given


def fake_ipython(monkeypatch: pytest.MonkeyPatch, kernel: bool = True) -> list[tuple[str, Any]]:
    """IPython as a notebook has it: `get_ipython()` with a kernel, `display`, `clear_output`."""
    shown: list[tuple[str, Any]] = []
    ipython = types.ModuleType("IPython")
    shell = types.SimpleNamespace(kernel=object() if kernel else None)
    ipython.get_ipython = lambda: shell  # type: ignore[attr-defined]
    display = types.ModuleType("IPython.display")
    display.display = lambda obj: shown.append(("display", obj))  # type: ignore[attr-defined]
    display.clear_output = lambda wait=False: shown.append(("clear", wait))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    return shown


def test_in_a_notebook_one_figure_is_shown_again_each_redraw(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = fake_ipython(monkeypatch)
    monkeypatch.setattr(live, "watch", fake_watch(snapshot(10), snapshot(50), snapshot(100, "done")))
    result = live.follow("job")
    assert result.mode == "notebook"
    assert shown == [("clear", True), ("display", result.figure)] * 3  # the same figure each time

    # a figure given in a notebook (inline backend: a plain canvas) is shown the same way
    shown.clear()
    from matplotlib.figure import Figure
    fig = Figure()
    monkeypatch.setattr(live, "watch", fake_watch(snapshot(100, "done")))
    assert live.follow("job", figure=fig).mode == "notebook"
    assert shown == [("clear", True), ("display", fig)]

    # IPython in a terminal (no kernel) is not a notebook
    shown = fake_ipython(monkeypatch, kernel=False)
    monkeypatch.setattr(live, "watch", fake_watch(snapshot(100, "done")))
    assert live.follow("job").mode == "file" and shown == []


def test_a_window_is_served_while_snapshots_are_fetched_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    class GuiCanvas(FigureCanvasAgg):
        required_interactive_framework = "stand-in"

    fig = Figure()
    GuiCanvas(fig)
    idles = []
    monkeypatch.setattr(fig.canvas, "start_event_loop", lambda timeout=0: idles.append(timeout))
    monkeypatch.setattr(live, "watch", fake_watch(snapshot(10), snapshot(100, "done")))
    result = live.follow("job", figure=fig)
    assert result.mode == "window" and result.final and result.dataset.sizes["I_item"] == 100
    assert all(t == live.IDLE for t in idles)

    monkeypatch.setattr(live, "watch", fake_watch(snapshot(10), KeyboardInterrupt()))
    result = live.follow("job", figure=fig)  # Ctrl-C while fetching, in the thread: stops cleanly
    assert result.interrupted and result.frames == 1

    monkeypatch.setattr(live, "watch", fake_watch(snapshot(10), QmValueError("lost")))
    with pytest.raises(QmValueError, match="lost"):
        live.follow("job", figure=fig)


def test_no_window_without_a_display(monkeypatch: pytest.MonkeyPatch) -> None:
    if sys.platform in ("darwin", "win32"):
        pytest.skip("always a display there")
    assert not live.display_available() and live.window_figure() is None
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert live.display_available()
    monkeypatch.setenv("MPLBACKEND", "agg")
    assert live.window_figure() is None  # a display, but a backend without windows


def test_importing_qm_xarray_and_live_plot_does_not_import_matplotlib() -> None:
    code = ("import sys, qm_xarray, qm_xarray.plot.live, qm_xarray.plot; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0 and out.stdout.strip() == "False", out


def test_qx_live_plot_is_the_function(monkeypatch: pytest.MonkeyPatch) -> None:
    import qm_xarray

    final = snapshot(100, "done")
    monkeypatch.setattr(live, "watch", fake_watch(final))
    assert qm_xarray.live_plot is live.live_plot
    assert qm_xarray.live_plot("job", every=1.0) is final
