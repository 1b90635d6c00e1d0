"""Real TLS clients for the integration tests: Python ssl, curl, openssl s_client.

With TLS 1.3 the client's handshake finishes before the server has looked at the
client certificate, so a refused client only learns of the refusal (an alert)
at its first read. Every helper here therefore sends *and* reads.
"""

from __future__ import annotations

import select
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from typing import Optional, Union

from pki import Pki

Addr = Union[tuple, str]  # (host, port) as returned by Mtlsd.addr(), or a unix socket's path
TIMEOUT = 10.0

TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def fmt_addr(sockname) -> str:
    """Format a socket address the way mtlsd's access log does ("" for a unix socket's)."""
    if isinstance(sockname, (str, bytes)):
        return ""
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def client_context(pki: Pki, cert: Optional[str] = "client", *, certfile: Optional[str] = None,
                   ca: str = "ca.crt", min_version: Optional[str] = None,
                   max_version: Optional[str] = None) -> ssl.SSLContext:
    """A client context that trusts `ca` and presents `cert` (None: no cert).

    `cert` names a PKI pair (`client` -> client.crt + client.key); `certfile`
    overrides the certificate file, e.g. a leaf+intermediate chain.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.path(ca))
    if cert is not None:
        ctx.load_cert_chain(pki.path(certfile or f"{cert}.crt"), pki.path(f"{cert}.key"))
    if min_version:
        ctx.minimum_version = TLS_VERSIONS[min_version]
    if max_version:
        ctx.maximum_version = TLS_VERSIONS[max_version]
    return ctx


def strict_eof(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """`ctx`, made to tell a TLS end without close_notify from one with it (returned for chaining).

    Python 3.11 with OpenSSL 3 sets OP_IGNORE_UNEXPECTED_EOF on every context: a TCP EOF without
    close_notify then reads as b"" (a clean end) even with suppress_ragged_eofs=False. Without the
    option such an EOF raises (see is_unexpected_eof)."""
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
    return ctx


def is_unexpected_eof(exc: BaseException) -> bool:
    """Whether `exc` is a TLS stream ending without close_notify (a bare TCP EOF)."""
    return isinstance(exc, ssl.SSLEOFError) or (
        isinstance(exc, ssl.SSLError)
        and getattr(exc, "reason", None) == "UNEXPECTED_EOF_WHILE_READING")


def read_to_end(sock: ssl.SSLSocket) -> tuple[bytes, str]:
    """Read until the stream ends: (data, how it ended), how being "close_notify", "eof without
    close_notify" or "reset". `sock` must come from a strict_eof context (asserted), else a bare
    EOF would read as a close_notify. Other errors (a TLS alert, a timeout) raise."""
    assert not sock.context.options & ssl.OP_IGNORE_UNEXPECTED_EOF, \
        "read_to_end needs a strict_eof context to see a close_notify"
    data = bytearray()
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ssl.SSLError as exc:
        if not is_unexpected_eof(exc):
            raise
        return bytes(data), "eof without close_notify"
    except ConnectionResetError:
        return bytes(data), "reset"
    return bytes(data), "close_notify"


@dataclass
class Exchange:
    """What one client connection experienced."""
    data: bytes = b""
    error: Optional[BaseException] = None
    local: str = ""                 # our address as mtlsd logs it ("127.0.0.1:5555")
    handshake_ok: bool = False
    version: Optional[str] = None
    cipher: Optional[str] = None
    elapsed: float = 0.0

    @property
    def alert(self) -> Optional[str]:
        """The TLS alert the server sent us, e.g. 'TLSV1_ALERT_UNKNOWN_CA'."""
        reason = getattr(self.error, "reason", None)
        if isinstance(self.error, ssl.SSLError) and reason and "ALERT" in reason:
            return reason
        return None


def read_to_close(sock) -> bytes:
    """What a TLS socket receives until mtlsd closes it (close_notify, a close or a reset)."""
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (ssl.SSLError, ConnectionResetError):
        pass
    return out


def connect(addr: Addr, timeout: float = TIMEOUT) -> socket.socket:
    if isinstance(addr, str):
        family = socket.AF_UNIX
    else:
        family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(addr)
    return sock


def handshake_over_bios(sock: socket.socket, tls: ssl.SSLObject, incoming: ssl.MemoryBIO,
                        outgoing: ssl.MemoryBIO) -> None:
    """Runs `tls`'s client handshake over `sock` by hand, up to and not including its last flight
    (the Finished), which stays in `outgoing`: the caller sends it, alone or with what it writes
    next, so that the test chooses which bytes leave in which write."""
    while True:
        try:
            tls.do_handshake()
            return
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            data = sock.recv(65536)
            assert data, "closed during the handshake"
            incoming.write(data)


def open_tls(addr: Addr, ctx: ssl.SSLContext, timeout: float = TIMEOUT) -> ssl.SSLSocket:
    """A connected, handshaken TLS socket (for tests that hold connections)."""
    raw = connect(addr, timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise


def echo_once(addr: Addr, ctx: ssl.SSLContext, *, source: Optional[str] = None,
              sni: Optional[str] = "localhost", session: Optional[ssl.SSLSession] = None,
              payload: bytes = b"ping\n") -> tuple[Exchange, bool, Optional[ssl.SSLSession]]:
    """One echo round trip asking for `sni`, from `source` (an address to bind) when given,
    offering `session`; never raises for TLS failures. Returns the exchange, whether the session
    was reused, and the session (None unless the echo completed)."""
    ex = Exchange()
    sock = None
    reused, kept = False, None
    try:
        sock = socket.create_connection(addr, timeout=TIMEOUT,
                                        source_address=(source, 0) if source else None)
        ex.local = fmt_addr(sock.getsockname())
        tls = sock = ctx.wrap_socket(sock, server_hostname=sni, session=session)
        ex.handshake_ok = True
        reused = tls.session_reused
        ex.version = tls.version()
        tls.sendall(payload)
        while len(ex.data) < len(payload):
            chunk = tls.recv(100)
            if not chunk:
                break
            ex.data += chunk
        kept = tls.session
    except (OSError, ssl.SSLError) as exc:
        ex.error = exc
    finally:
        if sock is not None:
            sock.close()
    return ex, reused, kept


def tls_exchange(addr: Addr, ctx: ssl.SSLContext, payload: bytes = b"ping\n", *,
                 expect: Optional[int] = None, timeout: float = TIMEOUT) -> Exchange:
    """Connect, handshake, send `payload`, read `expect` bytes (default: until EOF).

    Never raises for TLS/network failures: they land in Exchange.error so
    refusal tests can inspect them.
    """
    ex = Exchange()
    start = time.monotonic()
    sock: Union[socket.socket, ssl.SSLSocket, None] = None
    try:
        sock = connect(addr, timeout)
        ex.local = fmt_addr(sock.getsockname())
        sock = ctx.wrap_socket(sock, server_hostname="localhost")
        ex.handshake_ok = True
        ex.version, ex.cipher = sock.version(), sock.cipher()[0]
        if payload:
            sock.sendall(payload)
        while expect is None or len(ex.data) < expect:
            chunk = sock.recv(65536)
            if not chunk:
                break
            ex.data += chunk
    except (OSError, ssl.SSLError) as exc:  # SSLError, resets, timeouts
        ex.error = exc
    finally:
        if sock is not None:
            sock.close()
        ex.elapsed = time.monotonic() - start
    return ex


def echo_roundtrip(addr: Addr, ctx: ssl.SSLContext, payload: bytes = b"ping\n") -> Exchange:
    return tls_exchange(addr, ctx, payload, expect=len(payload))


class _BioConn:
    """A TLS client over ssl.MemoryBIO so we control every record and every
    TCP action: needed to send close_notify (or a bare FIN) and keep reading. Makes `ctx`
    strict_eof, so that read_to_end tells the peer's close_notify from a bare EOF."""

    def __init__(self, addr: Addr, ctx: ssl.SSLContext, timeout: float = TIMEOUT):
        strict_eof(ctx)
        self.sock = connect(addr, timeout)
        self.local = fmt_addr(self.sock.getsockname())
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                if not self._fill():
                    raise ConnectionError("EOF during handshake")
        self._flush()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()
        return bool(data)

    def write(self, data: bytes) -> None:
        self.obj.write(data)
        self._flush()

    def close_notify(self) -> None:
        """Send close_notify but keep the read side open (TLS 1.3 half-close)."""
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass  # the peer's close_notify has not arrived yet: expected
        self._flush()

    def fin(self) -> None:
        """Half-close at the TCP level only, without a close_notify."""
        self.sock.shutdown(socket.SHUT_WR)

    def read_to_end(self) -> tuple[bytes, bool]:
        """Read until the peer's close_notify or TCP EOF. Returns (data, clean)."""
        data = bytearray()
        saw_tcp_eof = False
        while True:
            try:
                chunk = self.obj.read(65536)
            except ssl.SSLZeroReturnError:
                return bytes(data), True
            except ssl.SSLWantReadError:
                if saw_tcp_eof:
                    return bytes(data), False
                saw_tcp_eof = not self._fill()
                continue
            except ssl.SSLError as exc:            # after its subclass SSLWantReadError
                if not is_unexpected_eof(exc):
                    raise
                return bytes(data), False          # TCP EOF without close_notify
            if not chunk:
                return bytes(data), True
            data += chunk

    def close(self) -> None:
        self.sock.close()


def half_close_exchange(addr: Addr, ctx: ssl.SSLContext, payload: bytes, how: str,
                        timeout: float = TIMEOUT) -> tuple[bytes, bool, str]:
    """Send `payload`, half-close (`close_notify` or `fin`), read the reply.

    Returns (reply, closed_cleanly_with_close_notify, local_address).
    """
    conn = _BioConn(addr, ctx, timeout)
    try:
        conn.write(payload)
        if how == "close_notify":
            conn.close_notify()
        elif how == "fin":
            conn.fin()
        else:
            raise ValueError(how)
        reply, clean = conn.read_to_end()
        return reply, clean, conn.local
    finally:
        conn.close()


def read_then_write_after_close(addr: Addr, ctx: ssl.SSLContext, late: bytes,
                                timeout: float = TIMEOUT) -> tuple[bytes, bool]:
    """Read until the server's close_notify, *then* send `late` and close_notify.

    Proves the reverse half-close: upstream EOF must not cut our sending side.
    """
    conn = _BioConn(addr, ctx, timeout)
    try:
        banner, clean = conn.read_to_end()
        conn.write(late)
        conn.close_notify()
        # Wait for the server to close the TCP connection so the caller can
        # then inspect the upstream without racing the proxy.
        conn.sock.settimeout(timeout)
        try:
            while conn.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass  # closed either way; the caller checks what the upstream got
        return banner, clean
    finally:
        conn.close()


def bulk_exchange(sock: ssl.SSLSocket, send_data: bytes, expect: int,
                  timeout: float = 60.0) -> bytes:
    """Send and receive concurrently on one TLS socket (one thread, non-blocking).

    An SSL object must not be used from two threads at once, so this is a
    select loop rather than a reader thread and a writer thread.
    """
    sock.setblocking(False)
    view, sent = memoryview(send_data), 0
    received = bytearray()
    deadline = time.monotonic() + timeout
    while sent < len(view) or len(received) < expect:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"bulk transfer stalled: sent {sent}/{len(view)}, "
                               f"received {len(received)}/{expect}")
        want_write = [sock] if sent < len(view) else []
        r, w, _ = select.select([sock], want_write, [], min(remaining, 1.0))
        if w:
            try:
                sent += sock.send(view[sent:sent + 256 * 1024])
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pass
        if r or sock.pending():
            while True:
                try:
                    chunk = sock.recv(256 * 1024)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    break
                if not chunk:
                    raise ConnectionError(f"EOF after {len(received)}/{expect} bytes")
                received += chunk
                if not sock.pending():
                    break
    sock.setblocking(True)
    return bytes(received)


# --- command-line clients -----------------------------------------------------

def curl(addr: Addr, pki: Pki, cert: Optional[str] = "client", *, path: str = "/",
         extra: tuple = (), timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """`curl --cert --key --cacert` against https://localhost:PORT (SNI localhost)."""
    host, port = addr
    resolve_host = f"[{host}]" if ":" in host else host
    cmd = ["curl", "-sS", "--max-time", str(timeout), "--cacert", pki.path("ca.crt"),
           "--resolve", f"localhost:{port}:{resolve_host}"]
    if cert is not None:
        cmd += ["--cert", pki.path(f"{cert}.crt"), "--key", pki.path(f"{cert}.key")]
    cmd += [*extra, f"https://localhost:{port}{path}"]
    return subprocess.run(cmd, capture_output=True, timeout=timeout + 5, stdin=subprocess.DEVNULL)


def s_client(addr: Addr, pki: Pki, cert: Optional[str] = "client", *, data: bytes = b"ping\n",
             extra: tuple = (), timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """`openssl s_client -quiet`: sends `data`, prints what arrives until the server closes."""
    cmd = ["openssl", "s_client", "-connect", fmt_addr(addr), "-servername", "localhost",
           "-CAfile", pki.path("ca.crt"), "-verify_return_error", "-quiet"]
    if cert is not None:
        cmd += ["-cert", pki.path(f"{cert}.crt"), "-key", pki.path(f"{cert}.key")]
    cmd += list(extra)
    return subprocess.run(cmd, input=data, capture_output=True, timeout=timeout)
