"""Drawing a `Plan` with matplotlib (imported only here, and only when drawing): the figure, each
form's axes, SI-prefixed units, and files written atomically in the format their suffix names."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import xarray as xr

from ..errors import QmValueError
from ..files import write_atomic
from .plan import N_TRACES, Plan, label, plan, short_label, title

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.cm import ScalarMappable
    from matplotlib.figure import Figure

__all__ = ["DPI", "draw", "formats", "new_figure", "output_format", "plot", "save_figure", "writable_output"]

DPI = 100
SI_UNITS = ("V", "Hz", "s", "A", "W", "T", "m", "K")  # drawn with a prefix that suits the values
PREFIXES = {-15: "f", -12: "p", -9: "n", -6: "µ", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T"}


class _Marker(TypedDict):
    """How the points of an I/Q scatter are drawn (keyword arguments of `Axes.scatter`)."""

    s: float
    alpha: float
    linewidths: float
    rasterized: bool


MARKER: _Marker = {"s": 4, "alpha": 0.5, "linewidths": 0, "rasterized": True}


# ------------------------------------------------------------------------------------------ drawing
def _scale(units: str, *arrays: np.ndarray) -> tuple[float, str]:
    """A factor and the prefixed units that put the largest magnitude of `arrays` in [1, 1000)
    (2e-4 V -> 200 µV, 7e9 Hz -> 7 GHz), for SI units without a prefix; else (1, units)."""
    finite = [np.abs(a[np.isfinite(a)]) for a in arrays if a.size and a.dtype.kind in "iuf"]
    peak = max((float(f.max()) for f in finite if f.size), default=0.0)
    if units not in SI_UNITS or peak == 0.0:
        return 1.0, units
    exponent = int(np.clip(np.floor(np.log10(peak) / 3) * 3, min(PREFIXES), max(PREFIXES)))
    return 10.0 ** -exponent, PREFIXES[exponent] + units


def _scaled(da: xr.DataArray | xr.Variable, name: Any = None, *also: np.ndarray
            ) -> tuple[np.ndarray, str, str]:
    """The values of `da` in the units `_scale` chooses (over `da` and `also`), their label and
    those units."""
    values = np.asarray(da.values)
    values = values.astype(float) if values.dtype.kind in "biuf" else values
    factor, units = _scale(str(da.attrs.get("units") or ""), values, *also)
    return (values * factor if factor != 1.0 else values), label(da, name, units), units


def _axis(da: xr.DataArray, dim: Any) -> tuple[np.ndarray, str, bool]:
    """Values and label of a dimension: its index coordinate if it has one, else positions."""
    if dim in da.coords and da[dim].ndim == 1 and np.asarray(da[dim].values).dtype.kind in "biufmM":
        values, text, _ = _scaled(da[dim], dim)
        return values, text, True
    return np.arange(da.sizes[dim]), str(dim), False


def _plain(ax: Axes) -> None:
    """Tick labels without an offset ("+7e9"), few enough to be read."""
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    for axis in (ax.xaxis, ax.yaxis):
        if isinstance(axis.get_major_formatter(), ScalarFormatter):
            axis.get_major_formatter().set_useOffset(False)  # type: ignore[attr-defined]
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6))


def _shots(fig: Figure, p: Plan) -> None:
    ax, hist = fig.subplots(1, 2, width_ratios=[3, 2])
    raw_i, raw_q = (np.asarray(a.values, dtype=float) for a in p.arrays)
    i, xlabel, units = _scaled(p.arrays[0], None, raw_q)  # one scale for both: the aspect stays equal
    q, ylabel, _ = _scaled(p.arrays[1], None, raw_i)
    if p.color is None:
        ax.scatter(i, q, **MARKER)
    elif p.color.dtype == bool:
        states = np.asarray(p.color.values)
        for value, colour in ((False, "tab:blue"), (True, "tab:red")):
            ax.scatter(i[states == value], q[states == value], color=colour,
                       label=f"{label(p.color, 'state')} = {int(value)}", **MARKER)
        ax.legend(loc="best", markerscale=3)
    else:
        points = ax.scatter(i, q, c=np.asarray(p.color.values, dtype=float), **MARKER)
        fig.colorbar(points, ax=ax, label=label(p.color, "state"))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.3)
    _plain(ax)
    if p.color is not None:
        _state_histogram(hist, p.color)
    else:
        _projected_histogram(hist, i, q, units)
        _plain(hist)


def _state_histogram(ax: Axes, state: xr.DataArray) -> None:
    values = np.asarray(state.values)
    levels, counts = np.unique(values.astype(int) if values.dtype == bool else values, return_counts=True)
    if len(levels) <= 16 and values.dtype.kind in "biu":
        colours = [("tab:blue", "tab:red")[int(v)] for v in levels] if values.dtype == bool else None
        ax.bar([str(v) for v in levels], counts, color=colours)
        if values.dtype == bool or set(levels.tolist()) <= {0, 1}:
            ax.set_title(f"P(1) = {float(np.mean(values.astype(float))):.3f}", fontsize="small")
    else:
        ax.hist(values.astype(float), bins="auto")
    ax.set_xlabel(label(state, "state"))
    ax.set_ylabel("shots")


def _projected_histogram(ax: Axes, i: np.ndarray, q: np.ndarray, units: str) -> None:
    """The shots projected on the principal axis of the IQ cloud (the blobs' separation)."""
    points = np.stack([i, q], axis=1)
    points = points[np.isfinite(points).all(axis=1)]
    direction = np.array([1.0, 0.0])
    if len(points) >= 2:
        _, vectors = np.linalg.eigh(np.cov(points, rowvar=False))
        direction = vectors[:, -1] * (1 if vectors[0, -1] >= 0 else -1)
    ax.hist(points @ direction, bins=int(np.clip(len(points) // 20, 10, 100)))
    angle = float(np.degrees(np.arctan2(direction[1], direction[0])))
    ax.set_xlabel(f"I rotated by {angle:.0f}°" + (f" [{units}]" if units else ""))
    ax.set_ylabel("shots")


def _lines(fig: Figure, p: Plan) -> None:
    units = {str(a.attrs.get("units", "")) for a in p.arrays}
    together = p.view != "magphase" and len(units) == 1
    axes = [fig.subplots()] if together else list(fig.subplots(len(p.arrays), 1, sharex=True, squeeze=False)[:, 0])
    raw = [np.asarray(a.values, dtype=float) for a in p.arrays]
    for k, da in enumerate(p.arrays):
        ax = axes[0] if together else axes[k]
        x, xlabel, _ = _axis(da, da.dims[0])
        y, ylabel, unit = _scaled(da, None, *(raw if together else []))
        ax.plot(x, y, marker="." if da.size <= 200 else None, linewidth=1, label=short_label(da))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        _plain(ax)
        axes[-1].set_xlabel(xlabel)
    if together and len(p.arrays) > 1:
        axes[0].set_ylabel(", ".join(str(a.name) for a in p.arrays) + (f" [{unit}]" if unit else ""))
        axes[0].legend(loc="best")


def _images(fig: Figure, p: Plan) -> None:
    axes = fig.subplots(1, len(p.arrays), squeeze=False, sharey=True)[0]
    for k, (ax, da) in enumerate(zip(axes, p.arrays)):
        y, ylabel, y_coord = _axis(da, da.dims[0])
        x, xlabel, x_coord = _axis(da, da.dims[1])
        values, text, _ = _scaled(da)
        image: ScalarMappable
        if x_coord or y_coord:
            image = ax.pcolormesh(x, y, values, shading="nearest")
        else:
            image = ax.imshow(values, origin="lower", aspect="auto", interpolation="nearest",
                              extent=(-0.5, values.shape[1] - 0.5, -0.5, values.shape[0] - 0.5))
        fig.colorbar(image, ax=ax, label=text)
        ax.set_xlabel(xlabel)
        if k == 0:
            ax.set_ylabel(ylabel)
        if len(p.arrays) > 1:
            ax.set_title(short_label(da), fontsize="small")
        _plain(ax)
        if len(p.arrays) > 1:
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(nbins=4))


def _traces(fig: Figure, p: Plan) -> None:
    ax = fig.subplots()
    da = p.arrays[0]
    dim = da.dims[1]
    x, xlabel, _ = _axis(da, dim)
    values, ylabel, _ = _scaled(da)
    n = values.shape[0]
    for k in range(max(0, n - N_TRACES), n):
        ax.plot(x, values[k], color="0.6", linewidth=0.6, alpha=0.6,
                label=f"last {min(n, N_TRACES)} of {n} traces" if k == max(0, n - N_TRACES) else None)
    ax.plot(x, values.mean(axis=0), color="tab:blue", linewidth=1.5, label=f"mean of {n} traces")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    _plain(ax)


DRAWERS = {"iq": _shots, "line": _lines, "image": _images, "trace": _traces}


def draw(fig: Figure, p: Plan, ds: xr.Dataset | None = None, *, title_text: str | None = None,
         extra: str = "") -> None:
    """Draw `p` into `fig` (cleared first), titled by `title(ds, p, title_text, extra)`."""
    fig.clear()
    DRAWERS[p.kind](fig, p)
    fig.suptitle(title(ds, p, title_text, extra), fontsize="medium")


def new_figure(width_px: int = 800, height_px: int = 600) -> Figure:
    """A figure of `width_px` x `height_px` pixels on matplotlib's Agg canvas (no pyplot, no window)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


# ------------------------------------------------------------------------------------------ output
def formats() -> dict[str, str]:
    """The formats `plot` writes: suffix (lower case, no dot) -> description, as matplotlib's Agg
    canvas lists them (png, jpg, jpeg, svg, pdf, ...)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return dict(FigureCanvasAgg(Figure()).get_supported_filetypes())


def output_format(out: str | Path) -> str:
    """The format the suffix of `out` names (lower case, e.g. "jpg" for `shot.JPG`); a
    `QmValueError` naming the suffix and the formats there are when it names none, or is missing."""
    known = formats()
    name = Path(out).name
    suffix = name.rpartition(".")[2] if "." in name.lstrip(".") else ""
    if suffix.lower() in known:
        return suffix.lower()
    what = f"no format is called .{suffix}" if suffix else "the file name has no suffix to name its format"
    raise QmValueError(f"cannot write a plot to {out}: {what}; the formats are "
                       + ", ".join(f".{s}" for s in sorted(known)))


def writable_output(out: str | Path, given_as: str | None = None) -> tuple[Path, str]:
    """`out` as a file a plot can be written to, and its format: checked before anything is
    fetched (`IsADirectoryError`, `FileNotFoundError` for a missing folder, `QmValueError` for a
    suffix that names no format). `given_as` names it in messages (an option, "-o FILE")."""
    target = Path(out).expanduser()
    if target.is_dir():
        raise IsADirectoryError(f"{given_as or out} is a directory: give the file to write, e.g. "
                                f"{target / 'plot.png'}")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"cannot write {out}: no directory {target.parent}")
    return target, output_format(target)


def save_figure(fig: Figure, out: str | Path, fmt: str | None = None) -> None:
    """Write `fig` to `out` atomically: into a new file beside it, then renamed over it (a reader
    sees the old image or the new one, never a part; the old one stays if writing fails)."""
    image = io.BytesIO()
    fig.savefig(image, format=fmt or output_format(out), dpi=DPI)
    write_atomic(out, image.getvalue())


def plot(ds: xr.Dataset, out: str | Path, *, streams: list[str] | None = None, reduce: str = "auto",
         view: str = "auto", width_px: int = 800, height_px: int = 600, title: str | None = None) -> Plan:
    """Draw `streams` of `ds` into the file `out` of `width_px` x `height_px` pixels (exactly, for
    the pixel formats), in the format its suffix names (`output_format`), written atomically."""
    fmt = output_format(out)
    p = plan(ds, streams, reduce, view)
    fig = new_figure(width_px, height_px)
    draw(fig, p, ds, title_text=title)
    save_figure(fig, out, fmt)
    return p
