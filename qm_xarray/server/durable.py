"""The on-disk form of a ResultStore (format version 1).

    DIR/qm-xarray-store.json              {"format": "qm-xarray-store", "version": 1}
    DIR/lock                              held (flock) by the one process serving the store
    DIR/jobs/<job id>/job.json            state, data loss, errors, stream declarations
    DIR/jobs/<job id>/<stream>.items      save_all streams: raw packed items, append-only
    DIR/jobs/<job id>/<stream>.value      save streams: the current value, replaced atomically

Promise: an append acknowledged by the server was written to the operating system before the
acknowledgement, so it survives a crash of the server process (kill -9); with `sync=True` it was
also fsynced, so it survives a power loss. A torn write leaves a partial item at the end of a
`.items` file: it is cut off when the store is reopened, so a partial item is never served.
Job metadata is replaced atomically (write, then rename). An append that was not acknowledged may
or may not be there after a crash: producers resume from the count the server reports.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..dtypes import StreamLayout
from ..errors import QmValueError
from .storage import FileItems, FileValue, MemoryItems, MemoryValue, write_atomic

if TYPE_CHECKING:
    from .store import Job, ResultStore

__all__ = ["open_store", "release", "load_jobs", "save_job", "stream_storage", "FORMAT", "VERSION"]

FORMAT, VERSION = "qm-xarray-store", 1
MARKER = "qm-xarray-store.json"
LOCK = "lock"


def open_store(path: Path) -> int:
    """Create the directory layout, or check that an existing directory is one of our stores.

    Returns the file descriptor of the store's lock, held until it is closed (`release`): two
    servers appending to one store would corrupt it, so the second is refused.
    """
    marker = path / MARKER
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("format") != FORMAT or info.get("version") != VERSION:
            raise QmValueError(f"{path} holds a store of format {info!r}, not {FORMAT} v{VERSION}")
    elif path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise QmValueError(f"{path} is not empty and is not a qm-xarray store")
    else:
        (path / "jobs").mkdir(parents=True, exist_ok=True)
        write_atomic(marker, json.dumps({"format": FORMAT, "version": VERSION}).encode())
    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise QmValueError(f"the store {path} is in use by another server (or ResultStore)") from None
    return fd


def release(fd: int) -> None:
    """Give the store's lock back (closing its descriptor releases it)."""
    os.close(fd)


def _job_dir(path: Path, job_id: str) -> Path:
    return path / "jobs" / job_id


def stream_storage(path: Path, job_id: str, name: str, layout: StreamLayout, single: bool,
                   sync: bool) -> tuple[Any, Any]:
    directory = _job_dir(path, job_id)
    directory.mkdir(parents=True, exist_ok=True)
    if single:
        return MemoryItems(layout.itemsize), FileValue(directory / f"{name}.value", layout.itemsize, sync)
    return FileItems(directory / f"{name}.items", layout.itemsize, sync), MemoryValue()


def save_job(path: Path, job: Job, sync: bool) -> None:
    record = {
        "id": job.id, "created": job.created, "updated": job.updated, "state": job.state.value,
        "has_dataloss": job.has_dataloss,
        "errors": [{"message": e.message, "code": e.code, "severity": e.severity} for e in job.errors],
        "streams": [{"name": s.name, "dtype": s.layout.dtype.str, "shape": list(s.layout.shape),
                     "timestamps": s.layout.timestamps, "single": s.single,
                     "expected_count": s.expected_count} for s in job.streams.values()],
    }
    directory = _job_dir(path, job.id)
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / "job.json", json.dumps(record, indent=1).encode(), sync)


def load_jobs(store: ResultStore) -> list[Job]:
    """Every job saved under the store's directory, with its streams reopened."""
    from .store import ExecutionError, Job, JobState

    assert store.path is not None
    jobs = []
    for job_file in sorted((store.path / "jobs").glob("*/job.json")):
        record = json.loads(job_file.read_text())
        job = Job(store, record["id"])
        job.created = record["created"]
        for spec in record["streams"]:
            layout = StreamLayout.create(spec["dtype"], tuple(spec["shape"]), spec["timestamps"])
            job._add_stream(spec["name"], layout, spec["single"], spec["expected_count"])
        job._state = JobState(record["state"])
        job._dataloss = record["has_dataloss"]
        job._errors = [ExecutionError(e["message"], e["code"], e["severity"]) for e in record["errors"]]
        newest = max([p.stat().st_mtime for p in job_file.parent.iterdir()], default=job.created)
        job.updated = max(record.get("updated", job.created), newest)
        jobs.append(job)
    return jobs
