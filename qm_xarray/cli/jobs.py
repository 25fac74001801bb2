"""`qm-xarray jobs` (the jobs of a server; `--watch` refreshes the table) and `qm-xarray info` (one
job, or an exported store). On a relay, a job that is a copy of an upstream job shows how far the
copy is: a `copy` column in `jobs` (only when some job is a copy), a `copy of:` line in `info`,
and an "origin" object (null for other jobs) in their JSON."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from ..origin import INTERRUPTED
from ..session import Connection
from .common import (
    UsageError,
    add_address,
    add_credentials,
    add_json,
    connect_timeout,
    connected,
    credentials,
    job_ref,
    looks_like_path,
    open_store,
    positive_seconds,
    print_json,
    summary,
)
from .display import (
    copy_line,
    copy_text,
    dataset_metadata_json,
    flags,
    format_metadata,
    job_json,
    metadata_json,
    progress_text,
    store_json,
    table,
    time_text,
)

__all__ = ["add_parsers", "cmd_info", "cmd_jobs", "jobs_table", "pause"]

WATCH_EVERY = 2.0          # seconds between two listings of --watch
CLEAR = "\x1b[H\x1b[2J"     # a terminal's cursor home and clear screen


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("jobs", help="list the jobs of a server with state and progress (--watch: "
                                    "keep the table up to date)")
    add_address(p)
    add_credentials(p)
    add_json(p)
    p.add_argument("--watch", action="store_true",
                   help="refresh the table until Ctrl-C: on a terminal redrawn in place, else printed "
                        "again each time something changed (--json: one JSON line each time)")
    p.add_argument("--every", type=float, default=WATCH_EVERY, metavar="S",
                   help=f"with --watch: seconds between two listings (default {WATCH_EVERY:g})")
    p.add_argument("--until-done", action="store_true",
                   help="with --watch: stop once no job is running (a relay's interrupted copy "
                        "counts as not running)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="with --watch: stop after S seconds")
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("info", help="describe a job (or an exported zarr store): schema, counts, state")
    p.add_argument("job", metavar="JOB", help="job id on --address, qm://HOST:PORT/JOB, or a zarr store path")
    add_address(p)
    add_credentials(p)
    add_json(p)
    p.set_defaults(func=cmd_info)


def jobs_table(infos: list[dict[str, Any]], address: str, now: float | None = None) -> str:
    """The table of `jobs`: one row per job (`job_json` dicts), or a line saying there is none.
    A `copy` column (`copy_text`) when some job is a relay's copy of an upstream job."""
    if not infos:
        return f"no jobs on {address}"
    copies = any(i.get("origin") for i in infos)
    now = time.time() if now is None else now
    rows = [("job", "state", "progress", "streams", "updated", *(("copy",) if copies else ()), "flags")]
    rows += [(i["job_id"], i["outcome"], progress_text(i), str(len(i["streams"])), time_text(i["updated"]),
              *((copy_text(i, now),) if copies else ()), flags(i)) for i in infos]
    return table(rows)


def _news(infos: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What `--watch` compares to tell a change: everything but when a copy last reached its
    upstream (that moves every round of a relay, also when nothing else does)."""
    return [{**i, "origin": {**i["origin"], "checked": None}} if i.get("origin") else i for i in infos]


def _listing(conn: Connection) -> list[dict[str, Any]]:
    jobs = sorted(conn.jobs(timeout=connect_timeout()), key=lambda j: j.created)
    return [job_json(j) for j in jobs]


def cmd_jobs(args: argparse.Namespace) -> int:
    """List the jobs of the server: state, progress (items of save_all streams), flags."""
    if args.watch:
        return _watch(args)
    for option in ("until_done", "timeout"):
        if getattr(args, option) not in (None, False):
            raise UsageError(f"--{option.replace('_', '-')} applies only with --watch")
    with connected(args.address, credentials(args), jobs_service=True) as conn:
        infos = _listing(conn)
    if args.json:
        print_json(infos)
    else:
        print(jobs_table(infos, args.address), flush=True)
    return 0


def pause(seconds: float) -> None:
    """The wait between two listings of `jobs --watch` (one place, for tests to pace)."""
    time.sleep(seconds)


def _watch(args: argparse.Namespace) -> int:
    """`jobs --watch`: list again every `--every` seconds, until Ctrl-C (exit 130, from `main`),
    `--until-done` (no job running) or `--timeout`."""
    positive_seconds("--every", args.every)
    positive_seconds("--timeout", args.timeout)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    terminal = sys.stdout.isatty() and not args.json
    last: list[dict[str, Any]] | None = None  # `_news` of the last listing
    with connected(args.address, credentials(args), jobs_service=True) as conn:
        while True:
            infos = _listing(conn)
            if terminal:
                now = datetime.now().strftime("%H:%M:%S")
                sys.stdout.write(f"{CLEAR}jobs on {args.address} at {now}, every {args.every:g} s "
                                 f"(Ctrl-C to stop)\n\n{jobs_table(infos, args.address)}\n")
                sys.stdout.flush()
            elif _news(infos) != last:
                text = json.dumps(infos) if args.json else \
                    ("" if last is None else "\n") + jobs_table(infos, args.address)
                print(text, flush=True)
            last = _news(infos)
            if args.until_done and not any(_still_running(i) for i in infos):
                return 0
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return 0
            pause(args.every if left is None else min(args.every, left))


def _still_running(info: dict[str, Any]) -> bool:
    """A job that will end by itself: running, and not a relay's interrupted copy (whose end
    nobody knows until its upstream answers again)."""
    origin = info.get("origin") or {}
    return bool(info["state"] == "running" and origin.get("status") != INTERRUPTED)


def cmd_info(args: argparse.Namespace) -> int:
    """Describe a job of a server (or an exported store): state, flags, and one row per stream."""
    path = Path(args.job).expanduser()
    if not args.job.startswith("qm://") and (path.exists() or looks_like_path(args.job)):
        stored = open_store(path)
        info = {**store_json(path, stored), "metadata": dataset_metadata_json(stored)}
        where = f"store {path}" + ("" if info["export_complete"] else " (export not finished)")
    else:
        address, job_id = job_ref(args.job, args.address)
        with connected(address, credentials(args)) as conn:
            found = summary(conn, job_id, address)
            meta = conn.job(job_id).metadata(timeout=connect_timeout())
        info = {**job_json(found), "address": address, "metadata": metadata_json(meta, found)}
        where = address
    if args.json:
        print_json(info)
        return 0
    text = flags(info)
    copy = copy_line(info)
    lines = [f"job {info['job_id']} ({where}): {info['outcome']}" + (f" ({text})" if text else ""),
             *((copy,) if copy else ()),
             f"progress: {progress_text(info)} items of save_all streams",
             f"data loss: {'yes' if info['has_dataloss'] else 'no'}",
             "execution errors: " + ("; ".join(f"{e['severity']} {e['code']}: {e['message']}"
                                              for e in info["errors"]) or "none")]
    described = info["metadata"]["streams"]
    rows = [("stream", "mode", "dtype", "shape", "count/expected", "dims", "units", "long name")]
    for s in info["streams"]:
        d = described.get(s["name"], {"dims": [], "units": "", "long_name": ""})
        rows.append((s["name"], s["save_mode"], s["dtype"] + (" +ts" if s["timestamps"] else ""),
                     str(tuple(s["shape"])), f"{s['count']}/{s['expected_count'] or '?'}",
                     ", ".join(d["dims"]), d["units"], d["long_name"]))
    extra = format_metadata(info["metadata"])
    print("\n".join(lines) + "\n\n" + table(rows) + (f"\n\n{extra}" if extra else ""), flush=True)
    return 0
