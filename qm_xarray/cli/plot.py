"""`qm-xarray plot`: draw a job's or an exported store's streams into an image file (the drawing itself is
`qm_xarray.plot`)."""

from __future__ import annotations

import argparse
import re
from contextlib import ExitStack
from pathlib import Path

from .common import (UsageError, add_address, add_credentials, connected, credentials, job_ref,
                     looks_like_path, open_store, summary)

__all__ = ["add_parser", "cmd_plot"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("plot", help="draw streams of a job or of a zarr store into an image file "
                                    "(PNG, SVG, PDF, JPEG...)",
                       description="Draw in the form that suits the data: an I/Q scatter for a single-shot "
                       "pair (streams I and Q, coloured by state), a line for 1-D data, an image for "
                       "2-D data; save_all buffers are reduced over their items (--reduce).")
    p.add_argument("source", metavar="JOB_OR_STORE",
                   help="a zarr store written by export, a job id on --address, or qm://HOST:PORT/JOB")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="the file to write; its suffix names the format (.png, .svg, .pdf, .jpg, ...)")
    p.add_argument("--stream", action="append", metavar="NAME",
                   help="stream to draw (twice for an I/Q pair); default: the I/Q pair if there is "
                        "one, else the first save_all stream with data")
    p.add_argument("--reduce", default="auto", choices=["auto", "mean", "last", "none"],
                   help="how a save_all buffer is reduced over its items (auto: mean)")
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


def cmd_plot(args: argparse.Namespace) -> int:
    """Draw a job's or a store's streams into an image file (see `qm_xarray.plot`)."""
    from ..lazy.live import open_dataset
    from ..plot import output_format, plot

    width, height = plot_size(args)
    if args.stream is not None and len(args.stream) > 2:
        raise UsageError("--stream: give one stream, or two (an I/Q pair)")
    path = Path(args.source).expanduser()
    target = Path(args.output).expanduser()
    if target.is_dir():
        raise IsADirectoryError(f"-o {args.output} is a directory: give the file to write, e.g. "
                                f"{target / 'plot.png'}")
    folder = target.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {args.output}: no directory {folder}")
    output_format(args.output)  # an unknown suffix fails before any connection
    with ExitStack() as stack:
        if not args.source.startswith("qm://") and (path.exists() or looks_like_path(args.source)):
            ds = open_store(path)
        else:
            address, job_id = job_ref(args.source, args.address)
            conn = stack.enter_context(connected(address, credentials(args)))
            summary(conn, job_id, address)
            ds = open_dataset(conn.job(job_id), on_dataloss="ignore")
        drawn = plot(ds, args.output, streams=args.stream, reduce=args.reduce, width_px=width,
                     height_px=height, title=args.title)
    print(f"wrote {args.output} ({width}x{height} px, {drawn.kind}): {drawn.what}", flush=True)
    return 0
