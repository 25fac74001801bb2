"""The metadata model (qm_xarray/metadata.py): what describe() takes, the rules a job's metadata
keeps against its streams, merging, and the wire and JSON forms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

import qm_xarray as qx
from qm_xarray.errors import QmTypeError, QmValueError, StreamNotFoundError
from qm_xarray.limits import MAX_ATTRS, MAX_METADATA_BYTES
from qm_xarray.metadata import (Coordinate, JobMetadata, MetadataChange, StreamMetadata, change_of,
                                default_dims, names_of, stream_change)
from qm_xarray.streams import StreamSpec

AMPS = np.linspace(0.0, 1.0, 5)
SPECS = names_of([StreamSpec.create("I", shape=(5,), single=True),
                  StreamSpec.create("I_all", shape=(5,), expected_count=3),
                  StreamSpec.create("Q_all", shape=(5,), expected_count=3),
                  StreamSpec.create("n", "<i8", single=True)])
RABI = {"attrs": {"experiment": "rabi", "n_avg": 3, "tags": ["a", "b"]},
        "coords": {"amplitude": Coordinate.create(AMPS, units="V", long_name="drive amplitude"),
                   "iteration": np.arange(3)},
        "streams": {"I": {"dims": ("amplitude",), "units": "V", "long_name": "I quadrature"},
                    "I_all": {"dims": ("iteration", "amplitude")},
                    "Q_all": {"dims": ("iteration", "amplitude")}}}


def described(**kwargs: object) -> JobMetadata:
    meta = JobMetadata().apply(change_of(**kwargs))  # type: ignore[arg-type]
    meta.check(SPECS)
    return meta


def test_a_rabi_description_is_kept_as_given():
    meta = described(**RABI)
    assert meta.attrs == {"experiment": "rabi", "n_avg": 3, "tags": ["a", "b"]}
    assert meta.coords["amplitude"] == Coordinate("amplitude", AMPS, "V", "drive amplitude")
    assert meta.coords["iteration"].values.dtype == np.int64
    assert meta.streams["I"] == StreamMetadata(("amplitude",), "V", "I quadrature")
    assert meta.dims_of(SPECS["n"]) == () and meta.dims_of(SPECS["I_all"]) == ("iteration", "amplitude")


@pytest.mark.parametrize("given", [
    AMPS,
    ("amplitude", AMPS, {"units": "V", "long_name": "drive amplitude"}),
    xr.DataArray(AMPS, dims="amplitude", attrs={"units": "V", "long_name": "drive amplitude"}),
    Coordinate.create(AMPS, "V", "drive amplitude"),
], ids=["values", "tuple", "dataarray", "coordinate"])
def test_coordinates_come_in_the_forms_xarray_takes(given):
    coord = Coordinate.coerce("amplitude", given)
    assert coord.dim == "amplitude" and np.array_equal(coord.values, AMPS)
    if not isinstance(given, np.ndarray):
        assert coord.attrs == {"units": "V", "long_name": "drive amplitude"}


def test_text_and_bool_coordinates():
    text = Coordinate.create(["g", "e"], dim="state")
    assert text.values.tolist() == ["g", "e"]
    assert Coordinate.from_message(text.to_message("label")) == text
    flags = Coordinate.create([True, False], dim="x")
    assert Coordinate.from_json("x", json.loads(json.dumps(flags.to_json()))) == flags


@pytest.mark.parametrize(("change", "error", "says"), [
    ({"coords": {"amplitude": np.arange(6.0)}}, QmValueError, "longer than dimension 'amplitude'"),
    ({"coords": {"amplitude": np.arange(4.0)}}, QmValueError, "shorter than dimension 'amplitude'"),
    ({"coords": {"iteration": np.arange(4)}}, QmValueError, "longer than the 3 items"),
    ({"coords": {"flux": np.arange(4)}}, QmValueError, "no stream has"),
    ({"coords": {"I": ("amplitude", AMPS)}}, QmValueError, "name of a stream"),
    ({"coords": {"amplitude": ("iteration", np.arange(3))}}, QmValueError, "name of a dimension"),
    ({"coords": {"amplitude": np.ones((5, 1))}}, QmValueError, "must be 1-D"),
    ({"coords": {"amplitude": np.array([1j] * 5)}}, QmTypeError, "complex"),
    ({"streams": {"X": {"dims": ("a",)}}}, StreamNotFoundError, "does not have"),
    ({"streams": {"I": {"dims": ("a", "b")}}}, QmValueError, "has 1 buffer axes"),
    ({"streams": {"I_all": {"dims": ("amplitude",)}}}, QmValueError, "the item axis, then"),
    ({"streams": {"I_all": {"dims": ("a", "a")}}}, QmValueError, "repeat a name"),
    ({"streams": {"I_all": {"dims": ("amplitude", "x")}}}, QmValueError, "item axis of"),
    ({"streams": {"I_all": {"dims": ("I", "x")}}}, QmValueError, "name of the stream"),
    ({"streams": {"I": {"color": "red"}}}, QmValueError, "unknown fields"),
    ({"streams": {"I": {"units": 5}}}, QmTypeError, "units of stream"),
    ({"streams": {"I": {"units": "V" * 300}}}, QmValueError, "at most"),
    ({"attrs": {"config": {"a": 1}}}, QmTypeError, "json.dumps"),
    ({"attrs": {"when": object()}}, QmTypeError, "not a JSON value"),
    ({"attrs": {"x": float("nan")}}, QmValueError, "NaN"),
    ({"attrs": {"qm_job_id": "x"}}, QmValueError, "qm-xarray's own"),
    ({"attrs": {"bad name": 1}}, QmValueError, "attribute name"),
    ({"attrs": ["experiment"]}, QmTypeError, "mapping"),
])
def test_bad_metadata_is_refused_with_a_typed_error_that_names_it(change, error, says):
    base = described(**RABI)
    with pytest.raises(error, match=says):
        base.apply(change_of(**change)).check(SPECS)


def test_a_dimension_keeps_one_size_across_streams():
    specs = names_of([StreamSpec.create("a", shape=(5,), single=True),
                      StreamSpec.create("b", shape=(4,), single=True)])
    meta = JobMetadata().apply(change_of(streams={"a": {"dims": "x"}, "b": {"dims": "x"}}))
    with pytest.raises(QmValueError, match="different sizes"):
        meta.check(specs)


def test_too_many_or_too_large_is_refused():
    with pytest.raises(QmValueError, match=f"at most {MAX_ATTRS}"):
        described(attrs={f"a{i}": i for i in range(MAX_ATTRS + 1)})
    with pytest.raises(QmValueError, match=f"at most {MAX_METADATA_BYTES}"):
        described(attrs={"program": "x" * (MAX_METADATA_BYTES + 1)})


def test_describe_merges_removes_and_replaces():
    meta = described(**RABI)
    merged = meta.apply(change_of(attrs={"user": "ada", "n_avg": None}, coords={"iteration": None},
                                  streams={"I": {"units": "mV"}, "Q_all": None}))
    assert merged.attrs == {"experiment": "rabi", "tags": ["a", "b"], "user": "ada"}
    assert set(merged.coords) == {"amplitude"} and set(merged.streams) == {"I", "I_all"}
    assert merged.streams["I"] == StreamMetadata(("amplitude",), "mV", "I quadrature")  # one field changed
    assert meta.apply(change_of(attrs={"user": "ada"}, replace=True)) == JobMetadata({"user": "ada"})


def test_stream_change_describes_one_stream_and_its_coordinates():
    change = stream_change("I", dims="amplitude", units="V", coords={"amplitude": AMPS})
    meta = JobMetadata().apply(change)
    meta.check(SPECS)
    assert meta.streams == {"I": StreamMetadata(("amplitude",), "V", None)}
    assert set(meta.coords) == {"amplitude"}


def test_wire_and_json_forms_round_trip():
    meta = described(**RABI)
    assert JobMetadata.from_message(meta.to_message()) == meta
    assert JobMetadata.from_json(json.loads(json.dumps(meta.to_json()))) == meta
    change = change_of(attrs={"user": None}, coords={"iteration": None}, streams={"I": None}, replace=True)
    assert MetadataChange.from_request(change.to_request("j")) == change


def test_unset_and_empty_stay_apart_on_the_wire():
    meta = JobMetadata(streams={"n": StreamMetadata(dims=(), units=None, long_name="")})
    assert JobMetadata.from_message(meta.to_message()) == meta


def test_default_dims_are_those_of_the_engine():
    assert default_dims("I", False, 2) == ("I_item", "I_dim_0", "I_dim_1")
    assert default_dims("I", True, 1) == ("I_dim_0",)
    assert default_dims("I", False, 0, item_dim="item") == ("item",)


def test_public_names():
    assert qx.Coordinate is Coordinate and qx.JobMetadata is JobMetadata and qx.StreamMetadata is StreamMetadata
