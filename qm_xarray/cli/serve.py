"""`qm-xarray serve`: a results server, in memory or on a durable store, until Ctrl-C / SIGTERM.

It prints `listening on HOST:PORT` once it serves (tools wait for that line), then `stopped` when
it has stopped. Bad options, an unreadable certificate, a directory that is not a store of ours or
a port in use end it at once with one line on stderr.

With `--upstream HOST[:PORT]` it is a relay (docs/relay.md): it captures jobs of that server (a
QOP, or another of ours) into its `--store` while they run and serves the copies; it prints
`relaying HOST:PORT` and then one `capture JOB: STATUS` line as each capture starts and ends.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import re
import signal
import socket
import ssl
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ..client import AuthenticationError, config
from ..errors import JobNotFoundError, QMConnectionError, QmValueError
from ..relay import Relay
from ..session import Connection
from ..server.app import ResultsServer, is_loopback
from ..server.store import ResultStore
from .common import (
    DEFAULT_PORT,
    PRODUCER_TOKEN_ENV,
    TOKEN_ENV,
    UPSTREAM_TOKEN_ENV,
    UsageError,
    check_token,
    connected,
    credentials,
    env_token,
    positive_seconds,
    read_pem,
)

__all__ = ["add_parser", "cmd_serve"]

DEFAULT_WORKERS = inspect.signature(ResultsServer).parameters["max_workers"].default

EPILOG = f"""\
Tokens: a client sends `authorization: Bearer TOKEN` (qm-xarray commands: --token, or
${TOKEN_ENV}). Give the tokens to the server in the environment variables {TOKEN_ENV} and
{PRODUCER_TOKEN_ENV} rather than --token and --producer-token: a command line is visible to every
user of the machine (ps), the environment is not.

TLS: --tls-cert and --tls-key name PEM files (certificate chain, unencrypted private key);
clients trust the certificate with --tls-ca PEM. Listening beyond loopback without TLS warns.

Relay: --upstream HOST[:PORT] --store DIR, with --job ID (repeatable) and/or --follow-new. The
upstream's credentials (--upstream-token or ${UPSTREAM_TOKEN_ENV}, else qm-qua's
~/.qm/config.json; --upstream-tls-ca, --upstream-tls-client-cert/-key, --upstream-cluster-name)
are the relay's own: its clients present the relay's --token, never the upstream's.
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run a results server until Ctrl-C / SIGTERM",
                       description="Serve results to readers (QM result services v1 and v2, the "
                       "qm-xarray jobs service)\nand producers (qm-xarray simulate, qx.RemoteStore).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default loopback)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any)")
    p.add_argument("--store", default=None, metavar="DIR",
                   help="keep jobs on disk in DIR (created if missing) and serve the jobs already "
                        "there; an acknowledged append survives a crash of the server (default: in "
                        "memory, gone when the server stops)")
    p.add_argument("--sync", action="store_true",
                   help="with --store: fsync every append (survives a power loss too; slower)")
    p.add_argument("--token", default=None, metavar="TOKEN",
                   help=f"require this bearer token on every call (default: ${TOKEN_ENV})")
    p.add_argument("--producer-token", default=None, metavar="TOKEN",
                   help="require this token, instead of --token, to write (the producer service), so "
                        f"readers cannot write (default: ${PRODUCER_TOKEN_ENV})")
    p.add_argument("--tls-cert", default=None, metavar="PEM",
                   help="serve TLS with this certificate chain (PEM file; needs --tls-key)")
    p.add_argument("--tls-key", default=None, metavar="PEM",
                   help="the private key of --tls-cert (PEM file, not encrypted)")
    p.add_argument("--no-chunk-streaming", action="store_true",
                   help="serve v2 results in the legacy format (for old clients)")
    p.add_argument("--max-workers", type=int, default=DEFAULT_WORKERS, metavar="N",
                   help=f"threads serving calls (default {DEFAULT_WORKERS}); each streaming call holds "
                        "one while it lasts, and calls beyond N are refused (clients retry)")
    relay = p.add_argument_group("relay (docs/relay.md)")
    relay.add_argument("--upstream", default=None, metavar="HOST[:PORT]",
                       help="capture jobs of this server (a QOP, or qm-xarray serve) into --store "
                            "while they run, and serve the copies under the same ids")
    relay.add_argument("--job", action="append", default=[], metavar="ID",
                       help="capture this upstream job (repeatable)")
    relay.add_argument("--follow-new", action="store_true",
                       help="capture every job the upstream lists that is running or appears later "
                            "(a QOP 3, or qm-xarray serve)")
    relay.add_argument("--upstream-token", default=None, metavar="TOKEN",
                       help=f"the upstream's bearer token (default: ${UPSTREAM_TOKEN_ENV}, else "
                            "qm-qua's ~/.qm/config.json)")
    relay.add_argument("--upstream-tls-ca", default=None, metavar="PEM",
                       help="reach the upstream with TLS, trusting this certificate (or CA)")
    relay.add_argument("--upstream-tls-client-cert", default=None, metavar="PEM",
                       help="client certificate for an upstream that requires mutual TLS")
    relay.add_argument("--upstream-tls-client-key", default=None, metavar="PEM",
                       help="private key of --upstream-tls-client-cert")
    relay.add_argument("--upstream-cluster-name", default=None, metavar="NAME",
                       help="cluster of the upstream QOP's gateway (default: any)")
    relay.add_argument("--capture-deadline", type=float, default=60.0, metavar="SECONDS",
                       help="mark a copy interrupted when its upstream has not answered for this "
                            "long (default 60; it is tried again every --retry seconds)")
    relay.add_argument("--retry", type=float, default=30.0, metavar="SECONDS",
                       help="try an interrupted copy again after this long (default 30)")
    relay.add_argument("--poll", type=float, default=1.0, metavar="SECONDS",
                       help="how often the upstream's job list is read with --follow-new (default 1)")
    p.set_defaults(func=cmd_serve)


def check_relay_options(args: argparse.Namespace) -> None:
    """Relay options only with --upstream, and --upstream only with a durable --store."""
    relay_only = [name for name, given in (("--job", args.job), ("--follow-new", args.follow_new))
                  if given]
    if args.upstream is None:
        if relay_only:
            raise UsageError(f"{' and '.join(relay_only)} need{'s' if len(relay_only) == 1 else ''} "
                             f"--upstream HOST[:PORT]")
        return
    if args.store is None:
        raise UsageError("--upstream needs --store DIR: a relay keeps a durable copy of each job")
    if not args.job and not args.follow_new:
        raise UsageError("--upstream needs --job ID (repeatable) or --follow-new: which jobs to capture")
    for name in ("capture_deadline", "retry", "poll"):
        positive_seconds("--" + name.replace("_", "-"), getattr(args, name))


def upstream_credentials(args: argparse.Namespace) -> argparse.Namespace:
    """The --upstream-* options as the client options `credentials` reads (the relay's own
    --token stays the relay's: $QM_XARRAY_TOKEN is never sent upstream)."""
    if args.upstream_token is not None:
        token = check_token(args.upstream_token, "--upstream-token")
    else:
        token = env_token(UPSTREAM_TOKEN_ENV)
    return argparse.Namespace(token=token or config.qm_qua_token() or "",
                              tls_ca=args.upstream_tls_ca, tls_client_cert=args.upstream_tls_client_cert,
                              tls_client_key=args.upstream_tls_client_key,
                              cluster_name=args.upstream_cluster_name)


def check_port_free(host: str, port: int) -> None:
    """Fail with one clear line if `host` is unknown or `host:port` is taken (gRPC would also log
    a C-core error)."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise OSError(f"could not listen on {host}:{port}: unknown host ({reason})") from None
    if port == 0:
        return
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(addr)
        except OSError as exc:
            raise OSError(f"could not listen on {host}:{port}: {exc.strerror or exc}") from None


def tls_pair(args: argparse.Namespace) -> tuple[bytes, bytes] | None:
    """(certificate chain, private key) PEM of `--tls-cert/--tls-key`, checked to belong together."""
    if args.tls_cert is None and args.tls_key is None:
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise UsageError("--tls-cert and --tls-key go together: give both")
    chain = read_pem(args.tls_cert, "--tls-cert", "CERTIFICATE")
    key = read_pem(args.tls_key, "--tls-key", "PRIVATE KEY")
    if b"ENCRYPTED" in key:
        raise QmValueError(f"--tls-key {args.tls_key}: the key is encrypted; the server needs it "
                           "unencrypted (protect the file instead)")
    try:  # the checks gRPC would only make at the first handshake
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            Path(args.tls_cert).expanduser(), Path(args.tls_key).expanduser(), password=b"")
    except ssl.SSLError as exc:
        what = ("the key does not belong to the certificate" if exc.reason == "KEY_VALUES_MISMATCH"
                else f"not a usable certificate chain and private key ({exc})")
        raise QmValueError(f"--tls-cert {args.tls_cert} / --tls-key {args.tls_key}: {what}") from None
    return chain, key


def open_result_store(directory: str | None, sync: bool) -> ResultStore:
    """A memory store, or the durable store in `directory` (created, or checked to be ours)."""
    if directory is None:
        return ResultStore()
    path = Path(directory).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"--store {directory}: not a directory")
    try:
        return ResultStore(path=path, sync=sync)
    except QmValueError:
        raise
    except (ValueError, KeyError, TypeError) as exc:  # e.g. a damaged job.json
        raise QmValueError(f"cannot open the store {path}: {type(exc).__name__}: {exc}") from None


_SAY = threading.Lock()


def _say(line: str) -> None:
    """One whole line on stdout, also from the relay's threads (tools read them line by line)."""
    with _SAY:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class _OneLine(logging.Formatter):
    """The relay's log warnings as `qm-xarray serve: warning: ...` lines, without tracebacks."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text += f": {type(exc).__name__}: {exc}"
        return f"qm-xarray serve: warning: {text}"


def _relay_warnings() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_OneLine())
    logging.getLogger("qm_xarray.relay").addHandler(handler)
    return handler


def _warn(text: str) -> None:
    print(f"qm-xarray serve: warning: {text}", file=sys.stderr, flush=True)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the store until SIGINT or SIGTERM, then stop cleanly."""
    token = check_token(args.token, "--token") if args.token is not None else env_token(TOKEN_ENV)
    producer_token = (check_token(args.producer_token, "--producer-token")
                      if args.producer_token is not None else env_token(PRODUCER_TOKEN_ENV))
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    if args.max_workers < 1:
        raise UsageError(f"--max-workers must be at least 1, got {args.max_workers}")
    if args.sync and args.store is None:
        raise UsageError("--sync needs --store DIR (a memory store has nothing to fsync)")
    check_relay_options(args)
    tls = tls_pair(args)
    check_port_free(args.host, args.port)
    with ExitStack() as stack:
        upstream = stack.enter_context(reach_upstream(args)) if args.upstream is not None else None
        store = open_result_store(args.store, args.sync)
        stack.callback(store.close)
        return _serve(args, store, upstream, token, producer_token, tls)
    raise AssertionError("unreachable")  # pragma: no cover - the with block returns


@contextmanager
def reach_upstream(args: argparse.Namespace) -> Iterator[Connection]:
    """The upstream, reached within the connect timeout (fails fast), with the client commands'
    messages worded for the relay's options."""
    names = {"--address": "--upstream", "--tls-ca": "--upstream-tls-ca",
             "--cluster-name": "--upstream-cluster-name", "--token": "--upstream-token"}
    try:
        with connected(args.upstream, credentials(upstream_credentials(args))) as upstream:
            if args.follow_new and not upstream.server.is_qm_xarray and upstream.server.qop != 3:
                raise UsageError(f"--follow-new: the upstream at {upstream.details.target} (a QOP 2) "
                                 f"cannot list its jobs; name them with --job ID")
            yield upstream
    except QMConnectionError as exc:
        if isinstance(exc, JobNotFoundError):
            raise
        text = str(exc)
        for old, new in names.items():
            text = re.sub(re.escape(old) + r"\b", new, text)
        if isinstance(exc, AuthenticationError) and "--upstream-token" not in text:
            text += f" (give the upstream's token: --upstream-token TOKEN, or set {UPSTREAM_TOKEN_ENV})"
        raise QMConnectionError(f"--upstream {args.upstream}: {text}") from None


def _serve(args: argparse.Namespace, store: ResultStore, upstream: Connection | None,
           token: str | None, producer_token: str | None, tls: tuple[bytes, bytes] | None) -> int:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            server = ResultsServer(store, args.host, args.port, chunk_streaming=not args.no_chunk_streaming,
                                   max_workers=args.max_workers, token=token,
                                   producer_token=producer_token, tls=tls)
    except RuntimeError as exc:  # grpc reports a failed bind as RuntimeError
        raise OSError(f"could not listen on {args.host}:{args.port}: {exc}") from None
    if tls is None and not is_loopback(args.host):
        if token is not None:
            exposed = "can read the traffic, tokens included"
        else:
            exposed = "can read the traffic, and read " + ("" if producer_token else "and write ") + \
                "results (no --token)"
        _warn(f"listening on {server.address}, beyond loopback, without TLS: anyone on the network "
              f"{exposed}; give --tls-cert and --tls-key")
    for warning in caught:  # other warnings: one plain line each
        if "beyond loopback" not in str(warning.message):
            _warn(str(warning.message))
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    relay = None
    try:
        server.start()
        print(f"listening on {server.address}", flush=True)
        if store.path is not None:
            print(f"store {store.path}: {len(store.jobs())} jobs"
                  + (", fsync on every append" if store.sync else ""), flush=True)
        if upstream is not None:
            _relay_warnings()
            _say(f"relaying {upstream.details.target}" + (", following new jobs" if args.follow_new else ""))
            relay = Relay(upstream, store, jobs=args.job, follow_new=args.follow_new, poll=args.poll,
                          deadline=args.capture_deadline, retry=args.retry,
                          on_change=lambda job_id, status: _say(f"capture {job_id}: {status}"))
            relay.start()
        while not stop.wait(0.5):
            pass
    finally:
        if relay is not None:
            relay.stop()
        server.stop(grace=1.0)
        for sig, handler in previous.items():
            if handler is not None:  # None: not set from Python
                signal.signal(sig, handler)
    print("stopped", flush=True)
    return 0
