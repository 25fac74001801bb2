"""`qm-xarray serve --upstream`: the relay's options, its credentials (its own tokens apart from
the upstream's), and failing fast with one line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import qm_xarray as qx
from qm_xarray.cli import main
from qm_xarray.testing import StreamKind
from qm_xarray.testing.children import child_env
from qm_xarray.testing.processes import ServerProcess

pytest.importorskip("qm", reason="the QOP stand-in is built from qm-qua's servicers")
from qm_xarray.testing.qop import StandInQop  # noqa: E402

UPSTREAM_TOKEN = "qop-secret-7"
RELAY_TOKEN = "relay-readers-3"
WAIT = 60.0


@pytest.mark.parametrize("argv, text", [
    (["serve", "--job", "j"], "--job needs --upstream"),
    (["serve", "--job", "j", "--follow-new"], "--job and --follow-new need --upstream"),
    (["serve", "--upstream", "127.0.0.1:1", "--job", "j"], "--upstream needs --store DIR"),
    (["serve", "--upstream", "127.0.0.1:1", "--store", "S"], "--job ID (repeatable) or --follow-new"),
    (["serve", "--upstream", "127.0.0.1:1", "--store", "S", "--job", "j", "--capture-deadline", "0"],
     "--capture-deadline"),
])
def test_relay_options_are_checked_before_anything_starts(argv: list[str], text: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and text in captured.err and len(captured.err.strip().splitlines()) == 1


def test_an_upstream_that_does_not_answer_fails_fast_in_the_relays_words(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "qm_xarray", "serve", "--port", "0", "--store",
                             str(tmp_path / "s"), "--upstream", "127.0.0.1:1", "--job", "j"],
                            capture_output=True, text=True, timeout=60, env=child_env())
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "--upstream 127.0.0.1:1" in line and "refused" in line and "--address" not in line
    assert not (tmp_path / "s").exists()  # nothing created for a relay that never started


@pytest.fixture
def guarded_qop() -> Iterator[StandInQop]:
    with StandInQop(3, token=UPSTREAM_TOKEN) as qop:
        qop.add_job("j1", {"I": (StreamKind("<f8"), np.arange(64.0))}, state="done")
        yield qop


def test_the_relay_uses_the_upstream_token_and_its_readers_the_relays(guarded_qop: StandInQop,
                                                                      tmp_path: Path) -> None:
    relay = ServerProcess(tmp_path / "relay", args=["--upstream", guarded_qop.address, "--job", "j1",
                                                    "--token", RELAY_TOKEN],
                          env={"QM_XARRAY_UPSTREAM_TOKEN": UPSTREAM_TOKEN})
    with relay:
        relay.wait_for(lambda line: line.startswith("capture j1: complete"), WAIT)
        with pytest.raises(qx.AuthenticationError):
            qx.connect(relay.address, token=UPSTREAM_TOKEN).job("j1").summary()  # not the relay's
        conn = qx.connect(relay.address, token=RELAY_TOKEN)
        got = conn.job("j1").result_handles.get("I").fetch_all(flat_struct=True)
        assert np.asarray(got).tolist() == list(np.arange(64.0))
        listing = conn.jobs()
        assert UPSTREAM_TOKEN not in repr(listing)  # the upstream's credential never reaches readers
    assert all(md.get("authorization") == f"Bearer {UPSTREAM_TOKEN}" for _, md in guarded_qop.calls
               if md.get("authorization"))


def test_the_relays_own_token_is_never_sent_upstream(guarded_qop: StandInQop, tmp_path: Path) -> None:
    """$QM_XARRAY_TOKEN is the token of the relay's readers: a relay given only that cannot reach an
    upstream that wants it, and says which option to give."""
    env = child_env(QM_XARRAY_TOKEN=UPSTREAM_TOKEN, HOME=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "qm_xarray", "serve", "--port", "0", "--store",
                             str(tmp_path / "s"), "--upstream", guarded_qop.address, "--job", "j1"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "--upstream-token" in result.stderr


def test_the_relay_reaches_an_upstream_over_mutual_tls(tmp_path: Path) -> None:
    from qm_xarray.testing.tls import CertificateAuthority

    ca = CertificateAuthority()
    client_cert, client_key = ca.issue("relay", client=True)
    for name, data in {"ca.pem": ca.certificate, "client.pem": client_cert, "client.key": client_key}.items():
        (tmp_path / name).write_bytes(data)
    server_cert, server_key = ca.issue("127.0.0.1")
    with StandInQop(3, tls=(server_cert, server_key), client_ca=ca.certificate) as qop:
        qop.add_job("t1", {"I": (StreamKind("<f8"), np.arange(9.0))}, state="done")
        relay = ServerProcess(tmp_path / "relay", args=[
            "--upstream", qop.address, "--job", "t1", "--upstream-tls-ca", str(tmp_path / "ca.pem"),
            "--upstream-tls-client-cert", str(tmp_path / "client.pem"),
            "--upstream-tls-client-key", str(tmp_path / "client.key")])
        with relay:
            relay.wait_for(lambda line: line.startswith("capture t1: complete"), WAIT)
            got = qx.connect(relay.address).job("t1").result_handles.get("I").fetch_all(flat_struct=True)
            assert np.asarray(got).tolist() == list(np.arange(9.0))


def test_follow_new_needs_an_upstream_that_lists_its_jobs(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    with StandInQop(2) as qop:
        code = main(["serve", "--port", "0", "--store", str(tmp_path / "s"), "--upstream", qop.address,
                     "--follow-new"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "QOP 2" in err[0] and "--job ID" in err[0]


def test_a_bad_upstream_token_is_named_as_the_upstream_s(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", "--port", "0", "--store", str(tmp_path / "s"), "--upstream", "127.0.0.1:1",
                 "--job", "j", "--upstream-token", "bad token"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--upstream-token" in err[0]
