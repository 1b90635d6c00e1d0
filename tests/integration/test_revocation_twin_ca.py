"""recheck_established matches a revocation by issuer name, issuer key and serial (README
"Revocation": "Live connections").

Review: events carried the issuer's name and the serial only. Two CAs with one name (staging's CA
made by the same script as production's, or a CA re-keyed under its name) issue the same serials,
and a revocation by one closed the other's connections: listener `a` trusts CA1 (OCSP), listener
`b` CA2, "a different key with the same name"; CA1's responder revoked its serial 4096 and `b`'s
connection of CA2's serial 4096, revoked by nobody, was closed. The same held for a CRL from a
distribution point, and for CRL files within one listener trusting both keys.

Here each source of events revokes CA1's 4096 while a connection of it and one of CA2's 4096 are
open: CA1's is closed, CA2's stays. One worker, so that both connections see the event in one pass
over its sessions: once CA1's is logged as closed, CA2's was judged too.
"""

from __future__ import annotations

import datetime as dt
import signal
import ssl
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from mtlsd_harness import daemon_config, fmt_addr, open_tls, read_to_end, strict_eof
from revocation_env import revocation_server  # noqa: F401  (fixture)
from test_revocation_recheck import still_open
from test_revocation_resumed_chain import Cert, bundle, make_cert, now

SERIAL = 4096  # CA1's and CA2's alike
GOOD_FOR = 3  # seconds the first OCSP answer holds (the first CRL: two more)
CA1_CRL = "/twin-ca1.crl"


@dataclass
class Twins:
    ca1: Cert
    ca2: Cert
    server: Cert
    c1: Cert  # CA1's SERIAL: the one revoked
    c2: Cert  # CA2's SERIAL: revoked by nobody


@pytest.fixture
def rs(revocation_server):  # noqa: F811  (the fixture imported above)
    revocation_server.reset()
    yield revocation_server
    revocation_server.reset()


@pytest.fixture
def twins(tmp_path, rs) -> Twins:
    ca1 = make_cert(tmp_path, "ca1", "Internal CA", None, ca=True)
    ca2 = make_cert(tmp_path, "ca2", "Internal CA", None, ca=True)
    c1 = make_cert(tmp_path, "c1", "svc-one", ca1, ocsp_url=rs.ocsp_url, cdp=rs.url(CA1_CRL),
                   serial=SERIAL)
    c2 = make_cert(tmp_path, "c2", "svc-two", ca2, serial=SERIAL)
    assert ca1.cert.subject == ca2.cert.subject and c1.serial == c2.serial == SERIAL
    return Twins(ca1, ca2, make_cert(tmp_path, "server", "server", ca1, server=True), c1, c2)


def crl(issuer: Cert, revoked: tuple[int, ...] = (), valid_for=dt.timedelta(days=1)) -> bytes:
    """`issuer`'s DER CRL revoking `revoked` (keyCompromise), from a second ago for `valid_for`."""
    b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
         .last_update(now() - dt.timedelta(seconds=1)).next_update(now() + valid_for)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             issuer.key.public_key()), critical=False))
    for serial in revoked:
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial)
            .revocation_date(now() - dt.timedelta(seconds=1))
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
            .build())
    return b.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def ocsp_answer(cert: Cert, issuer: Cert, revoked: bool, valid_for: dt.timedelta) -> bytes:
    """`issuer`'s signed answer for `cert`: "good", or "revoked" (keyCompromise)."""
    this_update = now() - dt.timedelta(seconds=1)
    b = ocsp.OCSPResponseBuilder().add_response(
        cert=cert.cert, issuer=issuer.cert, algorithm=hashes.SHA1(),
        cert_status=ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD,
        this_update=this_update, next_update=now() + valid_for,
        revocation_time=this_update if revoked else None,
        revocation_reason=x509.ReasonFlags.key_compromise if revoked else None,
    ).responder_id(ocsp.OCSPResponderEncoding.HASH, issuer.cert)
    return b.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def listener(name: str, t: Twins, upstream: str, trust: str, revocation: dict) -> dict:
    return {"name": name, "mode": "server", "listen": "127.0.0.1:0", "upstream": upstream,
            "tls": {"cert": t.server.crt, "key": t.server.keyfile},
            "client_auth": {"mode": "require", "ca": [trust]}, "revocation": revocation}


def hold(daemon, name: str, client: Cert):
    """A relayed connection of `client` to listener `name` that stays open: (socket, its address
    in the access log)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(client.crt, client.keyfile)
    sock = open_tls(daemon.addr(name), strict_eof(ctx))
    sock.sendall(b"ping\n")
    assert sock.recv(100) == b"ping\n"
    return sock, fmt_addr(sock.getsockname())


def assert_closed_as_revoked(daemon, sock, local: str, timeout: float = 10.0) -> dict:
    """mtlsd closed the connection and logged it closed as revoked. With close_notify or not:
    how a relay cut by mtlsd ends is not what this file tests."""
    sock.settimeout(timeout)
    assert read_to_end(sock)[0] == b""
    line = daemon.wait_for_access(client=local, timeout=timeout)
    assert line.get("reason") == "revoked", line
    assert "revoked while connected" in line.get("detail", ""), line
    return line


def test_an_ocsp_revocation_spares_another_ca_with_the_same_name(start_mtlsd, make_upstream,
                                                                   rs, twins, tmp_path):
    """The reviewer's scenario: CA1's responder revokes CA1's serial; listener b trusts CA2."""
    (tmp_path / "ca2.crl").write_bytes(crl(twins.ca2))  # b's revocation: on, nothing revoked
    rs.ocsp_body = ocsp_answer(twins.c1, twins.ca1, False, dt.timedelta(seconds=GOOD_FOR))
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([
        listener("a", twins, up.address, twins.ca1.crt, {"ocsp": "leaf"}),
        listener("b", twins, up.address, twins.ca2.crt,
                 {"crl_files": [str(tmp_path / "ca2.crl")]})], workers=1))
    other, _ = hold(daemon, "b", twins.c2)
    revoked, revoked_addr = hold(daemon, "a", twins.c1)
    assert rs.ocsp_requests() == 1
    # The responder says "revoked" from now on: the background refresh asks once the good
    # answer passes its nextUpdate.
    rs.ocsp_body = ocsp_answer(twins.c1, twins.ca1, True, dt.timedelta(hours=1))

    line = assert_closed_as_revoked(daemon, revoked, revoked_addr, timeout=GOOD_FOR + 10)
    assert line["listener"] == "a" and f"ocsp {rs.ocsp_url}" in line["detail"], line
    assert still_open(other)
    other.close()


def test_a_distribution_point_crl_spares_another_ca_with_the_same_name(start_mtlsd, make_upstream,
                                                                        rs, twins, tmp_path):
    (tmp_path / "ca2.crl").write_bytes(crl(twins.ca2))
    # Current for a few seconds: refreshed ahead of its nextUpdate while c1 stays connected.
    rs.crls[CA1_CRL] = crl(twins.ca1, valid_for=dt.timedelta(seconds=GOOD_FOR + 2))
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([
        listener("a", twins, up.address, twins.ca1.crt, {"crl_distribution_points": True}),
        listener("b", twins, up.address, twins.ca2.crt,
                 {"crl_files": [str(tmp_path / "ca2.crl")]})], workers=1))
    other, _ = hold(daemon, "b", twins.c2)
    revoked, revoked_addr = hold(daemon, "a", twins.c1)
    rs.crls[CA1_CRL] = crl(twins.ca1, (SERIAL,))

    line = assert_closed_as_revoked(daemon, revoked, revoked_addr, timeout=GOOD_FOR + 10)
    assert line["listener"] == "a" and f"crl {rs.url(CA1_CRL)}" in line["detail"], line
    assert still_open(other)
    other.close()


def test_crl_files_of_one_listener_keep_a_ca_re_keyed_under_its_name_apart(
        start_mtlsd, make_upstream, twins, tmp_path):
    """One listener trusts both keys of "Internal CA", with a CRL file of each."""
    crl1, crl2 = tmp_path / "ca1.crl", tmp_path / "ca2.crl"
    crl1.write_bytes(crl(twins.ca1))
    crl2.write_bytes(crl(twins.ca2))
    trust = bundle(tmp_path / "both.crt", twins.ca1, twins.ca2)
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([
        listener("inbound", twins, up.address, trust,
                 {"crl_files": [str(crl1), str(crl2)]})], workers=1))
    revoked, revoked_addr = hold(daemon, "inbound", twins.c1)
    other, _ = hold(daemon, "inbound", twins.c2)

    crl1.write_bytes(crl(twins.ca1, (SERIAL,)))
    daemon.send_signal(signal.SIGHUP)

    line = assert_closed_as_revoked(daemon, revoked, revoked_addr)
    assert "crl file" in line["detail"], line
    assert still_open(other)
    other.close()
