"""When mtlsd itself ends a layer-4 stream still under way — the drain timeout, a reload's
verdict (reload_rejudged), a revocation, a deadline — the peers must not be told that it ended
cleanly (review: the upstream got a FIN, reading a cut upload as whole, and a client cut in the
middle of a download got close_notify, TLS's "nothing was cut"). Layer 4 has no boundary to end
at, so each direction whose end had not been passed on is cut: its plain receiver (the upstream;
in mode: client the local app) is reset, and the TLS peer gets no close_notify. The access line
says what it said before.
"""

from __future__ import annotations

import signal
import socket
import ssl
import threading

from clients import is_unexpected_eof
from helpers import reload_with, wait_until
from mtlsd_harness import (client_context, daemon_config, fmt_addr, open_tls, server_listener,
                           strict_eof)
from test_client_mode import client_listener
from tls_remote import Remote

CLIENT_ID = "spiffe://example.org/ns/default/sa/client"


class PlainPeer:
    """A TCP peer (an upstream) that counts what it reads from its one connection and records
    how that ended ("FIN" or "RST"); it first sends `download`, and then nothing, its stream
    never ended; with `start_reading`, it reads only once that is set. (An upstream that keeps
    sending cannot tell: mtlsd's close over its unread bytes is a reset anyway, and whichever of
    its threads meets the reset first takes the error.)"""

    def __init__(self, download: bytes = b"", start_reading: threading.Event | None = None):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.download = download
        self.start_reading = start_reading
        self.received = 0
        self.end = ""
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        conn, _ = self.sock.accept()
        conn.settimeout(20)
        if self.download:
            conn.sendall(self.download)
        if self.start_reading:
            self.start_reading.wait(20)
        try:
            while data := conn.recv(65536):
                self.received += len(data)
            self.end = "FIN"
        except ConnectionResetError:
            self.end = "RST"
        except OSError as e:
            self.end = repr(e)
        self.done.set()

    def result(self) -> str:
        assert self.done.wait(20), "the upstream's connection never ended"
        return self.end


def read_counting(sock: ssl.SSLSocket, counted: list[int]) -> str:
    """Reads `sock` (from a strict_eof context) to its end, adding what it reads to counted[0]:
    "close_notify", "eof without close_notify" or "reset"."""
    try:
        while chunk := sock.recv(65536):
            counted[0] += len(chunk)
    except ssl.SSLError as exc:
        if not is_unexpected_eof(exc):
            raise
        return "eof without close_notify"
    except ConnectionResetError:
        return "reset"
    return "close_notify"


def test_the_drain_timeout_cutting_an_upload_resets_the_upstream(start_mtlsd, pki):
    """p11: SIGTERM during an endless upload, drain_timeout 1s: the upstream got a clean EOF."""
    up = PlainPeer()
    daemon = start_mtlsd(daemon_config([server_listener(pki, up.address)],
                                       shutdown={"drain_timeout": "1s"}))
    sock = open_tls(daemon.addr(), client_context(pki, "client"))
    local = fmt_addr(sock.getsockname())

    def upload():
        try:
            while True:
                sock.sendall(b"u" * 65536)
        except (OSError, ssl.SSLError):
            pass

    uploader = threading.Thread(target=upload, daemon=True)
    uploader.start()
    wait_until(lambda: up.received > 0, timeout=10, what="the upload reaching the upstream")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit(10) == 0
    assert up.result() == "RST"
    line = daemon.wait_for_access(client=local)
    assert line["termination"] == "drain", line
    assert line["detail"] == "closed by mtlsd (drain timeout)", line
    uploader.join(10)
    sock.close()


def test_a_reload_cutting_a_stream_sends_no_close_notify_and_resets_the_upstream(
        start_mtlsd, pki):
    """p14b: a reload drops the client from `allow` in the middle of its download: it got
    close_notify, and an upstream whose input was cut too a clean EOF. Now the client sees the
    TCP end without close_notify (it knows the stream was cut), the upstream a reset."""
    download = b"d" * 65536
    up = PlainPeer(download=download)
    allow = {"allow": {"spiffe_ids": [CLIENT_ID]}}
    listener = server_listener(pki, up.address, client_auth=allow)
    daemon = start_mtlsd(daemon_config([listener], reload={"watch": False}))
    sock = open_tls(daemon.addr(), strict_eof(client_context(pki, "client")))
    local = fmt_addr(sock.getsockname())
    downloaded = [0]
    ends: list[str] = []
    reader = threading.Thread(target=lambda: ends.append(read_counting(sock, downloaded)),
                              daemon=True)
    reader.start()
    wait_until(lambda: downloaded[0] == len(download), timeout=10, what="the download's start")
    host, port = daemon.addr()
    dropped = server_listener(pki, up.address, listen=f"{host}:{port}",
                              client_auth={"allow": {"spiffe_ids": ["spiffe://example.org/x"]}})
    reload_with(daemon, daemon_config([dropped], reload={"watch": False}))
    reader.join(20)
    assert ends == ["eof without close_notify"], (ends, downloaded[0])
    assert up.result() == "RST"
    line = daemon.wait_for_access(client=local)
    assert line["termination"] == "reload_rejudged", line
    assert line["reason"] == "not_authorized", line
    assert line["detail"].startswith("reload_rejudged: "), line
    sock.close()


def test_client_mode_the_drain_timeout_resets_the_local_app(start_mtlsd, pki):
    """Mode: client: the plain side is the local app, and the remote's stream to it (an echo
    server's, never ended) is what the drain timeout cuts: the app got a clean FIN."""
    remote = Remote(pki.path("server.crt"), pki.path("server.key"))
    try:
        daemon = start_mtlsd(daemon_config([client_listener(pki, remote.address)],
                                           shutdown={"drain_timeout": "1s"}))
        app = socket.create_connection(daemon.addr("outbound"), timeout=10)
        local = fmt_addr(app.getsockname())
        app.sendall(b"ping\n")
        assert app.recv(100) == b"ping\n"  # relayed both ways
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait_exit(10) == 0
        try:
            end = "FIN" if app.recv(100) == b"" else "data"
        except ConnectionResetError:
            end = "RST"
        assert end == "RST"
        line = daemon.wait_for_access(client=local)
        assert line["termination"] == "drain", line
        app.close()
    finally:
        remote.close()


def test_a_deadline_after_the_whole_upload_went_on_leaves_the_upstream_its_fin(start_mtlsd, pki):
    """Only the direction mtlsd cuts is: the client's upload was passed on whole, with its FIN,
    when timeouts.half_close ended the connection (the upstream had not answered). The upstream
    reads it all, then that FIN: a reset would say the upload was cut, and would throw away what
    mtlsd's kernel still held of it (12 MiB read slowly lost its last 3 MB that way)."""
    upload = b"u" * 65536  # fits in the sockets' buffers: all passed on while nobody reads
    reading = threading.Event()
    up = PlainPeer(start_reading=reading)
    daemon = start_mtlsd(daemon_config([server_listener(pki, up.address,
                                                        timeouts={"half_close": "1s"})]))
    sock = open_tls(daemon.addr(), strict_eof(client_context(pki, "client")))
    local = fmt_addr(sock.getsockname())
    sock.sendall(upload)
    socket.socket.shutdown(sock, socket.SHUT_WR)  # a FIN between records: the upload's end
    line = daemon.wait_for_access(client=local)
    assert line["termination"] == "half_close_timeout", line
    assert line["rx_bytes"] == len(upload), line
    reading.set()
    assert up.result() == "FIN"
    assert up.received == len(upload)
    # The upstream's own stream to the client was cut: no close_notify.
    assert read_counting(sock, [0]) == "eof without close_notify"
    sock.close()
