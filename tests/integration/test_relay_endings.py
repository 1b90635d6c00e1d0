"""How the end of the client's TLS stream reaches a plaintext upstream (byte relay, server mode).

Review: every end was passed on as a FIN, so an upstream could not tell a stream cut short from
one that ended. Now:
- close_notify, or a TCP FIN between two records (a client that skips close_notify, as many do;
  Go reads it as EOF too): the upstream gets everything, then a FIN;
- a FIN inside a record (the rest of the record never came: a truncation) or a TCP reset: the
  upstream gets what came whole, then a reset, and the access line says why.
The client is Python ssl over memory BIOs, so that the test chooses which record bytes go out;
the upstream records what it read and how its connection ended.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading

from clients import handshake_over_bios
from helpers import wait_until
from mtlsd_harness import client_context, daemon_config, fmt_addr, server_listener


class EndRecorder:
    """A TCP upstream that reads one connection to its end: (bytes, "FIN" or "RST")."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.done = threading.Event()
        self.got = b""
        self.end = ""
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        conn, _ = self.sock.accept()
        conn.settimeout(10)
        try:
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
