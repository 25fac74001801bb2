"""Where a stream's bytes live: in memory, or in append-only files (the durable store).

A storage holds whole items only. `write` appends items past the published end and returns once
they are stored (in memory, or handed to the OS — and fsynced when `sync` is on); the stream
publishes the new count afterwards, so readers never see a partial item. `read` yields the bytes
of an item range lazily, in pieces of at most `PIECE_BYTES`, so a huge fetch is streamed and
never materialized per request.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from ..files import write_atomic
from ..limits import MESSAGE_BYTES

__all__ = ["Items", "MemoryItems", "FileItems", "MemoryValue", "FileValue", "SEGMENT_BYTES",
           "PIECE_BYTES"]

SEGMENT_BYTES = 4 * 1024 * 1024
PIECE_BYTES = MESSAGE_BYTES  # one message's worth: what a stalled reader pins

Publish = Callable[[int], None]  # called with the new count once items up to it are stored


class Items(Protocol):
    """Where a `save_all` stream's items live: `MemoryItems` or `FileItems`."""

    count: int

    def write(self, data: memoryview, n: int, publish: Publish) -> None: ...

    def read(self, start: int, stop: int) -> Iterator[memoryview]: ...

    def close(self) -> None: ...


class MemoryItems:
    """Items in fixed-size numpy segments; published bytes are never moved or changed."""

    def __init__(self, itemsize: int):
        self.itemsize = itemsize
        self.seg_items = max(1, SEGMENT_BYTES // itemsize)
        self.segments: list[np.ndarray[tuple[int], np.dtype[np.uint8]]] = []
        self.count = 0

    def write(self, data: memoryview, n: int, publish: Publish) -> None:
        size, seg_items = self.itemsize, self.seg_items
        pos, done = self.count, 0
        while done < n:
            seg, offset = divmod(pos, seg_items)
            if seg == len(self.segments):
                self.segments.append(np.empty(seg_items * size, dtype=np.uint8))
            take = min(n - done, seg_items - offset)
            self.segments[seg][offset * size:(offset + take) * size] = np.frombuffer(
                data[done * size:(done + take) * size], dtype=np.uint8)
            pos += take
            done += take
            self.count = pos
            publish(pos)  # segment by segment: each published item is whole

    def read(self, start: int, stop: int) -> Iterator[memoryview]:
        seg_items, size = self.seg_items, self.itemsize
        first = start
        while first < stop:
            seg, offset = divmod(first, seg_items)
            last = min(stop, (seg + 1) * seg_items)
            yield self.segments[seg].data[offset * size:(last - seg * seg_items) * size]
            first = last

    def close(self) -> None:
        """Nothing to release: the segments go with the stream."""


class FileItems:
    """Items appended to one file; a torn tail (a crash mid-write) is cut off when reopened."""

    def __init__(self, path: Path, itemsize: int, sync: bool = False):
        self.path, self.itemsize, self.sync = path, itemsize, sync
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        size = os.fstat(self.fd).st_size
        whole = size - size % itemsize
        if whole != size:
            os.ftruncate(self.fd, whole)
        self.count = whole // itemsize

    def write(self, data: memoryview, n: int, publish: Publish) -> None:
        """Write at the end of the published items; a failed write (disk full...) is undone."""
        if self.fd < 0:
            raise OSError(f"{self.path}: the store is closed")
        end = self.count * self.itemsize
        view, offset = data[:n * self.itemsize], end
        try:
            while view:
                written = os.pwrite(self.fd, view, offset)
                view, offset = view[written:], offset + written
            if self.sync:
                os.fsync(self.fd)
        except BaseException:
            os.ftruncate(self.fd, end)  # nothing of a failed append stays in the file
            raise
        self.count += n
        publish(self.count)

    def read(self, start: int, stop: int) -> Iterator[memoryview]:
        size = self.itemsize
        step = max(1, PIECE_BYTES // size) * size
        offset, end = start * size, stop * size
        while offset < end:
            chunk = os.pread(self.fd, min(step, end - offset), offset)
            if not chunk:
                raise OSError(f"{self.path}: file shorter than its published count")
            yield memoryview(chunk)
            offset += len(chunk)

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        os.close(fd)


class MemoryValue:
    """The one running value of a `save` stream; replaced atomically, never mutated."""

    def __init__(self) -> None:
        self.value: bytes | None = None

    def set(self, value: bytes) -> None:
        self.value = value


class FileValue(MemoryValue):
    """A `save` stream's value, also kept in a file replaced atomically."""

    def __init__(self, path: Path, itemsize: int, sync: bool = False):
        super().__init__()
        self.path, self.sync = path, sync
        if path.exists():
            data = path.read_bytes()
            self.value = data if len(data) == itemsize else None

    def set(self, value: bytes) -> None:
        write_atomic(self.path, value, self.sync)
        self.value = value
