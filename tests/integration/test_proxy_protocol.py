"""Server mode with `proxy_protocol: v2`: the upstream learns who connected.

Two receivers: a strict Python parser of the PROXY v2 header (every TLV of
interface.md decoded and checked against the client certificate), and a real
nginx (`listen ... proxy_protocol`) that must accept the header and log the
client's address from it."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from helpers import der_of
from mtlsd_harness import client_context, curl, free_port, tls_exchange
from proxy_v2 import (MTLSD_CERT_DER, MTLSD_CERT_SHA256, MTLSD_DNS_SANS, MTLSD_SPIFFE_ID,
                      MTLSD_URI_SANS, PP2_CLIENT_CERT_CONN, PP2_CLIENT_CERT_SESS, PP2_CLIENT_SSL,
                      PP2_SUBTYPE_SSL_CIPHER, PP2_SUBTYPE_SSL_CN, PP2_SUBTYPE_SSL_KEY_ALG,
                      PP2_SUBTYPE_SSL_SIG_ALG, PP2_SUBTYPE_SSL_VERSION, PP2_TYPE_ALPN,
                      PP2_TYPE_AUTHORITY, PP2_TYPE_SSL, header_then_echo)

CLIENT_ID = "spiffe://example.org/ns/default/sa/client"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


recording_header = header_then_echo


def test_every_tlv_matches_the_client_certificate(serve, pki):
    headers = []
    daemon, up = serve(recording_header(headers), proxy_protocol="v2",
                       tls={"alpn": ["http/1.1"]})
    ctx = client_context(pki, "client")
    ctx.set_alpn_protocols(["http/1.1"])
    ex = tls_exchange(daemon.addr(), ctx, b"payload after the header\n",
                      expect=len(b"payload after the header\n"))
    assert ex.error is None, ex.error
    assert ex.data == b"payload after the header\n"
    assert bytes(up.connections[0].received) == b"payload after the header\n"

    (hdr,) = headers
    assert hdr.command == 1 and hdr.family == 0x1 and hdr.transport == 0x1  # PROXY, TCP/IPv4
    host, port = ex.local.rsplit(":", 1)
    assert hdr.source == (host, int(port)), "source must be the TLS client's address"
    assert hdr.destination == daemon.addr()

    # Every TLV is one we expect, each exactly once.
    kinds = [k for k, _ in hdr.tlvs]
    assert sorted(kinds) == sorted({PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_SSL,
                                    MTLSD_SPIFFE_ID, MTLSD_URI_SANS, MTLSD_DNS_SANS,
                                    MTLSD_CERT_DER, MTLSD_CERT_SHA256}), kinds
    assert hdr.tlv(PP2_TYPE_ALPN) == b"http/1.1"
    assert hdr.tlv(PP2_TYPE_AUTHORITY) == b"localhost"          # the SNI the client sent

    ssl_tlv = hdr.ssl
    # As the specification has it: a certificate in the session (SESS), sent on this
    # connection (CONN).
    assert ssl_tlv.client == PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS
    assert ssl_tlv.verify == 0, "0 = the client certificate was verified"
    assert ssl_tlv.sub[PP2_SUBTYPE_SSL_VERSION] == ex.version.encode()
    assert ssl_tlv.sub[PP2_SUBTYPE_SSL_CIPHER] == ex.cipher.encode()
    assert ssl_tlv.sub[PP2_SUBTYPE_SSL_CN] == b"client"
    assert ssl_tlv.sub[PP2_SUBTYPE_SSL_SIG_ALG] == b"ecdsa-with-SHA256"
    assert ssl_tlv.sub[PP2_SUBTYPE_SSL_KEY_ALG] == b"EC256"

    der = der_of(pki, "client.crt")
    assert hdr.tlv(MTLSD_SPIFFE_ID) == CLIENT_ID.encode()
    assert hdr.tlv(MTLSD_URI_SANS) == CLIENT_ID.encode()
    assert hdr.tlv(MTLSD_DNS_SANS) == b"client.example.org"
    assert hdr.tlv(MTLSD_CERT_DER) == der, "DER TLV must be the client's leaf certificate"
    assert hdr.tlv(MTLSD_CERT_SHA256) == hashlib.sha256(der).hexdigest().encode()


def test_tlvs_for_a_client_behind_an_intermediate(serve, pki):
    """The DER TLV is the leaf only, never the chain; the lists are comma-joined."""
    headers = []
    daemon, _ = serve(recording_header(headers), proxy_protocol="v2")
    ctx = client_context(pki, "client-int", certfile="client-int-chain.crt")
    ex = tls_exchange(daemon.addr(), ctx, b"x", expect=1)
    assert ex.error is None and ex.data == b"x"
    (hdr,) = headers
    assert hdr.tlv(MTLSD_CERT_DER) == der_of(pki, "client-int.crt")
    assert hdr.tlv(MTLSD_SPIFFE_ID) == b"spiffe://example.org/ns/default/sa/client-int"
    assert hdr.tlv(MTLSD_DNS_SANS) is None          # that certificate has no DNS SAN
    assert hdr.tlv(PP2_TYPE_ALPN) is None           # nothing negotiated, nothing sent
    assert hdr.ssl.sub[PP2_SUBTYPE_SSL_CN] == b"client-int"


@pytest.mark.parametrize("revocation", [
    # The issuing CA trusted alone, with its CRL: the anchor has no CRL of its own, an error
    # the verify callback accepts on purpose (the anchor is trusted as configured).
    {"crl_files": ["int-crl.pem"]},
    # A CRL for another issuer only, on_unavailable: allow: admitted without a CRL for it.
    {"crl_files": ["crl.pem"], "on_unavailable": "allow"},
], ids=["issuing_ca_alone", "crl_missing_allowed"])
def test_verify_is_0_for_a_client_admitted_despite_an_error_openssl_recorded(serve, pki,
                                                                             revocation):
    """`verify` says whether mtlsd verified the client, not what OpenSSL last recorded: the
    verify callback accepts some errors on purpose, and OpenSSL keeps them as the result."""
    headers = []
    rev = {k: ([pki.path(f) for f in v] if k == "crl_files" else v) for k, v in revocation.items()}
    daemon, _ = serve(recording_header(headers), proxy_protocol="v2",
                      client_auth={"ca": [pki.path("int.crt")]}, revocation=rev)
    ctx = client_context(pki, "client-int", certfile="client-int-chain.crt")
    ex = tls_exchange(daemon.addr(), ctx, b"x", expect=1)
    assert ex.error is None and ex.data == b"x"
    (hdr,) = headers
    assert hdr.ssl.client == PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS
    assert hdr.ssl.verify == 0, "an admitted client is a verified one"


def test_resumed_session_still_carries_the_identity(serve, pki):
    headers = []
    daemon, _ = serve(recording_header(headers), proxy_protocol="v2")
    ctx = client_context(pki, "client")
    first = ctx.wrap_socket(socket.create_connection(daemon.addr()), server_hostname="localhost")
    first.sendall(b"1")
    assert first.recv(1) == b"1"   # the ticket arrives before the echo
    session = first.session
    first.close()
    raw = socket.create_connection(daemon.addr())
    second = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    second.sendall(b"2")
    assert second.recv(1) == b"2"
    assert second.session_reused
    second.close()
    assert len(headers) == 2
    resumed = headers[1]
    # The session's certificate, not sent again on this connection: SESS without CONN.
    assert resumed.ssl.client == PP2_CLIENT_SSL | PP2_CLIENT_CERT_SESS
    assert resumed.tlv(MTLSD_SPIFFE_ID) == CLIENT_ID.encode()
    assert resumed.tlv(MTLSD_CERT_DER) == der_of(pki, "client.crt")


# --- a real nginx ---------------------------------------------------------------

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    log_format pp '$proxy_protocol_addr:$proxy_protocol_port via $remote_addr '
                  '"$request" $status';
    access_log {d}/access.log pp;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} proxy_protocol;
        location / {{ return 200 "hello from nginx, $proxy_protocol_addr\\n"; }}
    }}
}}
"""


@pytest.fixture
def nginx(tmp_path):
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian: nginx-light)")
    d = tmp_path / "nginx"
    d.mkdir()
    port = free_port()  # held for this process: nothing else takes it before nginx binds
    (d / "nginx.conf").write_text(NGINX_CONF.format(d=d, port=port))
    proc = subprocess.Popen([NGINX, "-p", str(d), "-c", str(d / "nginx.conf"), "-e",
                             str(d / "error.log")], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"nginx did not start: {proc.stderr.read().decode()}"
                                     f"{(d / 'error.log').read_text() if (d / 'error.log').exists() else ''}")
            time.sleep(0.05)
    # The readiness probe above was a connection without a PROXY header: nginx logs it as a
    # broken header; tests read only the lines that follow.
    yield {"address": f"127.0.0.1:{port}", "dir": d}
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


def nginx_log_lines(d: Path, needle: str, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        log = d / "access.log"
        lines = log.read_text().splitlines() if log.exists() else []
        found = [l for l in lines if needle in l]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_nginx_accepts_the_header_and_logs_the_client(serve, pki, nginx):
    daemon, _ = serve(upstream=nginx["address"], proxy_protocol="v2")
    proc = curl(daemon.addr(), pki, "client", path="/whoami",
                extra=("-w", "\\n%{local_ip}:%{local_port}"))
    assert proc.returncode == 0, proc.stderr.decode()
    body, _, client_addr = proc.stdout.decode().rpartition("\n")
    assert body == "hello from nginx, 127.0.0.1\n"
    # nginx's access log shows the TLS client's own address and port (from the PROXY
    # header), not mtlsd's upstream-side socket.
    lines = nginx_log_lines(nginx["dir"], '"GET /whoami HTTP/1.1"')
    assert len(lines) == 1, (nginx["dir"] / "access.log").read_text()
    assert lines[0].startswith(f"{client_addr} via 127.0.0.1 ") and lines[0].endswith(" 200")
    line = daemon.wait_for_access(client=client_addr)
    assert line["result"] == "accepted" and line["identity"] == CLIENT_ID


def test_nginx_behind_http_mode_with_proxy_protocol(serve, pki, nginx):
    """The header and the http: block together: nginx parses the header once,
    then two keep-alive requests on the same connection."""
    daemon, _ = serve(upstream=nginx["address"], proxy_protocol="v2", http={})
    _, port = daemon.addr()
    proc = curl(daemon.addr(), pki, "client", path="/two",
                extra=("-w", "%{http_code} %{num_connects}\\n", "-o", "/dev/null",
                       "-o", "/dev/null", f"https://localhost:{port}/one"))
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"200 1\n200 0\n", proc.stdout   # the second reused the connection
    for path in ("/one", "/two"):
        lines = nginx_log_lines(nginx["dir"], f'"GET {path} HTTP/1.1"')
        assert len(lines) == 1 and lines[0].endswith(" 200"), lines
    daemon.wait_for_access()  # written when the session ends, which may be after curl returns
    assert len(daemon.access_logs()) == 1
