"""Picklable connection details and a per-process pool of gRPC channels.

`ConnectionDetails` holds only what is needed to connect (address, TLS material, token, gateway
headers and cluster, timeouts);
it opens its channel lazily, once per process, from a pool keyed by those details. Pickling (dask
workers, tokenization) carries the details, never a channel; after a fork the child builds its own.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Union

import grpc

from ..errors import QMConnectionError, QmTypeError, QmValueError
from ..limits import CLIENT_MESSAGE_BYTES as MAX_MESSAGE_BYTES
from .deadlines import check_timeout

__all__ = ["ConnectionDetails", "TlsCredentials", "TlsOption", "close_channels", "DEFAULT_TIMEOUT",
           "parse_address", "split_host"]

DEFAULT_TIMEOUT = 120.0  # seconds; deadline of unary RPCs unless the caller gives one


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


def split_host(address: str) -> tuple[str, int | None, str | None]:
    """Like `parse_address`, but the port may be missing: `host`, `host:port`, `qm://host/JOB`..."""
    if not isinstance(address, str) or not address.strip():
        raise QmValueError(f"address must be a string like 'host:port', got {address!r}")
    rest = address[5:] if address.startswith("qm://") else address
    hostport, _, job = rest.partition("/")
    if hostport.count(":") == 1 or (hostport.startswith("[") and "]:" in hostport):
        return parse_address(address)
    host = hostport.strip("[]")  # a host name, an IPv4 address or an IPv6 one (bracketed or not)
    if not host:
        raise QmValueError(f"invalid address {address!r}: expected 'host[:port]'")
    return host, None, (job or None)


@dataclass(frozen=True)
class TlsCredentials:
    """TLS material as PEM bytes (never an `ssl.SSLContext`, which cannot travel to dask workers).

    `ca`: the root certificate(s) to trust (None: the system's roots); `cert` and `key`: a client
    certificate chain and its private key, for servers that require mutual TLS (both or neither).
    """

    ca: bytes | None = None
    cert: bytes | None = field(default=None, repr=False)
    key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("ca", "cert", "key"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bytes):
                raise QmTypeError(f"TLS {name} must be PEM bytes (use TlsCredentials.from_files for "
                                  f"paths), got {type(value).__name__}")
        if (self.cert is None) != (self.key is None):
            raise QmValueError("mutual TLS needs both a client certificate and its private key")

    @classmethod
    def from_files(cls, ca: str | Path | None = None, cert: str | Path | None = None,
                   key: str | Path | None = None) -> TlsCredentials:
        """Read PEM files (their bytes travel, so workers need no copy of the files)."""
        return cls(*(None if p is None else _read_pem(p) for p in (ca, cert, key)))

    @classmethod
    def coerce(cls, tls: TlsOption) -> TlsCredentials | None:
        """None/False: plaintext; True: system roots; a path or PEM bytes: that CA."""
        if tls is None or tls is False:
            return None
        if tls is True:
            return cls()
        if isinstance(tls, TlsCredentials):
            return tls
        if isinstance(tls, bytes):
            return cls(ca=tls)
        if isinstance(tls, (str, Path)):
            return cls(ca=_read_pem(tls))
        raise QmTypeError(f"tls must be True, a CA certificate (path or PEM bytes) or "
                          f"TlsCredentials, got {type(tls).__name__}")


TlsOption = Union[bool, str, bytes, Path, TlsCredentials, None]


def _read_pem(path: str | Path) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise QmValueError(f"cannot read the PEM file {path}: {exc.strerror or exc}") from None


GATEWAY_HEADERS = ("x-grpc-service", "authorization", "cluster_name", "any_cluster")


@dataclass(frozen=True)
class ConnectionDetails:
    """How to reach a results server. Cheap to pickle; channels come from a per-process pool.

    Every call carries the metadata a QOP gateway routes by, as qm-qua sends it: the caller's
    `headers`, `x-grpc-service: gateway`, `authorization: Bearer <token>` when there is a token, and
    `cluster_name: <name>` (or `cluster_name: any` + `any_cluster: true`). `tls` is None (plaintext)
    or the TLS material; True, a CA path or PEM bytes are accepted and converted. `origin` is the
    address asked for when a gateway redirected the client here (for messages only).
    """

    host: str
    port: int
    token: str | None = field(default=None, repr=False)
    tls: TlsCredentials | None = None
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    max_message_size: int = MAX_MESSAGE_BYTES
    cluster_name: str | None = None
    origin: str | None = field(default=None, compare=False)
    _closed: list[bool] = field(default_factory=lambda: [False], compare=False, repr=False)

    @classmethod
    def from_address(cls, address: str, **options: Any) -> ConnectionDetails:
        host, port, _ = parse_address(address)
        return cls(host, port, **options)

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @cached_property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Call metadata: the caller's headers, then the gateway's (see the class docstring)."""
        ours = set(GATEWAY_HEADERS) if self.token else set(GATEWAY_HEADERS) - {"authorization"}
        extra = [(k, v) for k, v in self.headers if k not in ours]
        extra.append(("x-grpc-service", "gateway"))
        if self.token:
            extra.append(("authorization", f"Bearer {self.token}"))
        if self.cluster_name and self.cluster_name != "any":
            extra.append(("cluster_name", self.cluster_name))
        else:
            extra += [("cluster_name", "any"), ("any_cluster", "true")]
        return tuple(extra)

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
        if self.tls is None:
            return grpc.insecure_channel(self.target, options=options)
        creds = grpc.ssl_channel_credentials(root_certificates=self.tls.ca, private_key=self.tls.key,
                                             certificate_chain=self.tls.cert)
        return grpc.secure_channel(self.target, creds, options=options)

    def __post_init__(self) -> None:
        check_timeout(self.timeout, "the connection timeout")
        object.__setattr__(self, "tls", TlsCredentials.coerce(self.tls))
        headers = self.headers.items() if isinstance(self.headers, dict) else self.headers
        object.__setattr__(self, "headers", tuple((str(k).lower(), str(v)) for k, v in headers))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("metadata", None)  # cached; rebuilt on first use
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __dask_tokenize__(self) -> object:
        return ("qm_xarray.ConnectionDetails", self.target, self.tls, self.headers, self.token,
                self.cluster_name)


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
