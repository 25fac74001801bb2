"""Plots of result streams a physicist would keep, in the form that suits each stream (matplotlib).

`plan(ds, streams, reduce, view)` chooses what to draw, `draw(fig, plan, ds)` draws it into a
figure, `plot(ds, out)` writes it to a file. The forms (`Plan.kind`):

- `"iq"`, single shots: a `save_all` I/Q pair of one value per item and equal lengths (streams I
  and Q, as a single-shot readout saves them): the IQ blobs with an equal aspect, coloured by
  `state` if present, beside a histogram of the state (or, with no state stream, of the shots
  projected on the axis that separates the blobs best, the principal axis of the cloud);
- `"line"`: data that is 1-D once reduced (a `save` buffer, the mean of a `save_all` buffer over
  its items, `save_all` scalars along their item axis); for an I/Q pair of averaged sweeps (two
  streams of the same shape named I and Q, or like I_all/Q_all, I1/Q1, qubit_I/qubit_Q) I and Q
  together (one panel when they have the same units, else two), or magnitude and phase;
- `"image"`: data that is 2-D once reduced, one image per quantity (I and Q, or magnitude and
  phase) with a colour bar;
- `"trace"`: ADC traces (a `save_all` stream of 1-D buffers whose buffer axis is time: units of
  time, or named like time/adc/trace): the last few traces and the mean of all, against time.

`view` chooses the quantities of an I/Q pair: "auto" (I and Q if there is a pair), "iq" (I and Q;
a pair is required) or "magphase" (magnitude sqrt(I^2+Q^2) and phase atan2(Q, I), unwrapped along
the last axis, in rad; averaged sweeps only). Axis labels come from the dataset: `long_name` (or
the name) and `units` attributes of the variables and coordinates ("drive amplitude [V]"), so the
same code draws a live job and its zarr export. The title names the job, what is drawn and the
job's state, and marks data loss (`qm_has_dataloss`) and execution errors (`qm_execution_errors`).

The file's suffix names its format, in any case: `.png`, `.svg`, `.pdf`, `.jpg`/`.jpeg` and the
other formats of matplotlib's Agg canvas (`formats()`); another suffix, or none, is a
`QmValueError` that names it and the formats there are. Files are written atomically (a temporary
file in the same folder, then renamed), so a reader never sees half an image. matplotlib is
imported only when drawing.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import xarray as xr

from .errors import QmKeyError, QmValueError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.cm import ScalarMappable
    from matplotlib.figure import Figure

__all__ = [
    "KINDS",
    "N_TRACES",
    "REDUCTIONS",
    "VIEWS",
    "Plan",
    "draw",
    "formats",
    "iq_partner",
    "label",
    "new_figure",
    "output_format",
    "plan",
    "plot",
    "save_figure",
    "title",
]

REDUCTIONS = ("auto", "mean", "last", "none")
VIEWS = ("auto", "iq", "magphase")
KINDS = ("iq", "line", "image", "trace")
DPI = 100
N_TRACES = 5            # individual ADC traces drawn beside their mean
TIME_UNITS = ("ns", "us", "µs", "ms", "s", "ps")
TIME_NAME = re.compile(r"time|adc|trace", re.IGNORECASE)
MAX_ERROR_TEXT = 80     # characters of one execution error's message in a title
SI_UNITS = ("V", "Hz", "s", "A", "W", "T", "m", "K")  # drawn with a prefix that suits the values
PREFIXES = {-15: "f", -12: "p", -9: "n", -6: "µ", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T"}


class _Marker(TypedDict):
    """How the points of an I/Q scatter are drawn (keyword arguments of `Axes.scatter`)."""

    s: float
    alpha: float
    linewidths: float
    rasterized: bool


MARKER: _Marker = {"s": 4, "alpha": 0.5, "linewidths": 0, "rasterized": True}


@dataclass
class Plan:
    """What to draw: `kind` (one of `KINDS`), `arrays` the data (one per quantity: [I, Q] of single
    shots, the lines or images, the traces), `what` a description, `color` the state of single
    shots, `view` "iq" or "magphase" for an I/Q pair (else "value")."""

    kind: str
    arrays: list[xr.DataArray]
    what: str
    color: xr.DataArray | None = None
    view: str = "value"


# ------------------------------------------------------------------------------------------ labels
def label(da: xr.DataArray | xr.Variable, name: Any = None) -> str:
    """`long_name [units]` from the attributes, the name when there is no long_name."""
    text = str(da.attrs.get("long_name") or name or getattr(da, "name", None) or "")
    units = da.attrs.get("units")
    return f"{text} [{units}]" if units else text


def _short(da: xr.DataArray) -> str:
    return str(da.attrs.get("long_name") or da.name or "")


def _flags(ds: xr.Dataset | None) -> list[str]:
    """`DATA LOSS` and one `severity code: message` per execution error in `ds.attrs`."""
    if ds is None:
        return []
    found = ["DATA LOSS"] if ds.attrs.get("qm_has_dataloss") else []
    try:
        errors = json.loads(ds.attrs.get("qm_execution_errors") or "[]")
    except (TypeError, ValueError):
        errors = []
    for e in errors if isinstance(errors, list) else []:
        if isinstance(e, dict):
            message = str(e.get("message", ""))
            if len(message) > MAX_ERROR_TEXT:
                message = message[:MAX_ERROR_TEXT - 1] + "…"
            found.append(f"{e.get('severity', 'error')} {e.get('code', '?')}: {message}")
    return found


def title(ds: xr.Dataset | None, p: Plan, text: str | None = None, extra: str = "") -> str:
    """The title of a plot: `text`, or `job: what (state)`, then `extra` (e.g. progress) after a
    `·`, and on a second line the job's data loss and execution errors, if any."""
    if text is None:
        attrs = ds.attrs if ds is not None else {}
        job, state = attrs.get("qm_job_id"), attrs.get("qm_job_state")
        text = (f"{job}: {p.what}" if job else p.what) + (f" ({state})" if job and state else "")
    if extra:
        text = f"{text} · {extra}"
    flags = _flags(ds)
    return text + ("\n" + "; ".join(flags) if flags else "")


# ------------------------------------------------------------------------------------ what to draw
def _is_save_all(da: xr.DataArray) -> bool:
    return da.attrs.get("qm_save_mode") == "save_all" and da.ndim >= 1


def _has_data(da: xr.DataArray) -> bool:
    """Not empty, and for a stream of a job, at least one item received."""
    return da.size > 0 and int(da.attrs.get("qm_count", 1)) > 0


def _is_shots(da: xr.DataArray) -> bool:
    """One value per item of a `save_all` stream (or a plain 1-D array without save mode, unless
    its axis is a sweep: a coordinate with units)."""
    if da.ndim != 1:
        return False
    dim = da.dims[0]
    sweep = dim in da.coords and bool(da[dim].attrs.get("units"))
    return _is_save_all(da) or ("qm_save_mode" not in da.attrs and not sweep)


def iq_partner(name: str) -> str | None:
    """The Q stream's name of an I stream's name: I -> Q, I_all -> Q_all, I1 -> Q1,
    qubit_I -> qubit_Q (None if `name` does not name an I quadrature)."""
    parts = name.split("_")
    for k, part in enumerate(parts):
        if re.fullmatch(r"I\d*", part):
            return "_".join(parts[:k] + ["Q" + part[1:]] + parts[k + 1:])
    return None


def _i_of(ds: xr.Dataset, name: str) -> str | None:
    """The I stream of `ds` whose partner is `name` (a Q stream), if any."""
    return next((str(n) for n in ds.data_vars if iq_partner(str(n)) == name), None)


def _pairs(ds: xr.Dataset) -> list[tuple[str, str]]:
    """The I/Q pairs of `ds` (both present), the pair I, Q first."""
    found = [(str(n), q) for n in ds.data_vars if (q := iq_partner(str(n))) is not None and q in ds.data_vars]
    return sorted(found, key=lambda pair: pair != ("I", "Q"))


def _default_stream(ds: xr.Dataset) -> str:
    candidates = [str(n) for n, v in ds.data_vars.items() if v.ndim >= 1 and _has_data(v)]
    growing = [n for n in candidates if _is_save_all(ds[n])]
    if growing or candidates:
        return (growing or candidates)[0]
    raise QmValueError(f"nothing to plot: no stream has data yet (streams: "
                       f"{', '.join(map(str, ds.data_vars))})")


def _is_trace(da: xr.DataArray) -> bool:
    """A `save_all` stream of 1-D buffers along time: ADC traces."""
    if not _is_save_all(da) or da.ndim != 2:
        return False
    dim = da.dims[1]
    units = str(da[dim].attrs.get("units", "")) if dim in da.coords else ""
    return units in TIME_UNITS or bool(TIME_NAME.search(str(dim))) or bool(TIME_NAME.search(str(da.name)))


def _reduced(da: xr.DataArray, reduce: str) -> tuple[xr.DataArray, str]:
    """A `save_all` buffer reduced over its items (mean or last), and the words for it."""
    if _is_save_all(da) and da.ndim >= 2 and reduce != "none":
        item = da.dims[0]
        if reduce == "last":
            return da.isel({item: -1}), f"last of {da.sizes[item]} items"
        return da.astype(float).mean([item], keep_attrs=True), f"mean over {da.sizes[item]} items"
    return da, ""


def _drawable(da: xr.DataArray, name: str) -> xr.DataArray:
    """`da` as something to draw (1-D or 2-D, numbers), or a QmValueError that says why not."""
    if da.ndim == 0:
        raise QmValueError(f"stream {name!r} holds one value ({np.asarray(da.values).item()!r}): nothing to plot")
    if da.ndim > 2:
        raise QmValueError(f"stream {name!r} has {da.ndim} dimensions {da.dims}; plot it reduced "
                           f"(reduce 'mean' or 'last')")
    if da.dtype == bool:
        da = da.astype(int)
    da.name = name
    return da


def _single_plan(ds: xr.Dataset, name: str, reduce: str) -> Plan:
    da = ds[name]
    if not _has_data(da):
        raise QmValueError(f"stream {name!r} has no data yet")
    if reduce == "auto" and _is_trace(da):
        n = da.sizes[da.dims[0]]
        traces = _drawable(da.astype(float) if da.dtype == bool else da, name)
        return Plan("trace", [traces], f"{name}, {min(n, N_TRACES)} of {n} traces and their mean")
    reduced, how = _reduced(da, reduce)
    out = _drawable(reduced, name)
    return Plan("line" if out.ndim == 1 else "image", [out], f"{name}, {how}" if how else name)


def _shots_plan(ds: xr.Dataset, i: str, q: str, view: str) -> Plan:
    a, b = ds[i], ds[q]
    if a.size != b.size or a.size == 0:
        raise QmValueError(f"{i!r} and {q!r} are not an I/Q pair (two save_all streams of one "
                           f"value per item, of equal, non-zero length)")
    if view == "magphase":
        raise QmValueError(f"view 'magphase' draws averaged sweeps; {i!r} and {q!r} are single shots "
                           f"(drawn as IQ blobs with view 'auto' or 'iq')")
    color = ds["state"] if "state" in ds.data_vars and ds["state"].shape == a.shape \
        and "state" not in (i, q) else None
    what = f"{q} vs {i}, {a.size} shots" + (", coloured by state" if color is not None else "")
    return Plan("iq", [a, b], what, color, view="iq")


def _magphase(i: xr.DataArray, q: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """Magnitude (units of I) and phase (rad, unwrapped along the last axis), on I's axes."""
    iv, qv = np.asarray(i.values, dtype=float), np.asarray(q.values, dtype=float)
    mag = xr.DataArray(np.hypot(iv, qv), dims=i.dims, coords=i.coords, name="magnitude",
                       attrs={"long_name": "magnitude", **({"units": i.attrs["units"]}
                                                            if i.attrs.get("units") else {})})
    phase = np.arctan2(qv, iv)
    finite = np.isfinite(phase).all()
    phase = np.unwrap(phase, axis=-1) if finite else phase
    ph = xr.DataArray(phase, dims=i.dims, coords=i.coords, name="phase",
                      attrs={"long_name": "phase", "units": "rad"})
    return mag, ph


def _pair_plan(ds: xr.Dataset, i: str, q: str, reduce: str, view: str) -> Plan:
    """An I/Q pair: single shots (IQ blobs) or averaged sweeps (I and Q, or magnitude and phase)."""
    a, b = ds[i], ds[q]
    if not (_has_data(a) and _has_data(b)):
        raise QmValueError(f"streams {i!r} and {q!r} have no data yet")
    if _is_shots(a) and _is_shots(b):
        return _shots_plan(ds, i, q, view)
    (ra, how), (rb, _) = _reduced(a, reduce), _reduced(b, reduce)
    if ra.shape != rb.shape or ra.ndim not in (1, 2):
        raise QmValueError(f"{i!r} and {q!r} are not an I/Q pair: shapes {ra.shape} and {rb.shape}"
                           f"{' once reduced' if how else ''} (an I/Q pair has one shape, 1-D or 2-D)")
    ra, rb = _drawable(ra, i), _drawable(rb, q)
    kind = "line" if ra.ndim == 1 else "image"
    if view == "magphase":
        mag, phase = _magphase(ra, rb)
        return Plan(kind, [mag, phase], f"magnitude and phase of {i}, {q}" + (f", {how}" if how else ""),
                    view="magphase")
    return Plan(kind, [ra, rb], f"{i} and {q}" + (f", {how}" if how else ""), view="iq")


def _check(ds: xr.Dataset, streams: list[str] | None, reduce: str, view: str) -> None:
    if reduce not in REDUCTIONS:
        raise QmValueError(f"reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")
    if view not in VIEWS:
        raise QmValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    for name in streams or ():
        if name not in ds.data_vars:
            raise QmKeyError(f"no stream {name!r}; streams: {', '.join(map(str, ds.data_vars))}")
    if streams and len(streams) > 2:
        raise QmValueError("give one stream, or two (an I/Q pair)")


def plan(ds: xr.Dataset, streams: list[str] | None = None, reduce: str = "auto",
         view: str = "auto") -> Plan:
    """Choose the form of the plot for `streams` of `ds`: by default the first I/Q pair that can be
    drawn (I and Q first), else the first `save_all` stream with data (else the first stream);
    one stream with view "iq"/"magphase" is drawn with its partner (I_all with Q_all)."""
    _check(ds, streams, reduce, view)
    if streams and len(streams) == 2:
        return _pair_plan(ds, streams[0], streams[1], reduce, view)
    if streams:
        name = streams[0]
        if view == "auto":
            return _single_plan(ds, name, reduce)
        partner = iq_partner(name)
        i, q = (name, partner) if partner in ds.data_vars else (_i_of(ds, name), name)
        if i is None or q is None:
            raise QmValueError(f"view {view!r} draws an I/Q pair: {name!r} has no partner stream "
                               f"(I with Q, I_all with Q_all, ...); name both with two streams")
        return _pair_plan(ds, i, q, reduce, view)
    problems = []
    for i, q in _pairs(ds):
        try:
            return _pair_plan(ds, i, q, reduce, view)
        except QmValueError as exc:
            problems.append(exc)
    if view != "auto":
        if problems:
            raise problems[0]
        raise QmValueError(f"view {view!r} draws an I/Q pair, and there is none (streams: "
                           f"{', '.join(map(str, ds.data_vars))})")
    return _single_plan(ds, _default_stream(ds), reduce)


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
            ) -> tuple[np.ndarray, str]:
    """The values of `da` in the units `_scale` chooses (over `da` and `also`), and their label."""
    values = np.asarray(da.values)
    values = values.astype(float) if values.dtype.kind in "biuf" else values
    factor, units = _scale(str(da.attrs.get("units") or ""), values, *also)
    text = str(da.attrs.get("long_name") or name or getattr(da, "name", None) or "")
    return (values * factor if factor != 1.0 else values), (f"{text} [{units}]" if units else text)


def _axis(da: xr.DataArray, dim: Any) -> tuple[np.ndarray, str, bool]:
    """Values and label of a dimension: its index coordinate if it has one, else positions."""
    if dim in da.coords and da[dim].ndim == 1 and np.asarray(da[dim].values).dtype.kind in "biufmM":
        values, text = _scaled(da[dim], dim)
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
    i, xlabel = _scaled(p.arrays[0], None, raw_q)  # one scale for both: the aspect stays equal
    q, ylabel = _scaled(p.arrays[1], None, raw_i)
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
        units = xlabel.rpartition("[")[2].rstrip("]") if xlabel.endswith("]") else ""
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
        y, ylabel = _scaled(da, None, *(raw if together else []))
        ax.plot(x, y, marker="." if da.size <= 200 else None, linewidth=1, label=_short(da))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        _plain(ax)
        axes[-1].set_xlabel(xlabel)
    if together and len(p.arrays) > 1:
        unit = _scale(units.pop(), *raw)[1]
        axes[0].set_ylabel(", ".join(str(a.name) for a in p.arrays) + (f" [{unit}]" if unit else ""))
        axes[0].legend(loc="best")


def _images(fig: Figure, p: Plan) -> None:
    axes = fig.subplots(1, len(p.arrays), squeeze=False, sharey=True)[0]
    for k, (ax, da) in enumerate(zip(axes, p.arrays)):
        y, ylabel, y_coord = _axis(da, da.dims[0])
        x, xlabel, x_coord = _axis(da, da.dims[1])
        values, text = _scaled(da)
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
            ax.set_title(_short(da), fontsize="small")
        _plain(ax)
        if len(p.arrays) > 1:
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(nbins=4))


def _traces(fig: Figure, p: Plan) -> None:
    ax = fig.subplots()
    da = p.arrays[0]
    dim = da.dims[1]
    x, xlabel, _ = _axis(da, dim)
    values, ylabel = _scaled(da)
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


def save_figure(fig: Figure, out: str | Path, fmt: str | None = None) -> None:
    """Write `fig` to `out` atomically: into a new file beside it, then renamed over it (a reader
    sees the old image or the new one, never a part; the old one stays if writing fails)."""
    fmt = fmt or output_format(out)
    target = Path(out)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format=fmt, dpi=DPI)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
