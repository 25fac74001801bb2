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

import os
import sys
import zlib
from typing import Any

try:
    from qm_xarray.testing.children import Child, child_env, serve_commands
except ImportError:  # a child serving a qm_xarray without the harness (an A/B against an old copy)
    import importlib.util

    _spec = importlib.util.spec_from_file_location(  # the harness of this repository (stdlib only)
        "_qx_children", os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                                     "qm_xarray", "testing", "children.py"))
    assert _spec is not None and _spec.loader is not None
    _children = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_children)
    Child, child_env, serve_commands = (  # type: ignore[misc]
        _children.Child, _children.child_env, _children.serve_commands)

MESSAGE_BYTES = 1024 * 1024  # payload per data message, as qm_xarray.server._rpc.MESSAGE_BYTES
JOB_ID = "bench"
STREAM = "data"
RAW_METHOD = "/bench.Raw/Stream"
START_TIMEOUT = 120.0

__all__ = ["JOB_ID", "MESSAGE_BYTES", "RAW_METHOD", "START_TIMEOUT", "STREAM",
           "ServerProcess", "serve_commands", "start_script", "start_server", "values"]


def values(n_items: int) -> Any:
    """The benchmark's float64 values: distinct, with every byte position varying."""
    import numpy as np

    return np.arange(n_items, dtype=np.float64) * 1.0000001 + 0.5


# --------------------------------------------------------------------------- parent side


class ServerProcess(Child):
    """A script of this folder in a child process that dies with this one (a
    `qm_xarray.testing.children.Child`): its first JSON line in `info`, `request(command)` -> its
    JSON reply; `stop()` (or garbage collection, or this process's end) ends it."""

    def __init__(self, script: str, *args: str, pythonpath: str | None = None) -> None:
        self.kind = args[0] if args else os.path.basename(script)
        self.info: dict[str, Any] = {}
        super().__init__([sys.executable, os.path.abspath(script), *args],
                         env=child_env(pythonpath or os.environ.get("QX_BENCH_SERVER_PYTHONPATH")),
                         name=f"benchmark child {self.kind} ({os.path.basename(script)})")

    @property
    def port(self) -> int:
        return int(self.info["port"])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def read_json(self, timeout: float = START_TIMEOUT) -> Any:
        """The child's next JSON line (`TimeoutError`, or `RuntimeError` if it exits first)."""
        return super().read_json(timeout)

    def request(self, line: str, timeout: float = START_TIMEOUT) -> Any:
        """Send one command line; the child's JSON reply."""
        return super().request(line, timeout)


def start_script(script: str, *args: str, pythonpath: str | None = None,
                 timeout: float = START_TIMEOUT, first_line: bool = True) -> ServerProcess:
    """Run `script` (a file of this folder) with `args` in a child process that dies with this one;
    wait for its first JSON line unless `first_line` is false. `pythonpath` (default
    `QX_BENCH_SERVER_PYTHONPATH`) goes first on the child's PYTHONPATH."""
    server = ServerProcess(script, *args, pythonpath=pythonpath)
    if first_line:
        try:
            server.info = server.read_json(timeout)
        except BaseException:
            server.stop()
            raise
    return server


def start_server(kind: str, nbytes: int, pythonpath: str | None = None,
                 timeout: float = START_TIMEOUT) -> ServerProcess:
    """Start a `kind` server ("qx" or "raw") of `nbytes` bytes in a child process; wait for its port."""
    if kind not in ("qx", "raw"):
        raise ValueError(f"unknown server kind {kind!r}")
    return start_script(__file__, kind, str(nbytes), pythonpath=pythonpath, timeout=timeout)


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
    serve_commands({"kind": kind, "port": port, "nbytes": nbytes, "crc32": crc, "module": module,
                    "pid": os.getpid()})
    server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
