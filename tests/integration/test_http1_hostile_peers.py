"""HTTP/1.1 mode against peers that keep a connection busy (a review's findings): one connection
whose peer keeps its socket full does not hold its worker from the others; an upstream that
sends interim (1xx) responses without end gets a 502 after http_interim_limit (32) of them; a
chunked body whose last chunk arrives a byte at a time is relayed (Boost 1.81's Beast aborted a
debug build on it); a client that ends its connection inside a request body is not answered
400 as if it had sent a malformed one."""

from __future__ import annotations

import socket
import threading
import time

from clients import read_to_close
from helpers import read_head, wait_request_line
from http_upstream import Reader
from mtlsd_harness import client_context, open_tls
from test_http_mode import SockConn, read_response
import test_http_mode

http_serve = test_http_mode.http_serve  # the fixture: (daemon, upstream, recorder)

TIMEOUT = 10.0
ONE = {"top": {"workers": 1}}


def timed_get(daemon, pki) -> float:
    """Seconds a new client's GET / takes, handshake included."""
    start = time.monotonic()
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        sock.settimeout(TIMEOUT)
        sock.sendall(b"GET /probe HTTP/1.1\r\nHost: localhost\r\n\r\n")
        status, _, _ = read_response(Reader(SockConn(sock)))
        assert status == 200
    return time.monotonic() - start


def drain(conn) -> None:
    """An upstream that reads everything (without keeping it) and never answers."""
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    block = bytearray(1 << 20)
    try:
        while conn.sock.recv_into(block):
            pass
    except OSError:
        pass


def test_a_client_that_keeps_its_socket_full_does_not_hold_the_worker(http_serve, pki):
    """Review: the HTTP/1.1 loops read on for as long as the client's bytes were there, so one
    client keeping its socket full (here with the empty lines mtlsd skips before a request
    line; a fast upload did the same) held its worker: another client's request waited
    seconds."""
    def handler(conn):
        read_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        drain(conn)
    daemon, _, _ = http_serve(handler=handler, http={"request_headers_timeout": "30s"}, **ONE)
    stop = threading.Event()

    def flood():
        with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
            block = b"\r\n" * 8192
            try:
                while not stop.is_set():
                    sock.sendall(block)
            except OSError:
                pass
    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        time.sleep(0.5)  # the flood under way
        times = [timed_get(daemon, pki) for _ in range(5)]
    finally:
        stop.set()
        flooder.join(TIMEOUT)
    print("probe times", times)
    assert max(times) < 1.5, f"a request waited {max(times):.2f} s behind the flood"


def test_endless_interim_responses_end_in_a_502(http_serve, pki):
    """Review: to an HTTP/1.0 client each 1xx was dropped and the next read, for ever, at full
    CPU and past every timeout (nothing was written, each read counted as activity)."""
    def handler(conn):
        read_head(conn)
        try:
            while True:
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" * 64)
        except OSError:
            pass
    daemon, _, _ = http_serve(handler=handler, **ONE)
    for version in (b"1.0", b"1.1"):
        with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
            sock.settimeout(TIMEOUT)
            sock.sendall(b"GET /v%s HTTP/%s\r\nHost: localhost\r\n\r\n" % (version, version))
            reader = Reader(SockConn(sock))
            while (answer := read_response(reader)) and 100 <= answer[0] < 200:
                pass
            assert answer and answer[0] == 502, answer
        assert wait_request_line(daemon, path="/v" + version.decode())["status"] == 502
    lines = [a for a in daemon.access_logs() if "interim" in a.get("detail", "")]
    assert len(lines) == 2, daemon.access_logs()
    assert all("more than 32 interim (1xx) responses" in a["detail"] for a in lines), lines


def test_a_last_chunk_arriving_byte_by_byte_is_relayed(http_serve, pki):
    """Review: "0\\r\\n", then "\\r", then "\\n" aborted the daemon in a debug build (Beast's
    assertion, boostorg/beast#2861). From a client here; an upstream's response body goes through
    the same step (framing_base::put_body)."""
    daemon, up, rec = http_serve()
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        sock.settimeout(TIMEOUT)
        sock.sendall(b"POST /bytes HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked"
                     b"\r\n\r\n0\r\n")
        for byte in (b"\r", b"\n"):
            time.sleep(0.2)  # each its own read: what the parser is called with matters here
            sock.sendall(byte)
        status, _, _ = read_response(Reader(SockConn(sock)))
        assert status == 200
    assert daemon.running()
    assert [r.target for r in rec.requests] == ["/bytes"]


def test_a_client_ending_inside_a_request_body_is_not_answered_400(http_serve, pki):
    """Review: a client that gave up on an upload got a 400 and the line said "malformed
    request body: partial message"."""
    daemon, _, _ = http_serve(handler=drain)
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        sock.settimeout(TIMEOUT)
        sock.sendall(b"POST /gave-up HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000"
                     b"\r\n\r\n" + b"x" * 1000)
        raw = sock.unwrap()  # close_notify: the client's end, inside the body
        raw.shutdown(socket.SHUT_WR)
        raw.settimeout(TIMEOUT)
        read_to_close(raw)  # until mtlsd closes (TLS records: the line says what it answered)
        raw.close()
    line = wait_request_line(daemon, path="/gave-up")
    assert line["detail"] == "the client ended its connection inside the request body", line
    assert line["status"] != 400, line
