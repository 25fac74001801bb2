"""The child-process harness of the tests and benchmarks (`qm_xarray.testing.children`).

Every wait is bounded (WAIT); no assertion depends on how fast the machine is.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qm_xarray.testing.children import Child, ChildExited, child_env, serve_commands

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux: PR_SET_PDEATHSIG")

WAIT = 30.0
PY = sys.executable

# a child that answers commands as the benchmark servers do
COMMANDS = """
from qm_xarray.testing.children import serve_commands
def command(line):
    if line == "boom":
        raise ValueError("no")
    return {"echo": line}
serve_commands({"ready": True}, command)
print("after", flush=True)
"""
IGNORES_STDIN = "import time; print('up', flush=True); time.sleep(600)"
IGNORES_TERM = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('up', flush=True); time.sleep(600)")


def gone(pid: int) -> bool:
    """True once `pid` no longer runs (no such process, or a zombie its new parent has not reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def until(condition: object, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_ready_line_commands_and_a_clean_stop() -> None:
    child = Child([PY, "-c", COMMANDS], name="echo")
    assert child.read_json(WAIT) == {"ready": True}
    assert child.request("hello", WAIT) == {"echo": "hello"}
    assert child.request("boom", WAIT) == {"error": "ValueError: no"}
    child.send("")  # blank lines get no reply
    assert child.request("again", WAIT) == {"echo": "again"}
    assert child.stop() == 0  # the "stop" line ends serve_commands: no signal needed
    assert child.lines[-1] == "after" and not child.alive()
    assert child.proc.stdin is not None and child.proc.stdin.closed
    assert child.proc.stdout is not None and child.proc.stdout.closed
    assert child.stop() == 0  # twice is fine


def test_the_end_of_stdin_stops_serve_commands_too(tmp_path: Path) -> None:
    child = Child([PY, "-c", COMMANDS])
    assert child.read_json(WAIT) == {"ready": True}
    assert child.proc.stdin is not None
    child.proc.stdin.close()
    assert child.wait(WAIT) == 0 and child.lines[-1] == "after"


def test_serve_commands_in_this_process() -> None:
    import io

    out = io.StringIO()
    serve_commands("listening on x", lambda line: [line], io.StringIO("a\n\n b \nstop\nc\n"), out)
    assert out.getvalue().splitlines() == ["listening on x", '["a"]', '["b"]']


def test_stop_escalates_to_sigterm_then_sigkill() -> None:
    deaf = Child([PY, "-c", IGNORES_STDIN], timeout=0.5)
    assert deaf.wait_for(lambda line: line == "up", WAIT) == "up"
    assert deaf.stop() == -signal.SIGTERM
    stubborn = Child([PY, "-c", IGNORES_TERM], timeout=0.5)
    assert stubborn.wait_for(lambda line: line == "up", WAIT) == "up"
    assert stubborn.stop() == -signal.SIGKILL
    prompt = Child([PY, "-c", IGNORES_STDIN], term_after=0, timeout=WAIT)  # a signal at once
    assert prompt.wait_for(lambda line: line == "up", WAIT) == "up"
    assert prompt.stop() == -signal.SIGTERM


def test_reading_is_bounded() -> None:
    quiet = Child([PY, "-c", IGNORES_STDIN], name="quiet", term_after=0)
    assert quiet.read_line(WAIT) == "up"
    with pytest.raises(TimeoutError, match="quiet sent no line within 0 s"):
        quiet.read_line(0.2)
    assert quiet.wait_for(lambda line: line == "never", 0.2) is None
    assert quiet.wait_for(lambda line: line == "up", 0) == "up"  # a line read before counts
    quiet.stop()
    brief = Child([PY, "-c", "import sys; sys.stdout.write('one\\ntwo'); sys.exit(3)"], name="brief")
    assert brief.read_line(WAIT) == "one" and brief.read_line(WAIT) == "two"  # a last line, unended
    with pytest.raises(ChildExited, match=r"brief exited \(status 3\)"):
        brief.read_line(WAIT)
    assert brief.stop() == 3


def test_kill_reads_what_the_child_printed_and_its_stderr() -> None:
    # stderr first: once "b" is read, "oops" is in its pipe, however slow the machine
    code = "import sys; sys.stderr.write('oops'); sys.stderr.flush(); print('a'); print('b', flush=True); " \
           "import time; time.sleep(600)"
    child = Child([PY, "-c", code], stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert child.wait_for(lambda line: line == "b", WAIT) == "b"
    assert child.stderr_text() == ""  # not while it runs
    assert child.kill() == -signal.SIGKILL
    assert child.lines == ["a", "b"] and child.stderr_text() == "oops"


def test_a_dropped_child_is_stopped() -> None:
    child = Child([PY, "-c", IGNORES_STDIN], term_after=0)
    assert child.read_line(WAIT) == "up"
    proc = child.proc
    del child
    gc.collect()
    assert proc.returncode == -signal.SIGTERM  # reaped by the finalizer
    assert proc.stdout is not None and proc.stdout.closed


def test_a_child_dies_with_its_parent() -> None:
    parent_code = (f"from qm_xarray.testing.children import Child\n"
                   f"child = Child([{PY!r}, '-c', {IGNORES_STDIN!r}])\n"
                   f"child.read_line(60)\n"
                   f"print(child.pid, flush=True)\n"
                   f"import time; time.sleep(600)\n")
    parent = Child([PY, "-c", parent_code], env=child_env(), term_after=0)
    grandchild = int(parent.read_line(WAIT))
    assert not gone(grandchild)
    os.kill(parent.pid, signal.SIGKILL)  # no clean-up of any kind: only the kernel can stop it
    parent.kill()
    until(lambda: gone(grandchild), "the child outlived its parent")


def test_child_env_puts_pythonpath_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/b")
    env = child_env("/a", EXTRA="1")
    assert env["PYTHONPATH"] == os.pathsep.join(["/a", "/b"]) and env["EXTRA"] == "1"
    monkeypatch.delenv("PYTHONPATH")
    assert child_env("/a")["PYTHONPATH"] == "/a" and "PYTHONPATH" not in child_env()
    assert json.loads(json.dumps(child_env())) == dict(os.environ)
