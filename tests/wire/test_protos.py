"""The wire protocol: generated code is current, and the test vectors of wire-protocol.md round-trip."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from qm_xarray.wire.pb.qm.grpc.v2 import job_api_pb2 as v2
from qm_xarray.wire.pb.qm.pb import job_results_pb2 as v1

ROOT = Path(__file__).resolve().parents[2]

S2 = v2.GetNamedResultResponse.GetNamedResultResponseSuccess
H2 = v2.GetJobNamedResultsHeadersResponse.GetJobNamedResultsHeadersResponseSuccess


def _long(msg, value):
    msg.longOffset.SetInParent()
    msg.longOffset.value = value
    return msg


F8_HALF = bytes.fromhex("000000000000e03f")

VECTORS = [
    (v1.GetJobResultSchemaRequest(jobId="job-1"), "0a056a6f622d31"),
    (v1.GetJobResultSchemaResponse(items=[v1.GetJobResultSchemaResponse.Item(
        name="I", simpleDType='[["value", "<f8"]]', isSingle=False, expectedCount=0, shape=[1])]),
     "0a1a0a014912125b5b2276616c7565222c20223c6638225d5d2a0101"),
    (v1.GetJobNamedResultHeaderRequest(jobId="job-1", outputName="counts", flatFormat=True),
     "0a056a6f622d311206636f756e74731801"),
    (v1.GetJobNamedResultHeaderResponse(countSoFar=4, simpleDType='"<i8"', done=True, shape=[3],
                                        hasExecutionErrors={"value": False}),
     "10041a05223c69382220013a01034200"),
    (_long(v1.GetJobNamedResultRequest(jobId="job-1", outputName="I", limit=6), 0),
     "0a056a6f622d3112014920062a00"),
    (_long(v1.GetJobNamedResultRequest(jobId="job-1", outputName="I", limit=2), 1),
     "0a056a6f622d3112014920022a020801"),
    (v1.GetJobNamedResultResponse(countOfItems=1, data=F8_HALF), "08011208000000000000e03f"),
    (v1.GetJobStateResponse(done=True), "0801"),
    (v2.GetNamedResultsRequest(job_id="job-1", outputs=[{"output_name": "I", "range": {
        "from": {"value": 1}, "to": {"value": 2}}}]), "0a056a6f622d31120d0a014912080a02080112020802"),
    (v2.GetNamedResultResponse(success=S2(data_chunk={"data": F8_HALF}, output_name="I")),
     "0a0f1a0a0a08000000000000e03f2a0149"),
    (v2.GetNamedResultResponse(success=S2(data_summary={"count": 1}, output_name="I")),
     "0a07220208012a0149"),
    (v2.GetNamedResultResponse(success=S2(count_of_items=1, data=F8_HALF)),
     "0a0c08011208000000000000e03f"),
    (v2.GetNamedResultResponse(error={"details": "boom"}), "12060a04626f6f6d"),
    (v2.GetJobNamedResultsHeadersResponse(success=H2(headers=[H2.OutputHeader(
        count_so_far=6, output_name="I", simple_dtype='"<f8"', shape=[1])])),
     "0a110a0f08061a01492205223c6638222a0101"),
    (v2.GetJobResultStateResponse(success={"done": True}), "0a020801"),
]


@pytest.mark.parametrize(("message", "hexbytes"), VECTORS, ids=[type(m).__name__ for m, _ in VECTORS])
def test_vectors_round_trip_byte_for_byte(message, hexbytes):
    data = message.SerializeToString(deterministic=True)
    assert data.hex() == hexbytes
    parsed = type(message).FromString(bytes.fromhex(hexbytes))
    assert parsed == message
    assert parsed.SerializeToString(deterministic=True) == data


def test_long_offset_presence_survives_round_trip():
    msg = v1.GetJobNamedResultRequest.FromString(bytes.fromhex("0a056a6f622d3112014920062a00"))
    assert msg.HasField("longOffset") and msg.longOffset.value == 0
    assert not v1.GetJobNamedResultRequest(limit=1).HasField("longOffset")


def test_service_and_method_names_are_qm_s():
    v1_service = v1.DESCRIPTOR.services_by_name["JobResultsService"]
    assert v1_service.full_name == "qm.grpc.results_analyser.JobResultsService"
    assert set(v1_service.methods_by_name) == {
        "GetJobResultSchema", "GetJobState", "GetJobNamedResultHeader", "GetJobNamedResult",
        "GetJobErrors"}
    v2_service = v2.DESCRIPTOR.services_by_name["JobService"]
    assert v2_service.full_name == "qm.grpc.v2.JobService"
    assert {"GetJobResultSchema", "GetJobResultState", "GetJobNamedResultHeader",
            "GetJobNamedResultsHeaders", "GetNamedResult", "GetNamedResults", "GetJobStatus",
            "GetJobStatusUpdates", "GetErrors"} == set(v2_service.methods_by_name)


def test_generated_code_is_registered_beside_the_reference_client():
    pytest.importorskip("qm")
    import qm.grpc.qm.pb.job_results_pb2 as theirs  # registers QM's names in the default pool

    assert theirs.GetJobStateRequest.DESCRIPTOR.full_name == v1.GetJobStateRequest.DESCRIPTOR.full_name
    ours = v1.GetJobStateResponse(done=True, hasDataloss=True).SerializeToString()
    assert theirs.GetJobStateResponse.FromString(ours).hasDataloss


def test_generated_code_is_current(tmp_path):
    pytest.importorskip("grpc_tools")
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "tools" / "gen_protos.py")
    gen = importlib.util.module_from_spec(spec)
    sys.modules["gen_protos"] = gen
    spec.loader.exec_module(gen)
    written = gen.generate(tmp_path)
    committed_root = ROOT / "qm_xarray" / "wire" / "pb"
    generated = {p.relative_to(tmp_path) for p in written}
    committed = {p.relative_to(committed_root) for p in committed_root.rglob("*_pb2*.py*")}
    assert generated == committed, "run: python tools/gen_protos.py"
    for rel in generated:
        assert (tmp_path / rel).read_text() == (committed_root / rel).read_text(), (
            f"{rel} is stale; run: python tools/gen_protos.py")


def test_generated_messages_pickle_under_our_module_names():
    import pickle

    msg = v1.GetJobStateResponse(done=True)
    assert type(msg).__module__ == "qm_xarray.wire.pb.qm.pb.job_results_pb2"
    assert pickle.loads(pickle.dumps(msg)) == msg
