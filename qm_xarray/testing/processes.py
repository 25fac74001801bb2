"""Real processes for reliability tests: a results server and a producer, each in a subprocess.

- `ServerProcess`: a results server in a subprocess on 127.0.0.1 (in memory, or durable with
  `store_dir`); `kill()` sends SIGKILL, `restart()` serves the same directory on the same port,
  `peak_rss()` reads the server's VmHWM from /proc.
- `ProducerProcess`: a producer in a subprocess that appends known items through `qx.RemoteStore`
  and prints each count the server acknowledged (so a test can kill it and check what survived).
- `expected_items(start, stop, width, seed)`: the known items those producers write.

Both are `qm_xarray.testing.children.Child`ren: they die with the thread that started them, and
are stopped (or killed) for sure. Linux only (signals, /proc); everything listens on 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from .children import Child, child_env, start_again

__all__ = ["ServerProcess", "ProducerProcess", "expected_items", "cli_supports_store", "HOST"]

HOST = "127.0.0.1"

# The server when the CLI cannot serve a durable store: stops when its stdin ends or reads `stop`.
_SERVER_CODE = """
import sys
import qm_xarray as qx
from qm_xarray.testing.children import serve_commands
path, port = sys.argv[1], int(sys.argv[2])
store = qx.ResultStore(path=path) if path else qx.ResultStore()
server = qx.serve(store, host="127.0.0.1", port=port)
serve_commands(f"listening on {server.address}")
server.stop(grace=0.5)
"""

# A producer: appends `batches` batches of `batch` known items to one stream of an existing job,
# resuming from the count the server reports, and prints "acked <count>" after each append.
_PRODUCER_CODE = """
import sys, time
import numpy as np
import qm_xarray as qx
from qm_xarray.testing.processes import expected_items
address, job_id, stream, batch, batches, seed, pause = sys.argv[1:8]
batch, batches, seed, pause = int(batch), int(batches), int(seed), float(pause)
writer = qx.RemoteStore(address, timeout=10.0).writer(job_id).stream(stream)
width = int(np.prod(writer.layout.shape)) if writer.layout.shape else 1
count = writer.count
print(f"start {count}", flush=True)
for _ in range(batches):
    items = expected_items(count, count + batch, width, seed).reshape((batch,) + writer.layout.shape)
    count = writer.append(items)
    print(f"acked {count}", flush=True)
    if pause:
        time.sleep(pause)
print("done", flush=True)
"""


def expected_items(start: int, stop: int, width: int = 1, seed: int = 0) -> np.ndarray:
    """Items `[start, stop)` of a known stream of float64 items of `width` elements, shape (n, width).

    Every element is distinct (item k holds `seed * 2**40 + k * width + j`, exact in float64),
    so a shifted, torn or mixed-up item never passes for the right one.
    """
    k = np.arange(start, stop, dtype=np.float64)[:, None]
    return seed * 2.0**40 + k * width + np.arange(width, dtype=np.float64)


def cli_supports_store() -> bool:
    """True when `qm-xarray serve` takes `--store DIR` (a durable store)."""
    from ..cli import build_parser

    parser = build_parser()
    for action in parser._actions:  # noqa: SLF001 - argparse has no public way to list subparsers
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict) and "serve" in choices:
            return "--store" in choices["serve"]._option_string_actions  # noqa: SLF001
    return False


def _child_env() -> dict[str, str]:
    return child_env(GRPC_VERBOSITY=os.environ.get("GRPC_VERBOSITY", "ERROR"), PYTHONUNBUFFERED="1")


class ServerProcess:
    """A results server in a subprocess on 127.0.0.1; durable when `store_dir` is given.

    Uses `qm-xarray serve --store DIR` when the CLI has it (and `qm-xarray serve` for a memory
    store), else `python -c` code that runs `qx.serve(qx.ResultStore(path=DIR), port=PORT)`.
    `port=0` picks a free port on the first start; `restart()` reuses it. Start and restart it from
    a thread that outlives it: the child is killed when the starting thread exits (PDEATHSIG).
    """

    def __init__(self, store_dir: str | os.PathLike[str] | None = None, port: int = 0,
                 log_dir: str | os.PathLike[str] | None = None, use_cli: bool | None = None,
                 args: Sequence[str] = (), env: Mapping[str, str] | None = None):
        self.store_dir = None if store_dir is None else Path(store_dir)
        self.port = port
        self.child: Child | None = None
        self.log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="qx-srv-"))
        self.use_cli = (self.store_dir is None or cli_supports_store()) if use_cli is None else use_cli
        self.args = list(args)  # more `qm-xarray serve` options, e.g. a relay's --upstream
        self.env = dict(env or {})  # more environment variables (e.g. a relay's upstream token)
        if self.args and not self.use_cli:
            raise ValueError("serve options (args) need the CLI's serve (use_cli)")
        self.starts = 0
        self.start_seconds: list[float] = []

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return None if self.child is None else self.child.proc

    @property
    def pid(self) -> int:
        assert self.child is not None, "the server is not running"
        return self.child.pid

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"server-{self.starts}.log"

    def _command(self) -> list[str]:
        if self.use_cli:
            cmd = [sys.executable, "-m", "qm_xarray", "serve", "--host", HOST, "--port", str(self.port)]
            return cmd + (["--store", str(self.store_dir)] if self.store_dir is not None else []) + self.args
        return [sys.executable, "-c", _SERVER_CODE, str(self.store_dir or ""), str(self.port)]

    def start(self, timeout: float = 30.0) -> ServerProcess:
        """Start the server and wait until it listens (`RuntimeError` if it does not)."""
        if self.alive():
            raise RuntimeError(f"server {self.address} is already running")
        self.starts += 1
        t0 = time.monotonic()
        with open(self.log_path, "w") as log:  # the child writes to its own copy of the descriptor
            # `qm-xarray serve` stops on SIGTERM, not on the end of its stdin: no wait before it
            self.child = Child(self._command(), stderr=log, env={**_child_env(), **self.env}, term_after=0,
                               name=f"server {self.address}")
        line = self.child.wait_for(lambda s: s.startswith("listening on "), timeout)
        if line is None:
            self.kill()
            raise RuntimeError(f"the server did not start within {timeout} s:\n{self.log_path.read_text()}")
        self.port = int(line.rsplit(":", 1)[1])
        self.start_seconds.append(time.monotonic() - t0)
        return self

    def alive(self) -> bool:
        return self.child is not None and self.child.alive()

    def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> str:
        """The first line the server printed (this start) that matches, waited for by a deadline."""
        assert self.child is not None, "the server is not running"
        line = self.child.wait_for(predicate, timeout)
        if line is None:
            raise RuntimeError(f"the server {self.address} printed no such line within {timeout} s; it "
                               f"printed {self.child.lines}; log:\n{self.log_path.read_text()[-2000:]}")
        return line

    def peak_rss(self) -> int:
        """The server's peak resident set size in bytes (VmHWM), while it runs."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc/PID/status")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind (the crash the durable store promises to survive)."""
        if self.child is not None:
            self.child.kill()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the server to stop (stdin closed, SIGTERM); SIGKILL if it does not within `timeout`."""
        if self.child is not None:
            self.child.stop(timeout)

    def restart(self, timeout: float = 30.0, attempts: int = 20) -> ServerProcess:
        """Start again on the same port and store directory (retried while the port is busy)."""
        assert self.port, "restart needs a known port"
        return start_again(lambda: self.start(timeout), f"the server on {self.address}", attempts)

    def __enter__(self) -> ServerProcess:
        if not self.alive():
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<ServerProcess {self.address} {'running' if self.alive() else 'stopped'}>"


class ProducerProcess:
    """A producer subprocess appending known items to `job_id/stream` (see `expected_items`).

    It prints `acked N` after each append the server acknowledged; `acked` is the last such count.
    """

    def __init__(self, address: str, job_id: str, stream: str, *, batch: int, batches: int,
                 seed: int = 0, pause: float = 0.0):
        args = [address, job_id, stream, str(batch), str(batches), str(seed), str(pause)]
        self.child = Child([sys.executable, "-c", _PRODUCER_CODE, *args], stdin=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, env=_child_env(), name=f"producer of {job_id}/{stream}")

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.child.proc

    def wait_acked(self, count: int, timeout: float) -> int:
        """Wait until the server acknowledged at least `count` items; returns the last count."""
        line = self.child.wait_for(lambda s: s.startswith("acked ") and int(s.split()[1]) >= count,
                                   timeout)
        if line is None:
            raise RuntimeError(f"producer did not reach {count} acknowledged items within {timeout} s "
                               f"(last: {self.acked}); stderr: {self.stderr_text()}")
        return self.acked

    @property
    def acked(self) -> int:
        counts = [int(s.split()[1]) for s in self.child.poll_lines() if s.startswith(("acked ", "start "))]
        return counts[-1] if counts else 0

    def kill(self) -> None:
        self.child.kill()  # every line it printed before dying is read

    def wait(self, timeout: float) -> int:
        return self.child.wait(timeout)

    def stderr_text(self) -> str:
        return self.child.stderr_text()
