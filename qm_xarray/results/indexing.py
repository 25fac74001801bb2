"""numpy index semantics for stream fetches: ints and slices against `count_so_far`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import QmIndexError, QmTypeError, QmValueError

__all__ = ["Selection", "select"]


@dataclass(frozen=True, slots=True)
class Selection:
    """The covering item range `[start, stop)` to fetch, and the step to apply locally."""

    start: int
    stop: int
    step: int = 1
    reverse: bool = False

    @property
    def count(self) -> int:
        return max(0, self.stop - self.start)


def select(item: object, count: int, what: str) -> Selection:
    """Normalise an int or slice for a stream of `count` items, as numpy indexes an array.

    Negative indices count from the end; slices clip; steps (also negative) are applied after
    fetching the covering range once. Out-of-range ints raise IndexError, other types TypeError.
    """
    if isinstance(item, (bool, np.bool_)) or not isinstance(item, (int, np.integer, slice)):
        raise QmTypeError(f"{what}: an index must be an int or a slice, got {type(item).__name__} {item!r}")
    if isinstance(item, slice):
        try:
            start, stop, step = item.indices(count)
        except TypeError as exc:
            raise QmTypeError(f"{what}: invalid slice {item!r}: {exc}") from None
        except ValueError as exc:  # a zero step, as numpy
            raise QmValueError(f"{what}: invalid slice {item!r}: {exc}") from None
        positions = range(start, stop, step)
        if not positions:
            return Selection(0, 0)
        lo, hi = min(positions[0], positions[-1]), max(positions[0], positions[-1]) + 1
        return Selection(lo, hi, abs(step), step < 0)
    index = int(item)
    position = index + count if index < 0 else index
    if not 0 <= position < count:
        raise QmIndexError(f"{what}: index {index} is out of range for {count} items")
    return Selection(position, position + 1)
