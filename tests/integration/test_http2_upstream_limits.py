"""HTTP/2 clients in front of an HTTP/1.1 upstream, from the review of the flood fixes: a
stream's request fields stop counting against the connection's 256 KiB budget once the upstream
took them (long-lived streams with large heads are not refused), and an upstream sending
interim (1xx) responses without end gets the client a 502 after 32 of them; and a response
whose chunked body's first chunk is the last one, arriving a byte at a time, is relayed (it
aborted a debug build: Beast's assertion, boostorg/beast#2861)."""

from __future__ import annotations

import threading
import time

import h2.events

from h2_client import H2Client
from helpers import read_head, wait_request_line
from test_http2_h2c_status import answering
import test_http_mode
from test_http2_limits import get_once

http_serve = test_http_mode.http_serve  # the fixture: (daemon, upstream, recorder)

TIMEOUT = 10.0


def test_streams_whose_heads_went_up_do_not_hold_the_fields_budget(http_serve, pki):
    """Review: the budget was given back only when a stream closed, so five long-lived
    streams (a long poll, a gRPC stream) with 55 KB heads already sent up got the next stream
    refused: REFUSED_STREAM well below max_concurrent_streams."""
    release = threading.Event()

    def handler(conn):
        read_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n")
        release.wait(TIMEOUT)  # the response goes on: the stream stays open

    daemon, _, _ = http_serve(handler=handler, http={"protocols": ["h2"]})
    client = H2Client(daemon, pki)
    try:
        for i in range(5):
            sid = client.request(f"/long{i}", extra=(("x-token", "t" * 55_000),))
            client.wait_for(lambda ev, s=sid: isinstance(ev, h2.events.ResponseReceived)
                            and ev.stream_id == s, TIMEOUT)
        small = client.request("/small")
        ev = client.wait_for(lambda ev: getattr(ev, "stream_id", None) == small and isinstance(
            ev, (h2.events.ResponseReceived, h2.events.StreamReset)), TIMEOUT)
        assert isinstance(ev, h2.events.ResponseReceived), ev
    finally:
        release.set()
        client.close()


def test_endless_interim_responses_end_in_a_502(http_serve, pki):
    def handler(conn):
        read_head(conn)
        try:
            while True:
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" * 64)
        except OSError:
            pass

    daemon, _, _ = http_serve(handler=handler, http={"protocols": ["h2"]})
    client = H2Client(daemon, pki)
    try:
        sid = client.request("/interim")
        assert client.response(sid, TIMEOUT)[0] == 502
    finally:
        client.close()
    line = wait_request_line(daemon, path="/interim")
    assert line["status"] == 502, line
    assert "more than 32 interim (1xx) responses" in line["detail"], line


def test_a_last_chunk_arriving_byte_by_byte_from_the_upstream_is_relayed(http_serve, pki):
    """Last stop's note: the HTTP/1.1 side of an HTTP/2 client's connection parsed a response
    body with Beast's http::async_read_some, which Boost 1.81 asserts in (a debug or ASan build
    aborted: every client of the daemon lost) when an upstream's body begins with the last
    chunk and its "0\\r\\n" is followed by one byte at a time. HTTP/1.1 mode's parse waits for
    five bytes there (framing_base::put_body); this one now does too."""
    def handler(conn):
        read_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n")
        for byte in (b"\r", b"\n"):
            time.sleep(0.2)  # each its own read: what the parser is called with matters here
            conn.sendall(byte)

    daemon, _, _ = http_serve(handler=handler, http={"protocols": ["h2"]})
    _, _, status, body = get_once(daemon, pki, "/empty")
    assert (status, body) == (200, b"")
    assert daemon.running()
    assert wait_request_line(daemon, path="/empty")["status"] == 200


def test_a_head_just_under_the_limit_reaches_an_h2c_upstream(serve, pki):
    """A head the 431 check admits (64 KiB) plus the fields mtlsd adds (XFCC,
    X-Forwarded-For/-Proto) passed nghttp2's 64 KiB default for a header block mtlsd sends: the
    h2c side failed it, and the client was told REFUSED_STREAM (retry: it always failed) while
    the log blamed the upstream (review). The h2c side now sends up to twice the limit."""
    seen: list = []
    upstream = answering("200", b"took it", seen, header_list_limit=1 << 20)
    daemon, _ = serve(upstream, http={"upstream_protocol": "h2c", "protocols": ["h2"]})
    client = H2Client(daemon, pki)
    try:
        sid = client.request("/big", extra=(("x-big", "a" * 65_250),))
        assert client.response(sid, TIMEOUT) == (200, b"took it")
    finally:
        client.close()
    assert len(seen[0]["x-big"]) == 65_250 and "x-forwarded-client-cert" in seen[0], seen
