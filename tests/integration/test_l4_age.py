"""timeouts.max_connection_age in layer 4 (mode: server, and mode: client): a graceful close.
Once the age passes, each side gets what had already arrived from the other, then its end
(close_notify + FIN to the TLS peer, FIN to the plaintext one), and mtlsd closes by lingering:
what a peer still sends after the age is read and thrown away until it closes.

Review: both sockets were shut down for reading at the age, and Linux answers data arriving at
such a socket once its FIN went with a reset, which throws away what was still queued for the
peer. A client that kept sending small messages while it read its download (a chatty protocol)
got 1.6 of 4 MiB and no close_notify, while the access line said 4 MiB sent, closed gracefully.
A quiet client got everything; it still must.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading

import pytest

from clients import client_context, is_unexpected_eof, strict_eof
from mtlsd_harness import daemon_config, fmt_addr
from tls_remote import ThreadedServer

AGE = {"max_connection_age": "1s", "half_close": "20s"}
# All of it fits in the kernel's buffers on its way to a client that does not read yet (mtlsd's
# send buffer alone grows past 1 MiB over loopback): it has all reached mtlsd when the age comes.
DOWNLOAD = os.urandom(1 << 20)
MESSAGE = b"m" * 100  # what a chatty client sends between two reads
TIMEOUT = 10.0


def read_to_the_end(sock, chat: bool) -> tuple[bytes, str]:
    """Reads until the stream ends, sending MESSAGE after each read when `chat`: (what was read,
    how it ended: "close_notify" or "fin", "eof without close_notify", "reset")."""
    got = bytearray()
    try:
        while chunk := sock.recv(65536):
            got += chunk
            if chat:
                sock.sendall(MESSAGE)
        return bytes(got), "close_notify" if isinstance(sock, ssl.SSLSocket) else "fin"
    except ConnectionResetError:
        return bytes(got), "reset"
    except ssl.SSLError as e:
        if is_unexpected_eof(e):
            return bytes(got), "eof without close_notify"
        raise


def download_then_read(conn) -> None:
    """The upstream: the download at once, then what the client sends, to its end."""
    try:
        conn.sendall(DOWNLOAD)
        conn.recv_until_eof()
    except OSError:
        pass


def assert_graceful_age(line: dict) -> None:
    assert line["termination"] == "max_age", line
    assert line["detail"] == ("max_age: timeouts.max_connection_age (1s) reached, "
                              "closed gracefully"), line


@pytest.mark.parametrize("client", ["chat", "quiet"])
def test_the_age_ends_a_download_with_every_byte_and_close_notify(serve, pki, client):
    """The client reads its download only once the age has passed (its end reached the
    upstream): everything mtlsd had is queued for it by then, and a chatty client's next
    message used to arrive at a socket shut down for reading. Before: chat got part of the
    download and no close_notify; quiet got it all (unchanged)."""
    chat = client == "chat"
    daemon, up = serve(download_then_read, timeouts=AGE)
    raw = socket.create_connection(daemon.addr(), timeout=TIMEOUT)
    sock = strict_eof(client_context(pki)).wrap_socket(raw, server_hostname="localhost")
    local = fmt_addr(sock.getsockname())
    with sock:
        if chat:
            sock.sendall(MESSAGE)  # before the age: relayed
        conn = up.wait_for_connections(1)[0]
        # The age: mtlsd passes the client's end on to the upstream.
        assert conn.eof.wait(TIMEOUT), "the age never ended the client's side"
        got, end = read_to_the_end(sock, chat)
    assert end == "close_notify", (end, len(got))
    assert got == DOWNLOAD, f"{len(got)} of {len(DOWNLOAD)} bytes"
    line = daemon.wait_for_access(client=local)
    assert_graceful_age(line)
    assert line["tx_bytes"] == len(got), line
    # What came after the age was not relayed (nor counted): the client's end had gone on.
    assert line["rx_bytes"] == len(conn.received) == (len(MESSAGE) if chat else 0), line


def test_the_age_lets_a_write_waiting_for_the_client_finish(serve, pki):
    """More than the buffers on the way hold: mtlsd's write to the client waits when the age
    comes, and goes on; the client gets every byte mtlsd counted as sent, then close_notify
    (not a write cut short, not a reset)."""
    big = os.urandom(6 << 20)

    def download_in_a_thread(conn) -> None:
        def send() -> None:
            try:
                conn.sendall(big)
            except OSError:
                pass  # mtlsd closed over what arrived after the age
        threading.Thread(target=send, daemon=True).start()
        try:
            conn.recv_until_eof()
        except OSError:
            pass

    daemon, up = serve(download_in_a_thread, timeouts=AGE)
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # no autotuning
    raw.settimeout(TIMEOUT)
    raw.connect(daemon.addr())
    sock = strict_eof(client_context(pki)).wrap_socket(raw, server_hostname="localhost")
    local = fmt_addr(sock.getsockname())
    with sock:
        sock.sendall(MESSAGE)
        conn = up.wait_for_connections(1)[0]
        assert conn.eof.wait(TIMEOUT), "the age never ended the client's side"
        got, end = read_to_the_end(sock, chat=True)
    print(f"client got {len(got)} of {len(big)} bytes, then {end}")
    assert end == "close_notify", (end, len(got))
    assert got == big[:len(got)]
    line = daemon.wait_for_access(client=local)
    assert_graceful_age(line)
    assert line["tx_bytes"] == len(got), line


class DownloadRemote(ThreadedServer):
    """A TLS remote for mode: client: sends DOWNLOAD, then reads to the end (close_notify)."""

    def __init__(self, pki):
        super().__init__()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(pki.path("server.crt"), pki.path("server.key"))
        self.received = bytearray()
        self.ended = threading.Event()
        self.start()

    def _one(self, conn):
        conn.settimeout(TIMEOUT)
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as s:
                s.sendall(DOWNLOAD)
                while data := s.recv(65536):
                    self.received += data
                self.ended.set()
        except (OSError, ssl.SSLError):
            pass


@pytest.mark.parametrize("app", ["chat", "quiet"])
def test_the_age_in_client_mode_gives_the_app_every_byte(start_mtlsd, pki, app):
    """The same in mode: client, where the local app is the side that may go on sending: the
    app gets the whole download, then a FIN, not a reset. Before: chat got part of it, then a
    reset."""
    chat = app == "chat"
    remote = DownloadRemote(pki)
    listener = {
        "name": "outbound", "mode": "client", "listen": "127.0.0.1:0",
        "upstream": remote.address,
        "tls": {"cert": pki.path("client.crt"), "key": pki.path("client.key")},
        "server_auth": {"ca": [pki.path("ca.crt")], "server_name": "localhost"},
        "timeouts": AGE,
    }
    daemon = start_mtlsd(daemon_config([listener]))
    try:
        with socket.create_connection(daemon.addr("outbound"), timeout=TIMEOUT) as sock:
            local = fmt_addr(sock.getsockname())
            if chat:
                sock.sendall(MESSAGE)
            # The age: mtlsd ends the app's stream to the remote (close_notify).
            assert remote.ended.wait(TIMEOUT), "the age never ended the app's side"
            got, end = read_to_the_end(sock, chat)
    finally:
        remote.close()
    assert end == "fin", (end, len(got))
    assert got == DOWNLOAD, f"{len(got)} of {len(DOWNLOAD)} bytes"
    line = daemon.wait_for_access(client=local)
    assert_graceful_age(line)
    assert line["tx_bytes"] == len(got), line
    assert line["rx_bytes"] == len(remote.received) == (len(MESSAGE) if chat else 0), line
