"""Test helpers for qm_xarray and for users' own tests (as `zarr.testing`).

- `make_job`, `STREAM_KINDS`, `make_items`: fake jobs with every stream kind and known contents;
- `embedded_server`: a ResultStore served on 127.0.0.1, port 0, as a context manager;
- `reference_streams_manager`: the reference qm-qua client pointed at any server (needs qm-qua);
- `our_streams_manager`: ours, built the same way, for conformance tests;
- `RecordingInterceptor`: records every RPC a server receives, with its request, and `spans(stream)`
  gives the item ranges the data RPCs asked for (each item fetched once?);
- `strategies`: hypothesis strategies for stream layouts and items (needs hypothesis);
- `StandInQop`: an independent stand-in QOP 2/3 server built only from qm-qua's generated
  servicers, for compatibility tests (needs qm-qua; loaded on first use); `QopProcess`: the same
  in a child process, driven by commands, that a test can kill -9 and restart (a relay's upstream);
- `Redirector`: a cleartext HTTP/2 stand-in for the gateway's redirect probe `POST /` (needs h2;
  loaded on first use).

Submodules: `children` (child processes that die with their parent, read by deadlines and stopped
for sure: the harness of `processes` and of the benchmarks), `processes` (server and producer
subprocesses), `load` (the load measurement), `reference` (`streams_manager_factory`: the one
recipe of both StreamsManagers), `tls`, `stepped` (`SteppedJob`: a simulated experiment the test
writes a few steps at a time, for live views), `terminal` (`on_a_terminal`: a command with an
output on a pseudo-terminal, by a deadline; `png_size`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Unpack

from .._lazy_names import lazy_names
from ..server import ResultsServer, ResultStore, serve
from ..server.app import ServerOptions
from .jobs import STREAM_KINDS, StreamKind, make_items, make_job
from .recording import RecordingInterceptor
from .reference import REFERENCE_MODES, our_streams_manager, reference_streams_manager

# optional dependencies (qm-qua, h2): imported on first use, so `import qm_xarray.testing` needs neither
_WHERE = {"StandInQop": ".qop", "QopProcess": ".qop_process", "Redirector": ".redirect"}

__all__ = ["QopProcess", "REFERENCE_MODES", "RecordingInterceptor", "Redirector", "STREAM_KINDS", "StandInQop",
           "StreamKind", "embedded_server", "make_items", "make_job", "our_streams_manager",
           "reference_streams_manager"]

__getattr__, __dir__ = lazy_names(__name__, globals(), _WHERE)

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .qop import StandInQop
    from .qop_process import QopProcess
    from .redirect import Redirector


@contextmanager
def embedded_server(store: ResultStore | None = None,
                    **options: Unpack[ServerOptions]) -> Iterator[ResultsServer]:
    """Serve `store` (a new one if None) on 127.0.0.1:0 for the duration of a `with` block."""
    server = serve(store, "127.0.0.1", 0, **options)
    try:
        yield server
    finally:
        server.stop(grace=None)
