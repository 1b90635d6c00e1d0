"""Client mode: a local plaintext app -> mtlsd (mode: client) -> mtlsd (mode:
server) -> upstream. The client-mode side verifies the remote (trust, name,
allow list), presents our certificate, resumes sessions, and refuses remotes
with the contract's reasons."""

from __future__ import annotations

import hashlib
import random
import socket
import ssl
import subprocess
import threading
import time

import pytest

from mtlsd_harness import (Upstream, daemon_config, deep_merge, duplex, echo, free_port,
                           server_listener, write_config)
from proxy_v2 import MTLSD_SPIFFE_ID, PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, header_then_echo

CLIENT_ID = "spiffe://example.org/ns/default/sa/client"
SERVER_SUBJECT = "CN=localhost,O=mtlsd Test"
TIMEOUT = 10.0


def client_listener(pki, upstream: str, name: str = "outbound", **overrides) -> dict:
    """A client-mode listener on 127.0.0.1:0 that presents client.crt and trusts ca.crt."""
    base = {
        "name": name,
        "mode": "client",
        "listen": "127.0.0.1:0",
        "upstream": upstream,
        "tls": {"cert": pki.path("client.crt"), "key": pki.path("client.key")},
        "server_auth": {"ca": [pki.path("ca.crt")], "server_name": "localhost"},
    }
    return deep_merge(base, overrides)


@pytest.fixture
def chain(start_mtlsd, make_upstream, pki):
    """chain(handler=echo, server={...}, client={...}) -> (outbound, inbound, upstream).

    `server`/`client` are overrides for the server-mode and client-mode listeners.
    """
    def build(handler=echo, *, server: dict | None = None, client: dict | None = None,
              upstream=None):
        up = upstream if upstream is not None else make_upstream(handler)
        inbound = start_mtlsd(daemon_config([server_listener(pki, up.address, **(server or {}))]))
        host, port = inbound.addr("inbound")
        outbound = start_mtlsd(daemon_config(
            [client_listener(pki, f"{host}:{port}", **(client or {}))]))
        return outbound, inbound, up
    return build


def plain_exchange(addr, payload: bytes, expect: int | None = None,
                   timeout: float = TIMEOUT) -> tuple[bytes, str, BaseException | None]:
    """Plaintext client: send, half-close, read until EOF (or `expect` bytes)."""
    data, error = b"", None
    sock = socket.create_connection(addr, timeout=timeout)
    local = "%s:%d" % sock.getsockname()[:2]
    try:
        sock.sendall(payload)
        if expect is None:
            sock.shutdown(socket.SHUT_WR)
        while expect is None or len(data) < expect:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        error = exc
    finally:
        sock.close()
    return data, local, error


def wait_access_lines(daemon, n: int, timeout: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while len(daemon.access_logs()) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return daemon.access_logs()


def assert_remote_refused(outbound, up: Upstream, reason: str) -> dict:
    data, local, error = plain_exchange(outbound.addr("outbound"), b"secret request\n")
    assert data == b"", f"refused connection returned data: {data[:80]!r}"
    assert not isinstance(error, socket.timeout), "refusal was not prompt"
    line = outbound.wait_for_access(client=local)
    assert line["listener"] == "outbound", line
    assert line["result"] == "rejected", line
    assert line["reason"] == reason, line
    up.assert_untouched()
    return line


# --- the happy path -------------------------------------------------------------

def test_chain_is_byte_exact_both_ways(chain):
    size = 4 * 1024 * 1024 + 17
    rng = random.Random(6)
    to_upstream, to_app = rng.randbytes(size), rng.randbytes(size)
    outbound, inbound, up = chain(duplex(to_app, expect=size))

    sock = socket.create_connection(outbound.addr("outbound"), timeout=60)
    local = "%s:%d" % sock.getsockname()[:2]
    sender = threading.Thread(target=sock.sendall, args=(to_upstream,), daemon=True)
    sender.start()
    received = bytearray()
    while len(received) < size:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        received += chunk
    sender.join(60)
    sock.close()

    assert len(received) == size
    assert hashlib.sha256(received).digest() == hashlib.sha256(to_app).digest()
    conn = up.wait_for_connections(1)[0]
    assert conn.done.wait(30)
    assert hashlib.sha256(conn.received).digest() == hashlib.sha256(to_upstream).digest()

    out_line = outbound.wait_for_access(client=local)
    assert out_line["result"] == "accepted", out_line
    assert out_line["identity"] == SERVER_SUBJECT      # the remote server we verified
    assert out_line["rx_bytes"] == size and out_line["tx_bytes"] == size
    in_line = inbound.wait_for_access(result="accepted")
    assert in_line["identity"] == CLIENT_ID            # our client certificate, seen remotely
    assert in_line["rx_bytes"] == size and in_line["tx_bytes"] == size


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_second_connection_resumes(chain, version):
    outbound, inbound, _ = chain(client={"tls": {"max_version": version}})
    lines = []
    for i in range(3):
        payload = b"round %d\n" % i
        data, local, error = plain_exchange(outbound.addr("outbound"), payload)
        assert error is None and data == payload
        lines.append(outbound.wait_for_access(client=local))
    assert [l["tls_version"] for l in lines] == [f"TLSv{version}"] * 3
    assert lines[0]["resumed"] is False
    assert lines[1]["resumed"] is True, lines[1]
    assert lines[2]["resumed"] is True, lines[2]
    # A resumed session still names the remote (and is counted on the server side too).
    assert lines[1]["identity"] == SERVER_SUBJECT
    server_side = wait_access_lines(inbound, 3)
    assert len(server_side) == 3 and [l["resumed"] for l in server_side].count(True) == 2
    assert all(l["identity"] == CLIENT_ID for l in server_side)


def test_no_resumption_when_disabled(chain):
    outbound, _, _ = chain(client={"tls": {"session_resumption": False}})
    for _ in range(2):
        data, local, _ = plain_exchange(outbound.addr("outbound"), b"x\n")
        assert data == b"x\n"
        assert outbound.wait_for_access(client=local)["resumed"] is False


def test_allow_list_hit(chain):
    """An allow list that matches the remote's DNS SAN admits it."""
    outbound, _, _ = chain(client={"server_auth": {"allow": {"dns_sans": ["localhost"]}}})
    data, local, _ = plain_exchange(outbound.addr("outbound"), b"hello\n")
    assert data == b"hello\n"
    assert outbound.wait_for_access(client=local)["result"] == "accepted"


def test_upstream_by_hostname_default_server_name(start_mtlsd, make_upstream, pki):
    """server_name defaults to the host of `upstream`: "localhost" here, which
    the server certificate carries as a DNS SAN."""
    up = make_upstream(echo)
    inbound = start_mtlsd(daemon_config([server_listener(pki, up.address)]))
    _, port = inbound.addr("inbound")
    listener = client_listener(pki, f"localhost:{port}")
    listener["server_auth"].pop("server_name")
    outbound = start_mtlsd(daemon_config([listener]))
    data, local, _ = plain_exchange(outbound.addr("outbound"), b"by name\n")
    assert data == b"by name\n"
    assert outbound.wait_for_access(client=local)["identity"] == SERVER_SUBJECT


def test_alpn_and_sni_reach_the_remote(chain, make_upstream):
    """ALPN comes from the client-mode config and SNI from server_name: the
    server-mode side reports both in its PROXY v2 header."""
    headers = []
    outbound, _, _ = chain(header_then_echo(headers),
                           server={"proxy_protocol": "v2", "tls": {"alpn": ["http/1.1"]}},
                           client={"tls": {"alpn": ["h2", "http/1.1"]}})
    data, _, _ = plain_exchange(outbound.addr("outbound"), b"alpn\n")
    assert data == b"alpn\n"
    (hdr,) = headers
    assert hdr.tlv(PP2_TYPE_ALPN) == b"http/1.1"
    assert hdr.tlv(PP2_TYPE_AUTHORITY) == b"localhost"
    assert hdr.tlv(MTLSD_SPIFFE_ID) == CLIENT_ID.encode()


# --- refusals -------------------------------------------------------------------

def test_wrong_server_name_is_hostname_mismatch(chain):
    outbound, inbound, up = chain(client={"server_auth": {"server_name": "api.example.org"}})
    line = assert_remote_refused(outbound, up, "hostname_mismatch")
    # The name expected and the names the remote's certificate has (review: the detail was
    # "hostname mismatch (depth 0: SUBJECT)", and a cert-manager certificate has no subject).
    assert line["detail"] == ("hostname mismatch: expected api.example.org; certificate has "
                              "DNS:localhost, IP:127.0.0.1, IP:::1"), line
    assert not inbound.access_logs(result="accepted")


def test_wrong_ip_is_hostname_mismatch(chain):
    outbound, _, up = chain(client={"server_auth": {"server_name": "10.9.8.7"}})
    line = assert_remote_refused(outbound, up, "hostname_mismatch")
    assert line["detail"] == ("IP address mismatch: expected 10.9.8.7; certificate has "
                              "DNS:localhost, IP:127.0.0.1, IP:::1"), line


def test_a_spiffe_certificate_without_the_name_says_what_it_has(pki, tmp_path, mtlsd_bin):
    """A certificate as cert-manager issues it for a SPIFFE ID (empty subject, critical URI SAN,
    no dnsNames) judged by a client that checks a host name: the detail names both (review, on
    the kit's orders example: "hostname mismatch (depth 0: )")."""
    spiffe_id = "spiffe://cluster.local/ns/shop/sa/orders"
    ext = tmp_path / "san.ext"
    ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=serverAuth,clientAuth\n"
                   f"subjectAltName=critical,URI:{spiffe_id}\n")
    key, csr, crt = (tmp_path / n for n in ("orders.key", "orders.csr", "orders.crt"))
    for cmd in (["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-subj", "/",
                 "-out", str(csr)],
                ["openssl", "x509", "-req", "-in", str(csr), "-CA", pki.path("ca.crt"),
                 "-CAkey", pki.path("ca.key"), "-set_serial", "4242", "-days", "2",
                 "-extfile", str(ext), "-out", str(crt)]):
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    config = tmp_path / "checkout.yaml"
    write_config(config, daemon_config([client_listener(
        pki, "orders.shop.svc.cluster.local:8443", name="orders",
        server_auth={"server_name": "orders.shop.svc.cluster.local"})]))
    proc = subprocess.run([mtlsd_bin, "verify", "--config", str(config), "--listener", "orders",
                           "--cert", str(crt)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0] == (
        "rejected: hostname_mismatch: hostname mismatch: expected orders.shop.svc.cluster.local; "
        f"certificate has URI:{spiffe_id}"), proc.stdout + proc.stderr


def test_remote_from_another_ca_is_unknown_ca(chain, pki):
    outbound, _, up = chain(client={"server_auth": {"ca": [pki.path("other-ca.crt")]}})
    assert_remote_refused(outbound, up, "unknown_ca")


def test_allow_list_miss_is_not_authorized(chain):
    outbound, _, up = chain(client={"server_auth": {"allow": {
        "spiffe_ids": ["spiffe://example.org/ns/payments/sa/api"]}}})
    line = assert_remote_refused(outbound, up, "not_authorized")
    assert line["identity"] == "", line


def test_expired_remote_is_expired(start_mtlsd, pki, tmp_path):
    """mtlsd will not serve an expired certificate itself, so the remote here is
    a Python TLS server with a server certificate that expired last year."""
    own = pki.copy_to(tmp_path / "pki")
    key, csr, crt = (str(tmp_path / n) for n in ("old.key", "old.csr", "old.crt"))
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", key], check=True, capture_output=True)
    own.openssl("req", "-new", "-key", key, "-subj", "/O=mtlsd Test/CN=localhost", "-out", csr)
    own.openssl("ca", "-batch", "-notext", "-name", "root_ca", "-extensions", "ext_server",
                "-startdate", "20200101000000Z", "-enddate", "20210101000000Z",
                "-in", csr, "-out", crt)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.settimeout(TIMEOUT)
    got = []

    def serve_one():
        try:
            raw, _ = lsock.accept()
            with ctx.wrap_socket(raw, server_side=True) as s:
                got.append(s.recv(100))
        except (OSError, ssl.SSLError):
            pass
    t = threading.Thread(target=serve_one, daemon=True)
    t.start()
    outbound = start_mtlsd(daemon_config([client_listener(
        own, "127.0.0.1:%d" % lsock.getsockname()[1])]))
    data, local, _ = plain_exchange(outbound.addr("outbound"), b"secret\n")
    t.join(TIMEOUT)
    lsock.close()
    assert data == b"" and not any(got), got
    line = outbound.wait_for_access(client=local)
    assert line["reason"] == "expired" and line["result"] == "rejected", line


def test_silent_remote_is_handshake_timeout(start_mtlsd, make_upstream, pki):
    """A remote that accepts TCP but never answers the ClientHello."""
    silent = make_upstream(lambda conn: conn.recv_until_eof())
    outbound = start_mtlsd(daemon_config([client_listener(
        pki, silent.address, timeouts={"handshake": "500ms"})]))
    data, local, _ = plain_exchange(outbound.addr("outbound"), b"anyone?\n")
    assert data == b""
    line = outbound.wait_for_access(client=local)
    assert line["reason"] == "handshake_timeout" and line["result"] == "rejected", line


def test_unreachable_remote_is_upstream_unavailable(start_mtlsd, pki):
    outbound = start_mtlsd(daemon_config([client_listener(
        pki, f"127.0.0.1:{free_port()}", timeouts={"connect": "2s"})]))
    data, local, _ = plain_exchange(outbound.addr("outbound"), b"hello?\n")
    assert data == b""
    line = outbound.wait_for_access(client=local)
    assert line["reason"] == "upstream_unavailable", line


def test_remote_refusing_our_certificate(chain):
    """The remote's own allow list refuses us: the local app gets nothing and
    the remote logs not_authorized."""
    outbound, inbound, up = chain(server={"client_auth": {"allow": {
        "spiffe_ids": ["spiffe://example.org/ns/other/*"]}}})
    data, local, _ = plain_exchange(outbound.addr("outbound"), b"let me in\n")
    assert data == b""
    line = inbound.wait_for_access(result="rejected")
    assert line["reason"] == "not_authorized"
    up.assert_untouched()
    # Our side completed its handshake (TLS 1.3: the remote's verdict comes after it), then
    # read the remote's alert instead of data.
    line = outbound.wait_for_access(client=local)
    assert line["tx_bytes"] == 0, line


def test_insecure_skip_verify_is_explicit_and_loud(chain, pki):
    """Verification off only by the explicit key, with a warning at start: a
    remote from a CA we do not trust is then accepted."""
    outbound, _, _ = chain(client={"server_auth": {"ca": [pki.path("other-ca.crt")],
                                                   "insecure_skip_verify": True}})
    warning = outbound.wait_for_log(lambda l: "insecure_skip_verify" in l.get("msg", ""))
    assert warning["level"] == "warn" and warning["listener"] == "outbound"
    data, local, _ = plain_exchange(outbound.addr("outbound"), b"trusting\n")
    assert data == b"trusting\n"
    assert outbound.wait_for_access(client=local)["result"] == "accepted"
