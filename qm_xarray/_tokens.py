"""The dask identity of the last snapshot opened from a Job or StreamsManager, per thread.

xarray tokenizes the object given to `open_dataset` after the backend has taken its snapshot; the
backend leaves the snapshot's token here and the object's `__dask_tokenize__` (or, for qm-qua's
objects, the normalizer the lazy layer registers with dask) reads it. Kept per thread (two
threads opening one Job never take each other's token) and outside the object (so it stays
picklable), by object identity and weak reference (so it never keeps the object alive, and works
for objects that cannot be hashed, like qm-qua's StreamsManager).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

_local = threading.local()


def _tokens() -> dict[int, tuple[weakref.ref[Any], object]]:
    tokens: dict[int, tuple[weakref.ref[Any], object]] | None = getattr(_local, "tokens", None)
    if tokens is None:
        tokens = _local.tokens = {}
    return tokens


def remember(obj: Any, token: object) -> None:
    tokens = _tokens()
    key = id(obj)
    try:
        ref = weakref.ref(obj, lambda _: tokens.pop(key, None))
    except TypeError:  # not weakly referenceable: tokenized by pickling, as usual
        return
    tokens[key] = (ref, token)


def token_of(obj: Any) -> object | None:
    entry = _tokens().get(id(obj))
    if entry is None or entry[0]() is not obj:
        return None
    return entry[1]
