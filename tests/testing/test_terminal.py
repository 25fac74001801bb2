"""`qm_xarray.testing.terminal`: a command with one output on a pseudo-terminal, by a deadline."""

from __future__ import annotations

import os
import sys

import pytest

from qm_xarray.testing.terminal import on_a_terminal

pytestmark = pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")

SAYS = "import sys; print('piped', sys.stdout.isatty()); print('tty', sys.stderr.isatty(), file=sys.stderr)"


def test_one_output_on_the_terminal_the_other_piped():
    run = on_a_terminal([sys.executable, "-c", SAYS], terminal="stderr")
    assert run.returncode == 0
    assert run.piped == "piped False\n" and run.terminal.strip() == "tty True"


def test_a_child_that_keeps_the_terminal_open_is_killed_at_the_deadline():
    with pytest.raises(TimeoutError, match="more than 0.5 s"):
        on_a_terminal([sys.executable, "-c", "import time; time.sleep(120)"], timeout=0.5)


def test_only_stdout_or_stderr():
    with pytest.raises(ValueError, match="'stdout' or 'stderr'"):
        on_a_terminal(["true"], terminal="stdin")
