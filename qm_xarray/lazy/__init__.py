"""The lazy layer: snapshots of jobs, dask arrays per stream, and the xarray engine "qm".

Names load on first use, so that xarray's import of the engine (`lazy.backend`) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy_names import lazy_names

_WHERE = {"DEFAULT_CHUNK_BYTES": ".graph", "chunk_items": ".graph", "to_dask": ".graph",
          "open_dataset": ".live", "refresh": ".live", "watch": ".live",
          "JobSnapshot": ".snapshot", "snapshot": ".snapshot"}
__all__ = sorted(_WHERE)


__getattr__, __dir__ = lazy_names(__name__, globals(), _WHERE)


if TYPE_CHECKING:
    from .graph import DEFAULT_CHUNK_BYTES, chunk_items, to_dask
    from .live import open_dataset, refresh, watch
    from .snapshot import JobSnapshot, snapshot
