"""What a job says of its results: sweep axes, units, names and free attributes (docs/metadata.md).

QM's result schema carries shapes and counts only; this is what it lacks, kept with the job on our
server (QM's protocol is unchanged) and applied by every view:

- `Coordinate`: 1-D values along one dimension, with `units` and `long_name`;
- `StreamMetadata`: a stream's dimension names (all its axes, the item axis first for `save_all`,
  exactly as the `dims=` option of engine "qm"), and the `units` and `long_name` of its values;
- `JobMetadata`: the coordinates, the stream descriptions and free attributes (JSON values) of a
  job, checked as a whole against the job's stream declarations (`check`);
- `MetadataChange`: what one `describe(...)` call changes (`JobMetadata.apply`).

The rules (names, sizes, what a coordinate may lie along) live here once; the store applies them
to every change and the producer checks the arguments with them before sending anything.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Union

import numpy as np

from .errors import QmTypeError, QmValueError, StreamNotFoundError
from .limits import MAX_ATTRS, MAX_METADATA_BYTES, MAX_TEXT_CHARS
from .streams import STREAM_NAME_PATTERN, StreamSpec
from .wire.pb.qm_xarray.v1 import control_pb2 as pb

__all__ = ["Coordinate", "StreamMetadata", "JobMetadata", "MetadataChange", "JsonValue",
           "NAME_PATTERN", "default_dims", "change_of", "stream_change", "as_change", "names_of", "cf_attrs"]

JsonValue = Union[str, int, float, bool, list[Union[str, int, float, bool]]]
NAME_PATTERN = STREAM_NAME_PATTERN  # dims, coordinates and attributes are named as streams are
RESERVED_PREFIX = "qm_"  # dataset attributes of our own (docs/lazy.md)
TEXT_KIND = "<U"


def default_dims(stream: str, single: bool, buffer_axes: int, item_dim: str | None = None) -> tuple[str, ...]:
    """The dimension names of a stream nobody described: `<stream>_item` (or the shared
    `item_dim`) for a `save_all` stream's items, then `<stream>_dim_<k>` per buffer axis."""
    inner = tuple(f"{stream}_dim_{k}" for k in range(buffer_axes))
    return inner if single else (item_dim or f"{stream}_item", *inner)


def cf_attrs(units: str | None, long_name: str | None) -> dict[str, str]:
    """`units` and `long_name` as CF/xarray attributes, the empty or unset ones left out."""
    return {k: v for k, v in (("units", units), ("long_name", long_name)) if v}


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise QmValueError(f"invalid {what} {value!r}: 1-128 letters, digits and _ . : -, "
                           f"starting with a letter or _")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise QmTypeError(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise QmValueError(f"{what} has {len(value)} characters; at most {MAX_TEXT_CHARS}")
    return value


def _json_scalar(value: Any, what: str) -> str | int | float | bool:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QmValueError(f"{what} is {value}: JSON has no NaN or infinity; store it as a string")
        return value
    if isinstance(value, Mapping):
        raise QmTypeError(f"{what} is a mapping: keep it as a JSON string (json.dumps(value))")
    raise QmTypeError(f"{what} is a {type(value).__name__}, not a JSON value (a string, number, bool "
                      f"or a list of them)")


def _attr_value(value: Any, key: str) -> JsonValue:
    what = f"attribute {key!r}"
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_json_scalar(v, f"an element of {what}") for v in value]
    return _json_scalar(value, what)


def _attr_key(key: Any) -> str:
    _name(key, "attribute name")
    if key.startswith(RESERVED_PREFIX):
        raise QmValueError(f"attribute {key!r}: names starting with {RESERVED_PREFIX!r} are qm-xarray's own")
    return str(key)


@dataclass(frozen=True, eq=False)
class Coordinate:
    """1-D values along one dimension (`dim`), with their `units` and `long_name`.

    `values` is a read-only numpy array of bools, int64, float64 or text. Build one with
    `create`, which checks and normalises what it is given; without a `dim` it lies along the
    dimension of the name it is kept under."""

    dim: str
    values: np.ndarray
    units: str = ""
    long_name: str = ""

    @staticmethod
    def create(values: Any, units: str = "", long_name: str = "", dim: str | None = None,
               name: str | None = None) -> Coordinate:
        """A coordinate along `dim` (default: the name it is kept under in `coords={name: ...}`)."""
        dim = dim if dim is not None else name or ""
        return Coordinate(_name(dim, "dimension name") if dim else "", _values(values, name or dim),
                          _text(units, "units"), _text(long_name, "long_name"))

    @staticmethod
    def coerce(name: str, given: Any) -> Coordinate:
        """A coordinate from what `describe(coords={name: given})` takes: a `Coordinate`, 1-D
        values (along the dimension `name`), `(dim, values)` or `(dim, values, {"units": ...,
        "long_name": ...})` as xarray takes them, or an object with `dims`, `values`, `attrs`
        (an `xr.DataArray`)."""
        _name(name, "coordinate name")
        if isinstance(given, Coordinate):
            return given if given.dim else replace(given, dim=name)
        if isinstance(given, tuple) and given and isinstance(given[0], str):
            if len(given) not in (2, 3):
                raise QmTypeError(f"coordinate {name!r}: a tuple is (dim, values) or (dim, values, attrs)")
            attrs = given[2] if len(given) == 3 else {}
            return Coordinate._with_attrs(given[1], attrs, given[0], name)
        if hasattr(given, "dims") and hasattr(given, "attrs") and hasattr(given, "values"):
            dims = tuple(given.dims)
            if len(dims) != 1:
                raise QmValueError(f"coordinate {name!r} must be 1-D, got dims {dims}")
            return Coordinate._with_attrs(given.values, given.attrs, str(dims[0]), name)
        return Coordinate.create(given, name=name)

    @staticmethod
    def _with_attrs(values: Any, attrs: Any, dim: str, name: str) -> Coordinate:
        if not isinstance(attrs, Mapping):
            raise QmTypeError(f"coordinate {name!r}: attrs must be a mapping, got {type(attrs).__name__}")
        unknown = sorted(set(map(str, attrs)) - {"units", "long_name"})
        if unknown:
            raise QmValueError(f"coordinate {name!r}: attrs {unknown} are not kept; a coordinate has "
                               f"'units' and 'long_name'")
        return Coordinate.create(values, attrs.get("units", ""), attrs.get("long_name", ""), dim, name)

    @property
    def attrs(self) -> dict[str, str]:
        """The non-empty `units` and `long_name`, as xarray attributes."""
        return cf_attrs(self.units, self.long_name)

    def to_message(self, name: str) -> pb.Coordinate:
        if self.values.dtype.kind == "U":
            return pb.Coordinate(name=name, dim=self.dim, dtype=TEXT_KIND, labels=self.values.tolist(),
                                 units=self.units, long_name=self.long_name)
        return pb.Coordinate(name=name, dim=self.dim, dtype=self.values.dtype.str,
                             data=self.values.tobytes(), units=self.units, long_name=self.long_name)

    @staticmethod
    def from_message(m: pb.Coordinate) -> Coordinate:
        if m.dtype == TEXT_KIND:
            values: Any = list(m.labels)
        else:
            try:
                dtype = np.dtype(m.dtype)
            except TypeError:
                raise QmValueError(f"coordinate {m.name!r}: unknown dtype {m.dtype!r}") from None
            if len(m.data) % max(dtype.itemsize, 1):
                raise QmValueError(f"coordinate {m.name!r}: {len(m.data)} bytes is not whole values")
            values = np.frombuffer(m.data, dtype=dtype)
        return Coordinate.create(values, m.units, m.long_name, m.dim or m.name, m.name)

    def to_json(self) -> dict[str, Any]:
        return {"dim": self.dim, "dtype": TEXT_KIND if self.values.dtype.kind == "U" else self.values.dtype.str,
                "values": self.values.tolist(), "units": self.units, "long_name": self.long_name}

    @staticmethod
    def from_json(name: str, fields: Mapping[str, Any]) -> Coordinate:
        values = fields["values"]
        if fields.get("dtype", TEXT_KIND) != TEXT_KIND:
            values = np.asarray(values, dtype=np.dtype(fields["dtype"]))
        return Coordinate.create(values, fields.get("units", ""), fields.get("long_name", ""),
                                 fields.get("dim") or name, name)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Coordinate) and (self.dim, self.units, self.long_name)
                == (other.dim, other.units, other.long_name) and self.values.dtype == other.values.dtype
                and np.array_equal(self.values, other.values))

    def __hash__(self) -> int:
        return hash((self.dim, self.units, self.long_name, len(self.values)))

    def __repr__(self) -> str:
        unit = f" [{self.units}]" if self.units else ""
        return f"<Coordinate along {self.dim!r}{unit}: {len(self.values)} {self.values.dtype} values>"


def _values(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise QmValueError(f"coordinate {name!r} must be 1-D values, got shape {arr.shape}")
    kind = arr.dtype.kind
    if kind == "b":
        out = arr.astype(bool)
    elif kind in "iu":
        if kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise QmValueError(f"coordinate {name!r}: values beyond int64")
        out = arr.astype(np.int64)
    elif kind == "f":
        out = arr.astype(np.float64)
    elif kind in "US" or (kind == "O" and all(isinstance(v, str) for v in arr.tolist())):
        out = arr.astype(str)
    else:
        raise QmTypeError(f"coordinate {name!r}: values of dtype {arr.dtype} are not kept; use numbers, "
                          f"bools or text")
    out = np.ascontiguousarray(out).copy()
    out.flags.writeable = False
    return out


@dataclass(frozen=True)
class StreamMetadata:
    """A stream's description: its dimension names and the `units`/`long_name` of its values.
    `None` means not described (default dims; no attribute)."""

    dims: tuple[str, ...] | None = None
    units: str | None = None
    long_name: str | None = None

    @staticmethod
    def create(dims: Any = None, units: Any = None, long_name: Any = None, stream: str = "") -> StreamMetadata:
        if dims is not None:
            names = (dims,) if isinstance(dims, str) else tuple(dims)
            dims = tuple(_name(d, f"dimension name of stream {stream!r}") for d in names)
            if len(set(dims)) != len(dims):
                raise QmValueError(f"stream {stream!r}: dims {dims} repeat a name")
        return StreamMetadata(dims, None if units is None else _text(units, f"units of stream {stream!r}"),
                              None if long_name is None else _text(long_name, f"long_name of stream {stream!r}"))

    @staticmethod
    def coerce(stream: str, given: Any) -> StreamMetadata:
        if isinstance(given, StreamMetadata):
            return given
        if not isinstance(given, Mapping):
            raise QmTypeError(f"streams[{stream!r}] must be a mapping of dims, units and long_name, "
                              f"got {type(given).__name__}")
        unknown = sorted(set(map(str, given)) - {"dims", "units", "long_name"})
        if unknown:
            raise QmValueError(f"streams[{stream!r}]: unknown fields {unknown}; a stream has dims, units "
                               f"and long_name")
        return StreamMetadata.create(given.get("dims"), given.get("units"), given.get("long_name"), stream)

    def merged(self, update: StreamMetadata) -> StreamMetadata:
        """This description with the fields `update` sets."""
        return StreamMetadata(self.dims if update.dims is None else update.dims,
                              self.units if update.units is None else update.units,
                              self.long_name if update.long_name is None else update.long_name)

    @property
    def attrs(self) -> dict[str, str]:
        """The non-empty `units` and `long_name`, as xarray attributes."""
        return cf_attrs(self.units, self.long_name)

    def to_message(self, stream: str) -> pb.StreamMetadata:
        m = pb.StreamMetadata(stream=stream)
        if self.dims is not None:
            m.dims.names.extend(self.dims)
        if self.units is not None:
            m.units = self.units
        if self.long_name is not None:
            m.long_name = self.long_name
        return m

    @staticmethod
    def from_message(m: pb.StreamMetadata) -> StreamMetadata:
        return StreamMetadata.create(tuple(m.dims.names) if m.HasField("dims") else None,
                                     m.units if m.HasField("units") else None,
                                     m.long_name if m.HasField("long_name") else None, m.stream)

    def to_json(self) -> dict[str, Any]:
        return {"dims": None if self.dims is None else list(self.dims), "units": self.units,
                "long_name": self.long_name}


@dataclass(frozen=True)
class MetadataChange:
    """One `describe(...)`: what it sets and removes, and whether it replaces everything."""

    metadata: JobMetadata
    remove_attrs: tuple[str, ...] = ()
    remove_coords: tuple[str, ...] = ()
    remove_streams: tuple[str, ...] = ()
    replace: bool = False

    def to_request(self, job_id: str) -> pb.DescribeJobRequest:
        return pb.DescribeJobRequest(job_id=job_id, metadata=self.metadata.to_message(), replace=self.replace,
                                     remove_attrs=self.remove_attrs, remove_coords=self.remove_coords,
                                     remove_streams=self.remove_streams)

    @staticmethod
    def from_request(r: pb.DescribeJobRequest) -> MetadataChange:
        return MetadataChange(JobMetadata.from_message(r.metadata), tuple(r.remove_attrs),
                              tuple(r.remove_coords), tuple(r.remove_streams), r.replace)


@dataclass(frozen=True)
class JobMetadata:
    """A job's coordinates (by name), stream descriptions (by stream) and free attributes."""

    attrs: Mapping[str, JsonValue] = field(default_factory=dict)
    coords: Mapping[str, Coordinate] = field(default_factory=dict)
    streams: Mapping[str, StreamMetadata] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.attrs or self.coords or self.streams)

    def apply(self, change: MetadataChange) -> JobMetadata:
        """This metadata with `change` made (not yet checked against any streams: `check`)."""
        base = JobMetadata() if change.replace else self
        attrs = {k: v for k, v in base.attrs.items() if k not in change.remove_attrs}
        coords = {k: v for k, v in base.coords.items() if k not in change.remove_coords}
        streams = {k: v for k, v in base.streams.items() if k not in change.remove_streams}
        attrs.update(change.metadata.attrs)
        coords.update(change.metadata.coords)
        for name, update in change.metadata.streams.items():
            streams[name] = streams.get(name, StreamMetadata()).merged(update)
        return JobMetadata(attrs, coords, streams)

    def dims_of(self, spec: StreamSpec) -> tuple[str, ...]:
        """The dimension names of a declared stream: described, else the default ones."""
        described = self.streams.get(spec.name, StreamMetadata()).dims
        return described if described is not None else default_dims(spec.name, spec.single, len(spec.shape))

    def check(self, specs: Mapping[str, StreamSpec]) -> None:
        """Raise a typed error naming the first rule this metadata breaks for a job with these
        streams: described streams exist and have that many axes; a dimension has one size;
        a coordinate lies along a dimension of the job and is not longer than it (a fixed axis:
        exactly as long); names do not clash; the whole fits `MAX_METADATA_BYTES`."""
        unknown = sorted(set(self.streams) - set(specs))
        if unknown:
            raise StreamNotFoundError(f"metadata describes streams {unknown} that the job does not have; "
                                      f"its streams are {sorted(specs)}")
        axes: dict[str, list[tuple[str, bool, int]]] = {}  # dim -> (stream, is item axis, size)
        for name, spec in specs.items():
            dims = self.dims_of(spec)
            sizes = list(spec.shape) if spec.single else [spec.expected_count, *spec.shape]
            if len(dims) != len(sizes):
                what = "buffer axes" if spec.single else "axes (the item axis, then the buffer axes)"
                raise QmValueError(f"dims of stream {name!r}: {len(dims)} names {dims}, but the stream has "
                                   f"{len(sizes)} {what}: item shape {spec.shape}")
            for k, (dim, size) in enumerate(zip(dims, sizes)):
                axes.setdefault(dim, []).append((name, not spec.single and k == 0, size))
        for dim, uses in axes.items():
            _check_dimension(dim, uses, specs, self)
        for name, coord in self.coords.items():
            _check_coordinate(name, coord, axes, specs)
        if len(self.attrs) > MAX_ATTRS:
            raise QmValueError(f"{len(self.attrs)} attributes; a job keeps at most {MAX_ATTRS}")
        size = self.to_message().ByteSize()
        if size > MAX_METADATA_BYTES:
            raise QmValueError(f"the job's metadata would take {size} bytes; at most {MAX_METADATA_BYTES} "
                               f"(keep long texts and large tables in files, and their names here)")

    def to_message(self) -> pb.JobMetadata:
        return pb.JobMetadata(attrs={k: json.dumps(v) for k, v in self.attrs.items()},
                              coords=[c.to_message(n) for n, c in self.coords.items()],
                              streams=[s.to_message(n) for n, s in self.streams.items()])

    @staticmethod
    def from_message(m: pb.JobMetadata) -> JobMetadata:
        attrs = {}
        for key, text in sorted(m.attrs.items()):  # a protobuf map has no order: sorted, as everywhere
            try:
                attrs[_attr_key(key)] = _attr_value(json.loads(text), key)
            except json.JSONDecodeError:
                raise QmValueError(f"attribute {key!r} is not JSON text: {text[:60]!r}") from None
        return JobMetadata(attrs, {c.name: Coordinate.from_message(c) for c in m.coords},
                           {s.stream: StreamMetadata.from_message(s) for s in m.streams})

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (the durable store's `job.json`)."""
        return {"attrs": dict(self.attrs), "coords": {n: c.to_json() for n, c in self.coords.items()},
                "streams": {n: s.to_json() for n, s in self.streams.items()}}

    @staticmethod
    def from_json(fields: Mapping[str, Any] | None) -> JobMetadata:
        if not fields:
            return JobMetadata()
        return JobMetadata({_attr_key(k): _attr_value(v, k) for k, v in fields.get("attrs", {}).items()},
                           {n: Coordinate.from_json(n, c) for n, c in fields.get("coords", {}).items()},
                           {n: StreamMetadata.coerce(n, s) for n, s in fields.get("streams", {}).items()})


def _check_dimension(dim: str, uses: list[tuple[str, bool, int]], specs: Mapping[str, StreamSpec],
                     meta: JobMetadata) -> None:
    items = [stream for stream, is_item, _ in uses if is_item]
    fixed = {(stream, size) for stream, is_item, size in uses if not is_item}
    if items and fixed:
        raise QmValueError(f"dimension {dim!r} is the item axis of {items} and a buffer axis of "
                           f"{sorted(s for s, _ in fixed)}; name them differently")
    if len({size for _, size in fixed}) > 1:
        raise QmValueError(f"dimension {dim!r} has different sizes: "
                           + ", ".join(f"{size} in stream {s!r}" for s, size in sorted(fixed)))
    if dim in specs and meta.dims_of(specs[dim]) != (dim,):
        raise QmValueError(f"dimension {dim!r} has the name of the stream {dim!r}; choose another name")


def _check_coordinate(name: str, coord: Coordinate, axes: Mapping[str, list[tuple[str, bool, int]]],
                      specs: Mapping[str, StreamSpec]) -> None:
    if name in specs:
        raise QmValueError(f"coordinate {name!r} has the name of a stream; choose another name")
    if name in axes and coord.dim != name:
        raise QmValueError(f"coordinate {name!r} has the name of a dimension but lies along {coord.dim!r}")
    uses = axes.get(coord.dim)
    if not uses:
        raise QmValueError(f"coordinate {name!r} lies along {coord.dim!r}, which no stream has; the job's "
                         f"dimensions are {sorted(axes)} (describe the streams' dims first)")
    n = len(coord.values)
    for stream, is_item, size in uses:
        if is_item:
            if size and n > size:
                raise QmValueError(f"coordinate {name!r} has {n} values, longer than the {size} items "
                                   f"stream {stream!r} expects along {coord.dim!r}")
        elif n != size:
            relation = "longer" if n > size else "shorter"
            raise QmValueError(f"coordinate {name!r} has {n} values, {relation} than dimension {coord.dim!r} "
                               f"(size {size} in stream {stream!r})")


def change_of(attrs: Mapping[str, Any] | None = None, coords: Mapping[str, Any] | None = None,
              streams: Mapping[str, Any] | None = None, replace: bool = False) -> MetadataChange:
    """The change that `describe(attrs=, coords=, streams=, replace=)` asks for, its arguments
    checked (a value of None removes that attribute, coordinate or stream description)."""
    for given, what in ((attrs, "attrs"), (coords, "coords"), (streams, "streams")):
        if given is not None and not isinstance(given, Mapping):
            raise QmTypeError(f"{what} must be a mapping of names, got {type(given).__name__}")
    attrs, coords, streams = dict(attrs or {}), dict(coords or {}), dict(streams or {})
    if not isinstance(replace, bool):
        raise QmTypeError(f"replace must be True or False, got {replace!r}")
    return MetadataChange(
        JobMetadata({_attr_key(k): _attr_value(v, k) for k, v in attrs.items() if v is not None},
                    {k: Coordinate.coerce(k, v) for k, v in coords.items() if v is not None},
                    {_stream_key(k): StreamMetadata.coerce(k, v) for k, v in streams.items() if v is not None}),
        _removed(attrs, _attr_key), _removed(coords, lambda k: _name(k, "coordinate name")),
        _removed(streams, _stream_key), replace)


def stream_change(stream: str, dims: Any = None, units: Any = None, long_name: Any = None,
                  coords: Mapping[str, Any] | None = None) -> MetadataChange:
    """The change that `stream_writer.describe(dims=, units=, long_name=, coords=)` asks for."""
    base = change_of(coords=coords)
    described = StreamMetadata.create(dims, units, long_name, stream)
    return replace(base, metadata=replace(base.metadata, streams={stream: described}))


def _stream_key(name: Any) -> str:
    if not isinstance(name, str):
        raise QmTypeError(f"stream names are strings, got {type(name).__name__}")
    return name


def _removed(given: Mapping[str, Any], check: Any) -> tuple[str, ...]:
    return tuple(check(k) for k, v in given.items() if v is None)


def as_change(metadata: JobMetadata | Mapping[str, Any] | None) -> MetadataChange | None:
    """`create_job(metadata=...)`: a `JobMetadata`, or `describe`'s keyword arguments as a dict."""
    if metadata is None:
        return None
    if isinstance(metadata, JobMetadata):
        return MetadataChange(metadata)
    if not isinstance(metadata, Mapping):
        raise QmTypeError(f"metadata must be a JobMetadata or a dict of attrs, coords and streams, "
                          f"got {type(metadata).__name__}")
    unknown = sorted(set(map(str, metadata)) - {"attrs", "coords", "streams"})
    if unknown:
        raise QmValueError(f"metadata: unknown fields {unknown}; it has attrs, coords and streams")
    return change_of(metadata.get("attrs"), metadata.get("coords"), metadata.get("streams"))


def names_of(items: Iterable[StreamSpec]) -> dict[str, StreamSpec]:
    """Stream declarations by name (what `JobMetadata.check` takes)."""
    return {s.name: s for s in items}
