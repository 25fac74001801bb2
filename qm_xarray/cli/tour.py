"""What the demo's tours share: the state their steps read and write (`Demo`), a function run in
the background (`Background`), the job's progress on a terminal or as lines (`Progress`), and the
directory a tour writes into (`demo_dir`)."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO


from ..client.connection import ConnectionDetails
from ..client.jobs import JobSummary
from ..errors import QMTimeoutError
from ..server.app import ResultsServer
from ..session import Connection
from ..simulator import Simulation
from .common import UsageError
from .display import job_fraction, stream_counts

__all__ = ["Background", "Demo", "Progress", "demo_dir", "free_path", "tranche", "PRINT_SECONDS", "TRANCHES"]

PRINT_SECONDS = 0.5      # without a TTY: one progress line per this interval
TRANCHES = 4             # the run is released in this many parts, each once shown


class Background:
    """A function run in a daemon thread; `result(timeout)` returns its value or re-raises."""

    def __init__(self, func: Callable[..., Any], *args: Any, **kwargs: Any):
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(func, args, kwargs), daemon=True,
                                       name="qm-xarray-demo-export")
        self.thread.start()

    def _run(self, func: Callable[..., Any], args: Any, kwargs: Any) -> None:
        try:
            self.value = func(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            self.error = exc

    def result(self, timeout: float) -> Any:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise QMTimeoutError(f"the export did not finish within {timeout:g} s")
        if self.error is not None:
            raise self.error
        return self.value


class Progress:
    """A tqdm bar for the whole job on a TTY; plain periodic lines otherwise."""

    def __init__(self, out: TextIO, quiet: bool):
        self.out, self.quiet = out, quiet
        self.start = time.monotonic()
        self.last_print = -float("inf")
        self.bar: Any = None
        self.tty = bool(getattr(out, "isatty", lambda: False)())

    def update(self, job: JobSummary) -> bool:
        """Show the job's progress; True if it was shown now (a line printed, the bar redrawn)."""
        if self.quiet:
            return False
        done, total = job_fraction(job)
        if self.tty:
            if self.bar is None:
                from tqdm import tqdm
                size = shutil.get_terminal_size()  # a fresh pseudo-terminal reports 0 x 0
                self.bar = tqdm(total=total, file=self.out, unit="item", desc=job.job_id, leave=True,
                                bar_format="{desc}: {percentage:3.0f}%|{bar:24}| {n_fmt}/{total_fmt} "
                                           "[{elapsed}{postfix}]",
                                ncols=size.columns if size.columns > 20 else 100,
                                nrows=size.lines if size.lines > 2 else 24)
            self.bar.n = done
            self.bar.set_postfix_str(stream_counts(job), refresh=False)
            self.bar.refresh()
            return True
        now = time.monotonic()
        if now - self.last_print >= PRINT_SECONDS or job.state != "running":
            self.last_print = now
            print(f"    {now - self.start:5.1f}s {job.state:8s} {done}/{total}: {stream_counts(job)}",
                  file=self.out, flush=True)
            return True
        return False

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class Demo:
    """What the demo steps share; each step reads what earlier steps set."""

    args: argparse.Namespace
    out: TextIO
    stack: ExitStack
    server: ResultsServer | None = None
    details: ConnectionDetails | None = None
    sim: Simulation | None = None
    job: JobSummary | None = None
    out_dir: Path | None = None
    store_path: Path | None = None
    png_path: Path | None = None
    export: Background | None = None
    live: Any = None
    started: float = dataclasses.field(default_factory=time.monotonic)
    step: int = 0

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def next(self, text: str) -> None:
        self.step += 1
        self.say(f"[{self.step}] {text}")

    def qm_job(self) -> Any:
        assert self.details is not None and self.sim is not None and self.sim.job_id is not None
        return Connection(self.details).job(self.sim.job_id)



def demo_dir(out: str | None) -> Path:
    if out is None:
        return Path(tempfile.mkdtemp(prefix="qm-xarray-demo-"))
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out}: not a directory")
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_path(directory: Path, stem: str, suffix: str) -> Path:
    path, n = directory / f"{stem}{suffix}", 1
    while path.exists():
        n += 1
        path = directory / f"{stem}-{n}{suffix}"
    return path


def tranche(n_steps: int) -> int:
    """Steps in one part of the run, which a tour releases a part at a time."""
    return max(1, -(-n_steps // TRANCHES))
