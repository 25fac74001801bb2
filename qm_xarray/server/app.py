"""ResultsServer: one gRPC server that serves a ResultStore over v1, v2, QM's detection and manager
RPCs (InfoService, QmmService) and our own services."""

from __future__ import annotations

import ipaddress
import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TypedDict, Unpack

import grpc

from ..capability_names import CHUNK_STREAMING, RESULTS_CAPABILITIES
from ..limits import MAX_RECEIVE_BYTES, MAX_SEND_BYTES
from .auth import TokenInterceptor
from .control import JobsService, ProducerService
from .service_qmm import InfoService, QmmService
from .service_v1 import JobResultsServiceV1
from .service_v2 import JobServiceV2
from .store import ResultStore

__all__ = ["ResultsServer", "ServerOptions", "serve", "DEFAULT_CAPABILITIES"]

log = logging.getLogger("qm_xarray.server")

DEFAULT_CAPABILITIES = RESULTS_CAPABILITIES  # the QM capability strings this server honours

PemSource = str | bytes | Path  # PEM bytes, or the path of a PEM file


class ServerOptions(TypedDict, total=False):
    """The keyword options of `ResultsServer` (and so of `serve`)."""

    chunk_streaming: bool
    max_workers: int
    interceptors: Sequence[grpc.ServerInterceptor]
    token: str | None
    producer_token: str | None
    tls: tuple[PemSource, PemSource] | None
    client_ca: PemSource | None
    max_concurrent_rpcs: int | None


def _pem(value: PemSource) -> bytes:
    return value if isinstance(value, bytes) else Path(value).read_bytes()


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ResultsServer:
    """Serves `store` on `host:port` (port 0 picks a free one; see `.address`).

    `chunk_streaming=False` makes v2 `GetNamedResult` use the legacy data format, for clients
    that do not have the `qm.chunk_streaming` capability; it is then not advertised.
    `token` requires `authorization: Bearer <token>` on every RPC (`producer_token`, if given,
    on the producer service instead); `tls=(certificate chain, private key)` (PEM bytes or
    paths) serves TLS, and `client_ca` (PEM) then requires client certificates it signed (mutual
    TLS). Listening beyond loopback without TLS warns.
    """

    def __init__(self, store: ResultStore | None = None, host: str = "127.0.0.1", port: int = 0,
                 *, chunk_streaming: bool = True, max_workers: int = 512,
                 interceptors: Sequence[grpc.ServerInterceptor] = (), token: str | None = None,
                 producer_token: str | None = None,
                 tls: tuple[PemSource, PemSource] | None = None,
                 client_ca: PemSource | None = None,
                 max_concurrent_rpcs: int | None = None):
        # Each streaming call holds a pool thread while it lasts (a waiter for the whole job):
        # threads are created on demand, and beyond `max_concurrent_rpcs` (default: the pool size)
        # calls are refused with RESOURCE_EXHAUSTED, which clients retry, instead of queueing.
        self.store = store if store is not None else ResultStore()
        self.host = host
        self.capabilities = tuple(c for c in DEFAULT_CAPABILITIES
                                  if chunk_streaming or c != CHUNK_STREAMING)
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="qm-xarray-rpc"),
            interceptors=[*( [TokenInterceptor(token, producer_token)]
                              if token is not None or producer_token is not None else []),
                          *interceptors],
            maximum_concurrent_rpcs=max_concurrent_rpcs or max_workers,
            options=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
                     ("grpc.max_send_message_length", MAX_SEND_BYTES),
                     ("grpc.so_reuseport", 0)])
        self._server.add_generic_rpc_handlers([
            JobResultsServiceV1(self.store).handler(),
            JobServiceV2(self.store, chunk_streaming=chunk_streaming).handler(),
            JobsService(self.store, self.capabilities).handler(),
            InfoService(self.capabilities).handler(),
            QmmService(self.store).handler(),
            ProducerService(self.store).handler(),
        ])
        if client_ca is not None and tls is None:
            raise ValueError("client_ca (mutual TLS) needs tls=(certificate chain, private key)")
        if not is_loopback(host) and tls is None:
            warnings.warn(f"the results server listens on {host}, beyond loopback, without TLS",
                          stacklevel=2)
        self.tls = tls is not None
        bind = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
        try:
            if tls is None:
                self.port = self._server.add_insecure_port(bind)
            else:
                chain, key = (_pem(x) for x in tls)
                ca = None if client_ca is None else _pem(client_ca)
                self.port = self._server.add_secure_port(bind, grpc.ssl_server_credentials(
                    [(key, chain)], root_certificates=ca, require_client_auth=ca is not None))
        except RuntimeError as exc:  # grpcio raises RuntimeError when it cannot bind
            raise OSError(f"could not listen on {bind}: {exc}") from None
        if self.port == 0:
            raise OSError(f"could not listen on {bind}")
        self._started = False

    @property
    def address(self) -> str:
        """`host:port` to connect to."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    def start(self) -> ResultsServer:
        self._server.start()
        self._started = True
        log.info("results server listening on %s", self.address)
        return self

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop serving; in-flight RPCs get `grace` seconds to finish."""
        if self._started:
            self._server.stop(grace).wait()
            self._started = False

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return bool(self._server.wait_for_termination(timeout))

    def __enter__(self) -> ResultsServer:
        if not self._started:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<ResultsServer {self.address} {'running' if self._started else 'stopped'}>"


def serve(store: ResultStore | None = None, host: str = "127.0.0.1", port: int = 0,
          **options: Unpack[ServerOptions]) -> ResultsServer:
    """Start a ResultsServer for `store` (a new in-memory one if None) and return it.

    Use as a context manager to stop it: `with qx.serve(store) as server: ...`.
    """
    return ResultsServer(store, host, port, **options).start()
