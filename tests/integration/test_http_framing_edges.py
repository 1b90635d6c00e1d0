"""HTTP/1.1 framing at its edges, in `http:` mode (an independent review's findings):

- An HTTP/1.0 client is sent no Transfer-Encoding (RFC 9112 7.1): a chunked response reaches it
  as its data alone, with `Connection: close`, and the connection closes after it, as nginx
  sends it; a transfer coding besides chunked (which could not be undone, nor said) is a 502.
- A Content-Length or chunk size above 2^63-1 is not passed on, either way: an upstream or a
  client reading it as a signed 64-bit number would take it for negative. A request's is a 400
  (nginx answers 400 too), a response's a 502 or a response cut short.
- A client's request trailers lose the fields that have no place in a trailer section (Host,
  Connection and the other connection-specific fields, TE, Expect), by the rule an HTTP/2
  client's trailers follow.
- A response status outside 100-599 is a 502, as Envoy answers it; it was relayed, and counted
  as no response at all.
The clients are raw TLS sockets (the exact bytes matter); the upstreams are written here, and
what they received is checked byte by byte.

An HTTP/2 client of the same HTTP/1.1 upstream (h2_h1_exchange.cpp) follows the same rules for
the response: a status outside 100-599, and a Transfer-Encoding list that does not parse or gives
chunked parameters, are a 502 (a gRPC call: UNAVAILABLE, Trailers-Only) with the reason as its
detail. That path had its own checks: a status below 100 passed for an interim response (waited
past), 600 and up reached the client, and Beast's reading of the list (up to its first character
that is not a token's) took `chunked, "x"` for plain chunked. The client is hyper-h2 (h2_client.py)."""

from __future__ import annotations

import socket
import ssl
import threading

import h2.events
import pytest

from h2_client import H2Client
from helpers import wait_request_line
from http_upstream import Reader, read_request, response
from mtlsd_harness import client_context, fmt_addr, open_tls
from test_http2_h1_pool import first_502_then_a_fresh_connection
from test_http_mode import SockConn
import test_http_mode

http_serve = test_http_mode.http_serve  # the fixture: (daemon, upstream, recorder)

TIMEOUT = 10.0


def answering_each(raw: bytes):
    """An upstream that answers every request on its connection with exactly `raw`, and closes
    its side when the client's ends."""
    def handle(conn) -> None:
        reader = Reader(conn)
        while read_request(reader) is not None:
            conn.sendall(raw)
        conn.shutdown_write()
    return handle


def head_then_swallow(closed: threading.Event, answer: bytes | None = None):
    """An upstream that reads a request head, sends `answer` (if any) and closes its side, then
    reads everything until mtlsd closes (`closed` is set then)."""
    def handle(conn) -> None:
        if Reader(conn).until(b"\r\n\r\n") is not None and answer is not None:
            conn.sendall(answer)
            conn.shutdown_write()
        while conn.recv():
            pass
        closed.set()
    return handle


def exchange(daemon, pki, data: bytes, wait: float = 5.0) -> tuple[bytes, str]:
    """Sends `data` and reads until mtlsd closes, or `wait` seconds pass with nothing (a binary
    that waits for more of the message: the test then fails on what came, not on a timeout)."""
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        local = fmt_addr(sock.getsockname())
        sock.settimeout(wait)
        sock.sendall(data)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except (ssl.SSLError, ConnectionResetError, socket.timeout):
            pass
    return out, local


def upstream_bytes(up) -> bytes:
    return b"".join(bytes(c.received) for c in up.connections)


# --- an HTTP/1.0 client and a chunked response -----------------------------------------------

CHUNKED_ANSWER = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kept: yes\r\n\r\n"
                  b"2;ext=1\r\nok\r\n3\r\n!!!\r\n0\r\nX-Sum: 5\r\n\r\n")


def test_an_http10_client_gets_a_chunked_response_as_its_data_then_the_close(http_serve, pki):
    """Review: the client got the chunk framing and `Connection: keep-alive`, and a client that
    knows no chunked coding took the framing for content and waited for more."""
    daemon, _, _ = http_serve(handler=answering_each(CHUNKED_ANSWER))
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        local = fmt_addr(sock.getsockname())
        sock.settimeout(TIMEOUT)
        sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        reader = Reader(SockConn(sock))
        head = reader.until(b"\r\n\r\n")
        assert head == b"HTTP/1.1 200 OK\r\nX-Kept: yes\r\nConnection: close\r\n\r\n", head
        body = bytes(reader.buf)
        while chunk := sock.recv(65536):                # the body ends with the close
            body += chunk
        assert body == b"ok!!!", body
    line = daemon.wait_for_access(client=local)
    assert line["termination"] == "upstream_close", line
    request = wait_request_line(daemon, client=local)
    assert request["status"] == 200 and request["detail"] == "", request


def test_an_http10_head_request_answered_chunked_keeps_its_connection(http_serve, pki):
    """A response to HEAD has no body, so nothing to unchunk: its head loses Transfer-Encoding
    and the kept connection serves the next request (review of the fix above: it closed)."""
    head_answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    daemon, _, _ = http_serve(handler=answering_each(head_answer))
    request = b"HEAD / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        sock.settimeout(TIMEOUT)
        reader = Reader(SockConn(sock))
        for _ in range(2):
            sock.sendall(request)
            head = reader.until(b"\r\n\r\n")
            assert head is not None and head.startswith(b"HTTP/1.1 200 OK\r\n"), head
            assert b"Connection: keep-alive" in head, head
            assert b"Transfer-Encoding" not in head, head


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"gzip"])
def test_an_http10_client_gets_a_502_for_a_coding_it_cannot_be_sent(http_serve, pki, coding):
    """gzip could not be taken off, nor said without Transfer-Encoding: as for an HTTP/2
    client, a 502. (An HTTP/1.1 client gets such a response as it came.)"""
    body = b"3\r\nabc\r\n0\r\n\r\n" if coding.endswith(b"chunked") else b"abc"
    daemon, _, _ = http_serve(handler=answering_each(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + coding + b"\r\n\r\n" + body))
    out, local = exchange(daemon, pki, b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), out
    assert b"abc" not in out, out
    request = wait_request_line(daemon, client=local)
    assert request["status"] == 502, request
    assert request["detail"] == ("upstream: a transfer coding other than chunked, which an "
                                 "HTTP/1.0 client cannot be sent"), request
    out, _ = exchange(daemon, pki, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + coding), out


# --- lengths above 2^63-1 ----------------------------------------------------------------------

@pytest.mark.parametrize("length", [b"9223372036854775808", b"18446744073709551615"])
def test_a_request_content_length_above_2_to_63_gets_400_and_nothing_upstream(http_serve, pki,
                                                                            length):
    """Review: the upstream got the length as sent; nginx answers 400."""
    daemon, up, _ = http_serve(handler=head_then_swallow(threading.Event()))
    out, local = exchange(daemon, pki, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: "
                          + length + b"\r\n\r\nabc")
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n"), out
    request = wait_request_line(daemon, client=local)
    assert (request["status"], request["detail"]) == (400, "a Content-Length above 2^63-1")
    assert up.total_received() == 0


@pytest.mark.parametrize("size", [b"8000000000000000", b"ffffffffffffffff"])
def test_a_request_chunk_size_above_2_to_63_never_goes_up(http_serve, pki, size):
    """The head went up before the body arrived: the chunk is refused as it arrives (400, both
    connections closed), and the upstream never sees its size."""
    closed = threading.Event()
    daemon, up, _ = http_serve(handler=head_then_swallow(closed))
    out, local = exchange(daemon, pki, b"POST / HTTP/1.1\r\nHost: x\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n" + size + b"\r\nabc")
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n"), out
    assert closed.wait(TIMEOUT), "mtlsd kept the upstream connection open"
    received = upstream_bytes(up)
    assert received.startswith(b"POST / HTTP/1.1\r\n") and received.endswith(b"\r\n\r\n"), \
        received                                             # the head, and nothing after it
    request = wait_request_line(daemon, client=local)
    assert request["detail"] == "malformed request body: a chunk size above 2^63-1", request


def test_a_response_content_length_above_2_to_63_gets_502(http_serve, pki):
    daemon, _, _ = http_serve(handler=answering_each(
        b"HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775808\r\n\r\nabc"))
    out, local = exchange(daemon, pki, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), out
    request = wait_request_line(daemon, client=local)
    assert request["detail"] == ("upstream: reading the response head: a Content-Length above "
                                 "2^63-1"), request


def test_a_response_chunk_size_above_2_to_63_cuts_the_response_before_it(http_serve, pki):
    closed = threading.Event()
    daemon, _, _ = http_serve(handler=head_then_swallow(
        closed, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"2\r\nok\r\n8000000000000000\r\nabc"))
    out, local = exchange(daemon, pki, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out == b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok", out
    line = daemon.wait_for_access(client=local)    # the request's line has its status, 200
    assert line["detail"] == "upstream: reading the response body: a chunk size above 2^63-1", \
        line


# --- request trailers ----------------------------------------------------------------------------

def test_request_trailers_lose_the_fields_that_have_no_place_there(http_serve, pki):
    """Review: Host, Connection, Upgrade, TE, Keep-Alive and Expect trailers reached the upstream
    as sent, where an HTTP/2 client's were dropped (an upstream that merges trailers into the
    head could route the request to another host, or close on the client's word)."""
    daemon, up, _ = http_serve(handler=answering_each(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    out, _ = exchange(daemon, pki, (
        b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"1\r\nA\r\n0\r\nHost: evil.example\r\nConnection: close\r\nUpgrade: websocket\r\n"
        b"TE: gzip\r\nKeep-Alive: 1\r\nExpect: foo\r\nProxy_Connection: x\r\nX-Sum: 1\r\n\r\n"))
    assert out.startswith(b"HTTP/1.1 200 OK\r\n"), out
    received = upstream_bytes(up)
    assert received.endswith(b"\r\n\r\n1\r\nA\r\n0\r\nX-Sum: 1\r\n\r\n"), received


# --- statuses outside 100-599 ---------------------------------------------------------------------

@pytest.mark.parametrize("status_line", [b"HTTP/1.1 099 X", b"HTTP/1.1 600 X", b"HTTP/1.1 000 X"])
def test_a_response_status_outside_100_to_599_gets_502(http_serve, pki, status_line):
    """Review: relayed to the client, and counted as code class "none" (no response). Envoy
    refuses such a status with a 502, as now; nginx relays it."""
    daemon, _, _ = http_serve(handler=answering_each(
        status_line + b"\r\nContent-Length: 2\r\n\r\nok"))
    out, local = exchange(daemon, pki, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), out
    request = wait_request_line(daemon, client=local)
    assert (request["status"], request["detail"]) == \
        (502, "upstream: a response status outside 100-599"), request
    metrics = daemon.scrape()
    for code_class, count in (("5xx", 1), ("none", 0)):
        samples = metrics.series("mtlsd_http_requests_total", listener="inbound",
                                 protocol="HTTP/1.1", code_class=code_class)
        assert sum(value for _, value in samples) == count, (code_class, samples)


# --- an HTTP/2 client of the HTTP/1.1 upstream: the same rules ---------------------------------

STATUS_REFUSED = "upstream: a response status outside 100-599"


def answer_one(first: bytes):
    """An upstream app that answers /one with `first` and anything else with 200 "reply-2"."""
    return lambda req: first if req.target == "/one" else response(200, b"reply-2")


def an_http2_clients_502(http_serve, pki, first: bytes, detail: str) -> None:
    """/one, answered `first`, gets a 502 with `detail` (and /two, on a fresh upstream connection,
    its 200), counted as a 5xx HTTP/2 request."""
    daemon, rec = first_502_then_a_fresh_connection(http_serve, pki, answer_one(first))
    line = wait_request_line(daemon, path="/one")
    assert (line["status"], line["detail"]) == (502, detail), line
    assert rec.requests[0].conn_id != rec.requests[1].conn_id
    wait_request_line(daemon, path="/two")   # /one was counted right after its line, before
    assert daemon.scrape().total("mtlsd_http_requests_total", listener="inbound",
                                 protocol="HTTP/2", code_class="5xx") == 1


@pytest.mark.parametrize("status_line", [b"HTTP/1.1 099 X", b"HTTP/1.1 000 X"])
def test_an_http2_client_gets_502_for_a_status_below_100_not_the_response_after_it(
        http_serve, pki, status_line):
    """Review: a status below 100 was taken for an interim response and waited past, so the 200
    behind it reached the client; to an HTTP/1.1 client it is a 502."""
    an_http2_clients_502(http_serve, pki, status_line + b"\r\n\r\n" + response(200, b"after"),
                         STATUS_REFUSED)


@pytest.mark.parametrize("status_line", [b"HTTP/1.1 600 X", b"HTTP/1.1 999 X"])
def test_an_http2_client_gets_502_for_a_status_above_599(http_serve, pki, status_line):
    """Review: the status reached the client as :status 600."""
    an_http2_clients_502(http_serve, pki, status_line + b"\r\nContent-Length: 2\r\n\r\nok",
                         STATUS_REFUSED)


@pytest.mark.parametrize("coding,detail", [
    (b'chunked, "x"', "upstream: a Transfer-Encoding list that does not parse"),
    (b"chunked;q=1", "upstream: parameters on the chunked transfer coding"),
], ids=["list-does-not-parse", "chunked-parameters"])
def test_an_http2_client_gets_502_for_a_transfer_encoding_beast_reads_in_part(http_serve, pki,
                                                                           coding, detail):
    """Review: Beast reads the list up to its first character that is not a token's, and both
    passed for plain chunked: the client got 200 "hello", where an HTTP/1.1 client gets a 502."""
    an_http2_clients_502(http_serve, pki, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + coding +
                         b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n", detail)


def test_a_grpc_call_gets_unavailable_for_a_status_outside_100_to_599(http_serve, pki):
    """A gRPC call's 502 is the Trailers-Only answer every 502 of this path is (grpc_reply.hpp):
    UNAVAILABLE, with the reason as grpc-message; its line keeps 502 with grpc_status 14."""
    daemon, _, _ = http_serve(answer_one(b"HTTP/1.1 600 X\r\nContent-Length: 2\r\n\r\nok"),
                              http={"protocols": ["h2"]})
    client = H2Client(daemon, pki)
    try:
        sid = client.request("/one", method="POST", extra=(
            ("content-type", "application/grpc"), ("te", "trailers")))
        client.wait_for(lambda ev: isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset))
                        and ev.stream_id == sid, TIMEOUT)
    finally:
        client.close()
    mine = [ev for ev in client.events if getattr(ev, "stream_id", None) == sid]
    heads = [dict(ev.headers) for ev in mine if isinstance(ev, h2.events.ResponseReceived)]
    assert heads == [{":status": "200", "content-type": "application/grpc", "grpc-status": "14",
                      "grpc-message": STATUS_REFUSED}], mine
    assert not any(isinstance(ev, h2.events.DataReceived) for ev in mine), mine
    line = wait_request_line(daemon, path="/one")
    assert (line["status"], line["grpc_status"], line["detail"]) == (502, 14, STATUS_REFUSED), line
