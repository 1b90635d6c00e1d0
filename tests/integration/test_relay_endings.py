"""How the end of the TLS peer's stream reaches the plaintext side (byte relay): the upstream,
or in mode: client the local app.

Review: every end was passed on as a FIN, so an upstream could not tell a stream cut short from
one that ended. Now:
- close_notify, or a TCP FIN between two records (a client that skips close_notify, as many do;
  Go reads it as EOF too): the upstream gets everything, then a FIN;
- a FIN inside a record (the rest of the record never came: a truncation) or a TCP reset: the
  upstream gets what came whole, then a reset, and the access line says why — also when the
  upstream had ended its own side first (review: it then read a cut upload as whole), and in
  mode: client, where the remote's stream goes to the local app.
The client (in mode: client, the remote) is Python ssl over memory BIOs, so that the test chooses
which record bytes go out; the upstream (the app) records what it read and how its connection
ended.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading

import pytest

from clients import handshake_over_bios
from helpers import wait_until
from mtlsd_harness import client_context, daemon_config, fmt_addr, server_listener
from test_client_mode import client_listener


def read_to_its_end(conn: socket.socket) -> tuple[bytes, str]:
    """Reads a TCP connection to its end: (bytes, "FIN" or "RST")."""
    got = b""
    try:
        while data := conn.recv(65536):
            got += data
    except ConnectionResetError:
        return got, "RST"
    return got, "FIN"


class EndRecorder:
    """A TCP upstream that reads one connection to its end: (bytes, "FIN" or "RST"). With a
    `banner`, it first sends that and ends its own side (shutdown(SHUT_WR)), as a receiver with
    nothing more to say does."""

    def __init__(self, banner: bytes = b""):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.banner = banner
        self.done = threading.Event()
        self.got = b""
        self.end = ""
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        conn, _ = self.sock.accept()
        conn.settimeout(10)
        try:
            if self.banner:
                conn.sendall(self.banner)
                conn.shutdown(socket.SHUT_WR)
            while True:
                data = conn.recv(65536)
                if not data:
                    self.end = "FIN"
                    break
                self.got += data
        except ConnectionResetError:
            self.end = "RST"
        except OSError as e:
            self.end = repr(e)
        conn.close()
        self.done.set()

    def result(self) -> tuple[bytes, str]:
        assert self.done.wait(10), "the upstream's connection never ended"
        return self.got, self.end


def handshaken(daemon, pki):
    """A client after its handshake, pumped by hand so that the test chooses which record bytes
    go out: (socket, TLS object, in BIO, out BIO)."""
    ctx = client_context(pki, "client")
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    sock = socket.create_connection(daemon.addr(), timeout=10)
    handshake_over_bios(sock, tls, incoming, outgoing)
    sock.sendall(outgoing.read())
    return sock, tls, incoming, outgoing


def read_to_close_notify(sock, tls, incoming) -> bytes:
    """What the TLS peer sent over `tls` (an SSLObject on `sock`) up to its close_notify, which
    its read returns as b"" (a TCP end without it leaves the read wanting more)."""
    got = b""
    while True:
        try:
            data = tls.read(65536)
        except ssl.SSLWantReadError:
            data = sock.recv(65536)
            assert data, f"the TCP connection ended without close_notify, after {got!r}"
            incoming.write(data)
            continue
        except ssl.SSLZeroReturnError:
            return got
        if not data:
            return got
        got += data


def records(tls, outgoing, *payloads: bytes) -> list[bytes]:
    out = []
    for p in payloads:
        tls.write(p)
        out.append(outgoing.read())
    return out


def serve(start_mtlsd, pki):
    up = EndRecorder()
    return start_mtlsd(daemon_config([server_listener(pki, up.address)])), up


def test_a_fin_between_records_is_a_clean_end(start_mtlsd, pki):
    daemon, up = serve(start_mtlsd, pki)
    sock, tls, _, out = handshaken(daemon, pki)
    first, = records(tls, out, b"A" * 100)
    sock.sendall(first)
    sock.shutdown(socket.SHUT_WR)  # no close_notify
    assert up.result() == (b"A" * 100, "FIN")
    sock.close()


def test_a_fin_inside_a_record_resets_the_upstream(start_mtlsd, pki):
    daemon, up = serve(start_mtlsd, pki)
    sock, tls, _, out = handshaken(daemon, pki)
    local = fmt_addr(sock.getsockname())
    first, second = records(tls, out, b"A" * 100, b"B" * 100)
    sock.sendall(first + second[:20])
    sock.shutdown(socket.SHUT_WR)
    assert up.result() == (b"A" * 100, "RST")
    line = daemon.wait_for_access(client=local)
    assert "truncated" in line["detail"], line
    assert line["termination"] == "client_close", line  # the client ended it, badly
    sock.close()


def test_a_reset_client_resets_the_upstream(start_mtlsd, pki):
    daemon, up = serve(start_mtlsd, pki)
    sock, tls, _, out = handshaken(daemon, pki)
    first, = records(tls, out, b"A" * 100)
    sock.sendall(first)
    wait_until(lambda: len(up.got) >= 100 or up.done.is_set(), timeout=10,
               what="the upstream read the record's bytes")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST
    assert up.result() == (b"A" * 100, "RST")


def cut(sock: socket.socket, first: bytes, second: bytes, how: str, delivered) -> None:
    """Sends record `first` whole, then cuts the stream: `how` "fin inside a record" sends the
    head of record `second` and a FIN; "reset" waits until `delivered()` says the first record's
    bytes arrived beyond mtlsd (a reset may overtake them), then resets."""
    if how == "fin inside a record":
        sock.sendall(first + second[:20])
        sock.shutdown(socket.SHUT_WR)
        return
    sock.sendall(first)
    wait_until(delivered, timeout=10, what="the first record's bytes beyond mtlsd")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize("how", ["fin inside a record", "reset"])
def test_a_cut_after_the_upstreams_own_end_still_resets_the_upstream(start_mtlsd, pki, how):
    """Review: the upstream sends a banner and ends its side, then reads the upload. The
    client's end came second, so the relay's reset did not apply (it looked only at which side
    ended first): a cut upload reached the upstream as a clean EOF, that is, as whole."""
    up = EndRecorder(banner=b"ready\n")
    daemon = start_mtlsd(daemon_config([server_listener(pki, up.address)]))
    sock, tls, incoming, out = handshaken(daemon, pki)
    local = fmt_addr(sock.getsockname())
    # The upstream's end reached the client (close_notify): it came first.
    assert read_to_close_notify(sock, tls, incoming) == b"ready\n"
    first, second = records(tls, out, b"A" * 100, b"B" * 100)
    cut(sock, first, second, how, lambda: len(up.got) >= 100 or up.done.is_set())
    assert up.result() == (b"A" * 100, "RST")
    line = daemon.wait_for_access(client=local)
    assert line["termination"] == "upstream_close", line  # whose end came first, as before
    assert ("truncated" if how == "fin inside a record" else "reset") in line["detail"], line
    assert line["rx_bytes"] == 100, line
    sock.close()


class RecordRemote:
    """The remote of a client-mode listener, a TLS server (server.crt) over memory BIOs, so that
    the test chooses which record bytes go out: accept() takes mtlsd's connection and completes
    the handshake."""

    def __init__(self, pki):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(pki.path("server.crt"), pki.path("server.key"))

    def accept(self):
        """(socket, TLS object, in BIO, out BIO) once the handshake is over."""
        self.listener.settimeout(10)
        conn, _ = self.listener.accept()
        conn.settimeout(10)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.ctx.wrap_bio(incoming, outgoing, server_side=True)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                conn.sendall(outgoing.read())
                data = conn.recv(65536)
                assert data, "closed during the handshake"
                incoming.write(data)
        conn.sendall(outgoing.read())  # TLS 1.3: its session tickets
        return conn, tls, incoming, outgoing


@pytest.mark.parametrize("how", ["fin inside a record", "reset"])
def test_client_mode_a_cut_remote_stream_resets_the_app_after_the_apps_own_end(start_mtlsd,
                                                                                pki, how):
    """The same in mode: client, where the plain side is the local app: the app sends its
    request and ends its side; the remote's answer is cut. The app got a clean FIN, reading a
    cut answer as whole."""
    remote = RecordRemote(pki)
    daemon = start_mtlsd(daemon_config([client_listener(pki, remote.address)]))
    app = socket.create_connection(daemon.addr("outbound"), timeout=10)
    local = fmt_addr(app.getsockname())
    conn, tls, incoming, out = remote.accept()
    app.sendall(b"request\n")
    app.shutdown(socket.SHUT_WR)
    # The app's end reached the remote (close_notify): it came first.
    assert read_to_close_notify(conn, tls, incoming) == b"request\n"
    first, second = records(tls, out, b"A" * 100, b"B" * 100)
    got = bytearray()

    def delivered() -> bool:  # the app reads what arrived so far, without waiting
        try:
            got.extend(app.recv(65536, socket.MSG_DONTWAIT))
        except BlockingIOError:
            pass
        return len(got) >= 100

    cut(conn, first, second, how, delivered)
    rest, end = read_to_its_end(app)
    assert (bytes(got) + rest, end) == (b"A" * 100, "RST")
    line = daemon.wait_for_access(client=local)
    assert line["termination"] == "client_close", line  # the app's end came first, as before
    assert ("truncated" if how == "fin inside a record" else "reset") in line["detail"], line
    assert line["tx_bytes"] == 100, line
    app.close()
    conn.close()
