"""Fuzzing the real server: random bytes and random-but-valid messages for every RPC of every
service, and random producer appends; the server must answer every case with OK or a client-error
status, never INTERNAL/UNKNOWN, never crash, and never change a stored job.

Requests are built from the descriptors of the generated protobuf modules, so a new RPC or field
is fuzzed without touching this file. Each test prints how many cases it tried.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qm_xarray as qx
from qm_xarray.errors import QmQuaException, QMConnectionError
from qm_xarray.testing import embedded_server, make_job
from qm_xarray.wire.pb.qm.grpc.v2 import job_api_pb2
from qm_xarray.wire.pb.qm.pb import job_results_pb2
from qm_xarray.wire.pb.qm_xarray.v1 import control_pb2

ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE,
           grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAUTHENTICATED}
CALL_TIMEOUT = 10.0  # seconds; a case that needs it has hung the server
MAX_STREAM_MESSAGES = 20  # messages read from a server stream before cancelling it
PUSH_METHODS = {"GetJobStatusUpdates"}  # stay open while the job runs: one message is the answer
KNOWN = "known-job"  # a finished job whose stored bytes must never change
SCRATCH = "scratch-job"  # a running job the fuzzed producer calls can write into

SERVICES = [module.DESCRIPTOR.services_by_name[name] for module, name in (
    (job_results_pb2, "JobResultsService"), (job_api_pb2, "JobService"),
    (control_pb2, "JobsService"), (control_pb2, "ProducerService"))]
METHODS: list[MethodDescriptor] = [m for s in SERVICES for m in s.methods]
METHOD_IDS = [f"{m.containing_service.name}.{m.name}" for m in METHODS]

COUNTS: Counter[str] = Counter()  # cases tried, per test
STATUSES: Counter[str] = Counter()  # statuses answered, over every case

# ------------------------------------------------------------------------- message strategies
NAMES = [KNOWN, SCRATCH, "", "I", "c", "ts", "avg", "flags", "img", "adc", "empty", "f", "i", "b",
         "no-such-job", "../../etc", "x" * 200, "job-1", "é", "\x00"]
DTYPES = ["<f8", "<i8", "|b1", ">i4", "<c16", "<u2", "float64", "O", "<U4", "V8", "bogus", "",
          "[('a', '<f8')]", "(2,)<f8", "<M8[ns]"]
INT_EDGES = [0, 1, -1, 2, 3, 7, 100, 2**31 - 1, -2**31, 2**31, 2**32 - 1, 2**53, 2**63 - 1, -2**63]
RANGES = {  # (min, max) of each integer field type
    FieldDescriptor.TYPE_INT32: (-2**31, 2**31 - 1), FieldDescriptor.TYPE_SINT32: (-2**31, 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-2**31, 2**31 - 1), FieldDescriptor.TYPE_INT64: (-2**63, 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-2**63, 2**63 - 1), FieldDescriptor.TYPE_SFIXED64: (-2**63, 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1), FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _integers(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from([v for v in INT_EDGES if lo <= v <= hi]), st.integers(lo, hi))


JOB_FIELDS = {"job_id", "jobId"}
STREAM_FIELDS = {"output_name", "outputName", "stream", "name"}
STREAM_NAMES = ["I", "c", "ts", "avg", "ab", "flags", "t1", "img", "adc", "empty", "f", "i", "b"]


def _texts(field: FieldDescriptor) -> st.SearchStrategy[str]:
    """Mostly names that exist (so requests reach the data paths), else anything."""
    anything = st.one_of(st.sampled_from(NAMES), st.text(max_size=12))
    if field.name in JOB_FIELDS:
        return st.one_of(st.sampled_from([KNOWN, SCRATCH]), st.sampled_from([KNOWN, SCRATCH]), anything)
    if field.name in STREAM_FIELDS:
        return st.one_of(st.sampled_from(STREAM_NAMES), st.sampled_from(STREAM_NAMES), anything)
    if field.name == "dtype":
        return st.one_of(st.sampled_from(DTYPES), st.text(max_size=6))
    if field.name == "severity":
        return st.one_of(st.sampled_from(["error", "warning", "", "fatal"]), st.text(max_size=6))
    return anything


def _scalar(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    t = field.type
    if t in RANGES:
        return _integers(*RANGES[t])
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32 if t == FieldDescriptor.TYPE_FLOAT else 64)
    if t == FieldDescriptor.TYPE_STRING:
        return _texts(field)
    if t == FieldDescriptor.TYPE_BYTES:  # append payloads: whole 8-byte items, or anything
        return st.one_of(st.binary(max_size=64),
                         st.integers(0, 8).map(lambda n: np.arange(n, dtype="<f8").tobytes()))
    if t == FieldDescriptor.TYPE_ENUM:  # proto3 enums are open: any int32 goes on the wire
        return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]),
                         _integers(-2**31, 2**31 - 1))
    if t == FieldDescriptor.TYPE_MESSAGE:
        return messages(field.message_type, depth + 1)
    raise AssertionError(f"no strategy for field {field.full_name} of type {t}")


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Any]:
    """Any message of this type: each field unset or random (repeated: 0-3 values), nested to depth 3."""
    cls = message_factory.GetMessageClass(descriptor)
    if depth > 3:
        return st.just(cls())
    fields = {}
    maps = set()
    for f in descriptor.fields:
        if f.message_type and f.message_type.GetOptions().map_entry:  # map<scalar, scalar>: 0-3 entries
            key, item = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            assert item.message_type is None, f"map of messages {f.full_name}"
            fields[f.name] = st.one_of(st.none(), st.dictionaries(_scalar(key, depth), _scalar(item, depth),
                                                                  max_size=3))
            maps.add(f.name)
            continue
        value = _scalar(f, depth)
        repeated = f.is_repeated
        fields[f.name] = st.one_of(st.none(), st.lists(value, max_size=3) if repeated else value)

    def build(values: dict[str, Any]) -> Any:
        msg = cls()
        for name, value in values.items():  # several members of a oneof: the last one set wins
            if value is None:
                continue
            f = descriptor.fields_by_name[name]
            if name in maps:
                getattr(msg, name).update(value)
            elif f.is_repeated:
                getattr(msg, name).extend(value)
            elif f.type == FieldDescriptor.TYPE_MESSAGE:
                getattr(msg, name).CopyFrom(value)
            else:
                setattr(msg, name, value)
        return msg

    return st.fixed_dictionaries(fields).map(build)


def request_bytes(method: MethodDescriptor) -> st.SearchStrategy[bytes]:
    """Serialized valid messages of the method's request type, or random bytes."""
    valid = messages(method.input_type).map(lambda m: m.SerializeToString())
    return st.one_of(valid, valid, st.binary(max_size=200))


# ----------------------------------------------------------------------------------- the server
class ErrorLog(logging.Handler):
    """Collects what the server logs at ERROR (an INTERNAL status is logged with its traceback)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Target:
    def __init__(self, store: qx.ResultStore, server: qx.ResultsServer, errors: ErrorLog):
        self.store, self.server, self.errors = store, server, errors
        self.channel = grpc.insecure_channel(server.address)
        self.checksum = self.known_checksum()

    def known_checksum(self) -> str:
        """The known job's stored bytes, counts, stream layouts and state, hashed."""
        job = self.store.job(KNOWN)
        h = hashlib.sha256(f"{job.state.value}".encode())
        for name, stream in job.streams.items():
            h.update(f"{name}:{stream.layout}:{stream.single}:{stream.count}".encode())
            h.update(stream.read_array().tobytes())
        return h.hexdigest()

    def call(self, method: MethodDescriptor, raw: bytes | list[bytes]) -> grpc.StatusCode:
        """Send raw request bytes; returns the status (OK for a stream cancelled after reading)."""
        path = f"/{method.containing_service.full_name}/{method.name}"
        ident = {"request_serializer": None, "response_deserializer": None}
        try:
            if method.client_streaming:
                parts = raw if isinstance(raw, list) else [raw]
                self.channel.stream_unary(path, **ident)(iter(parts), timeout=CALL_TIMEOUT)
            elif method.server_streaming:
                responses = self.channel.unary_stream(path, **ident)(raw, timeout=CALL_TIMEOUT)
                enough = 1 if method.name in PUSH_METHODS else MAX_STREAM_MESSAGES
                for n, _ in enumerate(responses, 1):
                    if n >= enough:
                        responses.cancel()  # the rest would be read the same way
                        return grpc.StatusCode.OK
            else:
                self.channel.unary_unary(path, **ident)(raw, timeout=CALL_TIMEOUT)
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    def check_after(self, what: str, code: grpc.StatusCode | None = None) -> None:
        if code is not None:
            STATUSES[code.name] += 1
        assert code is None or code in ALLOWED, f"{what}: status {code}"
        info = control_pb2.GetServerInfoResponse.FromString(self.channel.unary_unary(
            "/qm_xarray.v1.JobsService/GetServerInfo", request_serializer=None,
            response_deserializer=None)(b"", timeout=CALL_TIMEOUT))
        assert info.implementation == "qm-xarray", f"{what}: the server stopped answering"
        assert self.known_checksum() == self.checksum, f"{what}: the known job's data changed"
        assert not self.errors.records, f"{what}: the server logged {self.errors.records[0].getMessage()!r}"


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    store = qx.ResultStore()
    make_job(store, 7, job_id=KNOWN, state="done")
    scratch = store.create_job(SCRATCH)
    for name, dtype in (("f", "<f8"), ("i", "<i8"), ("b", "|b1"), ("I", "<f8")):
        scratch.add_stream(name, dtype)
    scratch.add_stream("img", "<f8", (2, 5))
    errors = ErrorLog()
    logger = logging.getLogger("qm_xarray.server")
    logger.addHandler(errors)
    try:
        with embedded_server(store) as server:
            t = Target(store, server, errors)
            yield t
            t.channel.close()
    finally:
        logger.removeHandler(errors)
        print(f"\nfuzz cases tried: {dict(COUNTS)} (total {sum(COUNTS.values())}); "
              f"statuses answered: {dict(STATUSES)}")


# QX_FUZZ_EXAMPLES=N fuzzes deeper (the default keeps the file well under 40 s on 2 cores)
EXAMPLES = int(os.environ.get("QX_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


# --------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
def test_every_rpc_takes_any_request(target: Target, method: MethodDescriptor,
                                     record_property: Any) -> None:
    key = f"rpc {method.containing_service.name}.{method.name}"

    @FUZZ
    @given(raw=request_bytes(method) if not method.client_streaming
           else st.lists(request_bytes(method), min_size=1, max_size=4))
    def case(raw: bytes | list[bytes]) -> None:
        COUNTS[key] += 1
        code = target.call(method, raw)
        target.check_after(f"{key} with request {raw!r}", code)

    case()
    record_property("fuzz_cases", COUNTS[key])
    print(f"{key}: {COUNTS[key]} cases")


@pytest.mark.parametrize("service", ["qm.grpc.v2.JobService", "qm_xarray.v1.ProducerService",
                                     "qm_xarray.v1.NoSuchService"])
def test_unknown_methods_are_unimplemented(target: Target, service: str) -> None:
    call = target.channel.unary_unary(f"/{service}/Nope", request_serializer=None,
                                      response_deserializer=None)
    with pytest.raises(grpc.RpcError) as info:
        call(b"\x0a\x03abc", timeout=CALL_TIMEOUT)
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
    COUNTS["unknown method"] += 1
    target.check_after(f"unknown method of {service}")


# A producer's view: random items through qx.RemoteStore (checked locally first, then by the server).
ITEM_DTYPES = ["<f8", "<f4", "<i8", "<i4", "<u1", "|b1", "<c16", "<U3", "O", "<M8[s]"]


@st.composite
def items(draw: st.DrawFn) -> Any:
    dtype = np.dtype(draw(st.sampled_from(ITEM_DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    n = int(np.prod(shape)) if shape else 1
    if dtype.kind == "f":
        values = draw(st.lists(st.sampled_from([0.0, 1.5, -2.0, np.nan, np.inf, 2.0**70]),
                               min_size=n, max_size=n))
    elif dtype.kind in "iub":
        values = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    else:
        values = [1] * n
    if dtype.kind in "UOM":
        return np.array(values, dtype=object).astype(dtype).reshape(shape)
    return np.array(values).astype(dtype).reshape(shape)


APPEND = st.fixed_dictionaries({
    "job": st.sampled_from([KNOWN, SCRATCH, "no-such-job", "", "bad id!"]),
    "stream": st.sampled_from(["f", "i", "b", "img", "I", "nope", ""]),
    "items": st.one_of(items(), st.integers(-2**70, 2**70), st.floats(), st.none(), st.text(max_size=3),
                       st.lists(st.floats(allow_nan=True), max_size=5)),
})

RAW_APPEND = st.fixed_dictionaries({
    "job_id": st.sampled_from([KNOWN, SCRATCH, "no-such-job", ""]),
    "stream": st.sampled_from(["f", "i", "b", "img", "nope"]),
    "count": _integers(-2**31, 2**31 - 1),
    "data": st.one_of(st.binary(max_size=100),
                      st.integers(0, 20).map(lambda n: np.full(n, np.nan).tobytes())),
})


def test_producer_appends_any_input(target: Target, record_property: Any) -> None:
    """Wrong dtypes and shapes, NaN into ints, odd counts, appends after finish, bad ids/names."""
    remote = qx.RemoteStore(target.server.address, timeout=CALL_TIMEOUT)

    @FUZZ
    @given(case=APPEND)
    def through_remote_store(case: dict[str, Any]) -> None:
        COUNTS["producer RemoteStore"] += 1
        try:
            remote.writer(case["job"]).stream(case["stream"]).append(case["items"])
        except QmQuaException as exc:  # refused: locally, or by the server with a client-error status
            text = str(exc)
            assert "INTERNAL" not in text and "UNKNOWN" not in text, text
            if isinstance(exc, QMConnectionError):
                assert isinstance(exc, (qx.errors.JobNotFoundError, qx.errors.StreamNotFoundError)), text
        except (TypeError, ValueError, OverflowError) as exc:  # numpy refusing the input locally
            assert not isinstance(exc, grpc.RpcError), exc
        target.check_after(f"append {case!r}")

    @FUZZ
    @given(requests=st.lists(RAW_APPEND, min_size=1, max_size=4))
    def on_the_wire(requests: list[dict[str, Any]]) -> None:
        COUNTS["producer raw AppendItems"] += 1
        method = control_pb2.DESCRIPTOR.services_by_name["ProducerService"].methods_by_name["AppendItems"]
        raw = [control_pb2.AppendItemsRequest(**r).SerializeToString() for r in requests]
        code = target.call(method, raw)
        target.check_after(f"AppendItems {requests!r}", code)

    through_remote_store()
    on_the_wire()
    # what the scratch job holds is still whole items of each stream
    for name, stream in target.store.job(SCRATCH).streams.items():
        n, pieces = stream.read(0, stream.count)
        assert sum(len(p) for p in pieces) == n * stream.layout.itemsize, name
    total = COUNTS["producer RemoteStore"] + COUNTS["producer raw AppendItems"]
    record_property("fuzz_cases", total)
    print(f"producer appends: {total} cases")


def test_job_lifecycle_calls_in_any_order(target: Target, record_property: Any) -> None:
    """Finish, cancel, data loss, errors and appends in random order on fresh jobs."""
    remote = qx.RemoteStore(target.server.address, timeout=CALL_TIMEOUT)
    actions = st.sampled_from(["finish", "cancel", "mark_dataloss", "add_error", "append", "add_stream"])
    ids = iter(range(10**6))

    @FUZZ
    @given(steps=st.lists(actions, min_size=1, max_size=6))
    def case(steps: list[str]) -> None:
        COUNTS["producer lifecycle"] += 1
        job = remote.create_job(f"life-{next(ids)}", streams=[{"name": "x", "dtype": "<i8"}])
        for k, step in enumerate(steps):
            try:
                if step == "append":
                    job.stream("x").append(np.arange(3))
                elif step == "add_stream":
                    job.add_stream(f"s{k}", "<f4", (2,))
                elif step == "add_error":
                    job.add_error("boom", code=k, severity="warning" if k % 2 else "error")
                else:
                    getattr(job, step)()
            except qx.errors.JobFinishedError:
                pass  # FAILED_PRECONDITION: the job has ended
        target.check_after(f"lifecycle {steps}")

    case()
    record_property("fuzz_cases", COUNTS["producer lifecycle"])
    print(f"producer lifecycle: {COUNTS['producer lifecycle']} cases")
