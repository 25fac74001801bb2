"""`qm-xarray demo --relay`: the relay tour, run as a real subprocess (bounded by a timeout). Its
waits are for what it shows, each with a deadline, so what it prints does not depend on the speed
of the machine; the checks below look at what it printed and at the relay's store it left."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import qm_xarray as qx

COMMAND = [sys.executable, "-m", "qm_xarray", "demo", "--relay"]
TIMEOUT = 60


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=TIMEOUT)


def test_the_relay_tour_ends_with_a_copy_equal_to_the_upstream_job(tmp_path: Path) -> None:
    result = run("--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    steps = ["[1] upstream results server listening on 127.0.0.1:", "[2] simulating 'rabi'",
             f"[3] relay: qx.Relay(qx.connect('127.0.0.1:", f"keeps a durable copy in {tmp_path / 'relay-store'}",
             "capture job-1: capturing", "[4] readers of the relay while the job runs",
             "qm_capture capturing", "[5] relay.stop(), then a new qx.Relay", "capture job-1: stopped",
             "stopped with 200 items of save_all streams in the copy", "capture job-1: capturing",
             "[6] the rest of job job-1", "capture job-1: complete", "the copy on the relay: done; capture complete",
             "[7] readers of the relay", "[8] check: the relay's copy equals the upstream job: 5 streams",
             "[9] the upstream served one reader, the relay: "]
    start = 0
    for step in steps:  # each after the one before ("capturing" is there twice)
        assert step in out[start:], f"{step!r} missing after position {start}:\n{out}"
        start = out.index(step, start) + len(step)
    # readers of the relay saw the copy grow while the job ran, a quarter of the run at a time
    running = [int(n) for n in re.findall(r"running +\d+/\d+: I_all (\d+)/200, .*; copy: capturing, up to date", out)]
    assert running == [50, 100, 150], out
    assert re.search(r"qm_copy_of 127\.0\.0\.1:\d+/job-1", out)
    assert "160,808 bytes of items the same byte for byte, state done, data loss no" in out
    served = re.search(r"the relay: (\d+) calls, ([\d,]+) bytes of items; the relay's readers made (\d+) "
                       r"calls to the relay and got ([\d,]+) bytes of items", out)
    assert served, out
    assert int(served.group(2).replace(",", "")) >= 160_808  # every item of the copy came from it
    assert int(served.group(4).replace(",", "")) > int(served.group(2).replace(",", ""))
    assert f"relay store: {tmp_path / 'relay-store'}" in out

    # the store the relay left holds the finished copy, and says where it comes from
    with qx.ResultStore(path=tmp_path / "relay-store") as store:
        job = store.job("job-1")
        assert job.state.value == "done" and job.stream("I_all").count == 200
        assert job.origin is not None and job.origin.status == "complete" and job.origin.job_id == "job-1"


def test_data_loss_an_execution_error_and_the_early_end_are_copied(tmp_path: Path) -> None:
    result = run("--out", str(tmp_path), "--experiment", "adc_trace", "--quiet", "--rate", "400",
                 "--param", "n_acquisitions=40", "--dataloss-at", "0.2", "--error-at", "0.5")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "running " not in out  # --quiet: no progress lines
    assert "the copy on the relay: closed (DATA LOSS; error 1: simulated execution error" in out
    assert re.search(r"adc\s+<i2 \+ts\s+\(1000,\)\s+20/40\s+incomplete", out)
    assert "the same byte for byte, state closed, data loss yes, execution errors 1" in out
    assert "StreamProcessingDataLossError, as from the upstream" in out
