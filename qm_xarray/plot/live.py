"""Live plots of a running job: one figure redrawn from `watch` (only new items are fetched) until
the job ends.

`live_plot(job, ...)` draws each new snapshot in the form `qm_xarray.plot` chooses, with the
progress against the streams' expected counts in the title ("1200/5000 items (24%)"), into:

- the `figure` given (redrawn with `fig.canvas.draw_idle()`; a window's events keep being served
  while waiting), and in a notebook (IPython with a kernel) shown again in the cell's output
  (`IPython.display.clear_output(wait=True)`, then `display(fig)`);
- else, in a notebook, a new figure shown the same way; else, with no `out`, a window when there is
  a display and an interactive matplotlib backend;
- and, with `out=PATH`, the image file rewritten atomically at each redraw (the format its
  suffix names), so a viewer or a web page never reads half an image.

Ctrl-C (KeyboardInterrupt) stops following cleanly and returns the last dataset drawn; the last
image stays. matplotlib is imported only when drawing; `import qm_xarray` does not import it.
`qm-xarray plot JOB --follow` runs the same loop (`follow`).
"""

from __future__ import annotations

import importlib
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xarray as xr

from ..client.deadlines import check_timeout
from ..errors import QmValueError
from ..lazy.live import watch
from ..lazy.options import check_interval
from .draw import DPI, draw, new_figure, save_figure, writable_output
from .plan import Plan, check_choices, plan, title

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "Followed",
    "common_items",
    "display_available",
    "follow",
    "live_plot",
    "progress",
    "progress_text",
    "window_figure",
]

IDLE = 0.1           # seconds of a window's event loop between two looks for a new snapshot
NOT_WINDOWS = {"nbagg", "notebook", "webagg"}  # interactive backends that open no window of their own


# ----------------------------------------------------------------------------------------- progress
def progress(ds: xr.Dataset) -> tuple[int, int]:
    """(items so far, items expected) over the `save_all` streams that declare an expected count
    (all streams that declare one if no `save_all` stream does), as `qm-xarray jobs` counts."""
    streams = [v for v in ds.data_vars.values() if int(v.attrs.get("qm_expected_count", 0)) > 0]
    growing = [v for v in streams if v.attrs.get("qm_save_mode") == "save_all"] or streams
    done = sum(min(int(v.attrs.get("qm_count", 0)), int(v.attrs["qm_expected_count"])) for v in growing)
    return done, sum(int(v.attrs["qm_expected_count"]) for v in growing)


def progress_text(ds: xr.Dataset) -> str:
    """`1200/5000 items (24%)`, or `1200 items` when no stream declares an expected count."""
    done, total = progress(ds)
    if total:
        return f"{done}/{total} items ({100 * done / total:.0f}%)"
    counts = [int(v.attrs.get("qm_count", 0)) for v in ds.data_vars.values()
              if v.attrs.get("qm_save_mode") == "save_all"]
    return f"{sum(counts)} items"


def common_items(ds: xr.Dataset) -> xr.Dataset:
    """`ds` with the `save_all` streams that expect the same number of items cut to the shortest
    of them: a snapshot of a running job can see I a step ahead of Q (they are appended one after
    the other), and a frame then still shows the pair."""
    lengths: dict[int, list[tuple[Any, int]]] = {}
    for v in ds.data_vars.values():
        expected = int(v.attrs.get("qm_expected_count", 0))
        if v.attrs.get("qm_save_mode") == "save_all" and v.ndim >= 1 and expected > 0:
            lengths.setdefault(expected, []).append((v.dims[0], v.sizes[v.dims[0]]))
    cut: dict[Any, int] = {}
    for members in lengths.values():
        shortest = min(size for _, size in members)
        for dim, size in members:
            if size > shortest:
                cut[dim] = min(shortest, cut.get(dim, shortest))
    return ds.isel({dim: slice(0, n) for dim, n in cut.items()}) if cut else ds


# ------------------------------------------------------------------------------------------ screens
def _ipython_kernel() -> Any:
    """The IPython shell if this runs in a notebook (IPython with a kernel), else None; IPython is
    not imported here (a notebook has imported it already)."""
    module = sys.modules.get("IPython")
    get = getattr(module, "get_ipython", None)
    shell = get() if callable(get) else None
    return shell if getattr(shell, "kernel", None) is not None else None


def display_available() -> bool:
    """A screen to open a window on: $DISPLAY or $WAYLAND_DISPLAY set (always, on macOS and
    Windows)."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY")
                                                        or os.environ.get("WAYLAND_DISPLAY"))


def _window_backends() -> set[str]:
    try:
        registry: Any = importlib.import_module("matplotlib.backends.registry")
        names = {str(b) for b in registry.backend_registry.list_builtin(registry.BackendFilter.INTERACTIVE)}
    except ImportError:  # matplotlib < 3.9
        from matplotlib import rcsetup
        names = {b.lower() for b in getattr(rcsetup, "interactive_bk", [])}
    return names - NOT_WINDOWS


def window_figure(width_px: int = 800, height_px: int = 600) -> Figure | None:
    """A pyplot figure in a window, shown, when there is a display and matplotlib's backend (the
    one it chose, or $MPLBACKEND) opens windows; else None."""
    if not display_available():
        return None
    try:
        import matplotlib.pyplot as plt

        if plt.get_backend().lower() not in _window_backends():
            return None
        fig = plt.figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout="constrained")
        plt.show(block=False)
        return fig
    except Exception:  # noqa: BLE001 - no usable window system: draw into files only
        return None


def _is_window(fig: Figure) -> bool:
    return getattr(type(fig.canvas), "required_interactive_framework", None) is not None


class _WindowClosed(Exception):
    """The user closed the window being drawn into."""


@dataclass
class _Screen:
    """Where the frames go: `fig`, shown as `mode` says ("window", "notebook", "canvas" for a
    figure given outside a notebook, "file" for none), and written to `out` if given."""

    fig: Figure
    mode: str
    out: Path | None = None
    fmt: str | None = None

    def show(self) -> None:
        if self.mode != "file":  # a file alone is drawn by savefig
            self.fig.canvas.draw_idle()
        if self.mode == "notebook":
            shown: Any = importlib.import_module("IPython.display")
            shown.clear_output(wait=True)
            shown.display(self.fig)
        elif self.mode == "window":
            self.fig.canvas.flush_events()
        if self.out is not None:
            save_figure(self.fig, self.out, self.fmt)

    def idle(self) -> None:
        """Serve the window's events for a moment (while the next snapshot is fetched)."""
        number = getattr(self.fig, "number", None)
        if number is not None:
            import matplotlib.pyplot as plt

            if not plt.fignum_exists(number):
                raise _WindowClosed
        self.fig.canvas.start_event_loop(IDLE)


def _screen(figure: Figure | None, window: bool | None, out: Path | None, fmt: str | None,
            size: tuple[int, int]) -> _Screen:
    if figure is not None:
        mode = "window" if _is_window(figure) else "notebook" if _ipython_kernel() is not None else "canvas"
        return _Screen(figure, mode, out, fmt)
    if _ipython_kernel() is not None and not window:
        return _Screen(new_figure(*size), "notebook", out, fmt)
    if window or (window is None and out is None):
        fig = window_figure(*size)
        if fig is not None:
            return _Screen(fig, "window", out, fmt)
    return _Screen(new_figure(*size), "file", out, fmt)


def _background(frames: Iterator[xr.Dataset], idle: Callable[[], None]) -> Iterator[xr.Dataset]:
    """The datasets of `frames`, fetched in a thread while `idle()` serves a window's events here
    (matplotlib draws only in this thread); several waiting datasets: only the newest."""
    found: queue.Queue[tuple[str, Any]] = queue.Queue()
    stop = threading.Event()

    def fetch() -> None:
        try:
            for ds in frames:
                found.put(("frame", ds))
                if stop.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the drawing thread
            found.put(("error", exc))
        else:
            found.put(("end", None))

    threading.Thread(target=fetch, name="qm-xarray-live-plot", daemon=True).start()
    try:
        while True:
            try:
                kind, value = found.get_nowait()
            except queue.Empty:
                idle()
                continue
            while kind == "frame" and not found.empty():  # skip to the newest snapshot
                newer = found.get_nowait()
                if newer[0] != "frame":
                    yield value
                    kind, value = newer
                    break
                value = newer[1]
            if kind == "frame":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()  # the thread ends at its next snapshot (or with the job, or its timeout)


# --------------------------------------------------------------------------------------------- loop
@dataclass
class Followed:
    """How following a job ended: the last `dataset` drawn (an empty Dataset if none came), the
    number of `frames` drawn, the last `plan` (None if nothing could be drawn yet), the `figure`,
    and why it stopped: `final` (the job ended), `interrupted` (Ctrl-C), `closed` (the window was
    closed), or none of them (the timeout passed)."""

    dataset: xr.Dataset
    frames: int
    plan: Plan | None
    figure: Figure
    mode: str
    final: bool = False
    interrupted: bool = False
    closed: bool = False


def _frame(screen: _Screen, ds: xr.Dataset, streams: list[str] | None, reduce: str, view: str,
           title_text: str | None) -> Plan | None:
    """Draw one snapshot (a placeholder with the reason while there is nothing to draw yet)."""
    extra = progress_text(ds)
    try:
        p = plan(common_items(ds), streams, reduce, view)
    except QmValueError as exc:
        if ds.attrs.get("qm_job_state", "running") != "running":
            raise  # the job has ended: this will never be drawable
        fig = screen.fig
        fig.clear()
        fig.text(0.5, 0.5, f"waiting for data\n{exc}", ha="center", va="center", wrap=True)
        fig.suptitle(title(ds, Plan("line", [], "waiting for data"), title_text, extra), fontsize="medium")
        screen.show()
        return None
    draw(screen.fig, p, ds, title_text=title_text, extra=extra)
    screen.show()
    return p


def _streams(streams: list[str] | str | None) -> list[str] | None:
    return [streams] if isinstance(streams, str) else (list(streams) if streams else None)


def follow(job: Any, *, every: float = 2.0, streams: list[str] | str | None = None, view: str = "auto",
           reduce: str = "auto", out: str | Path | None = None, figure: Figure | None = None,
           timeout: float | None = None, window: bool | None = None, width_px: int = 800,
           height_px: int = 600, title_text: str | None = None, **open_options: Any) -> Followed:
    """The loop of `live_plot` and of `qm-xarray plot --follow`: redraw from `watch` until the job
    ends, `timeout` passes, Ctrl-C, or the window is closed. `window`: True opens one if it can,
    False never, None only when there is no `out`."""
    every = check_interval(every)
    if timeout is not None:
        check_timeout(timeout)
    check_choices(reduce, view)
    target, fmt = writable_output(out) if out is not None else (None, None)
    names = _streams(streams)
    open_options.setdefault("on_dataloss", "ignore")  # marked in the title instead
    frames = watch(job, every, timeout=timeout, **open_options)
    screen = _screen(figure, window, target, fmt, (width_px, height_px))
    if screen.mode == "window":
        frames = _background(frames, screen.idle)
    result = Followed(xr.Dataset(), 0, None, screen.fig, screen.mode)
    try:
        for ds in frames:
            result.dataset = ds
            result.plan = _frame(screen, ds, names, reduce, view, title_text) or result.plan
            result.frames += 1
            result.final = ds.attrs.get("qm_job_state", "running") != "running"
    except KeyboardInterrupt:
        result.interrupted = True
    except _WindowClosed:
        result.closed = True
    return result


def live_plot(job: Any, *, every: float = 2.0, streams: list[str] | str | None = None, view: str = "auto",
              reduce: str = "auto", out: str | Path | None = None, figure: Figure | None = None,
              timeout: float | None = None, **open_options: Any) -> xr.Dataset:
    """Redraw one matplotlib figure from `qx.watch(job, every, **open_options)` until the job ends
    (or `timeout` seconds pass, or Ctrl-C); returns the last dataset drawn (the final one when the
    job ended).

    Each round fetches only the items that arrived since the previous one. `streams`, `view`
    ("auto", "iq", "magphase") and `reduce` choose what is drawn, as in `qm_xarray.plot.plot`; the
    title shows the progress against the streams' expected counts. `figure` is updated in place
    (`fig.canvas.draw_idle()`); in a notebook the figure is shown again in the cell at each redraw;
    without a figure or a notebook, a window opens when there is a display, unless `out` is given.
    `out=PATH` writes the image at each redraw, atomically, in the format its suffix names.
    `open_options` are those of engine "qm" (`dims=`, `coords=`, `drop_variables=`...; data loss is
    marked in the title, not warned, unless `on_dataloss` says otherwise).
    """
    return follow(job, every=every, streams=streams, view=view, reduce=reduce, out=out, figure=figure,
                  timeout=timeout, **open_options).dataset
