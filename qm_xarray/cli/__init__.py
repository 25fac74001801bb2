"""The `qm-xarray` command: `serve`, `simulate`, `close`, `jobs`, `info`, `export`, `plot` and `demo`.

Every command reports failures as one line on stderr with a non-zero exit code (2 for bad usage,
1 for runtime failures, 130 when interrupted), never a traceback. Commands that talk to a server
give up after `$QM_XARRAY_CONNECT_TIMEOUT` seconds (5 by default) if it cannot be reached; `--json` prints machine-readable
output on stdout.

One module per command (serve, simulate, jobs with info, export, plot, demo); `common` holds the
client options and connections they share, `display` how jobs are printed. Each command module
has `add_parser(subparsers)` and a `cmd_*(args) -> exit code`.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import TextIO

# gRPC's C core would log handshake failures and the like on stderr, next to our one-line errors;
# it reads this once, when grpc is first imported (by the imports below). A user's setting wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from .. import __version__  # noqa: E402
from ..client.errors import AuthenticationError  # noqa: E402
from ..errors import QmQuaException  # noqa: E402
from . import close, demo, export, jobs, plot, serve, simulate  # noqa: E402
from .common import UsageError, auth_hint  # noqa: E402

__all__ = ["main", "build_parser"]



def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `qm-xarray` (one subparser per command)."""
    parser = argparse.ArgumentParser(prog="qm-xarray", description="Quantum Machines result streams: "
                                     "results server, simulator and tools.")
    parser.add_argument("--version", action="version", version=f"qm-xarray {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve.add_parser(sub)
    simulate.add_parser(sub)
    close.add_parser(sub)
    jobs.add_parsers(sub)
    export.add_parser(sub)
    plot.add_parser(sub)
    demo.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `qm-xarray`; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning(args.command)
        return _run(args)


def _one_line_warning(command: str) -> Callable[..., None]:
    """Warnings of the library (e.g. an interrupted relay copy) as one line each on stderr."""
    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        print(f"qm-xarray {command}: warning: {message}", file=file or sys.stderr, flush=True)
    return show


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"qm-xarray {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qm-xarray {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `qm-xarray demo | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except AuthenticationError as exc:  # the server refused the token: say what to do
        print(f"qm-xarray {args.command}: error: {exc} ({auth_hint(args.command)})", file=sys.stderr)
        return 1
    except (QmQuaException, OSError, ValueError, TypeError, RuntimeError) as exc:
        print(f"qm-xarray {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug, still reported as one line
        if os.environ.get("QM_XARRAY_DEBUG"):
            raise
        print(f"qm-xarray {args.command}: internal error: {type(exc).__name__}: {exc} "
              "(set QM_XARRAY_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
