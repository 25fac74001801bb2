"""Persistence: zarr export of a job that can follow it while it runs, and resume."""

from .export import ExportResult, export_zarr
from .store import ExportStore, NotOurStoreError

__all__ = ["ExportResult", "ExportStore", "NotOurStoreError", "export_zarr"]
