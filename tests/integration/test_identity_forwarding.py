"""What the upstream learns of the client beside its bytes: the PROXY v2 header mtlsd sends
(`proxy_protocol: v2`) on every connection, and the Chain= key of X-Forwarded-Client-Cert. Each
case below was a defect a review found.

1. An HTTP/2 client in front of an HTTP/1.1 upstream is served over a pool of upstream
   connections; EVERY one of them must begin with the PROXY v2 header, not only the first
   (an upstream that requires the header - nginx `listen ... proxy_protocol` - would refuse the
   others, or worse, take their request line's bytes as a header).
2. The `type: http` upstream check of a listener with `proxy_protocol: v2` must speak to that
   upstream as mtlsd's relayed connections do, header first: a v2 LOCAL header (no address, the
   connection is mtlsd's own), else such an upstream answers 400 and the check is never up.
3. XFCC `Chain=` must carry the chain mtlsd verified, never whatever extra certificates the
   client chose to send after its leaf (an unrelated self-signed "Forged Intermediate CA").
4. The SSL TLV's client bits (haproxy proxy-protocol.txt 2.2.5): PP2_CLIENT_CERT_CONN means a
   certificate was presented on THIS connection (a full handshake), PP2_CLIENT_CERT_SESS that one
   was presented at least once in the TLS session it belongs to (a full handshake, or a
   resumption of a session that had one).
5. The comma-joined SAN list TLVs (0xE1 URI SANs, 0xE2 DNS SANs): a ',' inside one SAN must not
   split into two elements for the receiver; it is sent percent-encoded (%2C).

The PROXY header is decoded by proxy_v2.py (a strict parser written from the specification),
HTTP/1.1 by http_upstream.py, and HTTP/2 is spoken by hyper-h2 (h2_client.py)."""

from __future__ import annotations

import datetime
import socket
import ssl
import subprocess
import threading
import urllib.parse
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from h2_client import H2Client
from helpers import der_of, reload_with
from http_upstream import Reader, read_request, response
from mtlsd_harness import client_context, daemon_config, open_tls, tls_exchange
from pki import write_cert_and_key
from proxy_v2 import (HEADER_LEN, MTLSD_DNS_SANS, MTLSD_URI_SANS, PP2_CLIENT_CERT_CONN,
                      PP2_CLIENT_CERT_SESS, PP2_CLIENT_SSL, SIGNATURE, header_then_echo,
                      read_header)
from test_http_mode import SockConn, http_serve, read_response  # noqa: F401 (fixture)
from test_upstream_check import checked, down_line, up_line, wait_ready_state

TIMEOUT = 10.0          # bound for things that certainly happen
FORGED_CN = "Forged Intermediate CA"


def client_addr(sock) -> tuple[str, int]:
    """(host, port) of our end, as the PROXY header's source address parses."""
    host, port = sock.getsockname()[:2]
    return host, port


# --- 1. every pooled upstream connection of an HTTP/2 client gets the header -------------------

class PooledH1Upstream:
    """An HTTP/1.1 upstream for an h2 client's pool of upstream connections. Each connection:
    the PROXY v2 header if it starts with the signature (recorded; None when it does not), then
    requests answered 200 in a loop. The first answer on any connection waits until `want`
    connections are open (or `hold` seconds passed), so the requests of concurrent streams
    cannot all be served one after another on a single pooled connection."""

    def __init__(self, want: int = 3, hold: float = 2.0):
        self.want, self.hold = want, hold
        self.cv = threading.Condition()
        self.opened = 0
        self.headers: list = []          # per connection, in accept order: header or None
        self.first_bytes: list[bytes] = []
        self.targets: list[str] = []

    def handler(self, conn) -> None:
        with self.cv:
            self.opened += 1
            self.cv.notify_all()
        while len(conn.received) < HEADER_LEN:
            if not conn.recv():
                return
        with self.cv:
            self.first_bytes.append(bytes(conn.received[:40]))
        if bytes(conn.received[:len(SIGNATURE)]) == SIGNATURE:
            hdr = read_header(conn)
            del conn.received[:hdr.length]
        else:
            hdr = None          # recorded, and the requests still answered: the test reports it
        with self.cv:
            self.headers.append(hdr)
        reader = Reader(conn)
        reader.buf += conn.received       # what came with the header (Reader reads on from conn)
        held = False
        while (req := read_request(reader)) is not None:
            if not held:
                with self.cv:
                    self.cv.wait_for(lambda: self.opened >= self.want, self.hold)
                held = True
            with self.cv:
                self.targets.append(req.target)
            conn.sendall(response(200, f"reply to {req.target}".encode()))
        conn.shutdown_write()


def test_every_pooled_upstream_connection_of_an_h2_client_starts_with_the_header(
        serve, pki):
    """Three concurrent streams on one HTTP/2 connection, an HTTP/1.1 upstream: mtlsd opens
    several upstream connections for them (one exchange each), and each must begin with a
    well-formed PROXY v2 header naming the client. Before the fix only the first did."""
    up = PooledH1Upstream()
    daemon, _ = serve(up.handler, proxy_protocol="v2",
                      tls={"alpn": ["h2", "http/1.1"]},
                      http={"upstream_protocol": "http/1.1"})
    client = H2Client(daemon, pki)
    try:
        source = client_addr(client.sock)
        sids = [client.request(p) for p in ("/a", "/b", "/c")]
        answers = [client.response(sid, TIMEOUT) for sid in sids]
    finally:
        client.close()
    assert answers == [(200, b"reply to /a"), (200, b"reply to /b"), (200, b"reply to /c")]
    with up.cv:
        headers, first = list(up.headers), list(up.first_bytes)
    # Several connections, or this test proved nothing about the pool.
    assert len(headers) > 1, f"only {len(headers)} upstream connection(s): the pool was not used"
    missing = [f for h, f in zip(headers, first) if h is None]
    assert not missing, (f"{len(missing)} of {len(headers)} upstream connections began without "
                         f"the PROXY v2 signature: {missing}")
    for hdr in headers:
        assert hdr.command == 1 and hdr.family == 0x1 and hdr.transport == 0x1, hdr  # PROXY TCP4
        assert hdr.source == source, "the source must be the HTTP/2 client's address"
        assert hdr.destination == daemon.addr()


# --- 2. the http upstream check sends a LOCAL header first ------------------------------------

class StrictProxyUpstream:
    """As nginx `listen ... proxy_protocol`: a connection that does not begin with the v2
    signature gets `400 Bad Request`; one that does has its header parsed (recorded) and its
    request answered 200."""

    def __init__(self):
        self.lock = threading.Lock()
        self.headers: list = []          # parsed headers, one per connection that sent one
        self.without_header: list[bytes] = []
        self.requests: list[str] = []

    def handler(self, conn) -> None:
        while len(conn.received) < HEADER_LEN:
            if not conn.recv():
                break
        if bytes(conn.received[:len(SIGNATURE)]) != SIGNATURE:
            with self.lock:
                self.without_header.append(bytes(conn.received[:40]))
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")
            conn.shutdown_write()
            return
        hdr = read_header(conn)
        del conn.received[:hdr.length]
        reader = Reader(conn)
        reader.buf += conn.received
        req = read_request(reader)
        with self.lock:
            self.headers.append(hdr)
            self.requests.append(req.target if req else "")
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        conn.shutdown_write()


def test_http_upstream_check_sends_a_local_proxy_header_first(start_mtlsd, make_upstream, pki):
    """The listener sends PROXY v2 to its upstream; the upstream refuses anything else. The
    check must open its connection with a v2 LOCAL header (command 0x20, family 0x00, no address,
    no TLVs: the connection is mtlsd's own, nobody's proxied) and be up on the 200."""
    strict = StrictProxyUpstream()
    up = make_upstream(strict.handler)
    listener = {**checked(pki, up.address, type="http", path="/healthz"), "proxy_protocol": "v2"}
    daemon = start_mtlsd(daemon_config([listener]))
    up_now = up_line("inbound", up.address, ": HTTP 200")
    res = wait_ready_state(
        daemon, lambda r: r.status == 200 and up_now in r.text,
        f"the check of an upstream that requires PROXY v2 never up (it got, without a header: "
        f"{strict.without_header[:2]})")
    assert res.text.startswith("ready\n"), res.text
    with strict.lock:
        headers, paths = list(strict.headers), list(strict.requests)
    assert headers, "the upstream never received a PROXY header"
    hdr = headers[0]
    assert hdr.command == 0, f"the check's header must be LOCAL (0), got command {hdr.command}"
    assert (hdr.family, hdr.transport) == (0, 0), "LOCAL carries family UNSPEC/UNSPEC"
    assert hdr.length == HEADER_LEN and hdr.tlvs == [], "LOCAL carries no address and no TLVs"
    assert paths[0] == "/healthz"


def test_a_reload_that_turns_proxy_protocol_on_or_off_changes_the_check_with_it(
        start_mtlsd, make_upstream, pki):
    """Second read: a check with the same listener, upstream and options was kept across a
    reload however proxy_protocol changed, and went on probing as before: down for good against
    an upstream that requires the header once the listener sent it."""
    strict = StrictProxyUpstream()
    up = make_upstream(strict.handler)
    plain = checked(pki, up.address, type="http", path="/healthz")
    daemon = start_mtlsd(daemon_config([plain], reload={"watch": False}))
    wait_ready_state(daemon, lambda r: down_line("inbound", up.address, "HTTP 400 Bad Request") in r.text,
                     "a bare probe of an upstream that requires PROXY v2 never down")
    reload_with(daemon, daemon_config([{**plain, "proxy_protocol": "v2"}], reload={"watch": False}))
    wait_ready_state(daemon, lambda r: r.status == 200 and
                     up_line("inbound", up.address, ": HTTP 200") in r.text,
                     "the check did not take up the listener's PROXY header after the reload")
    reload_with(daemon, daemon_config([plain], reload={"watch": False}))
    wait_ready_state(daemon, lambda r: down_line("inbound", up.address, "HTTP 400 Bad Request") in r.text,
                     "the check kept sending the PROXY header after the reload turned it off")


# --- 3. XFCC Chain= holds the verified chain only ---------------------------------------------

def forged_self_signed(tmp_path: Path) -> Path:
    """An unrelated self-signed CA certificate (openssl CLI), nothing to do with the test PKI."""
    key, crt = tmp_path / "forged.key", tmp_path / "forged.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(crt),
                    "-days", "2", "-subj", f"/CN={FORGED_CN}/O=mtlsd Test",
                    "-addext", "basicConstraints=critical,CA:TRUE"],
                   check=True, capture_output=True, timeout=30)
    return crt


def chain_of(xfcc: str) -> list[x509.Certificate]:
    """The certificates of the element's Chain="..." value (URL-encoded PEM, leaf first)."""
    assert 'Chain="' in xfcc, xfcc
    value = xfcc.split('Chain="', 1)[1].split('"', 1)[0]
    pem = urllib.parse.unquote(value)
    end = "-----END CERTIFICATE-----"
    blocks = [b + end for b in pem.split(end) if b.strip()]
    return [x509.load_pem_x509_certificate(b.encode()) for b in blocks]


def send_chain_and_read_xfcc(daemon, pki, cert: str, certfile: Path, rec) -> str:
    ctx = client_context(pki, cert, certfile=str(certfile))
    with open_tls(daemon.addr(), ctx) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, _, _ = read_response(Reader(SockConn(sock)))
    assert status == 200
    (req,) = rec.requests
    (xfcc,) = req.xfcc
    return xfcc


# Chain= is the verified chain without its trust anchor (README), as Envoy's is leaf first and
# without the root: for client.crt (issued by the root) the leaf alone; for client-int, the leaf
# and its intermediate. Each is sent with an unrelated self-signed certificate after it.
@pytest.mark.parametrize("leaf,sent_chain,want", [
    ("client", "client.crt", ["client.crt"]),
    ("client-int", "client-int-chain.crt", ["client-int.crt", "int.crt"]),
])
def test_xfcc_chain_holds_the_verified_chain_not_a_certificate_the_client_added(
        http_serve, pki, tmp_path, leaf, sent_chain, want):
    forged = forged_self_signed(tmp_path)
    sent = tmp_path / f"{leaf}-plus-forged.crt"
    sent.write_text(Path(pki.path(sent_chain)).read_text() + forged.read_text())
    daemon, _, rec = http_serve(http={"set_current_client_cert_details": ["subject", "chain"]})
    certs = chain_of(send_chain_and_read_xfcc(daemon, pki, leaf, sent, rec))
    subjects = [c.subject.rfc4514_string() for c in certs]
    assert not any(FORGED_CN in s for s in subjects), \
        f"Chain= carries the certificate the client added, unverified: {subjects}"
    ders = [c.public_bytes(serialization.Encoding.DER) for c in certs]
    assert ders == [der_of(pki, name) for name in want], subjects


# --- 4. PP2_CLIENT_CERT_CONN / PP2_CLIENT_CERT_SESS ---------------------------------------------

def test_full_handshake_sets_cert_conn_and_cert_sess(serve, pki):
    """A certificate presented in this full handshake: presented on this connection (CONN) and
    in this session (SESS), as HAProxy sets them."""
    headers: list = []
    daemon, _ = serve(header_then_echo(headers), proxy_protocol="v2")
    ex = tls_exchange(daemon.addr(), client_context(pki, "client"), b"x", expect=1)
    assert ex.error is None and ex.data == b"x", ex.error
    (hdr,) = headers
    bits = hdr.ssl.client
    assert bits == PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS, \
        f"client bits 0x{bits:02x}, want SSL|CERT_CONN|CERT_SESS (0x07)"


def test_resumption_sets_cert_sess_only(serve, pki):
    """A TLS 1.3 resumption: no certificate crossed this connection (CONN clear), the session
    it resumes had one (SESS set)."""
    headers: list = []
    daemon, _ = serve(header_then_echo(headers), proxy_protocol="v2")
    ctx = client_context(pki, "client")
    with open_tls(daemon.addr(), ctx) as first:
        first.sendall(b"1")
        assert first.recv(1) == b"1"     # the ticket arrived before the echo
        session = first.session
    with ctx.wrap_socket(socket.create_connection(daemon.addr(), timeout=TIMEOUT),
                         server_hostname="localhost", session=session) as second:
        second.sendall(b"2")
        assert second.recv(1) == b"2"
        assert second.session_reused, "the session was not resumed: the test proves nothing"
        assert second.version() == "TLSv1.3"
    assert len(headers) == 2
    bits = headers[1].ssl.client
    assert bits == PP2_CLIENT_SSL | PP2_CLIENT_CERT_SESS, \
        f"resumed: client bits 0x{bits:02x}, want SSL|CERT_SESS (0x05)"


# --- 5. a ',' inside a SAN is %2C in the comma-joined SAN TLVs -------------------------------

URI_WITH_COMMA = "https://a.example/x,spiffe://example.org/ns/prod/sa/admin"
DNS_WITH_COMMA = "ok.example.org,admin.example.org"
OTHER_URI = "urn:example:plain"
OTHER_DNS = "plain.example.org"


def issue_with_sans(pki, tmp_path: Path, uris: list[str], dns: list[str]) -> tuple[str, str]:
    """A client certificate signed by the test CA with exactly these SANs, in this order
    (python3-cryptography: the openssl CLI's config syntax splits values on ',')."""
    ca_cert = x509.load_pem_x509_certificate(Path(pki.path("ca.crt")).read_bytes())
    ca_key = serialization.load_pem_private_key(Path(pki.path("ca.key")).read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = ([x509.UniformResourceIdentifier(u) for u in uris]
            + [x509.DNSName(d) for d in dns])
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "commas")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                         False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return write_cert_and_key(cert, key, tmp_path / "commas.crt", tmp_path / "commas.key")


def test_a_comma_inside_a_san_is_percent_encoded_in_the_san_tlvs(serve, pki, tmp_path):
    """One URI SAN and one DNS SAN that hold a ',' each, plus a plain one of each after them:
    split on ',', each TLV gives exactly one element per SAN, in the certificate's order, and
    the comma inside an element arrives as %2C. Unencoded, the receiver reads the forged
    spiffe://example.org/ns/prod/sa/admin and admin.example.org as SANs of their own."""
    crt, key = issue_with_sans(pki, tmp_path, [URI_WITH_COMMA, OTHER_URI],
                               [DNS_WITH_COMMA, OTHER_DNS])
    headers: list = []
    daemon, _ = serve(header_then_echo(headers), proxy_protocol="v2")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.path("ca.crt"))
    ctx.load_cert_chain(crt, key)
    ex = tls_exchange(daemon.addr(), ctx, b"x", expect=1)
    assert ex.error is None and ex.data == b"x", ex.error
    (hdr,) = headers
    uris = hdr.tlv(MTLSD_URI_SANS).decode()
    dns = hdr.tlv(MTLSD_DNS_SANS).decode()
    assert len(uris.split(",")) == 2, f"URI SAN TLV {uris!r}: not one element per URI SAN"
    assert len(dns.split(",")) == 2, f"DNS SAN TLV {dns!r}: not one element per DNS SAN"
    assert uris == URI_WITH_COMMA.replace(",", "%2C") + "," + OTHER_URI
    assert dns == DNS_WITH_COMMA.replace(",", "%2C") + "," + OTHER_DNS
