"""`qm-xarray close JOB`: end a job whose producer died (a durable server keeps such jobs running
after a restart), as done, cancelled, or failed with an execution error. Needs the producer token."""

from __future__ import annotations

import argparse

from ..client.connection import close_channels
from ..errors import JobFinishedError, JobNotFoundError
from ..producer import RemoteStore
from .common import UsageError, add_json, add_producer_target, credentials, job_ref, print_json

__all__ = ["add_parser", "cmd_close"]

STATES = ("done", "cancelled", "failed")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("close", help="end a job whose producer is gone (done, cancelled or failed)")
    p.add_argument("job", metavar="JOB", help="job id on --address, or qm://HOST:PORT/JOB")
    p.add_argument("--state", choices=STATES, default="cancelled",
                   help="how the job ends: done (every result is there), cancelled (default), or "
                        "failed (with an execution error saying why, --message)")
    p.add_argument("--message", default=None,
                   help="the execution error of --state failed (default: 'closed by qm-xarray close')")
    add_producer_target(p, timeout=10.0)
    add_json(p)
    p.set_defaults(func=cmd_close)


def cmd_close(args: argparse.Namespace) -> int:
    """End the job as asked; a job that has already ended is an error that says its state."""
    if args.message is not None and args.state != "failed":
        raise UsageError("--message goes with --state failed")
    address, job_id = job_ref(args.job, args.address)
    details = credentials(args, producer=True).details(address, args.timeout)
    try:
        writer = RemoteStore(details, timeout=args.timeout).writer(job_id)
        if args.state == "failed":
            writer.add_error(args.message or "closed by qm-xarray close", code=0)
        if args.state == "done":
            writer.finish()
        else:
            writer.cancel()
    except JobFinishedError:
        raise JobFinishedError(f"job {job_id!r} on {address} has already ended: nothing to close "
                               f"(see qm-xarray info {job_id} --address {address})") from None
    except JobNotFoundError:
        raise JobNotFoundError(f"no job {job_id!r} on {address} (list them: qm-xarray jobs "
                               f"--address {address})") from None
    finally:
        close_channels(details)
    if args.json:
        print_json({"job_id": job_id, "address": address, "outcome": args.state})
    else:
        print(f"job {job_id} on {address}: {args.state}", flush=True)
    return 0
