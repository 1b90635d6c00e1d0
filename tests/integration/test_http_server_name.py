"""HTTP mode on a listener whose allow rules judge the SNI (README "Rules", "HTTP mode"): every
request on a connection must be for the name the client was admitted with. Another Host, an
absolute-form target or an HTTP/2 :authority naming another host gets 421 Misdirected Request
(as nginx answers when it verifies client certificates) and never reaches the upstream, which
may serve that other name too (review: a client admitted for api.example.org was served
admin.example.org's pages)."""

from __future__ import annotations

import socket

import pytest

from h2_client import H2Client
from http_upstream import Reader
from mtlsd_harness import client_context, fmt_addr, open_tls
from test_http_mode import SockConn, http_serve, read_response  # noqa: F401

TIMEOUT = 10
ONLY_LOCALHOST = {"allow": {"rules": [{"sni": ["localhost"]}]}}  # open_tls sends SNI localhost


def exchange(daemon, pki, request: bytes):
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        local = fmt_addr(sock.getsockname())
        sock.sendall(request)
        return read_response(Reader(SockConn(sock))), local


@pytest.mark.parametrize("request_bytes", [
    b"GET /x HTTP/1.1\r\nHost: admin.example.org\r\n\r\n",
    b"GET http://admin.example.org/x HTTP/1.1\r\nHost: localhost\r\n\r\n",
], ids=["host", "absolute-form"])
def test_a_request_for_another_host_than_the_sni_gets_421(http_serve, pki, request_bytes):
    daemon, up, recorder = http_serve(client_auth=ONLY_LOCALHOST)
    (status, _, _), local = exchange(daemon, pki, request_bytes)
    assert status == 421
    line = daemon.wait_for_access(client=local)
    assert line["detail"] == ("the request is for 'admin.example.org', not the TLS server name "
                              "'localhost' the listener's rules judged"), line
    assert recorder.requests == []


def test_a_request_for_the_sni_host_goes_up(http_serve, pki):
    daemon, _, recorder = http_serve(client_auth=ONLY_LOCALHOST)
    port = daemon.addr()[1]
    (status, _, _), _ = exchange(daemon, pki, f"GET /x HTTP/1.1\r\nHost: LocalHost:{port}\r\n"
                                              "Connection: close\r\n\r\n".encode())
    assert status == 200
    assert [r.target for r in recorder.requests] == ["/x"]


def test_without_sni_rules_any_host_goes_up(http_serve, pki):
    daemon, _, recorder = http_serve()
    (status, _, _), _ = exchange(daemon, pki, b"GET /x HTTP/1.1\r\nHost: admin.example.org\r\n"
                                              b"Connection: close\r\n\r\n")
    assert status == 200 and len(recorder.requests) == 1


def test_an_http2_authority_for_another_host_gets_421_on_its_stream(http_serve, pki):
    daemon, _, recorder = http_serve(client_auth=ONLY_LOCALHOST)
    client = H2Client(daemon, pki)
    try:
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(sid, [(":method", "GET"), (":scheme", "https"),
                                       (":authority", "admin.example.org"), (":path", "/x")],
                                 end_stream=True)
        client.bodies[sid] = bytearray()
        client.flush()
        other = client.response(sid, TIMEOUT)
        same = client.response(client.request("/y"), TIMEOUT)  # :authority localhost
    finally:
        client.close()
    assert other[0] == 421 and same[0] == 200
    assert [r.target for r in recorder.requests] == ["/y"]


NOT_ADMIN = {"allow": {"rules": [{"not": {"sni": ["admin.example.org"]}}]}}


def exchange_without_sni(daemon, pki, host: str):
    ctx = client_context(pki, "client")
    ctx.check_hostname = False           # no SNI: no name to check either
    raw = socket.create_connection(daemon.addr(), TIMEOUT)
    with ctx.wrap_socket(raw, server_hostname=None) as sock:
        local = fmt_addr(sock.getsockname())
        sock.sendall(f"GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return read_response(Reader(SockConn(sock)))[0], local


def test_without_an_sni_each_request_host_is_judged_by_the_rules(http_serve, pki):
    """A rule's `not: {sni: [admin.example.org]}` admits a client that sends no SNI: its requests
    are then judged by the rules with their host in the SNI's place, so admin.example.org gets
    421 and any other host goes up (review: with no SNI, nothing was compared)."""
    daemon, _, recorder = http_serve(client_auth=NOT_ADMIN)
    status, local = exchange_without_sni(daemon, pki, "admin.example.org:443")
    assert status == 421
    detail = daemon.wait_for_access(client=local)["detail"]
    assert detail.startswith("the request is for 'admin.example.org:443', which the listener's "
                             "rules do not admit without a TLS server name: "), detail
    assert exchange_without_sni(daemon, pki, "api.example.org")[0] == 200
    assert [r.target for r in recorder.requests] == ["/x"]
