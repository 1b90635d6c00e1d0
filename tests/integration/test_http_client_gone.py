"""A client that goes away (a reset) while its response is still awaited, in HTTP mode. The request's line
says no response was given (status 0, counted as `none`), not a 502 that blames the upstream or a
200 nobody read, and mtlsd lets go of the upstream's connection at once, as nginx (499) and Envoy
(a reset upstream stream) do, instead of holding it for as long as the upstream takes.

The upstream never answers on its own: it signals when the request has arrived and when mtlsd
closed its connection, so nothing here waits on a guess of how long mtlsd takes."""

from __future__ import annotations

import signal
import socket
import threading
import time

import pytest

from faults import rst_close
from h2_client import H2Client
from helpers import read_head, wait_request_line, wait_until
from mtlsd_harness import client_context, daemon_config, open_tls, server_listener

TIMEOUT = 10.0  # for what certainly happens; mtlsd before the fix never closed the upstream


class HeldUpstream:
    """An HTTP/1.1 upstream that reads a request (head and `body` bytes), optionally sends the
    start of a response, then only waits for mtlsd to close the connection."""

    def __init__(self, body: int = 0, start: bytes = b""):
        self.body, self.start = body, start
        self.got_request = threading.Event()
        self.closed = threading.Event()  # mtlsd closed (EOF or reset) after the request

    def __call__(self, conn) -> None:
        data = read_head(conn)
        while len(data) - data.index(b"\r\n\r\n") - 4 < self.body:
            data += conn.sock.recv(65536)
        if self.start:
            conn.sock.sendall(self.start)
        self.got_request.set()
        try:
            while conn.sock.recv(65536):
                pass
        except OSError:
            pass
        self.closed.set()


def requests_by_class(daemon) -> dict[str, float]:
    return {labels["code_class"]: value for labels, value in
            daemon.scrape().series("mtlsd_http_requests_total", listener="inbound")}


def assert_let_go(daemon, up: HeldUpstream, path: str) -> dict:
    """The upstream's connection closed, the request's line written and counted, the connection
    gone from the active gauge; returns the request's line."""
    assert up.closed.wait(TIMEOUT), "mtlsd kept the upstream's connection open"
    line = wait_request_line(daemon, path=path)
    counts = wait_until(lambda: (c := requests_by_class(daemon)) and sum(c.values()) == 1 and c,
                        what=lambda: f"one request counted, have {requests_by_class(daemon)}")
    wait_until(lambda: daemon.scrape().get("mtlsd_connections_active", listener="inbound") == 0,
               what="no active connection")
    return {**line, "counts": counts}


@pytest.mark.parametrize("body", [0, 1000], ids=["no-body", "with-body"])
def test_an_http1_client_resetting_before_the_response_ends_the_exchange(serve, pki, body):
    """The client sends its whole request, then resets while the upstream has not answered.
    Before: nothing watched the client; the upstream's connection stayed open until the upstream
    gave up, and the line said 502 (or the late answer's 200)."""
    up = HeldUpstream(body=body)
    daemon, _ = serve(up, http={"protocols": ["http/1.1"]})
    sock = open_tls(daemon.addr(), client_context(pki, "client"))
    sock.sendall(request(body))
    assert up.got_request.wait(TIMEOUT)
    rst_close(sock)
    line = assert_let_go(daemon, up, "/held")
    sock.close()
    assert line["status"] == 0, line
    assert line["detail"] == "the client reset its connection before the response", line
    assert line["counts"] == {"none": 1}, line
    access = daemon.wait_for_access()
    assert access["termination"] == "client_close", access


def read_ok_answer(sock) -> bytes:
    """Reads until the upstream's 2-byte body "ok" has come; what came."""
    sock.settimeout(TIMEOUT)
    reply = b""
    while not reply.endswith(b"ok"):
        chunk = sock.recv(4096)
        assert chunk, f"closed after {reply!r}"
        reply += chunk
    return reply


def request(body: int) -> bytes:
    if body:
        return (b"POST /held HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % body
                + b"b" * body)
    return b"GET /held HTTP/1.1\r\nHost: localhost\r\n\r\n"


@pytest.mark.parametrize("body", [0, 1000], ids=["no-body", "with-body"])
def test_an_http1_client_half_closing_after_its_request_still_gets_the_answer(serve, pki, body):
    """A FIN (without close_notify) after the whole request is a half-close, as in TCP mode: the
    answer comes, whether the FIN shared the request's segment or came later (review: a FIN a
    moment after the request cut the exchange, one in the same segment did not)."""
    got, answer = threading.Event(), threading.Event()

    def upstream(conn) -> None:
        data = read_head(conn)
        while len(data) - data.index(b"\r\n\r\n") - 4 < body:
            data += conn.sock.recv(65536)
        got.set()
        if answer.wait(TIMEOUT):
            conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    daemon, _ = serve(upstream, http={"protocols": ["http/1.1"]})
    sock = open_tls(daemon.addr(), client_context(pki, "client"))
    sock.sendall(request(body))
    assert got.wait(TIMEOUT)
    socket.socket.shutdown(sock, socket.SHUT_WR)
    # No signal says mtlsd has seen the FIN; before the fix it cut the exchange within
    # milliseconds of it.
    time.sleep(0.3)
    answer.set()
    reply = read_ok_answer(sock)
    assert reply.startswith(b"HTTP/1.1 200 OK"), reply
    sock.close()
    assert wait_request_line(daemon, path="/held")["status"] == 200


def test_an_http1_client_leaving_during_the_response_ends_it_too(serve, pki):
    """The response's head and part of its body went out; the client resets while the rest is
    awaited. The line keeps the status that was sent, and says the response was cut."""
    up = HeldUpstream(start=b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10)
    daemon, _ = serve(up, http={"protocols": ["http/1.1"]})
    sock = open_tls(daemon.addr(), client_context(pki, "client"))
    sock.sendall(b"GET /streaming HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert up.got_request.wait(TIMEOUT)
    got = b""
    while b"x" * 10 not in got:  # what was sent reached the client
        got += sock.recv(65536)
    rst_close(sock)
    line = assert_let_go(daemon, up, "/streaming")
    assert line["status"] == 200 and line["resp_bytes"] == 10, line
    assert line["detail"] == "the client reset its connection during the response", line
    assert daemon.wait_for_access()["termination"] == "client_close"


def test_an_http2_client_leaving_is_no_upstream_failure(serve, pki):
    """An HTTP/2 client of an HTTP/1.1 upstream closes its socket (no RST_STREAM, no GOAWAY) with
    a stream waiting for the response. mtlsd's own stop of the upstream exchange is no failure
    of the upstream's: status 0 and code class `none`, as after the client's RST_STREAM. Before:
    502, counted as 5xx, detail "upstream: reading the response head: Operation canceled"."""
    up = HeldUpstream()
    daemon, _ = serve(up, http={"protocols": ["h2"], "upstream_protocol": "http/1.1"})
    client = H2Client(daemon, pki)
    client.request("/abandoned")
    assert up.got_request.wait(TIMEOUT)
    client.close()
    line = assert_let_go(daemon, up, "/abandoned")
    assert line["status"] == 0 and line["detail"] == "connection closed", line
    assert line["counts"] == {"none": 1}, line
    assert daemon.wait_for_access()["termination"] == "client_close"


def test_an_http2_stream_cut_by_the_drain_timeout_is_no_upstream_failure(start_mtlsd,
                                                                        make_upstream, pki):
    """As above, with the stream cut by mtlsd's drain timeout instead (SIGTERM, the upstream
    still silent when `shutdown.drain_timeout` ends)."""
    up = HeldUpstream()
    listener = server_listener(pki, make_upstream(up).address,
                               http={"protocols": ["h2"], "upstream_protocol": "http/1.1"})
    daemon = start_mtlsd(daemon_config([listener], shutdown={"drain_timeout": "300ms"}))
    client = H2Client(daemon, pki)
    try:
        client.request("/drained")
        assert up.got_request.wait(TIMEOUT)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait_exit() == 0
    finally:
        client.close()
    assert up.closed.wait(TIMEOUT)
    line = wait_request_line(daemon, path="/drained")
    assert line["status"] == 0 and line["detail"] == "connection closed", line
    assert daemon.wait_for_access()["termination"] == "drain"


def test_an_http1_client_resetting_between_requests_is_no_exchange_cut(serve, pki):
    """The client's watch is left queued after an exchange, for its next read to join (HTTP mode,
    `stop_watching_client`), but disarmed: a reset while no request is in flight ends an idle
    connection, not an exchange, so the access line does not say a response was cut or never
    came."""
    answered = threading.Event()

    def upstream(conn) -> None:
        read_head(conn)
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        answered.set()
        try:
            while conn.sock.recv(65536):
                pass
        except OSError:
            pass
    daemon, _ = serve(upstream, http={"protocols": ["http/1.1"]})
    sock = open_tls(daemon.addr(), client_context(pki, "client"))
    sock.sendall(b"GET /once HTTP/1.1\r\nHost: localhost\r\n\r\n")
    read_ok_answer(sock)
    assert wait_request_line(daemon, path="/once")["status"] == 200
    rst_close(sock)
    access = daemon.wait_for_access()
    sock.close()
    # Before the disarm was checked (a mutation of this stop): "the client reset its connection
    # during the response", for a response that was whole and read.
    assert access["detail"] == "reading the request: Connection reset by peer", access
    assert access["termination"] == "client_close", access
