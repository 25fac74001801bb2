"""Hypothesis strategies for stream layouts, items and fetch ranges."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..dtypes import StreamLayout
from .jobs import StreamKind, make_items

__all__ = ["stream_kinds", "layouts", "items_for", "index_expressions"]

ELEMENT_DTYPES = ("<f8", "<f4", "<i8", "<i4", ">i4", "<u2", "|b1", "<c16")


@st.composite
def stream_kinds(draw: st.DrawFn, single: bool | None = None) -> StreamKind:
    """A random stream declaration: element dtype, buffer shape (0-2 dims), timestamps, single."""
    dtype = draw(st.sampled_from(ELEMENT_DTYPES))
    shape = tuple(draw(st.lists(st.integers(1, 5), max_size=2)))
    timestamps = draw(st.booleans())
    is_single = draw(st.booleans()) if single is None else single
    return StreamKind(dtype, shape, is_single, timestamps)


def layouts() -> st.SearchStrategy[StreamLayout]:
    return stream_kinds().map(lambda k: k.layout)


@st.composite
def items_for(draw: st.DrawFn, kind: StreamKind, max_count: int = 50) -> np.ndarray:
    count = draw(st.integers(0, max_count))
    return make_items(kind, count, seed=draw(st.integers(0, 2**16)))


@st.composite
def index_expressions(draw: st.DrawFn, count: int) -> int | slice:
    """An int or slice valid for `count` items, numpy semantics (negative, steps)."""
    if count and draw(st.booleans()):
        return draw(st.integers(-count, count - 1))
    bound = st.one_of(st.none(), st.integers(-count - 3, count + 3))
    step = draw(st.one_of(st.none(), st.integers(1, 4)))
    return slice(draw(bound), draw(bound), step)
