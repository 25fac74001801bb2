"""Child processes for tests and benchmarks: each dies with its parent, says it is ready with a
line, answers command lines, and is stopped for sure. The one harness behind
`qm_xarray.testing.processes` (server and producer subprocesses of the reliability suites) and the
server children of `benchmarks/`.

Parent side, `Child(command)`:

- starts `command` so that the kernel kills it when the thread that started it exits (Linux
  `PR_SET_PDEATHSIG`, set by the child itself before it execs `command`: no `preexec_fn`, since
  running Python between fork and exec in a process with gRPC threads can hang);
- reads its stdout as lines, without threads and each by a deadline: `wait_for(predicate)` (the
  first of all the lines it printed that matches), `read_line()` / `read_json()` (the next line not
  returned yet), `lines` (every line so far);
  Nothing reads while no one asks: a child that prints much more than a pipe holds (64 KiB)
  between two reads blocks until the next one;
- `send(line)`, `request(line)` (a command line out, one JSON line back);
- `stop()`: a `stop` line and the end of its stdin, then SIGTERM, then SIGKILL, each after a
  deadline; `kill()`: SIGKILL. Both always reap it and close its pipes, and so does a weakref
  finalizer when a child is dropped without either, or at interpreter exit: an abandoned child
  never outlives its test.

Child side, `serve_commands(ready, command)` for children written in Python: print the ready line,
then answer each line read on stdin with `command(line)` as one JSON line, until stdin ends (the
parent closed it, or died) or reads `stop`.

Linux for the parent-death signal (elsewhere the child lives until the finalizer stops it).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, TextIO, TypeVar

__all__ = ["Child", "ChildExited", "STOP_TIMEOUT", "child_env", "dying_with_parent", "serve_commands",
           "start_again"]

STOP_TIMEOUT = 10.0  # seconds each step of `stop` waits before the next, harder one
DRAIN_TIMEOUT = 5.0  # seconds a dead child's last output is read for (a grandchild may hold the pipe)

# Runs first in the child: ask to be SIGKILLed when the thread that started it goes away (no
# orphans), then exec the real command (the setting survives exec; the pid stays the same).
_DIE_WITH_PARENT = ("import ctypes, os, signal, sys\n"
                    "try:\n    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG\n"
                    "except (OSError, AttributeError):\n    pass\n"
                    "os.execvp(sys.argv[1], sys.argv[1:])\n")

Stdio = int | IO[Any] | None  # what `subprocess.Popen` takes for stdin, stdout or stderr
T = TypeVar("T")


class ChildExited(RuntimeError):
    """The child closed its stdout (it exited, most likely) before printing the line waited for."""


def dying_with_parent(command: Sequence[str]) -> list[str]:
    """`command` (its first word a program path, or a name on PATH) run so that it dies with the
    thread that starts it."""
    return [sys.executable, "-c", _DIE_WITH_PARENT, *command]


def child_env(pythonpath: str | None = None, **overrides: str) -> dict[str, str]:
    """This process's environment with `pythonpath` (if any) put first on `PYTHONPATH`, and
    `overrides`."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    env.update(overrides)
    return env


def _end(proc: subprocess.Popen[bytes], term_after: float, timeout: float,
         finish: Callable[[], None] | None = None) -> None:
    """Ask `proc` to stop (a `stop` line, then the end of its stdin); SIGTERM if it has not ended
    `term_after` seconds later, SIGKILL `timeout` seconds after that; reap it; then `finish()`
    (default: close its pipes)."""
    if proc.poll() is None:
        try:
            if proc.stdin is not None:
                proc.stdin.write(b"stop\n")
                proc.stdin.close()
        except (OSError, ValueError):  # it stopped reading, or died
            pass
        for wait, harder in ((term_after, proc.terminate), (timeout, proc.kill)):
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                harder()
        else:
            proc.wait(timeout)
    (finish or (lambda: _close_pipes(proc)))()


def _read_to_end(pipe: IO[bytes], timeout: float) -> bytes:
    """What `pipe` holds up to its end, read for at most `timeout` seconds."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(pipe, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0 and selector.select(left):
            chunk = os.read(pipe.fileno(), 65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        try:
            if pipe is not None:
                pipe.close()
        except (OSError, ValueError):
            pass


class Child:
    """`command` in a child process that dies with its parent (see the module's docstring).

    `stdin`, `stderr`: as `subprocess.Popen` takes them (stdin a pipe by default, for `send` and
    `stop`; stderr inherited by default); stdout is always a pipe, read by this object. `env`: the
    child's environment (default: this process's). `name`: how errors call the child.
    `term_after`: seconds `stop()` waits after asking before it sends SIGTERM (default
    `timeout`; 0 for a child that only stops on a signal); `timeout`: seconds it waits after SIGTERM
    before SIGKILL, and after SIGKILL. Use it from one thread at a time (it takes no locks).
    """

    def __init__(self, command: Sequence[str], *, stdin: Stdio = subprocess.PIPE,
                 stderr: Stdio = None, env: Mapping[str, str] | None = None, name: str | None = None,
                 term_after: float | None = None, timeout: float = STOP_TIMEOUT) -> None:
        self.command = list(command)
        self.name = name or f"child {self.command!r}"
        self.lines: list[str] = []  # every whole line read so far, without its newline
        self._next = 0              # the first line `read_line` has not returned
        self._buf = b""
        self._eof = False
        self._term_after = timeout if term_after is None else term_after
        self._timeout = timeout
        self.proc: subprocess.Popen[bytes] = subprocess.Popen(
            dying_with_parent(self.command), stdin=stdin, stdout=subprocess.PIPE, stderr=stderr,
            env=None if env is None else dict(env))
        self._finalizer = weakref.finalize(self, _end, self.proc, self._term_after, timeout)
        self._stderr: str | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    # --- reading ---------------------------------------------------------------------------

    def _read_some(self, timeout: float) -> None:
        """Read what stdout holds within `timeout` seconds (0: only what is there now)."""
        if self._eof:
            return
        stdout = self.proc.stdout
        if stdout is None or stdout.closed:
            self._eof = True
            return
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            if not selector.select(max(timeout, 0.0)):
                return
        chunk = os.read(stdout.fileno(), 65536)
        if not chunk:
            self._eof = True
            chunk = b"\n" if self._buf else b""  # a last line without its newline still counts
        *whole, self._buf = (self._buf + chunk).split(b"\n")
        self.lines.extend(line.decode(errors="replace") for line in whole)

    def _drain(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Read stdout to its end (once the child is gone), for at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self._eof and (left := deadline - time.monotonic()) > 0:
            self._read_some(left)

    def poll_lines(self) -> list[str]:
        """`lines`, after reading what the child printed so far (without waiting)."""
        self._read_some(0.0)
        return list(self.lines)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> str | None:
        """The first line the child printed (from its first on) for which `predicate` holds,
        waiting for more up to `timeout` seconds; None if none came by then or stdout ended."""
        deadline = time.monotonic() + timeout
        seen = 0
        polled = False
        while True:
            for line in self.lines[seen:]:
                if predicate(line):
                    return line
            seen = len(self.lines)
            left = deadline - time.monotonic()
            if self._eof or (left <= 0 and polled):
                return None
            self._read_some(left)
            polled = True

    def read_line(self, timeout: float) -> str:
        """The next line `read_line` has not returned; `TimeoutError` if none comes within
        `timeout` seconds, `ChildExited` if stdout ends first."""
        deadline = time.monotonic() + timeout
        while self._next >= len(self.lines):
            if self._eof:
                raise ChildExited(f"{self.name} exited (status {self._status()}) before its next line")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name} sent no line within {timeout:.0f} s")
            self._read_some(left)
        line = self.lines[self._next]
        self._next += 1
        return line

    def read_json(self, timeout: float) -> Any:
        """The next line, parsed as JSON (see `read_line`)."""
        return json.loads(self.read_line(timeout))

    def _status(self) -> int | str:
        try:
            return self.proc.wait(1.0)
        except subprocess.TimeoutExpired:
            return "still running"

    def stderr_text(self, limit: int = 2000) -> str:
        """The last `limit` characters of what the child wrote to a `stderr=PIPE`, once it has
        ended ("" before, or without a pipe)."""
        if self._stderr is None:
            if self.alive() or self.proc.stderr is None or self.proc.stderr.closed:
                return ""
            try:
                self._stderr = _read_to_end(self.proc.stderr, DRAIN_TIMEOUT).decode(errors="replace")
            except (OSError, ValueError):
                return ""
        return self._stderr[-limit:]

    # --- writing ---------------------------------------------------------------------------

    def send(self, line: str) -> None:
        """Write `line` and a newline to the child's stdin."""
        assert self.proc.stdin is not None, f"{self.name} has no stdin pipe"
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def request(self, line: str, timeout: float) -> Any:
        """`send(line)`, then the child's JSON reply (see `read_json`)."""
        self.send(line)
        return self.read_json(timeout)

    # --- ending ----------------------------------------------------------------------------

    def stop(self, timeout: float | None = None) -> int:
        """Ask, then SIGTERM, then SIGKILL (see the class docstring; `timeout` overrides the
        deadlines); reap; read the rest of its output into `lines`; close the pipes. Returns the
        exit status."""
        self._finalizer.detach()
        if timeout is None:
            _end(self.proc, self._term_after, self._timeout, self._finish)
        else:
            _end(self.proc, min(self._term_after, timeout), timeout, self._finish)
        return self.proc.returncode

    def kill(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGKILL (no clean-up of any kind), reap, read the rest of its output into `lines`,
        close the pipes. Returns the exit status."""
        self._finalizer.detach()
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout)
        self._finish()
        return self.proc.returncode

    def wait(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for the child to end by itself (`subprocess.TimeoutExpired`
        if it does not: it is killed), then read the rest of its output and close the pipes."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._finalizer.detach()
        self._finish()
        return self.proc.returncode

    def _finish(self) -> None:
        """Once the child has ended: read the rest of its output, keep what a stderr pipe holds,
        close the pipes."""
        self._drain()
        self.stderr_text()
        _close_pipes(self.proc)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Child {self.pid} {'running' if self.alive() else 'ended'}: {self.name}>"


def serve_commands(ready: str | Mapping[str, Any], command: Callable[[str], Any] | None = None,
                   stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
    """The child's side: print `ready` (a line, or a mapping as one JSON line), then, for each
    non-empty line read on stdin, print `command(line)` as one JSON line (`{"error": "Type: text"}`
    when it raises; no reply without a `command`), until stdin ends (the parent closed it, or died)
    or reads `stop`. Ctrl-C ends it too."""
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    stdout.write((ready if isinstance(ready, str) else json.dumps(dict(ready))) + "\n")
    stdout.flush()
    try:
        for raw in stdin:
            line = raw.strip()
            if line == "stop":
                break
            if not line or command is None:
                continue
            try:
                reply = command(line)
            except Exception as exc:  # noqa: BLE001 - reported to the parent
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            stdout.write(json.dumps(reply) + "\n")
            stdout.flush()
    except KeyboardInterrupt:
        pass


def start_again(start: Callable[[], T], what: str, attempts: int = 20, pause: float = 0.2) -> T:
    """`start()` of a server child on the port it had, retried while the port is not free yet (a
    killed server's port can stay busy for a moment); `RuntimeError` naming `what` after `attempts`."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            return start()
        except RuntimeError as exc:  # e.g. the port is not free yet
            last = exc
            time.sleep(pause)
    raise RuntimeError(f"could not restart {what}: {last}")
