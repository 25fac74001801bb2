"""Faults against real processes on 127.0.0.1: servers and producers killed with SIGKILL mid-work,
and slow-loris clients. What must hold:

- a fetch in progress when the server dies completes, with identical bytes, once the server is back
  on the same store directory and port (client retries + resume);
- every item a producer saw acknowledged is on the server after the producer or the server is
  killed, and no partial item is ever stored or served; a killed producer's job can be resumed and
  ended by another producer; a durable store reopens after a crash, torn tails cut;
- clients that never read (or never speak) do not stall other clients.
"""

from __future__ import annotations

import importlib.util
import socket
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

import qm_xarray as qx
from qm_xarray.client import JobResultServiceApi
from qm_xarray.client.assembly import Assembler
from qm_xarray.client.connection import ConnectionDetails
from qm_xarray.errors import JobFinishedError
from qm_xarray.testing.load import expected_items
from qm_xarray.wire.pb.qm.grpc.v2 import job_api_pb2

pytestmark = pytest.mark.slow

MiB = 2**20
WIDTH = 1024  # float64 elements per item of the large stream: 8 KiB items
BIG_ITEMS = 5 * 1024  # 40 MiB
PRODUCER_WIDTH = 512  # 4 KiB items
PRODUCER_BATCH = 600  # 2.3 MiB per append: three AppendItems messages, so a kill can split one
ROUNDS = 3  # kills of the durable server
PRODUCER_ROUNDS = 2  # kills of producers


def _items_file(store_dir: Path, job_id: str, stream: str) -> Path:
    return store_dir / "jobs" / job_id / f"{stream}.items"  # durable.py, format version 1


def _fill(address: str, job_id: str, n_items: int, width: int = WIDTH, finish: bool = True) -> None:
    job = qx.RemoteStore(address, timeout=30).create_job(job_id, streams=[{"name": "I", "shape": (width,)}])
    step = max(1, 4 * MiB // (width * 8))
    for lo in range(0, n_items, step):
        job.stream("I").append(expected_items(lo, min(n_items, lo + step), width))
    if finish:
        job.finish()


def _server_items(address: str, job_id: str, width: int) -> np.ndarray:
    handle = qx.connect(address, timeout=30).job(job_id).result_handles.get("I")
    return np.asarray(handle.fetch_all(flat_struct=True)).reshape(-1, width)


def _retries_missing() -> bool:
    return importlib.util.find_spec("qm_xarray.client.retry") is None


# ------------------------------------------------------------------ the server dies mid-fetch
class _SlowAssembly:
    """Makes the client take its data slowly (so a fetch is in progress when the server dies) and
    records, for each attempt of the fetch, how many items it already had."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, signal_at: int, delay: float = 0.01):
        self.received = threading.Event()
        self.starts: list[int] = []
        add, resume = Assembler.add, Assembler.resume
        me = self

        def slow_add(self: Assembler, data: Any) -> None:
            add(self, data)
            if self.nbytes >= signal_at:
                me.received.set()
            time.sleep(delay)

        def recorded_resume(self: Assembler, limit: int) -> int | None:
            me.starts.append(self.count)
            return resume(self, limit)

        monkeypatch.setattr(Assembler, "add", slow_add)
        monkeypatch.setattr(Assembler, "resume", recorded_resume)


@pytest.mark.parametrize("api", ["v2", "v1"])
def test_fetch_in_progress_survives_server_kill_and_restart(tmp_path, spawn_server, monkeypatch, api):
    server = spawn_server(tmp_path / "store")
    _fill(server.address, "big", BIG_ITEMS)
    want = expected_items(0, BIG_ITEMS, WIDTH)
    slow = _SlowAssembly(monkeypatch, signal_at=4 * MiB)
    details = ConnectionDetails.from_address(server.address, timeout=60.0)  # the retry deadline
    result: dict[str, Any] = {}

    def fetch() -> None:
        try:
            if api == "v2":
                handle = qx.connect(details).job("big").result_handles.get("I")
                result["data"] = np.asarray(handle.fetch_all(flat_struct=True))
            else:
                service = JobResultServiceApi(details, "big")
                header = service.get_header("I", True)
                buf, count = service.fetch_range(header, 0, header.count_so_far)
                result["data"] = np.asarray(buf).view("<f8").reshape(count, WIDTH)
        except Exception as exc:  # noqa: BLE001 - checked below
            result["error"] = exc

    thread = threading.Thread(target=fetch, daemon=True)
    thread.start()
    assert slow.received.wait(30), "the fetch did not start"
    first_pid = server.pid
    server.kill()
    killed = time.monotonic()
    server.restart()
    assert server.pid != first_pid
    thread.join(60)
    assert not thread.is_alive(), "the fetch did not end within its deadline"
    if "error" in result and _retries_missing():
        pytest.xfail(f"the client has no retries yet: {result['error']!r}")
    assert "error" not in result, f"the fetch failed after the restart: {result['error']!r}"
    got = result["data"].reshape(-1, WIDTH)
    assert got.shape == want.shape
    assert got.tobytes() == want.tobytes()
    # it was resumed after the kill, from the whole items it had, not started over
    assert len(slow.starts) >= 2 and slow.starts[0] == 0 and 0 < slow.starts[-1] < BIG_ITEMS, slow.starts
    print(f"\nfault: server killed mid-fetch ({api}); fetch resumed at item {slow.starts[-1]} of "
          f"{BIG_ITEMS} after {len(slow.starts) - 1} retry attempt(s), completed "
          f"{time.monotonic() - killed:.2f} s after the kill (restart took {server.start_seconds[-1]:.2f} s)")


# -------------------------------------------------------------------------- producers killed
def _check_stream(address: str, job_id: str, acked: int, store_dir: Path | None = None) -> int:
    """Every acknowledged item is there, whole and right; returns the count on the server."""
    got = _server_items(address, job_id, PRODUCER_WIDTH)
    count = len(got)
    assert count >= acked, f"{acked} items were acknowledged but the server has {count}"
    assert count <= acked + PRODUCER_BATCH, f"{count} items but only {acked} acknowledged + one batch"
    assert np.array_equal(got, expected_items(0, count, PRODUCER_WIDTH)), "stored items differ"
    if store_dir is not None:
        size = _items_file(store_dir, job_id, "I").stat().st_size
        assert size == count * PRODUCER_WIDTH * 8, f"{size} bytes on disk for {count} items"
    return count


def test_killed_producer_leaves_only_whole_acknowledged_items(tmp_path, spawn_server, spawn_producer):
    store_dir = tmp_path / "store"
    server = spawn_server(store_dir)
    qx.RemoteStore(server.address).create_job("prod", streams=[{"name": "I", "shape": (PRODUCER_WIDTH,)}])
    rng = np.random.default_rng(1)
    count = 0
    for _ in range(PRODUCER_ROUNDS):
        producer = spawn_producer(server.address, "prod", "I", batch=PRODUCER_BATCH, batches=1000)
        producer.wait_acked(count + 2 * PRODUCER_BATCH, timeout=60)  # it resumed from the count
        time.sleep(float(rng.uniform(0, 0.05)))  # somewhere inside the next append
        producer.kill()
        count = _check_stream(server.address, "prod", producer.acked, store_dir)
        print(f"\nfault: producer killed with {producer.acked} items acknowledged; the server holds "
              f"{count} whole items")
    # another producer resumes from the count the server reports, then ends the job
    writer = qx.RemoteStore(server.address).writer("prod")
    stream = writer.stream("I")
    assert stream.count == count
    assert stream.append(expected_items(count, count + 200, PRODUCER_WIDTH)) == count + 200
    writer.cancel()
    with pytest.raises(JobFinishedError):
        stream.append(expected_items(count + 200, count + 201, PRODUCER_WIDTH))
    summary = qx.connect(server.address).job("prod").summary()
    assert summary.state == "closed" and summary.streams[0].count == count + 200
    _check_stream(server.address, "prod", count + 200, store_dir)
    # a producer that vanishes mid-append is not an internal error of the server
    assert "internal error" not in server.log_path.read_text()


# -------------------------------------------------------------------- durable server killed
def test_durable_server_killed_while_a_producer_appends(tmp_path, spawn_server, spawn_producer):
    store_dir = tmp_path / "store"
    server = spawn_server(store_dir)
    qx.RemoteStore(server.address).create_job("dur", streams=[{"name": "I", "shape": (PRODUCER_WIDTH,)}])
    itemsize = PRODUCER_WIDTH * 8
    rng = np.random.default_rng(2)
    count = 0
    for round_ in range(ROUNDS):
        producer = spawn_producer(server.address, "dur", "I", batch=PRODUCER_BATCH, batches=1000)
        producer.wait_acked(count + 2 * PRODUCER_BATCH, timeout=60)
        time.sleep(float(rng.uniform(0, 0.05)))
        server.kill()
        producer.wait(30)  # its next append fails: the server is gone
        acked = producer.acked
        # a torn write: part of an item at the end of the file, as a crash inside write() leaves
        items = _items_file(store_dir, "dur", "I")
        tail = items.stat().st_size % itemsize
        torn = (itemsize - tail) // 2 if round_ != 1 else 0  # one round without: the plain crash
        if torn and tail + torn < itemsize:
            with open(items, "ab") as f:
                f.write(b"\xff" * torn)
        server.restart()
        count = _check_stream(server.address, "dur", acked, store_dir)  # reopened, torn tail cut
        print(f"\nfault: durable server killed with {acked} items acknowledged (+{torn} torn bytes); "
              f"after the restart it serves {count} whole items")
    writer = qx.RemoteStore(server.address).writer("dur")
    assert writer.stream("I").count == count
    writer.stream("I").append(expected_items(count, count + 10, PRODUCER_WIDTH))
    writer.finish()
    server.kill()
    server.restart()
    summary = qx.connect(server.address).job("dur").summary()
    assert summary.state == "done" and summary.streams[0].count == count + 10
    _check_stream(server.address, "dur", count + 10, store_dir)


# ----------------------------------------------------------------------------- slow loris
LORIS_ITEMS = 8 * 1024  # 64 MiB: far more than any flow-control window


def _normal_client(address: str, bound: float, errors: list[str]) -> None:
    """What an ordinary client does: list jobs, read a header, fetch 1 MiB; all within `bound` s."""
    t0 = time.monotonic()
    try:
        conn = qx.connect(address, timeout=bound)
        conn.jobs()
        handle = conn.job("big").result_handles.get("I")
        got = np.asarray(handle.fetch(slice(1000, 1128), flat_struct=True)).reshape(-1, WIDTH)
        assert np.array_equal(got, expected_items(1000, 1128, WIDTH))
    except Exception as exc:  # noqa: BLE001 - reported by the test
        errors.append(f"{type(exc).__name__} after {time.monotonic() - t0:.1f} s: {exc}")


def _run_normal_clients(address: str, bound: float, n: int = 3) -> tuple[list[str], float]:
    errors: list[str] = []
    t0 = time.monotonic()
    threads = [threading.Thread(target=_normal_client, args=(address, bound, errors), daemon=True)
               for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(bound + 10)
    return errors, time.monotonic() - t0


def test_silent_connections_do_not_stall_other_clients(spawn_server):
    server = spawn_server(None)
    _fill(server.address, "big", 2048)
    sockets = []
    try:
        for k in range(60):  # connect and say nothing, half a preface, or garbage
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            if k % 3 == 1:
                s.sendall(b"PRI * HTTP/2.0\r\n")
            elif k % 3 == 2:
                s.sendall(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00garbage")
            sockets.append(s)
        errors, took = _run_normal_clients(server.address, bound=10.0)
        assert not errors, errors
        assert server.alive()
        print(f"\nfault: 60 silent/half-open connections; 3 normal clients done in {took:.2f} s")
    finally:
        for s in sockets:
            s.close()


def test_clients_that_never_read_do_not_stall_other_clients(spawn_server):
    server = spawn_server(None)
    _fill(server.address, "big", LORIS_ITEMS)
    loris = grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)])
    call = loris.unary_stream("/qm.grpc.v2.JobService/GetNamedResult",
                              request_serializer=job_api_pb2.GetNamedResultRequest.SerializeToString,
                              response_deserializer=None)
    calls = []
    try:
        for _ in range(80):  # none of them is ever read; each holds a server thread until cancelled
            request = job_api_pb2.GetNamedResultRequest(job_id="big", output_name="I", limit=2**31 - 1)
            request.long_offset.SetInParent()
            calls.append(call(request, timeout=60))
        time.sleep(1.0)  # the server has started every one of them
        # a bound for a stall (a stalled server never answers), not for speed: generous on busy CI
        errors, took = _run_normal_clients(server.address, bound=30.0)
        rss = server.peak_rss() / MiB
        print(f"\nfault: 80 never-read data streams; normal clients took {took:.2f} s, errors: {errors}; "
              f"server peak RSS {rss:.0f} MiB")
        assert server.alive()
        assert not errors, errors
    finally:
        for c in calls:
            c.cancel()
        loris.close()


def test_many_waiting_clients_do_not_stall_the_server(spawn_server):
    server = spawn_server(None)
    job = qx.RemoteStore(server.address, timeout=3.0).create_job("run", streams=[{"name": "I"}])
    job.stream("I").append([1.0, 2.0])
    _fill(server.address, "big", 2048)
    outcomes: list[str] = []

    def wait() -> None:
        handle = qx.connect(server.address, timeout=6.0).job("run").result_handles.get("I")
        try:
            outcomes.append(f"done={handle.wait_for_all_values(timeout=6.0)}")
        except Exception as exc:  # noqa: BLE001 - reported below
            outcomes.append(type(exc).__name__)

    waiters = [threading.Thread(target=wait, daemon=True) for _ in range(72)]
    for t in waiters:
        t.start()
    time.sleep(1.0)  # every waiter is following the job's status
    errors, took = _run_normal_clients(server.address, bound=3.0)
    finished = None
    try:
        job.finish()
    except Exception as exc:  # noqa: BLE001 - reported below
        finished = exc
    deadline = time.monotonic() + 10
    for t in waiters:
        t.join(max(0.1, deadline - time.monotonic()))
    print(f"\nfault: 72 clients waiting on a running job; normal clients took {took:.2f} s, errors: "
          f"{errors}; finish: {finished!r}; waiters: {sorted(set(outcomes))}")
    assert not errors, errors
    assert finished is None, finished
    assert outcomes == ["done=True"] * len(waiters)
