"""`qm-xarray jobs` (the jobs of a server) and `qm-xarray info` (one job, or an exported store)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (add_address, add_credentials, add_json, connect_timeout, connected, credentials,
                     job_ref, looks_like_path, print_json, summary)
from .display import flags, job_json, progress_text, store_json, table, time_text

__all__ = ["add_parsers", "cmd_jobs", "cmd_info"]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("jobs", help="list the jobs of a server with state and progress")
    add_address(p)
    add_credentials(p)
    add_json(p)
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("info", help="describe a job (or an exported zarr store): schema, counts, state")
    p.add_argument("job", metavar="JOB", help="job id on --address, qm://HOST:PORT/JOB, or a zarr store path")
    add_address(p)
    add_credentials(p)
    add_json(p)
    p.set_defaults(func=cmd_info)


def cmd_jobs(args: argparse.Namespace) -> int:
    """List the jobs of the server: state, progress (items of save_all streams), flags."""
    with connected(args.address, credentials(args), jobs_service=True) as conn:
        jobs = sorted(conn.jobs(timeout=connect_timeout()), key=lambda j: j.created)
    infos = [job_json(j) for j in jobs]
    if args.json:
        print_json(infos)
        return 0
    if not infos:
        print(f"no jobs on {args.address}", flush=True)
        return 0
    rows = [("job", "state", "progress", "streams", "updated", "flags")]
    rows += [(i["job_id"], i["outcome"], progress_text(i), str(len(i["streams"])), time_text(i["updated"]),
              flags(i)) for i in infos]
    print(table(rows), flush=True)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Describe a job of a server (or an exported store): state, flags, and one row per stream."""
    path = Path(args.job).expanduser()
    if not args.job.startswith("qm://") and (path.exists() or looks_like_path(args.job)):
        info = store_json(path)
        where = f"store {path}" + ("" if info["export_complete"] else " (export not finished)")
    else:
        address, job_id = job_ref(args.job, args.address)
        with connected(address, credentials(args)) as conn:
            found = summary(conn, job_id, address)
        info = {**job_json(found), "address": address}
        where = address
    if args.json:
        print_json(info)
        return 0
    text = flags(info)
    lines = [f"job {info['job_id']} ({where}): {info['outcome']}" + (f" ({text})" if text else ""),
             f"progress: {progress_text(info)} items of save_all streams",
             f"data loss: {'yes' if info['has_dataloss'] else 'no'}",
             "execution errors: " + ("; ".join(f"{e['severity']} {e['code']}: {e['message']}"
                                              for e in info["errors"]) or "none")]
    rows = [("stream", "mode", "dtype", "shape", "count/expected")]
    for s in info["streams"]:
        rows.append((s["name"], s["save_mode"], s["dtype"] + (" +ts" if s["timestamps"] else ""),
                     str(tuple(s["shape"])), f"{s['count']}/{s['expected_count'] or '?'}"))
    print("\n".join(lines) + "\n\n" + table(rows), flush=True)
    return 0
