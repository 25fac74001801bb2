"""What to draw (`plan`): the form that suits each stream of a dataset, its quantities (I and Q, or
magnitude and phase), reductions over items, and the labels and title, from the dataset's names,
`long_name` and `units` attributes and flags. No matplotlib here (see draw.py)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from ..errors import QmKeyError, QmValueError
from ..execution_errors import outcome

__all__ = ["KINDS", "N_TRACES", "REDUCTIONS", "VIEWS", "Plan", "iq_partner", "label", "plan", "title",
           "short_label", "check_choices"]

REDUCTIONS = ("auto", "mean", "last", "none")
VIEWS = ("auto", "iq", "magphase")
KINDS = ("iq", "line", "image", "trace")
N_TRACES = 5            # individual ADC traces drawn beside their mean
TIME_UNITS = ("ns", "us", "µs", "ms", "s", "ps")
TIME_NAME = re.compile(r"time|adc|trace", re.IGNORECASE)
MAX_ERROR_TEXT = 80     # characters of one execution error's message in a title


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
def label(da: xr.DataArray | xr.Variable, name: Any = None, units: str | None = None) -> str:
    """`long_name [units]` from the attributes (`units` given: those instead, e.g. with a
    prefix), the name when there is no long_name."""
    text = str(da.attrs.get("long_name") or name or getattr(da, "name", None) or "")
    units = da.attrs.get("units") if units is None else units
    return f"{text} [{units}]" if units else text


def short_label(da: xr.DataArray) -> str:
    return str(da.attrs.get("long_name") or da.name or "")


def _errors(ds: xr.Dataset | None) -> list[dict[str, Any]]:
    """The execution errors in `ds.attrs` (a JSON list of dicts; anything else: none)."""
    try:
        errors = json.loads((ds.attrs.get("qm_execution_errors") if ds is not None else None) or "[]")
    except (TypeError, ValueError):
        return []
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _flags(ds: xr.Dataset | None) -> list[str]:
    """`DATA LOSS` and one `severity code: message` per execution error in `ds.attrs`."""
    if ds is None:
        return []
    found = ["DATA LOSS"] if ds.attrs.get("qm_has_dataloss") else []
    for e in _errors(ds):
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
        if state:  # failed or cancelled rather than the protocol's "closed", as `info` says
            state = outcome(state, [e.get("severity", "") for e in _errors(ds)])
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


def check_choices(reduce: str, view: str) -> None:
    """`reduce` one of `REDUCTIONS` and `view` one of `VIEWS` (else `QmValueError`)."""
    if reduce not in REDUCTIONS:
        raise QmValueError(f"reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")
    if view not in VIEWS:
        raise QmValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")


def _check(ds: xr.Dataset, streams: list[str] | None, reduce: str, view: str) -> None:
    check_choices(reduce, view)
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


