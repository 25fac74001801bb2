"""`qm-xarray plot JOB --follow`: the image rewritten at each redraw while a simulated job grows
(each item fetched once, the last frame the final data), Ctrl-C (exit 130, one line, the last image
kept), and the options' errors.

In this process (`main`), the job is written by the test a few steps after each frame (a wrapper
of `watch`), so a run has the same frames whatever the speed of the machine; as a subprocess, the
test waits for the first image (a bounded poll), then interrupts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import qm_xarray as qx
from qm_xarray.plot import live
from qm_xarray.cli import main
from qm_xarray.testing import RecordingInterceptor, embedded_server
from qm_xarray.testing.stepped import SteppedJob as Stepped
from qm_xarray.testing.terminal import png_size

pytest.importorskip("matplotlib")

COMMAND = [sys.executable, "-m", "qm_xarray"]
TIMEOUT = 60
WATCH = live.watch


@pytest.fixture()
def recorded() -> Iterator[tuple[qx.ResultStore, Any, RecordingInterceptor]]:
    rec = RecordingInterceptor()
    store = qx.ResultStore()
    with embedded_server(store, interceptors=[rec]) as srv:
        yield store, srv, rec


@pytest.fixture(autouse=True)
def no_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_follow_rewrites_the_image_until_the_job_ends(
        recorded: tuple[qx.ResultStore, Any, RecordingInterceptor], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    store, srv, rec = recorded
    run = Stepped(store, "sweep_2d", "follow-2d", n_avg=12, n_flux=5, n_freq=7)
    run.advance(3)
    seen: list[xr.Dataset] = []
    written: list[str] = []

    def watch(*args: Any, **kwargs: Any) -> Iterator[xr.Dataset]:
        for ds in WATCH(*args, **kwargs):
            seen.append(ds)
            yield ds
            written.append(png.read_bytes()[:8].hex())  # the image of this frame is in place
            run.advance(3)

    monkeypatch.setattr(live, "watch", watch)
    png = tmp_path / "follow.png"
    code, out, err = run_main(capsys, "plot", "follow-2d", "--follow", "--every", "0.02", "-o", str(png),
                              "--address", srv.address, "--timeout", "120", "--view", "magphase",
                              "--size", "640x400")
    assert (code, err) == (0, ""), err
    assert out == (f"wrote {png} (640x400 px, image): magnitude and phase of I, Q, mean over 12 items; "
                   f"job follow-2d done, 4 redraws\n")
    assert len(seen) == 4 and len(written) == 4 and png_size(png) == (640, 400)
    assert [p.name for p in tmp_path.iterdir()] == ["follow.png"]  # no temporary file left

    job = qx.connect(srv.address).job("follow-2d")
    for s in job.summary().streams:
        if not s.single:
            assert sum(b - a for a, b in rec.spans(s.name)) == s.count == 12, (s.name, rec.spans(s.name))
    xr.testing.assert_equal(seen[-1], xr.open_dataset(job, engine="qm").load())


def test_follow_of_a_job_that_has_ended_draws_once(recorded: tuple[qx.ResultStore, Any, RecordingInterceptor],
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, srv, _ = recorded
    run = Stepped(store, "single_shot", "ended", n_shots=400)
    run.advance(400)
    png = tmp_path / "shots.png"
    code, out, err = run_main(capsys, "plot", f"qm://{srv.address}/ended", "--follow", "-o", str(png))
    assert (code, err) == (0, "")
    assert out == f"wrote {png} (800x600 px, iq): Q vs I, 400 shots, coloured by state; job ended done, 1 redraw\n"
    assert png_size(png) == (800, 600)


def test_ctrl_c_in_this_process_keeps_the_last_image(
        recorded: tuple[qx.ResultStore, Any, RecordingInterceptor], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    store, srv, _ = recorded
    run = Stepped(store, "rabi", "rabi-int", n_avg=10, n_amplitudes=8)
    run.advance(2)

    def interrupted(*args: Any, **kwargs: Any) -> Iterator[xr.Dataset]:
        frames = WATCH(*args, **kwargs)
        yield next(frames)  # the first snapshot of the running job, then Ctrl-C while waiting
        frames.close()
        raise KeyboardInterrupt

    monkeypatch.setattr(live, "watch", interrupted)
    png = tmp_path / "rabi.png"
    code, out, err = run_main(capsys, "plot", "rabi-int", "--follow", "-o", str(png), "--address", srv.address)
    assert code == 130 and out == ""
    assert err == f"qm-xarray plot: interrupted after 1 redraw; the last image is kept: {png}\n"
    assert png_size(png) == (800, 600)
    run.advance(10)


def test_ctrl_c_stops_the_command(tmp_path: Path) -> None:
    """A real SIGINT to `qm-xarray plot --follow` of a job that keeps running: exit 130, one line
    on stderr, no traceback, the image of the last redraw in place."""
    store = qx.ResultStore()
    with embedded_server(store) as srv:
        job = store.create_job("forever")
        job.add_stream("I", dtype="<f8", expected_count=10_000).append(np.sin(np.arange(50.0)))
        png = tmp_path / "forever.png"
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        proc = subprocess.Popen([*COMMAND, "plot", "forever", "--follow", "--every", "0.1", "-o", str(png),
                                 "--address", srv.address, "--timeout", str(TIMEOUT)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            deadline = time.monotonic() + TIMEOUT
            while not png.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)  # a bounded poll for the first image
            assert png.exists(), proc.communicate(timeout=TIMEOUT)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=TIMEOUT)
        job.finish()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "interrupted" in err and f"the last image is kept: {png}" in err
    assert png_size(png) == (800, 600)


@pytest.mark.parametrize("argv, text", [
    (["plot", "j", "--follow"], "--follow needs -o FILE"),
    (["plot", "j", "--follow", "--no-window"], "--follow needs -o FILE to write the image to (--no-window)"),
    (["plot", "j", "-o", "x.png", "--follow", "--every", "0"], "--every must be a positive"),
    (["plot", "j", "-o", "x.png", "--follow", "--timeout", "-2"], "--timeout must be a positive"),
    (["plot", "j", "-o", "x.png", "--timeout", "5"], "--timeout applies only with --follow"),
    (["plot", "j", "-o", "x.png", "--no-window"], "--no-window applies only with --follow"),
    (["plot", "j"], "give the file to write: -o FILE"),
    (["plot", "run.zarr", "-o", "x.png", "--follow"], "run.zarr is a zarr store, which does not grow"),
])
def test_bad_follow_options(argv: list[str], text: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, *argv)
    assert code == 2 and out == "" and text in err and len(err.strip().splitlines()) == 1, err


def test_bad_output_fails_before_connecting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "plot", "j", "--follow", "-o", str(tmp_path / "x.bmp"),
                            "--address", "127.0.0.1:1")
    assert code == 1 and "no format is called .bmp" in err
    code, _, err = run_main(capsys, "plot", "j", "--follow", "-o", str(tmp_path / "no" / "x.png"),
                            "--address", "127.0.0.1:1")
    assert code == 1 and "no directory" in err
