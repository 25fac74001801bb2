"""The `qm-xarray` command, run as real subprocesses (each bounded by a timeout)."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from qm_xarray.cli import build_parser, main
from qm_xarray.client.connection import ConnectionDetails, close_channels
from qm_xarray.client.jobs import JobsClient

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
    """`qm-xarray serve --port 0` in a subprocess; `.address` is what it printed."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([*COMMAND, "serve", "--port", "0", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        first = self.lines.get(timeout=20)
        match = re.fullmatch(r"listening on (127\.0\.0\.1:\d+)\n", first)
        assert match, first
        self.address = match.group(1)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

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


def test_demo_shows_growth_and_final_table() -> None:
    start = time.monotonic()
    result = run("demo")
    assert time.monotonic() - start < 30
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for step in ("[1] results server listening on 127.0.0.1:", "[2] simulating 'rabi'",
                 "[3] watching job job-1 over gRPC", "[4] job job-1: done"):
        assert step in out
    progress = re.findall(r"I_all (\d+)/200", out)
    assert len(progress) >= 3 and progress[-1] == "200" and int(progress[0]) < 200
    table = out[out.index("stream  "):].splitlines()
    assert table[0].split() == ["stream", "dtype", "shape", "count/expected", "state"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["I_all"][1:4] == ["<f8", "(50,)", "200/200"] and rows["I_all"][4] == "complete"
    assert rows["iteration"][1:4] == ["<i8", "()", "1/1"]
    assert result.stderr == ""


def test_demo_quiet_with_faults() -> None:
    result = run("demo", "--experiment", "adc_trace", "--quiet", "--rate", "400",
                 "--param", "n_acquisitions=40", "--dataloss-at", "0.2", "--error-at", "0.5")
    assert result.returncode == 0, result.stderr
    assert "running" not in result.stdout  # no progress lines
    assert "job job-1: closed (DATA LOSS; error 1: simulated execution error" in result.stdout
    assert re.search(r"adc\s+<i2 \+ts\s+\(1000,\)\s+20/40\s+incomplete", result.stdout)


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_demo_progress_bar_on_a_tty() -> None:
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen([*COMMAND, "demo", "--experiment", "single_shot", "--rate", "20000"],
                                stdout=slave, stderr=subprocess.PIPE, text=True)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO once the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        os.close(master)
    out = b"".join(chunks).decode(errors="replace")
    assert "100%" in out and "15000/15000" in out and "[4] job job-1: done" in out


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
