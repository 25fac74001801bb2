"""First contact: the gateway redirect, detection, TLS and mutual TLS, the token lookup order, and
failing fast (with what to do) where no server answers."""

from __future__ import annotations

import json
import pickle
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import qm_xarray as qx
from qm_xarray.client import config
from qm_xarray.client.discovery import parse_location
from qm_xarray.errors import QmValueError
from qm_xarray.testing import Redirector
from qm_xarray.testing.tls import CertificateAuthority, self_signed_certificate


@pytest.fixture
def served() -> Iterator[qx.ResultsServer]:
    store = qx.ResultStore()
    writer = store.create_job(job_id="j")
    writer.add_stream("I").append(np.arange(4.0))
    writer.finish()
    with qx.serve(store) as server:
        yield server


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty home directory and no token in the environment."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(config.TOKEN_ENV, raising=False)
    monkeypatch.delenv(config.CONNECT_TIMEOUT_ENV, raising=False)
    return tmp_path


def _read(conn: qx.Connection) -> np.ndarray:
    return np.asarray(conn.job("j").result_handles.get("I").fetch_all(flat_struct=True))


# -- metadata and the token ------------------------------------------------------------------------


def test_metadata_is_sent_as_qm_qua_sends_it():
    d = qx.ConnectionDetails("h", 1, token="T", headers={"X-Extra": "1", "authorization": "mine",
                                                       "x-grpc-service": "other"})
    assert d.metadata == (("x-extra", "1"), ("x-grpc-service", "gateway"), ("authorization", "Bearer T"),
                          ("cluster_name", "any"), ("any_cluster", "true"))
    named = qx.ConnectionDetails("h", 1, cluster_name="lab-a", headers={"authorization": "Basic x"})
    assert named.metadata == (("authorization", "Basic x"), ("x-grpc-service", "gateway"),
                              ("cluster_name", "lab-a"))
    assert pickle.loads(pickle.dumps(named)).metadata == named.metadata


def test_token_lookup_order(home: Path, monkeypatch: pytest.MonkeyPatch):
    assert config.resolve_token(None) is None
    (home / ".qm").mkdir()
    (home / ".qm" / "config.json").write_text(json.dumps({"quantumMachinesManager_user_token": "file-T"}))
    assert config.resolve_token(None) == "file-T"
    monkeypatch.setenv(config.TOKEN_ENV, "env-T")
    assert config.resolve_token(None) == "env-T"
    assert config.resolve_token("arg-T") == "arg-T"
    assert config.resolve_token("") is None  # an explicit empty token sends none
    (home / ".qm" / "config.json").write_text("{not json")
    monkeypatch.delenv(config.TOKEN_ENV)
    assert config.resolve_token(None) is None  # an unreadable file is ignored (and logged)


def test_the_token_from_qm_quas_config_reaches_a_guarded_server(home: Path):
    (home / ".qm").mkdir()
    (home / ".qm" / "config.json").write_text(json.dumps({"quantumMachinesManager_user_token": "T1"}))
    store = qx.ResultStore()
    store.create_job(job_id="j").add_stream("I").append([1.0])
    with qx.serve(store, token="T1") as server:
        assert qx.connect(server.address).job("j").result_handles.get("I").count_so_far() == 1
        with pytest.raises(qx.AuthenticationError, match="wrong token for GetInfo"):
            qx.connect(server.address, token="other")


def test_without_a_port_the_configured_one_then_80_are_tried(home: Path, served: qx.ResultsServer):
    assert config.default_ports() == [80]
    (home / ".qm").mkdir()
    (home / ".qm" / "config.json").write_text(json.dumps({"quantumMachinesManager_port": served.port}))
    assert config.default_ports() == [served.port, 80]
    assert qx.connect("127.0.0.1").details.port == served.port
    with pytest.raises(QmValueError, match="two ports"):
        qx.connect(served.address, port=served.port + 1)


def test_connect_timeout_from_the_environment_is_validated(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(config.CONNECT_TIMEOUT_ENV, "abc")
    with pytest.raises(QmValueError, match="QM_XARRAY_CONNECT_TIMEOUT='abc' is not a number"):
        config.connect_timeout()
    monkeypatch.setenv(config.CONNECT_TIMEOUT_ENV, "-1")
    with pytest.raises(QmValueError, match="positive"):
        config.connect_timeout()
    monkeypatch.setenv(config.CONNECT_TIMEOUT_ENV, "2.5")
    assert config.connect_timeout() == 2.5 and config.connect_timeout(7) == 7.0


# -- the gateway redirect ----------------------------------------------------------------------------


def test_a_gateway_redirect_is_followed(served: qx.ResultsServer):
    with Redirector(served.address) as gateway:
        conn = qx.connect(gateway.address, token="T", cluster_name="lab-a")
        assert (conn.details.host, conn.details.port) == ("127.0.0.1", served.port)
        assert conn.details.origin == gateway.address
        np.testing.assert_array_equal(_read(conn), np.arange(4.0))
        (probe,) = gateway.requests
        assert (probe[":method"], probe[":path"], probe["content-type"], probe["te"]) == \
            ("POST", "/", "application/grpc", "trailers")
        assert (probe["x-grpc-service"], probe["authorization"], probe["cluster_name"]) == \
            ("gateway", "Bearer T", "lab-a")
        back = pickle.loads(pickle.dumps(conn))  # workers go to the target, without a probe
        assert back.details == conn.details and back.server == conn.server


def test_a_redirect_can_be_ignored(served: qx.ResultsServer):
    with Redirector(served.address) as gateway:
        with pytest.raises(qx.ServerUnreachableError) as info:  # the redirector speaks no gRPC
            qx.connect(gateway.address, follow_redirects=False, connect_timeout=2)
        assert info.value.kind == "not-grpc" and "follow_redirects=True" in str(info.value)


def test_a_gateway_without_the_cluster_says_so():
    with Redirector(None, status=400) as gateway:
        with pytest.raises(qx.ClusterNotFoundError, match="no cluster named 'lab-z'"):
            qx.connect(gateway.address, cluster_name="lab-z")


@pytest.mark.parametrize(("location", "expected"), [
    ("127.0.0.1:5555", ("127.0.0.1", 5555)), ("10.1.2.3:80/qm/path", ("10.1.2.3", 80)),
    ("localhost:9510", ("localhost", 9510)), ("http://127.0.0.1:81", ("127.0.0.1", 81)),
    ("[::1]:82/x", ("::1", 82)),
])
def test_redirect_locations(location, expected):
    assert parse_location(location) == expected


def test_a_redirect_without_a_port_is_an_error():
    with pytest.raises(qx.QMConnectionError, match="has no port"):
        parse_location("gateway.lab")


# -- TLS ---------------------------------------------------------------------------------------------


@pytest.fixture
def tls_job() -> qx.ResultStore:
    store = qx.ResultStore()
    writer = store.create_job(job_id="j")
    writer.add_stream("I").append(np.arange(4.0))
    writer.finish()
    return store


def test_mutual_tls(tls_job: qx.ResultStore, tmp_path: Path):
    ca = CertificateAuthority()
    cert, key = ca.issue("localhost")
    client_cert, client_key = ca.issue("analysis", client=True)
    for name, pem in {"ca": ca.certificate, "cert": client_cert, "key": client_key}.items():
        (tmp_path / f"{name}.pem").write_bytes(pem)
    with qx.serve(tls_job, tls=(cert, key), client_ca=ca.certificate) as server:
        creds = qx.TlsCredentials.from_files(ca=tmp_path / "ca.pem", cert=tmp_path / "cert.pem",
                                             key=tmp_path / "key.pem")
        conn = qx.connect(server.address, tls=creds)
        np.testing.assert_array_equal(_read(conn), np.arange(4.0))
        moved = pickle.loads(pickle.dumps(conn))  # the PEM bytes travel, not the file names
        for name in ("ca", "cert", "key"):
            (tmp_path / f"{name}.pem").unlink()
        np.testing.assert_array_equal(_read(moved), np.arange(4.0))
        with pytest.raises(qx.ServerUnreachableError) as info:  # no client certificate
            qx.connect(server.address, tls=ca.certificate)
        assert info.value.kind == "tls"
    with pytest.raises(QmValueError, match="both"):
        qx.TlsCredentials(ca.certificate, client_cert, None)


def test_tls_mismatches_fail_at_once_and_say_what_to_do(tls_job: qx.ResultStore):
    cert, key = self_signed_certificate()
    other, _ = self_signed_certificate()
    with qx.serve(tls_job, tls=(cert, key)) as server:
        with pytest.raises(qx.ServerUnreachableError) as info:
            qx.connect(server.address, connect_timeout=30)  # plaintext to a TLS port
        assert info.value.kind == "closed" and "connect with TLS" in str(info.value)
        with pytest.raises(qx.ServerUnreachableError) as info:
            qx.connect(server.address, tls=other, connect_timeout=30)  # a CA that did not sign it
        assert info.value.kind == "tls" and "check the TLS options" in str(info.value)
        np.testing.assert_array_equal(_read(qx.connect(server.address, tls=cert)), np.arange(4.0))


# -- failing fast ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_port_where_nothing_listens_fails_at_once_with_a_hint():
    port = _free_port()
    with pytest.raises(qx.ServerUnreachableError) as info:
        qx.connect(f"127.0.0.1:{port}", connect_timeout=60)  # refused: no waiting for the deadline
    assert info.value.kind == "refused"
    assert str(info.value) == (f"cannot reach a results server at 127.0.0.1:{port}: nothing listens "
                               "there (connection refused); start a server (`qm-xarray serve`), or "
                               "check the host and port")
    assert isinstance(info.value, qx.QMConnectionError) and not isinstance(info.value, qx.QMTimeoutError)


def test_an_unknown_host_fails_at_once():
    with pytest.raises(qx.ServerUnreachableError) as info:
        qx.connect("no-such-host.invalid:9510", connect_timeout=60)
    assert info.value.kind == "unknown-host" and "check the host name" in str(info.value)


def test_a_server_that_never_answers_fails_by_the_deadline():
    """A listening socket that accepts and never speaks: the first contact ends at its deadline."""
    with socket.socket() as quiet:
        quiet.bind(("127.0.0.1", 0))
        quiet.listen(8)
        address = f"127.0.0.1:{quiet.getsockname()[1]}"
        with pytest.raises(qx.ServerUnreachableError) as info:
            qx.connect(address, connect_timeout=0.5)
        assert info.value.kind == "timeout" and "no answer within 0.5 s" in str(info.value)


def test_open_dataset_of_an_address_where_nothing_listens_fails_at_once():
    import xarray as xr

    port = _free_port()
    with pytest.raises(qx.ServerUnreachableError, match="connection refused"):
        xr.open_dataset(f"qm://127.0.0.1:{port}/job", engine="qm", timeout=60)


def test_a_server_that_answered_and_dropped_is_still_retried(served: qx.ResultsServer):
    """Retries stay for servers that were reached: a restart within the deadline is ridden out."""
    conn = qx.connect(served.address)
    handle = conn.job("j").result_handles.get("I")
    port = served.port
    served.stop(grace=None)
    restarted: list[qx.ResultsServer] = []

    def restart() -> None:
        restarted.append(qx.serve(served.store, port=port))

    timer = threading.Timer(0.5, restart)
    timer.start()
    try:
        np.testing.assert_array_equal(handle.fetch_all(flat_struct=True), np.arange(4.0))
    finally:
        timer.join()
        for server in restarted:
            server.stop(grace=None)
