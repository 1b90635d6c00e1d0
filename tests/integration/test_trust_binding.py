"""What a verified chain binds: the trust domain of a SPIFFE ID.

tls.spiffe with federated trust domains: every bundle is a trust anchor, but a peer's chain must
end at the bundle of *its own SPIFFE ID's* trust domain (X509-SVID, section 5: a partner's CA may
sign spiffe://partner.example/... and nothing else). Review: the bundles were merged into one
store, so partner.example's CA could issue a leaf claiming spiffe://example.org/<an allowed path>
and be admitted as one of our own workloads; a leaf with no SPIFFE ID at all passed too when
another allow list admitted it. Both modes.

Real peers on the other side: Python ssl clients, `openssl s_server` remotes, a real gRPC
Workload API (workload_api.py).
"""

from __future__ import annotations

import ssl

import pytest

from clients import tls_exchange
from mtlsd_harness import daemon_config, server_listener
from refusal import assert_admitted, assert_refused
from test_spiffe import wait_reloaded
from tls_remote import plain_exchange, s_server
from workload_api import WorkloadApi, der_of, issue_svid

OWN_TD = "example.org"
PARTNER_TD = "partner.example"
SERVER_ID = f"spiffe://{OWN_TD}/ns/prod/sa/mtlsd"
ALLOWED_OWN_ID = f"spiffe://{OWN_TD}/ns/prod/sa/billing"   # allowed: .../ns/prod/*
PARTNER_ID = f"spiffe://{PARTNER_TD}/x"
REMOTE_ID = f"spiffe://{OWN_TD}/ns/prod/sa/remote"
NO_URI_DNS = "nosan.example.org"                            # admitted by allow.dns_sans


# --- helpers ----------------------------------------------------------------------

def federating_agent(pki, short_tmp, tmp_path):
    """A Workload API serving our SVID (example.org, from ca), our bundle (ca) and
    partner.example's bundle (other-ca, an unrelated root)."""
    api = WorkloadApi(str(short_tmp / "agent.sock"))
    svid = issue_svid(pki, tmp_path / "svids", SERVER_ID)
    api.publish(svid, bundle=der_of(pki, "ca"),
                federated={f"spiffe://{PARTNER_TD}": der_of(pki, "other-ca")})
    return api, svid


def svid_client_context(pki, certfile: str, keyfile: str) -> ssl.SSLContext:
    """Python ssl presenting `certfile`; verifies mtlsd's SVID against the example.org root
    (an SVID names no host: no host name check)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(pki.path("ca.crt"))
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


def local_refused(daemon, listener: str) -> dict:
    """The local app's side of a client-mode listener whose remote must be refused: nothing
    comes back, and the access line says rejected. Returns it."""
    data, local = plain_exchange(daemon.addr(listener))
    line = daemon.wait_for_access(client=local)
    assert line["listener"] == listener, line
    assert line["result"] == "rejected", f"{listener}: remote admitted: {line}"
    assert data == b"", (data, line)
    return line


def local_admitted(daemon, listener: str, expected: bytes = b"gnip\n") -> dict:
    data, local = plain_exchange(daemon.addr(listener))
    line = daemon.wait_for_access(client=local)
    assert line["listener"] == listener, line
    assert line["result"] == "accepted", line
    assert data == expected, (data, line)
    return line


# --- 1. SPIFFE: a chain binds the trust domain of the peer's SPIFFE ID --------------------

def test_a_federated_ca_cannot_issue_our_trust_domains_ids(start_mtlsd, make_upstream, pki,
                                                          short_tmp, tmp_path):
    """Server mode, trust_domains [partner.example]: partner.example's CA signing a leaf for
    spiffe://example.org/ns/prod/sa/billing (which the allow list admits) is refused in the
    handshake, unknown_ca, the detail naming the trust domain, and the upstream hears nothing.
    The same CA's leaf for its own trust domain, and our CA's leaf for ours, are admitted."""
    api, svid = federating_agent(pki, short_tmp, tmp_path)
    try:
        up = make_upstream()
        listener = server_listener(pki, up.address, client_auth={"ca": None, "allow": {
            "spiffe_ids": [f"spiffe://{OWN_TD}/ns/prod/*", PARTNER_ID]}},
            tls={"cert": None, "key": None, "spiffe": {
                "workload_api": f"unix:{api.socket_path}", "trust_domains": [PARTNER_TD]}})
        daemon = start_mtlsd(daemon_config([listener]))
        wait_reloaded(daemon, svid.serial)
        addr = daemon.addr()
        svids = tmp_path / "svids"

        forged = issue_svid(pki, svids, ALLOWED_OWN_ID, ca="other-ca")
        ex = tls_exchange(addr, svid_client_context(pki, forged.cert_pem, forged.key_pem),
                          expect=5)
        assert ex.data == b"", f"partner.example's CA admitted for {ALLOWED_OWN_ID}: {ex.data!r}"
        line = assert_refused(daemon, up, ex, "unknown_ca")
        assert f"the chain reaches no CA of the bundle of {OWN_TD}" in line["detail"], line
        assert daemon.scrape().get("mtlsd_handshake_failures_total", listener="inbound",
                                   reason="unknown_ca") == 1

        # Controls: each trust domain's CA for its own IDs.
        partner = issue_svid(pki, svids, PARTNER_ID, ca="other-ca")
        ex = tls_exchange(addr, svid_client_context(pki, partner.cert_pem, partner.key_pem),
                          expect=5)
        assert_admitted(daemon, ex, b"ping\n", identity=PARTNER_ID)
        own = issue_svid(pki, svids, ALLOWED_OWN_ID, ca="ca")
        ex = tls_exchange(addr, svid_client_context(pki, own.cert_pem, own.key_pem), expect=5)
        assert_admitted(daemon, ex, b"ping\n", identity=ALLOWED_OWN_ID)
    finally:
        api.stop()


@pytest.mark.parametrize("own_bundle,partner_bundle,peer_id", [
    ("ca", "int", PARTNER_ID),        # the partner's CA issued by our root
    ("int", "ca", ALLOWED_OWN_ID),    # ours issued by a root the partner's bundle holds
], ids=["partner-ca-under-our-root", "our-ca-under-a-partner-root"])
def test_a_bundle_ca_issued_by_another_bundles_ca_still_vouches_for_its_trust_domain(
        start_mtlsd, make_upstream, pki, short_tmp, tmp_path, own_bundle, partner_bundle,
        peer_id):
    """Second read: one store holding every bundle builds a chain past a bundle's CA when
    another bundle holds that CA's issuer, and the first cut judged only the chain's top: it
    refused workloads go-spiffe admits (it verifies against the peer's own bundle alone). Any CA
    of the chain in the bundle of the peer's trust domain vouches for it."""
    api = WorkloadApi(str(short_tmp / "agent.sock"))
    svid = issue_svid(pki, tmp_path / "svids", SERVER_ID, ca=own_bundle)
    api.publish(svid, bundle=der_of(pki, own_bundle),
                federated={f"spiffe://{PARTNER_TD}": der_of(pki, partner_bundle)})
    try:
        up = make_upstream()
        listener = server_listener(pki, up.address, client_auth={"ca": None, "allow": {
            "spiffe_ids": [peer_id]}},
            tls={"cert": None, "key": None, "spiffe": {
                "workload_api": f"unix:{api.socket_path}", "trust_domains": [PARTNER_TD]}})
        daemon = start_mtlsd(daemon_config([listener]))
        wait_reloaded(daemon, svid.serial)
        peer = issue_svid(pki, tmp_path / "svids", peer_id, ca="int")
        ctx = svid_client_context(pki, peer.cert_pem, peer.key_pem)
        ctx.load_verify_locations(pki.path("int.crt"))  # mtlsd's own SVID may be int's
        ex = tls_exchange(daemon.addr(), ctx, expect=5)
        assert_admitted(daemon, ex, b"ping\n", identity=peer_id)
    finally:
        api.stop()


@pytest.mark.parametrize("ca", ["ca", "other-ca"], ids=["own-bundle-ca", "federated-bundle-ca"])
def test_a_leaf_without_a_spiffe_id_is_not_admitted_by_the_bundles(start_mtlsd, make_upstream,
                                                                   pki, short_tmp, tmp_path, ca):
    """A leaf with no URI SAN has no trust domain whose bundle could vouch for it: chained to a
    bundle's CA, it is refused even though allow.dns_sans names its DNS SAN (the allow list
    alone would admit it). Refused by the trust check (unknown_ca) or the allow lists
    (not_authorized): either way the upstream hears nothing."""
    api, svid = federating_agent(pki, short_tmp, tmp_path)
    try:
        up = make_upstream()
        listener = server_listener(pki, up.address, client_auth={"ca": None, "allow": {
            "spiffe_ids": [f"spiffe://{OWN_TD}/ns/prod/*"], "dns_sans": [NO_URI_DNS]}},
            tls={"cert": None, "key": None, "spiffe": {
                "workload_api": f"unix:{api.socket_path}", "trust_domains": [PARTNER_TD]}})
        daemon = start_mtlsd(daemon_config([listener]))
        wait_reloaded(daemon, svid.serial)
        leaf = issue_svid(pki, tmp_path / "leaves", None, ca=ca, dns=NO_URI_DNS)
        ex = tls_exchange(daemon.addr(), svid_client_context(pki, leaf.cert_pem, leaf.key_pem),
                          expect=5)
        assert ex.local, f"client never connected: {ex.error!r}"
        line = daemon.wait_for_access(client=ex.local)
        assert line["result"] == "rejected", f"a leaf without a SPIFFE ID was admitted: {line}"
        assert line["reason"] in ("unknown_ca", "not_authorized"), line
        assert ex.data == b"", ex.data
        up.assert_untouched()
    finally:
        api.stop()


def test_client_mode_refuses_a_federated_remote_claiming_our_id(start_mtlsd, pki, short_tmp,
                                                               tmp_path):
    """The mirror in client mode: server_auth.allow pins spiffe://example.org/ns/prod/sa/remote;
    a remote (openssl s_server) whose certificate partner.example's CA issued for that ID is
    refused (unknown_ca, naming the trust domain): the local app gets nothing back. The same ID
    from our own CA is admitted."""
    api, svid = federating_agent(pki, short_tmp, tmp_path)
    svids = tmp_path / "svids"
    forged = issue_svid(pki, svids, REMOTE_ID, ca="other-ca")
    genuine = issue_svid(pki, svids, REMOTE_ID, ca="ca")
    try:
        with s_server(forged.cert_pem, forged.key_pem) as bad, \
                s_server(genuine.cert_pem, genuine.key_pem) as good:
            spiffe = {"workload_api": f"unix:{api.socket_path}", "trust_domains": [PARTNER_TD]}

            def outbound(name: str, remote: str) -> dict:
                return {"name": name, "mode": "client", "listen": "127.0.0.1:0",
                        "upstream": remote, "tls": {"spiffe": spiffe},
                        "server_auth": {"allow": {"spiffe_ids": [REMOTE_ID]}}}
            daemon = start_mtlsd(daemon_config([outbound("forged", bad),
                                                outbound("genuine", good)]))
            wait_reloaded(daemon, svid.serial)
            line = local_refused(daemon, "forged")
            assert line["reason"] == "unknown_ca", line
            assert f"the chain reaches no CA of the bundle of {OWN_TD}" in line["detail"], line
            local_admitted(daemon, "genuine")
    finally:
        api.stop()


def impostor_of(pki, name: str) -> bytes:
    """A self-signed CA with `name`'s subject and subjectKeyIdentifier but a key of its own (DER):
    what OpenSSL looks an issuer up by, without its signature."""
    from datetime import datetime, timedelta, timezone
    from pathlib import Path

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    real = x509.load_pem_x509_certificate(Path(pki.path(f"{name}.crt")).read_bytes())
    ski = real.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(real.subject).issuer_name(real.subject)
            .public_key(key.public_key()).serial_number(4242)
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("impostor_of_ca", ["other-ca", "ca"], ids=["partners", "ours"])
def test_one_partners_bundle_cannot_lock_out_another_trust_domains_peers(
        start_mtlsd, make_upstream, pki, short_tmp, tmp_path, impostor_of_ca):
    """Review: every bundle went into one store, and OpenSSL takes the first CA whose name and
    key identifier fit as a chain's issuer, signature unseen. A partner (b.org, listed first)
    publishing a CA with the subject and key identifier of another partner's (c.org) CA, or of
    ours, made every peer of that trust domain fail with bad_signature. A chain is now built to
    the anchors of its leaf's own trust domain only, as go-spiffe verifies: both are admitted."""
    c_td, c_id = "c.org", "spiffe://c.org/ns/default/sa/client"
    api = WorkloadApi(str(short_tmp / "agent.sock"))
    svid = issue_svid(pki, tmp_path / "svids", SERVER_ID)
    api.publish(svid, bundle=der_of(pki, "ca"),
                federated={"spiffe://b.org": impostor_of(pki, impostor_of_ca),
                           f"spiffe://{c_td}": der_of(pki, "other-ca")})
    try:
        up = make_upstream()
        listener = server_listener(pki, up.address, client_auth={"ca": None}, tls={
            "cert": None, "key": None, "spiffe": {
                "workload_api": f"unix:{api.socket_path}", "trust_domains": ["b.org", c_td]}})
        daemon = start_mtlsd(daemon_config([listener]))
        wait_reloaded(daemon, svid.serial)
        svids = tmp_path / "svids"
        for peer_id, ca in ((c_id, "other-ca"), (ALLOWED_OWN_ID, "ca")):
            peer = issue_svid(pki, svids, peer_id, ca=ca)
            ex = tls_exchange(daemon.addr(), svid_client_context(pki, peer.cert_pem,
                                                                 peer.key_pem), expect=5)
            assert_admitted(daemon, ex, b"ping\n", identity=peer_id)
    finally:
        api.stop()


def test_nor_through_a_look_alike_of_its_intermediate(start_mtlsd, make_upstream, pki, short_tmp,
                                                      tmp_path):
    """Second review: the bundles' intermediates were still one pool for every trust domain. A
    c.org bundle of a root and its issuing CA, and b.org's bundle holding a CA of its own with
    the name and key identifier of c.org's issuing CA: a c.org peer that sends only its leaf was
    refused (unknown_ca), the look-alike taken for its issuer. Each domain's chain now draws on
    its own bundle's intermediates only."""
    from datetime import datetime, timedelta, timezone

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from pki import write_cert_and_key
    now = datetime.now(timezone.utc)

    def issue(cn, key, issuer=None, issuer_key=None, *, ca=True, ski=None, uri=None):
        """A certificate for `key` named CN=`cn` (self-signed without an issuer)."""
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        ski = ski or x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        b = (x509.CertificateBuilder().subject_name(subject)
             .issuer_name(issuer.subject if issuer else subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
             .add_extension(x509.KeyUsage(not ca, False, False, False, not ca, ca, ca, False,
                                          False), critical=True)
             .add_extension(ski, critical=False))
        if issuer:
            issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            b = b.add_extension(x509.AuthorityKeyIdentifier(issuer_ski.value.digest, None, None),
                                critical=False)
        if uri:
            b = (b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                                 critical=False)
                 .add_extension(x509.SubjectAlternativeName(
                     [x509.UniformResourceIdentifier(uri)]), critical=True))
        return b.sign(issuer_key or key, hashes.SHA256())

    def der(*certs):
        return b"".join(c.public_bytes(serialization.Encoding.DER) for c in certs)

    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(5)]
    c_root = issue("C Root", keys[0])
    c_issuing = issue("C Issuing", keys[1], c_root, keys[0])
    b_root = issue("B Root", keys[2])
    look_alike = issue("C Issuing", keys[3], b_root, keys[2],
                       ski=c_issuing.extensions.get_extension_for_class(
                           x509.SubjectKeyIdentifier).value)
    peer_id = "spiffe://c.org/ns/default/sa/client"
    leaf = issue("leaf", keys[4], c_issuing, keys[1], ca=False, uri=peer_id)
    crt, key = write_cert_and_key(leaf, keys[4], tmp_path / "leaf.crt", tmp_path / "leaf.key")

    api = WorkloadApi(str(short_tmp / "agent.sock"))
    svid = issue_svid(pki, tmp_path / "svids", SERVER_ID)
    api.publish(svid, bundle=der_of(pki, "ca"),
                federated={"spiffe://b.org": der(b_root, look_alike),
                           "spiffe://c.org": der(c_root, c_issuing)})
    try:
        up = make_upstream()
        listener = server_listener(pki, up.address, client_auth={"ca": None}, tls={
            "cert": None, "key": None, "spiffe": {
                "workload_api": f"unix:{api.socket_path}", "trust_domains": ["b.org", "c.org"]}})
        daemon = start_mtlsd(daemon_config([listener]))
        wait_reloaded(daemon, svid.serial)
        ex = tls_exchange(daemon.addr(), svid_client_context(pki, crt, key), expect=5)
        assert_admitted(daemon, ex, b"ping\n", identity=peer_id)
    finally:
        api.stop()
