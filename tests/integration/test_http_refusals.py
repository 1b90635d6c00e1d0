"""What the client of an `http:` listener hears when mtlsd refuses it after the TLS handshake
(its upstream cannot be connected, its identity is over its connection limit, a revocation
answer came after the handshake): an HTTP answer in its own protocol, as from Envoy or nginx.

The HTTP/2 answer used to be the server's SETTINGS and a GOAWAY naming no stream as processed.
A real gRPC client (grpcio) reads that as "connected, nothing taken": it sent the call again on
a new connection at once, with no backoff, until the call's deadline (for good without one),
and mtlsd did a full handshake for each, 150 a second per waiting call (review). Here every
call must end at once with the status gRPC reads from the answer, after one connection or two."""

from __future__ import annotations

import socket
import time

import grpc
import h2.errors
import pytest

from clients import fmt_addr
from grpc_probe import probe_stub, stubs, tls_channel
from h2_client import H2Client
from http_upstream import response
from test_http_mode import http_serve, raw_exchange  # noqa: F401 (a fixture)
from test_upstream_addresses import fill_accept_queue

pb2, _ = stubs()
# A call's deadline: far longer than an answer takes, far shorter than the old loop lasted.
DEADLINE = 5.0


def handshakes(daemon) -> float:
    return daemon.scrape().total("mtlsd_tls_handshakes_total")


def call_once(port: int, pki) -> tuple[grpc.RpcError, float]:
    """One unary call on a fresh channel; its error and how long it took."""
    started = time.monotonic()
    with tls_channel(pki, port) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            probe_stub(channel).Unary(pb2.Msg(text="x"), timeout=DEADLINE)
    return caught.value, time.monotonic() - started


def test_a_grpc_call_whose_upstream_is_down_fails_unavailable_at_once(serve, refused_address,
                                                                      pki):
    daemon, _ = serve(upstream=refused_address,
                      http={"upstream_protocol": "h2c", "protocols": ["h2"]})
    error, took = call_once(daemon.addr()[1], pki)
    # A 502 (gRPC: UNAVAILABLE), not DEADLINE_EXCEEDED after hundreds of connections.
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    assert "502" in error.details(), error.details()
    assert took < DEADLINE / 2, took
    assert handshakes(daemon) <= 2
    line = daemon.wait_for_access(result="rejected", reason="upstream_unavailable")
    assert line["upstream_connect_ms"] is not None, line


def hold_identity(daemon, pki) -> H2Client:
    """The identity's one connection, admitted (its request answered) and kept open."""
    held = H2Client(daemon, pki)
    assert held.response(held.request("/first")) == (200, b"ok")
    return held


def test_a_grpc_caller_over_its_identitys_limit_gets_unavailable_at_once(http_serve, pki):
    """The second connection of the same identity gets 429 (gRPC: UNAVAILABLE, which clients
    back off from), then GOAWAY(ENHANCE_YOUR_CALM)."""
    daemon, _, recorder = http_serve(lambda req: response(200, b"ok"),
                                     limits={"max_connections_per_identity": 1})
    held = hold_identity(daemon, pki)
    try:
        error, took = call_once(daemon.addr()[1], pki)
    finally:
        held.close()
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    assert "429" in error.details(), error.details()
    assert took < DEADLINE / 2, took
    assert daemon.scrape().get("mtlsd_handshake_failures_total", listener="inbound",
                               reason="rate_limited") <= 2
    assert [r.target for r in recorder.requests] == ["/first"]


def test_an_http11_client_over_its_identitys_limit_gets_a_429(http_serve, pki):
    daemon, _, recorder = http_serve(lambda req: response(200, b"ok"),
                                     limits={"max_connections_per_identity": 1})
    held = hold_identity(daemon, pki)
    try:
        out, local = raw_exchange(daemon, pki, b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        held.close()
    assert out.startswith(b"HTTP/1.1 429 Too Many Requests\r\n"), out
    assert out.endswith(b"\r\n\r\ntoo many connections for this identity\n"), out
    line = daemon.wait_for_access(client=local)
    assert line["reason"] == "rate_limited" and line["result"] == "rejected", line
    assert [r.target for r in recorder.requests] == ["/first"]


def test_an_http2_client_that_sends_no_request_hears_a_goaway_naming_none(serve,
                                                                          refused_address, pki):
    """Nothing to answer within a second: the GOAWAY names no stream as processed, with the
    reason as its debug data, and the connection ends."""
    daemon, _ = serve(upstream=refused_address, http={})
    client = H2Client(daemon, pki)
    try:
        started = time.monotonic()
        client.refused_with(h2.errors.ErrorCodes.NO_ERROR, b"upstream unavailable")
        assert time.monotonic() - started < 3, "the wait for a request is bounded"
    finally:
        client.close()


def test_each_request_of_the_first_flight_is_answered(serve, refused_address, pki):
    """Requests sent together are all answered; the GOAWAY names the last of them."""
    daemon, _ = serve(upstream=refused_address, http={})
    client = H2Client(daemon, pki)
    try:
        first = client.request("/a", flush=False)
        last = client.request("/b", flush=False)
        client.flush()
        assert client.response(first) == (502, b"upstream unavailable\n")
        client.answered_then_goaway(last, 502, h2.errors.ErrorCodes.NO_ERROR,
                                    b"upstream unavailable")
    finally:
        client.close()


def test_an_upstream_connect_that_times_out_gets_the_client_a_502(serve, pki):
    """timeouts.connect bounds the connect itself, so a timeout is answered as a refused connect
    is: 502 (HTTP/1.1 and HTTP/2), reason upstream_unavailable, the step that timed out in the
    detail (review: the phase's deadline cut the session and the client got an empty reply)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    keep: list[socket.socket] = []
    try:
        fill_accept_queue(listener, keep)  # from now on its SYNs are dropped
        address = "127.0.0.1:%d" % listener.getsockname()[1]
        daemon, _ = serve(upstream=address, http={}, timeouts={"connect": "1s"})
        out, local = raw_exchange(daemon, pki, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), out
        line = daemon.wait_for_access(client=local)
        assert line["reason"] == "upstream_unavailable", line
        assert line["detail"] == f"connect to {address} timed out after 1s", line
        client = H2Client(daemon, pki)
        try:
            sid = client.request("/")
            client.answered_then_goaway(sid, 502, h2.errors.ErrorCodes.NO_ERROR,
                                        b"upstream unavailable")
        finally:
            client.close()
        assert daemon.scrape().get("mtlsd_upstream_connect_failures_total",
                                   listener="inbound") == 2
    finally:
        for s in keep:
            s.close()
        listener.close()


def request_lines(daemon, since: int = 0, **match) -> list[dict]:
    """The "request" access lines from log index `since` on that carry these fields."""
    return [line for line in daemon.logs()[since:]
            if line.get("msg") == "request" and all(line.get(k) == v for k, v in match.items())]


def requests_counted(daemon, code_class: str) -> tuple[float, float]:
    """mtlsd_http_requests_total of the "inbound" listener for `code_class`: (HTTP/1.1, HTTP/2)."""
    metrics = daemon.scrape()
    return tuple(metrics.get("mtlsd_http_requests_total", listener="inbound", protocol=p,
                             code_class=code_class) for p in ("HTTP/1.1", "HTTP/2"))


def test_refused_requests_get_request_lines_and_count_as_requests(serve, refused_address, pki):
    """An answered refusal is a request like any other (review: an outage showed no 5xx): its
    "request" line, with the answer's status and the refusal's reason, and its count in
    mtlsd_http_requests_total and mtlsd_http_request_duration_seconds. HTTP/1.1's request is
    not read (no method or path); HTTP/2's answered streams keep the heads that were read."""
    daemon, _ = serve(upstream=refused_address, http={})
    out, local = raw_exchange(daemon, pki, b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), out
    daemon.wait_for_access(client=local, reason="upstream_unavailable")  # after its requests
    [h1] = request_lines(daemon, client=local)
    assert (h1["protocol"], h1["status"], h1["method"], h1["path"], h1["stream_id"]) == \
        ("HTTP/1.1", 502, "", "", 1), h1
    assert h1["resp_bytes"] == len(b"upstream unavailable\n"), h1
    assert h1["detail"].startswith("upstream_unavailable: connect to "), h1

    client = H2Client(daemon, pki)
    try:
        first = client.request("/a", flush=False)
        last = client.request("/b", method="POST", extra=(("content-length", "3"),),
                              end_stream=False, flush=False)
        client.conn.send_data(last, b"abc", end_stream=True)
        client.flush()
        assert client.response(first) == (502, b"upstream unavailable\n")
        client.answered_then_goaway(last, 502, h2.errors.ErrorCodes.NO_ERROR,
                                    b"upstream unavailable")
        local = fmt_addr(client.sock.getsockname())
    finally:
        client.close()
    daemon.wait_for_access(client=local, reason="upstream_unavailable")
    lines = request_lines(daemon, client=local)
    assert [(l["protocol"], l["status"], l["method"], l["authority"], l["path"], l["stream_id"])
            for l in lines] == [("HTTP/2", 502, "GET", "localhost", "/a", first),
                                ("HTTP/2", 502, "POST", "localhost", "/b", last)], lines
    assert all(l["resp_bytes"] == len(b"upstream unavailable\n") for l in lines), lines
    assert all(l["detail"].startswith("upstream_unavailable: ") for l in lines), lines

    assert requests_counted(daemon, "5xx") == (1, 2)
    assert daemon.scrape().get("mtlsd_http_request_duration_seconds_count",
                               listener="inbound") == 3


def test_requests_over_an_identitys_limit_get_request_lines_and_count_as_4xx(http_serve, pki):
    daemon, _, recorder = http_serve(lambda req: response(200, b"ok"),
                                     limits={"max_connections_per_identity": 1})
    held = hold_identity(daemon, pki)
    try:
        out, local = raw_exchange(daemon, pki, b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 429 Too Many Requests\r\n"), out
        h2_client = H2Client(daemon, pki)
        try:
            sid = h2_client.request("/third")
            h2_client.answered_then_goaway(sid, 429, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM,
                                           b"too many connections for this identity")
            h2_local = fmt_addr(h2_client.sock.getsockname())
        finally:
            h2_client.close()
        daemon.wait_for_access(client=local, reason="rate_limited")
        daemon.wait_for_access(client=h2_local, reason="rate_limited")
    finally:
        held.close()
    [h1] = request_lines(daemon, client=local)
    assert (h1["protocol"], h1["status"], h1["path"]) == ("HTTP/1.1", 429, ""), h1
    assert h1["detail"].startswith("rate_limited"), h1
    [h2_line] = request_lines(daemon, client=h2_local)
    assert (h2_line["protocol"], h2_line["status"], h2_line["method"], h2_line["path"],
            h2_line["stream_id"]) == ("HTTP/2", 429, "GET", "/third", sid), h2_line
    assert h2_line["detail"].startswith("rate_limited"), h2_line
    assert requests_counted(daemon, "4xx") == (1, 1)
    assert [r.target for r in recorder.requests] == ["/first"]
