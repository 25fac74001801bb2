"""The on-disk form of a ResultStore (format version 1).

    DIR/qm-xarray-store.json              {"format": "qm-xarray-store", "version": 1}
    DIR/lock                              held (flock) by the one process serving the store
    DIR/jobs/<job id>/job.json            state, data loss, errors, stream declarations, metadata,
                                          and on a relay the origin of a copied job
    DIR/jobs/<job id>/<stream>.items      save_all streams: raw packed items, append-only
    DIR/jobs/<job id>/<stream>.value      save streams: the current value, replaced atomically

Promise: an append acknowledged by the server was written to the operating system before the
acknowledgement, so it survives a crash of the server process (kill -9); with `sync=True` it was
also fsynced, so it survives a power loss. A torn write leaves a partial item at the end of a
`.items` file: it is cut off when the store is reopened, so a partial item is never served.
Job metadata is replaced atomically (write, then rename). An append that was not acknowledged may
or may not be there after a crash: producers resume from the count the server reports.

This module reads and writes plain records (`JobRecord`, `StreamSpec`, `ExecutionError`); the
store (store.py) rebuilds its jobs from them, so nothing here knows a `Job`.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import QmValueError
from ..execution_errors import ExecutionError
from ..files import write_atomic
from ..metadata import JobMetadata
from ..origin import Origin
from ..streams import StreamSpec, declarations
from .storage import FileItems, FileValue, Items, MemoryItems, MemoryValue

__all__ = ["JobRecord", "open_store", "release", "load_records", "save_record", "stream_storage",
           "FORMAT", "VERSION"]

FORMAT, VERSION = "qm-xarray-store", 1
MARKER = "qm-xarray-store.json"
LOCK = "lock"


@dataclass(frozen=True)
class JobRecord:
    """What `job.json` holds of a job: plain values, from which the store rebuilds its `Job`."""

    id: str
    created: float
    updated: float
    state: str  # a `JobState` value: "running", "done" or "closed"
    has_dataloss: bool = False
    errors: tuple[ExecutionError, ...] = ()
    streams: tuple[StreamSpec, ...] = ()
    metadata: JobMetadata = JobMetadata()
    origin: Origin | None = None  # a relay's copy of an upstream job


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


def stream_storage(path: Path, job_id: str, spec: StreamSpec, sync: bool) -> tuple[Items, MemoryValue]:
    """The storage of one stream of a job: a `.items` file (save_all) or a `.value` file (save)."""
    directory = _job_dir(path, job_id)
    directory.mkdir(parents=True, exist_ok=True)
    itemsize = spec.item_bytes
    if spec.single:
        return MemoryItems(itemsize), FileValue(directory / f"{spec.name}.value", itemsize, sync)
    return FileItems(directory / f"{spec.name}.items", itemsize, sync), MemoryValue()


def save_record(path: Path, record: JobRecord, sync: bool) -> None:
    """Replace the job's `job.json` with `record`, atomically."""
    fields: dict[str, Any] = {
        "id": record.id, "created": record.created, "updated": record.updated, "state": record.state,
        "has_dataloss": record.has_dataloss,
        "errors": [asdict(e) for e in record.errors],
        "streams": [asdict(s) for s in record.streams],
        "metadata": record.metadata.to_json(),
    }
    if record.origin is not None:
        fields["origin"] = record.origin.to_json()
    directory = _job_dir(path, record.id)
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / "job.json", json.dumps(fields, indent=1).encode(), sync)


def load_records(path: Path) -> list[JobRecord]:
    """Every job saved under the store's directory; `updated` is also the newest file's time."""
    records = []
    for job_file in sorted((path / "jobs").glob("*/job.json")):
        fields = json.loads(job_file.read_text())
        created = fields["created"]
        newest = max([p.stat().st_mtime for p in job_file.parent.iterdir()], default=created)
        records.append(JobRecord(
            id=fields["id"], created=created, updated=max(fields.get("updated", created), newest),
            state=fields["state"], has_dataloss=fields["has_dataloss"],
            errors=tuple(ExecutionError.create(e["message"], e["code"], e["severity"])
                         for e in fields["errors"]),
            streams=tuple(declarations(fields["streams"])),
            metadata=JobMetadata.from_json(fields.get("metadata")),
            origin=Origin.from_json(fields.get("origin"))))
    return records
