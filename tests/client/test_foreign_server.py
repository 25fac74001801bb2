"""Our client against a server that is not ours.

The server here is built only from the reference's generated classes (qm-qua's `_pb2` modules, the
default protobuf pool) and sends valid but unusual messages: numpy type names and `bool8`,
`__tuple__` objects, items split across messages, 5-byte chunks, interleaved groups of several
streams. Our client must return what the reference client returns from the same server.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

pytest.importorskip("qm", reason="the reference client qm-qua is not installed")
pytestmark = pytest.mark.compat

from qm.grpc.qm.grpc.v2 import job_api_pb2 as v2  # noqa: E402
from qm.grpc.qm.grpc.v2 import job_api_pb2_grpc as v2_grpc  # noqa: E402
from qm.grpc.qm.pb import job_results_pb2 as v1  # noqa: E402
from qm.grpc.qm.pb import job_results_pb2_grpc as v1_grpc  # noqa: E402

from qm_xarray.testing import our_streams_manager, reference_streams_manager  # noqa: E402

JOB = "foreign-1"
TUPLE = {"__tuple__": True, "items": ["value", "int64", [3]]}
# name -> (items, single, nested simpleDType, nested shape, flat simpleDType, flat shape)
ts = np.array([(1.5, 10), (2.5, 20), (3.5, 30), (4.5, 40)], dtype=[("value", "<f8"), ("timestamp", "<i8")])
STREAMS = {
    "I": (np.arange(6.0) / 4, False, '[["value", "float64"]]', [1], '"float64"', [1]),
    "c": (np.arange(12, dtype="<i8").reshape(4, 3), False, json.dumps([TUPLE]), [1], '"int64"', [3]),
    "flags": (np.array([True, False, True]), False, '[["value", "bool8"]]', [1], '"bool8"', [1]),
    "ts": (ts, False, '[["value", [["value", "<f8"], ["timestamp", "<i8"]]]]', [1],
           '[["value", "<f8"], ["timestamp", "<i8"]]', [1]),
    "avg": (np.array([0.75]), True, '[["value", "<f8"]]', [1], '"<f8"', [1]),
}


def _bytes(name, start, stop):
    items = STREAMS[name][0]
    part = items[start:stop]
    return len(part), np.ascontiguousarray(part).tobytes()


class ForeignV1(v1_grpc.JobResultsServiceServicer):
    def GetJobResultSchema(self, request, context):
        return v1.GetJobResultSchemaResponse(items=[
            v1.GetJobResultSchemaResponse.Item(name=n, simpleDType=s[2], isSingle=s[1],
                                               expectedCount=len(s[0]), shape=s[3])
            for n, s in STREAMS.items()])

    def GetJobState(self, request, context):
        return v1.GetJobStateResponse(done=True, closed=True)

    def GetJobNamedResultHeader(self, request, context):
        s = STREAMS[request.outputName]
        flat = request.flatFormat
        return v1.GetJobNamedResultHeaderResponse(
            isSingle=s[1], countSoFar=len(s[0]), simpleDType=s[4] if flat else s[2],
            shape=s[5] if flat else s[3], done=True, closed=True)

    def GetJobNamedResult(self, request, context):
        count, data = _bytes(request.outputName, request.longOffset.value,
                             request.longOffset.value + request.limit)
        cut = len(data) // 2 + 3  # split mid-item: counts on the last message only
        yield v1.GetJobNamedResultResponse(countOfItems=0, data=data[:cut])
        yield v1.GetJobNamedResultResponse(countOfItems=count, data=data[cut:])


S = v2.GetNamedResultResponse.GetNamedResultResponseSuccess


class ForeignV2(v2_grpc.JobServiceServicer):
    chunked = True

    def GetJobResultSchema(self, request, context):
        item = v2.GetJobResultSchemaResponse.GetJobResultSchemaResponseSuccess.Item
        return v2.GetJobResultSchemaResponse(success={"items": [
            item(name=n, simple_dtype=s[2], is_single=s[1], expected_count=len(s[0]), shape=s[3])
            for n, s in STREAMS.items()]})

    def GetJobResultState(self, request, context):
        return v2.GetJobResultStateResponse(success={"done": True, "closed": True})

    def GetJobStatusUpdates(self, request, context):
        yield v2.JobServiceGetJobStatusResponse(success={"status": 4})  # COMPLETED

    def GetJobNamedResultHeader(self, request, context):
        s = STREAMS[request.output_name]
        flat = request.flat_format
        return v2.GetJobNamedResultHeaderResponse(success={
            "is_single": s[1], "count_so_far": len(s[0]), "simple_dtype": s[4] if flat else s[2],
            "shape": s[5] if flat else s[3], "output_name": request.output_name})

    def GetJobNamedResultsHeaders(self, request, context):
        headers = []
        for o in request.outputs:
            s = STREAMS[o.output_name]
            headers.append({"count_so_far": len(s[0]), "output_name": o.output_name,
                            "simple_dtype": s[4] if o.flat_format else s[2],
                            "shape": s[5] if o.flat_format else s[3]})
        return v2.GetJobNamedResultsHeadersResponse(success={"headers": headers})

    def GetNamedResult(self, request, context):
        count, data = _bytes(request.output_name, request.long_offset.value,
                             request.long_offset.value + request.limit)
        if not self.chunked:
            yield v2.GetNamedResultResponse(success=S(count_of_items=count, data=data))
            return
        yield from _chunks(request.output_name, data, count)

    def GetNamedResults(self, request, context):
        # two groups per stream, interleaved across streams, 5-byte chunks
        groups = []
        for o in request.outputs:
            start = getattr(o.range, "from").value
            stop = o.range.to.value + 1
            mid = start + (stop - start) // 2
            groups.append([(o.output_name, *_bytes(o.output_name, start, mid)),
                           (o.output_name, *_bytes(o.output_name, mid, stop))])
        for round_ in (0, 1):
            for g in groups:
                name, count, data = g[round_]
                yield from _chunks(name, data, count)


def _chunks(name, data, count):
    if not data:
        yield v2.GetNamedResultResponse(success=S(data_chunk={"data": b""}, output_name=name))
    for i in range(0, len(data), 5):
        yield v2.GetNamedResultResponse(success=S(data_chunk={"data": data[i:i + 5]}, output_name=name))
    yield v2.GetNamedResultResponse(success=S(data_summary={"count": count}, output_name=name))


@pytest.fixture(scope="module", params=[True, False], ids=["chunked", "legacy"])
def foreign(request):
    server = grpc.server(ThreadPoolExecutor(8))
    v1_grpc.add_JobResultsServiceServicer_to_server(ForeignV1(), server)
    servicer = ForeignV2()
    servicer.chunked = request.param
    v2_grpc.add_JobServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, request.param
    server.stop(None)


def _same(a, b):
    if b is None:
        return a is None
    return (type(a) is type(b) and a.dtype == b.dtype and np.shape(a) == np.shape(b)
            and a.tobytes() == b.tobytes())


@pytest.mark.parametrize("mode", ["v1", "v2", "v2-multi"])
def test_our_client_reads_a_foreign_server_like_the_reference(foreign, mode):
    port, chunked = foreign
    if mode == "v2" and not chunked:
        mode = "v2-legacy"
    ours = our_streams_manager("127.0.0.1", port, JOB, mode)
    ref = reference_streams_manager("127.0.0.1", port, JOB, mode)
    assert list(ours.keys()) == list(ref.keys()) == list(STREAMS)
    for name in STREAMS:
        for flat in (False, True):
            for call in (lambda h: h.fetch_all(flat_struct=flat),
                         lambda h: h.fetch(slice(1, 3), flat_struct=flat),
                         lambda h: h.fetch(0, flat_struct=flat)):
                a, b = call(ours[name]), call(ref.get(name))
                assert _same(a, b), (mode, name, flat, a, b)
        assert ours[name].numpy_dtype == ref.get(name).numpy_dtype
    a = ours.fetch_results(timeout=10)
    b = ref.fetch_results(timeout=10)
    assert set(a) == set(b) and all(_same(a[n], b[n]) for n in b)
    assert ours.wait_for_all_values(timeout=5) is True
    np.testing.assert_array_equal(ours["c"].fetch_all(flat_struct=True), STREAMS["c"][0])
    assert ours["flags"].fetch_all(flat_struct=True).dtype == np.bool_
