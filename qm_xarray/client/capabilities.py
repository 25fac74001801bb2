"""Server capabilities (QM's `QopCaps` strings) and what they switch on in the results API."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..capability_names import CHUNK_STREAMING, JOB_STREAMING_STATE, MULTIPLE_STREAMS_FETCHING, QOP3

__all__ = ["Capability", "QopCaps", "ServerCapabilities"]


@dataclass(frozen=True, slots=True)
class Capability:
    """One capability, named as QM's servers advertise it (`qop_name`)."""

    qop_name: str

    def __str__(self) -> str:
        return self.qop_name


class QopCaps:
    """The capabilities that matter to the results API (wire-protocol.md section c)."""

    job_streaming_state = Capability(JOB_STREAMING_STATE)
    chunk_streaming = Capability(CHUNK_STREAMING)
    multiple_streams_fetching = Capability(MULTIPLE_STREAMS_FETCHING)
    qop3 = Capability(QOP3)

    @classmethod
    def all(cls) -> tuple[Capability, ...]:
        return (cls.job_streaming_state, cls.chunk_streaming, cls.multiple_streams_fetching, cls.qop3)


class ServerCapabilities:
    """The set of capabilities a server has; `__qop3` implies the QOP 2 ones (job streaming state)."""

    def __init__(self, capabilities: Iterable[Capability | str] = ()):
        caps = {c if isinstance(c, Capability) else Capability(str(c)) for c in capabilities}
        if QopCaps.qop3 in caps:
            caps.add(QopCaps.job_streaming_state)
        self._caps = frozenset(caps)

    @classmethod
    def build(cls, names: Iterable[str]) -> ServerCapabilities:
        """From the capability strings a server advertises."""
        return cls(Capability(n) for n in names)

    def supports(self, capability: Capability | str) -> bool:
        cap = capability if isinstance(capability, Capability) else Capability(capability)
        return cap in self._caps

    @property
    def supports_multiple_streams_fetching(self) -> bool:
        return self.supports(QopCaps.multiple_streams_fetching)

    @property
    def supports_chunk_streaming(self) -> bool:
        return self.supports(QopCaps.chunk_streaming)

    @property
    def supports_job_streaming_state(self) -> bool:
        return self.supports(QopCaps.job_streaming_state)

    @property
    def is_qop3(self) -> bool:
        return self.supports(QopCaps.qop3)

    def __iter__(self) -> Iterator[Capability]:
        return iter(sorted(self._caps, key=str))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ServerCapabilities) and other._caps == self._caps

    def __hash__(self) -> int:
        return hash(self._caps)

    def __repr__(self) -> str:
        return f"ServerCapabilities({sorted(str(c) for c in self._caps)})"
