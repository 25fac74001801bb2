"""Execution errors of a job and their severities: one table and one check, for every layer.

Ours name the severities ("error", "warning"); QM's protocols number them (`ExecutionErrorSeverity`,
the same numbers in v1 and v2). The store, the producer service and the remote producer check a
severity with `check_severity`; the result services and the client translate with the tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import SupportsInt

from .errors import QmValueError

__all__ = ["ERROR", "WARNING", "SEVERITY_CODES", "SEVERITY_NAMES", "check_severity", "ExecutionError",
           "outcome"]

ERROR = "error"
WARNING = "warning"
SEVERITY_CODES: Mapping[str, int] = MappingProxyType({ERROR: 0, WARNING: 1})
SEVERITY_NAMES: Mapping[int, str] = MappingProxyType({code: name for name, code in SEVERITY_CODES.items()})


def check_severity(severity: object) -> str:
    """`severity` if it is one of ours, else `QmValueError`."""
    if not isinstance(severity, str) or severity not in SEVERITY_CODES:
        names = " or ".join(repr(name) for name in SEVERITY_CODES)
        raise QmValueError(f"severity must be {names}, got {severity!r}")
    return severity


def outcome(state: str, severities: Iterable[str]) -> str:
    """How a job ended, for people: running, done, failed (closed with an execution error) or
    cancelled (closed without one). The protocols say only "closed" for the last two."""
    if state != "closed":
        return state
    return "failed" if ERROR in severities else "cancelled"


@dataclass(frozen=True, slots=True)
class ExecutionError:
    """One execution error of a job, as the store keeps it and the services report it."""

    message: str
    code: int = 0
    severity: str = ERROR  # "error" or "warning"

    @staticmethod
    def create(message: object, code: SupportsInt = 0, severity: object = ERROR) -> ExecutionError:
        """Check and normalise a producer's arguments (`QmValueError` for an unknown severity)."""
        checked = check_severity(severity)
        return ExecutionError(str(message), int(code), checked)

    @property
    def is_error(self) -> bool:
        """An error, not a warning (what `has_execution_errors` counts)."""
        return self.severity == ERROR
