"""`qm-xarray plot`: draw a job's or an exported store's streams into an image file, or follow a
running job (`--follow`: a window when there is a display, else the image file rewritten at each
redraw). The drawing itself is `qm_xarray.plot`, the live loop `qm_xarray.live_plot`."""

from __future__ import annotations

import argparse
import re
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .common import (
    UsageError,
    add_address,
    add_credentials,
    connected,
    credentials,
    job_ref,
    looks_like_path,
    open_store,
    positive_seconds,
    summary,
)

__all__ = ["add_parser", "cmd_plot", "plot_size"]

FOLLOW_EVERY = 2.0  # seconds between two redraws of --follow


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("plot", help="draw streams of a job or of a zarr store into an image file "
                                    "(PNG, SVG, PDF, JPEG...), or follow a running job (--follow)",
                       description="Draw in the form that suits the data: I and Q (or magnitude and "
                       "phase, --view magphase) of an averaged sweep, an image per quantity for a 2-D "
                       "sweep, IQ blobs and a state histogram for single shots (streams I and Q), ADC "
                       "traces against time, a line or an image for other data; save_all buffers are "
                       "reduced over their items (--reduce). Axes are labelled from the long names and "
                       "units of the data; data loss and execution errors are marked in the title.")
    p.add_argument("source", metavar="JOB_OR_STORE",
                   help="a zarr store written by export, a job id on --address, or qm://HOST:PORT/JOB")
    p.add_argument("-o", "--output", default=None, metavar="FILE",
                   help="the file to write; its suffix names the format (.png, .svg, .pdf, .jpg, ...); "
                        "with --follow, rewritten at each redraw (optional when a window opens)")
    p.add_argument("--stream", action="append", metavar="NAME",
                   help="stream to draw (twice for an I/Q pair); default: the I/Q pair if there is "
                        "one, else the first save_all stream with data")
    p.add_argument("--view", default="auto", choices=["auto", "iq", "magphase"],
                   help="quantities of an I/Q pair: I and Q (iq), or magnitude and unwrapped phase "
                        "(magphase); auto: I and Q when there is a pair")
    p.add_argument("--reduce", default="auto", choices=["auto", "mean", "last", "none"],
                   help="how a save_all buffer is reduced over its items (auto: mean; ADC traces: "
                        "the last few and their mean)")
    p.add_argument("--follow", action="store_true",
                   help="redraw until the job ends: in a window when there is a display, and into "
                        "-o FILE (rewritten atomically at each redraw); Ctrl-C stops, keeping the image")
    p.add_argument("--every", type=float, default=FOLLOW_EVERY, metavar="S",
                   help=f"with --follow: seconds between redraws (default {FOLLOW_EVERY:g}); only new "
                        "items are fetched")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="with --follow: stop following after S seconds (the image shows the job then)")
    p.add_argument("--no-window", action="store_true",
                   help="with --follow: never open a window, only write -o FILE")
    add_address(p)
    add_credentials(p)
    p.add_argument("--width-px", type=int, default=None, metavar="W", help="width in pixels (default 800)")
    p.add_argument("--height-px", type=int, default=None, metavar="H", help="height in pixels (default 600)")
    p.add_argument("--size", default=None, metavar="WxH", help="size in pixels, e.g. 1200x800")
    p.add_argument("--title", default=None, help="title (default: job, what is drawn, state)")
    p.set_defaults(func=cmd_plot)


def plot_size(args: argparse.Namespace) -> tuple[int, int]:
    """(width, height) in pixels from `--size` or `--width-px/--height-px` (default 800x600)."""
    width, height = 800, 600
    if args.size is not None:
        if args.width_px is not None or args.height_px is not None:
            raise UsageError("give --size WxH, or --width-px/--height-px, not both")
        match = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", args.size)
        if not match:
            raise UsageError(f"--size takes WIDTHxHEIGHT in pixels, e.g. 1200x800; got {args.size!r}")
        width, height = int(match.group(1)), int(match.group(2))
    width = args.width_px if args.width_px is not None else width
    height = args.height_px if args.height_px is not None else height
    for name, value in (("width", width), ("height", height)):
        if not 50 <= value <= 20000:
            raise UsageError(f"{name} must be between 50 and 20000 pixels, got {value}")
    return width, height


def _check_output(output: str) -> None:
    """A file that can be written, in a format its suffix names: checked before any connection."""
    from ..plot.draw import writable_output

    writable_output(output, f"-o {output}")


def _is_store(source: str) -> bool:
    return not source.startswith("qm://") and (Path(source).expanduser().exists() or looks_like_path(source))


def cmd_plot(args: argparse.Namespace) -> int:
    """Draw a job's or a store's streams into an image file (see `qm_xarray.plot`), or follow a job."""
    width, height = plot_size(args)
    if args.stream is not None and len(args.stream) > 2:
        raise UsageError("--stream: give one stream, or two (an I/Q pair)")
    if args.follow:
        return _follow(args, width, height)
    for option in ("timeout", "no_window"):
        if getattr(args, option) not in (None, False):
            raise UsageError(f"--{option.replace('_', '-')} applies only with --follow")
    if args.output is None:
        raise UsageError("give the file to write: -o FILE (or --follow a job to watch it in a window)")
    from ..lazy.live import open_dataset
    from ..plot import plot
    from ..plot.live import common_items

    _check_output(args.output)  # an unknown suffix fails before any connection
    with ExitStack() as stack:
        if _is_store(args.source):
            ds = open_store(Path(args.source).expanduser())
        else:
            address, job_id = job_ref(args.source, args.address)
            conn = stack.enter_context(connected(address, credentials(args)))
            summary(conn, job_id, address)
            ds = common_items(open_dataset(conn.job(job_id), on_dataloss="ignore"))  # Q may lag I
        drawn = plot(ds, args.output, streams=args.stream, reduce=args.reduce, view=args.view,
                     width_px=width, height_px=height, title=args.title)
    print(f"wrote {args.output} ({width}x{height} px, {drawn.kind}): {drawn.what}", flush=True)
    return 0


def _follow(args: argparse.Namespace, width: int, height: int) -> int:
    """`plot --follow`: redraw from `watch` until the job ends (exit 0), Ctrl-C (exit 130, the last
    image kept) or `--timeout`."""
    from ..plot.live import display_available, follow

    positive_seconds("--every", args.every)
    positive_seconds("--timeout", args.timeout)
    if _is_store(args.source):
        raise UsageError(f"--follow follows a job of a server; {args.source} is a zarr store, which does "
                         f"not grow: plot it without --follow")
    window = not args.no_window and display_available()
    if args.output is None and not window:
        why = "--no-window" if args.no_window else "there is no display ($DISPLAY) for a window"
        raise UsageError(f"--follow needs -o FILE to write the image to ({why})")
    if args.output is not None:
        _check_output(args.output)
    address, job_id = job_ref(args.source, args.address)
    with connected(address, credentials(args)) as conn:
        summary(conn, job_id, address)
        done = follow(conn.job(job_id), every=args.every, streams=args.stream, view=args.view,
                      reduce=args.reduce, out=args.output, timeout=args.timeout, window=window,
                      width_px=width, height_px=height, title_text=args.title)
    where = args.output or "the window"
    if done.interrupted:
        kept = f"; the last image is kept: {args.output}" if args.output and done.frames else ""
        print(f"qm-xarray plot: interrupted after {_redraws(done.frames)}{kept}", file=sys.stderr, flush=True)
        return 130
    state = done.dataset.attrs.get("qm_job_state", "unknown")
    why = "window closed" if done.closed else f"job {job_id} {state}" if done.final else \
        f"stopped after --timeout {args.timeout:g} s, job {job_id} still running"
    if done.plan is None:
        print(f"nothing drawn in {where} ({why}): no stream has data", flush=True)
        return 1 if done.final else 0
    drawn = f"{done.plan.kind}): {done.plan.what}; {why}, {_redraws(done.frames)}"
    print(f"wrote {args.output} ({width}x{height} px, {drawn}" if args.output else f"drew ({drawn}",
          flush=True)
    if done.mode == "window" and done.final:
        _keep_open(done.figure)
    return 0


def _redraws(n: int) -> str:
    return f"{n} redraw" + ("" if n == 1 else "s")


def _keep_open(fig: Any) -> None:
    """Keep the window of a finished job open until it is closed (or Ctrl-C)."""
    import matplotlib.pyplot as plt

    print("close the window to exit", file=sys.stderr, flush=True)
    try:
        plt.show(block=True)
    except KeyboardInterrupt:
        pass
    finally:
        plt.close(fig)
