"""Connection details: parsing, pickling, one channel per process, closing, capabilities."""

from __future__ import annotations

import pickle

import pytest
from dask.base import tokenize

import qm_xarray as qx
from qm_xarray.client import ConnectionDetails, QopCaps, ServerCapabilities, parse_address


@pytest.mark.parametrize(("address", "expected"), [
    ("127.0.0.1:9510", ("127.0.0.1", 9510, None)),
    ("qm://example.org:80/job-7", ("example.org", 80, "job-7")),
    ("[::1]:50051", ("::1", 50051, None)),
])
def test_parse_address(address, expected):
    assert parse_address(address) == expected


@pytest.mark.parametrize("bad", ["localhost", "host:port", ":80", "h:0", "h:70000", 42])
def test_parse_address_refuses_garbage(bad):
    with pytest.raises(ValueError):
        parse_address(bad)


def test_details_pickle_to_the_same_pooled_channel():
    d = ConnectionDetails("127.0.0.1", 1, token="secret", headers=(("x-a", "1"),))
    back = pickle.loads(pickle.dumps(d))
    assert back == d and tokenize(back) == tokenize(d)
    assert back.channel() is d.channel()
    assert ("authorization", "Bearer secret") in d.metadata and "secret" not in repr(d)


def test_connection_and_job_pickle_without_channels(server):
    conn = qx.connect(server.address, timeout=5)
    conn.details.channel()
    job = pickle.loads(pickle.dumps(conn.job("job-x")))
    assert job.id == "job-x" and job.connection.details == conn.details


def test_closed_connection_raises(server, store):
    writer = store.create_job()
    writer.add_stream("I").append([1.0])
    conn = qx.connect(server.address, timeout=5)
    handle = conn.job(writer.id).result_handles["I"]
    conn.close()
    with pytest.raises(qx.QMConnectionError, match="closed"):
        handle.fetch_all()
    assert qx.connect(server.address).job(writer.id).result_handles["I"].count_so_far() == 1


def test_connect_learns_capabilities_and_picks_v2(server):
    conn = qx.connect(server.address)
    assert conn.capabilities.supports(QopCaps.multiple_streams_fetching)
    assert isinstance(conn.service("j"), qx.JobResultApi)


def test_capabilities_qop3_implies_streaming_state():
    caps = ServerCapabilities.build(["__qop3"])
    assert caps.supports_job_streaming_state and not caps.supports_chunk_streaming
    assert ServerCapabilities({QopCaps.qop3}) == caps
