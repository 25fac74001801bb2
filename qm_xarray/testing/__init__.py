"""Test helpers for qm_xarray and for users' own tests (as `zarr.testing`).

- `make_job`, `STREAM_KINDS`, `make_items`: fake jobs with every stream kind and known contents;
- `embedded_server`: a ResultStore served on 127.0.0.1, port 0, as a context manager;
- `reference_streams_manager`: the reference qm-qua client pointed at any server (needs qm-qua);
- `our_streams_manager`: ours, built the same way, for conformance tests;
- `RecordingInterceptor`: records every RPC a server receives, with its request;
- `strategies`: hypothesis strategies for stream layouts and items (needs hypothesis).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..server import ResultsServer, ResultStore, serve
from .jobs import STREAM_KINDS, StreamKind, make_items, make_job
from .recording import RecordingInterceptor
from .reference import REFERENCE_MODES, our_streams_manager, reference_streams_manager

__all__ = ["REFERENCE_MODES", "RecordingInterceptor", "STREAM_KINDS", "StreamKind", "embedded_server", "make_items",
           "make_job", "our_streams_manager", "reference_streams_manager"]


@contextmanager
def embedded_server(store: ResultStore | None = None, **options: object) -> Iterator[ResultsServer]:
    """Serve `store` (a new one if None) on 127.0.0.1:0 for the duration of a `with` block."""
    server = serve(store, "127.0.0.1", 0, **options)
    try:
        yield server
    finally:
        server.stop(grace=None)
