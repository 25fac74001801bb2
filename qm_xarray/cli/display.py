"""How jobs are shown: progress fractions, flags, plain-text tables, and the JSON of `jobs`, `info`
and `export` (a job of a server, or an exported zarr store, in the same keys). A relay's copy of an
upstream job also shows where it comes from and how far the copy is ("origin", `copy_text`)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..client.jobs import JobSummary
from ..errors import QmValueError
from ..execution_errors import outcome as job_outcome
from ..metadata import JobMetadata, StreamMetadata
from ..origin import CAPTURING, COMPLETE, INTERRUPTED, Origin
from ..streams import StreamSpec
from .common import open_store

if TYPE_CHECKING:  # xarray is imported by the commands that open a store, not by every command
    import xarray as xr

__all__ = ["job_fraction", "job_flags", "stream_counts", "format_table", "table", "time_text",
           "job_json", "store_json", "flags", "progress_text", "outcome", "metadata_json",
           "dataset_metadata_json", "format_metadata", "copy_text", "copy_line", "origin_of_attrs"]

ATTR_CHARS = 60  # an attribute's value in `info`: longer ones (a program's text) are cut


def job_fraction(job: JobSummary) -> tuple[int, int]:
    """(items so far, items expected) over the `save_all` streams (all streams if none)."""
    streams = [s for s in job.streams if s.expected_count and not s.single] or \
              [s for s in job.streams if s.expected_count]
    return (sum(min(s.count, s.expected_count) for s in streams),
            sum(s.expected_count for s in streams))


def job_flags(job: JobSummary) -> str:
    """` (DATA LOSS; error 7: boom)`, or "" for a job without flags."""
    flags = []
    if job.has_dataloss:
        flags.append("DATA LOSS")
    flags += [f"{severity} {code}: {message}" for code, severity, message in job.errors]
    return f" ({'; '.join(flags)})" if flags else ""


def stream_counts(job: JobSummary) -> str:
    """`name count/expected` per stream, `save_all` streams first (they are the ones growing)."""
    streams = sorted(job.streams, key=lambda s: s.single)
    return ", ".join(f"{s.name} {s.count}/{s.expected_count or '?'}" for s in streams)


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as left-aligned columns (the first row is the header)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def format_table(job: JobSummary) -> str:
    """A plain-text table: stream, dtype, shape, count/expected, state."""
    rows = [("stream", "dtype", "shape", "count/expected", "state")]
    for s in job.streams:
        if job.state == "running":
            state = "growing"
        elif not s.expected_count:
            state = "ended"
        else:
            state = "complete" if s.count >= s.expected_count else "incomplete"
        rows.append((s.name, s.dtype + (" +ts" if s.timestamps else ""), str(s.shape),
                     f"{s.count}/{s.expected_count or '?'}", state + (" (save)" if s.single else "")))
    return table(rows)


def time_text(unix: float) -> str:
    return datetime.fromtimestamp(unix).isoformat(sep=" ", timespec="seconds") if unix else ""


def job_json(job: JobSummary) -> dict[str, Any]:
    """A job summary as plain JSON data (the `--json` form of `jobs` and `info`)."""
    done, total = job_fraction(job)
    return {
        "job_id": job.job_id, "state": job.state, "outcome": outcome(job.state, job.errors),
        "has_dataloss": job.has_dataloss,
        "errors": [{"code": c, "severity": sev, "message": m} for c, sev, m in job.errors],
        "count": done, "expected": total, "created": job.created, "updated": job.updated,
        "origin": job.origin.to_json() if job.origin is not None else None,
        "streams": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape),
                     "save_mode": "save" if s.single else "save_all", "timestamps": s.timestamps,
                     "count": s.count, "expected_count": s.expected_count} for s in job.streams],
    }


def store_json(path: Path, ds: xr.Dataset | None = None) -> dict[str, Any]:
    """The `info` of an exported zarr store (`ds`, if it is open already), from its attributes
    (same keys as `job_json`)."""
    ds = open_store(path) if ds is None else ds
    attrs = ds.attrs
    if "qm_job_id" not in attrs:
        raise QmValueError(f"{path} is a zarr store but not a qm-xarray export")
    counts = json.loads(attrs.get("qm_counts", "{}"))
    expected = json.loads(attrs.get("qm_expected_counts", "{}"))
    streams = []
    for name, var in ds.data_vars.items():
        single = var.attrs.get("qm_save_mode") == "save"
        streams.append({"name": str(name), "dtype": var.dtype.str,
                        "shape": list(var.shape if single else var.shape[1:]),
                        "save_mode": "save" if single else "save_all",
                        "timestamps": f"{name}_timestamp" in ds.variables,
                        "count": int(var.attrs.get("qm_count", counts.get(name, 0))),
                        "expected_count": int(var.attrs.get("qm_expected_count", expected.get(name, 0)))})
    growing = [s for s in streams if s["save_mode"] == "save_all" and s["expected_count"]]
    return {
        "job_id": attrs["qm_job_id"], "state": attrs.get("qm_job_state", "unknown"),
        "outcome": outcome(attrs.get("qm_job_state", "unknown"), json.loads(attrs.get("qm_execution_errors", "[]"))),
        "has_dataloss": bool(attrs.get("qm_has_dataloss", 0)),
        "errors": json.loads(attrs.get("qm_execution_errors", "[]")),
        "count": sum(min(s["count"], s["expected_count"]) for s in growing),
        "expected": sum(s["expected_count"] for s in growing),
        "store": str(path), "export_complete": bool(attrs.get("qm_export_complete", False)),
        "source": attrs.get("qm_source", ""), "snapshot_time": attrs.get("qm_snapshot_time", ""),
        "origin": origin_of_attrs(attrs),
        "streams": streams,
    }


def origin_of_attrs(attrs: Any) -> dict[str, Any] | None:
    """The "origin" of an exported copy, from its `qm_copy_of` and `qm_capture` attributes (as
    `Origin.to_json()`, without the live figures: `checked` 0 and `behind` 0); None otherwise."""
    origin = Origin.from_attrs(attrs)
    return None if origin is None else origin.to_json()


def _age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def copy_text(info: dict[str, Any], now: float | None = None) -> str:
    """The `copy` column of `jobs`: how far a relay's copy is behind its upstream ("live 0.2 s":
    up to date when last checked, that long ago; "12,345 behind"; "interrupted"; "complete"),
    "" for a job that is not a copy."""
    origin = Origin.from_json(info.get("origin"))
    if origin is None:
        return ""
    if origin.status in (INTERRUPTED, COMPLETE):
        return origin.status
    if origin.behind:
        return f"{origin.behind:,} behind"
    if not origin.checked:
        return CAPTURING
    return f"live {_age((time.time() if now is None else now) - origin.checked)}"


def copy_line(info: dict[str, Any], now: float | None = None) -> str:
    """The `copy of:` line of `info` (upstream job, and the copy's standing); "" for other jobs.
    An exported store knows the standing at its snapshot, not the live figures."""
    origin = Origin.from_json(info.get("origin"))
    if origin is None:
        return ""
    if "store" in info:
        standing = f"{origin.status}: {origin.reason}" if origin.interrupted and origin.reason else origin.status
    else:
        standing = origin.describe(now)
    line = f"copy of: job {origin.job_id} on {origin.upstream}, {standing}"
    return line + ("; the data stops where the copy stopped" if origin.interrupted else "")


def flags(info: dict[str, Any]) -> str:
    """`DATA LOSS; error 7: boom` of a `job_json`/`store_json` dict ("" without flags)."""
    found = ["DATA LOSS"] if info["has_dataloss"] else []
    found += [f"{e['severity']} {e['code']}: {e['message']}" for e in info["errors"]]
    return "; ".join(found)


def outcome(state: str, errors: list[dict[str, Any]] | tuple[Any, ...]) -> str:
    """`execution_errors.outcome` of errors as JSON dicts or (code, severity, message) tuples."""
    return job_outcome(state, [e["severity"] if isinstance(e, dict) else e[1] for e in errors])


def progress_text(info: dict[str, Any]) -> str:
    """`done/expected (pct)`; "-" for a job whose streams the server did not list (a QOP's)."""
    if not info["streams"]:
        return "-"
    done, total = info["count"], info["expected"]
    return f"{done}/{total}" + (f" ({100 * done / total:.0f}%)" if total else "")


def _coordinate_json(dim: str, values: np.ndarray, units: str, long_name: str) -> dict[str, Any]:
    values = np.asarray(values)
    ends = values[[0, -1]].tolist() if values.size else []
    return {"dim": dim, "size": int(values.size), "first": ends[0] if ends else None,
            "last": ends[-1] if ends else None, "units": units, "long_name": long_name}


def metadata_json(meta: JobMetadata, job: JobSummary) -> dict[str, Any]:
    """What `info` shows of a job's metadata: per stream its dims, units and long name, the
    coordinates (size, ends, units) and the job's attributes."""
    streams = {}
    for s in job.streams:
        described = meta.streams.get(s.name, StreamMetadata())
        dims = meta.dims_of(StreamSpec(s.name, s.dtype, s.shape, s.single, s.timestamps, s.expected_count))
        streams[s.name] = {"dims": list(dims), "units": described.units or "",
                           "long_name": described.long_name or ""}
    return {"streams": streams, "attrs": dict(meta.attrs),
            "coords": {n: _coordinate_json(c.dim, c.values, c.units, c.long_name) for n, c in meta.coords.items()}}


def dataset_metadata_json(ds: xr.Dataset) -> dict[str, Any]:
    """The same, read back from a dataset (an exported store): its variables' dims and CF attributes."""
    streams = {str(n): {"dims": [str(d) for d in v.dims], "units": str(v.attrs.get("units", "")),
                        "long_name": str(v.attrs.get("long_name", ""))} for n, v in ds.data_vars.items()}
    coords = {str(n): _coordinate_json(str(c.dims[0]), c.values, str(c.attrs.get("units", "")),
                                       str(c.attrs.get("long_name", "")))
              for n, c in ds.coords.items() if c.ndim == 1 and not str(n).endswith("_timestamp")}
    attrs = {str(k): v for k, v in ds.attrs.items() if not str(k).startswith("qm_")}
    return {"streams": streams, "attrs": attrs, "coords": coords}


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    text = " ".join(text.split())
    return text if len(text) <= ATTR_CHARS else text[:ATTR_CHARS - 3] + "..."


def format_metadata(meta: dict[str, Any]) -> str:
    """The coordinates and attributes sections of `info` ("" when there are none)."""
    parts = []
    if meta["coords"]:
        rows = [("coordinate", "along", "values", "units", "long name")]
        for name, c in meta["coords"].items():
            span = f"{c['size']}: {c['first']} .. {c['last']}" if c["size"] else "0"
            rows.append((name, c["dim"], span, c["units"], c["long_name"]))
        parts.append(table(rows))
    if meta["attrs"]:
        parts.append("attributes:\n" + "\n".join(f"  {k}: {_short(v)}" for k, v in meta["attrs"].items()))
    return "\n\n".join(parts)
