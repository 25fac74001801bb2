"""Shared fixtures: one real gRPC results server per session (127.0.0.1, port 0)."""

from __future__ import annotations

import os
from collections.abc import Iterator

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # before grpc starts: no INFO lines from its core

import grpc  # noqa: E402
import pytest  # noqa: E402

import qm_xarray as qx  # noqa: E402
from qm_xarray.testing import embedded_server  # noqa: E402


@pytest.fixture(scope="session")
def store() -> qx.ResultStore:
    return qx.ResultStore()


@pytest.fixture(scope="session")
def server(store: qx.ResultStore) -> Iterator[qx.ResultsServer]:
    """The session's server (chunked v2 data, every capability)."""
    with embedded_server(store) as srv:
        yield srv


@pytest.fixture(scope="session")
def legacy_server(store: qx.ResultStore) -> Iterator[qx.ResultsServer]:
    """The same store served with the legacy v2 data format (no `qm.chunk_streaming`)."""
    with embedded_server(store, chunk_streaming=False) as srv:
        yield srv


@pytest.fixture(scope="session")
def channel(server: qx.ResultsServer) -> Iterator[grpc.Channel]:
    """A stock gRPC channel (default 4 MiB receive limit) to the session's server."""
    ch = grpc.insecure_channel(server.address)
    yield ch
    ch.close()
