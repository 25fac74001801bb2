"""Picklable connection details and a per-process pool of gRPC channels.

`ConnectionDetails` holds only what is needed to connect (address, TLS, token, headers, timeouts);
it opens its channel lazily, once per process, from a pool keyed by those details. Pickling (dask
workers, tokenization) carries the details, never a channel; after a fork the child builds its own.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from ..errors import QMConnectionError, QmValueError

__all__ = ["ConnectionDetails", "close_channels", "DEFAULT_TIMEOUT", "parse_address"]

DEFAULT_TIMEOUT = 120.0  # seconds; deadline of unary RPCs unless the caller gives one
MAX_MESSAGE_BYTES = 100 * 1024 * 1024


def parse_address(address: str) -> tuple[str, int, str | None]:
    """Split `host:port`, `[v6]:port` or `qm://host:port[/job_id]` into (host, port, job_id)."""
    if not isinstance(address, str):
        raise QmValueError(f"address must be a string like 'host:port', got {type(address).__name__}")
    rest = address[5:] if address.startswith("qm://") else address
    rest, _, job = rest.partition("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise QmValueError(f"invalid address {address!r}: expected 'host:port' or 'qm://host:port/JOB'")
    return host.strip("[]"), int(port), (job or None)


@dataclass(frozen=True)
class ConnectionDetails:
    """How to reach a results server. Cheap to pickle; channels come from a per-process pool.

    `tls=True` uses the system roots; a path (or PEM bytes) names the root certificate to trust.
    `token` is sent as `authorization: Bearer <token>`, as QM's client does.
    """

    host: str
    port: int
    token: str | None = field(default=None, repr=False)
    tls: bool | str | bytes = False
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    max_message_size: int = MAX_MESSAGE_BYTES
    _closed: list[bool] = field(default_factory=lambda: [False], compare=False, repr=False)

    @classmethod
    def from_address(cls, address: str, **options: Any) -> ConnectionDetails:
        host, port, _ = parse_address(address)
        if isinstance(options.get("headers"), dict):
            options["headers"] = tuple(sorted(options["headers"].items()))
        return cls(host, port, **options)

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Call metadata: the configured headers plus the bearer token."""
        extra = (("authorization", f"Bearer {self.token}"),) if self.token else ()
        return tuple(self.headers) + extra

    def channel(self) -> grpc.Channel:
        """This process's channel for these details (created on first use)."""
        if self._closed[0]:
            raise QMConnectionError(f"the connection to {self.target} was closed")
        return _POOL.get(self)

    def close(self) -> None:
        """Close the channel; calls through these details raise `QMConnectionError` afterwards."""
        self._closed[0] = True
        _POOL.close(self)

    @property
    def is_closed(self) -> bool:
        return self._closed[0]

    def _open(self) -> grpc.Channel:
        size = self.max_message_size
        options = [("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size),
                   ("grpc.enable_retries", 0),  # retries are ours (retry.py), within deadlines
                   # notice a restarted server quickly (gRPC's default grows to 120 s)
                   ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 2000)]
        if not self.tls:
            return grpc.insecure_channel(self.target, options=options)
        root = self.tls
        if isinstance(root, str):
            root = Path(root).read_bytes()
        creds = grpc.ssl_channel_credentials(root_certificates=root if isinstance(root, bytes) else None)
        return grpc.secure_channel(self.target, creds, options=options)

    def __post_init__(self) -> None:
        from ._base import check_timeout  # a leaf helper; imported here to keep modules acyclic

        check_timeout(self.timeout, "the connection timeout")

    def __dask_tokenize__(self) -> object:
        return ("qm_xarray.ConnectionDetails", self.target, self.tls, self.headers, self.token)


class _ChannelPool:
    """Channels by connection details, for this process only (dropped, not closed, after fork)."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._channels: dict[ConnectionDetails, grpc.Channel] = {}
        self._lock = threading.Lock()

    def get(self, details: ConnectionDetails) -> grpc.Channel:
        with self._lock:
            if os.getpid() != self._pid:  # forked: the parent's channels are not ours to use
                self._pid, self._channels = os.getpid(), {}
            channel = self._channels.get(details)
            if channel is None:
                channel = self._channels[details] = details._open()
            return channel

    def close(self, details: ConnectionDetails | None = None) -> None:
        with self._lock:
            if os.getpid() != self._pid:
                self._pid, self._channels = os.getpid(), {}
                return
            keys = list(self._channels) if details is None else [details]
            for key in keys:
                channel = self._channels.pop(key, None)
                if channel is not None:
                    channel.close()


_POOL = _ChannelPool()


def close_channels(details: ConnectionDetails | None = None) -> None:
    """Close this process's channel for `details` (all channels if None)."""
    _POOL.close(details)
