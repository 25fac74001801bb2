"""Where a captured job comes from, and how its copy stands: kept with the job on a relay.

A relay (docs/relay.md) keeps a copy of each upstream job under the same id. `Origin` says which
upstream (its address only: credentials never leave the relay) and how the copy stands:

- `capturing`: the relay follows the job; `checked` is when it last reached the upstream and
  `behind` how many items the upstream then had that the copy had not yet;
- `interrupted`: the upstream could not be reached (or forgot the job) for longer than the
  capture's deadline; the copy holds what arrived before, and its job is still "running", since
  nobody knows how it ended. A later capture that reaches the upstream resumes it;
- `complete`: the upstream job ended and everything it had is in the copy.

A leaf module: the store, the services, the client and the relay all use this one model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from .errors import QmValueError
from .wire.pb.qm_xarray.v1 import control_pb2 as pb

__all__ = ["Origin", "CAPTURING", "INTERRUPTED", "COMPLETE", "STATUSES", "COPY_OF_ATTR", "CAPTURE_ATTR",
           "CAPTURE_REASON_ATTR"]

CAPTURING, INTERRUPTED, COMPLETE = "capturing", "interrupted", "complete"
STATUSES = (CAPTURING, INTERRUPTED, COMPLETE)
# a copy's dataset and export attributes: "UPSTREAM/JOB_ID", its status, and why it is interrupted
COPY_OF_ATTR, CAPTURE_ATTR, CAPTURE_REASON_ATTR = "qm_copy_of", "qm_capture", "qm_capture_reason"


@dataclass(frozen=True)
class Origin:
    """The upstream job a job is a copy of, and how far the copy is (see the module docstring)."""

    upstream: str
    job_id: str
    status: str = CAPTURING
    reason: str = ""
    checked: float = 0.0
    behind: int = 0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise QmValueError(f"a copy's status is one of {', '.join(STATUSES)}, got {self.status!r}")

    @property
    def interrupted(self) -> bool:
        return self.status == INTERRUPTED

    def progress(self, behind: int, checked: float | None = None) -> Origin:
        """The same copy, capturing, after a round that reached the upstream."""
        return replace(self, status=CAPTURING, reason="", behind=max(0, behind),
                       checked=time.time() if checked is None else checked)

    def interrupt(self, reason: str) -> Origin:
        return replace(self, status=INTERRUPTED, reason=reason)

    def complete(self) -> Origin:
        return replace(self, status=COMPLETE, reason="", behind=0, checked=time.time())

    def same_standing(self, other: Origin | None) -> bool:
        """True when only the live figures (`checked`, `behind`) differ: nothing worth saving."""
        return other is not None and (self.upstream, self.job_id, self.status, self.reason) == (
            other.upstream, other.job_id, other.status, other.reason)

    def describe(self, now: float | None = None) -> str:
        """One line for people: "capturing, 3 items behind, checked 0.2 s ago" and the like."""
        if self.status == COMPLETE:
            return "complete"
        if self.status == INTERRUPTED:
            return f"interrupted: {self.reason}" if self.reason else "interrupted"
        ago = (time.time() if now is None else now) - self.checked if self.checked else None
        parts = ["capturing", f"{self.behind} items behind" if self.behind else "up to date"]
        if ago is not None:
            parts.append(f"checked {max(ago, 0.0):.1f} s ago")
        return ", ".join(parts)

    def to_message(self) -> pb.Capture:
        return pb.Capture(upstream=self.upstream, upstream_job_id=self.job_id, status=self.status,
                          reason=self.reason, checked_unix=self.checked, behind_items=self.behind)

    @classmethod
    def from_message(cls, message: pb.Capture) -> Origin:
        return cls(message.upstream, message.upstream_job_id, message.status or CAPTURING,
                   message.reason, message.checked_unix, message.behind_items)

    def to_attrs(self) -> dict[str, str]:
        """The dataset attributes of a copy (the reason only while it is interrupted)."""
        attrs = {COPY_OF_ATTR: f"{self.upstream}/{self.job_id}", CAPTURE_ATTR: self.status}
        if self.interrupted:
            attrs[CAPTURE_REASON_ATTR] = self.reason
        return attrs

    @classmethod
    def from_attrs(cls, attrs: Any) -> Origin | None:
        """The copy an exported dataset's attributes describe (without the live figures), or None."""
        upstream, _, job_id = str(attrs.get(COPY_OF_ATTR, "")).partition("/")
        if not job_id:
            return None
        status = str(attrs.get(CAPTURE_ATTR, ""))
        status = status if status in STATUSES else CAPTURING
        return cls(upstream, job_id, status, str(attrs.get(CAPTURE_REASON_ATTR, "")) if status == INTERRUPTED else "")

    def to_json(self) -> dict[str, Any]:
        return {"upstream": self.upstream, "job_id": self.job_id, "status": self.status,
                "reason": self.reason, "checked": self.checked, "behind": self.behind}

    @classmethod
    def from_json(cls, fields: Any) -> Origin | None:
        if not fields:
            return None
        return cls(str(fields["upstream"]), str(fields["job_id"]), str(fields.get("status", CAPTURING)),
                   str(fields.get("reason", "")), float(fields.get("checked", 0.0)),
                   int(fields.get("behind", 0)))
