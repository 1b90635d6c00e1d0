"""http.request_headers_timeout: an HTTP/1.1 request head must be whole within this long of its
first byte (nginx's client_header_timeout; default 60s), and so must an HTTP/2 header block
(HEADERS, then CONTINUATION frames: while one is open the connection carries nothing else). Without it a client that sends its head
a byte at a time (slowloris) holds a connection, its upstream connection and a place under
max_connections for as long as it keeps sending, since every byte moves timeouts.idle on. The
wait before a head's first byte is the idle timeout's, as before; nothing of an incomplete head
goes upstream, and no response is sent (as nginx: the client is not listening for one)."""

from __future__ import annotations

import ssl
import time

from h2_frames import CONTINUATION, END_HEADERS, HEADERS, _hpack_literal, connect_h2, frame
from helpers import wait_request_line
from http_upstream import Reader
from mtlsd_harness import client_context, fmt_addr, open_tls
from test_http_mode import SockConn, http_serve, read_response  # noqa: F401

HEAD_DETAIL = ("request head not complete within 1s of its first byte "
               "(http.request_headers_timeout)")


def trickle_until_closed(sock, data: bytes, every: float, give_up: float,
                         start: float) -> tuple[float, bytes]:
    """Sends `data` a byte at a time, one every `every` seconds (cycling), until mtlsd closes
    the connection; returns (seconds from `start` until the close, what mtlsd sent meanwhile).
    `start` is taken before the head's first byte is sent: mtlsd's deadline starts after it."""
    got = b""
    sock.settimeout(every)
    i = 0
    while time.monotonic() - start < give_up:
        try:
            sock.sendall(data[i % len(data):i % len(data) + 1])
            i += 1
            chunk = sock.recv(65536)
            if not chunk:
                return time.monotonic() - start, got
            got += chunk
        except TimeoutError:
            continue
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start, got
    raise AssertionError(f"still open {give_up}s into a trickled head; got {got!r}")


def test_a_head_sent_a_byte_at_a_time_is_cut_at_its_deadline(http_serve, pki):
    daemon, up, rec = http_serve(http={"request_headers_timeout": "1s"},
                                 timeouts={"idle": "30s"})
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        local = fmt_addr(sock.getsockname())
        start = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")       # the head's first bytes
        elapsed, got = trickle_until_closed(sock, b"X-Slow: a\r\n", every=0.1, give_up=8,
                                            start=start)
    # Cut 1 s after mtlsd read the first bytes; without the deadline every byte moves the
    # idle timeout (30 s) on and the connection stays open past give_up.
    assert 0.9 <= elapsed < 5, elapsed
    assert got == b"", got
    line = daemon.wait_for_access(client=local)
    assert (line["result"], line["termination"], line["detail"]) == \
        ("accepted", "idle_timeout", HEAD_DETAIL), line
    assert up.total_received() == 0 and rec.requests == []
    # The cut request has its line and its count: no response, code class "none".
    request = wait_request_line(daemon, client=local)
    assert "request_headers_timeout" in request["detail"], request
    assert daemon.scrape().get("mtlsd_http_requests_total", listener="inbound",
                               protocol="HTTP/1.1", code_class="none") == 1


def test_the_deadline_bounds_each_head_not_the_wait_for_it(http_serve, pki):
    """The deadline starts with a head's first byte and ends with the head: a keep-alive
    connection idle for longer than it between requests, and heads that arrive in pieces within
    it, are served."""
    daemon, up, rec = http_serve(http={"request_headers_timeout": "1s"},
                                 timeouts={"idle": "30s"})
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        reader = Reader(SockConn(sock))
        for n, path in enumerate(("/1", "/2")):
            if n:
                time.sleep(1.5)                             # idle, longer than the deadline
            head = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            sock.sendall(head[:10])                         # a head in two pieces, 0.2s apart
            time.sleep(0.2)
            sock.sendall(head[10:])
            assert read_response(reader)[0] == 200
    assert [r.target for r in rec.requests] == ["/1", "/2"]
    assert up.connection_count() == 1



def request_block(path: str) -> bytes:
    return b"".join(_hpack_literal(k, v) for k, v in (
        (":method", "GET"), (":scheme", "https"), (":authority", "x"), (":path", path)))


def trickle_block_until_closed(client, stream: int) -> float:
    """Opens a header block on `stream` (HEADERS without END_HEADERS, then a CONTINUATION frame's
    header) and sends the CONTINUATION's block fragment a byte at a time, every 0.1 s, until
    mtlsd closes the connection; returns the seconds from the HEADERS frame's sending."""
    rest = _hpack_literal("x-slow", "a" * 100)     # more bytes than 8 s of trickling sends
    start = time.monotonic()
    client.sock.sendall(frame(HEADERS, 0, stream, request_block("/slow"))
                        + frame(CONTINUATION, END_HEADERS, stream, rest)[:9])
    return trickle_until_closed(client.sock, rest, every=0.1, give_up=8, start=start)[0]


def h2_serve(http_serve, pki):
    daemon, up, rec = http_serve(http={"request_headers_timeout": "1s", "protocols": ["h2"]},
                                 timeouts={"idle": "30s"})
    host, port = daemon.addr()
    client = connect_h2(client_context(pki, "client"), host, port, 5)
    return daemon, up, rec, client


def test_an_http2_header_block_sent_a_byte_at_a_time_is_cut_at_its_deadline(http_serve, pki):
    """HEADERS without END_HEADERS, then a CONTINUATION frame whose block fragment comes a byte
    at a time: the connection ends at the deadline, nothing goes upstream."""
    daemon, up, rec, client = h2_serve(http_serve, pki)
    local = fmt_addr(client.sock.getsockname())
    elapsed = trickle_block_until_closed(client, 1)
    assert 0.9 <= elapsed < 5, elapsed
    line = daemon.wait_for_access(client=local)
    assert (line["termination"], line["detail"]) == ("idle_timeout", HEAD_DETAIL), line
    assert up.total_received() == 0 and rec.requests == []


def test_a_header_block_nghttp2_ignores_is_bounded_too(http_serve, pki):
    """nghttp2 reads a block on a stream id below the last one used to its end without a
    callback (RFC 9113 5.1.1 makes it unusable): the deadline comes from the frames themselves."""
    daemon, up, rec, client = h2_serve(http_serve, pki)
    client.sock.sendall(frame(HEADERS, 0x1 | END_HEADERS, 3, request_block("/3")))
    wait_request_line(daemon, path="/3", status=200)
    elapsed = trickle_block_until_closed(client, 1)
    assert 0.9 <= elapsed < 5, elapsed
    assert [r.target for r in rec.requests] == ["/3"]


def test_http2_header_blocks_in_pieces_within_the_deadline_are_served(http_serve, pki):
    daemon, up, rec, client = h2_serve(http_serve, pki)
    for sid in (1, 3):
        if sid > 1:
            time.sleep(1.5)                                       # idle, longer than the deadline
        client.sock.sendall(frame(HEADERS, 0x1, sid, request_block(f"/{sid}")))  # END_STREAM
        time.sleep(0.2)
        client.sock.sendall(frame(CONTINUATION, END_HEADERS, sid, _hpack_literal("x-a", "b")))
        wait_request_line(daemon, path=f"/{sid}", status=200)
    assert [r.target for r in rec.requests] == ["/1", "/3"]
