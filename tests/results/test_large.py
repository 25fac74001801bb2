"""Streams larger than one data message (the server sends at most 1 MiB per message / chunk group).

The client must concatenate every message of the reply (v1 messages, v2 chunks + summaries, v2
multi-stream replies interleaving several streams) and build exactly the written items.
"""

from __future__ import annotations

import pytest

from qm_xarray.testing import StreamKind, make_job

KINDS = {
    "big": StreamKind("<f8"),                          # 8 B items
    "bigc": StreamKind("<i8", (3,)),                   # 24 B items: 1 MiB is not a whole number
    "bigts": StreamKind("<f8", timestamps=True),       # 16 B records
    "bigimg": StreamKind("<f8", (2, 5)),               # 80 B items
    "small": StreamKind("<i8"),                        # interleaved with the big ones (multi)
}
COUNTS = {"big": 200_000, "bigc": 60_000, "bigts": 100_000, "bigimg": 20_000, "small": 5}


@pytest.fixture(scope="module")
def large_job(store):
    return make_job(store, counts=COUNTS, kinds=KINDS, seed=11)


@pytest.mark.parametrize("flat", [False, True], ids=["nested", "flat"])
def test_large_fetch_all_and_slice(impl, large_job, oracle, flat):
    job, written = large_job
    sm = impl.manager(job.id)
    for name, kind in KINDS.items():
        h = sm.get(name)
        assert h.count_so_far() == COUNTS[name]
        oracle.same(h.fetch_all(flat_struct=flat), oracle.expected(kind, written[name], flat),
                    f"{name} fetch_all")
        n = COUNTS[name]
        sl = slice(n // 7, n - n // 5)
        oracle.same(h.fetch(sl, flat_struct=flat, timeout=30),
                    oracle.expected(kind, written[name], flat, sl.start, sl.stop), f"{name} {sl}")


def test_large_fetch_results(impl, large_job, oracle):
    job, written = large_job
    res = impl.manager(job.id).fetch_results(timeout=30)
    assert list(res) == list(KINDS)
    for name, kind in KINDS.items():
        oracle.same(res[name], oracle.expected(kind, written[name], False), name)
    part = impl.manager(job.id).fetch_results(timeout=30, stream_names={"big": slice(10, 150_000),
                                                                         "small": slice(1, 4)})
    oracle.same(part["big"], oracle.expected(KINDS["big"], written["big"], False, 10, 150_000), "big")
    oracle.same(part["small"], oracle.expected(KINDS["small"], written["small"], False, 1, 4), "small")
