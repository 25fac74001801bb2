"""Load: 8 readers x 25 fetches while 2 producers append, against a durable server in a subprocess.

Prints items/s, fetch latency p50/p99 and the server's peak RSS (`pytest -s` shows them) and writes
them to `load-figures.json` in the test's tmp dir. Asserts consistency and a generous memory bound,
never timings. The same measurement runs alone with `python -m qm_xarray.testing.load`.
"""

from __future__ import annotations

import json

import pytest

from qm_xarray.testing.load import format_figures, run_load

READERS, FETCHES, PRODUCERS = 8, 25, 2
PEAK_RSS_BOUND_MIB = 1024


@pytest.mark.slow
def test_readers_and_producers_under_load(tmp_path, record_property):
    figures = run_load(READERS, FETCHES, PRODUCERS, store_dir=tmp_path / "store", timeout=90.0)
    report = tmp_path / "load-figures.json"
    report.write_text(json.dumps(figures.as_dict(), indent=1))
    print(f"\n{format_figures(figures)}\n(figures in {report})")
    for key in ("items_per_second", "latency_p50_ms", "latency_p99_ms", "server_peak_rss_mib"):
        record_property(key, round(getattr(figures, key), 2))

    assert not figures.errors, figures.errors
    assert figures.inconsistent == 0  # every fetch was a prefix of what was written, whole items
    assert figures.fetches == READERS * FETCHES
    assert figures.items_appended > 0 and figures.items_fetched > 0
    assert figures.server_peak_rss_mib < PEAK_RSS_BOUND_MIB
