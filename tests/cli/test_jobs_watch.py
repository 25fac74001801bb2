"""`qm-xarray jobs --watch`: the job table printed again each time something changed (redrawn in
place on a terminal), until `--until-done`, `--timeout` or Ctrl-C.

In this process the wait between two listings (`jobs.pause`) is replaced by a step of the jobs,
so what each listing sees is known; the subprocess tests wait for output with bounded reads.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import qm_xarray as qx
from qm_xarray.cli import jobs as jobs_cli
from qm_xarray.cli import main
from qm_xarray.testing import embedded_server
from qm_xarray.testing.terminal import on_a_terminal

COMMAND = [sys.executable, "-m", "qm_xarray"]
TIMEOUT = 60


@pytest.fixture()
def served() -> Iterator[tuple[qx.ResultStore, str]]:
    store = qx.ResultStore()
    with embedded_server(store) as srv:
        yield store, srv.address


def stepper(steps: list[Callable[[], None]]) -> Callable[[float], None]:
    """A `pause` that runs the next step of the jobs instead of sleeping (then nothing)."""
    def pause(seconds: float) -> None:
        assert 0 < seconds <= 2.0
        if steps:
            steps.pop(0)()
    return pause


def tables(out: str) -> list[str]:
    """The tables printed one after the other (separated by blank lines)."""
    return [t for t in out.split("\n\n") if t.strip()]


def test_watch_prints_the_table_each_time_it_changes(served: tuple[qx.ResultStore, str],
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    store, address = served
    job = store.create_job("w1")
    stream = job.add_stream("I", dtype="<f8", expected_count=10)
    stream.append(np.zeros(2))
    steps = [lambda: stream.append(np.zeros(3)),   # 5/10
             lambda: None,                          # nothing changed: nothing printed
             lambda: stream.append(np.zeros(5)),   # 10/10, still running
             job.finish]                            # done: --until-done stops
    monkeypatch.setattr(jobs_cli, "pause", stepper(steps))
    code = main(["jobs", "--watch", "--every", "0.01", "--until-done", "--timeout", str(TIMEOUT),
                 "--address", address])
    captured = capsys.readouterr()
    assert (code, captured.err) == (0, "")
    printed = tables(captured.out)
    assert len(printed) == 4 and not steps, captured.out
    progress = [t.splitlines()[1].split()[1:4] for t in printed]
    assert progress == [["running", "2/10", "(20%)"], ["running", "5/10", "(50%)"],
                        ["running", "10/10", "(100%)"], ["done", "10/10", "(100%)"]]
    assert all(t.splitlines()[0].split() == ["job", "state", "progress", "streams", "updated", "flags"]
               for t in printed)


def test_watch_json_prints_one_line_per_change(served: tuple[qx.ResultStore, str],
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    store, address = served
    job = store.create_job("w2")
    stream = job.add_stream("I", dtype="<f8", expected_count=4)
    monkeypatch.setattr(jobs_cli, "pause", stepper([lambda: stream.append(np.zeros(4)), job.finish]))
    code = main(["jobs", "--watch", "--json", "--until-done", "--address", address])
    captured = capsys.readouterr()
    assert (code, captured.err) == (0, "")
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [(j[0]["state"], j[0]["count"]) for j in lines] == [("running", 0), ("running", 4), ("done", 4)]


def test_watch_stops_at_its_timeout(served: tuple[qx.ResultStore, str], monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    store, address = served
    store.create_job("w3").add_stream("I", dtype="<f8", expected_count=4)  # stays running
    waits: list[float] = []
    monkeypatch.setattr(jobs_cli, "pause", waits.append)  # no wait: the deadline comes in a few rounds
    code = main(["jobs", "--watch", "--every", "0.01", "--timeout", "0.2", "--address", address])
    captured = capsys.readouterr()
    assert (code, captured.err) == (0, "") and len(tables(captured.out)) == 1  # nothing changed
    assert waits and all(0 < w <= 0.01 for w in waits)


@pytest.mark.parametrize("argv, text", [
    (["jobs", "--until-done"], "--until-done applies only with --watch"),
    (["jobs", "--timeout", "3"], "--timeout applies only with --watch"),
    (["jobs", "--watch", "--every", "0"], "--every must be a positive"),
    (["jobs", "--watch", "--timeout", "-1"], "--timeout must be a positive"),
])
def test_bad_watch_options(argv: list[str], text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and text in captured.err and len(captured.err.strip().splitlines()) == 1


def lines_of(stream: Any) -> queue.Queue[str]:
    """The lines a child writes, read in a thread (so every read can have a deadline)."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)
        lines.put("")
    threading.Thread(target=read, daemon=True).start()
    return lines


def test_ctrl_c_stops_watching(served: tuple[qx.ResultStore, str]) -> None:
    store, address = served
    store.create_job("w4").add_stream("I", dtype="<f8", expected_count=4)
    proc = subprocess.Popen([*COMMAND, "jobs", "--watch", "--every", "0.1", "--address", address],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = lines_of(proc.stdout)
        assert lines.get(timeout=TIMEOUT).split()[0] == "job"  # the first table is out
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=TIMEOUT) == 130
        assert proc.stderr is not None
        assert proc.stderr.read() == "qm-xarray jobs: interrupted\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=TIMEOUT)


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_on_a_terminal_the_table_is_redrawn_in_place(served: tuple[qx.ResultStore, str]) -> None:
    store, address = served
    store.create_job("w5").add_stream("I", dtype="<f8", expected_count=4)
    run = on_a_terminal([*COMMAND, "jobs", "--watch", "--every", "0.05", "--timeout", "0.5",
                         "--address", address], terminal="stdout", timeout=TIMEOUT)
    assert run.returncode == 0, run.piped
    out = run.terminal
    frames = out.split(jobs_cli.CLEAR)
    assert frames[0] == "" and len(frames) >= 2, out  # each listing starts on a cleared screen
    assert all(f"jobs on {address} at " in f and "w5" in f and "running" in f for f in frames[1:])
