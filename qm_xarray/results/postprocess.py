"""Turn fetched item bytes into what the results API returns (the reference's rules).

- `save_all` streams return the array, except that a nested `with_timestamps` record is unwrapped
  to its `(value, timestamp)` record, and a single such row to an `np.void`;
- `save` streams return None when empty, else the one value: a scalar, a buffer or a record.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..client.assembly import to_array
from ..client.models import Header
from ..dtypes import final_shape, item_shape
from .indexing import Selection

__all__ = ["build_array", "postprocess_multiple", "postprocess_single"]

log = logging.getLogger("qm_xarray.results")


def build_array(buf: np.ndarray, count: int, header: Header, sel: Selection) -> np.ndarray:
    """The raw array for a selection: the final-shape rule applied to the selected items."""
    if sel.step == 1 and not sel.reverse:
        return to_array(buf, count, header)
    items = buf.view(header.dtype).reshape((count, *item_shape(header.shape)))[::sel.step]
    if sel.reverse:
        items = items[::-1]
    picked = np.ascontiguousarray(items)
    return picked.reshape(final_shape(len(picked), header.shape))


def _is_timestamped(dtype: np.dtype) -> bool:
    return (dtype.names == ("value",) and dtype["value"].names is not None
            and set(dtype["value"].names) == {"value", "timestamp"})


def postprocess_multiple(arr: np.ndarray) -> np.ndarray | np.void:
    """`save_all`: unwrap nested timestamp records; one such row becomes an `np.void`."""
    if _is_timestamped(arr.dtype):
        arr = arr["value"]
        if arr.ndim and len(arr) == 1:
            row: np.void = arr[0]
            return row
    return arr


def postprocess_single(arr: np.ndarray, flat_struct: bool, name: str) -> object:
    """`save`: None when empty, else the value (peeled like the reference)."""
    if arr.size == 0:
        log.warning("stream %r has no results yet", name)
        return None
    value: Any = arr if flat_struct else arr[0] if arr.ndim else arr[()]
    if isinstance(value, np.generic) and not isinstance(value, np.void):
        return value  # a plain dtype from a foreign server: already the scalar
    return value[0] if len(value) == 1 else value
