"""A producer appends while several readers fetch: every result is a prefix of what was written."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from qm_xarray.testing import reference_streams_manager
from qm_xarray.wire import codec
from qm_xarray.wire.pb.qm.pb import job_results_pb2 as v1

N_ITEMS = 60_000
BATCH = 997  # not a divisor of the segment or message size: appends straddle both


def _raw_reader(channel, job_id, name):
    call = channel.unary_stream("/qm.grpc.results_analyser.JobResultsService/GetJobNamedResult",
                                request_serializer=v1.GetJobNamedResultRequest.SerializeToString,
                                response_deserializer=None)

    def fetch_all():
        req = v1.GetJobNamedResultRequest(jobId=job_id, outputName=name, limit=2**31 - 1)
        req.longOffset.SetInParent()
        parts, total = [], 0
        for msg in call(req, timeout=30):
            count, data = codec.decode_v1_data(msg)
            total += count
            parts.append(bytes(data))
        return total, b"".join(parts)

    return fetch_all


@pytest.mark.slow
def test_readers_see_only_whole_published_prefixes(store, server, channel):
    writer = store.create_job()
    scalar = writer.add_stream("I", expected_count=N_ITEMS)
    buffered = writer.add_stream("buf", "<i8", (5,), expected_count=N_ITEMS)
    values = np.arange(N_ITEMS, dtype="<f8") * 0.5
    rows = np.arange(N_ITEMS * 5, dtype="<i8").reshape(N_ITEMS, 5)
    failures: list[str] = []
    results: dict[str, int] = {}
    started = threading.Event()

    def produce():
        started.wait()
        for lo in range(0, N_ITEMS, BATCH):
            scalar.append(values[lo:lo + BATCH])
            buffered.append(rows[lo:lo + BATCH])
        writer.finish()

    def read(label, fetch_scalar, fetch_buffer):
        last, rounds = 0, 0
        started.set()
        while True:
            done = store.job(writer.id).done
            got = fetch_scalar()
            if not np.array_equal(got, values[:len(got)]):
                failures.append(f"{label}: I is not a prefix at length {len(got)}")
            if len(got) < last:
                failures.append(f"{label}: I shrank from {last} to {len(got)}")
            last = len(got)
            buf = fetch_buffer()
            if buf.ndim != 2 or buf.shape[1:] != (5,) or not np.array_equal(buf, rows[:len(buf)]):
                failures.append(f"{label}: buf is not a whole-item prefix, shape {buf.shape}")
            rounds += 1
            if done:
                results[label] = rounds
                if len(got) != N_ITEMS:
                    failures.append(f"{label}: final length {len(got)}")
                return

    raw_i, raw_buf = _raw_reader(channel, writer.id, "I"), _raw_reader(channel, writer.id, "buf")

    def raw_scalar():
        _, data = raw_i()
        return np.frombuffer(data, "<f8")

    def raw_buffer():
        n, data = raw_buf()
        return np.frombuffer(data, "<i8").reshape(n, 5)

    readers = [threading.Thread(target=read, args=("raw", raw_scalar, raw_buffer))]
    for mode in ("v1", "v2-multi", "v2"):
        sm = reference_streams_manager("127.0.0.1", server.port, writer.id, mode)
        readers.append(threading.Thread(target=read, args=(
            mode, lambda sm=sm: sm.get("I").fetch_all(flat_struct=True),
            lambda sm=sm: np.atleast_2d(sm.get("buf").fetch_all(flat_struct=True)))))
    producer = threading.Thread(target=produce)
    for t in [*readers, producer]:
        t.start()
    for t in [*readers, producer]:
        t.join(timeout=120)
        assert not t.is_alive(), "a reader or the producer hung"
    assert not failures, failures[:5]
    assert set(results) == {"raw", "v1", "v2-multi", "v2"}
    assert sum(results.values()) > len(results)  # readers really overlapped with the appends
