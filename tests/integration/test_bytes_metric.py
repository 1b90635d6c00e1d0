"""mtlsd_bytes_total moves while a connection moves bytes, not only when it closes (review,
t15_bytes.py: 2 MiB each way over a connection held open showed rx=tx=0, then one jump at the
close; long-lived streams were invisible to rate()). Each direction gives its counter what it
moved once that is 64 KiB past the last time, and the connection's end gives the rest: at the
close the counters hold exactly the access line's rx_bytes and tx_bytes."""

from __future__ import annotations

import http.client
import socket

import pytest

from clients import client_context, fmt_addr, open_tls
from helpers import wait_until
from http_upstream import HttpRecorder, response

MIB = 1 << 20
STEP = 64 * 1024  # what a direction may hold back from its counter while the connection lives


def _bytes(daemon) -> tuple[float, float]:
    m = daemon.scrape()
    return (m.get("mtlsd_bytes_total", listener="inbound", direction="rx"),
            m.get("mtlsd_bytes_total", listener="inbound", direction="tx"))


def _moved_at_least(daemon, local: str, rx: int, tx: int):
    """Waits for the counters to reach rx and tx while the connection from `local` is open."""
    def check():
        got = _bytes(daemon)
        return got if got[0] >= rx and got[1] >= tx else None
    got = wait_until(check, what=f"mtlsd_bytes_total rx >= {rx} and tx >= {tx} "
                                 f"(last {_bytes(daemon)})")
    assert daemon.access_logs(client=local) == [], "the connection ended: no test of an open one"
    return got


def _exact_at_close(daemon, local: str) -> None:
    line = daemon.wait_for_access(client=local)
    assert _bytes(daemon) == (line["rx_bytes"], line["tx_bytes"]), line


def test_an_open_layer4_connection_shows_its_bytes(serve, pki):
    daemon, _ = serve()
    assert _bytes(daemon) == (0, 0)
    tls = open_tls(daemon.addr(), client_context(pki, "client"))
    local = fmt_addr(tls.getsockname())
    try:
        chunk = b"x" * STEP
        sent = got = 0
        for _ in range(32):  # 2 MiB each way, echoed
            tls.sendall(chunk)
            sent += len(chunk)
            while got < sent:
                data = tls.recv(MIB)
                assert data, "the echo ended early"
                got += len(data)
        rx, tx = _moved_at_least(daemon, local, 2 * MIB - STEP, 2 * MIB - STEP)
        assert rx <= 2 * MIB and tx <= 2 * MIB, (rx, tx)
    finally:
        tls.close()
    _exact_at_close(daemon, local)


def _answer(size: int):
    return lambda req: response(200, b"y" * size)


def test_an_open_http1_connection_shows_its_bytes(serve, pki):
    size = 256 * 1024
    daemon, _ = serve(HttpRecorder(_answer(size)).handler(), http={})
    host, port = daemon.addr()
    ctx = client_context(pki, "client")
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
    conn.sock = ctx.wrap_socket(socket.create_connection((host, port), 10),
                                server_hostname="localhost")
    local = fmt_addr(conn.sock.getsockname())
    try:
        conn.request("POST", "/upload", body=b"z" * size)  # kept alive: HTTP/1.1
        res = conn.getresponse()
        assert res.status == 200 and len(res.read()) == size
        _moved_at_least(daemon, local, size - STEP, size - STEP)
    finally:
        conn.close()
    _exact_at_close(daemon, local)


def test_an_open_http2_connection_shows_its_bytes(serve, pki):
    pytest.importorskip("h2")
    from h2_client import H2Client
    daemon, _ = serve(HttpRecorder(_answer(MIB)).handler(), http={})
    client = H2Client(daemon, pki)
    local = fmt_addr(client.sock.getsockname())
    try:
        sid = client.request("/download")
        status, body = client.response(sid)
        assert status == 200 and len(body) == MIB
        _moved_at_least(daemon, local, 0, MIB - STEP)
    finally:
        client.close()
    _exact_at_close(daemon, local)
