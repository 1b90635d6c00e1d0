"""How an HTTP/1.1 connection ends when mtlsd ends it while a request is on its way or unanswered:
a drain (SIGTERM) or timeouts.max_connection_age that finds a request head half in, or the
connection's first request not read yet (it may come with the client's Finished), serves that
request with Connection: close; timeouts.idle while the upstream holds back its answer is a 504
(408 while the client holds back its body), as nginx and Envoy answer and as an HTTP/2 stream is
answered; a connection idle between requests still just closes."""

from __future__ import annotations

import signal
import socket
import ssl

import pytest

from clients import (client_context, connect, fmt_addr, handshake_over_bios, open_tls,
                     read_to_close, read_to_end, strict_eof)
from helpers import wait_until
from http_upstream import HttpRecorder, Reader, response
from test_http_client_gone import HeldUpstream
from test_http_mode import SockConn, read_response

GET = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"


def recorder() -> HttpRecorder:
    return HttpRecorder(lambda req: response(200, b"served " + req.target.encode()))


def https11(daemon, pki, *, strict: bool = False) -> ssl.SSLSocket:
    ctx = client_context(pki, "client")
    ctx.set_alpn_protocols(["http/1.1"])
    return open_tls(daemon.addr(), strict_eof(ctx) if strict else ctx)


def answered_keep_alive(daemon, pki) -> ssl.SSLSocket:
    """A connection that had one request answered and stays open, idle: a drain (or its age)
    closes it at once, so its end says that the drain reached its worker's other sessions."""
    sock = https11(daemon, pki)
    sock.sendall(b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(Reader(SockConn(sock)))[0] == 200
    return sock


def handshaken_by_hand(daemon, pki):
    """An HTTP/1.1 client whose TLS runs over memory BIOs, so that the test chooses which record
    bytes go out when: (socket, its address, TLS object, in BIO, out BIO), after the handshake,
    the client's Finished still in the out BIO."""
    ctx = client_context(pki, "client")
    ctx.set_alpn_protocols(["http/1.1"])
    sock = connect(daemon.addr())
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    handshake_over_bios(sock, tls, incoming, outgoing)
    return sock, fmt_addr(sock.getsockname()), tls, incoming, outgoing


def assert_served_with_close(got: bytes, target: bytes) -> None:
    assert got.startswith(b"HTTP/1.1 200 OK\r\n"), got[:200]
    assert b"\r\nConnection: close\r\n" in got, got[:200]
    assert got.endswith(b"served " + target), got[-80:]


@pytest.mark.parametrize("when", ["with-the-finished", "after-the-handshake"])
def test_the_first_request_of_a_connection_is_served_during_a_drain(serve, pki, when):
    """Shutdown begins before the connection's first request was read: as the client finishes its
    handshake within the drain's grace and sends its request with its Finished (TLS 1.3), or a
    moment after a handshake that ended before the drain. The request is served, with
    Connection: close (README: "served if it does"). It used to be closed unread at once: an
    empty reply, the upstream connected but asked nothing, the access line rx_bytes 0."""
    rec = recorder()
    # One worker: the idle connection's end says the drain reached the other session too.
    daemon, up = serve(rec.handler(), http={"protocols": ["http/1.1"]},
                       top={"workers": 1, "shutdown": {"drain_timeout": "30s"}},
                       timeouts={"handshake": "30s"})
    idle = answered_keep_alive(daemon, pki)
    sock, local, tls, incoming, outgoing = handshaken_by_hand(daemon, pki)
    if when == "after-the-handshake":
        sock.sendall(outgoing.read())
        # Its upstream connected: the connection is admitted and waits for its request.
        wait_until(lambda: up.connection_count() == 2, what="the second upstream connection")
    daemon.send_signal(signal.SIGTERM)
    assert idle.recv(1) == b"", "the idle connection stayed open"
    tls.write(GET)
    sock.sendall(outgoing.read())  # (the Finished and) the request: one write
    got = b""
    while data := sock.recv(65536):
        incoming.write(data)
        try:
            while chunk := tls.read(65536):
                got += chunk
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass
    sock.close()
    idle.close()
    assert_served_with_close(got, b"/first")
    assert [(r.method, r.target) for r in rec.requests] == [("GET", "/idle"), ("GET", "/first")]
    assert daemon.wait_exit() == 0
    line = daemon.wait_for_access(client=local)
    assert (line["result"], line["termination"]) == ("accepted", "drain"), line
    assert line["rx_bytes"] == len(GET), line


def send_half_head(sock: ssl.SSLSocket) -> None:
    """A keep-alive connection's second request, its head half sent."""
    sock.sendall(GET)
    assert read_response(Reader(SockConn(sock)))[0] == 200
    sock.sendall(b"POST /order HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n")


def test_a_head_half_in_when_a_drain_starts_is_served(serve, pki):
    """SIGTERM while a POST's head is half in: the head's rest, sent once the drain began, is
    read and the request served, with Connection: close. It used to be dropped (the read under
    way cancelled): no response, no request line."""
    rec = recorder()
    daemon, _ = serve(rec.handler(), http={"protocols": ["http/1.1"]},
                      top={"workers": 1, "shutdown": {"drain_timeout": "30s"}})
    with https11(daemon, pki) as sock, answered_keep_alive(daemon, pki) as idle:
        local = fmt_addr(sock.getsockname())
        send_half_head(sock)
        mark = daemon.log_mark()
        daemon.send_signal(signal.SIGTERM)
        assert idle.recv(1) == b"", "the idle connection stayed open"
        sock.sendall(b"\r\nhello")
        got = read_to_close(sock)
    assert_served_with_close(got, b"/order")
    assert rec.requests[-1].target == "/order" and rec.requests[-1].body == b"hello"
    assert daemon.wait_exit() == 0
    line = daemon.wait_for_log(lambda l: l.get("msg") == "request" and l.get("path") == "/order",
                               since=mark)
    assert line["status"] == 200, line
    assert daemon.wait_for_access(client=local)["termination"] == "drain"


def test_a_head_half_in_at_max_connection_age_is_served(serve, pki):
    """As at a drain, when the connection's max_connection_age passes with a head half in."""
    rec = recorder()
    daemon, _ = serve(rec.handler(), http={"protocols": ["http/1.1"]}, top={"workers": 1},
                      timeouts={"max_connection_age": "2s", "half_close": "20s"})
    with https11(daemon, pki) as sock:
        local = fmt_addr(sock.getsockname())
        send_half_head(sock)
        # Accepted after `sock`, its age passes after sock's, on the same worker's timers: its
        # end says sock's age has passed too.
        with answered_keep_alive(daemon, pki) as later:
            later.settimeout(10)
            assert later.recv(1) == b"", "the idle connection outlived its age"
        sock.sendall(b"\r\nhello")
        got = read_to_close(sock)
    assert_served_with_close(got, b"/order")
    line = daemon.wait_for_log(lambda l: l.get("msg") == "request" and l.get("path") == "/order")
    assert line["status"] == 200, line
    assert daemon.wait_for_access(client=local)["termination"] == "max_age"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_silent_upstream_past_the_idle_timeout_is_a_504(serve, pki, method):
    """The upstream holds back its answer past timeouts.idle: the client gets 504 Gateway Timeout
    (Connection: close; no body after HEAD), then close_notify; the request line says 504 and why,
    as the connection's. It used to get a bare EOF, the line status 0 and no detail."""
    up = HeldUpstream()
    daemon, _ = serve(up, http={"protocols": ["http/1.1"]}, timeouts={"idle": "1s"})
    with https11(daemon, pki, strict=True) as sock:
        local = fmt_addr(sock.getsockname())
        sock.sendall(method.encode() + b" /report HTTP/1.1\r\nHost: x\r\n\r\n")
        got, how = read_to_end(sock)
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n"), got
    assert b"\r\nConnection: close" in head and b"\r\nContent-Length: 16" in head, got
    assert body == (b"" if method == "HEAD" else b"Gateway Timeout\n"), got
    assert how == "close_notify", how
    assert up.closed.wait(10), "the upstream's connection stayed open"
    line = daemon.wait_for_log(lambda l: l.get("msg") == "request" and l.get("path") == "/report")
    assert (line["status"], line["detail"]) == (504, "idle timeout (1s)"), line
    conn = daemon.wait_for_access(client=local)
    assert (conn["termination"], conn["detail"]) == ("idle_timeout", "idle timeout (1s)"), conn
    assert daemon.scrape().get("mtlsd_http_requests_total", listener="inbound",
                               protocol="HTTP/1.1", code_class="5xx") == 1


def test_a_stalled_upload_past_the_idle_timeout_is_a_408(serve, pki):
    """The client stops halfway through its body: past timeouts.idle it gets 408 Request Timeout
    and close_notify (it used to get a bare EOF, and its line status 0)."""
    up = HeldUpstream()
    daemon, _ = serve(up, http={"protocols": ["http/1.1"]}, timeouts={"idle": "1s"})
    with https11(daemon, pki, strict=True) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf.")
        got, how = read_to_end(sock)
    assert got.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), got
    assert b"\r\nConnection: close\r\n" in got and got.endswith(b"\r\n\r\nRequest Timeout\n"), got
    assert how == "close_notify", how
    line = daemon.wait_for_log(lambda l: l.get("msg") == "request" and l.get("path") == "/upload")
    assert (line["status"], line["detail"]) == (408, "idle timeout (1s)"), line


def test_a_connection_idle_between_requests_just_closes_at_the_idle_timeout(serve, pki):
    """Nothing was asked: no 504, no second request line; the connection closes at
    timeouts.idle."""
    rec = recorder()
    daemon, _ = serve(rec.handler(), http={"protocols": ["http/1.1"]}, timeouts={"idle": "1s"})
    with https11(daemon, pki, strict=True) as sock:
        local = fmt_addr(sock.getsockname())
        reader = Reader(SockConn(sock))
        sock.sendall(GET)
        assert read_response(reader)[0] == 200
        got, _ = read_to_end(sock)
    assert got == b"" and reader.buf == b"", got
    conn = daemon.wait_for_access(client=local)
    assert conn["termination"] == "idle_timeout", conn
    lines = [l for l in daemon.logs() if l.get("msg") == "request"]
    assert [(l["path"], l["status"]) for l in lines] == [("/first", 200)], lines


@pytest.mark.parametrize("where", ["head", "body"])
def test_a_client_stream_cut_inside_a_record_is_logged_as_truncated(serve, pki, where):
    """Review: a client whose TCP stream ended inside a TLS record had its HTTP/1.1 lines say
    "Software caused connection abort" (the errno text of the code tls_stream reports a
    truncation with, as if mtlsd had aborted it); the layer-4 relay and HTTP/2 said "truncated",
    as the README promises. One whole record, then 20 bytes of the next, then a FIN."""
    daemon, _ = serve(recorder().handler(), http={"protocols": ["http/1.1"]})
    sock, local, tls, _, outgoing = handshaken_by_hand(daemon, pki)
    sock.sendall(outgoing.read())
    if where == "head":  # the head never ends
        first, second = b"GET /cut HTTP/1.1\r\n", b"Host: x\r\n\r\n"
    else:  # 200 bytes of body promised, 100 in the record cut short
        first, second = b"POST /cut HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n", b"B" * 100
    tls.write(first)
    whole = outgoing.read()
    tls.write(second)
    cut = outgoing.read()[:20]
    sock.sendall(whole + cut)
    sock.shutdown(socket.SHUT_WR)
    line = daemon.wait_for_access(client=local)
    assert "truncated" in line["detail"], line
    assert "abort" not in line["detail"], line
    if where == "body":
        request = daemon.wait_for_log(lambda l: l.get("msg") == "request" and l.get("path") == "/cut")
        assert "truncated" in request["detail"], request
    sock.close()
