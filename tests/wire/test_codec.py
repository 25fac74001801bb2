"""The hand codec produces and accepts exactly what the generated protobuf classes do."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qm_xarray.errors import DataFetchingError
from qm_xarray.wire import codec
from qm_xarray.wire.pb.qm.grpc.v2 import job_api_pb2 as v2
from qm_xarray.wire.pb.qm.pb import job_results_pb2 as v1

Resp = v2.GetNamedResultResponse
Success = Resp.GetNamedResultResponseSuccess
payloads = st.binary(max_size=300)
names = st.text(max_size=12)
counts = st.integers(0, 2**31 - 1)


@given(counts, payloads)
def test_v1_data_matches_generated(count, data):
    ours = codec.v1_data(count, [data])
    assert ours == v1.GetJobNamedResultResponse(countOfItems=count, data=data).SerializeToString(
        deterministic=True)
    assert codec.decode_v1_data(ours) == (count, data)


@given(names, payloads)
def test_v2_chunk_matches_generated(name, data):
    ours = codec.v2_chunk(name, [data[:5], data[5:]])
    ref = Resp(success=Success(data_chunk={"data": data}, output_name=name))
    assert ours == ref.SerializeToString(deterministic=True)
    r = codec.decode_v2_result(ours)
    assert (r.kind, r.output_name, bytes(r.data)) == ("chunk", name, data)


@given(names, counts)
def test_v2_summary_matches_generated(name, count):
    ours = codec.v2_summary(name, count)
    ref = Resp(success=Success(data_summary={"count": count}, output_name=name))
    assert ours == ref.SerializeToString(deterministic=True)
    r = codec.decode_v2_result(ours)
    assert (r.kind, r.output_name, r.count) == ("summary", name, count)


@given(counts, payloads, names)
def test_v2_legacy_and_error_match_generated(count, data, name):
    ours = codec.v2_legacy(count, [data], name)
    ref = Resp(success=Success(count_of_items=count, data=data, output_name=name))
    assert ours == ref.SerializeToString(deterministic=True)
    r = codec.decode_v2_result(ours)
    # a legacy message with no items and no bytes is indistinguishable from an empty success
    kind = "legacy" if count or data else "empty"
    assert (r.kind, r.count, bytes(r.data)) == (kind, count, data)
    err = codec.v2_error(name)
    assert err == Resp(error={"details": name}).SerializeToString(deterministic=True)
    assert codec.decode_v2_result(err).details == name


def test_decoders_accept_unknown_fields_and_any_order():
    data = np.arange(3.0).tobytes()
    unknown = bytes.fromhex("9801 07") + bytes.fromhex("a2010268 69") + bytes.fromhex("ad01 01020304")
    # field 2 first, then unknown varint/bytes/fixed32 fields, then field 1
    msg = bytes.fromhex("12") + codec.encode_varint(len(data)) + data + unknown + bytes.fromhex("0803")
    assert v1.GetJobNamedResultResponse.FromString(msg).countOfItems == 3
    count, view = codec.decode_v1_data(msg)
    assert count == 3 and bytes(view) == data
    # v2: output_name before the chunk, an unknown field inside success
    inner = bytes.fromhex("2a0149") + bytes.fromhex("f00101") + bytes.fromhex("1a0a0a08") + data[:8]
    msg2 = bytes.fromhex("0a") + codec.encode_varint(len(inner)) + inner
    ref = Resp.FromString(msg2)
    r = codec.decode_v2_result(msg2)
    assert (r.kind, r.output_name, bytes(r.data)) == ("chunk", ref.success.output_name,
                                                      ref.success.data_chunk.data)


def test_empty_messages_decode_to_defaults():
    assert codec.decode_v1_data(b"") == (0, b"")
    assert codec.decode_v2_result(b"").kind == "empty"
    assert codec.decode_v2_result(bytes.fromhex("0a00")).kind == "empty"


@pytest.mark.parametrize("bad", [b"\x08", b"\x12\x05ab", b"\x0b", b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
                                 bytes.fromhex("08ffffffffffffffffff01")])
def test_malformed_messages_raise_data_fetching_error(bad):
    with pytest.raises(DataFetchingError):
        codec.decode_v1_data(bad)


def test_decoded_payload_is_a_view_not_a_copy():
    msg = codec.v1_data(1, [b"12345678"])
    _, view = codec.decode_v1_data(msg)
    assert isinstance(view, memoryview) and view.obj is msg
