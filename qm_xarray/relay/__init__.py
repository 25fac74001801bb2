"""The relay: copies of an upstream's jobs, kept durably while they run and served to any number
of readers (docs/relay.md). `capture` mirrors one job; `Relay` follows many, and new ones."""

from __future__ import annotations

from .capturing import STOPPED, Capture, CaptureResult, UpstreamMismatchError, capture
from .relay import Relay

__all__ = ["capture", "Capture", "CaptureResult", "Relay", "STOPPED", "UpstreamMismatchError"]
