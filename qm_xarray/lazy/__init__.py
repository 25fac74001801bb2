"""The lazy layer: snapshots of jobs, dask arrays per stream, and the xarray engine "qm"."""

from .graph import DEFAULT_CHUNK_BYTES, chunk_items, to_dask
from .live import open_dataset, refresh, watch
from .snapshot import JobSnapshot, snapshot

__all__ = ["DEFAULT_CHUNK_BYTES", "JobSnapshot", "chunk_items", "open_dataset", "refresh", "snapshot",
           "to_dask", "watch"]
