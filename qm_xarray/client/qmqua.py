"""qm-qua's objects, read by our client: what a user holds, turned into our connection details.

A physicist holds a `QuantumMachinesManager`, a job (`RunningQmJob`/`QmJob` on QOP 2, `JobApi`/
`JobApiWithDeprecations` on QOP 3), its `result_handles` (a qm-qua `StreamsManager`) or one of
its fetchers. Each keeps qm-qua's `ConnectionDetails` (after the gateway's redirect, with the
gateway headers and token it sends), the job id and the server's capabilities (facts:
qop-connection.md section 9). `describe(obj)` takes those out, by duck typing on class names and
attributes: nothing here imports qm-qua, so recognising an object costs no import and no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import QmTypeError
from .capabilities import QopCaps, ServerCapabilities
from .connection import ConnectionDetails, TlsCredentials
from .models import ServerInfo

__all__ = ["QmQuaObject", "kind_of", "describe"]

# qm-qua base classes by what they are (subclasses are recognised through the MRO)
_KINDS = {
    "QuantumMachinesManager": "manager",
    "QmBaseJob": "job",              # RunningQmJob, QmJob, QmPendingJob, SimulatedJob (QOP 2)
    "JobApi": "job",                 # JobApiWithDeprecations, SimulatedJobApi (QOP 3)
    "StreamsManager": "streams",
    "BaseSingleStreamFetcher": "fetcher",
}


@dataclass(frozen=True)
class QmQuaObject:
    """What our client needs of a qm-qua object: where, which job (and stream), what the server can."""

    kind: str                      # "manager", "job", "streams" or "fetcher"
    details: ConnectionDetails
    capabilities: ServerCapabilities
    server: ServerInfo
    job_id: str | None = None
    stream: str | None = None      # a fetcher's stream name


def kind_of(obj: Any) -> str | None:
    """"manager", "job", "streams", "fetcher" for a qm-qua object, else None (no import, no I/O)."""
    for cls in type(obj).__mro__:
        module = getattr(cls, "__module__", "") or ""
        if (module == "qm" or module.startswith("qm.")) and cls.__name__ in _KINDS:
            return _KINDS[cls.__name__]
    return None


def describe(obj: Any) -> QmQuaObject:
    """Connection details, capabilities and job id of a qm-qua object; QmTypeError for others."""
    kind = kind_of(obj)
    if kind == "manager":
        server_details = obj._server_details
        caps = obj._caps
        ours = translate_capabilities(caps)
        return QmQuaObject(kind, translate_details(server_details.connection_details), ours,
                           _server_info(ours, getattr(server_details, "server_version", "")))
    if kind == "job":
        if hasattr(obj, "_connection_details"):  # QOP 3 JobApi
            qm_details, caps = obj._connection_details, obj._caps
        else:                                    # QOP 2 QmBaseJob
            qm_details, caps = obj._frontend.connection_details, obj._capabilities
        ours = translate_capabilities(caps)
        return QmQuaObject(kind, translate_details(qm_details), ours, _server_info(ours),
                           job_id=str(obj._id))
    if kind == "streams":
        service = obj._service
        ours = translate_capabilities(obj._capabilities)
        return QmQuaObject(kind, translate_details(service.connection_details), ours,
                           _server_info(ours), job_id=str(service.id))
    if kind == "fetcher":
        service = obj._service
        ours = _fetcher_capabilities(obj)
        return QmQuaObject(kind, translate_details(service.connection_details), ours,
                           _server_info(ours), job_id=str(obj.job_id), stream=str(obj.name))
    raise QmTypeError(f"{type(obj).__name__} is not an object of qm-qua that holds a job or a server")


def translate_details(qm_details: Any) -> ConnectionDetails:
    """Ours from qm-qua's `ConnectionDetails`: host and port (after redirect), token, the caller's
    headers and cluster (the gateway headers are rebuilt by ours), TLS files read into bytes."""
    headers = {str(k).lower(): str(v) for k, v in (qm_details.headers or {}).items()}
    cluster = headers.pop("cluster_name", None)
    headers.pop("any_cluster", None)
    headers.pop("x-grpc-service", None)
    token = qm_details.user_token or None
    auth = headers.get("authorization", "")
    if auth.startswith("Bearer "):
        headers.pop("authorization")
        token = token or auth[len("Bearer "):] or None
    tls = None
    if qm_details.ssl_context is not None or qm_details.tls_paths is not None:
        paths = qm_details.tls_paths
        tls = TlsCredentials() if paths is None else TlsCredentials(
            *(None if p is None else Path(p).expanduser().read_bytes()
              for p in (paths.ca_cert_path, paths.client_cert_path, paths.client_key_path)))
    return ConnectionDetails(str(qm_details.host), int(qm_details.port), token=token, tls=tls,
                             headers=tuple(headers.items()), timeout=float(qm_details.timeout),
                             max_message_size=int(qm_details.max_message_size),
                             cluster_name=None if cluster in (None, "any") else cluster)


def translate_capabilities(qm_caps: Any) -> ServerCapabilities:
    """Ours from qm-qua's `ServerCapabilities` (by capability name)."""
    return ServerCapabilities.build(str(c.qop_name) for c in qm_caps.supported_capabilities)


def _server_info(capabilities: ServerCapabilities, version: str = "") -> ServerInfo:
    """What we know of the server behind a qm-qua object (its name is not kept there)."""
    return ServerInfo("", str(version or ""), tuple(str(c) for c in capabilities))


def _fetcher_capabilities(fetcher: Any) -> ServerCapabilities:
    """A fetcher keeps no capabilities object: rebuild what it reads by from its service."""
    service = fetcher._service
    names: set[Any] = set()
    if hasattr(service, "_supports_chunk_streaming"):  # v2 results service: a QOP 3
        names.add(QopCaps.qop3)
        if service._supports_chunk_streaming:
            names.add(QopCaps.chunk_streaming)
        if getattr(fetcher, "_multiple_streams_fetcher", None) is not None:
            names.add(QopCaps.multiple_streams_fetching)
    if getattr(fetcher, "_has_job_streaming_state", False):
        names.add(QopCaps.job_streaming_state)
    return ServerCapabilities(names)
