"""The request lines and counts of the HTTP answers to clients refused after their handshake,
for the refusals test_http_refusals.py does not reach: 403 (`not_authorized`, an identity no
allow rule admits, here a resumed session judged again) and 503 (`over_capacity`, mtlsd out of
descriptors for the upstream connection), each for HTTP/1.1 and HTTP/2. As for 502 and 429: one
"request" line per request answered, with the answer's status and the refusal in `detail`, and
its count in mtlsd_http_requests_total by protocol and class.

The HTTP/1.1 requests leave with the client's Finished (test_http_refusals.one_flight): a request
counts only when it had come when the answer is written."""

from __future__ import annotations

import ssl

import h2.config
import h2.connection
import h2.errors
import pytest

from clients import client_context, connect, fmt_addr
from faults import SANITIZED, close_all, holds_peer, lower_fd_limit
from h2_client import H2Client
from helpers import wait_until
from http_upstream import response
from mtlsd_harness import proc_fd_count
from test_http_mode import http_serve  # noqa: F401 (a fixture)
from test_http_refusals import one_flight, request_lines, requests_counted

ALICE = "spiffe://example.org/ns/default/sa/client"  # client.crt
# Alice, but not for admin.example.org: a full handshake for it is refused in the handshake
# (an alert), a session made for another name and resumed for it after the handshake (a 403).
NOT_ADMIN = {"rules": [{"spiffe_ids": [ALICE], "not": {"sni": ["admin.example.org"]}}]}


class ResumingH2Client(H2Client):
    """H2Client over a context and session of the caller's, for name `sni`."""

    def __init__(self, daemon, ctx: ssl.SSLContext, sni: str, session: ssl.SSLSession):
        raw = connect(daemon.addr())
        self.sock = ctx.wrap_socket(raw, server_hostname=sni, session=session)
        assert self.sock.session_reused, "the session did not resume"
        assert self.sock.selected_alpn_protocol() == "h2"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        self.ack_data = True
        self.events, self.bodies, self.closed = [], {}, False
        self.conn.initiate_connection()
        self.flush()


def tls12_session(daemon, ctx: ssl.SSLContext) -> ssl.SSLSession:
    """The session of an admitted TLS 1.2 handshake for localhost (there as soon as the handshake
    is: a TLS 1.3 ticket would need a read)."""
    with ctx.wrap_socket(connect(daemon.addr()), server_hostname="localhost") as tls:
        assert tls.version() == "TLSv1.2"
        return tls.session


def context(pki, alpn: list[str]) -> ssl.SSLContext:
    ctx = client_context(pki, "client", min_version="1.2", max_version="1.2")
    ctx.check_hostname = False  # the server's name is localhost; the SNI asked for varies
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def test_requests_refused_as_not_authorized_get_403_request_lines(http_serve, pki):
    daemon, _, recorder = http_serve(lambda req: response(200, b"ok"),
                                     client_auth={"allow": NOT_ADMIN})
    h1 = context(pki, [])
    out, local = one_flight(daemon, h1, b"GET /denied HTTP/1.1\r\nHost: admin.example.org\r\n\r\n",
                            sni="admin.example.org", session=tls12_session(daemon, h1))
    assert out.startswith(b"HTTP/1.1 403 Forbidden\r\n"), out
    assert out.endswith(b"\r\n\r\nnot_authorized\n"), out
    line = daemon.wait_for_access(client=local, reason="not_authorized")
    assert line["result"] == "rejected" and line["resumed"] in (True, "true"), line

    h2_ctx = context(pki, ["h2"])
    client = ResumingH2Client(daemon, h2_ctx, "admin.example.org", tls12_session(daemon, h2_ctx))
    try:
        sid = client.request("/denied2")
        client.answered_then_goaway(sid, 403, h2.errors.ErrorCodes.INADEQUATE_SECURITY,
                                    b"not_authorized")
        h2_local = fmt_addr(client.sock.getsockname())
    finally:
        client.close()
    daemon.wait_for_access(client=h2_local, reason="not_authorized")

    [h1_line] = request_lines(daemon, client=local)
    assert (h1_line["protocol"], h1_line["status"], h1_line["method"], h1_line["authority"],
            h1_line["path"], h1_line["stream_id"]) == \
        ("HTTP/1.1", 403, "GET", "admin.example.org", "/denied", 1), h1_line
    [h2_line] = request_lines(daemon, client=h2_local)
    assert (h2_line["protocol"], h2_line["status"], h2_line["method"], h2_line["path"],
            h2_line["stream_id"]) == ("HTTP/2", 403, "GET", "/denied2", sid), h2_line
    for l in (h1_line, h2_line):
        assert l["resp_bytes"] == len(b"not_authorized\n"), l
        assert l["detail"].startswith("not_authorized: ") and \
            l["detail"].endswith(" (resumed session)"), l
    assert requests_counted(daemon, "4xx") == (1, 1)
    assert recorder.requests == []  # the upstream heard nothing


@pytest.mark.skipif(SANITIZED, reason="UBSan misreports once out of descriptors (test_faults)")
def test_requests_refused_as_over_capacity_get_503_request_lines(serve, refused_address, pki):
    """Out of descriptors when the upstream socket is made: 503, for each protocol in turn. The
    daemon's limit is lowered under it, and silent connections take all but one descriptor: the
    refused client's accept takes that one (test_faults' out-of-descriptors test)."""
    limit = 64
    daemon, _ = serve(upstream=refused_address, http={})
    lower_fd_limit(daemon.pid, limit)
    silent = []
    try:
        while proc_fd_count(daemon.pid) < limit - 1:
            assert len(silent) < limit, "mtlsd's descriptor count does not follow our connections"
            sock = connect(daemon.addr())
            silent.append(sock)
            port = sock.getsockname()[1]
            wait_until(lambda: holds_peer(daemon.pid, port), 5, "the connection's accept")
        out, local = one_flight(daemon, client_context(pki),
                                b"GET /full HTTP/1.1\r\nHost: x\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), out
        assert out.endswith(b"\r\n\r\nover capacity\n"), out
        daemon.wait_for_access(client=local, reason="over_capacity")
        # Its descriptor is the last one again.
        wait_until(lambda: proc_fd_count(daemon.pid) == limit - 1, 5, "the refused one's close")
        client = H2Client(daemon, pki)
        try:
            sid = client.request("/full2")
            client.answered_then_goaway(sid, 503, h2.errors.ErrorCodes.NO_ERROR, b"over capacity")
            h2_local = fmt_addr(client.sock.getsockname())
        finally:
            client.close()
        daemon.wait_for_access(client=h2_local, reason="over_capacity")
    finally:
        close_all(silent)
    [h1_line] = request_lines(daemon, client=local)
    assert (h1_line["protocol"], h1_line["status"], h1_line["method"], h1_line["path"]) == \
        ("HTTP/1.1", 503, "GET", "/full"), h1_line
    [h2_line] = request_lines(daemon, client=h2_local)
    assert (h2_line["protocol"], h2_line["status"], h2_line["method"], h2_line["path"],
            h2_line["stream_id"]) == ("HTTP/2", 503, "GET", "/full2", sid), h2_line
    for l in (h1_line, h2_line):
        assert l["resp_bytes"] == len(b"over capacity\n"), l
        assert l["detail"].startswith("over_capacity: out of file descriptors"), l
    assert requests_counted(daemon, "5xx") == (1, 1)
