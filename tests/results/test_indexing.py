"""Index semantics, property-based: every fetch equals the oracle applied to `items[index]`.

Both clients are drawn indices from the domain the reference supports (ints and step-1 slices with
non-negative bounds, start within the stream); ours is also drawn from the whole numpy domain
(design.md Rules: negative indices count from count_so_far, any non-zero step, out-of-range ints
raise IndexError). A stepped selection is built as if its items were contiguous (the final-shape
rule applies to the number of items selected).
"""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from qm_xarray.testing import STREAM_KINDS  # noqa: E402

NAMES = ["I", "c", "ts", "flags", "img", "adc", "empty"]
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
N = 7   # items per stream in done_job (0 in "empty")


def _reference_domain(n: int):
    bound = st.integers(0, n + 3)
    return st.one_of(
        st.integers(0, max(n - 1, 0)) if n else st.nothing(),
        st.builds(slice, st.integers(0, n) | st.none(), st.none(), st.sampled_from([None, 1])),
        st.builds(slice, st.integers(0, n) | st.none(), bound, st.sampled_from([None, 1]))
        .filter(lambda s: (s.start or 0) <= s.stop),
    )


def _numpy_domain(n: int):
    bound = st.integers(-n - 4, n + 4) | st.none()
    step = st.sampled_from([None, 1, 2, 3, -1, -2, -5])
    ints = st.integers(-n, n - 1) if n else st.nothing()
    return st.one_of(ints, st.builds(slice, bound, bound, step))


@pytest.mark.parametrize("flat", [False, True], ids=["nested", "flat"])
def test_reference_domain(impl, done_job, oracle, flat):
    job, written = done_job
    sm = impl.manager(job.id)

    @SETTINGS
    @given(name=st.sampled_from(NAMES), data=st.data())
    def check(name, data):
        items = written[name]
        index = data.draw(_reference_domain(len(items)), label="index")
        sel = index if isinstance(index, slice) else slice(index, index + 1)
        oracle.same(sm.get(name).fetch(index, flat_struct=flat),
                    oracle.expected(STREAM_KINDS[name], items, flat, select=sel),
                    f"{name}.fetch({index!r})")

    check()


@pytest.mark.differs("numpy index semantics (design.md Rules)")
@pytest.mark.parametrize("flat", [False, True], ids=["nested", "flat"])
def test_numpy_domain(impl, done_job, oracle, flat):
    if impl.reference:
        pytest.skip("the reference forwards negative bounds raw and rejects steps "
                    "(pinned in test_conformance.py::test_negative_* / test_stepped_slice)")
    job, written = done_job
    sm = impl.manager(job.id)

    @SETTINGS
    @given(name=st.sampled_from(NAMES), data=st.data())
    def check(name, data):
        items = written[name]
        index = data.draw(_numpy_domain(len(items)), label="index")
        if isinstance(index, slice):
            sel = index
        else:
            i = index + len(items) if index < 0 else index
            sel = slice(i, i + 1)
        kind = STREAM_KINDS[name]
        oracle.same(sm.get(name).fetch(index, flat_struct=flat),
                    oracle.expected(kind, items, flat, select=sel), f"{name}.fetch({index!r})")
        oracle.same(sm.get(name).strict_fetch(index, flat_struct=flat),
                    oracle.raw(kind, items[sel], flat), f"{name}.strict_fetch({index!r})")

    check()


@pytest.mark.differs("numpy index semantics: a zero step is a ValueError, as in numpy")
def test_zero_step(impl, done_job):
    handle = impl.manager(done_job[0].id).get("I")
    with pytest.raises(Exception) as info:
        handle.fetch(slice(None, None, 0))
    if impl.ours:
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, impl.errors.QmQuaException)
    else:
        assert type(info.value) is Exception and "step" in str(info.value)
    with pytest.raises(ValueError):
        np.arange(3)[slice(None, None, 0)]
