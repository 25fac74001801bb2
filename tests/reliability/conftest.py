"""Fixtures of the reliability suites: real server and producer processes on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qm_xarray.client.connection import close_channels
from qm_xarray.testing.load import ProducerProcess, ServerProcess


@pytest.fixture
def spawn_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """`spawn_server(store_dir=None)` starts a results server subprocess; all are stopped at the end."""
    servers: list[ServerProcess] = []

    def spawn(store_dir: Path | None = None, **options: object) -> ServerProcess:
        server = ServerProcess(store_dir, log_dir=tmp_path, **options)  # type: ignore[arg-type]
        servers.append(server)
        return server.start()

    yield spawn
    close_channels()  # the next test's server may reuse a port: no stale channel to it
    for server in servers:
        server.kill()


@pytest.fixture
def spawn_producer() -> Iterator[Callable[..., ProducerProcess]]:
    """`spawn_producer(address, job_id, stream, batch=, batches=)`; all are killed at the end."""
    producers: list[ProducerProcess] = []

    def spawn(*args: object, **options: object) -> ProducerProcess:
        producer = ProducerProcess(*args, **options)  # type: ignore[arg-type]
        producers.append(producer)
        return producer

    yield spawn
    for producer in producers:
        producer.kill()
