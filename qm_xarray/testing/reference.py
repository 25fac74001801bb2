"""Build the reference client's (qm-qua) StreamsManager, and ours the same way, against any server.

qm-qua is a test-only dependency; building the reference raises ImportError without it.
Modes: "v1" (QOP 2 style), "v2-legacy" (v2 without chunk streaming), "v2" (chunked data),
"v2-multi" (chunked + multiple-streams fetching). Facts: wire-protocol.md sections c and g.

One recipe for both clients (`streams_manager_factory`), the one qm-qua follows: QOP 2 -> a v1
`JobResultServiceApi`, no wait function; QOP 3 -> what `JobApi.result_handles` builds: a v2
`JobResultApi` (chunked when the capabilities say so) with `JobApi.wait_until` as the wait
function, so the reference's waits raise what the real client raises. Ours has no wait function
(it follows the job's state itself).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["CLIENTS", "REFERENCE_MODES", "our_streams_manager", "reference_streams_manager",
           "streams_manager_factory"]

REFERENCE_MODES = ("v1", "v2-legacy", "v2", "v2-multi")
CLIENTS = ("reference", "ours")

Client = Literal["reference", "ours"]


def reference_streams_manager(host: str, port: int, job_id: str, mode: str = "v1",
                              timeout: float = 30.0) -> Any:
    """A qm-qua `StreamsManager` for `job_id` on `host:port`, built as qm-qua builds it."""
    return streams_manager_factory("reference", host, port, mode, timeout)(job_id)


def our_streams_manager(host: str, port: int, job_id: str, mode: str = "v1",
                        timeout: float = 30.0) -> Any:
    """Our `StreamsManager`, built exactly as `reference_streams_manager` builds the reference's."""
    return streams_manager_factory("ours", host, port, mode, timeout)(job_id)


def streams_manager_factory(client: Client, host: str, port: int, mode: str = "v1",
                            timeout: float = 30.0) -> Callable[[str], Any]:
    """`build(job_id)` -> a new StreamsManager of `client` ("reference": qm-qua's, or "ours") in
    `mode` for a job on `host:port`. Imports the client at once (ImportError for the reference
    without qm-qua); `ValueError` for an unknown client or mode."""
    if mode not in REFERENCE_MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {REFERENCE_MODES}")
    if client not in CLIENTS:
        raise ValueError(f"unknown client {client!r}; expected one of {CLIENTS}")
    lib = _reference() if client == "reference" else _ours()

    def build(job_id: str) -> Any:
        details = lib.details(host, port, timeout=timeout)
        names = {lib.caps.job_streaming_state}
        if mode in ("v2", "v2-multi"):
            names.add(lib.caps.chunk_streaming)
        if mode == "v2-multi":
            names.add(lib.caps.multiple_streams_fetching)
        capabilities = lib.capabilities(names)
        if mode == "v1":
            return lib.manager(lib.v1(details, job_id), capabilities, None)
        api = lib.v2(details, job_id, capabilities.supports(lib.caps.chunk_streaming))
        return lib.manager(api, capabilities, lib.waiter(details, job_id, capabilities))

    return build


@dataclass(frozen=True)
class _Library:
    """The classes of one client (qm-qua's or ours) that the recipe uses."""

    manager: Any       # StreamsManager(service, capabilities, wait_until_func)
    v1: Any            # JobResultServiceApi(details, job_id)
    v2: Any            # JobResultApi(details, job_id, chunk_streaming)
    caps: Any          # QopCaps: the capability names
    capabilities: Any  # ServerCapabilities(names)
    details: Any       # ConnectionDetails(host, port, timeout=)
    waiter: Callable[[Any, str, Any], Any]  # (details, job_id, capabilities) -> wait function


def _reference() -> _Library:
    from qm._stream_results._streams_manager import StreamsManager
    from qm.api.job_result_api import JobResultServiceApi
    from qm.api.models.capabilities import QopCaps, ServerCapabilities
    from qm.api.models.server_details import ConnectionDetails
    from qm.api.v2.job_api.job_api import JobApi
    from qm.api.v2.job_result_api import JobResultApi

    return _Library(StreamsManager, JobResultServiceApi, JobResultApi, QopCaps, ServerCapabilities,
                    ConnectionDetails, lambda details, job_id, caps: JobApi(details, job_id, caps).wait_until)


def _ours() -> _Library:
    from ..client import (
        ConnectionDetails,
        JobResultApi,
        JobResultServiceApi,
        QopCaps,
        ServerCapabilities,
    )
    from ..results import StreamsManager

    return _Library(StreamsManager, JobResultServiceApi, JobResultApi, QopCaps, ServerCapabilities,
                    ConnectionDetails, lambda details, job_id, caps: None)
