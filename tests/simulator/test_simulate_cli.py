"""`qm-xarray simulate`: the experiments' parameters in `--help`, and a progress bar on a terminal
(or when asked for) and nowhere else. Subprocesses against an embedded server, each bounded."""

from __future__ import annotations

import io
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import qm_xarray as qx
from qm_xarray.cli import build_parser
from qm_xarray.cli.simulate import ProgressBar
from qm_xarray.simulator import EXPERIMENT_CLASSES, Simulation, SingleShot
from qm_xarray.testing import embedded_server
from qm_xarray.testing.terminal import on_a_terminal as terminal_run

COMMAND = [sys.executable, "-m", "qm_xarray"]
TIMEOUT = 120
RUN = ["--rate", "inf", "--param", "n_avg=30"]  # a rabi run of 30 iterations, as fast as it goes


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with embedded_server() as server:
        yield server.address


def help_text(capsys: pytest.CaptureFixture[str], command: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", ["simulate", "demo"])
def test_help_lists_each_experiments_parameters_with_defaults(command: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(capsys, command)
    for name, cls in EXPERIMENT_CLASSES.items():
        line = next(line for line in text.splitlines() if line.strip().startswith(f"{name} "))
        assert cls.description in line
        params = text.split(line, 1)[1].splitlines()[1]  # the line after the experiment's
        for param, default in cls.parameters().items():
            shown = f"{default:g}" if isinstance(default, float) else str(default)
            assert f"{param}={shown}" in params, (name, param, params)
    assert "n_avg=200" in text and "a_pi=0.8 V" in text and "intermediate_frequency=5e+07 Hz" in text


def test_help_follows_the_signatures(capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing is written by hand: a new parameter shows up in --help."""
    original = SingleShot.__init__

    def init(self: SingleShot, seed: int = 0, n_shots: int = 5000, p_decay: float = 0.05,
             threshold_shift: float = 0.25) -> None:
        original(self, seed, n_shots, p_decay)

    monkeypatch.setattr(SingleShot, "__init__", init)
    assert "threshold_shift=0.25" in help_text(capsys, "simulate")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, "simulate", *args], capture_output=True, text=True, timeout=TIMEOUT,
                          check=False)


def on_a_terminal(*args: str) -> tuple[int, str, str]:
    """Run `simulate` with stderr on a pseudo-terminal: (exit code, stdout, what the terminal got)."""
    run = terminal_run([*COMMAND, "simulate", *args], terminal="stderr", timeout=TIMEOUT)
    return run.returncode, run.piped, run.terminal


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_progress_bar_on_a_terminal(address: str) -> None:
    code, out, terminal = on_a_terminal("rabi", "--address", address, "--job-id", "bar-tty", *RUN)
    assert code == 0 and out == "bar-tty\n"
    assert "rabi bar-tty: 100%|" in terminal and "30/30 iterations" in terminal, terminal
    assert "job bar-tty: done after 30/30 iterations" in terminal


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_no_progress_bar_on_a_terminal_when_asked(address: str) -> None:
    code, out, terminal = on_a_terminal("rabi", "--address", address, "--job-id", "bar-off",
                                        "--no-progress", *RUN)
    assert code == 0 and out == "bar-off\n" and "%|" not in terminal
    assert terminal.strip() == "job bar-off: done after 30/30 iterations"


def test_progress_bar_when_forced_and_not_otherwise(address: str) -> None:
    forced = run("single_shot", "--address", address, "--rate", "inf", "--param", "n_shots=500",
                 "--progress")
    assert forced.returncode == 0, forced.stderr
    assert "100%|" in forced.stderr and "500/500 shots" in forced.stderr
    plain = run("single_shot", "--address", address, "--rate", "inf", "--param", "n_shots=500")
    assert plain.returncode == 0
    assert plain.stderr == f"job {plain.stdout.strip()}: done after 500/500 shots\n"


def test_the_bar_follows_a_simulation() -> None:
    sim = Simulation("sweep_2d", qx.ResultStore(), rate=math.inf, n_avg=10, job_id="bar")
    sim.run()
    out = io.StringIO()
    assert ProgressBar(sim, out).bar is None  # not a terminal
    bar = ProgressBar(sim, out, enabled=True)
    bar.update(4)
    bar.close(sim.steps_done)
    text = out.getvalue()
    assert "sweep_2d bar:" in text and "4/10 iterations" in text and "10/10 iterations" in text
    assert "100%" in text


def test_the_command_line_page_lists_the_same_parameters() -> None:
    """docs/cli.md's table of `--param`s and their defaults agrees with the experiment classes."""
    page = (Path(__file__).parents[2] / "docs" / "cli.md").read_text(encoding="utf-8")
    section = page.split("## `simulate`", 1)[1].split("\n## ", 1)[0]
    for name, cls in EXPERIMENT_CLASSES.items():
        row = next(line for line in section.splitlines() if line.startswith(f"| `{name}` | "))
        documented = dict(re.findall(r"`(\w+)` \(([^,)]+)", row.rsplit("|", 2)[1]))
        assert set(documented) == set(cls.parameters()), name
        for param, default in cls.parameters().items():
            assert float(documented[param]) == default, (name, param)
