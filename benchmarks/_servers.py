"""Servers for the benchmarks, each in its own process.

The parent runs this file as a script (`python _servers.py KIND NBYTES`); the child builds its data,
starts a gRPC server on 127.0.0.1 port 0 and prints one JSON line (`port`, `nbytes`, `crc32`,
`module`), then serves until its stdin reaches end of file (the parent closed it, or the parent died)
or it reads `stop`. Kinds:

- `qx`:  a `qx.ResultStore` with job `bench`, stream `data` of `NBYTES // 8` float64 values, served
  by `qx.serve` (v1, v2 and our own services).
- `raw`: a grpcio generic unary-stream handler `/bench.Raw/Stream` that sends the same bytes as raw
  `bytes` messages of `MESSAGE_BYTES` each (prebuilt, no protobuf): the transport's ceiling.

Both hold the same values (`values(n)`), so one expected array checks all of them.

`QX_BENCH_SERVER_PYTHONPATH` (or `start_server(..., pythonpath=...)`) is prepended to the child's
`PYTHONPATH`, to measure a scratch copy of `qm_xarray` against the installed one; the child reports
which `qm_xarray` it imported as `module`.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
import weakref
import zlib
from dataclasses import dataclass, field
from typing import Any

MESSAGE_BYTES = 1024 * 1024  # payload per data message, as qm_xarray.server._rpc.MESSAGE_BYTES
JOB_ID = "bench"
STREAM = "data"
RAW_METHOD = "/bench.Raw/Stream"
START_TIMEOUT = 120.0
STOP_TIMEOUT = 10.0


def values(n_items: int) -> Any:
    """The benchmark's float64 values: distinct, with every byte position varying."""
    import numpy as np

    return np.arange(n_items, dtype=np.float64) * 1.0000001 + 0.5


# --------------------------------------------------------------------------- parent side


@dataclass
class ServerProcess:
    """A server running in a child process; `stop()` (or garbage collection) ends it."""

    kind: str
    proc: subprocess.Popen[bytes]
    info: dict[str, Any]
    _finalizer: Any = field(default=None, repr=False)

    @property
    def port(self) -> int:
        return int(self.info["port"])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """Ask the child to stop (stdin EOF), then SIGTERM, then SIGKILL; always reap it."""
    if proc.poll() is None:
        try:
            if proc.stdin is not None:
                proc.stdin.write(b"stop\n")
                proc.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass
        for step in (proc.terminate, proc.kill):
            try:
                proc.wait(STOP_TIMEOUT)
                break
            except subprocess.TimeoutExpired:
                step()
        proc.wait(STOP_TIMEOUT)
    for stream in (proc.stdin, proc.stdout):
        try:
            if stream is not None:
                stream.close()
        except (OSError, ValueError):
            pass


def start_server(kind: str, nbytes: int, pythonpath: str | None = None,
                 timeout: float = START_TIMEOUT) -> ServerProcess:
    """Start a `kind` server ("qx" or "raw") of `nbytes` bytes in a child process; wait for its port."""
    if kind not in ("qx", "raw"):
        raise ValueError(f"unknown server kind {kind!r}")
    env = dict(os.environ)
    extra = pythonpath or os.environ.get("QX_BENCH_SERVER_PYTHONPATH")
    if extra:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), kind, str(nbytes)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        line = _read_line(proc, timeout)
        info = json.loads(line)
    except BaseException:
        _terminate(proc)
        raise
    server = ServerProcess(kind, proc, info)
    server._finalizer = weakref.finalize(server, _terminate, proc)
    return server


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"benchmark server did not report its port within {timeout:.0f} s")
            if not sel.select(left):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(
                    f"benchmark server exited (status {proc.wait()}) before reporting its port")
            buf += chunk
    return buf.split(b"\n", 1)[0].decode()


# --------------------------------------------------------------------------- child side


def _serve_qx(nbytes: int) -> tuple[Any, int, int, str]:
    import qm_xarray as qx

    data = values(nbytes // 8)
    store = qx.ResultStore()
    job = store.create_job(job_id=JOB_ID)
    job.add_stream(STREAM, dtype="<f8").append(data)
    job.finish()
    crc = zlib.crc32(data.view("u1"))
    del data
    server = qx.serve(store, host="127.0.0.1", port=0)
    return server, server.port, crc, qx.__file__


def _serve_raw(nbytes: int) -> tuple[Any, int, int, str]:
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    raw = values(nbytes // 8).tobytes()
    crc = zlib.crc32(raw)
    messages = [raw[pos:pos + MESSAGE_BYTES] for pos in range(0, len(raw), MESSAGE_BYTES)]
    del raw

    def stream(request: bytes, context: Any) -> Any:
        yield from messages

    server = grpc.server(ThreadPoolExecutor(max_workers=64))
    service, method = RAW_METHOD.strip("/").split("/")
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, {
        method: grpc.unary_stream_rpc_method_handler(stream, request_deserializer=None,
                                                     response_serializer=None)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port, crc, grpc.__file__


def _main(argv: list[str]) -> int:
    kind, nbytes = argv[0], int(argv[1])
    server, port, crc, module = (_serve_qx if kind == "qx" else _serve_raw)(nbytes)
    sys.stdout.write(json.dumps({"kind": kind, "port": port, "nbytes": nbytes, "crc32": crc,
                                 "module": module, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    try:
        for line in sys.stdin:  # EOF when the parent closes stdin or dies
            if line.strip() == "stop":
                break
    except KeyboardInterrupt:
        pass
    server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
