"""The dask identity of the last snapshot opened from a Job or StreamsManager, per thread.

xarray tokenizes the object given to `open_dataset` after the backend has taken its snapshot; the
backend leaves the snapshot's token here and the object's `__dask_tokenize__` reads it. Kept per
thread (two threads opening one Job never take each other's token) and outside the object (so it
stays picklable), by weak reference (so it never keeps the object alive).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

_local = threading.local()


def remember(obj: Any, token: object) -> None:
    tokens = getattr(_local, "tokens", None)
    if tokens is None:
        tokens = _local.tokens = weakref.WeakKeyDictionary()
    try:
        tokens[obj] = token
    except TypeError:  # not weakly referenceable: tokenized by pickling, as usual
        pass


def token_of(obj: Any) -> object | None:
    tokens = getattr(_local, "tokens", None)
    try:
        return None if tokens is None else tokens.get(obj)
    except TypeError:
        return None
