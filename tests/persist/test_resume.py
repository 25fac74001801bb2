"""Kill-and-resume: `qm-xarray export --follow` SIGKILLed at random moments while the job grows.

The server runs in this process; a thread appends a few MiB in many appends. The export runs as a
subprocess, is killed at seeded random moments and rerun; the last run follows the job to its end.
The store must then equal an uninterrupted export of the same job (values and every attribute but
the snapshot time) and the live data.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import qm_xarray as qx
from qm_xarray.persist import ExportStore, export_zarr

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

TRACE = 1024            # samples per item of the timestamped buffer stream (8 KiB)
APPENDS = 400           # appends of ITEMS items each: about 10 MiB over about 12 s
ITEMS = 3
APPEND_EVERY = 0.03
KILLS = 5


def open_store(path: Path) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return xr.open_zarr(str(path))


def committed(path: Path) -> dict[str, int] | None:
    """The commit marker of the store (None before the template is in place)."""
    try:
        return ExportStore(path).committed() if ExportStore(path).exists() else None
    except (OSError, ValueError, KeyError):  # caught between two writes of a file: look again
        return committed(path)


class Allowance:
    """How many appends the test lets the producer make so far: the job grows with the kill
    cycles, not with the wall clock, so every kill finds it running whatever the machine's speed."""

    def __init__(self) -> None:
        self.allowed = 0
        self._changed = threading.Condition()

    def allow(self, appends: int) -> None:
        with self._changed:
            self.allowed = max(self.allowed, appends)
            self._changed.notify_all()

    def wait_for(self, k: int, stop: threading.Event) -> bool:
        """True once append `k` is allowed; False if stopped first."""
        with self._changed:
            while self.allowed <= k and not stop.is_set():
                self._changed.wait(0.1)
            return not stop.is_set()


def grow(writer: qx.JobWriter, stop: threading.Event, allowance: Allowance) -> None:
    """Append as allowed until done (or stopped), then finish the job."""
    rng = np.random.default_rng(7)
    trace = writer.stream("trace")
    shots, state, average = writer.stream("I"), writer.stream("state"), writer.stream("avg")
    total = np.zeros(TRACE)
    for k in range(APPENDS):
        if not allowance.wait_for(k, stop):
            break
        records = np.empty(ITEMS, dtype=[("value", "<f8", (TRACE,)), ("timestamp", "<i8")])
        records["value"] = rng.normal(size=(ITEMS, TRACE))
        records["timestamp"] = 1000 + (k * ITEMS + np.arange(ITEMS)) * 4
        trace.append(records)
        shots.append(rng.normal(size=ITEMS * 5))
        state.append(rng.random(ITEMS * 5) < 0.5)
        total += records["value"].sum(axis=0)
        average.append(total[None] / ((k + 1) * ITEMS))
        time.sleep(APPEND_EVERY)
    writer.finish()


def test_kill_and_resume_equals_an_uninterrupted_export(store: qx.ResultStore, server: qx.ResultsServer,
                                                        tmp_path: Path) -> None:
    job_id = f"resume-{uuid.uuid4().hex[:8]}"
    writer = store.create_job(job_id)
    writer.add_stream("trace", "<f8", (TRACE,), timestamps=True, expected_count=APPENDS * ITEMS)
    writer.add_stream("I", "<f8", expected_count=APPENDS * ITEMS * 5)
    writer.add_stream("state", "|b1", expected_count=APPENDS * ITEMS * 5)
    writer.add_stream("avg", "<f8", (TRACE,), single=True, expected_count=1)
    stop = threading.Event()
    allowance = Allowance()
    appender = threading.Thread(target=grow, args=(writer, stop, allowance), daemon=True)
    appender.start()

    path = tmp_path / "run.zarr"
    command = [sys.executable, "-m", "qm_xarray", "export", job_id, str(path), "--follow",
               "--address", server.address, "--every", "0.05", "--quiet"]
    rng = random.Random(20261125)
    scratch = tmp_path / ".run.zarr.qm-partial"
    kills: list[dict[str, int] | None] = []  # the commit marker after each kill
    try:
        for cycle in range(KILLS):
            allowance.allow((cycle + 1) * APPENDS // (KILLS + 1))  # more to export in each run
            before = committed(path)
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            # a random moment once this run writes: the first run while it makes its template,
            # later ones after their first commit
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline and (
                    not scratch.exists() and before is None if cycle == 0 else committed(path) == before):
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.05) if cycle == 0 else rng.uniform(0.0, 0.5))
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=20)
            if proc.returncode != -signal.SIGKILL:  # it ended first: the job is over
                break
            kills.append(committed(path))
        allowance.allow(APPENDS)
        final = subprocess.run(command, capture_output=True, text=True, timeout=60)
    finally:
        stop.set()
        appender.join(30)
    assert final.returncode == 0, final.stderr
    assert "complete" in final.stdout and final.stderr == ""
    # kills hit exports that had committed data and had more to write
    total = APPENDS * ITEMS
    partial = [c for c in kills if c and 0 < c["trace_item"] + c["I_item"] < total * 6]
    assert len(partial) >= 2, kills

    job = qx.connect(server.address).job(job_id)
    reference = export_zarr(job, tmp_path / "reference.zarr")
    assert reference.complete and reference.counts["trace_item"] == total
    resumed, uninterrupted = open_store(path), open_store(tmp_path / "reference.zarr")
    xr.testing.assert_equal(resumed, uninterrupted)
    assert resumed.attrs.pop("qm_snapshot_time") and uninterrupted.attrs.pop("qm_snapshot_time")
    assert resumed.attrs == uninterrupted.attrs
    for name in uninterrupted.variables:
        assert resumed[name].attrs == uninterrupted[name].attrs, name
        assert resumed[name].dtype == uninterrupted[name].dtype, name
    xr.testing.assert_equal(resumed, xr.open_dataset(job, engine="qm"))
    assert resumed.attrs["qm_job_state"] == "done" and resumed.attrs["qm_export_complete"] is True
    assert not (tmp_path / ".run.zarr.qm-partial").exists()
