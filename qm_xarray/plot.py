"""Quick-look plots of result streams, in the form that suits each stream (matplotlib, Agg).

- an I/Q pair (`save_all` streams named I and Q with one value per item and equal lengths, as a
  single-shot readout saves them): a scatter of Q against I, coloured by `state` if present;
- a stream that is 1-D once reduced: a line (`save_all` scalars along their item axis, a `save`
  buffer along its buffer axis, or the mean of a `save_all` 1-D buffer over its items);
- a stream that is 2-D once reduced: an image (a `save` 2-D buffer, the mean or last item of a
  `save_all` 2-D buffer, or a `save_all` 1-D buffer as items x buffer with `reduce="none"`).

Axis labels come from the dataset: `long_name` (or the name) and `units` attributes of the
variables and coordinates, so the same code draws a live job and its zarr export. matplotlib is
imported only when drawing.

The file's suffix names its format, in any case: `.png`, `.svg`, `.pdf`, `.jpg`/`.jpeg` and the
other formats of matplotlib's Agg canvas (`formats()`); another suffix, or none, is a
`QmValueError` that names it and the formats there are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import xarray as xr

from .errors import QmKeyError, QmValueError

if TYPE_CHECKING:
    from matplotlib.cm import ScalarMappable

__all__ = ["Plan", "plan", "plot", "REDUCTIONS", "formats", "output_format"]

REDUCTIONS = ("auto", "mean", "last", "none")
DPI = 100


class _Marker(TypedDict):
    """How the points of an I/Q scatter are drawn (keyword arguments of `Axes.scatter`)."""

    s: float
    alpha: float
    linewidths: float
    rasterized: bool


MARKER: _Marker = {"s": 4, "alpha": 0.5, "linewidths": 0, "rasterized": True}


@dataclass
class Plan:
    """What to draw: `kind` is "iq", "line" or "image"; `arrays` the data; `what` a description."""

    kind: str
    arrays: list[xr.DataArray]
    what: str
    color: xr.DataArray | None = None


def label(da: xr.DataArray | xr.Variable, name: Any = None) -> str:
    """`long_name [units]` from the attributes, the name when there is no long_name."""
    text = str(da.attrs.get("long_name") or name or getattr(da, "name", None) or "")
    units = da.attrs.get("units")
    return f"{text} [{units}]" if units else text


def _is_save_all(da: xr.DataArray) -> bool:
    return da.attrs.get("qm_save_mode") == "save_all" and da.ndim >= 1


def _iq_pair(ds: xr.Dataset, i: str = "I", q: str = "Q") -> bool:
    if i not in ds.data_vars or q not in ds.data_vars:
        return False
    a, b = ds[i], ds[q]
    return a.ndim == 1 and b.ndim == 1 and a.size == b.size and a.size > 0 and (
        _is_save_all(a) or "qm_save_mode" not in a.attrs)


def _default_stream(ds: xr.Dataset) -> str:
    candidates = [str(n) for n, v in ds.data_vars.items() if v.ndim >= 1 and v.size > 0]
    growing = [n for n in candidates if _is_save_all(ds[n])]
    if growing or candidates:
        return (growing or candidates)[0]
    raise QmValueError(f"nothing to plot: no stream has data yet (streams: "
                       f"{', '.join(map(str, ds.data_vars))})")


def plan(ds: xr.Dataset, streams: list[str] | None = None, reduce: str = "auto") -> Plan:
    """Choose the form of the plot for `streams` of `ds` (all: the I/Q pair or the first stream)."""
    if reduce not in REDUCTIONS:
        raise QmValueError(f"reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")
    names = list(ds.data_vars)
    for name in streams or ():
        if name not in ds.data_vars:
            raise QmKeyError(f"no stream {name!r}; streams: {', '.join(map(str, names))}")
    if not streams and _iq_pair(ds):
        streams = ["I", "Q"]
    if streams and len(streams) == 2:
        i, q = streams
        if not _iq_pair(ds, i, q):
            raise QmValueError(f"{i!r} and {q!r} are not an I/Q pair (two save_all streams of one "
                               f"value per item, of equal, non-zero length)")
        color = ds["state"] if "state" in ds.data_vars and ds["state"].shape == ds[i].shape \
            and "state" not in (i, q) else None
        what = f"{q} vs {i}, {ds[i].size} shots" + (", coloured by state" if color is not None else "")
        return Plan("iq", [ds[i], ds[q]], what, color)
    if streams and len(streams) > 2:
        raise QmValueError("give one stream, or two (an I/Q pair)")
    name = streams[0] if streams else _default_stream(ds)
    da = ds[name]
    what = name
    if da.size == 0:
        raise QmValueError(f"stream {name!r} has no data yet")
    if _is_save_all(da) and da.ndim >= 2 and reduce != "none":
        item = da.dims[0]
        if reduce == "last":
            what = f"{name}, last of {da.sizes[item]} items"
            da = da.isel({item: -1})
        else:
            what = f"{name}, mean over {da.sizes[item]} items"
            da = da.astype(float).mean([item], keep_attrs=True)
    if da.ndim == 0:
        raise QmValueError(f"stream {name!r} holds one value ({np.asarray(da.values).item()!r}): nothing to plot")
    if da.ndim > 2:
        raise QmValueError(f"stream {name!r} has {da.ndim} dimensions {da.dims}; plot it reduced "
                           f"(reduce 'mean' or 'last')")
    if da.dtype == bool:
        da = da.astype(int)
    da.name = name
    return Plan("line" if da.ndim == 1 else "image", [da], what)


def _axis(da: xr.DataArray, dim: Any) -> tuple[np.ndarray, str, bool]:
    """Values and label of a dimension: its index coordinate if it has one, else positions."""
    if dim in da.coords and da[dim].ndim == 1:
        coord = da[dim]
        return np.asarray(coord.values), label(coord, dim), True
    return np.arange(da.sizes[dim]), str(dim), False


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


def plot(ds: xr.Dataset, out: str | Path, *, streams: list[str] | None = None, reduce: str = "auto",
         width_px: int = 800, height_px: int = 600, title: str | None = None) -> Plan:
    """Draw `streams` of `ds` into the file `out` of `width_px` x `height_px` pixels (exactly, for
    the pixel formats), in the format its suffix names (`output_format`)."""
    fmt = output_format(out)
    p = plan(ds, streams, reduce)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if p.kind == "iq":
        i, q = (np.asarray(a.values, dtype=float) for a in p.arrays)
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
        ax.set_xlabel(label(p.arrays[0]))
        ax.set_ylabel(label(p.arrays[1]))
        ax.set_aspect("equal", adjustable="datalim")
    elif p.kind == "line":
        da = p.arrays[0]
        x, xlabel, _ = _axis(da, da.dims[0])
        ax.plot(x, np.asarray(da.values), marker="." if da.size <= 200 else None, linewidth=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label(da))
        ax.grid(alpha=0.3)
    else:
        da = p.arrays[0]
        y, ylabel, y_coord = _axis(da, da.dims[0])
        x, xlabel, x_coord = _axis(da, da.dims[1])
        values = np.asarray(da.values, dtype=float)
        image: ScalarMappable
        if x_coord or y_coord:
            image = ax.pcolormesh(x, y, values, shading="nearest")
        else:
            image = ax.imshow(values, origin="lower", aspect="auto", interpolation="nearest",
                              extent=(-0.5, values.shape[1] - 0.5, -0.5, values.shape[0] - 0.5))
        fig.colorbar(image, ax=ax, label=label(da))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    job = ds.attrs.get("qm_job_id")
    state = ds.attrs.get("qm_job_state")
    default = f"{job}: {p.what}" + (f" ({state})" if state else "") if job else p.what
    ax.set_title(title or default, fontsize="medium")
    fig.savefig(str(out), format=fmt, dpi=DPI)
    return p
