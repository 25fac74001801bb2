"""Deadlines: the reference's very long default, the check of a timeout, and the one poll loop.

A leaf of the client (it imports only the errors), so that connection details, the services and
the layers above share one rule for what a timeout is and one way to wait for a condition.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import QMTimeoutError, QmTypeError, QmValueError

__all__ = ["VERY_LONG_TIME", "Backoff", "check_timeout", "poll"]

VERY_LONG_TIME = 2e6  # seconds: the reference's default for waits and fetch_results

T = TypeVar("T")


def check_timeout(timeout: Any, what: str = "timeout") -> float:
    """A deadline in seconds: a positive, finite real number (QmTypeError/QmValueError otherwise)."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise QmTypeError(f"{what} must be a number of seconds, got {timeout!r}")
    if not 0 < timeout < math.inf:
        raise QmValueError(f"{what} must be positive and finite, got {timeout!r}")
    return float(timeout)


class Backoff:
    """Sleeps between polls: 20 ms doubling to 0.5 s, never past the deadline."""

    def __init__(self, deadline: float, first: float = 0.02, cap: float = 0.5):
        self.deadline, self.delay, self.cap = deadline, first, cap

    def sleep(self) -> bool:
        """Sleep once; False (without sleeping) when the deadline has passed."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(self.delay, left))
        self.delay = min(self.delay * 2, self.cap)
        return True


def poll(check: Callable[[float], T | None], timeout: float, timed_out: Callable[[], str]) -> T:
    """`check(seconds_left)` until it returns something other than None, with backoff between
    calls; `QMTimeoutError(timed_out())` once `timeout` seconds have passed."""
    deadline = time.monotonic() + check_timeout(timeout)
    backoff = Backoff(deadline)
    while True:
        result = check(max(deadline - time.monotonic(), 0.001))
        if result is not None:
            return result
        if not backoff.sleep():
            raise QMTimeoutError(timed_out())
