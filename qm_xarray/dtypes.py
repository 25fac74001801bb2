"""Stream item layouts and the `simpleDType` JSON that describes them on the wire.

Shared by the server (which writes the descriptions) and the client (which parses them). The rules
are those of QM's results protocol (shared/spec/wire-protocol.md section d):

- nested form (`flatFormat=false`): each item is a one-field record named `value`, buffer dims in
  that field's sub-array shape, header shape `[1]`;
- flat form (`flatFormat=true`): the bare element type, buffer dims in the header shape;
- timestamped items are `(value, timestamp)` records in both forms (wrapped once more when nested);
- the bytes of an item are the same in both forms.
"""

from __future__ import annotations

import json
import math
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from .errors import QmInvalidSchemaError, QmTypeError, QmValueError
from .limits import MAX_ITEM_BYTES

__all__ = [
    "StreamLayout",
    "element_dtype",
    "parse_simple_dtype",
    "decode_simple_dtype",
    "final_shape",
    "item_shape",
    "TIMESTAMP_DTYPE",
]

TIMESTAMP_DTYPE = np.dtype("<i8")
_ALLOWED_KINDS = "biufc"


def element_dtype(dtype: Any) -> np.dtype:
    """Normalise a numpy type string (or dtype) of one stream element; bool becomes `|b1`."""
    try:
        dt: np.dtype[Any] = np.dtype(dtype)
    except (TypeError, ValueError, SyntaxError) as exc:  # numpy parses "a, b" strings with ast
        raise QmInvalidSchemaError(f"invalid element dtype {dtype!r}: {exc}") from None
    if dt.fields is not None or dt.subdtype is not None or dt.kind not in _ALLOWED_KINDS:
        raise QmInvalidSchemaError(
            f"invalid element dtype {dtype!r}: a stream element must be a plain bool, integer, "
            f"float or complex type, got {dt}"
        )
    return dt


@dataclass(frozen=True, slots=True)
class StreamLayout:
    """How one item of a stream is laid out: element dtype, buffer shape, timestamps."""

    dtype: np.dtype
    shape: tuple[int, ...] = ()
    timestamps: bool = False

    @classmethod
    def create(cls, dtype: Any, shape: Any = (), timestamps: bool = False) -> StreamLayout:
        """Validate user input and build a layout (raises `QmInvalidSchemaError`)."""
        dt = element_dtype(dtype)
        if isinstance(shape, (int, np.integer)):
            shape = (int(shape),)
        try:
            if isinstance(shape, (str, bytes)):
                raise TypeError
            dims = tuple(operator.index(d) for d in shape)
        except TypeError:
            raise QmInvalidSchemaError(f"invalid item shape {shape!r}: expected a tuple of ints") from None
        if any(d < 1 for d in dims):
            raise QmInvalidSchemaError(f"invalid item shape {dims}: every dimension must be >= 1")
        layout = cls(dt, dims, bool(timestamps))
        if layout.itemsize > MAX_ITEM_BYTES:
            raise QmInvalidSchemaError(
                f"item of {layout.itemsize} bytes is larger than the limit of {MAX_ITEM_BYTES}"
            )
        return layout

    @property
    def item_dtype(self) -> np.dtype:
        """numpy dtype of one whole item (flat form, timestamps as a record)."""
        if self.timestamps:
            value = ("value", self.dtype, self.shape) if self.shape else ("value", self.dtype)
            return np.dtype([value, ("timestamp", TIMESTAMP_DTYPE)])
        if self.shape:
            return np.dtype((self.dtype, self.shape))
        return self.dtype

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize * math.prod(self.shape) + (8 if self.timestamps else 0)

    def pack(self, items: Any, stream: str = "?") -> np.ndarray:
        """Validate producer items and return them as a C-contiguous array of whole items.

        Accepts an array of shape `(n,) + shape` or one item of `shape`; timestamped streams take
        a record array with fields `value` and `timestamp`. Values are cast only where no
        information is lost (ints into a float stream, never floats or NaN into ints).
        """
        if self.timestamps:
            arr = np.asarray(items)
            if arr.dtype.names is None or set(arr.dtype.names) != {"value", "timestamp"}:
                raise QmTypeError(
                    f"stream {stream!r} has timestamps: append a record array with fields "
                    f"'value' and 'timestamp', got dtype {arr.dtype}")
            arr = arr.reshape(1) if arr.ndim == 0 else arr
            if arr.ndim != 1 or arr["value"].shape[1:] != self.shape:
                raise QmValueError(
                    f"stream {stream!r}: timestamped items must be a 1-D record array whose "
                    f"'value' field has item shape {self.shape}")
            out = np.empty(arr.shape, dtype=self.item_dtype)
            out["value"] = _cast(np.asarray(arr["value"]), self.dtype, stream)
            out["timestamp"] = _cast(np.asarray(arr["timestamp"]), TIMESTAMP_DTYPE, stream)
            return out
        arr = np.asarray(items)
        if arr.dtype.names is not None or arr.dtype.kind not in _ALLOWED_KINDS:
            raise QmTypeError(f"stream {stream!r} takes {self.dtype} items, got dtype {arr.dtype}")
        if arr.shape == self.shape:
            arr = arr.reshape((1, *self.shape))
        elif arr.ndim == 0 or arr.shape[1:] != self.shape:
            raise QmValueError(
                f"stream {stream!r}: items must be one item of shape {self.shape} or an array of "
                f"shape (n, *{self.shape}), got shape {arr.shape}")
        return np.ascontiguousarray(_cast(arr, self.dtype, stream))

    def _descr(self, flat: bool) -> Any:
        elem = self.dtype.str
        if self.timestamps:
            value = ["value", elem, list(self.shape)] if self.shape else ["value", elem]
            record = [value, ["timestamp", TIMESTAMP_DTYPE.str]]
            return record if flat else [["value", record]]
        if flat:
            return elem
        return [["value", elem, list(self.shape)]] if self.shape else [["value", elem]]

    def simple_dtype(self, flat: bool) -> str:
        """The `simpleDType` JSON text for the nested (flat=False) or flat form."""
        return json.dumps(self._descr(flat))

    def header_shape(self, flat: bool) -> list[int]:
        """The header `shape`: `[1]` when nested, timestamped or scalar; else the buffer dims."""
        if flat and self.shape and not self.timestamps:
            return list(self.shape)
        return [1]


def _check_cast(src: np.dtype, dst: np.dtype, stream: str) -> None:
    if src == dst:
        return
    if dst.kind == "b" and src.kind != "b":
        raise QmTypeError(f"stream {stream!r} holds bool items, got {src}")
    integers = src.kind in "iu" and dst.kind in "iu"  # signedness: checked per value in _cast
    if not integers and not np.can_cast(src, dst, casting="same_kind"):
        raise QmTypeError(
            f"stream {stream!r} holds {dst} items; {src} values cannot be stored without losing "
            f"information (e.g. floats or NaN in an integer stream)")


def _cast(values: np.ndarray, dst: np.dtype, stream: str) -> np.ndarray:
    """Cast checked per value: integers must fit, finite floats must stay finite."""
    _check_cast(values.dtype, dst, stream)
    if values.dtype == dst:
        return values
    with np.errstate(over="ignore", invalid="ignore"):
        out = values.astype(dst)
    if dst.kind in "iu" and values.size and not np.array_equal(out, values):
        raise QmValueError(f"stream {stream!r}: values out of the range of {dst}")
    if dst.kind in "fc" and values.dtype.kind in "fc" and np.any(np.isinf(out) & ~np.isinf(values)):
        raise QmValueError(f"stream {stream!r}: values too large for {dst}")
    return out


def _tuple_hook(obj: dict[str, Any]) -> Any:
    if "__tuple__" in obj:
        return tuple(obj.get("items", ()))
    return obj


def _patch_bool8(descr: Any) -> Any:
    if descr == "bool8":
        return "|b1"
    if isinstance(descr, list):
        return [_patch_bool8(d) for d in descr]
    return descr


def decode_simple_dtype(text: str) -> Any:
    """Parse the JSON of a `simpleDType` (objects with `__tuple__` become tuples)."""
    try:
        return json.loads(text, object_hook=_tuple_hook)
    except (TypeError, ValueError) as exc:
        raise QmInvalidSchemaError(f"simpleDType {text!r} is not valid JSON: {exc}") from None


def parse_simple_dtype(text: str) -> np.dtype:
    """Turn a server's `simpleDType` into a numpy dtype, as an npy `descr` (plus `bool8`)."""
    descr = _patch_bool8(decode_simple_dtype(text))
    try:
        dt = npy_format.descr_to_dtype(descr)
    except Exception as exc:  # numpy raises TypeError, ValueError, KeyError... on garbage
        raise QmInvalidSchemaError(f"simpleDType {text!r} is not a numpy dtype: {exc}") from None
    if dt.hasobject:
        raise QmInvalidSchemaError(f"simpleDType {text!r} describes Python objects")
    if dt.subdtype is not None:
        raise QmInvalidSchemaError(f"simpleDType {text!r} is a bare sub-array type")
    return dt


def item_shape(header_shape: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """Per-item shape from a flat header shape: `[1]` means a scalar (or record) item."""
    return () if tuple(header_shape) == (1,) else tuple(header_shape)


def final_shape(count: int, shape: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """Array shape for `count` items with header `shape` (QM's rule: one item drops the axis)."""
    shape = tuple(shape)
    if count == 1:
        return shape
    if shape == (1,):
        return (count,)
    return (count, *shape)
