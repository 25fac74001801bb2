"""Hand codec of the hot data messages of the results protocol.

The data messages are tiny in structure, and the generated protobuf classes copy the payload twice
(shared/spec/performance-notes.md). Encoding them here, and decoding them into memoryviews of the
received buffer, is byte-compatible with any protobuf implementation; tests check it against the
generated classes, including unknown fields and any field order.

Messages (field numbers of wire-protocol.md):
- v1 `GetJobNamedResultResponse`: 1 countOfItems (varint), 2 data (bytes).
- v2 `GetNamedResultResponse`: 1 success {1 count_of_items, 2 data, 3 data_chunk {1 data},
  4 data_summary {1 count}, 5 output_name}, 2 error {1 details}.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..errors import DataFetchingError
from ..limits import MAX_COUNT

__all__ = [
    "encode_varint",
    "v1_data",
    "v2_chunk",
    "v2_summary",
    "v2_legacy",
    "v2_error",
    "decode_v1_data",
    "decode_v2_result",
    "V2Result",
    "iter_fields",
]

Bytes = bytes | bytearray | memoryview


def encode_varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int (negative int32 as 10-byte two's complement)."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(tag: int, pieces: Sequence[Bytes]) -> list[Bytes]:
    size = sum(len(p) for p in pieces)
    return [bytes((tag,)), encode_varint(size), *pieces]


def _varint_field(tag: int, value: int) -> bytes:
    return bytes((tag,)) + encode_varint(value) if value else b""


def v1_data(count: int, payload: Sequence[Bytes]) -> bytes:
    """`GetJobNamedResultResponse{countOfItems, data}` (fields at default are omitted)."""
    parts: list[Bytes] = [_varint_field(0x08, count)]
    if any(len(p) for p in payload):
        parts += _len_field(0x12, payload)
    return b"".join(parts)


def _v2_success(inner: list[Bytes], name: str) -> bytes:
    if name:
        inner = inner + _len_field(0x2A, [name.encode()])
    return b"".join(_len_field(0x0A, inner))


def v2_chunk(name: str, payload: Sequence[Bytes]) -> bytes:
    """`GetNamedResultResponse{success{data_chunk{data}, output_name}}`."""
    chunk = _len_field(0x0A, payload) if any(len(p) for p in payload) else []
    return _v2_success(_len_field(0x1A, chunk), name)


def v2_summary(name: str, count: int) -> bytes:
    """`GetNamedResultResponse{success{data_summary{count}, output_name}}`."""
    summary = _varint_field(0x08, count)
    return _v2_success(_len_field(0x22, [summary]), name)


def v2_legacy(count: int, payload: Sequence[Bytes], name: str = "") -> bytes:
    """Legacy format: `GetNamedResultResponse{success{count_of_items, data}}`."""
    return _v2_success([v1_data(count, payload)], name)


def v2_error(details: str) -> bytes:
    """`GetNamedResultResponse{error{details}}`."""
    inner = _len_field(0x0A, [details.encode()]) if details else []
    return b"".join(_len_field(0x12, inner))


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise DataFetchingError("malformed protobuf message: truncated or overlong varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def iter_fields(buf: Bytes) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield `(field_number, wire_type, value)`; length-delimited values are memoryview slices."""
    view = memoryview(buf).cast("B") if not isinstance(buf, memoryview) else buf.cast("B")
    pos, end = 0, len(view)
    while pos < end:
        key, pos = _read_varint(view, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(view, pos)
            yield number, wire, value
        elif wire == 2:
            size, pos = _read_varint(view, pos)
            if pos + size > end:
                raise DataFetchingError("malformed protobuf message: field runs past the end")
            yield number, wire, view[pos:pos + size]
            pos += size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > end:
                raise DataFetchingError("malformed protobuf message: truncated fixed field")
            yield number, wire, int.from_bytes(view[pos:pos + width], "little")
            pos += width
        else:
            raise DataFetchingError(f"malformed protobuf message: unsupported wire type {wire}")


def _int32(value: int | memoryview) -> int:
    if not isinstance(value, int):
        raise DataFetchingError("malformed protobuf message: count is not a varint")
    value &= (1 << 64) - 1
    if value >= 1 << 63:
        value -= 1 << 64
    if not 0 <= value <= MAX_COUNT:
        raise DataFetchingError(f"malformed data message: item count {value} is out of range")
    return value


def decode_v1_data(buf: Bytes) -> tuple[int, memoryview]:
    """Decode `GetJobNamedResultResponse` into (countOfItems, data view). Last field wins."""
    count, data = 0, memoryview(b"")
    for number, wire, value in iter_fields(buf):
        if number == 1 and wire == 0:
            count = _int32(value)
        elif number == 2 and isinstance(value, memoryview):
            data = value
    return count, data


@dataclass(frozen=True, slots=True)
class V2Result:
    """One decoded `GetNamedResultResponse`.

    kind is "chunk" (data), "summary" (count), "legacy" (count + data), "error" (details) or
    "empty" (success with none of them).
    """

    kind: str
    output_name: str = ""
    count: int = 0
    data: memoryview = memoryview(b"")
    details: str = ""


def decode_v2_result(buf: Bytes) -> V2Result:
    """Decode a v2 `GetNamedResultResponse` (either data format, or the error)."""
    success: memoryview | None = None
    error: memoryview | None = None
    for number, wire, value in iter_fields(buf):
        if number == 1 and isinstance(value, memoryview):
            success = value
        elif number == 2 and isinstance(value, memoryview):
            error = value
    if error is not None and success is None:
        details = ""
        for number, wire, value in iter_fields(error):
            if number == 1 and isinstance(value, memoryview):
                details = bytes(value).decode("utf-8", "replace")
        return V2Result("error", details=details)
    if success is None:
        return V2Result("empty")
    name = ""
    legacy_count, legacy_data, has_legacy = 0, memoryview(b""), False
    kind, count, data = "", 0, memoryview(b"")
    for number, wire, value in iter_fields(success):
        if number == 5 and isinstance(value, memoryview):
            name = bytes(value).decode("utf-8", "replace")
        elif number == 3 and isinstance(value, memoryview):
            kind, data = "chunk", memoryview(b"")
            for n2, w2, v2 in iter_fields(value):
                if n2 == 1 and isinstance(v2, memoryview):
                    data = v2
        elif number == 4 and isinstance(value, memoryview):
            kind, count = "summary", 0
            for n2, w2, v2 in iter_fields(value):
                if n2 == 1 and w2 == 0:
                    count = _int32(v2)
        elif number == 1 and wire == 0:
            legacy_count, has_legacy = _int32(value), True
        elif number == 2 and isinstance(value, memoryview):
            legacy_data, has_legacy = value, True
    if kind == "chunk":
        return V2Result("chunk", name, data=data)
    if kind == "summary":
        return V2Result("summary", name, count=count)
    if has_legacy:
        return V2Result("legacy", name, count=legacy_count, data=legacy_data)
    return V2Result("empty", name)
