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
import ssl
import time
from typing import Optional

import grpc
import h2.errors
import h2.events
import h2.settings
import pytest

from clients import (client_context, connect, fmt_addr, handshake_over_bios, open_tls,
                     read_to_close)
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
    assert error.details() == "upstream unavailable", error.details()  # Trailers-Only
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
    assert error.details() == "too many connections for this identity", error.details()
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


def one_flight(daemon, ctx: ssl.SSLContext, request: bytes, *, sni: str = "localhost",
               session: Optional[ssl.SSLSession] = None) -> tuple[bytes, str]:
    """An HTTP/1.1 exchange whose request leaves in the same write as the client's last
    handshake flight (its Finished), over memory BIOs: mtlsd has it when it decides, however
    fast that is (one send on loopback). What came back until the close, and the local address.
    With `session`, that session must resume."""
    sock = connect(daemon.addr())
    local = fmt_addr(sock.getsockname())
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=sni, session=session)
    out = b""
    try:
        handshake_over_bios(sock, tls, incoming, outgoing)
        assert session is None or tls.session_reused, "the session did not resume"
        if request:
            tls.write(request)
        sock.sendall(outgoing.read())  # the Finished (and the request): one write
        while True:
            try:
                chunk = tls.read(65536)
                if not chunk:  # close_notify
                    break
                out += chunk
            except ssl.SSLWantReadError:
                data = sock.recv(65536)
                if not data:
                    break
                incoming.write(data)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
    except (ConnectionResetError, ssl.SSLError):
        pass
    finally:
        sock.close()
    return out, local


def request_lines(daemon, since: int = 0, **match) -> list[dict]:
    """The "request" access lines from log index `since` on that carry these fields."""
    return [line for line in daemon.logs()[since:]
            if line.get("msg") == "request" and all(line.get(k) == v for k, v in match.items())]


def requests_counted(daemon, code_class: str) -> tuple[float, float]:
    """mtlsd_http_requests_total of the "inbound" listener for `code_class`: (HTTP/1.1, HTTP/2);
    0 for a series not there (none counted)."""
    metrics = daemon.scrape()
    return tuple(metrics.total("mtlsd_http_requests_total", listener="inbound", protocol=p,
                               code_class=code_class) for p in ("HTTP/1.1", "HTTP/2"))


def test_refused_requests_get_request_lines_and_count_as_requests(serve, refused_address, pki):
    """An answered refusal is a request like any other (review: an outage showed no 5xx): its
    "request" line, with the answer's status and the refusal's reason, and its count in
    mtlsd_http_requests_total and mtlsd_http_request_duration_seconds. HTTP/1.1's request is
    read when it had come (its method and path when its head was whole); HTTP/2's answered streams
    keep the heads that were read."""
    daemon, _ = serve(upstream=refused_address, http={})
    out, local = one_flight(daemon, client_context(pki), b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), out
    daemon.wait_for_access(client=local, reason="upstream_unavailable")  # after its requests
    [h1] = request_lines(daemon, client=local)
    assert (h1["protocol"], h1["status"], h1["method"], h1["authority"], h1["path"],
            h1["stream_id"]) == ("HTTP/1.1", 502, "GET", "x", "/one", 1), h1
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
        out, local = one_flight(daemon, client_context(pki),
                                b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
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
    assert (h1["protocol"], h1["status"], h1["method"], h1["path"]) == \
        ("HTTP/1.1", 429, "GET", "/second"), h1
    assert h1["detail"].startswith("rate_limited"), h1
    [h2_line] = request_lines(daemon, client=h2_local)
    assert (h2_line["protocol"], h2_line["status"], h2_line["method"], h2_line["path"],
            h2_line["stream_id"]) == ("HTTP/2", 429, "GET", "/third", sid), h2_line
    assert h2_line["detail"].startswith("rate_limited"), h2_line
    assert requests_counted(daemon, "4xx") == (1, 1)
    assert [r.target for r in recorder.requests] == ["/first"]


# --- HTTP/1.1: a request is counted only when one had come -------------------------------------

@pytest.mark.parametrize("sent, method, path", [
    (b"", None, None),
    (b"\r\n\r\n", None, None),  # empty lines before a request line are no request
    (b"GET /one?x=1 HTTP/1.1\r\nHost: api.example\r\n", "", ""),  # head not whole
    (b"GET /one?x=1 HTTP/1.1\r\nHost: api.example\r\n\r\n", "GET", "/one?x=1"),
], ids=["nothing", "empty-lines", "partial-head", "whole-head"])
def test_an_http11_refusal_counts_a_request_only_when_one_came(serve, refused_address, pki, sent,
                                                               method, path):
    """The answer goes out either way; the request line and count only when the client had sent
    request bytes by then (review: a client that only made its handshake counted as a request).
    A whole head gives the line its method, authority and path."""
    daemon, _ = serve(upstream=refused_address, http={})
    out, local = one_flight(daemon, client_context(pki), sent)
    assert out == (b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\n"
                   b"Content-Length: 21\r\nConnection: close\r\n\r\nupstream unavailable\n"), out
    line = daemon.wait_for_access(client=local, reason="upstream_unavailable")
    assert line["rx_bytes"] == len(sent), line
    lines = request_lines(daemon, client=local)
    if method is None:
        assert lines == [], lines
        assert requests_counted(daemon, "5xx") == (0, 0)
        assert daemon.scrape().total("mtlsd_http_request_duration_seconds_count",
                                     listener="inbound") == 0
        return
    [h1] = lines
    assert (h1["protocol"], h1["status"], h1["method"], h1["path"], h1["stream_id"]) == \
        ("HTTP/1.1", 502, method, path, 1), h1
    assert h1["authority"] == ("api.example" if method else ""), h1
    assert h1["detail"].startswith("upstream_unavailable: connect to "), h1
    assert requests_counted(daemon, "5xx") == (1, 0)


def test_an_http11_client_that_sends_nothing_is_answered_and_not_counted(serve, refused_address,
                                                                         pki):
    """As a real client that waits (a plain TLS socket that never writes): the 502 comes, with no
    request line."""
    daemon, _ = serve(upstream=refused_address, http={})
    with open_tls(daemon.addr(), client_context(pki)) as sock:
        local = fmt_addr(sock.getsockname())
        out = read_to_close(sock)
    assert out.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), out
    daemon.wait_for_access(client=local, reason="upstream_unavailable")
    assert request_lines(daemon, client=local) == []
    assert requests_counted(daemon, "5xx") == (0, 0)


@pytest.mark.parametrize("first", [b"", b"\r\n"], ids=["late", "after-an-empty-line"])
def test_an_http11_request_sent_a_moment_after_the_handshake_is_read_and_counted(
        serve, refused_address, pki, first):
    """The refusal waits for the request (up to a second, as nginx reads it first): a client
    that writes it in its own flight after the handshake, as curl does, here 300 ms later, gets
    the answer to it and its request line (a refusal that only took what had come counted none).
    Empty lines before a request line are no request, and the wait goes on past them (review: a
    CRLF in its own record ended the wait)."""
    daemon, _ = serve(upstream=refused_address, http={})
    with open_tls(daemon.addr(), client_context(pki)) as sock:
        local = fmt_addr(sock.getsockname())
        if first:
            sock.sendall(first)
        time.sleep(0.3)  # the input under test: a request that comes late, not a wait for mtlsd
        sock.sendall(b"GET /late HTTP/1.1\r\nHost: api.example\r\n\r\n")
        out = read_to_close(sock)
    assert out.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), out
    daemon.wait_for_access(client=local, reason="upstream_unavailable")
    [h1] = request_lines(daemon, client=local)
    assert (h1["status"], h1["method"], h1["path"]) == (502, "GET", "/late"), h1
    assert requests_counted(daemon, "5xx") == (1, 0)


# --- HTTP/2: at most http.max_concurrent_streams answers ---------------------------------------

@pytest.mark.parametrize("limit, opened", [(None, 150), (3, 10)], ids=["default-100", "3"])
def test_an_http2_refusal_answers_at_most_max_concurrent_streams(serve, refused_address, pki,
                                                                 limit, opened):
    """A first flight of more streams than http.max_concurrent_streams (sent before the server's
    SETTINGS were read, so the client library does not hold them back): the first `limit` get
    the answer, each other one RST_STREAM(REFUSED_STREAM) (not processed: it may be sent again),
    the GOAWAY names the last one answered, and only the answered ones have request lines and
    counts (review: 314 request lines from one write). The SETTINGS say the limit, as the normal
    HTTP/2 path's do."""
    http = {} if limit is None else {"max_concurrent_streams": limit}
    limit = limit or 100
    daemon, _ = serve(upstream=refused_address, http=http)
    client = H2Client(daemon, pki)
    try:
        sids = [client.request("/", flush=False) for _ in range(opened)]
        client.flush()  # one write
        goaway = client.wait_for(lambda ev: isinstance(ev, h2.events.ConnectionTerminated))
        while not client.closed:  # everything the server sent, up to its close
            client.pump(5)
        local = fmt_addr(client.sock.getsockname())
    finally:
        client.close()
    ended = {ev.stream_id for ev in client.events if isinstance(ev, h2.events.StreamEnded)}
    reset = {ev.stream_id: ev.error_code for ev in client.events
             if isinstance(ev, h2.events.StreamReset)}
    assert sorted(ended) == sids[:limit], f"{len(ended)} answered, up to {max(ended, default=0)}"
    assert all(client.bodies[sid] == b"upstream unavailable\n" for sid in sids[:limit])
    assert reset == {sid: h2.errors.ErrorCodes.REFUSED_STREAM for sid in sids[limit:]}, reset
    assert goaway.last_stream_id == sids[limit - 1], goaway
    assert goaway.error_code == h2.errors.ErrorCodes.NO_ERROR, goaway
    daemon.wait_for_access(client=local, reason="upstream_unavailable")
    lines = request_lines(daemon, client=local)
    assert [l["stream_id"] for l in lines] == sids[:limit], [l["stream_id"] for l in lines]
    assert all(l["status"] == 502 for l in lines), lines
    assert requests_counted(daemon, "5xx") == (0, limit)
    [settings] = [ev for ev in client.events if isinstance(ev, h2.events.RemoteSettingsChanged)]
    assert settings.changed_settings[
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS].new_value == limit, settings


def test_an_http2_client_that_resets_its_streams_gets_no_more_answers(serve, refused_address,
                                                                      pki):
    """Each stream reset by the client right after its HEADERS, in the same write: closed, it no
    longer counts against the streams open at once, but the bound is on the answers, so still
    only max_concurrent_streams of them are answered (and reported), the others refused."""
    daemon, _ = serve(upstream=refused_address, http={"max_concurrent_streams": 3})
    client = H2Client(daemon, pki)
    try:
        sids = []
        for _ in range(10):
            sids.append(client.request("/", flush=False))
            client.conn.reset_stream(sids[-1], h2.errors.ErrorCodes.CANCEL)
        client.flush()  # one write
        goaway = client.wait_for(lambda ev: isinstance(ev, h2.events.ConnectionTerminated))
        local = fmt_addr(client.sock.getsockname())
    finally:
        client.close()
    assert goaway.last_stream_id == sids[2], goaway
    daemon.wait_for_access(client=local, reason="upstream_unavailable")
    lines = request_lines(daemon, client=local)
    assert [l["stream_id"] for l in lines] == sids[:3], [l["stream_id"] for l in lines]
    assert requests_counted(daemon, "5xx") == (0, 3)
