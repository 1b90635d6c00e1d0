"""HTTP/2 clients in front of an HTTP/1.1 upstream: mtlsd keeps the upstream connections of one
client connection in a small pool and sends each stream's request on a free one. A pooled
connection must carry nothing from before into the next stream — that stream may be another
user's, behind a multiplexing gateway — and an answer HTTP/2 cannot carry (101) must not reach
the client. Trailers cross between the chunked HTTP/1.1 body and HTTP/2's trailing HEADERS.

The upstream is our own raw HTTP/1.1 server (http_upstream.py), so that the test decides
exactly what it sends, and when; the client is hyper-h2 (h2_client.py)."""

from __future__ import annotations

import socket
import threading

import h2.errors
import pytest
import h2.events

from h2_client import H2Client, status_of
from helpers import wait_request_line
from http_upstream import Reader, read_request, response
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


def first_502_then_a_fresh_connection(http_serve, pki, app):
    """An HTTP/2 client asks for /one, which `app` answers with what gets it a 502, then /two,
    which `app` answers 200 "reply-2": (the daemon, the upstream's recorder)."""
    daemon, _, rec = http_serve(app, http={"protocols": ["h2"]})
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
    return daemon, rec


def test_an_upstream_101_is_a_502_and_the_connection_is_not_reused(http_serve, pki):
    """HTTP/2 has no 101 (RFC 9113 8.6) and the request asked for no upgrade: the client gets a
    502, and the next stream a fresh upstream connection."""
    def app(req):
        if req.target == "/one":
            return b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"
        return response(200, b"reply-2")
    daemon, rec = first_502_then_a_fresh_connection(http_serve, pki, app)
    line = wait_request_line(daemon, path="/one")
    assert line["status"] == 502 and "101" in line["detail"], line
    assert rec.requests[0].conn_id != rec.requests[1].conn_id


@pytest.mark.parametrize("head,why", [
    (b"Transfer-Encoding: gzip\r\nContent-Length: 5\r\n", "both Transfer-Encoding and Content-"),
    (b"Transfer-Encoding: gzip, chunked\r\n", "a transfer coding other than chunked"),
], ids=["te-and-content-length", "gzip-then-chunked"])
def test_a_response_http2_cannot_frame_is_a_502(http_serve, pki, head, why):
    """As the HTTP/1.1 relay answers 502 for a length given two ways (review: an HTTP/2 client
    got 200 with the Content-Length), and HTTP/2 has no field for a transfer coding other than
    chunked: its coded bytes would reach the client as the content. The connection is not
    reused."""
    def app(req):
        if req.target == "/one":
            return b"HTTP/1.1 200 OK\r\n" + head + b"\r\n" + b"5\r\nhello\r\n0\r\n\r\n"
        return response(200, b"reply-2")
    daemon, rec = first_502_then_a_fresh_connection(http_serve, pki, app)
    line = wait_request_line(daemon, path="/one")
    assert line["status"] == 502 and why in line["detail"], line
    assert rec.requests[0].conn_id != rec.requests[1].conn_id


def test_a_chunked_responses_trailers_reach_the_client_as_http2_trailers(http_serve, pki):
    """The trailer section of a chunked HTTP/1.1 response becomes a trailing HEADERS frame (as
    Envoy's codecs translate it), without the fields HTTP/2 forbids there; the connection is
    pooled as after any complete response."""
    def app(req):
        # Server-Timing in the head and the trailers: Beast keeps same-named fields together, so
        # the trailer is not simply "the fields after the head's". Connection names X-Hop.
        if req.target == "/one":
            return (b"HTTP/1.1 200 OK\r\nServer-Timing: head;dur=1\r\nConnection: x-hop\r\n"
                    b"Transfer-Encoding: chunked\r\nTrailer: X-Checksum\r\nX-Last: head\r\n\r\n"
                    b"5\r\nhello\r\n0\r\nX-Checksum: 5d41402a\r\nKeep-Alive: timeout=5\r\n"
                    b"Server-Timing: body;dur=2\r\nX-Hop: hop-by-hop\r\nX-Build: 7\r\n\r\n")
        return response(200, b"reply-2")
    daemon, up, rec = http_serve(app, http={"protocols": ["h2"]})
    client = H2Client(daemon, pki)
    try:
        sid = client.request("/one")
        assert client.response(sid, TIMEOUT) == (200, b"hello")
        trailers = [ev for ev in client.events if isinstance(ev, h2.events.TrailersReceived)
                    and ev.stream_id == sid]
        assert len(trailers) == 1, client.events
        assert list(trailers[0].headers) == [("x-checksum", "5d41402a"),
                                             ("server-timing", "body;dur=2"), ("x-build", "7")]
        assert client.response(client.request("/two"), TIMEOUT) == (200, b"reply-2")
    finally:
        client.close()
    assert rec.requests[0].conn_id == rec.requests[1].conn_id


def test_an_http2_clients_trailers_reach_the_http11_upstream_in_the_last_chunk(http_serve, pki):
    """Request trailers go up as the chunked body's trailer section, without the X-Forwarded-*
    ones (they could pass for what mtlsd tells the upstream) and the framing ones."""
    daemon, up, rec = http_serve(http={"protocols": ["h2"]})
    client = H2Client(daemon, pki)
    try:
        sid = client.request("/upload", method="POST", end_stream=False)
        client.conn.send_data(sid, b"payload")
        client.conn.send_headers(sid, [("x-checksum", "321c3cf4"),
                                       ("x-forwarded-client-cert", "By=spiffe://evil"),
                                       ("content-length", "7")], end_stream=True)
        client.flush()
        assert client.response(sid, TIMEOUT)[0] == 200
    finally:
        client.close()
    [req] = rec.requests
    assert req.chunked and req.body == b"payload"
    assert req.trailers == [("x-checksum", "321c3cf4")], req.trailers


def test_a_content_length_goes_up_as_a_number_not_as_the_client_spelt_it(http_serve, pki):
    """Review: "0007" reached the HTTP/1.1 upstream as spelt, where an HTTP/1.1 client's goes
    up canonical (forward_request_head); a parser that reads leading zeros otherwise than
    nghttp2 did could frame the body differently."""
    daemon, up, rec = http_serve(http={"protocols": ["h2"]})
    client = H2Client(daemon, pki)
    try:
        sid = client.request("/upload", method="POST", end_stream=False,
                             extra=(("content-length", "0007"),))
        client.conn.send_data(sid, b"payload", end_stream=True)
        client.flush()
        assert client.response(sid, TIMEOUT)[0] == 200
    finally:
        client.close()
    [req] = rec.requests
    assert req.get_all("content-length") == ["7"] and req.body == b"payload", req


def test_a_response_whose_trailers_http2_cannot_carry_is_reset_not_left_open(http_serve, pki):
    """Beast bounds a head, not a trailer section: one past the 64 KiB an HTTP/2 header block
    may hold gets RST_STREAM once the body is out, rather than a stream that never ends."""
    many = b"".join(b"a%d: b\r\n" % i for i in range(8000))
    def app(req):
        return (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
                + many + b"\r\n")
    daemon, up, rec = http_serve(app, http={"protocols": ["h2"]})
    client = H2Client(daemon, pki)
    try:
        sid = client.request("/one")
        reset = client.wait_for(lambda ev: isinstance(ev, h2.events.StreamReset)
                                and ev.stream_id == sid, TIMEOUT)
        assert reset.error_code == h2.errors.ErrorCodes.INTERNAL_ERROR, reset
    finally:
        client.close()
    line = wait_request_line(daemon, path="/one")
    assert "trailers larger than" in line["detail"], line


def test_trailers_without_a_body_still_go_up(http_serve, pki):
    """HEADERS, then trailers with END_STREAM and no DATA, while the pooled connection is busy:
    by the time a new one is connected the request has ended, with no body, and still needs a
    chunked one to carry its trailers."""
    arrived, release = threading.Event(), threading.Event()

    def app(req):
        if req.target == "/slow":
            arrived.set()
            assert release.wait(TIMEOUT)
        return response(200, b"ok")
    daemon, up, rec = http_serve(app, http={"protocols": ["h2"]})
    client = H2Client(daemon, pki)
    try:
        slow = client.request("/slow")
        assert arrived.wait(TIMEOUT)                 # the first connection is taken
        sid = client.request("/upload", method="POST", end_stream=False, flush=False)
        client.conn.send_headers(sid, [("x-checksum", "abc")], end_stream=True)
        client.flush()
        assert client.response(sid, TIMEOUT)[0] == 200
        release.set()
        assert client.response(slow, TIMEOUT)[0] == 200
    finally:
        release.set()
        client.close()
    [req] = [r for r in rec.requests if r.target == "/upload"]
    assert req.chunked and req.body == b"" and req.trailers == [("x-checksum", "abc")], req


def test_a_path_that_is_not_a_path_never_reaches_the_upstream(http_serve, pki):
    """With a :scheme besides http/https nghttp2 lets any :path through: one naming another
    host than :authority would reach the HTTP/1.1 upstream as an absolute-form target."""
    daemon, up, rec = http_serve(http={"protocols": ["h2"]})
    client = H2Client(daemon, pki)
    try:
        # nghttp2 also lets "@", "%" or "," into :authority (sent up as Host) and "#" into
        # :path: the rules an HTTP/1.1 request meets apply.
        for scheme, authority, path in (("foo", "good.example", "http://evil.example/x"),
                                        ("https", "good.example", "http://evil.example/x"),
                                        ("https", "evil.example@good.example", "/x"),
                                        ("https", "good.example", "/x#frag")):
            sid = client.conn.get_next_available_stream_id()
            client.conn.send_headers(sid, [(":method", "GET"), (":scheme", scheme),
                                           (":authority", authority), (":path", path)],
                                     end_stream=True)
            client.bodies[sid] = bytearray()
            client.flush()
            client.wait_for(lambda ev: getattr(ev, "stream_id", None) == sid and isinstance(
                ev, (h2.events.StreamEnded, h2.events.StreamReset)), TIMEOUT)
            mine = [ev for ev in client.events if getattr(ev, "stream_id", None) == sid]
            assert any(isinstance(ev, h2.events.StreamReset) for ev in mine) or \
                status_of(mine) == 400, (scheme, authority, path, mine)
        assert client.response(client.request("/ok"), TIMEOUT)[0] == 200
    finally:
        client.close()
    assert [r.target for r in rec.requests] == ["/ok"]


def test_connects_the_http11_side_opens_for_later_streams_are_counted(serve, pki):
    """An HTTP/2 client of an HTTP/1.1 upstream: streams beyond the first open connections of
    their own. When the upstream stops listening, those fail (502) and are counted in
    mtlsd_upstream_connect_failures_total, which MtlsdUpstreamConnectFailures reads; they were
    not, so an outage stayed silent while HTTP/2 clients kept their connections."""
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(8)
    address = f"127.0.0.1:{listening.getsockname()[1]}"
    held = []
    accepted = threading.Event()

    def accept_one():
        conn, _ = listening.accept()
        held.append(conn)  # never answered: the first stream keeps that connection busy
        accepted.set()

    threading.Thread(target=accept_one, daemon=True).start()
    daemon, _ = serve(upstream=address, http={"upstream_protocol": "http/1.1"})
    client = H2Client(daemon, pki)
    try:
        client.request("/busy")
        assert accepted.wait(10)
        listening.close()  # from now on connects are refused
        before = daemon.scrape().get("mtlsd_upstream_connect_failures_total", listener="inbound")
        streams = [client.request(f"/n{i}") for i in range(3)]
        for sid in streams:
            assert client.response(sid)[0] == 502
        after = daemon.scrape().get("mtlsd_upstream_connect_failures_total", listener="inbound")
        assert after - before == 3, (before, after)
    finally:
        client.close()
        for conn in held:
            conn.close()
