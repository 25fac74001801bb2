"""`export_zarr`: write a job to a zarr v3 store, optionally following it until it ends; resumable.

Each round takes a snapshot, fetches only the items past what the store has committed (in
bounded pieces, into numpy), appends them, and then records the new committed counts. Rerunning
after an interruption (Ctrl-C, SIGKILL) repairs a half-written append and continues; the result
equals an uninterrupted export.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import QmQuaException, QMTimeoutError, QmValueError
from ..client.deadlines import check_timeout
from ..lazy.options import OpenOptions, check_interval
from ..lazy.snapshots import resolve_job
from ..origin import CAPTURE_REASON_ATTR, COPY_OF_ATTR
from .store import COMMITTED, COMPLETE, ExportStore, NotOurStoreError, default_compressors

__all__ = ["export_zarr", "ExportResult"]

PIECE_BYTES = 64 * 2**20  # at most this much of one item dimension is held in memory at once
# job attrs a later snapshot may no longer have (a relay's copy that resumed after an interruption)
TRANSIENT_ATTRS = (CAPTURE_REASON_ATTR,)


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
    passes: `QMTimeoutError`), then record the final state. Rerunning on the same store resumes;
    on a finished export of an ended job it writes nothing. `progress` shows a tqdm bar on stderr
    (rate and ETA from the streams' expected counts; None: only when stderr is a terminal).
    `open_options` are those of `xr.open_dataset(job, engine="qm", ...)` (dims, coords, align...).
    """
    every = check_interval(every)
    if timeout is not None:
        check_timeout(timeout)
    options = OpenOptions.of({**open_options, "chunk_bytes": chunk_bytes})
    job = resolve_job(job, timeout)
    try:
        return _export(job, ExportStore(store), follow, every, timeout, compression, progress, options)
    except OSError as exc:  # say what the user asked for, not the name of our scratch file
        if isinstance(exc, QmQuaException) or exc.errno is None:
            raise
        where = Path(store).expanduser()
        hint = (f" (check that {where.parent} is a folder you can write to, or choose another path)"
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EEXIST, errno.EACCES, errno.EPERM,
                                 errno.EROFS) else "")
        error = OSError(f"cannot write the zarr store {where}: {exc.strerror}{hint}")
        error.errno = exc.errno  # kept for callers; the message names no errno nor scratch file
        raise error from None


def _export(job: Any, out: ExportStore, follow: bool, every: float, timeout: float | None,
            compression: str | None, progress: bool | None, options: OpenOptions) -> ExportResult:
    """The rounds of `export_zarr` (arguments checked)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    ds = _open(job, options)
    job_id = ds.attrs["qm_job_id"]
    result = ExportResult(str(out.path), job_id, ds.attrs["qm_job_state"], {})
    committed = _prepare(out, ds, job_id, compression, result)
    if result.complete:  # a finished export of the ended job: nothing to write
        return result
    bar = _progress_bar(ds, progress, committed)
    pool = ThreadPoolExecutor(1, thread_name_prefix="qm-xarray-export")  # fetches the next piece
    try:
        while True:
            result.rounds += 1
            for dim, count in ds.encoding["qm_item_dims"].items():
                committed.setdefault(dim, 0)
                if count < committed[dim]:
                    raise QmValueError(
                        f"{out.path} holds {committed[dim]} items along {dim!r} but job {job_id!r} "
                        f"now has {count} (a stream joined an aligned dimension, or another job "
                        f"with the same id?); export to a new store")
                _ensure_variables(out, ds, dim, committed[dim], compression)
                names = [str(n) for n, v in ds.variables.items() if v.dims[:1] == (dim,)]
                for stop, piece in _pieces(pool, ds, dim, names, committed[dim], count):
                    out.append(dim, committed[dim], {n: piece[n].values for n in names})
                    if bar is not None:
                        bar.update(stop - committed[dim])
                    committed[dim] = stop
                    out.set_attrs({COMMITTED: dict(committed)})  # the commit point
            fixed = [str(n) for n, v in ds.variables.items()
                     if not (v.dims[:1] and v.dims[0] in ds.encoding["qm_item_dims"])]
            _ensure_fixed(out, ds, fixed, compression)
            out.overwrite({n: ds.variables[n].values for n in fixed if n in out.group("r")})
            out.set_variable_attrs({str(n): dict(var.attrs) for n, var in ds.variables.items()})
            _drop_transient_attrs(out, ds)
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
            ds = _open(job, options)
            _check_layout(out, ds)  # a description changed the dims while exporting
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()


def _drop_transient_attrs(out: ExportStore, ds: xr.Dataset) -> None:
    """The store's attrs are merged with each round's: remove those this round has no more (the
    reason of a relay's copy that was interrupted, and resumed since)."""
    gone = [key for key in TRANSIENT_ATTRS if key not in ds.attrs]
    if not gone or COPY_OF_ATTR not in ds.attrs:
        return
    attrs = out.group().attrs
    for key in gone:
        if key in attrs:
            del attrs[key]


def _pieces(pool: ThreadPoolExecutor, ds: xr.Dataset, dim: str, names: list[str], start: int,
            count: int) -> Iterator[tuple[int, xr.Dataset]]:
    """(stop, loaded piece) along `dim` from `start` to `count`; the next piece is fetched while
    the caller writes this one."""
    def load(lo: int, hi: int) -> xr.Dataset:
        return ds[names].isel({dim: slice(lo, hi)}).load()

    if start >= count:
        return
    stop = _piece_stop(ds, dim, start, count)
    pending: Future[xr.Dataset] | None = pool.submit(load, start, stop)
    while pending is not None:
        piece = pending.result()
        following = _piece_stop(ds, dim, stop, count) if stop < count else None
        pending = None if following is None else pool.submit(load, stop, following)
        yield stop, piece
        if following is not None:
            stop = following


def _open(job: Any, options: OpenOptions) -> xr.Dataset:
    return xr.open_dataset(job, engine="qm", **options.kwargs())


def _prepare(out: ExportStore, ds: xr.Dataset, job_id: str, compression: str | None,
             result: ExportResult) -> dict[str, int]:
    """Start a new store, or resume one: check it is this job's, repair a half-written append.

    A finished export (consolidated) of a job that has ended with the same counts is left as it
    is: `result.complete` is set and nothing is written.
    """
    compressors = default_compressors(compression)
    item_chunks = _item_chunks(ds)
    if out.path.exists() and not out.path.is_dir():
        raise NotOurStoreError(f"{out.path} is a file, not a zarr store; choose another path")
    if out.exists():
        out.check_job(job_id)
        committed = out.committed()
        if committed is None:  # an export of this job from before templates were moved into place
            shutil.rmtree(out.path)
        else:
            _check_layout(out, ds)
            result.resumed = True
            attrs = out.attrs()
            if attrs.get(COMPLETE):
                if (ds.attrs["qm_job_state"] != "running" and out.is_consolidated()
                        and committed == ds.encoding["qm_item_dims"]):
                    result.state, result.counts = attrs.get("qm_job_state", ""), dict(committed)
                    result.complete = True
                    return committed
                out.unfinalize()
            result.repaired = out.repair(committed)
            return committed
    elif out.path.exists() and any(out.path.iterdir()):
        raise NotOurStoreError(f"{out.path} exists and is not a zarr store; choose another path")
    out.write_template(ds, item_chunks, compressors)
    return dict.fromkeys(item_chunks, 0)


def _check_layout(out: ExportStore, ds: xr.Dataset) -> None:
    """Resuming with other options (dims, align...) would write one layout into another: refuse."""
    stored = out.dimension_names()
    differ = [f"{n}: {stored[str(n)]} in the store, {v.dims} now" for n, v in ds.variables.items()
              if str(n) in stored and tuple(stored[str(n)]) != tuple(map(str, v.dims))]
    if differ:
        raise NotOurStoreError(f"{out.path} was exported with other dims ({'; '.join(differ[:3])}): other "
                               "options, or the job's description changed; resume with the same "
                               "options, or export to a new store")


def _item_chunks(ds: xr.Dataset) -> dict[str, int]:
    """Zarr chunk length per item dimension: the fetch page of the lazy layer, the smallest of the
    variables along the dimension (that of the largest items), so that no chunk is much larger
    than a page (a timestamp coordinate pages many more items than its 2-D value variable)."""
    chunks: dict[str, int] = {}
    for var in ds.variables.values():
        preferred = var.encoding.get("preferred_chunks", {})
        for dim, size in preferred.items():
            chunks[dim] = min(chunks.get(dim, int(size)), int(size))
    return {dim: chunks.get(dim, 1) for dim in ds.encoding["qm_item_dims"]}


def _encoding(ds: xr.Dataset, names: list[str], compression: str | None) -> dict[str, dict[str, Any]]:
    chunks = _item_chunks(ds)
    encoding: dict[str, dict[str, Any]] = {}
    for name in names:
        var = ds.variables[name]
        enc: dict[str, Any] = {"compressors": default_compressors(compression)}
        if var.ndim:
            enc["chunks"] = tuple(max(int(chunks.get(str(d), var.sizes[d])), 1) for d in var.dims)
        encoding[name] = enc
    return encoding


def _subset(ds: xr.Dataset, names: list[str]) -> xr.Dataset:
    """The variables `names` of `ds` and none other (their coordinates stay coordinates)."""
    sub = ds[names]
    return sub.drop_vars([n for n in sub.variables if n not in names])


def _ensure_variables(out: ExportStore, ds: xr.Dataset, dim: str, committed: int,
                      compression: str | None) -> None:
    """Streams declared after the export started get their arrays on first sight, holding the
    items already committed along `dim` (zero, unless they joined a shared, aligned dimension)."""
    group = out.group("r")
    missing = [str(n) for n, v in ds.variables.items() if v.dims[:1] == (dim,) and str(n) not in group]
    if missing:
        prefix = _subset(ds, missing).isel({dim: slice(0, committed)}).load()
        out.add_variables(prefix, _encoding(ds, missing, compression))


def _ensure_fixed(out: ExportStore, ds: xr.Dataset, names: list[str], compression: str | None) -> None:
    """`save` streams (and other non-growing variables) declared after the export started, and
    those whose dtype changed: a `save` stream with no value yet is NaN (float) in the dataset,
    and takes the stream's dtype once it has one."""
    group = out.group("r")
    stored = {str(n): a.dtype for n, a in group.arrays()}
    write = [str(n) for n in names if (ds.variables[n].ndim or n in ds.data_vars)
             and (str(n) not in stored or stored[str(n)] != ds.variables[n].dtype)]
    if write:
        out.add_variables(_subset(ds, write).load(), _encoding(ds, write, compression))


def _piece_stop(ds: xr.Dataset, dim: str, start: int, count: int) -> int:
    names = [n for n, v in ds.variables.items() if v.dims[:1] == (dim,)]
    per_item = sum(ds[n].dtype.itemsize * int(np.prod(ds[n].shape[1:], dtype=np.int64)) for n in names)
    chunk = _item_chunks(ds)[dim]
    items = max(chunk, (PIECE_BYTES // max(per_item, 1)) // chunk * chunk)
    return min(count, start + items)


def _progress_bar(ds: xr.Dataset, progress: bool | None, committed: dict[str, int]) -> Any:
    """A tqdm bar on stderr (rate and ETA) over the expected items of the growing dimensions."""
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm import tqdm

    dims = ds.encoding["qm_item_dims"]
    expected: dict[str, int] = {}  # per item dimension: streams aligned on one dimension count once
    for var in ds.data_vars.values():
        if var.dims[:1] and var.dims[0] in dims:
            dim = str(var.dims[0])
            expected[dim] = max(expected.get(dim, 0), int(var.attrs.get("qm_expected_count", 0)))
    total = sum(expected.values()) or None
    done = sum(committed.get(dim, 0) for dim in dims)
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        size = os.terminal_size((0, 0))
    # a new pseudo-terminal reports 0 x 0, and tqdm then draws nothing
    sized = {"dynamic_ncols": True} if size.columns >= 20 and size.lines > 2 else {"ncols": 100, "nrows": 24}
    return tqdm(total=total, initial=done, unit="item", unit_scale=True, **sized,
                desc=f"export {ds.attrs['qm_job_id']}", leave=True)
