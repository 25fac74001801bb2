"""A stand-in for the QOP gateway's redirect: a cleartext HTTP/2 server answering `POST /`.

qm-qua's `QuantumMachinesManager` (with `follow_gateway_redirections=True`, the default) first sends
an HTTP/2 prior-knowledge, cleartext `POST http://host:port/` with an empty body and its gateway
headers (`qop-connection.md` section 5). A 302 with `location: <IPv4>:<port>` sends it to another
address, a 400 means "cluster not found", anything else means "stay here". `Redirector` answers
every request with one fixed status, records the request headers, and needs neither gRPC nor qm-qua.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

import h2.config
import h2.connection
import h2.events
import h2.exceptions

__all__ = ["Redirector"]

MAX_CONNECTIONS = 32    # more at once are closed at accept: a test helper, bounded
IDLE_TIMEOUT = 10.0     # seconds without a byte before a connection is closed
POLL = 0.1              # socket timeout: how soon threads notice stop()


class Redirector:
    """A cleartext HTTP/2 (prior knowledge) gateway stand-in answering qm-qua's redirect probe `POST /`.

    Every request gets `status` and an empty body; a 302 also carries `location: <location>`
    (e.g. "127.0.0.1:5555": host:port, no scheme). `requests` holds the headers of every request
    (lower-case names, pseudo-headers such as `:method` and `:path` included), in arrival order.
    """

    def __init__(self, location: str | None, *, status: int = 302, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        if status == 302 and not location:
            raise ValueError("a 302 needs a location")
        self.location = location
        self.status = status
        self.host = host
        self.port = port
        self.requests: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._connections: dict[threading.Thread, socket.socket] = {}

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> Redirector:
        """Listen (port 0 picks a free port) and accept connections on a background thread."""
        if self._listener is not None:
            raise RuntimeError("already started")
        self._stopping.clear()
        listener = socket.create_server((self.host, self.port), backlog=MAX_CONNECTIONS)
        listener.settimeout(POLL)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept, name="redirector-accept", daemon=True)
        self._acceptor.start()
        return self

    def stop(self) -> None:
        """Stop accepting, end open connections (GOAWAY, then close) and join every thread."""
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(timeout=2.0)
            self._acceptor = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            threads = list(self._connections)
        for thread in threads:
            thread.join(timeout=2.0)

    def __enter__(self) -> Redirector:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _accept(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                if len(self._connections) >= MAX_CONNECTIONS:
                    conn.close()
                    continue
                thread = threading.Thread(target=self._serve, args=(conn,), name="redirector-conn",
                                          daemon=True)
                self._connections[thread] = conn
            thread.start()

    def _response_headers(self) -> list[tuple[str, str]]:
        headers = [(":status", str(self.status)), ("content-length", "0")]
        if self.status == 302 and self.location:
            headers.append(("location", self.location))
        return headers

    def _serve(self, conn: socket.socket) -> None:
        """One connection: the HTTP/2 handshake, then a response to each request once it has ended."""
        h2conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        idle = 0.0
        try:
            conn.settimeout(POLL)
            h2conn.initiate_connection()
            conn.sendall(h2conn.data_to_send())
            while not self._stopping.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    idle += POLL
                    if idle >= IDLE_TIMEOUT:
                        break
                    continue
                if not data:
                    break
                idle = 0.0
                try:
                    events = h2conn.receive_data(data)
                except h2.exceptions.ProtocolError:  # not HTTP/2 with prior knowledge
                    conn.sendall(h2conn.data_to_send())
                    break
                closed = False
                for event in events:
                    if isinstance(event, h2.events.RequestReceived):
                        headers = {str(k).lower(): str(v) for k, v in event.headers}
                        with self._lock:
                            self.requests.append(headers)
                    elif isinstance(event, h2.events.DataReceived):
                        h2conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        h2conn.send_headers(event.stream_id, self._response_headers(), end_stream=True)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        closed = True
                conn.sendall(h2conn.data_to_send())
                if closed:
                    break
            else:  # stopping: tell the client, politely
                h2conn.close_connection()
                conn.sendall(h2conn.data_to_send())
        except (OSError, h2.exceptions.H2Error):
            pass
        finally:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
            with self._lock:
                self._connections.pop(threading.current_thread(), None)
