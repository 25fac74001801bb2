"""`export_zarr`: write a job to a zarr v3 store, optionally following it until it ends; resumable.

Each round takes a snapshot, fetches only the items past what the store has committed (in
bounded pieces, into numpy), appends them, and then records the new committed counts. Rerunning
after an interruption (Ctrl-C, SIGKILL) repairs a half-written append and continues; the result
equals an uninterrupted export.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import QMTimeoutError
from ..lazy.snapshot import resolve_job
from .store import COMMITTED, ExportStore, NotOurStoreError, default_compressors

__all__ = ["export_zarr", "ExportResult"]

PIECE_BYTES = 64 * 2**20  # at most this much of one item dimension is held in memory at once


@dataclass
class ExportResult:
    path: str
    job_id: str
    state: str
    counts: dict[str, int]
    rounds: int = 0
    resumed: bool = False
    repaired: list[str] = field(default_factory=list)
    complete: bool = False


def export_zarr(job: Any, store: str | Path, *, follow: bool = False, every: float = 0.5,
                timeout: float | None = None, compression: str | None = "default",
                chunk_bytes: int | None = None, progress: bool | None = None,
                **open_options: Any) -> ExportResult:
    """Write every stream of `job` to a zarr v3 store at `store` (the layout of engine "qm").

    With `follow`, keep appending new items until the job is done or closed (or `timeout`
    passes: `QMTimeoutError`), then record the final state. Rerunning on the same store resumes.
    `open_options` are those of `xr.open_dataset(job, engine="qm", ...)` (dims, coords, align...).
    """
    job = resolve_job(job)
    out = ExportStore(store)
    deadline = None if timeout is None else time.monotonic() + timeout
    ds = _open(job, chunk_bytes, open_options)
    job_id = ds.attrs["qm_job_id"]
    result = ExportResult(str(out.path), job_id, ds.attrs["qm_job_state"], {})
    committed = _prepare(out, ds, job_id, compression, result)
    bar = _progress_bar(ds, progress)
    try:
        while True:
            result.rounds += 1
            for dim, count in ds.encoding["qm_item_dims"].items():
                committed.setdefault(dim, 0)
                _ensure_variables(out, ds, dim, compression)
                while committed[dim] < count:
                    stop = _piece_stop(ds, dim, committed[dim], count)
                    names = [n for n, v in ds.variables.items() if v.dims[:1] == (dim,)]
                    piece = ds[names].isel({dim: slice(committed[dim], stop)}).load()
                    out.append(dim, committed[dim], {n: piece[n].values for n in names})
                    if bar is not None:
                        bar.update(stop - committed[dim])
                    committed[dim] = stop
                    out.set_attrs({COMMITTED: dict(committed)})  # the commit point
            fixed = {n: v.values for n, v in ds.variables.items()
                     if not (v.dims[:1] and v.dims[0] in ds.encoding["qm_item_dims"])}
            out.overwrite({n: v for n, v in fixed.items() if n in out.group("r")})
            out.set_attrs({**ds.attrs, COMMITTED: dict(committed)})
            result.state, result.counts = ds.attrs["qm_job_state"], dict(committed)
            if ds.attrs["qm_job_state"] != "running":
                out.finalize({**ds.attrs, COMMITTED: dict(committed)})
                result.complete = True
                return result
            if not follow:
                return result
            if deadline is not None and time.monotonic() >= deadline:
                raise QMTimeoutError(f"job {job_id!r} was still running after {timeout} s of export")
            time.sleep(every if deadline is None else max(0.0, min(every, deadline - time.monotonic())))
            ds = _open(job, chunk_bytes, open_options)
    finally:
        if bar is not None:
            bar.close()


def _open(job: Any, chunk_bytes: int | None, options: dict[str, Any]) -> xr.Dataset:
    return xr.open_dataset(job, engine="qm", chunk_bytes=chunk_bytes, **options)


def _prepare(out: ExportStore, ds: xr.Dataset, job_id: str, compression: str | None,
             result: ExportResult) -> dict[str, int]:
    """Start a new store, or resume one: check it is this job's, repair a half-written append."""
    compressors = default_compressors(compression)
    item_chunks = _item_chunks(ds)
    if out.exists():
        out.check_job(job_id)
        committed = out.committed()
        if committed is None:  # interrupted while writing the template: nothing was committed
            shutil.rmtree(out.path)
        else:
            result.resumed = True
            if out.attrs().get("qm_export_complete"):
                out.unfinalize()
            result.repaired = out.repair(committed)
            return committed
    elif out.path.exists() and any(out.path.iterdir()):
        raise NotOurStoreError(f"{out.path} exists and is not a zarr store; choose another path")
    out.write_template(ds, item_chunks, compressors)
    return dict.fromkeys(item_chunks, 0)


def _item_chunks(ds: xr.Dataset) -> dict[str, int]:
    """Zarr chunk length per item dimension: the fetch page of the lazy layer."""
    chunks = {}
    for var in ds.variables.values():
        preferred = var.encoding.get("preferred_chunks", {})
        for dim, size in preferred.items():
            chunks[dim] = max(chunks.get(dim, 0), int(size))
    return {dim: chunks.get(dim, 1) for dim in ds.encoding["qm_item_dims"]}


def _ensure_variables(out: ExportStore, ds: xr.Dataset, dim: str, compression: str | None) -> None:
    """Streams declared after the export started get their arrays (zero items) on first sight."""
    group = out.group("r")
    missing = [n for n, v in ds.variables.items() if v.dims[:1] == (dim,) and n not in group]
    if missing:
        empty = ds[missing].isel({dim: slice(0, 0)}).load()
        chunk = _item_chunks(ds)[dim]
        encoding = {n: {"chunks": (chunk, *empty[n].shape[1:]) if empty[n].ndim > 1 else (chunk,),
                        "compressors": default_compressors(compression)} for n in missing}
        empty.drop_attrs().to_zarr(str(out.path), mode="a", consolidated=False, zarr_format=3,
                                   encoding=encoding)


def _piece_stop(ds: xr.Dataset, dim: str, start: int, count: int) -> int:
    names = [n for n, v in ds.variables.items() if v.dims[:1] == (dim,)]
    per_item = sum(ds[n].dtype.itemsize * int(np.prod(ds[n].shape[1:], dtype=np.int64)) for n in names)
    chunk = _item_chunks(ds)[dim]
    items = max(chunk, (PIECE_BYTES // max(per_item, 1)) // chunk * chunk)
    return min(count, start + items)


def _progress_bar(ds: xr.Dataset, progress: bool | None) -> Any:
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm import tqdm

    expected = {n: ds[n].attrs.get("qm_expected_count", 0) for n in ds.data_vars
                if ds[n].attrs.get("qm_save_mode") == "save_all"}
    total = sum(expected.values()) or None
    return tqdm(total=total, unit="item", desc=f"export {ds.attrs['qm_job_id']}", leave=False)
