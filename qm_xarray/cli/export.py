"""`qm-xarray export`: `export_zarr` from the command line (resumable; `--follow` a running job)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from .common import (
    add_address,
    add_credentials,
    add_json,
    connected,
    credentials,
    job_ref,
    positive_seconds,
    print_json,
    summary,
)
from .display import flags, store_json

__all__ = ["add_parser", "cmd_export"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("export", help="write a job to a zarr store (resumable; --follow a running job)",
                       description="Write every stream of JOB to the zarr v3 store STORE, in the layout of "
                       "xr.open_dataset(job, engine='qm'). Rerunning on the same store resumes (after "
                       "Ctrl-C or a kill) and repairs a half-written append; a finished export is "
                       "left as it is.")
    p.add_argument("job", metavar="JOB", help="job id on --address, or qm://HOST:PORT/JOB")
    p.add_argument("store", metavar="STORE", help="path of the zarr store (created, or resumed)")
    p.add_argument("--follow", action="store_true", help="keep appending until the job ends")
    add_address(p)
    add_credentials(p)
    p.add_argument("--every", type=float, default=0.5, metavar="S",
                   help="with --follow: seconds between rounds (default 0.5)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="with --follow: give up (exit 1, store resumable) after S seconds")
    p.add_argument("--no-compression", action="store_true", help="store chunks uncompressed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json(p)
    p.set_defaults(func=cmd_export)


def export_line(result: Any, flag_text: str) -> str:
    """The one line that says what an export wrote and whether it is complete."""
    counts = ", ".join(f"{dim} {n}" for dim, n in result.counts.items()) or "no save_all streams"
    if result.complete and result.rounds == 0:
        end = "already complete, nothing written"
    elif result.complete:
        end = "complete"
    else:
        end = "job still running: rerun (with --follow to wait for the end) to continue"
    return (f"exported job {result.job_id} ({result.state}{'; ' + flag_text if flag_text else ''}) to "
            f"{result.path}: {counts} items; {end}")


def cmd_export(args: argparse.Namespace) -> int:
    """`export_zarr` from the command line, with a progress bar (rate, ETA) on a terminal."""
    from ..persist import export_zarr

    positive_seconds("--every", args.every)
    positive_seconds("--timeout", args.timeout)
    address, job_id = job_ref(args.job, args.address)
    with connected(address, credentials(args)) as conn:
        summary(conn, job_id, address)
        try:
            result = export_zarr(conn.job(job_id), args.store, follow=args.follow, every=args.every,
                                 timeout=args.timeout, progress=False if args.quiet else None,
                                 compression=None if args.no_compression else "default",
                                 on_dataloss="ignore")
        except KeyboardInterrupt:
            print(f"qm-xarray export: interrupted; rerun the same command to resume {args.store}",
                  file=sys.stderr)
            return 130
    info = store_json(Path(result.path))
    if args.json:
        print_json({**dataclasses.asdict(result), "has_dataloss": info["has_dataloss"],
                    "errors": info["errors"]})
    else:
        print(export_line(result, flags(info)), flush=True)
    return 0
