"""Assemble streamed item bytes into one preallocated buffer: each byte is copied once."""

from __future__ import annotations

import numpy as np

from ..dtypes import final_shape
from ..errors import DataFetchingError
from .models import Header

__all__ = ["Assembler", "to_array"]


class Assembler:
    """Receives data pieces in order; sized from the header's count, grown only if more arrives."""

    __slots__ = ("itemsize", "buf", "nbytes", "count", "what", "attempts")

    def __init__(self, itemsize: int, expected_items: int, what: str):
        self.itemsize = itemsize
        self.buf = np.empty(max(expected_items, 0) * itemsize, dtype=np.uint8)
        self.nbytes = 0
        self.count = 0
        self.what = what
        self.attempts = 0

    def add(self, data: memoryview | bytes) -> None:
        end = self.nbytes + len(data)
        if end > self.buf.size:  # the stream grew after its header was read
            grown = np.empty(max(end, 2 * self.buf.size), dtype=np.uint8)
            grown[:self.nbytes] = self.buf[:self.nbytes]
            self.buf = grown
        self.buf[self.nbytes:end] = np.frombuffer(data, dtype=np.uint8)
        self.nbytes = end

    def resume(self, limit: int) -> int | None:
        """Before each attempt of a fetch of `limit` items: how many items to ask for now.

        Keeps the whole items counted so far and drops the bytes of an item or group that a
        broken stream left unfinished; the next bytes land right after them, in the same buffer.
        The first attempt always asks (even for 0 items); a retry returns None when nothing is left.
        """
        first = self.attempts == 0
        self.attempts += 1
        self.nbytes = min(self.nbytes, self.count * self.itemsize)
        left = limit - self.count
        return left if first or left > 0 else None

    def result(self) -> tuple[np.ndarray, int]:
        """(bytes as a uint8 array, item count); raises `DataFetchingError` if they disagree."""
        if self.nbytes != self.count * self.itemsize:
            raise DataFetchingError(
                f"{self.what}: received {self.nbytes} bytes for {self.count} items of "
                f"{self.itemsize} bytes")
        return self.buf[:self.nbytes], self.count


def to_array(buf: np.ndarray, count: int, header: Header) -> np.ndarray:
    """View the bytes as the header's dtype in the reference's final shape (no copy)."""
    return buf.view(header.dtype).reshape(final_shape(count, header.shape))
