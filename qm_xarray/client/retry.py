"""Retries of transient gRPC failures, always within the caller's deadline (built on `tenacity`).

The policy, used by every call of the v1 and v2 results clients (`ServiceBase._unary` and
`ServiceBase._streaming`):

- Transient, hence retried: `UNAVAILABLE` (connection refused or reset, server restarting or
  shutting down, GOAWAY); `RESOURCE_EXHAUSTED` (server overloaded), except a message larger than
  the size limit, which would fail again; and `INTERNAL`, `UNKNOWN` or `CANCELLED` whose details
  say that the transport broke under the call (RST_STREAM, socket closed, stream removed,
  connection reset). Our client never cancels its own calls, so a transport-level CANCELLED comes
  from the other side.
- Never retried: everything else, in particular `DEADLINE_EXCEEDED`, `NOT_FOUND`,
  `INVALID_ARGUMENT`, `FAILED_PRECONDITION`, `UNAUTHENTICATED`, `PERMISSION_DENIED`, `DATA_LOSS`,
  a closed channel and every error that the client itself raises about the data.
- Backoff: exponential with full jitter (a uniform draw up to `INITIAL_BACKOFF * 2**n`, capped at
  `MAX_BACKOFF`), never sleeping past the deadline.
- Attempts: `MAX_ATTEMPTS` (None: as many as fit before the deadline). The whole call, attempts
  and sleeps included, ends by its deadline; each attempt gets the time that is left.
- Giving up on a transient failure (deadline passed or attempts used up) raises
  `ServerUnavailableError`, which is both a `QMTimeoutError` (the wait had a deadline) and a
  `QMConnectionError` (the reference raises a connection error for an unreachable server); its
  message names the call, the job and stream, the attempts and the last gRPC error. When the last
  attempt ran out of time (DEADLINE_EXCEEDED) after transient failures, the same error is raised.

Data fetches resume instead of starting over: the caller's request for each attempt asks only for
the items still missing (see `api_v1.fetch_range`, `api_v2.JobResultApi._fetch`).

The defaults are module-level on purpose: change them here (for example in a test) to change the
policy of every call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import grpc
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_random_exponential

from ..errors import QMConnectionError, QMTimeoutError

__all__ = ["INITIAL_BACKOFF", "MAX_BACKOFF", "MAX_ATTEMPTS", "MIN_ATTEMPT_TIME",
           "ServerUnavailableError", "is_transient", "run"]

log = logging.getLogger("qm_xarray.client")

INITIAL_BACKOFF = 0.05  # seconds: the first retry waits up to this long
MAX_BACKOFF = 2.0  # seconds: the longest wait between two attempts
MAX_ATTEMPTS: int | None = None  # None: unlimited, bounded by the deadline only
MIN_ATTEMPT_TIME = 0.01  # seconds: no attempt is started with less time than this left

# Details of INTERNAL/UNKNOWN/CANCELLED statuses that mean "the connection broke", not "a bug".
TRANSPORT_BREAKS = ("rst_stream", "socket closed", "stream removed", "connection reset",
                    "broken pipe", "goaway", "connection aborted", "end of tcp stream")

# UNAVAILABLE details that mean a TLS mismatch (wrong CA, plaintext to TLS): retrying cannot help.
TLS_FAILURES = ("handshake failed", "certificate_verify_failed", "tsi_protocol_failure",
                "ssl_error", "wrong_version_number")

T = TypeVar("T")


class ServerUnavailableError(QMTimeoutError, QMConnectionError):
    """The server stayed unreachable (or kept breaking the call) until the deadline passed."""


def _code_and_details(exc: BaseException) -> tuple[grpc.StatusCode | None, str]:
    code_of, details_of = getattr(exc, "code", None), getattr(exc, "details", None)
    code = code_of() if callable(code_of) else None
    details = details_of() if callable(details_of) else None
    return code, details or ""


def is_transient(exc: BaseException) -> bool:
    """True for the gRPC failures that a new attempt may cure (see the module docstring)."""
    if not isinstance(exc, grpc.RpcError):
        return False
    code, details = _code_and_details(exc)
    text = details.lower()
    if code is grpc.StatusCode.UNAVAILABLE:
        return not any(marker in text for marker in TLS_FAILURES)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return "larger than max" not in text
    if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED):
        return any(marker in text for marker in TRANSPORT_BREAKS)
    return False


def run(attempt: Callable[[float], T], timeout: float, what: str) -> T:
    """Call `attempt(seconds_left)` until it returns, fails for good, or `timeout` s have passed.

    Transient gRPC errors are retried with backoff; when no attempt is left, the last one raises
    `ServerUnavailableError`. Any other exception (a non-transient `grpc.RpcError` included,
    for the caller to map) propagates unchanged from the attempt that raised it.
    """
    deadline = time.monotonic() + timeout
    transient: list[BaseException] = []  # the last transient failure, for the final message

    def stop(retry_state: RetryCallState) -> bool:
        if MAX_ATTEMPTS is not None and retry_state.attempt_number >= MAX_ATTEMPTS:
            return True
        return deadline - time.monotonic() < MIN_ATTEMPT_TIME

    backoff = wait_random_exponential(multiplier=INITIAL_BACKOFF, max=MAX_BACKOFF)

    def wait(retry_state: RetryCallState) -> float:
        return max(0.0, min(backoff(retry_state), deadline - time.monotonic() - MIN_ATTEMPT_TIME))

    def before_sleep(retry_state: RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if exc is not None:
            transient[:] = [exc]
        code, details = _code_and_details(exc) if exc is not None else (None, "")
        log.info("%s: attempt %d failed (%s: %s); retrying in %.3f s", what, retry_state.attempt_number,
                 code.name if code else "?", details,
                 retry_state.next_action.sleep if retry_state.next_action else 0.0)

    retrying = Retrying(retry=retry_if_exception(is_transient), stop=stop, wait=wait,
                        before_sleep=before_sleep, reraise=True)
    try:
        return retrying(lambda: attempt(max(deadline - time.monotonic(), MIN_ATTEMPT_TIME)))
    except grpc.RpcError as exc:
        code, details = _code_and_details(exc)
        if is_transient(exc) or (code is grpc.StatusCode.DEADLINE_EXCEEDED and transient):
            if not is_transient(exc):
                code, details = _code_and_details(transient[0])
            n = retrying.statistics.get("attempt_number", 1)
            raise ServerUnavailableError(
                f"{what}: gave up after {n} attempt(s) within {timeout:g} s, the server being "
                f"unavailable or breaking the call; last transient error: {details} (gRPC status "
                f"{code.name if code else 'UNKNOWN'})") from None
        raise
