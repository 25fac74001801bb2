"""From a JobSnapshot to an xarray Dataset: names, dims, coords and attrs (documented in docs/lazy.md).

- one variable per stream; `save_all` streams get their own item dimension `<stream>_item`, so
  streams of different lengths never misalign; buffer axes are `<stream>_dim_<k>`;
- the job's stored metadata (metadata.py) names the axes, attaches coordinates with their units
  and long names, gives variables `units`/`long_name` and the dataset the job's attributes;
- `dims={"I": ("shot", "freq")}` renames a stream's axes; `coords=` attaches sweep values (checked
  against the sizes; values for a growing item axis may be longer and are cut to the count);
  both win over the stored ones;
- streams whose item axes have one name (stored dims, `dims=`, or `align`) are cut to their
  common length, so that a running job always opens;
- `align=["I", "Q"]` (or True for all) puts chosen streams on one shared item dimension
  (`item_dim`, default "item"), cut to their common length;
- `with_timestamps` streams become the value variable plus a `<stream>_timestamp` coordinate
  (`timestamps="variable"` makes it a variable, `"drop"` leaves it out);
- `save` streams are 0-d or buffer-shaped variables holding the value read at snapshot time
  (NaN, as float, when there is none yet);
- a relay's copy of an upstream job (`JobSnapshot.origin`) says so in `qm_copy_of`
  ("UPSTREAM/JOB_ID") and `qm_capture` (capturing, interrupted or complete; `qm_capture_reason`
  when interrupted), and an interrupted copy warns (`CaptureInterruptedWarning`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import xarray as xr
from xarray.core import indexing

from ..errors import QmKeyError, QmValueError, StreamProcessingDataLossError
from ..metadata import JobMetadata, StreamMetadata, default_dims
from .array import StreamArray, StreamSlicer, chunk_items
from .options import OpenOptions
from .snapshots import CaptureInterruptedWarning, JobSnapshot, StreamSnapshot

__all__ = ["build_dataset", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1


def _aligned(snap: JobSnapshot, opts: OpenOptions) -> list[str]:
    if not opts.align:
        return []
    multi = [n for n, s in snap.streams.items() if not s.single]
    names = list(opts.align) if isinstance(opts.align, tuple) else multi
    bad = [n for n in names if n not in snap.streams or snap.streams[n].single]
    if bad:
        raise QmValueError(f"align: {bad} are not save_all streams of the dataset; choose from {multi}")
    return names


def _dims(s: StreamSnapshot, ndim_inner: int, opts: OpenOptions, meta: JobMetadata,
          aligned: bool) -> tuple[str, ...]:
    """The stream's dimension names: `dims=` given at open, else the stored ones, else the
    default ones (`metadata.default_dims`); given or stored, they must name every axis."""
    default = default_dims(s.name, s.single, ndim_inner, opts.item_dim if aligned else None)
    given = opts.dims.get(s.name)
    if given is None:
        given = meta.streams.get(s.name, StreamMetadata()).dims
        if given is None:
            return default
        if len(given) != len(default):  # stored for another layout: the job's own axes win
            warnings.warn(f"stream {s.name!r}: the stored dims {given} do not fit its {len(default)} "
                          f"axes; using {default}", RuntimeWarning, stacklevel=5)
            return default
        return tuple(given)
    if len(given) != len(default):
        raise QmValueError(
            f"dims for stream {s.name!r}: got {len(given)} names {given}, but the stream has "
            f"{len(default)} axes {default} (item shape {tuple(s.header.shape)} on the server)")
    return tuple(given)


def _timestamped(source: Any) -> bool:
    return source.dtype.names is not None and "timestamp" in source.dtype.names


def _inner_axes(source: Any) -> int:
    """A stream's buffer axes: its item shape, and the value's shape in a (value, timestamp) record."""
    return len(source.item_shape) + (len(source.dtype["value"].shape) if _timestamped(source) else 0)


def build_dataset(snap: JobSnapshot, opts: OpenOptions) -> xr.Dataset:
    """The Dataset of a snapshot: lazy StreamArrays for `save_all`, values for `save` streams,
    described by the job's stored metadata where `opts` does not say otherwise."""
    if snap.has_dataloss:
        message = f"job {snap.job_id!r} reports data loss: some results are missing"
        if opts.on_dataloss == "raise":
            raise StreamProcessingDataLossError(message)
        if opts.on_dataloss == "warn":
            warnings.warn(message, RuntimeWarning, stacklevel=4)
    origin = snap.origin
    if origin is not None and origin.interrupted:
        warnings.warn(CaptureInterruptedWarning(
            f"job {snap.job_id!r} is a relay's copy of job {origin.job_id!r} on {origin.upstream}, "
            f"whose capture was interrupted ({origin.reason or 'no reason given'}): the data stops "
            f"where the copy stopped"), stacklevel=4)
    meta = snap.metadata
    aligned = _aligned(snap, opts)
    unknown = [n for n in opts.dims if n not in snap.streams]
    if unknown:
        raise QmKeyError(f"dims= names streams {unknown} that the dataset does not have; "
                         f"streams are {list(snap.streams)}")
    dims_of = {n: _dims(s, _inner_axes(snap.source(n)), opts, meta, n in aligned)
               for n, s in snap.streams.items()}
    # streams on one item dimension (aligned, or named so) are cut to their common length
    sharing: dict[str, list[str]] = {}
    for n, s in snap.streams.items():
        if not s.single:
            sharing.setdefault(dims_of[n][0], []).append(n)
    counts = {n: min(snap.streams[m].count for m in group) for group in sharing.values() for n in group}
    # one chunk length per item dimension, from whole records (value and timestamp together)
    chunking = {n: chunk_items(_record_size(snap.source(n)), counts[n], opts.chunk_bytes) for n in counts}
    for group in sharing.values():
        shared = min(chunking[n] for n in group)
        chunking.update(dict.fromkeys(group, shared))
    identity = snap.__dask_tokenize__()
    data_vars: dict[str, xr.Variable] = {}
    coords: dict[str, xr.Variable] = {}
    growing: dict[str, int] = {}  # item dims and their sizes
    for name, s in snap.streams.items():
        if name in opts.drop_variables:
            continue
        source = snap.source(name)
        fields = ["value", "timestamp"] if _timestamped(source) else [None]
        dims = dims_of[name]
        attrs = {**meta.streams.get(name, StreamMetadata()).attrs, **_stream_attrs(s)}
        for fld in fields:
            if fld == "timestamp" and (opts.timestamps == "drop"
                                       or f"{name}_timestamp" in opts.drop_variables):
                continue
            if s.single:
                var = _single_variable(s, source, fld, dims[:0] if fld == "timestamp" else dims, attrs)
            else:
                slicer = StreamSlicer(source, counts[name], fld)
                var_dims = dims[:1] if fld == "timestamp" else dims
                var = xr.Variable(var_dims, indexing.LazilyIndexedArray(StreamArray(slicer, identity)), attrs)
                var.encoding["preferred_chunks"] = {var_dims[0]: chunking[name]}
                growing[var_dims[0]] = counts[name]
            if fld == "timestamp":
                var.attrs = {"long_name": f"{name} timestamp", "qm_stream": name}
                target = coords if opts.timestamps == "coord" else data_vars
                target[f"{name}_timestamp"] = var
            else:
                data_vars[name] = var
    _check_names(data_vars, coords)
    ds = xr.Dataset(data_vars, coords)
    ds = ds.assign_coords(_stored_coords(ds, meta, opts, growing))
    ds = _attach_coords(ds, opts.coords, growing)
    ds.attrs.update(meta.attrs)
    ds.attrs.update(_dataset_attrs(snap))
    ds.encoding["source"] = f"qm://{snap.target}/{snap.job_id}"
    ds.encoding["qm_item_dims"] = dict(growing)  # the dimensions that grow with the job
    return ds


def _stored_coords(ds: xr.Dataset, meta: JobMetadata, opts: OpenOptions,
                   growing: dict[str, int]) -> dict[str, xr.Variable]:
    """The stored coordinates that fit this dataset: along one of its dimensions (not renamed
    away by `dims=`, not of a stream left out) and not given at open; values for a growing item
    axis are cut to its count, and a coordinate shorter than its axis is left out (warned)."""
    out = {}
    for name, coord in meta.coords.items():
        if name in opts.coords or name in ds.variables or coord.dim not in ds.sizes:
            continue
        size = ds.sizes[coord.dim]
        values = coord.values
        if len(values) > size and coord.dim in growing:
            values = values[:size]  # sweep values for the whole run; the job has produced `size`
        if len(values) != size:
            warnings.warn(f"the stored coordinate {name!r} has {len(coord.values)} values but "
                          f"{coord.dim!r} has {size}; left out", RuntimeWarning, stacklevel=5)
            continue
        out[name] = xr.Variable(coord.dim, values, coord.attrs)
    return out


def _record_size(source: Any) -> int:
    return int(source.dtype.itemsize) * int(np.prod(source.item_shape, dtype=np.int64))


def _check_names(data_vars: dict[str, xr.Variable], coords: dict[str, xr.Variable]) -> None:
    """A dimension may not share its name with a variable of another shape (xarray refuses)."""
    variables = {**data_vars, **coords}
    for name, var in variables.items():
        for dim in var.dims:
            other = variables.get(str(dim))
            if other is not None and other.dims != (dim,):
                raise QmValueError(
                    f"dimension {dim!r} of stream {name!r} has the name of the variable {dim!r}; "
                    f"choose another name with dims=")


def _single_variable(s: StreamSnapshot, source: Any, fld: str | None, dims: tuple[str, ...],
                     attrs: dict[str, Any]) -> xr.Variable:
    dtype = source.dtype if fld is None else source.dtype[fld]
    shape = tuple(source.item_shape) + tuple(dtype.shape)
    if s.value is None:
        value = np.full(shape, np.nan)
    else:
        value = np.asarray(s.value)
        value = value[fld] if fld is not None else value
        value = np.asarray(value).reshape(shape)
    return xr.Variable(dims, value, attrs)


def _stream_attrs(s: StreamSnapshot) -> dict[str, Any]:
    return {"qm_stream": s.name, "qm_save_mode": "save" if s.single else "save_all",
            "qm_count": int(s.count), "qm_expected_count": int(s.schema.expected_count)}


def _dataset_attrs(snap: JobSnapshot) -> dict[str, Any]:
    return {
        "qm_schema_version": SCHEMA_VERSION,
        "qm_job_id": snap.job_id,
        "qm_job_state": snap.state,
        "qm_has_dataloss": int(snap.has_dataloss),
        "qm_counts": json.dumps(snap.counts),
        "qm_expected_counts": json.dumps({n: s.schema.expected_count for n, s in snap.streams.items()}),
        "qm_execution_errors": json.dumps([{"code": c, "severity": sev, "message": m}
                                           for c, sev, m in snap.errors]),
        "qm_snapshot_time": snap.taken,
        "qm_source": f"qm://{snap.target}/{snap.job_id}",
        **_origin_attrs(snap),
    }


def _origin_attrs(snap: JobSnapshot) -> dict[str, Any]:
    """Where a relay's copy comes from and how it stands (nothing for any other job)."""
    return {} if snap.origin is None else snap.origin.to_attrs()


def _attach_coords(ds: xr.Dataset, given: Mapping[Hashable, Any], growing: dict[str, int]) -> xr.Dataset:
    if not given:
        return ds
    new = {}
    for name, spec in given.items():
        var = spec.variable if isinstance(spec, xr.DataArray) else xr.Variable(
            *(spec if isinstance(spec, tuple) else (name, spec)))
        if var.ndim != 1:
            raise QmValueError(f"coordinate {name!r} must be 1-D, got dims {var.dims}")
        dim = var.dims[0]
        if dim not in ds.sizes:
            raise QmKeyError(f"coordinate {name!r} is along {dim!r}, which no variable has; "
                             f"dimensions are {sorted(map(str, ds.sizes))}")
        size = ds.sizes[dim]
        if var.size != size:
            if dim in growing and var.size > size:
                var = var[:size]  # sweep values for the whole run; the job has produced `size`
            else:
                users = [str(v) for v in ds.data_vars if dim in ds[v].dims]
                raise QmValueError(
                    f"coordinate {name!r} has {var.size} values, but dimension {dim!r} of "
                    f"{users} has size {size} on the server")
        new[name] = var
    return ds.assign_coords(new)
