"""A stand-in QOP server (`StandInQop`) in a real child process on 127.0.0.1, driven by commands.

Why a process: a test can SIGKILL it and start it again on the same port (a QOP that crashed and
came back has forgotten its jobs), and its gRPC threads are not the test's own. Why commands: the
test makes a job grow while clients read it, one command line at a time.

Parent side, `QopProcess(qop=3, ...)`: `start()`, `kill()`, `restart()`, `stop()`, and the
commands `add_job`, `grow`, `set_state`, `mark_dataloss`, `add_error`, `count`, `produced`,
`calls`. Child side, `main()`: `python -m qm_xarray.testing.qop_process --qop 3 --port P ...`
prints `listening on 127.0.0.1:PORT`, then answers one JSON object per line on stdin with one JSON
line (`{"ok": true, ...}` or `{"ok": false, "error": "..."}`, echoing the request's `"id"`), until
stdin ends or reads `stop`.

The items of a stream are known by index (`known_items`), so a parent computes what a client must
read without asking the child. Needs qm-qua (the stand-in is built from its generated servicers).
Linux only (the child dies with the thread that started it).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from ..streams import DEFAULT_DTYPE, StreamSpec
from .children import Child, ChildExited, child_env, serve_commands, start_again
from .jobs import StreamKind
from .processes import expected_items

if TYPE_CHECKING:
    from .qop import StandInQop

__all__ = ["HOST", "REQUEST_TIMEOUT", "QopProcess", "StreamSpecLike", "known_items", "main", "stream_seed"]

HOST = "127.0.0.1"
REQUEST_TIMEOUT = 10.0  # seconds a command waits for the child's reply
READY_PREFIX = "listening on "

# A stream as a command line gives it (`{"dtype", "shape", "single", "timestamps"}`, each optional),
# or any StreamSpec (a `StreamKind`).
StreamSpecLike = Mapping[str, Any] | StreamSpec

_SPEC_KEYS = frozenset({"dtype", "shape", "single", "timestamps"})
_SEEDS = 1024  # seeds below this keep `expected_items` exact in float64 (seed * 2**40 < 2**50)


# ---------------------------------------------------------------------------------------------
# The items of a stream, by index


def _layout(spec: StreamSpecLike) -> tuple[np.dtype[Any], tuple[int, ...], bool, bool]:
    """(element dtype, item shape, single, timestamps) of a StreamSpec or a command's stream dict."""
    if isinstance(spec, StreamSpec):
        return np.dtype(spec.dtype), tuple(spec.shape), bool(spec.single), bool(spec.timestamps)
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise ValueError(f"unknown stream keys {sorted(unknown)}; known: {sorted(_SPEC_KEYS)}")
    shape = spec.get("shape", ())
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(f"a stream shape is a list of positive ints, got {shape!r}")
    return (np.dtype(spec.get("dtype", DEFAULT_DTYPE)), tuple(shape), bool(spec.get("single", False)),
            bool(spec.get("timestamps", False)))


def stream_seed(name: str) -> int:
    """The seed of stream `name`'s items: stable across processes and runs (not Python's `hash`)."""
    return zlib.crc32(name.encode()) % _SEEDS


def known_items(spec: StreamSpecLike, start: int, stop: int, name: str) -> np.ndarray:
    """Items `[start, stop)` of stream `name` of layout `spec`: what `grow` appends, by index.

    Values come from `expected_items(start, stop, width, stream_seed(name))` (width = elements per
    item), reshaped to `(n, *shape)` and cast to the stream's dtype (integers wrap; a bool is the
    value modulo 2). A timestamped stream gives `(value, timestamp)` records, timestamp = index.
    The parent of a `QopProcess` calls it to know what a client must read; for a `single` stream
    the server holds only the last item grown, `known_items(spec, n - 1, n, name)`.
    """
    if not 0 <= start <= stop:
        raise ValueError(f"need 0 <= start <= stop, got [{start}, {stop})")
    dtype, shape, _, timestamps = _layout(spec)
    width = int(np.prod(shape)) if shape else 1
    raw = expected_items(start, stop, width, stream_seed(name)).reshape((stop - start, *shape))
    if dtype.kind == "b":
        values = (raw.astype(np.int64) % 2).astype(dtype)
    elif dtype.kind in "iu":
        values = raw.astype(np.int64).astype(dtype)  # exact in int64, then wrapped to the width
    else:
        values = raw.astype(dtype)
    if not timestamps:
        return values
    value_field: tuple[Any, ...] = ("value", dtype, shape) if shape else ("value", dtype)
    records = np.empty(stop - start, dtype=[value_field, ("timestamp", "<i8")])
    records["value"] = values
    records["timestamp"] = np.arange(start, stop, dtype="<i8")
    return records


# ---------------------------------------------------------------------------------------------
# Child side


class _Commands:
    """Answers the command lines of one child, on its StandInQop."""

    def __init__(self, qop: StandInQop) -> None:
        self.qop = qop
        self.specs: dict[tuple[str, str], StreamSpecLike] = {}
        self.produced: dict[tuple[str, str], int] = {}  # items grown so far, by (job, stream)

    def __call__(self, line: str) -> dict[str, Any]:
        """One reply for one line; errors are replies too, so that every reply carries the id."""
        request_id: Any = None
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise TypeError("a command is a JSON object")
            request_id = request.get("id")
            reply = self._run(request)
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            return {"ok": False, "id": request_id, "error": f"{type(exc).__name__}: {exc}"}
        return {"ok": True, "id": request_id, **reply}

    def _stream(self, request: Mapping[str, Any]) -> tuple[str, str]:
        key = (str(request["job_id"]), str(request["stream"]))
        if key not in self.specs:
            raise KeyError(f"no stream {key[1]!r} in job {key[0]!r} (add_job it first)")
        return key

    def _job(self, request: Mapping[str, Any]) -> str:
        job_id = str(request["job_id"])
        if job_id not in self.qop.job_ids():
            raise KeyError(f"no job {job_id!r} (add_job it first)")
        return job_id

    def _run(self, request: Mapping[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        if cmd == "add_job":
            job_id = str(request["job_id"])
            streams = request.get("streams", {})
            if not isinstance(streams, dict):
                raise ValueError("streams is an object {name: {dtype, shape, single, timestamps}}")
            made: dict[str, tuple[StreamKind, np.ndarray]] = {}
            for name, spec in streams.items():
                dtype, shape, single, timestamps = _layout(spec)
                made[name] = (StreamKind(dtype.str, shape, single, timestamps),
                              known_items(spec, 0, 0, name))
            self.qop.add_job(job_id, made, state=str(request.get("state", "running")))
            for name in streams:
                self.specs[(job_id, name)] = streams[name]
                self.produced[(job_id, name)] = 0
            return {"streams": list(streams)}
        if cmd == "grow":
            key = self._stream(request)
            n = request.get("n")
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise ValueError(f"n is a count of items (an int >= 0), got {n!r}")
            start = self.produced[key]
            if n:
                self.qop.append(*key, known_items(self.specs[key], start, start + n, key[1]))
            self.produced[key] = start + n
            return {"count": self._count(key), "produced": start + n}
        if cmd == "count":
            key = self._stream(request)
            return {"count": self._count(key), "produced": self.produced[key]}
        if cmd == "state":
            self.qop.set_state(self._job(request), str(request["state"]))
            return {}
        if cmd == "dataloss":
            self.qop.set_dataloss(self._job(request), bool(request.get("flag", True)))
            return {}
        if cmd == "error":
            self.qop.add_error(self._job(request), str(request["message"]), int(request.get("code", 0)),
                               str(request.get("severity", "error")))
            return {}
        if cmd == "calls":
            with self.qop._cond:  # the stand-in's lock: its gRPC threads record calls meanwhile
                received = [method for method, _ in self.qop.calls]
            counts: dict[str, int] = {}
            for method in received:
                short = method.rsplit("/", 1)[-1] or method
                counts[short] = counts.get(short, 0) + 1
            return {"calls": counts}
        raise ValueError(f"unknown command {cmd!r}")

    def _count(self, key: tuple[str, str]) -> int:
        """The stream's count as the server reports it (1 at most for a `single` stream)."""
        with self.qop._cond:
            return self.qop._jobs[key[0]].streams[key[1]].count


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m qm_xarray.testing.qop_process",
                                     description="A stand-in QOP server answering JSON commands on stdin.")
    parser.add_argument("--qop", type=int, choices=(2, 3), default=3)
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    parser.add_argument("--token", default=None, help="require `authorization: Bearer TOKEN`")
    parser.add_argument("--cluster-name", default=None)
    parser.add_argument("--no-gateway-headers", action="store_true",
                        help="do not require the gateway's headers")
    parser.add_argument("--no-chunk-streaming", action="store_true")
    parser.add_argument("--no-multiple-streams", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Serve a StandInQop on 127.0.0.1 and answer command lines until stdin ends or reads `stop`."""
    from .qop import StandInQop

    args = _parser().parse_args(argv)
    qop = StandInQop(args.qop, token=args.token, cluster_name=args.cluster_name,
                     require_gateway_headers=not args.no_gateway_headers,
                     chunk_streaming=not args.no_chunk_streaming,
                     multiple_streams=not args.no_multiple_streams, host=HOST, port=args.port)
    qop.start()
    try:
        serve_commands(f"{READY_PREFIX}{qop.address}", _Commands(qop))
    finally:
        qop.stop()


# ---------------------------------------------------------------------------------------------
# Parent side


class QopProcess:
    """A `StandInQop` in a child process on 127.0.0.1, started, killed and restarted by the test.

    `port=0` picks a free port on the first start; `restart()` reuses it. `kill()` is SIGKILL: the
    next start has forgotten every job and call, as a restarted QOP would. The child's stderr goes
    to `log_path` (one file per start, in `log_dir` or a new temporary directory). Start it from a
    thread that outlives it (the child dies with the thread that started it). Commands may come
    from any thread (they take turns); each waits `request_timeout` seconds at most for its reply.
    Start, kill, restart and stop from one thread.
    """

    def __init__(self, qop: int = 3, *, token: str | None = None, cluster_name: str | None = None,
                 require_gateway_headers: bool = True, chunk_streaming: bool = True,
                 multiple_streams: bool = True, port: int = 0,
                 log_dir: str | os.PathLike[str] | None = None,
                 request_timeout: float = REQUEST_TIMEOUT) -> None:
        if qop not in (2, 3):
            raise ValueError("qop must be 2 or 3")
        self.qop = qop
        self.token = token
        self.cluster_name = cluster_name
        self.require_gateway_headers = require_gateway_headers
        self.chunk_streaming = chunk_streaming
        self.multiple_streams = multiple_streams
        self.port = port
        self.request_timeout = request_timeout
        self.log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="qx-qop-"))
        self.child: Child | None = None
        self.starts = 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        if self.child is None:
            raise RuntimeError("the stand-in QOP was never started")
        return self.child.pid

    @property
    def log_path(self) -> Path:
        """The stderr of the latest start."""
        return self.log_dir / f"qop-{self.starts}.log"

    def command(self) -> list[str]:
        """The child's command line."""
        cmd = [sys.executable, "-m", "qm_xarray.testing.qop_process", "--qop", str(self.qop),
               "--port", str(self.port)]
        if self.token is not None:
            cmd += ["--token", self.token]
        if self.cluster_name is not None:
            cmd += ["--cluster-name", self.cluster_name]
        for flag, on in (("--no-gateway-headers", self.require_gateway_headers),
                         ("--no-chunk-streaming", self.chunk_streaming),
                         ("--no-multiple-streams", self.multiple_streams)):
            if not on:
                cmd.append(flag)
        return cmd

    def start(self, timeout: float = 30.0) -> QopProcess:
        """Start the child and wait until it listens (`RuntimeError`, with its stderr, if not)."""
        if self.alive():
            raise RuntimeError(f"the stand-in QOP {self.address} is already running")
        self.starts += 1
        package_root = str(Path(__file__).resolve().parents[2])  # so the child imports this qm_xarray
        env = child_env(package_root, GRPC_VERBOSITY=os.environ.get("GRPC_VERBOSITY", "ERROR"),
                        PYTHONUNBUFFERED="1")
        with open(self.log_path, "w") as log:  # the child writes to its own copy of the descriptor
            self.child = Child(self.command(), stderr=log, env=env, name=f"stand-in QOP {self.address}")
        line = self.child.wait_for(lambda s: s.startswith(READY_PREFIX), timeout)
        if line is None:
            self.child.kill()
            raise RuntimeError(f"the stand-in QOP did not start within {timeout} s:\n"
                               f"{self.log_path.read_text()[-4000:]}")
        self.port = int(line.rsplit(":", 1)[1])
        return self

    def alive(self) -> bool:
        return self.child is not None and self.child.alive()

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind; its jobs are gone with it."""
        if self.child is not None:
            self.child.kill()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the child to stop (a `stop` line, stdin closed), then SIGTERM, then SIGKILL."""
        if self.child is not None:
            self.child.stop(timeout)

    def restart(self, timeout: float = 30.0, attempts: int = 20) -> QopProcess:
        """Start again on the same port (retried while the port is busy), with no jobs."""
        if not self.port:
            raise RuntimeError("restart needs a known port: start() first")
        if self.alive():
            raise RuntimeError(f"the stand-in QOP {self.address} is still running: kill() or stop() it")
        return start_again(lambda: self.start(timeout), f"the stand-in QOP on {self.address}", attempts)

    def __enter__(self) -> Self:
        if not self.alive():
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<QopProcess QOP {self.qop} {self.address} {'running' if self.alive() else 'stopped'}>"

    # --- commands --------------------------------------------------------------------------

    def request(self, cmd: str, **fields: Any) -> dict[str, Any]:
        """Send command `cmd` with `fields`; its reply (`RuntimeError` naming `cmd` on an error,
        a dead child, or no reply within `request_timeout` seconds)."""
        with self._lock:
            child = self.child
            if child is None or not child.alive():
                raise RuntimeError(f"{cmd}: the stand-in QOP {self.address} is not running")
            request_id = next(self._ids)
            deadline = time.monotonic() + self.request_timeout
            try:
                child.send(json.dumps({"cmd": cmd, "id": request_id, **fields}))
                while True:  # skip what is not our reply (a library's print, a late reply)
                    line = child.read_line(max(0.0, deadline - time.monotonic()))
                    try:
                        reply = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(reply, dict) and reply.get("id") == request_id:
                        break
            except (ChildExited, TimeoutError, OSError, ValueError) as exc:
                raise RuntimeError(f"{cmd}: no reply from the stand-in QOP {self.address}: {exc}") from exc
        if not reply.get("ok"):
            raise RuntimeError(f"{cmd} failed in the stand-in QOP {self.address}: {reply.get('error')}")
        return dict(reply)

    def add_job(self, job_id: str, streams: Mapping[str, StreamSpecLike], state: str = "running") -> None:
        """Add a job whose streams (in this order) are empty: `{name: StreamKind or {"dtype": "<f8",
        "shape": [], "single": False, "timestamps": False}}`."""
        wire = {name: _spec_dict(spec) for name, spec in streams.items()}
        self.request("add_job", job_id=job_id, streams=wire, state=state)

    def grow(self, job_id: str, stream: str, n: int) -> int:
        """Append the next `n` known items of `stream` (see `known_items`); returns how many were
        grown so far (the index of the next item; for a save_all stream, its count)."""
        return int(self.request("grow", job_id=job_id, stream=stream, n=n)["produced"])

    def set_state(self, job_id: str, state: str) -> None:
        """Move the job to "running", "done", "canceled", "error" (or "pending", "processing"...)."""
        self.request("state", job_id=job_id, state=state)

    def mark_dataloss(self, job_id: str, flag: bool = True) -> None:
        self.request("dataloss", job_id=job_id, flag=flag)

    def add_error(self, job_id: str, message: str, code: int = 0, severity: str = "error") -> None:
        """Add an execution error (severity "error" or "warning") to the job's report."""
        self.request("error", job_id=job_id, message=message, code=code, severity=severity)

    def count(self, job_id: str, stream: str) -> int:
        """The stream's count as the server reports it (`count_so_far`; at most 1 if `single`)."""
        return int(self.request("count", job_id=job_id, stream=stream)["count"])

    def produced(self, job_id: str, stream: str) -> int:
        """How many items of the stream were grown so far (for a `single` stream, more than 1)."""
        return int(self.request("count", job_id=job_id, stream=stream)["produced"])

    def calls(self) -> dict[str, int]:
        """RPCs received since this start, by method name (`GetNamedResults`...; refused ones too)."""
        return {str(k): int(v) for k, v in self.request("calls")["calls"].items()}


def _spec_dict(spec: StreamSpecLike) -> dict[str, Any]:
    """A stream layout as a command carries it."""
    dtype, shape, single, timestamps = _layout(spec)
    return {"dtype": dtype.str, "shape": list(shape), "single": single, "timestamps": timestamps}


if __name__ == "__main__":
    main()
