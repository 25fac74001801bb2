"""The multiple-streams fetch of v2 servers: one headers RPC and one data RPC for many streams."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..client.api_v2 import JobResultApi
from ..client.models import Header

__all__ = ["MultipleStreamsFetcher"]


class MultipleStreamsFetcher:
    """Shared by the fetchers of one StreamsManager when the server has multiple-streams fetching."""

    def __init__(self, service: JobResultApi):
        self.service = service

    def headers(self, outputs: Sequence[tuple[str, bool]], timeout: float | None = None) -> dict[str, Header]:
        return self.service.get_headers(outputs, timeout)

    def fetch(self, requests: Sequence[tuple[Header, int, int]],
              timeout: float | None = None) -> dict[str, tuple[np.ndarray, int]]:
        return self.service.fetch_ranges(requests, timeout)
