"""The lazy layer: snapshots of jobs, dask arrays per stream, and the xarray engine "qm".

Names load on first use, so that xarray's import of the engine (`lazy.backend`) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {"DEFAULT_CHUNK_BYTES": ".graph", "chunk_items": ".graph", "to_dask": ".graph",
          "open_dataset": ".live", "refresh": ".live", "watch": ".live",
          "JobSnapshot": ".snapshot", "snapshot": ".snapshot"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'qm_xarray.lazy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .graph import DEFAULT_CHUNK_BYTES, chunk_items, to_dask
    from .live import open_dataset, refresh, watch
    from .snapshot import JobSnapshot, snapshot
