"""Run a command with one of its outputs on a pseudo-terminal (what a progress bar or a redrawn
table needs to show itself), the other piped; every wait has a deadline."""

from __future__ import annotations

import os
import select
import struct
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TerminalRun", "on_a_terminal", "read_terminal", "png_size"]


@dataclass(frozen=True)
class TerminalRun:
    """How the command ended: its exit code, what it wrote to the pipe, what the terminal got."""

    returncode: int
    piped: str
    terminal: str


def read_terminal(fd: int, timeout: float = 120.0) -> str:
    """Everything a child writes to a pseudo-terminal, until it closes it (`TimeoutError` if it
    has not within `timeout` seconds)."""
    chunks = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"the child kept its terminal open for more than {timeout} s")
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO once the child has closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


def on_a_terminal(argv: Sequence[str], *, terminal: str = "stderr", timeout: float = 120.0) -> TerminalRun:
    """Run `argv` with its `terminal` output ("stdout" or "stderr") on a new pseudo-terminal and
    the other one piped; `TimeoutError` or `subprocess.TimeoutExpired` (the child killed) if it
    runs past `timeout`."""
    if terminal not in ("stdout", "stderr"):
        raise ValueError(f"terminal must be 'stdout' or 'stderr', got {terminal!r}")
    master, slave = os.openpty()
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, terminal: slave}
    try:
        proc = subprocess.Popen(list(argv), stdout=streams["stdout"], stderr=streams["stderr"], text=True)
        os.close(slave)
        try:
            seen = read_terminal(master, timeout)  # ends when the child closes the terminal (exits)
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    finally:
        os.close(master)
    return TerminalRun(proc.returncode, out if terminal == "stderr" else err, seen)


def png_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) of a PNG file, from its header (`AssertionError` if it is not a PNG)."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG: {data[:16]!r}"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)
