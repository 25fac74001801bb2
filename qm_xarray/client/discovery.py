"""First contact with a server, as qm-qua makes it: the gateway's redirect probe, then detection.

1. Redirect probe (qop-connection.md section 5): a cleartext HTTP/2 `POST /` with the gateway
   headers. A QOP gateway answers 302 with `location: host:port[/path]` (go there instead), 400
   (no such cluster); a plain gRPC server answers 200 with grpc-status 12 (stay). A TLS-only port
   breaks the cleartext probe: that too means "stay", and TLS is tried next.
2. Detection (section 6): `io.qualang.api.v1.InfoService/GetInfo` gives the capabilities (`__qop3`
   selects the v2 services) and the version (else `qm.grpc.frontend.Frontend/GetVersion`). A
   server without GetInfo is asked our own `JobsService/GetServerInfo` (older qm-xarray), and
   failing that taken for QOP 2 with the job streaming state.

No step is retried: an address that does not answer fails within the first-contact deadline with
`ServerUnreachableError`, whose message names the address and what to do. Retries are for servers
that answered once and then dropped (`retry.py`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import grpc
from google.protobuf import wrappers_pb2

from ..errors import QMConnectionError
from ..wire.pb.io.qualang.api.v1 import info_service_pb2 as info_pb
from ..wire.pb.qm_xarray.v1 import control_pb2 as control_pb
from .connection import ConnectionDetails
from .errors import AuthenticationError
from .models import ServerInfo

__all__ = ["ServerUnreachableError", "ClusterNotFoundError", "first_contact", "probe_redirect",
           "detect", "parse_location"]

log = logging.getLogger("qm_xarray.client")

QOP2_FALLBACK = ("qm.job_streaming_state",)  # a results server that says nothing of itself

# words of gRPC's and the socket layer's error texts, by what they mean
_REFUSED = ("connection refused", "connect failed", "errno 111", "failed to connect to remote host")
_UNKNOWN_HOST = ("dns", "name or service not known", "nodename nor servname", "name resolution",
                 "no address associated", "getaddrinfo")
_TLS = ("handshake", "certificate", "ssl", "tsi_", "wrong_version_number", "alpn")
_CLOSED = ("socket closed", "connection reset", "eof", "broken pipe", "end of tcp stream")
TLS_HINT = ("check the TLS options: the CA must have signed the server's certificate, the server "
            "must use TLS, and a server that requires mutual TLS needs a client certificate and key")
PLAINTEXT_HINT = "if the server uses TLS, connect with TLS (tls=CA, or --tls-ca PEM in the CLI)"


class ServerUnreachableError(QMConnectionError):
    """No server answered at an address, at first contact. `.address`, `.reason` and `.hint` say
    where, what happened and what to do (the CLI words the hint for its options)."""

    def __init__(self, address: str, reason: str, hint: str, kind: str = "other"):
        super().__init__(f"cannot reach a results server at {address}: {reason}; {hint}")
        self.address, self.reason, self.hint, self.kind = address, reason, hint, kind


class ClusterNotFoundError(QMConnectionError):
    """The gateway has no such cluster (HTTP 400 to the redirect probe, or NOT_FOUND at first
    contact); `.address` and `.cluster_name` say which."""

    def __init__(self, address: str, cluster_name: str | None, detail: str = ""):
        super().__init__(f"the gateway at {address} found no cluster named {cluster_name or 'any'!r}"
                         + (f" ({detail})" if detail else "") + ": check the cluster name")
        self.address, self.cluster_name = address, cluster_name


def diagnose(address: str, text: str, tls: bool) -> ServerUnreachableError:
    """The unreachable error for a failed first contact whose description is `text`."""
    lowered = text.lower()

    def has(words: tuple[str, ...]) -> bool:
        return any(w in lowered for w in words)

    if has(_REFUSED):
        return ServerUnreachableError(address, "nothing listens there (connection refused)",
                                      "start a server (`qm-xarray serve`), or check the host and port",
                                      "refused")
    if has(_UNKNOWN_HOST):
        return ServerUnreachableError(address, "the host name is unknown", "check the host name",
                                      "unknown-host")
    if tls and (has(_TLS) or has(_CLOSED)):
        return ServerUnreachableError(address, f"the TLS handshake failed ({text})", TLS_HINT, "tls")
    if has(_CLOSED) or has(_TLS):
        return ServerUnreachableError(address, f"the server closed the connection ({text})",
                                      PLAINTEXT_HINT, "closed")
    return ServerUnreachableError(address, text, "check that a results server runs there", "other")


def _timed_out(address: str, timeout: float) -> ServerUnreachableError:
    return ServerUnreachableError(address, f"no answer within {timeout:g} s",
                                  "check the address, and that no firewall drops the traffic",
                                  "timeout")


def parse_location(location: str) -> tuple[str, int]:
    """`host:port[/path]` of a redirect (a scheme, which QM's gateway does not send, is accepted)."""
    from .connection import split_host

    text = location.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    host, port, _ = split_host(text)
    if port is None:
        raise QMConnectionError(f"the gateway redirected to {location!r}, which has no port")
    return host, port


def probe_redirect(details: ConnectionDetails, timeout: float) -> tuple[str, int] | None:
    """Where the gateway at `details` sends its clients (None: stay); fails fast if nothing listens."""
    import httpx  # only at first contact, not at import

    host = f"[{details.host}]" if ":" in details.host else details.host
    headers = {"content-type": "application/grpc", "te": "trailers", **dict(details.metadata)}
    try:
        # a cleartext probe: no CA bundle to load (that alone costs ~28 ms, benchmarks/bench_qop.py)
        with httpx.Client(http1=False, http2=True, timeout=timeout, verify=False) as client:
            response = client.post(f"http://{host}:{details.port}/", headers=headers, content=b"")
    except httpx.ConnectError as exc:
        raise diagnose(details.target, str(exc) or type(exc).__name__, details.tls is not None) from None
    except httpx.TimeoutException:
        raise _timed_out(details.target, timeout) from None
    except (httpx.HTTPError, OSError) as exc:  # not HTTP/2 cleartext (a TLS-only port): stay
        log.debug("redirect probe of %s: %s; connecting there directly", details.target, exc)
        return None
    if response.status_code == 302 and response.headers.get("location"):
        return parse_location(response.headers["location"])
    if response.status_code == 400:
        raise ClusterNotFoundError(details.target, details.cluster_name)
    return None


def _unary(details: ConnectionDetails, path: str, timeout: float) -> bytes | None:
    """The answer to an empty request, or None if the server does not serve `path`."""
    call = details.channel().unary_unary(path)
    try:
        return bytes(call(b"", timeout=timeout, metadata=details.metadata))
    except grpc.RpcError as exc:
        if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
            return None
        raise


def detect(details: ConnectionDetails, timeout: float, allowed: float | None = None) -> ServerInfo:
    """What the server at `details` is (GetInfo), within `timeout` seconds, without retries
    (`allowed`: the whole first contact's time, for the message)."""
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(deadline - time.monotonic(), 0.001)

    try:
        raw = _unary(details, "/io.qualang.api.v1.InfoService/GetInfo", left())
        if raw is None:  # an older qm-xarray server, or a bare results server
            ours = _unary(details, "/qm_xarray.v1.JobsService/GetServerInfo", left())
            if ours is None:
                return ServerInfo("", "", QOP2_FALLBACK)
            mine = control_pb.GetServerInfoResponse.FromString(ours)
            return ServerInfo(mine.implementation, mine.version, tuple(mine.capabilities))
        info = info_pb.GetInfoResponse.FromString(raw)
        version = info.implementation.version
        if not version:  # as qm-qua: ask the QOP 2 frontend
            answer = _unary(details, "/qm.grpc.frontend.Frontend/GetVersion", left())
            version = "" if answer is None else str(wrappers_pb2.StringValue.FromString(answer).value)
        return ServerInfo(info.implementation.name, version, tuple(info.capabilities))
    except grpc.RpcError as exc:
        raise _first_contact_error(details, exc, timeout if allowed is None else allowed) from None


def _first_contact_error(details: ConnectionDetails, exc: grpc.RpcError, timeout: float
                         ) -> QMConnectionError:
    code = exc.code()
    text = exc.details() or code.name
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return AuthenticationError(f"the server at {details.target} refused the call: {text}")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return _timed_out(details.target, timeout)
    if code is grpc.StatusCode.NOT_FOUND:  # GetInfo exists everywhere: the gateway found no cluster
        return ClusterNotFoundError(details.target, details.cluster_name, text)
    if code is grpc.StatusCode.UNAVAILABLE:
        return diagnose(details.target, text, details.tls is not None)
    if "http2 header with status" in text.lower():  # an HTTP server, not gRPC
        return ServerUnreachableError(
            details.target, f"it answers HTTP, not gRPC ({text})",
            "give the address of the results server, or of a QOP gateway with follow_redirects=True",
            "not-grpc")
    return QMConnectionError(f"first contact with {details.target} failed: {text} (gRPC status {code.name})")


def first_contact(details: ConnectionDetails, timeout: float, follow_redirects: bool = True
                  ) -> tuple[ConnectionDetails, ServerInfo]:
    """Follow the gateway's redirect (if asked), then detect the server; all within `timeout`."""
    deadline = time.monotonic() + timeout
    if follow_redirects:
        target = probe_redirect(details, timeout)
        if target is not None and target != (details.host, details.port):
            log.info("the gateway at %s redirects to %s:%d", details.target, *target)
            details = replace(details, host=target[0], port=target[1], origin=details.target)
    return details, detect(details, max(deadline - time.monotonic(), 0.001), timeout)
