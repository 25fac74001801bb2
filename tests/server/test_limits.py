"""The size limits keep their order: what one side sends, the other side takes."""

from __future__ import annotations

import pytest

from qm_xarray import limits
from qm_xarray.limits import (
    CLIENT_MESSAGE_BYTES,
    ENVELOPE_BYTES,
    GRPC_DEFAULT_MESSAGE_BYTES,
    MAX_APPEND_BYTES,
    MAX_ITEM_BYTES,
    MAX_RECEIVE_BYTES,
    MAX_REQUEST_BYTES,
    MAX_SEND_BYTES,
    MESSAGE_BYTES,
)
from qm_xarray.wire import codec
from qm_xarray.wire.pb.qm_xarray.v1 import control_pb2 as pb

LONGEST_NAME = "n" * 128  # job ids and stream names have at most 128 characters


def test_the_order_holds() -> None:
    limits.check_order()
    assert MESSAGE_BYTES < MAX_SEND_BYTES <= GRPC_DEFAULT_MESSAGE_BYTES
    assert MAX_ITEM_BYTES < MAX_APPEND_BYTES <= MAX_RECEIVE_BYTES <= CLIENT_MESSAGE_BYTES
    assert MAX_REQUEST_BYTES <= MAX_RECEIVE_BYTES


def test_a_broken_order_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_RECEIVE_BYTES", MAX_APPEND_BYTES - 1)
    with pytest.raises(AssertionError, match="gRPC lets every request through"):
        limits.check_order()


def test_the_largest_append_message_fits_the_append_limit() -> None:
    message = pb.AppendItemsRequest(job_id=LONGEST_NAME, stream=LONGEST_NAME, count=1,
                                    data=bytes(MAX_ITEM_BYTES))
    envelope = message.ByteSize() - MAX_ITEM_BYTES
    assert envelope <= ENVELOPE_BYTES
    assert message.ByteSize() <= MAX_APPEND_BYTES


def test_data_messages_fit_what_a_stock_client_receives() -> None:
    payload = [memoryview(bytes(MESSAGE_BYTES))]
    for message in (codec.v1_data(2**31 - 1, payload), codec.v2_chunk(LONGEST_NAME, payload),
                    codec.v2_legacy(2**31 - 1, payload, LONGEST_NAME)):
        assert len(message) - MESSAGE_BYTES <= ENVELOPE_BYTES
        assert len(message) <= MAX_SEND_BYTES


def test_the_modules_use_the_limits() -> None:
    from qm_xarray import dtypes, producer
    from qm_xarray.server import _rpc, storage

    assert producer.MESSAGE_BYTES == _rpc.MESSAGE_BYTES == storage.PIECE_BYTES == MESSAGE_BYTES
    assert _rpc.MAX_APPEND_BYTES == MAX_APPEND_BYTES and dtypes.MAX_ITEM_BYTES == MAX_ITEM_BYTES
