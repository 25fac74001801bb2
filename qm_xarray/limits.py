"""Size and count limits of the results protocol as we serve and produce it, in one place.

The server, the producer, the client and the stream layouts each enforce some of these, and they
only work together when they keep this order (`check_order` runs at import; tests check it too):

1. `MESSAGE_BYTES + ENVELOPE_BYTES <= MAX_SEND_BYTES <= GRPC_DEFAULT_MESSAGE_BYTES`: a data message
   the server sends (about `MESSAGE_BYTES` of items) is within what it may send, and what a stock
   gRPC client (qm-qua) accepts.
2. `max(MESSAGE_BYTES, MAX_ITEM_BYTES) + ENVELOPE_BYTES <= MAX_APPEND_BYTES`: one `AppendItems`
   message a producer sends (whole items of about `MESSAGE_BYTES`, or one item if larger) passes
   the server's parser.
3. `MAX_REQUEST_BYTES, MAX_APPEND_BYTES <= MAX_RECEIVE_BYTES`: gRPC's own receive limit lets such
   messages through, so that a larger one gets our INVALID_ARGUMENT, which names the limit.
4. `MAX_APPEND_BYTES, MAX_SEND_BYTES <= CLIENT_MESSAGE_BYTES`: our client (which produces too)
   sends the largest message the server takes and receives the largest one it sends.
5. `MAX_METADATA_BYTES + ENVELOPE_BYTES <= MAX_REQUEST_BYTES`: a job's whole metadata (metadata.py)
   fits one request (`DescribeJob`, `CreateJob`) and, so, one answer (`GetMetadata`).
"""

from __future__ import annotations

__all__ = ["MiB", "MAX_COUNT", "MAX_ITEM_BYTES", "MESSAGE_BYTES", "ENVELOPE_BYTES", "MAX_REQUEST_BYTES",
           "MAX_APPEND_BYTES", "MAX_RECEIVE_BYTES", "MAX_SEND_BYTES", "GRPC_DEFAULT_MESSAGE_BYTES",
           "CLIENT_MESSAGE_BYTES", "MAX_METADATA_BYTES", "MAX_ATTRS", "MAX_TEXT_CHARS", "CAPTURE_ROUND_BYTES", "check_order"]

MiB = 1024 * 1024

MAX_COUNT = 2**31 - 1              # items per stream, offsets and limits: int32 on the wire
MAX_ITEM_BYTES = 64 * MiB          # one item of a stream (checked when the stream is declared)
MESSAGE_BYTES = 1 * MiB            # item bytes per data message, and per AppendItems message
ENVELOPE_BYTES = 64 * 1024         # bound on what a message holds besides items (ids, names, tags)
MAX_REQUEST_BYTES = 1 * MiB        # any request but AppendItems: a few fields and names
MAX_APPEND_BYTES = 72 * MiB        # one AppendItems message, as the server's parser takes it
MAX_RECEIVE_BYTES = 80 * MiB       # gRPC's receive limit on the server
MAX_SEND_BYTES = 4 * MiB           # gRPC's send limit on the server
GRPC_DEFAULT_MESSAGE_BYTES = 4 * MiB  # what a gRPC client receives unless told otherwise (qm-qua)
CLIENT_MESSAGE_BYTES = 100 * MiB   # our client's send and receive limit
MAX_METADATA_BYTES = 768 * 1024    # a job's metadata (attrs, coordinates, stream descriptions), encoded
MAX_ATTRS = 256                    # free attributes of a job
MAX_TEXT_CHARS = 256               # a units or long_name text
CAPTURE_ROUND_BYTES = 8 * MiB     # new item bytes a relay's round fetches (at least one item, however
                                  # large): bounds its memory; 64 MiB rounds served slower (bench_relay)


def check_order() -> None:
    """Raise `AssertionError` naming the first rule of the module docstring that does not hold."""
    rules = [
        ("1. a data message fits the server's send limit",
         MESSAGE_BYTES + ENVELOPE_BYTES <= MAX_SEND_BYTES),
        ("1. the server sends nothing a stock gRPC client refuses",
         MAX_SEND_BYTES <= GRPC_DEFAULT_MESSAGE_BYTES),
        ("2. one append message fits the server's append limit",
         max(MESSAGE_BYTES, MAX_ITEM_BYTES) + ENVELOPE_BYTES <= MAX_APPEND_BYTES),
        ("3. gRPC lets every request through to our parser",
         max(MAX_REQUEST_BYTES, MAX_APPEND_BYTES) <= MAX_RECEIVE_BYTES),
        ("4. our client sends and receives whatever the server takes and sends",
         max(MAX_APPEND_BYTES, MAX_SEND_BYTES) <= CLIENT_MESSAGE_BYTES),
        ("5. a job's metadata fits one request",
         MAX_METADATA_BYTES + ENVELOPE_BYTES <= MAX_REQUEST_BYTES),
        ("counts are int32", MAX_COUNT == 2**31 - 1),
    ]
    for rule, holds in rules:
        if not holds:
            raise AssertionError(f"qm_xarray.limits out of order: {rule}")


check_order()
