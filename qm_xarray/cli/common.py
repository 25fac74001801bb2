"""What the commands share: defaults, the client options (address, token, TLS), connecting to a
server and naming a job on it, reading PEM files and zarr stores, and printing JSON.

Commands raise `UsageError` for bad input found after parsing (exit code 2); `main` reports every
other failure as one line too (exit code 1).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..client import config
from ..client.connection import ConnectionDetails, TlsCredentials, close_channels, parse_address
from ..client.discovery import ClusterNotFoundError, ServerUnreachableError
from ..client.jobs import JobSummary
from ..errors import JobNotFoundError, QMConnectionError, QmValueError
from ..lazy.options import check_interval
from ..session import Connection, connect

__all__ = ["UsageError", "positive_seconds", "DEFAULT_PORT", "DEFAULT_ADDRESS", "RPC_TIMEOUT", "TOKEN_ENV", "add_producer_target",
           "PRODUCER_TOKEN_ENV", "connect_timeout", "add_address", "add_json", "add_credentials",
           "Credentials", "credentials", "check_token", "read_pem", "job_ref", "connected", "summary",
           "print_json", "looks_like_path", "open_store"]

DEFAULT_PORT = 9510
DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_PORT}"
RPC_TIMEOUT = 120.0      # deadline of data RPCs of export and plot
TOKEN_ENV = config.TOKEN_ENV
PRODUCER_TOKEN_ENV = "QM_XARRAY_PRODUCER_TOKEN"
UPSTREAM_TOKEN_ENV = "QM_XARRAY_UPSTREAM_TOKEN"  # a relay's credential for its upstream


class UsageError(Exception):
    """Bad command-line input detected after parsing (exit code 2)."""


def connect_timeout() -> float:
    """Seconds to reach a server: the client's rule (`$QM_XARRAY_CONNECT_TIMEOUT`, checked, else
    5 s), read at each use."""
    return config.connect_timeout()


# --------------------------------------------------------------------------------------- options
def add_address(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=DEFAULT_ADDRESS, metavar="HOST:PORT",
                   help=f"results server (default {DEFAULT_ADDRESS})")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON (for scripts)")


def add_producer_target(p: argparse.ArgumentParser, timeout: float) -> None:
    """`--address` and `--timeout` of a command that writes through the producer service."""
    p.add_argument("--address", default=DEFAULT_ADDRESS, help=f"server HOST:PORT (default {DEFAULT_ADDRESS})")
    p.add_argument("--timeout", type=float, default=timeout, help="deadline of each RPC, seconds")
    add_credentials(p, producer=True)


def add_credentials(p: argparse.ArgumentParser, producer: bool = False) -> None:
    """`--token` and `--tls-ca` of a command that talks to a server (`producer`: it writes)."""
    env = f"${PRODUCER_TOKEN_ENV}, else ${TOKEN_ENV}" if producer else \
        f"${TOKEN_ENV}, else qm-qua's ~/.qm/config.json"
    p.add_argument("--token", default=None, metavar="TOKEN",
                   help=f"bearer token the server requires (default: {env}; prefer the variable, "
                        "a command line is visible to other users; '' sends none)")
    p.add_argument("--tls-ca", default=None, metavar="PEM",
                   help="connect with TLS, trusting the certificate in this PEM file (the server's "
                        "self-signed certificate, or its CA)")
    if not producer:
        p.add_argument("--tls-client-cert", default=None, metavar="PEM",
                       help="client certificate for servers that require mutual TLS (with "
                            "--tls-client-key)")
        p.add_argument("--tls-client-key", default=None, metavar="PEM",
                       help="private key of --tls-client-cert")
        p.add_argument("--cluster-name", default=None, metavar="NAME",
                       help="cluster of a QOP gateway (default: any)")


def check_token(token: str | None, source: str) -> str | None:
    """`token` if it can be sent as a header value (the client's rule); None if empty (no token)."""
    try:
        return config.check_token(token or "", source)
    except QmValueError as exc:
        raise UsageError(str(exc)) from None


def env_token(*names: str) -> str | None:
    """The token of the first of these environment variables that is set and not empty."""
    for name in names:
        if os.environ.get(name):
            return check_token(os.environ[name], f"${name}")
    return None


def read_pem(path: str, option: str, kind: str) -> bytes:
    """The bytes of a PEM file holding a `kind` block (CERTIFICATE, PRIVATE KEY); one-line errors."""
    file = Path(path).expanduser()
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise OSError(f"{option} {path}: cannot read it: {exc.strerror or exc}") from None
    if not re.search(rb"-----BEGIN [A-Z0-9 ]*" + kind.encode() + rb"-----", data):
        raise QmValueError(f"{option} {path}: no PEM {kind.lower()} in this file")
    return data


@dataclass(frozen=True)
class Credentials:
    """What a client command presents: a bearer token, TLS material and a gateway cluster name."""

    token: str | None = None
    tls: TlsCredentials | None = None
    cluster_name: str | None = None

    def details(self, address: str, timeout: float) -> ConnectionDetails:
        return ConnectionDetails.from_address(address, timeout=timeout, token=self.token, tls=self.tls,
                                              cluster_name=self.cluster_name)


def credentials(args: argparse.Namespace, producer: bool = False) -> Credentials:
    """The token (`--token`, else the environment, else qm-qua's ~/.qm/config.json for readers),
    TLS (`--tls-ca`, `--tls-client-cert/-key`) and `--cluster-name` the options give."""
    if args.token is not None:
        token = check_token(args.token, "--token")
    elif producer:
        token = env_token(PRODUCER_TOKEN_ENV, TOKEN_ENV)
    else:
        token = config.resolve_token(None)
    ca = read_pem(args.tls_ca, "--tls-ca", "CERTIFICATE") if args.tls_ca is not None else None
    cert_path, key_path = getattr(args, "tls_client_cert", None), getattr(args, "tls_client_key", None)
    if (cert_path is None) != (key_path is None):
        raise UsageError("--tls-client-cert and --tls-client-key go together")
    cert = read_pem(cert_path, "--tls-client-cert", "CERTIFICATE") if cert_path else None
    key = read_pem(key_path, "--tls-client-key", "PRIVATE KEY") if key_path else None
    tls = TlsCredentials(ca, cert, key) if (ca or cert) else None
    return Credentials(token, tls, getattr(args, "cluster_name", None))


def auth_hint(command: str) -> str:
    """What to do when a server refused the token of `command`."""
    if command == "simulate":
        return f"give the producer token: --token TOKEN, or set {PRODUCER_TOKEN_ENV} (or {TOKEN_ENV})"
    return f"give the token: --token TOKEN, or set {TOKEN_ENV}"


# ----------------------------------------------------------------------------- server connections
def job_ref(job: str, address: str) -> tuple[str, str]:
    """(address, job id) of a JOB argument: an id on `address`, or a `qm://HOST:PORT/JOB` URL."""
    if job.startswith("qm://"):
        host, port, job_id = parse_address(job)
        if not job_id:
            raise UsageError(f"{job!r} names no job: expected qm://HOST:PORT/JOB")
        return (f"[{host}]" if ":" in host else host) + f":{port}", job_id
    return address, job


def _unreachable(exc: ServerUnreachableError) -> str:
    """The library's message, with the hint in the words of the command line."""
    hint = {"closed": "if the server uses TLS, give --tls-ca PEM",
            "tls": "TLS failed: is --tls-ca the server's certificate (or its CA), and does the "
                   "server use TLS?",
            "refused": "is a server running there? start one with `qm-xarray serve`, or check "
                       "--address",
            "unknown-host": "check the host name in --address",
            "timeout": "check --address, and that no firewall drops the traffic"}.get(exc.kind, exc.hint)
    return f"cannot reach a results server at {exc.address}: {exc.reason} ({hint})"


@contextmanager
def connected(address: str, creds: Credentials, jobs_service: bool = False) -> Iterator[Connection]:
    """A Connection to `address` (ours or a QOP), reached within `connect_timeout()` seconds; with
    `jobs_service`, a server that can list its jobs (ours, or a QOP 3)."""
    conn = None
    try:
        try:  # an address without a port tries qm-qua's configured one, then 80
            conn = connect(address, token=creds.token or "", tls=creds.tls,
                           cluster_name=creds.cluster_name, timeout=RPC_TIMEOUT,
                           connect_timeout=connect_timeout())
        except ServerUnreachableError as exc:
            raise QMConnectionError(_unreachable(exc)) from None
        except ClusterNotFoundError as exc:
            raise QMConnectionError(str(exc).replace("check the cluster name",
                                                     "check --cluster-name")) from None
        if jobs_service and not conn.server.is_qm_xarray and conn.server.qop != 3:
            name = " ".join(x for x in (conn.server.implementation, conn.server.version) if x)
            raise QMConnectionError(f"the server at {address} ({name or 'a QOP 2'}) cannot list its "
                                    f"jobs: name one, qm-xarray info JOB --address {address}")
        yield conn
    finally:
        if conn is not None:
            close_channels(conn.details)


def summary(conn: Connection, job_id: str, address: str) -> JobSummary:
    """The job's summary (our JobsService, or a QOP's results RPCs); unknown job: one clear error."""
    try:
        return conn.job(job_id).summary(timeout=connect_timeout())
    except JobNotFoundError:
        where = f"(list them: qm-xarray jobs --address {address})" if conn.server.is_qm_xarray else ""
        raise JobNotFoundError(f"no job {job_id!r} on {address} {where}".rstrip()) from None


# ---------------------------------------------------------------------------------------- output
def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2), flush=True)


def looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.endswith(".zarr") or text.startswith((".", "~"))


def open_store(path: Path) -> Any:
    """`xr.open_zarr` of an existing store; a missing or foreign path is one clear error."""
    import xarray as xr

    if not path.exists():
        raise FileNotFoundError(f"no such zarr store: {path}")
    if not path.is_dir() or not any((path / f).exists() for f in ("zarr.json", ".zgroup")):
        raise QmValueError(f"{path} is not a zarr store")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. a store being exported has no consolidated metadata
        try:
            return xr.open_zarr(str(path))
        except (KeyError, ValueError, OSError, TypeError) as exc:
            raise QmValueError(f"cannot open the zarr store {path}: {exc}") from None


def positive_seconds(name: str, value: float | None) -> None:
    """The library's rule for intervals and deadlines, worded for an option."""
    if value is not None:
        try:
            check_interval(value, name)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
