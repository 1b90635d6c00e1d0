"""Server mode with an `http:` block: mtlsd parses HTTP/1.1 between the TLS
client and the upstream and sets X-Forwarded-Client-Cert the way Envoy does.

What the upstream sees is checked with a strict HTTP parser of our own
(http_upstream.py); clients are Python's http.client and raw TLS sockets where
the exact bytes matter (pipelining, 100-continue, WebSocket, malformed input)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import h2.errors as h2_errors
import pytest

from h2_client import H2Client
from helpers import wait_request_line
from http_upstream import (HttpRecorder, Reader, parse_head, read_request, response,
                           websocket_echo, ws_accept, ws_frame, ws_read_frame)
from mtlsd_harness import client_context, fmt_addr, free_port, open_tls

CLIENT_ID = "spiffe://example.org/ns/default/sa/client"
FORGED = "By=spiffe://evil/proxy;Hash=00;URI=spiffe://example.org/ns/admin/sa/root"
TIMEOUT = 10.0


# --- helpers ----------------------------------------------------------------------

def sha256_hex(pki, cert: str) -> str:
    der = ssl.PEM_cert_to_DER_cert(Path(pki.path(cert)).read_text())
    return hashlib.sha256(der).hexdigest()


def envoy_url_encode(pem: str) -> str:
    for a, b in (("\n", "%0A"), (" ", "%20"), ("+", "%2B"), ("/", "%2F"), ("=", "%3D")):
        pem = pem.replace(a, b)
    return pem


def pem_of(pki, cert: str) -> str:
    """The certificate as OpenSSL's PEM_write_bio_X509 writes it."""
    return ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(Path(pki.path(cert)).read_text()))


def client_element(pki) -> str:
    """client.crt's element under the default details [uri, dns, subject, hash]."""
    return (f"Hash={sha256_hex(pki, 'client.crt')};"
            f'Subject="CN=client,OU=payments,O=mtlsd Test";'
            f"URI={CLIENT_ID};DNS=client.example.org")


class SockConn:
    """Gives an SSL socket the recv() shape http_upstream.Reader expects."""

    def __init__(self, sock):
        self.sock = sock

    def recv(self, n: int = 65536) -> bytes:
        return self.sock.recv(n)


def read_response(reader: Reader, head_request: bool = False):
    """(status, headers, body) of one response read from `reader`; None at EOF."""
    raw = reader.until(b"\r\n\r\n")
    if raw is None:
        return None
    version, status, _, headers = parse_head(raw)
    assert version.startswith("HTTP/1."), raw
    status = int(status)
    hdrs = {k.lower(): v for k, v in headers}
    body = b""
    if head_request or status in (101, 204, 304) or 100 <= status < 200:
        return status, hdrs, body
    if hdrs.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int(reader.until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                reader.until(b"\r\n")
                break
            body += reader.exact(size)
            reader.exact(2)
    elif "content-length" in hdrs:
        body = reader.exact(int(hdrs["content-length"]))
    return status, hdrs, body


@pytest.fixture
def http_serve(serve):
    """http_serve(app=None, http={...}, **listener_overrides) -> (daemon, upstream, recorder)."""
    def start(app=None, *, http: dict | None = None, handler=None, **overrides):
        recorder = HttpRecorder(app) if app else HttpRecorder()
        daemon, up = serve(handler or recorder.handler(), http=http or {}, **overrides)
        return daemon, up, recorder
    return start


def https(daemon, pki, cert="client", timeout=TIMEOUT) -> http.client.HTTPSConnection:
    host, port = daemon.addr()
    ctx = client_context(pki, cert)
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=timeout)
    conn.sock = ctx.wrap_socket(socket.create_connection((host, port), timeout),
                                server_hostname="localhost")
    return conn


def get_json(conn, method="GET", path="/", body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    assert resp.status == 200, (resp.status, data)
    return json.loads(data) if data else None


# --- X-Forwarded-Client-Cert --------------------------------------------------

def test_forged_xfcc_is_stripped_and_the_real_one_set(http_serve, pki):
    daemon, _, rec = http_serve()
    conn = https(daemon, pki)
    conn.putrequest("GET", "/who")
    conn.putheader("X-Forwarded-Client-Cert", FORGED)
    conn.putheader("x-forwarded-client-cert", "By=second;URI=forged")  # a second line too
    conn.endheaders()
    resp = conn.getresponse()
    seen = json.loads(resp.read())
    conn.close()
    assert seen["xfcc"] == [client_element(pki)]
    (req,) = rec.requests
    assert req.xfcc == [client_element(pki)]
    assert not any("evil" in v or "forged" in v for _, v in req.headers)


XFCC_MODES_WITH_CERT = {
    "sanitize": lambda el: [],
    "forward_only": lambda el: [FORGED],
    "append_forward": lambda el: [FORGED + "," + el],
    "sanitize_set": lambda el: [el],
    "always_forward_only": lambda el: [FORGED],
}


@pytest.mark.parametrize("mode", sorted(XFCC_MODES_WITH_CERT))
def test_xfcc_modes_with_a_client_certificate(http_serve, pki, mode):
    daemon, _, rec = http_serve(http={"forward_client_cert_details": mode})
    conn = https(daemon, pki)
    get_json(conn, headers={"X-Forwarded-Client-Cert": FORGED})
    get_json(conn)  # and a request that carries none
    conn.close()
    expected = XFCC_MODES_WITH_CERT[mode](client_element(pki))
    assert rec.requests[0].xfcc == expected
    without = {"sanitize": [], "forward_only": [], "always_forward_only": [],
               "append_forward": [client_element(pki)], "sanitize_set": [client_element(pki)]}
    assert rec.requests[1].xfcc == without[mode]


XFCC_MODES_WITHOUT_CERT = {
    "sanitize": [], "forward_only": [], "append_forward": [], "sanitize_set": [],
    "always_forward_only": [FORGED],
}


@pytest.mark.parametrize("mode", sorted(XFCC_MODES_WITHOUT_CERT))
def test_xfcc_modes_without_a_client_certificate(http_serve, pki, mode):
    """client_auth optional, no certificate: only always_forward_only lets the
    client's header through (Envoy: no mTLS, no forwarding)."""
    daemon, _, rec = http_serve(http={"forward_client_cert_details": mode},
                                client_auth={"mode": "optional"})
    conn = https(daemon, pki, cert=None)
    get_json(conn, headers={"X-Forwarded-Client-Cert": FORGED})
    conn.close()
    assert rec.requests[0].xfcc == XFCC_MODES_WITHOUT_CERT[mode]


def test_cert_and_chain_details_in_envoy_order(http_serve, pki):
    """Configured in a scrambled order; emitted in Envoy's: Hash, Cert, Chain,
    Subject, URI (DNS absent: that certificate has none)."""
    daemon, _, rec = http_serve(http={"set_current_client_cert_details":
                                      ["dns", "chain", "uri", "cert", "subject", "hash"]})
    host, port = daemon.addr()
    ctx = client_context(pki, "client-int", certfile="client-int-chain.crt")
    with open_tls((host, port), ctx) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, _, _ = read_response(Reader(SockConn(sock)))
    assert status == 200
    leaf, inter = pem_of(pki, "client-int.crt"), pem_of(pki, "int.crt")
    expected = (f"Hash={sha256_hex(pki, 'client-int.crt')};"
                f'Cert="{envoy_url_encode(leaf)}";'
                f'Chain="{envoy_url_encode(leaf)}{envoy_url_encode(inter)}";'
                f'Subject="CN=client-int,OU=payments,O=mtlsd Test";'
                f"URI=spiffe://example.org/ns/default/sa/client-int")
    (req,) = rec.requests
    assert req.xfcc == [expected]
    cert_value = expected.split('Cert="')[1].split('"')[0]
    assert urllib.parse.unquote(cert_value) == leaf


def test_by_names_our_own_uri_san(http_serve, pki, tmp_path):
    """By= carries the URI SAN of mtlsd's own certificate (here a server
    certificate with a SPIFFE ID, issued for this test)."""
    own = pki.copy_to(tmp_path / "pki")
    key, csr, crt = (str(tmp_path / n) for n in ("edge.key", "edge.csr", "edge.crt"))
    ext = tmp_path / "ext.cnf"
    ext.write_text("[ edge ]\nbasicConstraints = critical, CA:false\n"
                   "keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n"
                   "subjectAltName = DNS:localhost, URI:spiffe://example.org/ns/edge/sa/mtlsd\n")
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", key], check=True, capture_output=True)
    os.chmod(key, 0o600)
    own.openssl("req", "-new", "-key", key, "-subj", "/O=mtlsd Test/CN=localhost", "-out", csr)
    own.openssl("ca", "-batch", "-notext", "-name", "root_ca", "-extfile", str(ext),
                "-extensions", "edge", "-days", "30", "-in", csr, "-out", crt)
    daemon, _, rec = http_serve(tls={"cert": crt, "key": key},
                                http={"forward_client_cert_details": "append_forward"})
    conn = https(daemon, pki)
    get_json(conn, headers={"X-Forwarded-Client-Cert": "By=spiffe://front;Hash=ab"})
    conn.close()
    assert rec.requests[0].xfcc == [
        "By=spiffe://front;Hash=ab,By=spiffe://example.org/ns/edge/sa/mtlsd;" +
        client_element(pki)]


# --- the HTTP relay itself -----------------------------------------------------

def test_keep_alive_several_requests_one_connection(http_serve, pki):
    daemon, up, rec = http_serve()
    conn = https(daemon, pki)
    local = fmt_addr(conn.sock.getsockname())
    get_json(conn, path="/a")
    conn.request("HEAD", "/b")
    head = conn.getresponse()
    assert head.status == 200 and head.read() == b""
    assert int(head.getheader("content-length")) > 0   # a length, but no body follows
    seen = get_json(conn, "POST", "/c", body=b"x" * 100_000)
    assert seen["body_len"] == 100_000
    conn.request("GET", "/chunked")
    chunked = conn.getresponse()
    data = chunked.read()
    assert chunked.status == 200 and chunked.getheader("transfer-encoding") == "chunked"
    assert data.endswith(bytes(range(256)) * 256)
    get_json(conn, "DELETE", "/d")
    sock = conn.sock
    get_json(conn, path="/e")
    assert conn.sock is sock
    conn.close()

    assert [r.target for r in rec.requests] == ["/a", "/b", "/c", "/chunked", "/d", "/e"]
    assert {r.conn_id for r in rec.requests} == {1}
    assert up.connection_count() == 1
    line = daemon.wait_for_access(client=local)
    assert line["result"] == "accepted" and line["identity"] == CLIENT_ID
    assert len(daemon.access_logs()) == 1


def test_request_lines_carry_the_connections_fields(http_serve, pki):
    """interface.md: a request line has its own fields "plus the connection's fields" (review:
    peer_issuer, peer_not_after, resumed and upstream_connect_ms were left out)."""
    daemon, _, _ = http_serve()
    conn = https(daemon, pki)
    local = fmt_addr(conn.sock.getsockname())
    get_json(conn, path="/a")
    conn.close()
    access = daemon.wait_for_access(client=local)
    request = daemon.wait_for_log(lambda l: l.get("msg") == "request" and l.get("client") == local)
    shared = ("conn_id", "listener", "client", "identity", "tls_version", "cipher", "resumed",
              "sni", "alpn", "upstream", "upstream_connect_ms", "peer_subject", "peer_serial",
              "peer_issuer", "peer_sha256", "peer_not_after")
    assert {k: request.get(k, "(missing)") for k in shared} == {k: access[k] for k in shared}
    assert access["peer_issuer"] and access["peer_not_after"], access


def test_pipelined_requests_answered_in_order(http_serve, pki):
    daemon, _, rec = http_serve()
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        sock.sendall(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                     b"GET /3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reader = Reader(SockConn(sock))
        targets = [json.loads(read_response(reader)[2])["target"] for _ in range(3)]
        assert read_response(reader) is None     # closed after Connection: close
    assert targets == ["/1", "/2", "/3"]
    assert rec.requests[1].body == b"abc"


def test_chunked_upload_arrives_intact(http_serve, pki):
    daemon, _, rec = http_serve()
    rng = random.Random(7)
    parts = [rng.randbytes(rng.randint(1, 200_000)) for _ in range(30)]
    body = b"".join(parts)
    conn = https(daemon, pki)
    seen = get_json(conn, "POST", "/upload", body=iter(parts))  # http.client chunks it
    conn.close()
    assert seen["chunked"] is True
    assert seen["body_len"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert rec.requests[0].body == body


def test_large_bodies_are_streamed_not_buffered(http_serve, pki):
    """32 MiB up and a 32 MiB chunked answer down, through one connection: the
    daemon's peak RSS must not grow anywhere near the body size."""
    def app(req):
        if req.target == "/down":
            block = bytes(range(256)) * 4096   # 1 MiB
            return response(200, b"", chunks=[block] * 32)
        return response(200, json.dumps({"len": len(req.body),
                                         "sha": hashlib.sha256(req.body).hexdigest()}).encode())
    daemon, _, _ = http_serve(app)

    def peak_rss_kib() -> int:
        for line in Path(f"/proc/{daemon.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")
    conn = https(daemon, pki, timeout=60)
    get_json(conn, path="/warm-up")
    before = peak_rss_kib()
    body = random.Random(3).randbytes(32 * 1024 * 1024)
    seen = get_json(conn, "POST", "/up", body=body)
    assert seen == {"len": len(body), "sha": hashlib.sha256(body).hexdigest()}
    conn.request("GET", "/down")
    resp = conn.getresponse()
    assert len(resp.read()) == 32 * 1024 * 1024
    conn.close()
    grown = peak_rss_kib() - before
    if "libasan" in Path(f"/proc/{daemon.pid}/maps").read_text():
        # The bodies arrived intact; the RSS bound is not checked: ASan's quarantine holds
        # freed memory, so RSS says nothing there. A skip says so (a return would pass).
        pytest.skip(f"RSS bound not checked under ASan (peak grew by {grown} KiB)")
    assert grown < 16 * 1024, f"peak RSS grew by {grown} KiB while relaying 64 MiB"


def test_expect_100_continue_is_answered_by_mtlsd(http_serve, pki):
    daemon, _, rec = http_serve()
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        sock.sendall(b"PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        reader = Reader(SockConn(sock))
        status, _, _ = read_response(reader)
        assert status == 100
        sock.sendall(b"hello")
        status, _, body = read_response(reader)
        assert status == 200 and json.loads(body)["body_len"] == 5
    (req,) = rec.requests
    assert req.get("expect") is None and req.body == b"hello"


def test_websocket_upgrade_is_echoed_through(http_serve, pki):
    upgrades = []
    daemon, up, _ = http_serve(handler=websocket_echo(upgrades))
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    mask = b"\x11\x22\x33\x44"
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        # The first frame rides in the same write as the upgrade request: mtlsd must pass the
        # bytes it already read on once the upstream said 101.
        sock.sendall(("GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nX-Forwarded-Client-Cert: {FORGED}\r\n\r\n"
                      ).encode() + ws_frame(b"early", mask=mask))
        reader = Reader(SockConn(sock))
        status, headers, _ = read_response(reader)
        assert status == 101
        assert headers["sec-websocket-accept"] == ws_accept(key)
        assert ws_read_frame(reader.exact) == (0x1, b"early")
        for payload in (b"hello", b"x" * 300, random.Random(1).randbytes(100_000)):
            sock.sendall(ws_frame(payload, opcode=0x2, mask=mask))
            assert ws_read_frame(reader.exact) == (0x2, payload)
        sock.sendall(ws_frame(b"\x03\xe8", opcode=0x8, mask=mask))
        assert ws_read_frame(reader.exact) == (0x8, b"\x03\xe8")
    (req,) = upgrades
    assert req.xfcc == [client_element(pki)]
    conn = up.wait_for_connections(1)[0]
    assert conn.done.wait(5)
    line = daemon.wait_for_access(result="accepted")
    assert line["rx_bytes"] > 100_000 and line["tx_bytes"] > 100_000


def test_upgrade_refused_by_upstream_stays_http(http_serve, pki):
    """A non-101 answer to an Upgrade request: the connection stays HTTP."""
    daemon, _, rec = http_serve()
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        sock.sendall(b"GET /no HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\n\r\n"
                     b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reader = Reader(SockConn(sock))
        assert read_response(reader)[0] == 200
        assert json.loads(read_response(reader)[2])["target"] == "/after"
    assert [r.target for r in rec.requests] == ["/no", "/after"]


@pytest.mark.parametrize("switching,why", [
    (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "without Upgrade and Connection: upgrade"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
     "without Upgrade and Connection: upgrade"),
    (b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: ws2\r\n\r\n",
     "to a protocol the request did not offer"),
    (b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket, h2c\r\n\r\n",
     "to h2c"),
], ids=["bare", "no-connection-upgrade", "not-offered", "h2c"])
def test_a_101_that_switches_to_nothing_offered_opens_no_tunnel(http_serve, pki, switching, why):
    """An upstream endpoint that can be made to answer 101 while it goes on speaking HTTP (a
    /status/101 route, an app setting its own status): a tunnel opened on that would carry the
    client's next request to it unparsed, with a forged X-Forwarded-Client-Cert and no
    X-Forwarded-For (WebSocket smuggling). A 101 is taken only with Connection: upgrade and an
    Upgrade naming an offered protocol (RFC 9110 7.8, as Envoy checks): else a 502, and the
    connection ends."""
    seen = []

    def http_only_upstream(conn):
        reader = Reader(conn)
        while (req := read_request(reader)) is not None:
            seen.append(req)
            conn.sendall(switching if req.target == "/status/101" else response(200, b"plain"))
    daemon, _, _ = http_serve(handler=http_only_upstream)
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        local = fmt_addr(sock.getsockname())
        reader = Reader(SockConn(sock))
        sock.sendall(b"GET /status/101 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\n\r\n")
        status, _, _ = read_response(reader)
        assert status == 502
        try:
            sock.sendall(b"GET /admin HTTP/1.1\r\nHost: x\r\n"
                         b"X-Forwarded-Client-Cert: " + FORGED.encode() + b"\r\n\r\n")
            assert read_response(reader) is None  # the close, within the socket's 5 s
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            pass  # closed before the write: the same for this test
    line = daemon.wait_for_access(client=local)
    assert line["detail"] == "upstream: 101 Switching Protocols " + why, line
    request = daemon.wait_for_log(lambda l: l.get("msg") == "request" and l.get("client") == local)
    assert request["status"] == 502, request
    assert [r.target for r in seen] == ["/status/101"]  # nothing reached it after the 101


# --- refusals and failures ----------------------------------------------------

def raw_exchange(daemon, pki, data: bytes) -> tuple[bytes, str]:
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        local = fmt_addr(sock.getsockname())
        sock.sendall(data)
        out = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (ssl.SSLError, ConnectionResetError):
            pass
    return out, local


@pytest.mark.parametrize("request_bytes", [
    b"NOT HTTP AT ALL\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"GET / HTTP/1.1\nHost: x\n\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip,\r\n chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n\tb\r\n\r\n",
    b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: good.example\r\nHost: evil.example\r\n\r\n",
    b"GET / HTTP/1.1\r\nUser-Agent: no-host\r\n\r\n",
    # Beast reads these lists only up to a character that is no token's (review): to it the
    # first two are chunked, and the third has no h2c in it.
    b'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, "x"\r\n\r\n0\r\n\r\n',
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: @, h2c\r\n\r\n",
], ids=["garbage", "bad-header", "cl-and-te", "te-not-chunked", "two-lengths", "bare-lf",
        "folded-te", "folded", "te-in-http10", "two-hosts", "no-host", "te-quoted-member",
        "te-chunked-parameter", "upgrade-not-a-token"])
def test_malformed_request_gets_400_and_nothing_upstream(http_serve, pki, request_bytes):
    daemon, up, rec = http_serve()
    out, local = raw_exchange(daemon, pki, request_bytes)
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n"), out
    assert b"Connection: close" in out
    line = daemon.wait_for_access(client=local)
    assert line["result"] == "accepted"      # admitted by TLS; the HTTP request was refused
    assert line["detail"], line
    assert up.total_received() == 0 and rec.requests == []
    # The request has its own line saying why, and is counted, parsed or not.
    request = daemon.wait_for_log(lambda l: l.get("msg") == "request" and l.get("client") == local)
    assert request["status"] == 400 and request["detail"] == line["detail"], request
    assert daemon.scrape().get("mtlsd_http_requests_total", listener="inbound",
                               protocol="HTTP/1.1", code_class="4xx") == 1


def test_an_absolute_form_target_goes_up_in_origin_form_with_its_authority(http_serve, pki):
    """RFC 9112 3.2.2: the target's authority wins over the client's Host. It goes up as the
    only Host, with an origin-form target (as Envoy sends it), and the access line names it:
    an upstream that routes by the target and one that routes by Host, and the log, agree."""
    daemon, up, rec = http_serve()
    out, local = raw_exchange(daemon, pki, b"GET http://admin.internal:8080/x?y HTTP/1.1\r\n"
                                           b"Host: public.example\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 "), out
    [req] = rec.requests
    assert req.target == "/x?y" and req.get_all("host") == ["admin.internal:8080"], req
    daemon.wait_for_log(lambda line: line.get("msg") == "request" and line.get("client") == local
                        and line.get("authority") == "admin.internal:8080"
                        and line.get("path") == "/x?y")
    out, _ = raw_exchange(daemon, pki, b"GET http://user@admin.internal/ HTTP/1.1\r\n"
                                       b"Host: public.example\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n"), out
    assert len(rec.requests) == 1


def test_a_chunked_upload_sent_in_one_write_is_forwarded_whole(http_serve, pki):
    """Head, chunks and last chunk arrive together: all of it goes up at once (the parser walks
    every buffered piece before mtlsd reads again)."""
    daemon, _, rec = http_serve()
    out, _ = raw_exchange(daemon, pki,
                          b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                          b"Connection: close\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 "), out
    assert [(r.target, r.body) for r in rec.requests] == [("/up", b"hello world")]


SMUGGLED = (b"GET /admin HTTP/1.1\r\nHost: x\r\n"
            b"X-Forwarded-Client-Cert: By=spiffe://evil;URI=spiffe://example.org/ns/admin\r\n\r\n")


@pytest.mark.parametrize("body,reason", [
    # A bare LF inside a quoted chunk extension: a peer that ends chunk lines at LF takes the
    # chunk data to start right after it, and the bytes mtlsd counts as data become a request.
    (b'9;a="\n' + b'x' * 3 + b'"\r\n' + b"123456789\r\n0\r\n\r\n" + SMUGGLED,
     "a control character in a chunk extension"),
    (b"0\r\nX-Forwarded-Client-Cert: By=spiffe://evil\r\n\r\n", "an X-Forwarded-* trailer"),
    (b"0\r\nX_Forwarded_For: 10.0.0.1\r\n\r\n", "an X-Forwarded-* trailer"),
    (b"0\r\nX-Trailer: a\r\n b\r\n\r\n", "a folded trailer"),
], ids=["lf-in-chunk-extension", "xfcc-trailer", "xff-trailer-underscores", "folded-trailer"])
def test_a_body_another_parser_could_frame_otherwise_never_goes_up(http_serve, pki, body, reason):
    closed = threading.Event()

    def swallow(conn):  # reads all that comes until mtlsd closes, answers nothing
        while conn.recv():
            pass
        closed.set()
    daemon, up, _ = http_serve(handler=swallow)
    out, local = raw_exchange(daemon, pki,
                              b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                              + body)
    assert not out.startswith(b"HTTP/1.1 200"), out
    line = daemon.wait_for_access(client=local)
    assert closed.wait(TIMEOUT), "mtlsd kept the upstream connection open"
    received = b"".join(c.received for c in up.connections)
    assert received.startswith(b"POST / HTTP/1.1\r\n"), received   # the head went up
    # ... and nothing of the body: the bad piece is its first.
    assert received.endswith(b"\r\n\r\n") and received.count(b"\r\n\r\n") == 1, received
    assert line["detail"] == "malformed request body: " + reason, line


def test_oversized_request_head_gets_431(http_serve, pki):
    daemon, up, _ = http_serve()
    out, _ = raw_exchange(daemon, pki, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " +
                          b"a" * (70 * 1024) + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 431 "), out[:80]
    assert up.total_received() == 0


def test_connect_method_refused(http_serve, pki):
    daemon, up, _ = http_serve()
    out, _ = raw_exchange(daemon, pki, b"CONNECT example.org:443 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 405 "), out[:80]
    assert up.total_received() == 0


def test_upstream_dying_before_the_answer_gets_502(http_serve, pki):
    def hang_up(conn):
        Reader(conn).until(b"\r\n\r\n")
    daemon, _, _ = http_serve(handler=hang_up)
    out, local = raw_exchange(daemon, pki, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), out
    assert "upstream" in daemon.wait_for_access(client=local)["detail"]
    request = wait_request_line(daemon, client=local)
    assert request["status"] == 502 and request["detail"].startswith("upstream: "), request


def upstream_answering(raw: bytes, then_close: bool = False):
    """An upstream handler: reads one request, answers with exactly `raw`, and closes its end
    when `then_close` (else waits for the client to go)."""
    def handle(conn):
        reader = Reader(conn)
        assert read_request(reader) is not None
        conn.sendall(raw)
        if then_close:
            conn.shutdown_write()
        else:
            read_request(reader)
    return handle


# The upstream's response bytes reach the client as they were sent: chunk extensions, trailers
# and the order and spelling of the fields included. Only an obs-fold is replaced by spaces
# (RFC 9112 5.2), in place.
AS_SENT = (b"HTTP/1.1 200 OK\r\nx-Odd-Case:  spaced  \r\nX-Folded: one\r\n two\r\n"
           b"Transfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
           b"5;name=value\r\nhello\r\n0\r\nX-Sum: 5\r\n\r\n")


def test_response_bytes_reach_the_client_as_the_upstream_sent_them(http_serve, pki):
    daemon, _, _ = http_serve(handler=upstream_answering(AS_SENT))
    out, local = raw_exchange(daemon, pki, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out == AS_SENT.replace(b"one\r\n two", b"one   two"), out
    line = daemon.wait_for_access(client=local)
    assert line["termination"] != "error", line


def test_interim_responses_reach_the_client_before_the_final_one(http_serve, pki):
    hints = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    final = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone"
    daemon, _, _ = http_serve(handler=upstream_answering(hints + final))
    out, _ = raw_exchange(daemon, pki, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out == hints + final, out


def test_an_http10_client_gets_no_1xx(http_serve, pki):
    """RFC 9110 15.2: an HTTP/1.0 client knows no 1xx and would take one for its answer. Nor
    does mtlsd answer its Expect: 100-continue (RFC 9110 10.1.1)."""
    hints = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    final = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone"
    daemon, _, _ = http_serve(handler=upstream_answering(hints + final))
    out, _ = raw_exchange(daemon, pki, b"POST / HTTP/1.0\r\nContent-Length: 5\r\n"
                                       b"Expect: 100-continue\r\n\r\nhello")
    assert out == final, out


def test_an_expectation_other_than_100_continue_gets_417_and_nothing_upstream(http_serve, pki):
    """mtlsd answers 100-continue itself and drops Expect: every field counts, so an expectation
    it does not meet is refused (RFC 9110 10.1.1) rather than sent up beside the one it answered
    (review: `Expect: foo` then `Expect: 100-continue` went up whole, with no 100 from mtlsd)."""
    daemon, up, rec = http_serve()
    out, local = raw_exchange(daemon, pki, b"POST / HTTP/1.1\r\nHost: x\r\nExpect: foo\r\n"
                                           b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 417 Expectation Failed\r\n"), out
    assert daemon.wait_for_access(client=local)["detail"] == "an expectation other than 100-continue"
    assert up.total_received() == 0 and rec.requests == []


def test_a_transfer_coding_besides_chunked_gets_501_and_nothing_upstream(http_serve, pki):
    """mtlsd writes `Transfer-Encoding: chunked` upstream itself, so a gzip coding in front of it
    would be lost: refused, as nginx and Envoy refuse it."""
    daemon, up, rec = http_serve()
    out, local = raw_exchange(daemon, pki, b"POST / HTTP/1.1\r\nHost: x\r\n"
                                           b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 501 Not Implemented\r\n"), out
    assert "other than chunked" in daemon.wait_for_access(client=local)["detail"]
    assert up.total_received() == 0 and rec.requests == []


def test_the_upstream_hears_framing_and_connection_as_mtlsd_writes_them(http_serve, pki):
    """One Content-Length however the client spelled it; no hop-by-hop field, and none that the
    client's Connection names — so no upstream proxy drops the X-Forwarded-Client-Cert mtlsd
    sets because the client listed it there."""
    daemon, _, rec = http_serve()
    out, _ = raw_exchange(daemon, pki, (
        b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\ncontent-length: 5\r\n"
        b"Connection: close, X-Forwarded-Client-Cert, X-Forwarded-For, X-Secret\r\n"
        b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers, deflate\r\n"
        b"X-Secret: 1\r\n\r\nhello"))
    assert out.startswith(b"HTTP/1.1 200 "), out
    (req,) = rec.requests
    names = [name.lower() for name, _ in req.headers]
    for hop in ("keep-alive", "proxy-connection", "x-secret"):
        assert hop not in names, req.headers
    assert req.get("connection") == "close" and req.get("te") == "trailers"
    assert names.count("content-length") == 1 and req.get("content-length") == "5"
    assert req.xfcc == [client_element(pki)] and req.body == b"hello"


@pytest.mark.parametrize("offer", [b"h2c", b"websocket/13, h2c", b"x/1, H2C"])
def test_an_h2c_upgrade_is_not_passed_on(http_serve, pki, offer):
    """An h2c upgrade would be a tunnel in which the client speaks HTTP/2 to the upstream itself,
    past every X-Forwarded-* field mtlsd sets. The upstream here switches to whatever it is asked
    to (as Go's h2c handler, Apache and Tomcat do for h2c): it must never be asked, and the
    request after it still carries mtlsd's X-Forwarded-Client-Cert, not the client's. h2c is
    seen in any member of the offer, in any case (review: behind `websocket/13`, which Beast's
    list reader stops at, the offer went up and the tunnel opened)."""
    seen = []

    def switching_upstream(conn):
        reader = Reader(conn)
        while (req := read_request(reader)) is not None:
            seen.append(req)
            if req.get("upgrade"):
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                             b"Upgrade: " + req.get("upgrade").encode() + b"\r\n\r\n")
                conn.recv_until_eof()  # a tunnel now: everything else is raw bytes
                return
            conn.sendall(response(200, b"plain"))
        conn.shutdown_write()
    daemon, _, _ = http_serve(handler=switching_upstream)
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        reader = Reader(SockConn(sock))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                     b"Upgrade: " + offer + b"\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
        status, _, body = read_response(reader)
        assert (status, body) == (200, b"plain")
        sock.sendall(b"GET /admin HTTP/1.1\r\nHost: x\r\n"
                     b"X-Forwarded-Client-Cert: " + FORGED.encode() + b"\r\n\r\n")
        assert read_response(reader)[0] == 200
    first, second = seen
    assert first.get("upgrade") is None and first.get("http2-settings") is None
    assert second.target == "/admin" and second.xfcc == [client_element(pki)]


def test_a_response_without_length_runs_until_the_upstream_closes(http_serve, pki):
    """No Content-Length, not chunked: the body is everything until the upstream's close,
    which then ends the client's connection too (nothing else could tell the body's end)."""
    body = b"x" * 200_000
    daemon, _, _ = http_serve(handler=upstream_answering(b"HTTP/1.1 200 OK\r\n\r\n" + body,
                                                         then_close=True))
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        local = fmt_addr(sock.getsockname())
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = Reader(SockConn(sock))
        assert reader.until(b"\r\n\r\n") == b"HTTP/1.1 200 OK\r\n\r\n"
        assert reader.exact(len(body)) == body
        assert reader.until(b"never") is None   # then EOF
    line = daemon.wait_for_access(client=local)
    assert line["termination"] == "upstream_close", line


@pytest.mark.parametrize("upstream_end", ["fin", "rst"])
def test_a_response_cut_by_its_upstream_does_not_end_with_close_notify(http_serve, pki,
                                                                        upstream_end):
    """A response that runs until the close: the upstream's FIN ends it, and the client gets
    close_notify; a reset cuts it, and the client must be able to tell — TLS ends without
    close_notify (an unexpected EOF), as nginx ends it after an upstream error."""
    def answer_then_end(conn):
        read_request(Reader(conn))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npartial-body")
        if upstream_end == "rst":
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.sock.close()
        else:
            conn.shutdown_write()
    daemon, _, _ = http_serve(handler=answer_then_end)
    ctx = client_context(pki, "client")
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF  # else such an EOF reads as a clean end
    raw = socket.create_connection(daemon.addr(), timeout=TIMEOUT)
    with ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        got, ended = b"", None
        try:
            while chunk := sock.recv(65536):
                got += chunk
            ended = "close_notify"
        except ssl.SSLError as e:  # SSLEOFError, or OpenSSL 3's UNEXPECTED_EOF_WHILE_READING
            assert isinstance(e, ssl.SSLEOFError) or "UNEXPECTED_EOF" in str(e), e
            ended = "eof without close_notify"
    assert got.endswith(b"partial-body"), got
    assert ended == ("close_notify" if upstream_end == "fin" else "eof without close_notify")


@pytest.mark.parametrize("raw,reason", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
     "bad Transfer-Encoding"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
     "multiple Content-Length"),
    (b"HTTP/1.1 200 OK\nContent-Length: 3\n\nabc", "bad line ending"),
    (b"HTTP/1.1 OK\r\n\r\n", "bad status"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc",
     "Transfer-Encoding with Content-Length"),
], ids=["cl-and-te", "two-lengths", "bare-lf", "no-status", "te-then-cl"])
def test_a_malformed_response_head_gets_502_and_none_of_it(http_serve, pki, raw, reason):
    daemon, _, _ = http_serve(handler=upstream_answering(raw, then_close=True))
    out, local = raw_exchange(daemon, pki, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), out
    assert b"abc" not in out
    line = daemon.wait_for_access(client=local)
    assert line["detail"].startswith("upstream: reading the response head: "), line
    assert reason.lower() in line["detail"].lower(), line


def test_an_upstream_that_cannot_be_connected_gets_the_client_a_502(http_serve, pki):
    """As from nginx: a 502 rather than an empty close, then a lingering close, so the request
    the client sent meanwhile does not turn the close into a reset before it reads the 502. An
    HTTP/2 client gets its request answered 502, then a GOAWAY naming it the last processed."""
    daemon, _, _ = http_serve(upstream=f"127.0.0.1:{free_port()}")
    out, local = raw_exchange(daemon, pki, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), out
    assert b"Connection: close\r\n" in out, out
    line = daemon.wait_for_access(client=local)
    assert line["result"] == "rejected" and line["reason"] == "upstream_unavailable", line

    h2 = H2Client(daemon, pki)
    try:
        sid = h2.request("/")
        h2.answered_then_goaway(sid, 502, h2_errors.ErrorCodes.NO_ERROR, b"upstream unavailable")
    finally:
        h2.close()
    daemon.wait_for_access(result="rejected", reason="upstream_unavailable")  # the h2 client
    metrics = daemon.scrape()
    assert metrics.get("mtlsd_handshake_failures_total", listener="inbound",
                       reason="upstream_unavailable") == 2
    assert metrics.get("mtlsd_upstream_connect_failures_total", listener="inbound") == 2


def test_a_malformed_chunk_ends_the_connection_after_what_was_good(http_serve, pki):
    """Once the head went out the client cannot get a 502: it gets the response up to the bad
    chunk, then the connection ends, and the log says why."""
    good = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    daemon, _, _ = http_serve(handler=upstream_answering(good + b"zz\r\nbad\r\n", then_close=True))
    out, local = raw_exchange(daemon, pki, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out == good[:-2], out  # a chunk's CRLF is parsed with the size line after it
    line = daemon.wait_for_access(client=local)
    assert "reading the response body" in line["detail"], line


def test_upstream_closing_idle_keep_alive_closes_the_client(http_serve, pki):
    """The upstream answers one request (keep-alive) and then closes while idle:
    the client sees the connection end rather than a later 502."""
    def one_then_close(conn):
        read_request(Reader(conn))
        conn.sendall(response(200, b"only one"))
        conn.shutdown_write()
    daemon, _, _ = http_serve(handler=one_then_close)
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = Reader(SockConn(sock))
        status, _, body = read_response(reader)
        assert (status, body) == (200, b"only one")
        start = time.monotonic()
        assert read_response(reader) is None
        assert time.monotonic() - start < 5


def pipeline_two_requests(daemon, pki):
    """Sends GET /one and GET /two in one write; returns (client address, the first response,
    the second or None at the close)."""
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        reader = Reader(SockConn(sock))
        sock.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        first = read_response(reader)
        return fmt_addr(sock.getsockname()), first, read_response(reader)


def send_with_fin(conn, data: bytes) -> None:
    """The upstream sends `data` and its FIN in one segment (corked)."""
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    conn.sendall(data)
    conn.shutdown_write()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)


def request_line_out(daemon, client: str, path: str) -> None:
    """Waits for mtlsd's "request" line of `path` on `client`'s connection: the exchange is
    over and the connection idle."""
    daemon.wait_for_log(lambda line: line.get("msg") == "request"
                        and line.get("client") == client and line.get("path") == path)


def answer_then_close_when(close: threading.Event, requests: int, rst: bool = False):
    """An upstream handler: answers `requests` requests on its keep-alive connection, then
    waits for `close` and closes while idle (FIN, or RST with rst=True)."""
    def handle(conn):
        reader = Reader(conn)
        for i in range(requests):
            req = read_request(reader)
            assert req is not None
            conn.sendall(response(200, f"answer {i} ({len(req.body)} bytes)".encode()))
        assert close.wait(TIMEOUT)
        if rst:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.sock.close()
        else:
            conn.shutdown_write()
    return handle


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
def test_upstream_closing_long_after_its_answers_closes_the_client(http_serve, pki, rst):
    """The close comes once the connection has sat idle (the watch's wait, not its first look)
    and after a request with a body: the client sees the connection end, never a 502, and the
    access line says the upstream closed."""
    close = threading.Event()
    daemon, _, _ = http_serve(handler=answer_then_close_when(close, 2, rst))
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        local = fmt_addr(sock.getsockname())
        reader = Reader(SockConn(sock))
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(reader)[0] == 200
        sock.sendall(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        status, _, body = read_response(reader)
        assert (status, body) == (200, b"answer 1 (5 bytes)")
        # Idle from mtlsd's side: its line for the second request is out.
        request_line_out(daemon, local, "/b")
        close.set()
        start = time.monotonic()
        assert read_response(reader) is None
        assert time.monotonic() - start < 5
    line = daemon.wait_for_access(client=local)
    assert line["termination"] == "upstream_close", line


def test_an_idle_keep_alive_connection_stays_open(http_serve, pki):
    """Between requests the watch on the upstream must not end a connection whose upstream
    stays open: a request after each exchange has finished goes out on the same connections."""
    daemon, up, rec = http_serve()
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        local = fmt_addr(sock.getsockname())
        reader = Reader(SockConn(sock))
        for path in ("/1", "/2", "/3"):
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert read_response(reader)[0] == 200
            request_line_out(daemon, local, path)   # the exchange is over: idle
    assert [r.target for r in rec.requests] == ["/1", "/2", "/3"]
    assert {r.conn_id for r in rec.requests} == {1}
    assert up.connection_count() == 1


INJECTED = response(200, b"LEAKED", extra=("X-Injected: yes",))


@pytest.mark.parametrize("first", ["GET", "HEAD"])
def test_bytes_after_a_response_never_answer_the_next_request(http_serve, pki, first):
    """An upstream that sends more than its response — a second response nobody asked for, or
    a body with its answer to HEAD (a common bug) — in the same write: those bytes must not be
    read as the answer to the client's next request (another user's, behind a pooling
    gateway). The connection ends after the real response and the access line says why."""
    def app(req):
        if req.target == "/one":
            return response(200, b"reply-1") + INJECTED   # HEAD: reply-1's body is extra too
        return response(200, b"reply-2")
    daemon, _, rec = http_serve(app)
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        local = fmt_addr(sock.getsockname())
        reader = Reader(SockConn(sock))
        sock.sendall(f"{first} /one HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, hdrs, body = read_response(reader, head_request=first == "HEAD")
        assert status == 200 and "x-injected" not in hdrs
        assert body == (b"reply-1" if first == "GET" else b"")
        try:
            sock.sendall(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        except OSError:
            pass  # closed already
        assert read_response(reader) is None
    assert [r.target for r in rec.requests] == ["/one"]
    line = daemon.wait_for_access(client=local)
    assert line["termination"] == "upstream_close", line
    assert "after the end of its response" in line["detail"], line


def test_a_pipelined_request_never_goes_to_an_upstream_that_closed(http_serve, pki):
    """The client pipelines two requests; the upstream answers the first and closes (data and
    FIN in one segment). The second request must not go up to the closed connection (it would
    come back as a 502): the client sees the connection end after the first answer, and may
    retry."""
    def answer_and_close(conn):
        read_request(Reader(conn))
        # The answer and the FIN together, so the close is there to be seen when mtlsd turns to
        # the second request.
        send_with_fin(conn, response(200, b"reply-1"))
    daemon, up, _ = http_serve(handler=answer_and_close)
    local, first, second = pipeline_two_requests(daemon, pki)
    assert first[::2] == (200, b"reply-1")
    assert second is None
    assert all(b"/two" not in bytes(c.received) for c in up.connections)
    line = daemon.wait_for_access(client=local)
    assert line["termination"] == "upstream_close", line
    assert "pipelined request" in line["detail"], line


def test_a_client_closing_with_its_last_request_gets_the_answer_then_the_close(http_serve, pki):
    """A keep-alive client sends its last request and its FIN together (no close_notify). mtlsd
    reads the request without finding the socket empty, and no edge is raised for a FIN already
    there: it must still see the FIN once the answer is out, and close at once rather than at
    the idle timeout (5 minutes)."""
    daemon, _, rec = http_serve(lambda req: response(200, req.target.encode()))
    with open_tls(daemon.addr(), client_context(pki, "client"), timeout=5.0) as sock:
        local = fmt_addr(sock.getsockname())
        reader = Reader(SockConn(sock))
        sock.sendall(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(reader)[::2] == (200, b"/1")
        # Corked: the request's record and the FIN leave in one segment. socket.socket's
        # shutdown, not SSLSocket's: that one would drop the TLS state the answer needs.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        sock.sendall(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
        socket.socket.shutdown(sock, socket.SHUT_WR)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        assert read_response(reader)[::2] == (200, b"/2")
        assert read_response(reader) is None  # the close, within the socket's 5 s
    line = daemon.wait_for_access(client=local)
    assert line["termination"] == "client_close", line
    assert [r.target for r in rec.requests] == ["/1", "/2"]


@pytest.mark.parametrize("delay_us", [0, 200, 400, 600, 800])
@pytest.mark.parametrize("size", [20_000, 60_000])
def test_a_pipelined_request_never_goes_up_behind_a_fin_not_yet_reported(http_serve, pki, size,
                                                                          delay_us):
    """As test_a_pipelined_request_never_goes_to_an_upstream_that_closed, but the response's last
    bytes and the FIN come a moment after the rest: the read that takes them can come before
    epoll reports the FIN, so the socket's read mark says nothing of it yet. The pipelined request must still see the close (a peek), where a wait
    would be woken by the report (review of 04ea38c: 502s in 7 of 18 runs). Timing decides
    whether a run meets that window; the delays spread over it."""
    raw = response(200, b"x" * size)
    def answer_then_tail_and_fin(conn):
        read_request(Reader(conn))
        conn.sendall(raw[:-10])
        until = time.perf_counter() + delay_us / 1e6
        while time.perf_counter() < until:  # a spin: sleep's granularity is too coarse here
            pass
        send_with_fin(conn, raw[-10:])
        conn.recv_until_eof()
    daemon, up, _ = http_serve(handler=answer_then_tail_and_fin)
    local, first, second = pipeline_two_requests(daemon, pki)
    assert (first[0], len(first[2])) == (200, size)
    assert second is None  # the close, not a 502 for /two
    line = daemon.wait_for_access(client=local)
    assert line["termination"] == "upstream_close", line
    assert "pipelined request" in line["detail"], line


def test_an_empty_line_after_a_response_is_forgiven(http_serve, pki):
    """A CRLF after a response's end is a common slip and harmless: the connection goes on,
    where any other byte there ends it."""
    daemon, up, rec = http_serve(lambda req: response(200, req.target.encode()) + b"\r\n")
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        reader = Reader(SockConn(sock))
        for path in ("/1", "/2"):
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status, _, body = read_response(reader)
            assert (status, body) == (200, path.encode())
    assert [r.target for r in rec.requests] == ["/1", "/2"]
    assert up.connection_count() == 1
