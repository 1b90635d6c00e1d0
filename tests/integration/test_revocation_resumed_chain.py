"""A resumed session's revocation check runs on its chain rebuilt up to its trust anchor (README
"Revocation": "Resumed sessions").

A resumption skips verification: OpenSSL keeps only the client's leaf. The revocation service
completed that leaf from a process-wide memory of the CA certificates it had seen in verified
chains, one per subject name, up to a self-issued root, and a top that was not self-issued was
"issuer unknown" (`revocation_unavailable`). So (review, high):

1. With an issuing CA trusted alone (a partial-chain anchor, which a full handshake does not
   check) and `crl_distribution_points` (`crl_scope: chain`) or `ocsp: chain`, every resumption
   was refused: the completed chain stopped at that CA, which is not self-issued. Its client
   holds the ticket each refused resumption hands out (TLS 1.3 sends it before the
   post-handshake verdict), so it kept resuming and being refused, never making the full
   handshake that is admitted.
2. During a CA re-key that keeps the CA's name (two intermediates, one name, two keys), a full
   handshake of one key's client replaced the other key's certificate in that memory, and the
   other key's resumed clients were refused.

The service now gets the chain the session rebuilds from its ticket's intermediates and the
listener's trust bundle (the one the recheck watch uses), ending at its anchor, which is not
checked, as after a full handshake. A refused resumption (here: its source address is not
allowed) still hands out a ticket, and a later resumption with it is judged on its own.

The PKIs are made here with python3-cryptography once the loopback CRL/OCSP server is bound,
so that the certificates name it. The anchor's own distribution point serves nothing (404): had
the resumed check looked at the anchor, it would be refused `revocation_unavailable`.
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from mtlsd_harness import Mtlsd, daemon_config
from revocation_env import metric, revocation_server  # noqa: F401  (fixture)
from revocation_servers import RevocationServer
from resumption_attempt import Attempt, attempt

TIMEOUT = 10.0
CHECKS = "mtlsd_revocation_checks_total"


# --- a PKI made with python3-cryptography ---------------------------------------------------------

@dataclass
class Cert:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    crt: str       # PEM file of the certificate
    keyfile: str   # PEM file of its key

    @property
    def serial(self) -> int:
        return self.cert.serial_number


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def make_cert(outdir: Path, fname: str, cn: str, issuer: Optional[Cert], *, ca: bool = False,
              server: bool = False, cdp: Optional[str] = None,
              ocsp_url: Optional[str] = None, serial: Optional[int] = None) -> Cert:
    """An EC certificate `cn` issued by `issuer` (self-signed without one): a CA, a server
    certificate for localhost / 127.0.0.1, or a client certificate; with a CRL distribution
    point `cdp`, an OCSP responder `ocsp_url` and a serial number (else a random one) when
    given. Key identifiers always."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    signer = issuer.key if issuer else key
    b = (x509.CertificateBuilder().subject_name(subject)
         .issuer_name(issuer.cert.subject if issuer else subject)
         .public_key(key.public_key()).serial_number(serial or x509.random_serial_number())
         .not_valid_before(now() - dt.timedelta(hours=1))
         .not_valid_after(now() + dt.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False,
                                      key_encipherment=False, data_encipherment=False,
                                      key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                                      encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                        critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                        critical=False))
    if not ca:
        b = b.add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False)
    if server:
        import ipaddress
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    if cdp:
        b = b.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(cdp)], None, None, None)]), critical=False)
    if ocsp_url:
        b = b.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]),
            critical=False)
    cert = b.sign(signer, hashes.SHA256())
    crt, keyfile = outdir / f"{fname}.crt", outdir / f"{fname}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    keyfile.chmod(0o600)
    return Cert(cert, key, str(crt), str(keyfile))


def make_crl(issuer: Cert, revoked: tuple[int, ...] = ()) -> bytes:
    """A DER CRL of `issuer` revoking `revoked` (keyCompromise), current for a day."""
    b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
         .last_update(now() - dt.timedelta(minutes=1))
         .next_update(now() + dt.timedelta(days=1))
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             issuer.key.public_key()), critical=False))
    for serial in revoked:
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial)
            .revocation_date(now() - dt.timedelta(minutes=2))
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
            .build())
    return b.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def ocsp_good(cert: Cert, issuer: Cert) -> bytes:
    """A DER OCSP response saying `good` for `cert`, signed by its issuer, current for an hour."""
    b = ocsp.OCSPResponseBuilder().add_response(
        cert=cert.cert, issuer=issuer.cert, algorithm=hashes.SHA1(),
        cert_status=ocsp.OCSPCertStatus.GOOD, this_update=now() - dt.timedelta(seconds=5),
        next_update=now() + dt.timedelta(hours=1), revocation_time=None,
        revocation_reason=None).responder_id(ocsp.OCSPResponderEncoding.HASH, issuer.cert)
    return b.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def bundle(path: Path, *certs: Cert) -> str:
    path.write_bytes(b"".join(Path(c.crt).read_bytes() for c in certs))
    return str(path)


def client_ctx(chain: str, key: str) -> ssl.SSLContext:
    """TLS 1.3 (tickets), presenting `chain` (PEM: leaf first); the server is not judged."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(chain, key)
    return ctx


# --- connections ----------------------------------------------------------------------------------

def assert_admitted(at: Attempt, resumed: bool, payload: bytes = b"ping\n") -> None:
    assert at.line.get("result") == "accepted", at.brief()
    assert at.ex.error is None and at.ex.data == payload, (at.ex, at.brief())
    assert at.reused is resumed and at.line.get("resumed") is resumed, (at.reused, at.brief())


def server_config(tmp: Path, rs: RevocationServer, issuer: Cert, upstream: str, trust: str,
                  revocation: dict, allow: Optional[dict] = None) -> dict:
    """One listener "inbound" on 127.0.0.1 trusting `trust`, its certificate from `issuer`."""
    server = make_cert(tmp, "server", "server", issuer, server=True)
    client_auth = {"mode": "require", "ca": [trust]}
    if allow:
        client_auth["allow"] = allow
    return daemon_config([{
        "name": "inbound", "mode": "server", "listen": "127.0.0.1:0", "upstream": upstream,
        "tls": {"cert": server.crt, "key": server.keyfile, "min_version": "1.3"},
        "client_auth": client_auth, "revocation": revocation}])


@pytest.fixture
def rs(revocation_server):
    revocation_server.reset()
    yield revocation_server
    revocation_server.reset()


# --- 1. an issuing CA trusted alone ---------------------------------------------------------------

@pytest.mark.parametrize("source", ["distribution_points", "ocsp"])
def test_resumed_clients_of_an_issuing_ca_trusted_alone_are_admitted(
        source, rs, tmp_path, start_mtlsd, make_upstream):
    root = make_cert(tmp_path, "root", "Resumed Chain Root", None, ca=True)
    issuing = make_cert(tmp_path, "issuing", "Resumed Chain Issuing CA", root, ca=True,
                        cdp=rs.url("/partial-root.crl"))  # served by nobody: 404
    leaf = make_cert(tmp_path, "leaf", "partial-anchor-client", issuing,
                     cdp=rs.url("/partial-issuing.crl"), ocsp_url=rs.ocsp_url)
    rs.crls["/partial-issuing.crl"] = make_crl(issuing)
    rs.ocsp_body = ocsp_good(leaf, issuing)
    method = "crl" if source == "distribution_points" else "ocsp"
    revocation = ({"crl_distribution_points": True, "crl_scope": "chain"}
                  if method == "crl" else {"ocsp": "chain"})
    up = make_upstream()
    # Admitted from 127.0.0.1 only: a resumption from 127.0.0.2 is refused.
    daemon = start_mtlsd(server_config(
        tmp_path, rs, issuing, up.address, bundle(tmp_path / "trust.pem", issuing), revocation,
        allow={"rules": [{"source_cidrs": ["127.0.0.1/32"]}]}))
    ctx = client_ctx(leaf.crt, leaf.keyfile)

    full = attempt(daemon, ctx)
    assert_admitted(full, resumed=False)
    # Before: refused, revocation_unavailable, "issuer unknown" at depth 1 (the anchor).
    first = attempt(daemon, ctx, full.session)
    assert_admitted(first, resumed=True)
    # The ticket the resumption handed out resumes too.
    second = attempt(daemon, ctx, first.session)
    assert_admitted(second, resumed=True)

    # A refused resumption still hands out a ticket (TLS 1.3 sends it with the handshake, before
    # the verdict); resuming with it later is judged afresh, and admitted.
    refused = attempt(daemon, ctx, second.session, source="127.0.0.2")
    assert refused.reused and refused.line.get("reason") == "not_authorized", refused.brief()
    assert refused.ex.data == b"" and refused.session is not None, refused.ex
    after = attempt(daemon, ctx, refused.session)
    assert_admitted(after, resumed=True)

    # Each admitted connection was checked (the leaf: good), none asked about the anchor, and
    # the upstream saw each admitted connection only.
    assert metric(daemon, CHECKS, method=method, result="good") == 4
    assert metric(daemon, CHECKS, method=method, result="unavailable") == 0
    assert rs.crl_requests("/partial-root.crl") == 0
    assert up.connection_count() == 4


# --- 2. a CA re-keyed under the same name ---------------------------------------------------------

@pytest.mark.parametrize("trust", ["root", "issuing_cas_alone"])
def test_resumed_clients_of_each_key_of_a_re_keyed_ca_are_admitted(
        trust, rs, tmp_path, start_mtlsd, make_upstream):
    root = make_cert(tmp_path, "root", "Re-key Root", None, ca=True)
    old = make_cert(tmp_path, "old", "Re-key Issuing CA", root, ca=True,
                    cdp=rs.url("/rekey-root.crl"))
    new = make_cert(tmp_path, "new", "Re-key Issuing CA", root, ca=True,
                    cdp=rs.url("/rekey-root.crl"))
    a = make_cert(tmp_path, "a", "rekey-client-a", old, cdp=rs.url("/rekey-old.crl"))
    b = make_cert(tmp_path, "b", "rekey-client-b", new, cdp=rs.url("/rekey-new.crl"))
    rs.crls.update({"/rekey-old.crl": make_crl(old), "/rekey-new.crl": make_crl(new),
                    "/rekey-root.crl": make_crl(root)})
    if trust == "root":  # the clients send their issuing CA
        trust_file = root.crt
        ctx_a = client_ctx(bundle(tmp_path / "a-chain.pem", a, old), a.keyfile)
        ctx_b = client_ctx(bundle(tmp_path / "b-chain.pem", b, new), b.keyfile)
    else:  # both keys' certificates trusted alone; the clients send their leaf only
        trust_file = bundle(tmp_path / "trust.pem", old, new)
        ctx_a, ctx_b = client_ctx(a.crt, a.keyfile), client_ctx(b.crt, b.keyfile)
    up = make_upstream()
    daemon = start_mtlsd(server_config(tmp_path, rs, root, up.address, trust_file,
                                       {"crl_distribution_points": True, "crl_scope": "chain"}))

    a_full = attempt(daemon, ctx_a)
    assert_admitted(a_full, resumed=False)
    a_resumed = attempt(daemon, ctx_a, a_full.session)
    assert_admitted(a_resumed, resumed=True)
    b_full = attempt(daemon, ctx_b)
    assert_admitted(b_full, resumed=False)
    # Before: refused, revocation_unavailable, "issuer unknown" (the other key's certificate
    # had taken the name's place).
    assert_admitted(attempt(daemon, ctx_a, a_resumed.session), resumed=True)
    assert_admitted(attempt(daemon, ctx_b, b_full.session), resumed=True)
    # Each leaf's CRL verified with its own issuer's key: a CRL checked against the other key
    # would be unusable (unavailable).
    assert metric(daemon, CHECKS, method="crl", result="good") == 5
    assert metric(daemon, CHECKS, method="crl", result="unavailable") == 0
