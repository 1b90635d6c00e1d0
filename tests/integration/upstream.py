"""Plaintext upstream servers for the integration tests.

An Upstream accepts TCP (or unix-socket) connections and runs a handler per
connection in a thread. Every byte a connection receives is recorded, so a test
can prove that a refused client got *nothing* through to the application:
`connection_count()` also counts connections still waiting in the kernel's
accept queue, which makes "zero connections" exact rather than a race.
"""

from __future__ import annotations

import hashlib
import os
import select
import socket
import threading
import time
from typing import Callable, Optional

CHUNK = 256 * 1024
HANDLER_SOCKET_TIMEOUT = 60.0


class UpstreamConn:
    """One accepted connection; handlers talk through it so bytes are recorded."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.sock.settimeout(HANDLER_SOCKET_TIMEOUT)
        self.received = bytearray()
        self.sent = 0
        self.eof = threading.Event()      # peer half-closed (we read EOF)
        self.done = threading.Event()     # handler finished and closed
        self.error: Optional[BaseException] = None

    def recv(self, n: int = CHUNK) -> bytes:
        data = self.sock.recv(n)
        if data:
            self.received += data
        else:
            self.eof.set()
        return data

    def recv_until_eof(self) -> bytes:
        while self.recv():
            pass
        return bytes(self.received)

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)
        self.sent += len(data)

    def shutdown_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


Handler = Callable[[UpstreamConn], None]


# --- handlers -----------------------------------------------------------------

def echo(conn: UpstreamConn) -> None:
    """Echo everything; when the client half-closes, half-close back."""
    while True:
        data = conn.recv()
        if not data:
            break
        conn.sendall(data)
    conn.shutdown_write()


def reply_after_eof(reply: Optional[bytes] = None) -> Handler:
    """Read until EOF, then send `reply` (default: a digest of what arrived).

    The default reply lets a half-close test prove that everything the client
    sent arrived *before* the EOF.
    """
    def handler(conn: UpstreamConn) -> None:
        data = conn.recv_until_eof()
        conn.sendall(reply if reply is not None else digest_reply(data))
        conn.shutdown_write()
    return handler


def digest_reply(data: bytes) -> bytes:
    return b"got %d bytes sha256=%s" % (len(data), hashlib.sha256(data).hexdigest().encode())


def reply_after(marker: bytes, reply: bytes) -> Handler:
    """Read until `marker` has arrived, send `reply`, close (line/HTTP style)."""
    def handler(conn: UpstreamConn) -> None:
        while marker not in conn.received:
            if not conn.recv():
                return
        conn.sendall(reply)
        conn.shutdown_write()
        # Drain until the proxy closes so we never reset a reply in flight.
        conn.recv_until_eof()
    return handler


def http_ok(body: bytes = b"hello") -> Handler:
    response = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n" % len(body)) + body
    return reply_after(b"\r\n\r\n", response)


def banner_then_read(banner: bytes) -> Handler:
    """Send `banner`, half-close our side first, then keep reading until EOF."""
    def handler(conn: UpstreamConn) -> None:
        conn.sendall(banner)
        conn.shutdown_write()
        conn.recv_until_eof()
    return handler


def duplex(send_data: bytes, expect: int) -> Handler:
    """Send `send_data` while concurrently reading `expect` bytes (bulk tests)."""
    def handler(conn: UpstreamConn) -> None:
        def writer() -> None:
            view = memoryview(send_data)
            for off in range(0, len(view), CHUNK):
                conn.sendall(view[off:off + CHUNK])
        t = threading.Thread(target=writer, daemon=True)
        t.start()
        while len(conn.received) < expect:
            if not conn.recv():
                break
        t.join(HANDLER_SOCKET_TIMEOUT)
    return handler


# --- server -------------------------------------------------------------------

class Upstream:
    """A threaded upstream on 127.0.0.1:PORT (port 0 = any) or a unix socket."""

    def __init__(self, handler: Handler = echo, *, host: str = "127.0.0.1", port: int = 0,
                 unix_path: Optional[str] = None):
        self.handler = handler
        self.unix_path = unix_path
        if unix_path:
            if os.path.exists(unix_path):
                os.unlink(unix_path)
            self._lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._lsock.bind(unix_path)
        else:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self._lsock = socket.socket(family, socket.SOCK_STREAM)
            # Lets a test stop an upstream and bring it back on the same port.
            self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._lsock.bind((host, port))
        self._lsock.listen(128)
        self._lsock.setblocking(False)
        self._lock = threading.Lock()
        self._conns: list[UpstreamConn] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._lsock.getsockname()[1]

    @property
    def address(self) -> str:
        """The address in mtlsd's config syntax."""
        if self.unix_path:
            return f"unix:{self.unix_path}"
        host = self._lsock.getsockname()[0]
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                readable, _, _ = select.select([self._lsock], [], [], 0.05)
            except (OSError, ValueError):
                return
            if not readable:
                continue
            # Accept and record under the lock so connection_count() never
            # misses a connection that is between the queue and our list.
            with self._lock:
                try:
                    sock, _ = self._lsock.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    return
                conn = UpstreamConn(sock)
                self._conns.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: UpstreamConn) -> None:
        try:
            self.handler(conn)
        except (OSError, socket.timeout) as exc:
            conn.error = exc
        finally:
            conn.close()
            conn.done.set()

    # --- observation ------------------------------------------------------------

    @property
    def connections(self) -> list[UpstreamConn]:
        with self._lock:
            return list(self._conns)

    def connection_count(self) -> int:
        """Accepted connections plus any still queued in the kernel."""
        with self._lock:
            pending = 0
            if not self._stopping.is_set():
                readable, _, _ = select.select([self._lsock], [], [], 0)
                pending = 1 if readable else 0
            return len(self._conns) + pending

    def total_received(self) -> int:
        return sum(len(c.received) for c in self.connections)

    def assert_untouched(self) -> None:
        """The proxy must not have opened a connection or sent a byte here."""
        n, received = self.connection_count(), self.total_received()
        assert n == 0 and received == 0, (
            f"upstream was reached: {n} connection(s), {received} byte(s) received: "
            f"{[bytes(c.received[:80]) for c in self.connections]}")

    def wait_for_connections(self, n: int, timeout: float = 20.0) -> list[UpstreamConn]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            conns = self.connections
            if len(conns) >= n:
                return conns
            time.sleep(0.01)
        raise AssertionError(f"upstream saw {len(self.connections)} connection(s), wanted {n}")

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(2)
        self._lsock.close()
        for conn in self.connections:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        if self.unix_path and os.path.exists(self.unix_path):
            os.unlink(self.unix_path)


# Ports handed out by free_port(), held bound for the life of this process.
_reserved_ports: list[socket.socket] = []


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` where nothing listens and that nothing else takes: the socket that
    found it stays bound, not listening, until this process ends. A connection to it is refused
    (RST), the kernel picks it neither for another bind to port 0 nor as a client's source port,
    so integration files running side by side cannot collide on it. A server started on it later
    (Upstream, mtlsd, nginx, HAProxy, Prometheus: all set SO_REUSEADDR, as this socket does) may
    still bind and listen there."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    _reserved_ports.append(s)
    return s.getsockname()[1]
