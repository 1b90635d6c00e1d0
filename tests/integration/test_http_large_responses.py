"""HTTP mode: a large response does not end a kept-alive connection.

A response that took more than one turn of the worker to read (reads_per_turn reads of 64 KiB in a
row, so from about 512 KiB on) could end the connection right after it: epoll's report of its
last bytes, queued behind the relay's own turn, was run only once the relay had read those bytes
and started its watch on the idle upstream, and it completed that watch as though the upstream
had closed or spoken. mtlsd then closed both sides (FIN to the upstream, `termination:
upstream_close`, no detail), and the client's next request found the connection gone.

The upstream is Python's own http.server (HTTP/1.1, keep-alive, never closing first), the client
Python's http.client over TLS with a client certificate: each large response is followed by a
small request on the same client connection, several times, and the upstream must see that one
connection only."""

from __future__ import annotations

import http.client
import http.server
import socket
import threading

import pytest

from mtlsd_harness import client_context, daemon_config, server_listener

TIMEOUT = 10.0
PIECE = 64 * 1024  # what the chunked upstream writes at a time (one chunk each)
# The race needs a response longer than one turn of reads: a few rounds per connection make
# its failure near certain before the fix (each round failed about half the time at 1 MiB).
ROUNDS = 4


class Upstream(http.server.ThreadingHTTPServer):
    """A keep-alive HTTP/1.1 upstream: GET /cl/N answers N bytes with a Content-Length, GET
    /chunked/N the same bytes chunked. Counts the connections it accepted."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.connections = 0
        self.requests: list[str] = []
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless told otherwise

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def log_message(self, *args):
        pass

    def do_GET(self):
        _, framing, size = self.path.split("/")
        size = int(size)
        with self.server.lock:
            self.server.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if framing == "cl":
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.write(body(size))
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        data = body(size)
        for at in range(0, size, PIECE):
            piece = data[at:at + PIECE]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")


def body(size: int) -> bytes:
    """`size` bytes that are not all alike (a shifted or truncated copy would not compare equal)."""
    pattern = bytes(range(251))
    return (pattern * (size // len(pattern) + 1))[:size]


@pytest.fixture
def upstream():
    up = Upstream()
    yield up
    up.close()


def https(daemon, pki) -> http.client.HTTPSConnection:
    host, port = daemon.addr()
    ctx = client_context(pki, "client")
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=TIMEOUT)
    conn.sock = ctx.wrap_socket(socket.create_connection((host, port), TIMEOUT),
                                server_hostname="localhost")
    return conn


def get(conn: http.client.HTTPSConnection, path: str) -> tuple[http.client.HTTPResponse, bytes]:
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp, resp.read()


@pytest.mark.parametrize("framing", ["cl", "chunked"])
@pytest.mark.parametrize("size", [256 * 1024, 1024 * 1024, 8 * 1024 * 1024],
                         ids=["256KiB", "1MiB", "8MiB"])
def test_large_response_keeps_the_connection(start_mtlsd, pki, upstream, size, framing):
    daemon = start_mtlsd(daemon_config([server_listener(pki, upstream.address, http={})]))
    conn = https(daemon, pki)
    local = "%s:%d" % conn.sock.getsockname()[:2]
    rounds = ROUNDS if size > 256 * 1024 else 1
    for n in range(rounds):
        resp, data = get(conn, f"/{framing}/{size}")
        assert resp.status == 200 and len(data) == size and data == body(size), (n, len(data))
        assert not resp.will_close, n
        # The next request on the same client connection is served, by the same upstream one.
        try:
            resp, data = get(conn, f"/{framing}/10")
        except (http.client.RemoteDisconnected, ConnectionError) as e:
            line = daemon.wait_for_access(client=local)
            pytest.fail(f"round {n}: the connection ended after a {size}-byte response ({e!r}); "
                        f"access line: termination={line['termination']} "
                        f"detail={line['detail']!r}")
        assert resp.status == 200 and data == body(10), n
    conn.close()
    line = daemon.wait_for_access(client=local)
    assert line["termination"] == "client_close", line
    assert line["detail"] == "", line
    assert upstream.connections == 1, upstream.connections
    assert len(upstream.requests) == 2 * rounds, upstream.requests
    # Every exchange got its request line, with the whole body counted.
    requests = [r for r in daemon.logs()
                if r.get("msg") == "request" and r.get("client") == local]
    assert [r["resp_bytes"] for r in requests] == [size, 10] * rounds, requests
    assert all(r["status"] == 200 for r in requests), requests
