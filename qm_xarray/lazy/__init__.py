"""The lazy layer: snapshots of jobs, dask arrays per stream, and the xarray engine "qm".

Names load on first use, so that xarray's import of the engine (`lazy.backend`) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy_names import lazy_names

__all__ = ["CaptureInterruptedWarning", "DEFAULT_CHUNK_BYTES", "JobSnapshot", "chunk_items", "open_dataset", "refresh", "snapshot",
           "to_dask", "watch"]

_WHERE = {"DEFAULT_CHUNK_BYTES": ".array", "chunk_items": ".array", "to_dask": ".graph",
          "open_dataset": ".live", "refresh": ".live", "watch": ".live",
          "CaptureInterruptedWarning": ".snapshots", "JobSnapshot": ".snapshots", "snapshot": ".snapshots"}

__getattr__, __dir__ = lazy_names(__name__, globals(), _WHERE)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly and re-exported
    from .array import DEFAULT_CHUNK_BYTES as DEFAULT_CHUNK_BYTES
    from .array import chunk_items as chunk_items
    from .graph import to_dask as to_dask
    from .live import open_dataset as open_dataset
    from .live import refresh as refresh
    from .live import watch as watch
    from .snapshots import CaptureInterruptedWarning as CaptureInterruptedWarning
    from .snapshots import JobSnapshot as JobSnapshot
    from .snapshots import snapshot as snapshot
