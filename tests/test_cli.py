"""The `qm-xarray` command, run as real subprocesses (each bounded by a timeout)."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import qm_xarray as qx
from qm_xarray.cli import build_parser, main
from qm_xarray.client.connection import ConnectionDetails, close_channels
from qm_xarray.client.jobs import JobsClient
from qm_xarray.plot import label, plan
from qm_xarray.simulator import Simulation
from qm_xarray.testing import STREAM_KINDS, make_job
from qm_xarray.testing.terminal import on_a_terminal, png_size

COMMAND = [sys.executable, "-m", "qm_xarray"]
TIMEOUT = 60


def run(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], result.stderr


class Server:
    """`qm-xarray serve --port 0` in a subprocess; `.address` is what it printed (127.0.0.1 when
    it listens on 0.0.0.0). Later options win: `Server("--port", "9999")` listens on 9999."""

    def __init__(self, *args: str, env: dict[str, str] | None = None):
        self.proc = subprocess.Popen([*COMMAND, "serve", "--port", "0", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        first = self.lines.get(timeout=20)
        match = re.fullmatch(r"listening on (127\.0\.0\.1|0\.0\.0\.0):(\d+)\n", first)
        if not match:
            self.stop(signal.SIGKILL)
            assert self.proc.stderr is not None
            raise AssertionError(f"{first!r}; stderr: {self.proc.stderr.read()}")
        self.address = f"127.0.0.1:{match.group(2)}"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")  # end of output

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise


@pytest.fixture()
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.stop()


def demo_files(out: str) -> tuple[Path, Path]:
    """The store and PNG paths the demo says it wrote."""
    store = re.search(r"zarr store: (\S+)", out)
    png = re.search(r"plot: +(\S+)", out)
    assert store and png, out
    return Path(store.group(1)), Path(png.group(1))


def test_demo_is_the_tour(tmp_path: Path) -> None:
    result = run("demo", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    steps = ["[1] results server listening on 127.0.0.1:", "[2] simulating 'rabi'",
             f"[3] exporting job job-1 to {tmp_path / 'job-1.zarr'} while it runs",
             "[4] watching job job-1 over gRPC", "[5] job job-1: done",
             '[6] lazy dataset: xr.open_dataset(job, engine="qm")',
             "[7] export followed the job in", "[8] plot of the store (line: I and Q)",
             "[9] check: xr.testing.assert_equal(xr.open_zarr(store), live) passed"]
    positions = [out.index(step) for step in steps]
    assert positions == sorted(positions)
    progress = [int(n) for n in re.findall(r"I_all (\d+)/200", out)]
    # the run is released a quarter at a time, once shown: it grows however slow the machine is
    assert progress == sorted(progress) and progress[-1] == 200
    assert len(set(progress)) >= 4 and {50, 100, 150} <= set(progress), progress
    table = out[out.index("stream  "):].splitlines()
    assert table[0].split() == ["stream", "dtype", "shape", "count/expected", "state"]
    rows = {line.split()[0]: line.split() for line in table[1:6]}
    assert rows["I_all"][1:4] == ["<f8", "(50,)", "200/200"] and rows["I_all"][4] == "complete"
    assert rows["iteration"][1:4] == ["<i8", "()", "1/1"]
    assert "<xarray.Dataset>" in out and "I_all      (repetition, amplitude) float64" in out
    assert re.search(r"repetition 200 items; state done, complete", out)
    store, png = demo_files(out)
    assert store == tmp_path / "job-1.zarr" and png == tmp_path / "job-1.png"
    assert (store / "zarr.json").is_file() and png_size(png) == (800, 600)
    stored = xr.open_zarr(store)
    assert stored.attrs["qm_job_state"] == "done" and stored.sizes["repetition"] == 200
    assert result.stderr == ""


def test_demo_quiet_with_faults_into_a_fresh_directory() -> None:
    """Without --out the demo writes into a new temporary directory, and says where."""
    result = run("demo", "--experiment", "adc_trace", "--quiet", "--rate", "400",
                 "--param", "n_acquisitions=40", "--dataloss-at", "0.2", "--error-at", "0.5")
    assert result.returncode == 0, result.stderr
    store, png = demo_files(result.stdout)
    try:
        assert "running" not in result.stdout  # no progress lines
        assert "job job-1: closed (DATA LOSS; error 1: simulated execution error" in result.stdout
        assert re.search(r"adc\s+<i2 \+ts\s+\(1000,\)\s+20/40\s+incomplete", result.stdout)
        assert "state closed, complete" in result.stdout and "passed" in result.stdout
        assert "(trace: adc, 5 of 20 traces and their mean)" in result.stdout
        assert store.parent == png.parent and store.parent.name.startswith("qm-xarray-demo-")
        stored = xr.open_zarr(store)
        assert stored.attrs["qm_has_dataloss"] == 1 and stored.sizes["acquisition"] == 20
        assert "simulated execution error" in stored.attrs["qm_execution_errors"]
        assert png_size(png) == (800, 600)
    finally:
        shutil.rmtree(store.parent)


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_demo_progress_bar_on_a_tty(tmp_path: Path) -> None:
    run = on_a_terminal([*COMMAND, "demo", "--experiment", "single_shot", "--rate", "20000",
                         "--out", str(tmp_path)], terminal="stdout", timeout=TIMEOUT)
    assert run.returncode == 0, run.piped
    out = run.terminal
    assert "100%" in out and "15000/15000" in out and "[5] job job-1: done" in out
    assert "(iq: Q vs I, 5000 shots, coloured by state)" in out


def test_serve_simulate_and_stop(server: Server) -> None:
    result = run("simulate", "rabi", "--address", server.address, "--rate", "2000",
                 "--param", "n_avg=30", "--job-id", "cli-rabi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "cli-rabi\n"
    assert "job cli-rabi: done after 30/30 iterations" in result.stderr

    result = run("simulate", "sweep_2d", "--address", server.address, "--rate", "1000",
                 "--cancel-at", "0.5")
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    details = ConnectionDetails.from_address(server.address)
    try:
        jobs = JobsClient(details)
        rabi = jobs.get_job("cli-rabi")
        assert rabi.state == "done" and {s.name: s.count for s in rabi.streams}["I_all"] == 30
        sweep = jobs.get_job(job_id)
        assert sweep.state == "closed" and {s.name: s.count for s in sweep.streams}["I"] == 20
    finally:
        close_channels(details)

    result = run("simulate", "rabi", "--address", server.address, "--job-id", "cli-rabi")
    assert_one_line_error(result, 1, "already exists")
    assert server.stop(signal.SIGTERM) == 0
    assert server.lines.get(timeout=5) == "stopped\n"


def test_simulate_ctrl_c_cancels_the_job(server: Server) -> None:
    proc = subprocess.Popen([*COMMAND, "simulate", "single_shot", "--address", server.address,
                             "--rate", "1000", "--param", "n_shots=1000000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        job_id = proc.stdout.readline().strip()
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and f"interrupted: job {job_id} cancelled" in err
    details = ConnectionDetails.from_address(server.address)
    try:
        assert JobsClient(details).get_job(job_id).state == "closed"
    finally:
        close_channels(details)


def test_serve_stops_on_ctrl_c() -> None:
    srv = Server("--no-chunk-streaming")
    assert srv.stop(signal.SIGINT) == 0
    assert srv.proc.stderr is not None and "Traceback" not in srv.proc.stderr.read()


def test_serve_port_in_use(server: Server) -> None:
    port = server.address.rsplit(":", 1)[1]
    assert_one_line_error(run("serve", "--port", port, timeout=20), 1, "could not listen")


def test_errors_are_one_line() -> None:
    assert_one_line_error(run("simulate", "nope"), 2, "unknown experiment 'nope'")
    assert_one_line_error(run("simulate", "rabi", "--address", "127.0.0.1:1", "--timeout", "5"), 1,
                          "UNAVAILABLE")
    assert_one_line_error(run("simulate", "rabi", "--address", "no-port"), 1, "invalid address")


@pytest.mark.parametrize("argv, code, text", [
    (["demo", "--experiment", "nope"], 2, "unknown experiment"),
    (["demo", "--param", "n_avg"], 2, "NAME=VALUE"),
    (["demo", "--param", "n_avg=x"], 2, "not a number"),
    (["demo", "--param", "bogus=1"], 2, "has no option bogus"),
    (["demo", "--cancel-at", "2"], 2, "cancel_at"),
    (["demo", "--rate", "-1"], 2, "rate"),
])
def test_bad_options_fail_before_starting(argv: list[str], code: int, text: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == code
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing started
    assert text in captured.err and len(captured.err.strip().splitlines()) == 1


def test_parser_lists_the_commands() -> None:
    help_text = build_parser().format_help()
    assert all(name in help_text for name in ("serve", "simulate", "demo"))
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


# ------------------------------------------------------------------- jobs, info, export, plot
@pytest.fixture(scope="module")
def filled() -> Iterator[Server]:
    """A `qm-xarray serve` subprocess holding: every stream kind (done), a single-shot run (done),
    a job with data loss and an execution error (closed: failed), and one cancelled (closed)."""
    srv = Server()
    producer = qx.RemoteStore(srv.address)
    make_job(producer, 6, job_id="kinds")
    lossy, _ = make_job(producer, 4, kinds={"I": STREAM_KINDS["I"], "avg": STREAM_KINDS["avg"]},
                        job_id="lossy", state="running")
    lossy.mark_dataloss()
    lossy.add_error("boom", code=7)
    lossy.cancel()
    Simulation("single_shot", producer, rate=float("inf"), n_shots=2000, job_id="shots").run()
    make_job(producer, 2, kinds={"I": STREAM_KINDS["I"]}, job_id="stopped", state="closed")
    yield srv
    srv.stop()


def run_all(*commands: list[str], env: dict[str, str] | None = None
            ) -> list[subprocess.CompletedProcess[str]]:
    """Run commands concurrently (each a `qm-xarray` subprocess), in order of the results."""
    def one(args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=TIMEOUT,
                              env={**os.environ, **(env or {})})
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, commands))


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`main(argv)` in this process (the code the subprocess runs, without its start-up time)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_jobs_and_info(filled: Server, capsys: pytest.CaptureFixture[str]) -> None:
    a = filled.address
    jobs, info_url = run_all(["jobs", "--address", a], ["info", f"qm://{a}/lossy"])
    for result in (jobs, info_url):
        assert result.returncode == 0 and result.stderr == "", result
    lines = jobs.stdout.splitlines()
    assert lines[0].split() == ["job", "state", "progress", "streams", "updated", "flags"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert list(rows) == ["kinds", "lossy", "shots", "stopped"]
    assert re.match(r"kinds\s+done\s+36/36 \(100%\)\s+10\s", rows["kinds"])
    assert re.match(r"shots\s+done\s+6000/6000 \(100%\)\s+3\s", rows["shots"])
    assert re.match(r"lossy\s+failed\s+4/4 \(100%\)\s+2\s.*DATA LOSS; error 7: boom$", rows["lossy"])
    assert re.match(r"stopped\s+cancelled\s+2/2 \(100%\)\s+1\s", rows["stopped"])  # closed, no error

    out = info_url.stdout
    assert out.startswith(f"job lossy ({a}): failed (DATA LOSS; error 7: boom)\n")
    assert "data loss: yes" in out and "execution errors: error 7: boom" in out
    table = out[out.index("stream "):].splitlines()
    assert table[0].split() == ["stream", "mode", "dtype", "shape", "count/expected", "dims", "units", "long",
                                "name"]
    assert table[1].split() == ["I", "save_all", "<f8", "()", "4/4", "I_item"]  # undescribed: default dims
    assert table[2].split() == ["avg", "save", "<f8", "()", "1/1"]

    code, out, err = run_main(capsys, "jobs", "--address", a, "--json")
    assert code == 0 and err == ""
    listed = {j["job_id"]: j for j in json.loads(out)}
    assert listed["lossy"]["has_dataloss"] is True and listed["lossy"]["state"] == "closed"
    assert (listed["lossy"]["outcome"], listed["stopped"]["outcome"]) == ("failed", "cancelled")
    assert listed["lossy"]["errors"] == [{"code": 7, "severity": "error", "message": "boom"}]
    assert (listed["shots"]["count"], listed["shots"]["expected"]) == (6000, 6000)

    code, out, err = run_main(capsys, "info", "kinds", "--address", a, "--json")
    assert code == 0 and err == ""
    info = json.loads(out)
    assert info["job_id"] == "kinds" and info["state"] == "done" and info["address"] == a
    streams = {s["name"]: s for s in info["streams"]}
    assert list(streams) == list(STREAM_KINDS)
    for name, kind in STREAM_KINDS.items():
        s = streams[name]
        assert (s["dtype"], tuple(s["shape"]), s["timestamps"]) == (kind.dtype, kind.shape, kind.timestamps)
        assert s["save_mode"] == ("save" if kind.single else "save_all")
        assert (s["count"], s["expected_count"]) == ((1, 1) if kind.single else (0, 0) if name == "empty"
                                                     else (6, 6))


def test_export_then_plot_and_describe_the_store(filled: Server, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    a, store = filled.address, tmp_path / "shots.zarr"
    (exported,) = run_all(["export", "shots", str(store), "--address", a, "--json"])
    assert exported.returncode == 0 and exported.stderr == "", exported
    result = json.loads(exported.stdout)
    assert result["complete"] and result["state"] == "done" and result["path"] == str(store)
    assert result["counts"] == {"shot": 2000}
    assert result["has_dataloss"] is False and result["errors"] == []
    job = qx.connect(a).job("shots")
    xr.testing.assert_equal(xr.open_zarr(store), xr.open_dataset(job, engine="qm"))

    (iq,) = run_all(["plot", str(store), "-o", str(tmp_path / "iq.png"), "--size", "640x480"])
    assert iq.returncode == 0 and iq.stderr == "", iq
    assert "(640x480 px, iq): Q vs I, 2000 shots, coloured by state" in iq.stdout
    assert png_size(tmp_path / "iq.png") == (640, 480)

    code, out, err = run_main(capsys, "info", str(store), "--json")
    assert code == 0 and err == ""
    described = json.loads(out)
    assert described["job_id"] == "shots" and described["export_complete"] is True
    assert [(s["name"], s["count"]) for s in described["streams"]] == \
        [("I", 2000), ("Q", 2000), ("state", 2000)]
    meta = described["metadata"]  # read back from the store's CF attributes
    assert meta["streams"]["I"] == {"dims": ["shot"], "units": "V", "long_name": "I quadrature"}
    assert meta["coords"]["shot"]["size"] == 2000 and meta["attrs"]["experiment"] == "single_shot"
    code, out, err = run_main(capsys, "info", "shots", "--address", a)
    assert code == 0 and err == ""
    assert re.search(r"^I\s+save_all\s+<f8\s+\(\)\s+2000/2000\s+shot\s+V\s+I quadrature$", out, re.M), out
    assert re.search(r"^shot\s+shot\s+2000: 0 \.\. 1999\s+shot index$", out, re.M), out
    assert "  experiment: single_shot" in out
    code, out, err = run_main(capsys, "plot", "shots", "--address", a, "-o", str(tmp_path / "line.png"),
                              "--width-px", "500", "--height-px", "300", "--stream", "I")
    assert (code, err) == (0, "") and "(500x300 px, line): I" in out
    assert png_size(tmp_path / "line.png") == (500, 300)
    code, out, err = run_main(capsys, "plot", f"qm://{a}/kinds", "-o", str(tmp_path / "image.png"),
                              "--stream", "img", "--reduce", "last")
    assert (code, err) == (0, "") and "(800x600 px, image): img, last of 6 items" in out
    assert png_size(tmp_path / "image.png") == (800, 600)
    code, out, err = run_main(capsys, "export", "shots", str(store), "--address", a)
    assert (code, err) == (0, "") and out.strip().endswith("already complete, nothing written")


def test_export_follows_a_running_job(filled: Server, tmp_path: Path) -> None:
    sim = Simulation("single_shot", qx.RemoteStore(filled.address), rate=3000, n_shots=6000,
                     job_id="follow").start()
    store = tmp_path / "follow.zarr"
    result = run("export", "follow", str(store), "--follow", "--every", "0.1", "--address",
                 filled.address, "--timeout", "40")
    assert sim.join(10) and sim.state == "done"
    assert result.returncode == 0 and result.stderr == "", result
    assert result.stdout == f"exported job follow (done) to {store}: shot 6000 items; complete\n"
    stored = xr.open_zarr(store)
    assert stored.attrs["qm_job_state"] == "done"
    xr.testing.assert_equal(stored, xr.open_dataset(qx.connect(filled.address).job("follow"), engine="qm"))


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_export_progress_bar_on_a_tty(filled: Server, tmp_path: Path) -> None:
    run = on_a_terminal([*COMMAND, "export", "kinds", str(tmp_path / "k.zarr"), "--address",
                         filled.address], terminal="stderr", timeout=TIMEOUT)
    assert run.returncode == 0, run.piped
    err = run.terminal
    frames = [f for f in err.replace("\r", "\n").splitlines() if "export kinds" in f]
    assert frames and "100%" in frames[-1] and "36.0/36.0" in frames[-1]
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d, +[\d.]+k?item/s\]", frames[-1])  # elapsed<ETA, rate


def test_errors_of_the_data_commands(filled: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    a = filled.address
    # as subprocesses: an unknown job, an unreachable server, a bad path
    results = run_all(["info", "nope", "--address", a], ["jobs", "--address", "127.0.0.1:1"],
                      ["plot", str(tmp_path / "missing.zarr"), "-o", str(tmp_path / "x.png")],
                      env={"QM_XARRAY_CONNECT_TIMEOUT": "1"})
    for result, text in zip(results, ["no job 'nope' on " + a, "cannot reach a results server at 127.0.0.1:1",
                                      "no such zarr store"]):
        assert_one_line_error(result, 1, text)

    # the rest in this process (same code, same handler in main)
    (tmp_path / "notes.txt").write_text("not a store")
    silent = socket.socket()  # accepts connections, never answers: a server that hangs
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    quiet = f"127.0.0.1:{silent.getsockname()[1]}"
    monkeypatch.setenv("QM_XARRAY_CONNECT_TIMEOUT", "1")
    cases = [
        (["export", "nope", str(tmp_path / "nope.zarr"), "--address", a], "no job 'nope' on " + a),
        (["plot", "nope", "--address", a, "-o", str(tmp_path / "x.png")], "no job 'nope' on " + a),
        (["info", "kinds", "--address", quiet], f"cannot reach a results server at {quiet}: "),
        (["export", "kinds", str(tmp_path / "q.zarr"), "--address", quiet],
         f"cannot reach a results server at {quiet}: "),
        (["plot", str(tmp_path / "notes.txt"), "-o", str(tmp_path / "x.png")],
         "notes.txt is not a zarr store"),
        (["info", str(tmp_path / "missing.zarr")], "no such zarr store"),
        (["export", "kinds", str(tmp_path / "notes.txt"), "--address", a],
         "notes.txt is a file, not a zarr store"),
        (["export", "kinds", str(tmp_path), "--address", a], "exists and is not a zarr store"),
        (["plot", "kinds", "--address", a, "-o", str(tmp_path / "no" / "dir" / "x.png")], "no directory"),
        (["plot", "kinds", "--address", a, "-o", str(tmp_path)], f"-o {tmp_path} is a directory: give the file"),
        (["plot", "kinds", "--address", a, "-o", str(tmp_path / "x.png"), "--stream", "nope"],
         "no stream 'nope'; streams: I, c, ts, avg"),
        (["plot", "kinds", "--address", a, "-o", str(tmp_path / "x.png"), "--stream", "avg"],
         "stream 'avg' holds one value"),
    ]
    try:
        for argv, text in cases:
            code, out, err = run_main(capsys, *argv)
            assert code == 1 and out == "" and "Traceback" not in err, (argv, err)
            assert len(err.strip().splitlines()) == 1 and text in err, (argv, err)
    finally:
        silent.close()
    assert not (tmp_path / "nope.zarr").exists() and not (tmp_path / "q.zarr").exists()
    assert (tmp_path / "notes.txt").read_text() == "not a store"


@pytest.mark.parametrize("argv, text", [
    (["plot", "j", "-o", "x.png", "--size", "10x10"], "width must be between 50 and 20000"),
    (["plot", "j", "-o", "x.png", "--size", "big"], "--size takes WIDTHxHEIGHT"),
    (["plot", "j", "-o", "x.png", "--size", "100x100", "--width-px", "80"], "not both"),
    (["plot", "j", "-o", "x.png", "--stream", "a", "--stream", "b", "--stream", "c"], "an I/Q pair"),
    (["export", "j", "s.zarr", "--every", "0"], "--every must be a positive"),
    (["export", "j", "s.zarr", "--timeout", "-1"], "--timeout must be a positive"),
    (["info", "qm://127.0.0.1:9510"], "names no job"),
])
def test_bad_data_command_options(argv: list[str], text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and text in captured.err and len(captured.err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- plot forms
def stream(values: object, dims: tuple[str, ...], mode: str, **attrs: object) -> xr.DataArray:
    return xr.DataArray(np.asarray(values), dims=dims, attrs={"qm_save_mode": mode, **attrs})


def test_plot_forms() -> None:
    rng = np.random.default_rng(0)
    shots = xr.Dataset({"I": stream(rng.normal(size=50), ("I_item",), "save_all"),
                        "Q": stream(rng.normal(size=50), ("Q_item",), "save_all"),
                        "state": stream(rng.random(50) < 0.5, ("state_item",), "save_all")})
    p = plan(shots)
    assert p.kind == "iq" and p.color is not None and p.what == "Q vs I, 50 shots, coloured by state"
    assert plan(shots, ["I"]).kind == "line" and plan(shots, ["state"]).arrays[0].dtype.kind == "i"
    with pytest.raises(ValueError, match="not an I/Q pair"):
        plan(shots.isel(Q_item=slice(0, 10)), ["I", "Q"])

    rabi = xr.Dataset({"I": stream(rng.normal(size=20), ("I_dim_0",), "save"),
                       "I_all": stream(rng.normal(size=(7, 20)), ("I_all_item", "I_all_dim_0"), "save_all"),
                       "n": stream(6, (), "save")})
    assert plan(rabi).kind == "line" and plan(rabi).what == "I_all, mean over 7 items"  # save_all first
    assert plan(rabi, ["I"]).kind == "line" and plan(rabi, ["I"]).what == "I"
    assert plan(rabi, ["I_all"], "none").kind == "image"
    assert plan(rabi, ["I_all"], "last").what == "I_all, last of 7 items"
    with pytest.raises(ValueError, match=r"holds one value \(6\)"):
        plan(rabi, ["n"])

    frames = xr.Dataset({"img": stream(rng.normal(size=(3, 4, 5)), ("f", "r", "c"), "save_all")})
    assert plan(frames).kind == "image" and plan(frames).arrays[0].dims == ("r", "c")
    with pytest.raises(ValueError, match="3 dimensions"):
        plan(frames, reduce="none")
    with pytest.raises(ValueError, match="no data yet"):
        plan(xr.Dataset({"e": stream(np.zeros(0), ("e_item",), "save_all")}), ["e"])
    with pytest.raises(KeyError, match="no stream 'x'"):
        plan(frames, ["x"])


def test_plot_labels_come_from_the_dataset(tmp_path: Path) -> None:
    from qm_xarray.plot import plot

    amplitude = xr.DataArray(np.linspace(0, 1, 20), dims="amp",
                             attrs={"long_name": "Amplitude", "units": "V"})
    ds = xr.Dataset({"I": stream(np.sin(np.arange(20)), ("amp",), "save", long_name="In-phase", units="V")},
                    coords={"amp": amplitude}, attrs={"qm_job_id": "j", "qm_job_state": "done"})
    assert label(ds["I"]) == "In-phase [V]" and label(ds["amp"]) == "Amplitude [V]"
    assert label(xr.DataArray([1], name="plain")) == "plain"
    drawn = plot(ds, tmp_path / "l.png", width_px=333, height_px=211)
    assert drawn.kind == "line" and png_size(tmp_path / "l.png") == (333, 211)


# --------------------------------------------------- serve: durable store, tokens, TLS, warnings
def restarted(*args: str, attempts: int = 25) -> Server:
    """`Server(*args)` again on a port that was just freed (retried while it is still busy)."""
    for attempt in range(attempts):
        try:
            return Server(*args)
        except AssertionError as exc:
            if "could not listen" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def test_serve_store_keeps_jobs_across_sigterm_and_sigkill(tmp_path: Path) -> None:
    store = tmp_path / "store"
    srv = Server("--store", str(store))
    try:
        assert srv.lines.get(timeout=5) == f"store {store}: 0 jobs\n"
        port = srv.address.rsplit(":", 1)[1]
        result = run("simulate", "rabi", "--address", srv.address, "--rate", "5000", "--param", "n_avg=30",
                     "--job-id", "kept")
        assert result.returncode == 0, result.stderr
        producer = qx.RemoteStore(srv.address)  # and a job left running, as by a producer that died
        make_job(producer, 5, kinds={"I": STREAM_KINDS["I"], "ts": STREAM_KINDS["ts"]}, job_id="open",
                 state="running")
        close_channels(producer.details)
        before = run_all(["info", "kept", "--address", srv.address],
                         ["info", "open", "--address", srv.address])
        assert [r.returncode for r in before] == [0, 0], before
        assert "I_all      save_all  <f8    (50,)  30/30" in before[0].stdout
        assert re.search(r"^job open .*: running$", before[1].stdout, re.M)
        assert re.search(r"^ts +save_all +<f8 \+ts +\(\) +5/5 +ts_item$", before[1].stdout, re.M)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            assert srv.stop(sig) == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
            srv = restarted("--store", str(store), "--port", port)
            assert srv.address.endswith(f":{port}")
            assert srv.lines.get(timeout=5) == f"store {store}: 2 jobs\n"
            after = run_all(["info", "kept", "--address", srv.address],
                            ["info", "open", "--address", srv.address])
            assert [r.stdout for r in after] == [r.stdout for r in before], (sig, after)
            assert all(r.returncode == 0 and r.stderr == "" for r in after), after
    finally:
        srv.stop()


def test_serve_token_refuses_and_accepts(capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`--token` guards every call; the producer token (here from the environment) guards writes."""
    for name in ("QM_XARRAY_TOKEN", "QM_XARRAY_PRODUCER_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    srv = Server("--token", "reader-T", env={"QM_XARRAY_PRODUCER_TOKEN": "writer-P"})
    try:
        a = srv.address
        assert_one_line_error(run("jobs", "--address", a), 1,
                              f"the server at {a} refused the call: missing token for GetInfo "
                              "(give the token: --token TOKEN, or set QM_XARRAY_TOKEN)")
        code, out, err = run_main(capsys, "info", "x", "--address", a, "--token", "wrong")
        assert code == 1 and out == "" and len(err.strip().splitlines()) == 1 and "wrong token" in err
        code, out, err = run_main(capsys, "simulate", "rabi", "--address", a, "--token", "reader-T")
        assert code == 1 and "wrong token for CreateJob" in err and "QM_XARRAY_PRODUCER_TOKEN" in err

        monkeypatch.setenv("QM_XARRAY_PRODUCER_TOKEN", "writer-P")
        code, out, err = run_main(capsys, "simulate", "rabi", "--address", a, "--rate", "5000",
                                  "--param", "n_avg=5", "--job-id", "guarded")
        assert (code, out) == (0, "guarded\n"), err
        code, out, err = run_main(capsys, "jobs", "--address", a, "--token", "reader-T")
        assert code == 0 and err == "" and re.search(r"^guarded +done +10/10", out, re.M)
        (with_env,) = run_all(["info", "guarded", "--address", a], env={"QM_XARRAY_TOKEN": "reader-T"})
        assert with_env.returncode == 0 and with_env.stdout.startswith(f"job guarded ({a}): done\n"), with_env
    finally:
        assert srv.stop() == 0


def test_serve_tls_beyond_loopback(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """TLS on 0.0.0.0: no warning; clients trust the certificate with --tls-ca."""
    from qm_xarray.testing.tls import self_signed_certificate

    cert, key = self_signed_certificate()
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    srv = Server("--host", "0.0.0.0", "--tls-cert", str(tmp_path / "cert.pem"),
                 "--tls-key", str(tmp_path / "key.pem"))
    try:
        a, ca = srv.address, str(tmp_path / "cert.pem")
        code, out, err = run_main(capsys, "simulate", "rabi", "--address", a, "--tls-ca", ca,
                                  "--rate", "5000", "--param", "n_avg=5", "--job-id", "secret")
        assert code == 0, err
        (listed,) = run_all(["jobs", "--address", a, "--tls-ca", ca])
        assert listed.returncode == 0 and listed.stderr == "", listed
        assert re.search(r"^secret +done +10/10", listed.stdout, re.M)
        monkeypatch.setenv("QM_XARRAY_CONNECT_TIMEOUT", "1")
        code, _, err = run_main(capsys, "jobs", "--address", a)  # plaintext to a TLS server
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert f"cannot reach a results server at {a}" in err and "give --tls-ca PEM" in err
    finally:
        assert srv.stop() == 0
    assert srv.proc.stderr is not None and srv.proc.stderr.read() == ""


def test_serve_beyond_loopback_without_tls_warns() -> None:
    srv = Server("--host", "0.0.0.0")
    assert srv.stop() == 0
    assert srv.proc.stderr is not None
    lines = srv.proc.stderr.read().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"qm-xarray serve: warning: listening on 0.0.0.0:{srv.address.split(':')[1]}, "
                               "beyond loopback, without TLS: ")
    assert "give --tls-cert and --tls-key" in lines[0]


def test_serve_and_client_bad_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Checked before anything listens: one line, exit 2 (usage) or 1."""
    from qm_xarray.testing.tls import self_signed_certificate

    pems = [*self_signed_certificate(), *self_signed_certificate()]
    for name, pem in zip(["cert", "key", "cert2", "key2"], pems):
        (tmp_path / f"{name}.pem").write_bytes(pem)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "data.txt").write_text("not ours")
    pem = {name: str(tmp_path / f"{name}.pem") for name in ("cert", "key", "key2")}
    cases = [
        (["serve", "--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", pem["key"]], 1,
         "missing.pem: cannot read it: No such file or directory"),
        (["serve", "--tls-cert", pem["cert"]], 2, "--tls-cert and --tls-key go together"),
        (["serve", "--tls-cert", pem["cert"], "--tls-key", pem["key2"]], 1,
         "the key does not belong to the certificate"),
        (["serve", "--tls-cert", pem["key"], "--tls-key", pem["key"]], 1, "no PEM certificate in this file"),
        (["serve", "--store", str(tmp_path / "foreign")], 1, "is not empty and is not a qm-xarray store"),
        (["serve", "--store", str(tmp_path / "foreign" / "data.txt")], 1, "not a directory"),
        (["serve", "--sync"], 2, "--sync needs --store DIR"),
        (["serve", "--max-workers", "0"], 2, "--max-workers must be at least 1"),
        (["serve", "--port", "70000"], 2, "--port must be between 0 and 65535"),
        (["serve", "--token", "two words"], 2, "--token: a token is printable ASCII without spaces"),
        (["jobs", "--tls-ca", str(tmp_path / "missing.pem")], 1, "--tls-ca"),
        (["info", "j", "--tls-ca", pem["key"]], 1, "no PEM certificate in this file"),
        (["simulate", "rabi", "--token", "a\nb"], 2, "a token is printable ASCII"),
    ]
    for argv, code, text in cases:
        if argv[0] == "serve" and "--port" not in argv:
            argv = [*argv, "--port", "0"]  # never the default port, which may be in use
        got, out, err = run_main(capsys, *argv)
        assert (got, out) == (code, ""), (argv, err)
        assert len(err.strip().splitlines()) == 1 and text in err and "Traceback" not in err, (argv, err)
    assert os.listdir(tmp_path / "foreign") == ["data.txt"]


def test_module_entry_point() -> None:
    result = subprocess.run([sys.executable, "-m", "qm_xarray.cli", "--version"], capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert result.returncode == 0 and result.stdout.startswith("qm-xarray "), result


# -- a QOP (a stand-in built from qm-qua's servicers) --------------------------------------------


def test_the_client_commands_read_a_job_of_a_qop(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("qm", reason="the stand-in QOP is built from qm-qua's generated servicers")
    from qm_xarray.testing import StandInQop, make_items

    monkeypatch.delenv("QM_XARRAY_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.qm/config.json token
    kinds = {name: STREAM_KINDS[name] for name in ("I", "c", "avg")}
    items = {name: make_items(kind, 6, seed=i) for i, (name, kind) in enumerate(kinds.items())}
    with StandInQop(qop=3, token="T", cluster_name="lab-a") as qop:
        qop.add_job("qop-7", {name: (kind, items[name]) for name, kind in kinds.items()}, state="done")
        where = ["--address", qop.address, "--token", "T", "--cluster-name", "lab-a"]
        code, out, err = run_main(capsys, "info", "qop-7", *where, "--json")
        assert code == 0, err
        info = json.loads(out[out.index("{"):])  # qm-qua logs a line when first imported
        assert info["state"] == "done" and {s["name"]: s["count"] for s in info["streams"]} == \
            {"I": 6, "c": 6, "avg": 1}
        code, out, err = run_main(capsys, "export", "qop-7", str(tmp_path / "qop.zarr"), *where, "--quiet")
        assert code == 0, err
        exported = xr.open_zarr(tmp_path / "qop.zarr")
        np.testing.assert_array_equal(exported.c.values, items["c"])
        code, out, err = run_main(capsys, "plot", "qop-7", *where, "-o", str(tmp_path / "qop.png"))
        assert code == 0, err
        assert png_size(tmp_path / "qop.png")[0] > 100
        code, out, err = run_main(capsys, "jobs", *where)  # QOP 3's listing: states, no counts
        assert code == 0 and re.search(r"^qop-7 +done +- ", out, re.M), (out, err)  # no counts listed
        code, out, err = run_main(capsys, "info", "qop-7", "--address", qop.address, "--token", "T",
                                  "--cluster-name", "lab-b")
        assert code == 1 and "no cluster named 'lab-b'" in err  # the gateway routes by cluster name


def test_a_refused_port_is_reported_at_once_with_what_to_do() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run("jobs", "--address", f"127.0.0.1:{port}")  # the default deadline, not shortened
    assert_one_line_error(result, 1, f"cannot reach a results server at 127.0.0.1:{port}: nothing "
                          "listens there (connection refused) (is a server running there? start one "
                          "with `qm-xarray serve`, or check --address)")


@pytest.mark.parametrize("value", ["abc", "-3", "0"])
def test_a_bad_connect_timeout_variable_is_one_line(value: str) -> None:
    result = subprocess.run([*COMMAND, "jobs"], capture_output=True, text=True, timeout=TIMEOUT,
                            env={**os.environ, "QM_XARRAY_CONNECT_TIMEOUT": value})
    assert_one_line_error(result, 1, "QM_XARRAY_CONNECT_TIMEOUT")


def test_an_address_without_a_port_and_a_gateway_without_the_cluster(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """No port: qm-qua's configured one (then 80); a gateway's 400 names --cluster-name."""
    from qm_xarray.testing import Redirector

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("QM_XARRAY_TOKEN", raising=False)
    store = qx.ResultStore()
    make_job(store, 3, job_id="here")
    with qx.serve(store) as server:
        (tmp_path / ".qm").mkdir()
        (tmp_path / ".qm" / "config.json").write_text(json.dumps({"quantumMachinesManager_port": server.port}))
        code, out, err = run_main(capsys, "jobs", "--address", "127.0.0.1")
        assert code == 0 and re.search(r"^here +done ", out, re.M), err
    with Redirector(None, status=400) as gateway:
        code, out, err = run_main(capsys, "jobs", "--address", gateway.address, "--cluster-name", "lab-b")
        assert code == 1 and err.strip().endswith("found no cluster named 'lab-b': check --cluster-name")


def test_close_ends_an_orphaned_job(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A job whose producer is gone is ended from the CLI, with the producer token."""
    monkeypatch.delenv("QM_XARRAY_PRODUCER_TOKEN", raising=False)
    monkeypatch.delenv("QM_XARRAY_TOKEN", raising=False)
    store = qx.ResultStore()
    for job_id in ("orphan", "other"):
        make_job(store, 3, kinds={"I": STREAM_KINDS["I"]}, job_id=job_id, state="running")
    with qx.serve(store, token="reader", producer_token="writer") as server:
        a = server.address
        code, out, err = run_main(capsys, "close", "orphan", "--address", a, "--token", "reader")
        assert code == 1 and "wrong token" in err and store.job("orphan").state.value == "running"
        code, out, err = run_main(capsys, "close", "orphan", "--address", a, "--token", "writer",
                                  "--state", "failed", "--message", "the producer died")
        assert (code, out) == (0, f"job orphan on {a}: failed\n"), err
        job = store.job("orphan")
        assert job.state.value == "closed" and [e.message for e in job.errors] == ["the producer died"]
        code, out, err = run_main(capsys, "close", "orphan", "--address", a, "--token", "writer")
        assert code == 1 and "has already ended: nothing to close" in err
        code, out, err = run_main(capsys, "close", "other", "--address", a, "--token", "writer",
                                  "--state", "done")
        assert code == 0 and store.job("other").state.value == "done"
        code, out, err = run_main(capsys, "close", "nope", "--address", a, "--token", "writer")
        assert code == 1 and "no job 'nope'" in err and len(err.strip().splitlines()) == 1
        code, out, err = run_main(capsys, "close", "other", "--message", "x")
        assert code == 2 and "--message goes with --state failed" in err


# ------------------------------------------------------------------ plot: the format of -o FILE
def test_plot_writes_the_format_its_suffix_names(filled: Server, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`plot -o x.jpg` writes JPEG bytes (not PNG under a .jpg name), whatever the suffix's case;
    an unknown or missing suffix is one line naming it and the formats there are, exit status 1."""
    a = filled.address
    for name, magic in (("k.JPG", (b"\xff\xd8\xff",)), ("k.jpeg", (b"\xff\xd8\xff",)),
                        ("k.svg", (b"<?xml", b"<svg")), ("k.Pdf", (b"%PDF",)),
                        ("k.png", (b"\x89PNG\r\n\x1a\n",))):
        target = tmp_path / name
        code, out, err = run_main(capsys, "plot", "kinds", "--address", a, "-o", str(target))
        assert code == 0 and out.startswith(f"wrote {target} (800x600 px, "), err
        assert target.read_bytes().startswith(magic), (name, target.read_bytes()[:16])
    for name, text in (("k.bmp", "no format is called .bmp"), ("k", "has no suffix")):
        target = tmp_path / name
        code, out, err = run_main(capsys, "plot", "kinds", "--address", a, "-o", str(target))
        assert code == 1 and out == "" and "Traceback" not in err, (name, err)
        assert len(err.strip().splitlines()) == 1 and text in err and ".jpg" in err, (name, err)
        assert not target.exists()
    (result,) = run_all(["plot", "kinds", "--address", a, "-o", str(tmp_path / "x.bmp")])
    assert_one_line_error(result, 1, "no format is called .bmp; the formats are ")
