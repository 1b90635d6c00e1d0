"""recheck_established reaches a resumed session through the intermediate its client never sent
(README "Revocation": "Live connections", "Resumed sessions").

Every session remembers the certificates of its peer's chain; a revocation learnt later (here: a
CRL refreshed from a distribution point) closes the sessions whose chain holds the revoked
certificate. After a full handshake that chain is the verified one: leaf, intermediate, root,
the intermediate taken from the trust bundle (`client_auth.ca` holds the root AND the
intermediate) when the client sent only its leaf. After a resumed TLS 1.3 handshake OpenSSL
keeps only the leaf, and the ticket carries only the intermediates the client *sent*: for a
client that sends its leaf alone that is nothing, so the resumed session watched its leaf only
and stayed open once the root revoked the intermediate, while the same client's full-handshake
connection was closed. The resumed session must watch the chain rebuilt up to its anchor (the
trust bundle's intermediate included), as the full handshake does.

The PKI is made here with the openssl CLI (root -> intermediate -> client leaf, plus a server
certificate from the root) once the loopback CRL server is bound, so that the certificates'
CRL distribution points name it: the intermediate's points at the root's CRL, the leaf's at the
intermediate's. The root's first CRL lives 6 seconds, so mtlsd refreshes it about a second
before that (as in test_revocation_recheck's distribution point test); by then the test has
revoked the intermediate and serves the root's new CRL.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from helpers import stamp
from mtlsd_harness import daemon_config, fmt_addr, server_listener
from revocation_servers import RevocationServer

ROOT_CRL = "/chain-root.crl"   # the root's CRL: the intermediate's distribution point
INT_CRL = "/chain-int.crl"     # the intermediate's CRL: the leaf's distribution point
CLIENT_ID = "spiffe://example.org/recheck/client-leaf"
INTERMEDIATE = "CN=Recheck Intermediate CA"

CNF = """[ ca ]
default_ca = root_ca

[ root_ca ]
dir = {dir}/db/root
certificate = {dir}/ca.crt
private_key = {dir}/ca.key
{ca_common}
[ int_ca ]
dir = {dir}/db/int
certificate = {dir}/int.crt
private_key = {dir}/int.key
{ca_common}
[ policy_any ]
organizationName = optional
commonName = supplied

[ req ]
distinguished_name = req_dn
prompt = no
[ req_dn ]
CN = placeholder

[ crl_ext ]
authorityKeyIdentifier = keyid:always

[ ext_root ]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[ ext_int ]
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
crlDistributionPoints = URI:{root_crl}

[ ext_server ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1

[ ext_client ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
extendedKeyUsage = clientAuth
subjectAltName = URI:{client_id}
crlDistributionPoints = URI:{int_crl}
"""

CA_COMMON = """database = $dir/index.txt
serial = $dir/serial
crlnumber = $dir/crlnumber
new_certs_dir = $dir/newcerts
default_md = sha256
policy = policy_any
email_in_dn = no
copy_extensions = none
unique_subject = no
default_days = 30
default_crl_days = 30
crl_extensions = crl_ext
"""


# --- the PKI ------------------------------------------------------------------------------------

class ChainPki:
    """ca.crt (root) -> int.crt (CDP: the root's CRL) -> client.crt (CDP: the intermediate's
    CRL); server.crt from the root. Each CA keeps an `openssl ca` database, so the root can
    revoke the intermediate and publish a CRL saying so."""

    def __init__(self, root: Path, root_crl_url: str, int_crl_url: str):
        self.root = Path(root)
        for ca, first_serial in (("root", 1000), ("int", 2000)):
            db = self.root / "db" / ca
            (db / "newcerts").mkdir(parents=True)
            (db / "index.txt").write_text("")
            (db / "serial").write_text(f"{first_serial}\n")
            (db / "crlnumber").write_text("01\n")
        (self.root / "openssl.cnf").write_text(CNF.format(
            dir=self.root, ca_common=CA_COMMON, root_crl=root_crl_url, int_crl=int_crl_url,
            client_id=CLIENT_ID))
        past, future = stamp(time.time() - 86400), stamp(time.time() + 30 * 86400)
        self._key("ca")
        self.openssl("req", "-new", "-x509", "-key", self.path("ca.key"), "-days", "3650",
                     "-subj", "/O=mtlsd recheck/CN=Recheck Root CA", "-extensions", "ext_root",
                     "-out", self.path("ca.crt"))
        self._issue("root_ca", "int", "/O=mtlsd recheck/CN=Recheck Intermediate CA", "ext_int",
                    past, future)
        self._issue("root_ca", "server", "/O=mtlsd recheck/CN=localhost", "ext_server",
                    past, future)
        self._issue("int_ca", "client", "/O=mtlsd recheck/CN=client-leaf", "ext_client",
                    past, future)

    def path(self, name: str) -> str:
        return str(self.root / name)

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def openssl(self, command: str, *args: str) -> None:
        """`openssl COMMAND -config openssl.cnf ARGS`; fails with openssl's output."""
        proc = subprocess.run(["openssl", command, "-config", self.path("openssl.cnf"), *args],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"openssl {command} {' '.join(args)} failed:\n"
                               f"{proc.stdout}\n{proc.stderr}")

    def _key(self, name: str) -> None:
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-out", self.path(f"{name}.key")],
                       check=True, capture_output=True, timeout=60)

    def _issue(self, ca: str, name: str, subject: str, ext: str, start: str, end: str) -> None:
        self._key(name)
        self.openssl("req", "-new", "-key", self.path(f"{name}.key"), "-subj", subject,
                     "-out", self.path(f"{name}.csr"))
        self.openssl("ca", "-batch", "-notext", "-name", ca, "-extensions", ext,
                     "-startdate", start, "-enddate", end, "-in", self.path(f"{name}.csr"),
                     "-out", self.path(f"{name}.crt"))

    def crl(self, ca: str, out: str, *extra: str) -> bytes:
        """A CRL of `ca` (root_ca | int_ca) listing every certificate it revoked so far."""
        self.openssl("ca", "-batch", "-name", ca, "-gencrl", *extra, "-out", self.path(out))
        return self.read(out)

    def revoke(self, ca: str, name: str) -> None:
        self.openssl("ca", "-batch", "-name", ca, "-revoke", self.path(f"{name}.crt"))


@pytest.fixture
def crl_server():
    server = RevocationServer()
    yield server
    server.close()


# --- connections --------------------------------------------------------------------------------

def leaf_only_client(pki: ChainPki) -> ssl.SSLContext:
    """TLS 1.3 only; presents client.crt alone (not the intermediate), so that mtlsd completes
    the chain from its trust bundle."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(pki.path("ca.crt"))
    ctx.load_cert_chain(pki.path("client.crt"), pki.path("client.key"))
    return ctx


def connect(daemon, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None):
    """A handshaken connection (offering `session`) that relayed one echo round trip:
    (socket, its address in the access log). The read also takes in the TLS 1.3 ticket."""
    raw = socket.create_connection(daemon.addr(), timeout=10)
    try:
        sock = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    except BaseException:
        raw.close()
        raise
    sock.sendall(b"ping\n")
    assert sock.recv(100) == b"ping\n"
    return sock, fmt_addr(sock.getsockname())


def closed(sock, timeout: float) -> bool:
    """Whether mtlsd closes the connection within `timeout` (False: it is still open)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(100) == b""
    except (socket.timeout, TimeoutError):
        return False
    except (ConnectionResetError, ssl.SSLError):
        return True  # closed all the same


def assert_revoked_at_intermediate(line: dict, url: str) -> None:
    """The access line of a connection closed because the root's CRL revoked the intermediate:
    accepted (it was admitted), reason `revoked`, the intermediate (depth 1) and the CRL named."""
    assert line.get("result") == "accepted" and line.get("reason") == "revoked", line
    detail = line.get("detail", "")
    assert "certificate at depth 1 revoked while connected" in detail, line
    assert f"(crl {url})" in detail, line


# --- the test -----------------------------------------------------------------------------------

def test_revoked_bundle_intermediate_closes_a_resumed_leaf_only_session(
        start_mtlsd, make_upstream, crl_server, tmp_path):
    """A client that sends only its leaf resumes a session; the root then revokes the
    intermediate (which came from mtlsd's trust bundle) and mtlsd learns it from the refreshed
    root CRL: the resumed connection is closed as `revoked`, like the full-handshake one."""
    root_url, int_url = crl_server.url(ROOT_CRL), crl_server.url(INT_CRL)
    pki = ChainPki(tmp_path / "pki", root_url, int_url)
    crl_server.crls[INT_CRL] = pki.crl("int_ca", "int-crl.pem")
    up = make_upstream()
    listener = server_listener(
        pki, up.address,
        client_auth={"ca": [pki.path("ca.crt"), pki.path("int.crt")]},
        revocation={"crl_distribution_points": True, "crl_scope": "chain"})
    daemon = start_mtlsd(daemon_config([listener]))

    # A root CRL that expires in 6 seconds, made once the daemon is up: the first handshake
    # fetches it while current, and mtlsd refreshes it about a second before its nextUpdate,
    # by when the connections below, the revocation and the new CRL are in place.
    crl_server.crls[ROOT_CRL] = pki.crl("root_ca", "short.pem", "-crlsec", "6")
    # The root's next CRL, revoking the intermediate, is made now but served only once the
    # connections are up: the 6 seconds hold three handshakes, not openssl runs too.
    pki.revoke("root_ca", "int")
    revoking = pki.crl("root_ca", "new.pem")
    ctx = leaf_only_client(pki)

    first, first_addr = connect(daemon, ctx)
    session = first.session
    assert not first.session_reused
    assert session is not None and session.has_ticket, "mtlsd issued no TLS 1.3 ticket"
    first.close()
    line = daemon.wait_for_access(client=first_addr)
    assert line["result"] == "accepted" and line["identity"] == CLIENT_ID, line

    resumed, resumed_addr = connect(daemon, ctx, session=session)
    assert resumed.session_reused, "the saved session did not resume"
    full, full_addr = connect(daemon, ctx)  # the control: a full handshake, held open too
    assert not full.session_reused

    crl_server.crls[ROOT_CRL] = revoking

    try:
        # The control (this already works): the refresh comes at most ~5 s after the short
        # CRL was made, 20 s is ample.
        assert closed(full, 20.0), "the full-handshake connection was not closed either"
        line = daemon.wait_for_access(client=full_addr, timeout=5)
        assert_revoked_at_intermediate(line, root_url)
        assert line.get("resumed") in (False, "false", None), line
        assert crl_server.crl_requests(ROOT_CRL) >= 2

        # The same revocation event reaches every session at once: the resumed one is closed
        # within moments of the control, or not at all.
        if not closed(resumed, 5.0):
            logged = daemon.access_logs(client=resumed_addr)
            pytest.fail(
                f"the resumed connection ({resumed_addr}) stayed open after the root's refreshed "
                f"CRL revoked the intermediate {INTERMEDIATE} (taken from the trust bundle: the "
                "client sent only its leaf), while the same client's full-handshake connection "
                f"was closed: {line.get('detail')!r}. The resumed session watches its leaf "
                f"alone, not its chain up to the anchor. Its access lines so far: {logged}",
                pytrace=False)
        line = daemon.wait_for_access(client=resumed_addr, timeout=5)
        assert line.get("resumed") in (True, "true"), line
        assert_revoked_at_intermediate(line, root_url)
    finally:
        resumed.close()
        full.close()
