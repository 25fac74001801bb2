"""Metadata kept with the job: the local and remote producer API, the store in memory and on disk
(across a restart), the service's checks (a refused change changes nothing) and its token."""

from __future__ import annotations

import json

import numpy as np
import pytest

import qm_xarray as qx
from qm_xarray import AuthenticationError
from qm_xarray.errors import (InvalidArgumentError, QmValueError,
                              StreamNotFoundError)
from qm_xarray.metadata import Coordinate, JobMetadata, StreamMetadata
from qm_xarray.testing import embedded_server

AMPS = np.linspace(0.0, 1.99, 4)
STREAMS = [{"name": "I", "shape": (4,), "single": True},
           {"name": "I_all", "shape": (4,), "expected_count": 10}]
RABI = {"attrs": {"experiment": "rabi", "user": "ada"},
        "coords": {"amplitude": Coordinate.create(AMPS, units="V", long_name="drive amplitude")},
        "streams": {"I": {"dims": "amplitude", "units": "V", "long_name": "I quadrature"},
                    "I_all": {"dims": ("iteration", "amplitude"), "units": "V"}}}
EXPECTED = JobMetadata({"experiment": "rabi", "user": "ada"},
                       {"amplitude": Coordinate("amplitude", AMPS, "V", "drive amplitude")},
                       {"I": StreamMetadata(("amplitude",), "V", "I quadrature"),
                        "I_all": StreamMetadata(("iteration", "amplitude"), "V", None)})


@pytest.fixture(params=["memory", "durable"])
def store(request, tmp_path):
    with qx.ResultStore(None if request.param == "memory" else tmp_path / "store") as s:
        yield s


def test_describe_at_creation_and_later(store):
    job = store.create_job("a", streams=STREAMS, metadata={"attrs": {"experiment": "rabi"}})
    assert store.job("a").metadata == JobMetadata({"experiment": "rabi"})
    job.describe(attrs={"user": "ada"}, coords=RABI["coords"], streams={"I": RABI["streams"]["I"]})
    kept = job.stream("I_all").describe(dims=("iteration", "amplitude"), units="V")
    assert kept == EXPECTED == store.job("a").metadata


def test_the_durable_store_keeps_metadata_across_a_restart(tmp_path):
    with qx.ResultStore(tmp_path / "s") as store:
        store.create_job("a", streams=STREAMS, metadata=RABI).finish()
        store.create_job("b", streams=STREAMS)
    with qx.ResultStore(tmp_path / "s") as store:
        assert store.job("a").metadata == EXPECTED
        assert store.job("b").metadata == JobMetadata()
        store.writer("a").describe(attrs={"note": "after the run"})  # an ended job can be described
    with qx.ResultStore(tmp_path / "s") as store:
        assert store.job("a").metadata.attrs["note"] == "after the run"


def test_a_refused_change_changes_nothing(store):
    job = store.create_job("a", streams=STREAMS, metadata=RABI)
    version = store.job("a").version
    on_disk = (store.path / "jobs" / "a" / "job.json").read_text() if store.path else None
    for bad in ({"coords": {"amplitude": np.arange(5.0)}},   # longer than its dimension
                {"attrs": {"fine": 1, "config": {"not": "json text"}}},
                {"streams": {"X": {"units": "V"}}}):
        with pytest.raises((QmValueError, TypeError, StreamNotFoundError)):
            job.describe(**bad)
    assert store.job("a").metadata == EXPECTED and store.job("a").version == version
    if on_disk is not None:
        assert (store.path / "jobs" / "a" / "job.json").read_text() == on_disk


def test_bad_metadata_at_creation_creates_no_job(store):
    with pytest.raises(QmValueError, match="longer than"):
        store.create_job("a", streams=STREAMS, metadata={"coords": {"amplitude": ("amplitude", np.arange(9))},
                                                         "streams": {"I": {"dims": "amplitude"}}})
    assert store.jobs() == []


def test_a_stream_added_later_may_not_clash_with_the_metadata(store):
    job = store.create_job("a", streams=STREAMS, metadata=RABI)
    with pytest.raises(QmValueError, match="has the name of the stream 'amplitude'"):
        job.add_stream("amplitude")
    assert list(store.job("a").streams) == ["I", "I_all"]


def test_remote_producer_round_trip(store):
    with embedded_server(store) as srv:
        remote = qx.RemoteStore(srv.address)
        job = remote.create_job("a", streams=STREAMS, metadata={"attrs": RABI["attrs"]})
        job.describe(coords=RABI["coords"], streams={"I": RABI["streams"]["I"]})
        kept = job.stream("I_all").describe(dims=("iteration", "amplitude"), units="V")
        assert kept == EXPECTED == store.job("a").metadata
        assert qx.connect(srv.address).job("a").metadata() == EXPECTED
        with pytest.raises(InvalidArgumentError, match="longer than dimension 'amplitude'"):
            job.describe(coords={"amplitude": np.arange(5.0)})
        with pytest.raises(StreamNotFoundError, match="does not have"):
            job.describe(streams={"X": {"units": "V"}})
        with pytest.raises(TypeError, match="json.dumps"):  # checked before sending
            job.describe(attrs={"config": {"a": 1}})
        assert store.job("a").metadata == EXPECTED


def test_qx_describe_from_the_client_side(store):
    store.create_job("a", streams=STREAMS).finish()
    with embedded_server(store) as srv:
        job = qx.connect(srv.address).job("a")
        kept = qx.describe(job, **RABI)
        assert kept == EXPECTED == job.metadata()
        assert job.describe(attrs={"user": None}).attrs == {"experiment": "rabi"}


def test_qx_describe_takes_the_producer_token(store):
    store.create_job("a", streams=STREAMS)
    with embedded_server(store, token="reader", producer_token="writer") as srv:
        job = qx.connect(srv.address, token="reader").job("a")
        with pytest.raises(AuthenticationError):
            qx.describe(job, attrs={"user": "eve"})
        assert job.metadata() == JobMetadata()
        qx.describe(job, attrs={"user": "ada"}, token="writer")
        assert job.metadata().attrs == {"user": "ada"}


def test_metadata_is_not_in_job_listings(store):
    """Listings stay small however large the coordinates: metadata has its own call."""
    store.create_job("a", streams=STREAMS, metadata=RABI)
    with embedded_server(store) as srv:
        summary = qx.connect(srv.address).job("a").summary()
        assert "amplitude" not in json.dumps([s.__dict__ for s in summary.streams])


def test_with_only_a_producer_token_readers_get_metadata_without_one(store):
    """Metadata is part of reading a job: guarded like the results, not like the producer side."""
    store.create_job("a", streams=STREAMS, metadata=RABI)
    with embedded_server(store, producer_token="writer") as srv:
        job = qx.connect(srv.address).job("a")
        assert job.metadata() == EXPECTED
        with pytest.raises(AuthenticationError):
            job.describe(attrs={"user": "eve"})
