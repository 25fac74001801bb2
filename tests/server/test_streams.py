"""Stream declarations: one `StreamSpec`, parsed and checked once, used by every producer path."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import qm_xarray as qx
from qm_xarray.errors import QmInvalidSchemaError, QmTypeError, QmValueError
from qm_xarray.limits import MAX_COUNT
from qm_xarray.producer import RemoteStore
from qm_xarray.simulator import StreamDecl
from qm_xarray.streams import StreamSpec, declarations
from qm_xarray.testing import STREAM_KINDS, StreamKind, embedded_server


def test_create_normalises_the_declaration() -> None:
    spec = StreamSpec.create("flags", bool, 3, single=1, timestamps=0, expected_count=np.int64(5))
    assert spec == StreamSpec("flags", "|b1", (3,), True, False, 5)
    assert (type(spec.expected_count), spec.layout.itemsize, spec.item_bytes) == (int, 3, 3)
    assert StreamSpec.create("ts", "f8", [2, 2], timestamps=True).dtype == "<f8"
    assert StreamSpec.create("ts", "f8", [2, 2], timestamps=True).item_bytes == 40


@pytest.mark.parametrize(("args", "error", "message"), [
    (("bad name",), QmValueError, "invalid stream name 'bad name': use letters, digits and _ . : -"),
    ((5,), QmValueError, "invalid stream name 5"),
    (("I", "<U4"), QmInvalidSchemaError, "invalid element dtype '<U4'"),
    (("I", "<f8", (0,)), QmInvalidSchemaError, "every dimension must be >= 1"),
    (("I", "<f8", (), False, False, -1), QmValueError,
     f"stream 'I': expected_count must be an int in [0, {MAX_COUNT}]"),
    (("I", "<f8", (), False, False, True), QmValueError, "expected_count must be an int"),
    (("I", "<f8", (), False, False, 2.0), QmValueError, "expected_count must be an int"),
])
def test_create_refuses_what_a_store_refuses(args: tuple[object, ...], error: type[Exception],
                                             message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        StreamSpec.create(*args)
    with pytest.raises(error):  # the store says the same, through the same spec
        qx.ResultStore().create_job().add_stream(*args)


def test_parse_checks_only_what_the_wire_needs() -> None:
    assert StreamSpec.parse("bad name!", expected_count=2.0) == StreamSpec("bad name!", expected_count=2)
    with pytest.raises(QmTypeError, match="stream name must be a string, got int"):
        StreamSpec.parse(5)
    with pytest.raises(QmTypeError, match="expected_count must be an int, got 'x'"):
        StreamSpec.parse("I", expected_count="x")
    with pytest.raises(QmInvalidSchemaError):
        StreamSpec.parse("I", "<U4")


def test_message_round_trip() -> None:
    for name, kind in STREAM_KINDS.items():
        spec = StreamSpec.create(name, kind.dtype, kind.shape, kind.single, kind.timestamps, 7)
        assert StreamSpec.from_message(spec.to_message()) == spec


def test_declarations_take_specs_dicts_and_mappings() -> None:
    want = [StreamSpec("a", shape=(3,)), StreamSpec("b", "|b1", single=True)]
    assert declarations([{"name": "a", "shape": (3,)}, {"name": "b", "dtype": bool, "single": True}]) == want
    assert declarations({"a": {"shape": [3]}, "b": {"dtype": "?", "single": 1}}) == want
    assert declarations([StreamSpec("a", "f8", (3,)), want[1]]) == want
    with pytest.raises(QmValueError, match=r"stream 'x': unknown options \['colour'\]"):
        declarations([{"name": "x", "colour": "red"}])
    with pytest.raises(QmValueError, match="invalid stream name"):
        declarations([StreamSpec("bad name")])  # a spec built directly is checked too


def test_kinds_and_experiment_declarations_are_specs() -> None:
    kind = StreamKind("<i8", (4,), timestamps=True)
    assert isinstance(kind, StreamSpec) and StreamDecl is StreamSpec
    assert (kind.dtype, kind.shape, kind.single, kind.timestamps) == ("<i8", (4,), False, True)
    assert kind == StreamKind("<i8", (4,), False, True) and kind != StreamKind("<i8", (4,))
    assert repr(kind) == "StreamKind(dtype='<i8', shape=(4,), single=False, timestamps=True)"
    job = qx.ResultStore().create_job()
    writer = kind.declare(job, "adc", 3)
    assert job.job.stream("adc").spec == StreamSpec("adc", "<i8", (4,), False, True, 3)
    assert writer.layout == kind.layout
    decl = StreamDecl("I", "<f8", (2,), single=True, expected_count=1)
    assert decl.declare(job).name == "I" and job.declare(StreamSpec("Q")).name == "Q"


def test_every_producer_path_keeps_the_same_spec(tmp_path: Path) -> None:
    spec = StreamSpec.create("img", "<i4", (2, 5), False, True, 9)
    with qx.ResultStore(tmp_path / "store") as store, embedded_server(store) as server:
        remote = RemoteStore(server.address)
        created = remote.create_job("by-create", streams=[spec])
        added = remote.create_job("by-add")
        added.declare(spec)
        assert created.stream("img").spec == added.stream("img").spec == spec
        local = store.create_job("local", streams={"img": {"dtype": "i4", "shape": (2, 5),
                                                         "timestamps": True, "expected_count": 9}})
        for job_id in ("by-create", "by-add", "local"):
            assert store.job(job_id).stream("img").spec == spec
        assert local.job.record().streams == (spec,)
    with qx.ResultStore(tmp_path / "store") as reopened:  # and the durable store
        assert [reopened.job(j).stream("img").spec for j in ("by-create", "by-add", "local")] == [spec] * 3
