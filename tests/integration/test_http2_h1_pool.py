"""HTTP/2 clients in front of an HTTP/1.1 upstream: mtlsd keeps the upstream connections of one
client connection in a small pool and sends each stream's request on a free one. A pooled
connection must carry nothing from before into the next stream — that stream may be another
user's, behind a multiplexing gateway — and an answer HTTP/2 cannot carry (101) must not reach
the client.

The upstream is our own raw HTTP/1.1 server (http_upstream.py), so that the test decides
exactly what it sends, and when; the client is hyper-h2 (h2_client.py)."""

from __future__ import annotations

import threading

from h2_client import H2Client, status_of
from http_upstream import HttpRecorder, Reader, read_request, response
from test_http2_limits import wait_request_line
from test_http_mode import http_serve  # noqa: F401

TIMEOUT = 10.0
INJECTED = response(200, b"LEAKED", extra=("X-Injected: yes",))


def test_bytes_after_a_response_do_not_answer_the_next_stream(http_serve, pki):
    """The upstream sends a second response nobody asked for in the same write as the first:
    the connection is not pooled, and the next stream gets its own answer."""
    def app(req):
        if req.target == "/one":
            return response(200, b"reply-1") + INJECTED
        return response(200, b"reply-2")
    daemon, up, rec = http_serve(app, http={"protocols": ["h2"]})
    client = H2Client(daemon, pki)
    try:
        assert client.response(client.request("/one"), TIMEOUT) == (200, b"reply-1")
        assert client.response(client.request("/two"), TIMEOUT) == (200, b"reply-2")
    finally:
        client.close()
    assert [r.target for r in rec.requests] == ["/one", "/two"]
    assert rec.requests[0].conn_id != rec.requests[1].conn_id


def test_a_pooled_connection_that_spoke_unasked_is_not_reused(http_serve, pki):
    """The upstream answers, and only once mtlsd has put the connection back in its pool sends
    bytes nobody asked for: the next stream must go out on a fresh connection."""
    pooled, spoke = threading.Event(), threading.Event()
    seen: list[str] = []

    def handle(conn) -> None:
        reader = Reader(conn)
        req = read_request(reader)
        if req is None:
            return
        seen.append(req.target)
        conn.sendall(response(200, f"reply to {req.target}".encode()))
        if req.target == "/one":
            assert pooled.wait(TIMEOUT)
            conn.sendall(INJECTED)        # in mtlsd's receive queue once this returns
            spoke.set()
        while (req := read_request(reader)) is not None:
            seen.append(req.target)
            conn.sendall(response(200, f"reply to {req.target}".encode()))
        conn.shutdown_write()

    daemon, up = http_serve(handler=handle, http={"protocols": ["h2"]})[:2]
    client = H2Client(daemon, pki)
    try:
        assert client.response(client.request("/one"), TIMEOUT) == (200, b"reply to /one")
        wait_request_line(daemon, path="/one")    # the exchange is over: the connection pooled
        pooled.set()
        assert spoke.wait(TIMEOUT)
        assert client.response(client.request("/two"), TIMEOUT) == (200, b"reply to /two")
    finally:
        client.close()
    assert up.connection_count() == 2
    assert seen == ["/one", "/two"]


def test_an_upstream_101_is_a_502_and_the_connection_is_not_reused(http_serve, pki):
    """HTTP/2 has no 101 (RFC 9113 8.6) and the request asked for no upgrade: the client gets a
    502, and the next stream a fresh upstream connection."""
    def app(req):
        if req.target == "/one":
            return b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"
        return response(200, b"reply-2")
    daemon, up, rec = http_serve(app, http={"protocols": ["h2"]})
    client = H2Client(daemon, pki)
    try:
        sid = client.request("/one")
        client.wait_for(lambda ev: getattr(ev, "stream_id", None) == sid
                        and type(ev).__name__ in ("StreamEnded", "StreamReset"), TIMEOUT)
        mine = [ev for ev in client.events if getattr(ev, "stream_id", None) == sid]
        assert status_of(mine) == 502, mine
        assert client.response(client.request("/two"), TIMEOUT) == (200, b"reply-2")
    finally:
        client.close()
    line = wait_request_line(daemon, path="/one")
    assert line["status"] == 502 and "101" in line["detail"], line
    assert rec.requests[0].conn_id != rec.requests[1].conn_id
