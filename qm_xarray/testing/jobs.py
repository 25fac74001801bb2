"""Fake jobs: every stream kind of the protocol, with known contents, for tests (ours and users')."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..server.store import JobWriter, ResultStore
from ..streams import DEFAULT_DTYPE, StreamSpec

__all__ = ["StreamKind", "STREAM_KINDS", "make_items", "make_job"]


@dataclass(frozen=True, slots=True, init=False, repr=False)
class StreamKind(StreamSpec):
    """A stream declaration without its name: `StreamKind(dtype, shape, single, timestamps)`.

    `kind.declare(job, name, expected_count)` declares a stream of this kind on a job writer.
    """

    def __init__(self, dtype: str = DEFAULT_DTYPE, shape: tuple[int, ...] = (), single: bool = False,
                 timestamps: bool = False) -> None:
        StreamSpec.__init__(self, "", dtype, shape, single, timestamps, 0)

    def __repr__(self) -> str:
        return (f"StreamKind(dtype={self.dtype!r}, shape={self.shape!r}, single={self.single!r}, "
                f"timestamps={self.timestamps!r})")


# One of each kind in wire-protocol.md section d (plus a 2-D buffer and a timestamped buffer).
STREAM_KINDS: dict[str, StreamKind] = {
    "I": StreamKind("<f8"),                                  # save_all, fixed
    "c": StreamKind("<i8", (3,)),                            # buffer(3).save_all, int
    "ts": StreamKind("<f8", timestamps=True),                # with_timestamps().save_all
    "avg": StreamKind("<f8", single=True),                   # average().save
    "ab": StreamKind("<f8", (4,), single=True),              # buffer(4).average().save
    "flags": StreamKind("|b1"),                              # bool save_all
    "t1": StreamKind("<i8", single=True, timestamps=True),   # with_timestamps().save
    "img": StreamKind("<f8", (2, 5)),                        # 2-D buffer save_all
    "adc": StreamKind("<i8", (4,), timestamps=True),         # timestamped int buffer
    "empty": StreamKind("<f8"),                              # save_all with no data yet
}


def make_items(kind: StreamSpec, count: int, seed: int = 0) -> np.ndarray:
    """`count` deterministic items of this kind (any declaration), in the stream's item layout."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(kind.dtype)
    shape = (count, *kind.shape)
    if dtype.kind == "b":
        values = rng.random(shape) < 0.5
    elif dtype.kind in "iu":
        values = rng.integers(-1000 if dtype.kind == "i" else 0, 1000, shape).astype(dtype)
    else:
        values = rng.normal(size=shape).astype(dtype)
    if not kind.timestamps:
        return values
    record = np.empty(count, dtype=[("value", dtype, kind.shape), ("timestamp", "<i8")]
                      if kind.shape else [("value", dtype), ("timestamp", "<i8")])
    record["value"] = values
    record["timestamp"] = np.arange(count, dtype="<i8") * 4 + 1000
    return record


def make_job(store: ResultStore, counts: dict[str, int] | int = 6,
             kinds: dict[str, StreamKind] | None = None, *, job_id: str | None = None,
             state: str = "done", seed: int = 0
             ) -> tuple[JobWriter, dict[str, np.ndarray]]:
    """Create a job with one stream per kind and append items; returns (writer, written items).

    `counts` is items per stream (or a dict by name; "empty" gets 0 by default); single streams
    get every item appended and keep the last one. `state` is "running", "done", "closed",
    "dataloss" (done, with data loss) or "error" (an execution error, then closed).
    """
    kinds = STREAM_KINDS if kinds is None else kinds
    job = store.create_job(job_id)
    written = {}
    for i, (name, kind) in enumerate(kinds.items()):
        n = counts.get(name, 6) if isinstance(counts, dict) else (0 if name == "empty" else counts)
        stream = kind.declare(job, name, expected_count=1 if kind.single else n)
        items = make_items(kind, n, seed + i)
        if n:
            stream.append(items)
        written[name] = items[-1:] if kind.single else items
    if state == "done":
        job.finish()
    elif state == "closed":
        job.cancel()
    elif state == "dataloss":
        job.mark_dataloss()
        job.finish()
    elif state == "error":
        job.add_error("simulated execution error", code=7)
        job.cancel()
    elif state != "running":
        raise ValueError(f"unknown state {state!r}")
    return job, written
