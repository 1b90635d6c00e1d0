"""Strict path validation in both directions, through real clients and servers and through
`mtlsd verify`: every certificate `openssl verify -x509_strict` refuses with the same anchors is
refused, with the same reason a handshake logs; an issuing CA alone is a trust anchor; client
mode never matches the subject CN; weak keys and SHA-1 are refused by `verify` as by a
handshake; email_sans; server_auth.verify_depth; a forged CertificateVerify is bad_signature."""

from __future__ import annotations

import base64
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from clients import client_context, tls_exchange
from helpers import verify_cli
from mtlsd_harness import daemon_config, run_cli, server_listener, write_config
from refusal import assert_admitted, assert_refused
from tls_remote import Remote, plain_exchange
from strict_pki import (GOOD_CA, GOOD_LEAF, USAGE_EXT, StrictPki,
                        openssl_strict_verify)

TIMEOUT = 10.0


@dataclass
class Case:
    name: str
    reason: str             # "accepted" or the rejection reason
    strict_only: bool       # refused by `openssl verify -x509_strict`, accepted without it
    intermediate: str | None = None


CASES = [
    Case("good", "accepted", False),
    Case("no_aki", "bad_certificate", True),
    Case("ca_no_ski", "bad_certificate", True, "int_no_ski"),
    Case("root_bc_noncritical", "bad_key_usage", True),
    Case("root_no_bc", "bad_key_usage", True),
    Case("leaf_keycertsign", "bad_key_usage", True),
    Case("empty_subject_san_noncritical", "bad_certificate", True),
    Case("name_constraints", "name_constraints", False, "int_nc"),
    Case("rsa1024", "bad_signature", False),
    Case("sha1", "bad_signature", False),
    Case("p192", "bad_signature", False),
    # Review: OpenSSL's purposes take these, and so did mtlsd: keyAgreement alone (every
    # handshake has the peer sign), an EKU of Server Gated Crypto alone (client mode).
    Case("key_agreement_only", "bad_key_usage", False),
    Case("sgc_only", "bad_key_usage", False),
    # Review: an intermediate the peer sent whose keyUsage does not decode was reported as a
    # missing issuer ("unknown_ca ... was not sent by the peer").
    Case("under_malformed_int", "bad_certificate", False, "int_malformed_ku"),
]


@dataclass
class UriCase:
    name: str
    ca: str
    uri: str
    problem: str | None  # what mtlsd's detail says; None: accepted


# OpenSSL's URI name-constraint check takes a URI's host as what follows "scheme://" up to the
# next ':', else the next '/' (RFC 3986 aside): every one of these passes OpenSSL's own check.
URI_CASES = [
    UriCase("uri_plain", "int_uri_nc", "spiffe://example.org/x", None),
    UriCase("uri_port", "int_uri_nc", "spiffe://example.org:8443/x", None),
    # The review's case: the real host is evil.org, OpenSSL compares example.org.
    UriCase("uri_userinfo", "int_uri_nc", "spiffe://example.org:1@evil.org/x",
            "has a userinfo ('@')"),
    # Query after the host: OpenSSL compares "evil.org?.example.org", within .example.org.
    UriCase("uri_query", "int_uri_nc", "spiffe://evil.org?.example.org",
            "has the host 'evil.org', but OpenSSL's check compares 'evil.org?.example.org'"),
    # Under excluded URI:evil.org, OpenSSL compares "example.org", and "[" for an IP literal.
    UriCase("uri_userinfo_excluded", "int_uri_excluded", "spiffe://example.org:1@evil.org/x",
            "has a userinfo ('@')"),
    UriCase("uri_ip_literal", "int_uri_excluded", "spiffe://[::1]:8443/x",
            "has an IP literal ('[...]') for a host"),
]

# EC keys at security level 2 that TLS 1.3 cannot sign with, nor TLS 1.2 unless the curve is in
# tls.curves (OpenSSL's default groups hold none of them), and how mtlsd names their curve.
CURVES = {"p224": "P-224 (secp224r1)", "secp256k1": "secp256k1",
          "brainpool": "brainpoolP256r1"}
# What a default listener (TLS 1.2 and 1.3, tls.curves unset) says of such a key.
DEFAULT_SIGNERS = ("which this listener's TLS versions and curves cannot sign with (TLS 1.3: "
                   "P-256, P-384, P-521; TLS 1.2: the curves in tls.curves, "
                   "X25519:P-256:P-384)")
# TLS 1.2 with brainpool (RFC 7027), as BSI/gematik deployments need, and TLS 1.3 alone.
TLS12_BRAINPOOL = {"max_version": "1.2", "curves": "brainpoolP256r1:P-256"}
TLS13_BRAINPOOL = {"min_version": "1.3", "curves": "brainpoolP256r1:P-256"}


def no_line(profile: str, key: str) -> str:
    """`profile` without extension `key` (`openssl x509 -req` adds key identifiers unless they
    are set to none)."""
    out = "".join(l + "\n" for l in profile.splitlines() if not l.startswith(key))
    return out + (f"{key} = none\n" if key.endswith("KeyIdentifier") else "")


@pytest.fixture(scope="module")
def spki(tmp_path_factory) -> StrictPki:
    p = StrictPki(tmp_path_factory.mktemp("strict"))
    # DSA-2048 (security level 2), which TLS 1.2 signs with: genpkey needs its parameters first.
    subprocess.run(["openssl", "genpkey", "-genparam", "-algorithm", "DSA", "-pkeyopt",
                    "pbits:2048", "-pkeyopt", "qbits:256", "-out", p.path("dsa.param")],
                   check=True, capture_output=True, timeout=60)
    p.ca("sroot")
    p.ca("bc_noncritical_root", GOOD_CA.replace("critical, CA:true", "CA:true"))
    p.ca("no_bc_root", no_line(GOOD_CA, "basicConstraints"))
    p.ca("int_no_ski", no_line(GOOD_CA, "subjectKeyIdentifier"), issuer="sroot")
    p.ca("int_nc", GOOD_CA + "nameConstraints = critical, permitted;DNS:.example.org\n",
         issuer="sroot")
    p.ca("issuing", GOOD_CA, issuer="sroot")
    p.ca("int_malformed_ku", no_line(GOOD_CA, "keyUsage") + "2.5.29.15 = critical, DER:05:00\n",
         issuer="sroot")
    p.ca("int_excluded", GOOD_CA + "nameConstraints = critical, excluded;DNS:secret.example.org\n",
         issuer="sroot")
    p.leaf("wildcard-server", "int_excluded", "server", intermediate="int_excluded",
           ext=GOOD_LEAF + "extendedKeyUsage = serverAuth\nsubjectAltName = DNS:*.example.org\n")
    p.ca("int_uri_nc", GOOD_CA + "nameConstraints = critical, permitted;URI:example.org, "
         "permitted;URI:.example.org\n", issuer="sroot")
    p.ca("int_uri_excluded", GOOD_CA + "nameConstraints = critical, excluded;URI:evil.org\n",
         issuer="sroot")
    for c in URI_CASES:
        for usage, eku in (("client", "clientAuth"), ("server", "serverAuth")):
            p.leaf(f"{c.name}-{usage}", c.ca, usage, intermediate=c.ca,
                   ext=GOOD_LEAF + f"extendedKeyUsage = {eku}\n"
                   f"subjectAltName = DNS:localhost, URI:{c.uri}\n")
    for usage in ("client", "server"):
        ext = GOOD_LEAF + USAGE_EXT[usage]
        def leaf(case, issuer="sroot", **kw):
            return p.leaf(f"{case}-{usage}", issuer, usage, **kw)
        leaf("good")
        leaf("no_aki", ext=no_line(ext, "authorityKeyIdentifier").format(name="no_aki"))
        leaf("ca_no_ski", "int_no_ski", intermediate="int_no_ski",
             ext=ext.replace("keyid\n", "keyid, issuer\n").format(name="ca_no_ski"))
        leaf("root_bc_noncritical", "bc_noncritical_root")
        leaf("root_no_bc", "no_bc_root")
        leaf("leaf_keycertsign",
             ext=ext.replace("digitalSignature", "digitalSignature, keyCertSign")
             .format(name="kcs"))
        leaf("empty_subject_san_noncritical", subject="/")
        leaf("name_constraints", "int_nc", intermediate="int_nc")
        leaf("rsa1024", key="rsa1024")
        leaf("sha1", md="sha1")
        leaf("p192", key="p192")
        for curve in (*CURVES, "dsa"):
            leaf(curve, key=curve)
        leaf("issued", "issuing", intermediate="issuing")
        leaf("cn_only", ext=no_line(ext, "subjectAltName").format(name="cn"),
             subject="/CN=localhost")
        leaf("email", ext=ext.format(name="email").rstrip("\n") + ", email:ops@example.org\n")
        leaf("under_malformed_int", "int_malformed_ku", intermediate="int_malformed_ku")
        leaf("key_agreement_only",
             ext=ext.replace("digitalSignature", "keyAgreement").format(name="ka"))
        leaf("sgc_only", ext=ext.replace("clientAuth", "nsSGC, msSGC")
             .replace("serverAuth", "nsSGC, msSGC").format(name="sgc"))
    return p


def anchors(spki) -> list[str]:
    return [spki.path(f"{r}.crt") for r in ("sroot", "bc_noncritical_root", "no_bc_root")]


# --- the same verdict from openssl -x509_strict, mtlsd verify, and handshakes ----------------

@pytest.fixture(scope="module")
def verify_cfg(spki, pki, tmp_path_factory):
    cfg = daemon_config([
        server_listener(pki, "127.0.0.1:9", client_auth={"ca": anchors(spki)}),
        {"name": "outbound", "mode": "client", "listen": "127.0.0.1:0",
         "upstream": "localhost:9", "server_auth": {"ca": anchors(spki)}},
    ])
    return write_config(tmp_path_factory.mktemp("vcfg") / "verify.yaml", cfg)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("listener,usage", [("inbound", "client"), ("outbound", "server")])
def test_verify_agrees_with_openssl_strict(mtlsd_bin, spki, verify_cfg, case, listener, usage):
    cert = spki.path(f"{case.name}-{usage}.crt")
    inter = spki.path(f"{case.intermediate}.crt") if case.intermediate else None
    proc = verify_cli(mtlsd_bin, verify_cfg, listener, cert, inter)
    if case.reason == "accepted":
        assert proc.returncode == 0 and proc.stdout.startswith("accepted: "), proc.stdout
    else:
        assert proc.returncode == 1, (proc.stdout, proc.stderr)
        assert proc.stdout.startswith(f"rejected: {case.reason}: "), proc.stdout
    if case.strict_only:
        strict = openssl_strict_verify(spki, anchors(spki), cert, inter)
        assert strict.returncode != 0, strict.stdout  # openssl -x509_strict refuses it too
        lax = subprocess.run(["openssl", "verify", "-partial_chain", "-CAfile",
                              str(Path(spki.root) / "anchors-sroot-bc_noncritical_root-"
                                  "no_bc_root.pem"), *(["-untrusted", inter] if inter else []),
                              "-purpose", "sslclient" if usage == "client" else "sslserver",
                              cert], capture_output=True, text=True)
        assert lax.returncode == 0, lax.stdout + lax.stderr  # only strictness refuses it


def weak_client_ctx(pki, spki, name: str) -> ssl.SSLContext:
    """Python's ssl client presenting a strict-PKI certificate (its own security level off, so
    that it presents even a weak one)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.load_verify_locations(pki.path("ca.crt"))
    ctx.load_cert_chain(spki.path(f"{name}.chain.crt"), spki.path(f"{name}.key"))
    if name.split("-")[0] in ("p192", "dsa", *CURVES):
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.3 has no signature scheme for it
    return ctx


def test_server_mode_handshakes(serve, pki, spki):
    daemon, up = serve(client_auth={"ca": anchors(spki)})
    # Refusals first: assert_refused checks that the upstream has seen no connection at all.
    for case in sorted(CASES, key=lambda c: c.reason == "accepted"):
        ex = tls_exchange(daemon.addr(), weak_client_ctx(pki, spki, f"{case.name}-client"), expect=5)
        if case.reason == "accepted":
            assert_admitted(daemon, ex, b"ping\n")
        else:
            assert_refused(daemon, up, ex, case.reason)
    m = daemon.scrape()
    assert m.get("mtlsd_handshake_failures_total", listener="inbound",
                 reason="name_constraints") == 1
    assert m.get("mtlsd_handshake_failures_total", listener="inbound",
                 reason="bad_certificate") == 4


def test_a_name_constraint_violation_is_named_where_the_allow_list_refuses_too(
        serve, mtlsd_bin, pki, spki, tmp_path):
    """Review: OpenSSL checks name constraints after the verify callback's last call, where the
    allow list is judged, so a leaf its CA had no right to issue was refused as not_authorized
    by a listener whose allow list refuses it too: the reason is name_constraints, in the
    handshake and in `mtlsd verify`. Control: a sound leaf the allow list refuses is
    not_authorized."""
    client_auth = {"ca": anchors(spki), "allow": {"common_names": ["nobody"]}}
    daemon, up = serve(client_auth=client_auth)
    ex = tls_exchange(daemon.addr(), weak_client_ctx(pki, spki, "name_constraints-client"),
                      expect=5)
    assert_refused(daemon, up, ex, "name_constraints")
    ex = tls_exchange(daemon.addr(), weak_client_ctx(pki, spki, "good-client"), expect=5)
    assert_refused(daemon, up, ex, "not_authorized")
    cfg = write_config(tmp_path / "nc.yaml", daemon_config([
        server_listener(pki, "127.0.0.1:9", client_auth=client_auth)]))
    proc = verify_cli(mtlsd_bin, cfg, "inbound", spki.path("name_constraints-client.crt"),
                      spki.path("int_nc.crt"))
    assert proc.returncode == 1 and proc.stdout.startswith("rejected: name_constraints: "), \
        proc.stdout


def outbound(name: str, remote: str, ca: list[str], **extra) -> dict:
    return {"name": name, "mode": "client", "listen": "127.0.0.1:0", "upstream": remote,
            "server_auth": {"ca": ca, "server_name": "localhost", **extra}}


def test_client_mode_handshakes(start_mtlsd, spki):
    remotes = {c.name: Remote(spki.path(f"{c.name}-server.chain.crt"),
                              spki.path(f"{c.name}-server.key"))
               for c in CASES if c.name != "p192"}  # mtlsd's groups start at P-256
    try:
        daemon = start_mtlsd(daemon_config(
            [outbound(n, r.address, anchors(spki)) for n, r in remotes.items()]))
        for case in CASES:
            if case.name == "p192":
                continue
            data, local = plain_exchange(daemon.addr(case.name))
            line = daemon.wait_for_access(client=local)
            assert line["listener"] == case.name, line
            if case.reason == "accepted":
                assert data == b"ping\n" and line["result"] == "accepted", line
            else:
                assert data == b"", line
                assert line["result"] == "rejected" and line["reason"] == case.reason, line
        assert daemon.scrape().get("mtlsd_handshake_failures_total", listener="name_constraints",
                                   reason="name_constraints") == 1
    finally:
        for r in remotes.values():
            r.close()


def test_client_mode_a_wildcard_does_not_stand_for_a_name_its_ca_may_not_issue(
        start_mtlsd, spki, mtlsd_bin, tmp_path):
    """Review: a CA with `excluded DNS:secret.example.org` issued `*.example.org`, and a
    client-mode listener asking for secret.example.org took it (OpenSSL checks the constraints
    against the names in the certificate only). The host asked for is checked too now, in the
    handshake and in `mtlsd verify`; another name the wildcard covers is still accepted."""
    remote = Remote(spki.path("wildcard-server.chain.crt"), spki.path("wildcard-server.key"))
    ca = [spki.path("sroot.crt")]
    listeners = [outbound(name, remote.address, ca, server_name=f"{name}.example.org")
                 for name in ("secret", "other")]
    try:
        client = start_mtlsd(daemon_config(listeners))
        data, local = plain_exchange(client.addr("secret"))
        line = client.wait_for_access(client=local)
        assert data == b"" and line["reason"] == "name_constraints", line
        assert "excluded" in line["detail"], line
        data, local = plain_exchange(client.addr("other"))
        assert data == b"ping\n", client.wait_for_access(client=local)
    finally:
        remote.close()
    cfg = write_config(tmp_path / "wild.yaml", daemon_config(listeners))
    proc = verify_cli(mtlsd_bin, cfg, "secret", spki.path("wildcard-server.crt"),
                      spki.path("int_excluded.crt"))
    assert proc.returncode == 1 and proc.stdout.startswith("rejected: name_constraints: "), \
        proc.stdout


# --- URI name constraints judge a URI's real host ---------------------------------------------

def test_uri_name_constraints_judge_the_real_host(serve, mtlsd_bin, pki, spki, verify_cfg):
    """Review: OpenSSL 3.0 takes a URI SAN's host as what follows "://" up to the next ':' (else
    '/'), so `spiffe://example.org:1@evil.org/x` passed `permitted URI:example.org` though its
    host is evil.org, and went up in XFCC. Below a CA with URI constraints, permitted or
    excluded, mtlsd refuses a URI SAN whose host is not what OpenSSL compared (name_constraints,
    the detail names the URI), in `mtlsd verify` in both modes and in a handshake; a plain URI,
    with a port too, is accepted. OpenSSL alone admits every one of them."""
    for c in URI_CASES:
        for listener, usage in (("inbound", "client"), ("outbound", "server")):
            cert, inter = spki.path(f"{c.name}-{usage}.crt"), spki.path(f"{c.ca}.crt")
            strict = openssl_strict_verify(spki, anchors(spki), cert, inter)
            assert strict.returncode == 0, (c.name, strict.stdout, strict.stderr)
            proc = verify_cli(mtlsd_bin, verify_cfg, listener, cert, inter)
            if c.problem is None:
                assert proc.returncode == 0 and proc.stdout.startswith("accepted: "), \
                    (c.name, proc.stdout, proc.stderr)
                continue
            assert proc.returncode == 1, (c.name, proc.stdout, proc.stderr)
            assert proc.stdout.startswith("rejected: name_constraints: "), proc.stdout
            assert f"URI SAN '{c.uri}' {c.problem}: the URI name constraints of CN={c.ca}," \
                in proc.stdout, proc.stdout
    daemon, up = serve(client_auth={"ca": anchors(spki)})
    ex = tls_exchange(daemon.addr(), weak_client_ctx(pki, spki, "uri_userinfo-client"), expect=5)
    line = assert_refused(daemon, up, ex, "name_constraints")
    assert "URI SAN 'spiffe://example.org:1@evil.org/x' has a userinfo ('@')" in line["detail"], \
        line
    ex = tls_exchange(daemon.addr(), weak_client_ctx(pki, spki, "uri_port-client"), expect=5)
    assert_admitted(daemon, ex, b"ping\n")


# --- keys no TLS signature scheme takes --------------------------------------------------------

def test_verify_refuses_a_key_no_tls_signature_scheme_takes(mtlsd_bin, spki, verify_cfg):
    """Review: EC leaves on P-224, secp256k1 or brainpoolP256r1 (security level 2 takes them)
    passed `mtlsd verify`, then failed handshakes for unrelated reasons (no_client_cert,
    protocol_error): a default listener signs with ECDSA on P-256, P-384 and P-521 only (TLS
    1.3), and TLS 1.2 on the curves of its groups too, which hold none of these. Both modes
    refuse such a leaf, bad_certificate with the curve named, in `verify` as in a handshake."""
    for key, curve in CURVES.items():
        for listener, usage in (("inbound", "client"), ("outbound", "server")):
            proc = verify_cli(mtlsd_bin, verify_cfg, listener, spki.path(f"{key}-{usage}.crt"))
            assert proc.returncode == 1, (key, usage, proc.stdout, proc.stderr)
            assert proc.stdout.startswith("rejected: bad_certificate: key unusable in TLS: "
                                          f"an EC key on {curve}, {DEFAULT_SIGNERS} (depth 0: "), \
                proc.stdout


def test_a_client_key_no_tls_signature_scheme_takes_is_named_in_the_handshake(serve, pki, spki):
    """A TLS 1.2 client presents such a certificate (TLS 1.2's ECDSA schemes name no curve):
    mtlsd refused it only at its CertificateVerify, as protocol_error. The verify callback
    refuses it now, in `verify`'s words. (A TLS 1.3 client has no scheme for the key and sends
    no certificate at all: no_client_cert, which mtlsd cannot tell apart.)"""
    daemon, up = serve(client_auth={"ca": anchors(spki)})
    for key, curve in CURVES.items():
        ex = tls_exchange(daemon.addr(), weak_client_ctx(pki, spki, f"{key}-client"), expect=5)
        line = assert_refused(daemon, up, ex, "bad_certificate")
        assert line["detail"].startswith(f"key unusable in TLS: an EC key on {curve}, "
                                         f"{DEFAULT_SIGNERS}"), line


def test_a_tls12_remote_on_a_curve_of_tls_curves_is_admitted(start_mtlsd, spki):
    """Client mode: TLS 1.2 lets ECDSA sign on any curve both sides list (RFC 8422, RFC 7027
    for brainpool). A remote on P-224, secp256k1 or brainpoolP256r1 with tls.curves offering it
    was refused bad_certificate by 68cf61a, though the handshake works: admitted again."""
    remotes = {k: Remote(spki.path(f"{k}-server.crt"), spki.path(f"{k}-server.key"), tls12=True)
               for k in CURVES}
    curves = {"tls": {"curves": "X25519:P-256:P-224:secp256k1:brainpoolP256r1"}}
    try:
        client = start_mtlsd(daemon_config([{**outbound(k, r.address, anchors(spki)), **curves}
                                            for k, r in remotes.items()]))
        for key in CURVES:
            data, local = plain_exchange(client.addr(key))
            line = client.wait_for_access(client=local)
            assert data == b"ping\n" and line["result"] == "accepted", line
    finally:
        for r in remotes.values():
            r.close()


def brainpool_cfg(pki, spki, tmp_path) -> Path:
    """A server and a client listener each for TLS 1.2 and for TLS 1.3 alone, both with
    brainpoolP256r1 in tls.curves."""
    listeners = []
    for v, tls in (("12", TLS12_BRAINPOOL), ("13", TLS13_BRAINPOOL)):
        listeners.append(server_listener(pki, "127.0.0.1:9", name=f"inbound{v}", tls=tls,
                                         client_auth={"ca": anchors(spki)}))
        listeners.append({**outbound(f"outbound{v}", "localhost:9", anchors(spki)), "tls": tls})
    return write_config(tmp_path / "brainpool.yaml", daemon_config(listeners))


def test_brainpool_follows_the_listeners_tls_versions_and_curves(mtlsd_bin, pki, spki, tmp_path):
    """Review of 68cf61a: TLS 1.2 signs with brainpool when both sides list the curve (RFC
    7027; BSI/gematik deployments need it). `verify` admits a brainpoolP256r1 leaf on a TLS 1.2
    listener listing the curve, in both modes, and still refuses it on a TLS 1.3-only one
    listing it (TLS 1.3 has no scheme for it), saying what that listener signs with."""
    cfg = brainpool_cfg(pki, spki, tmp_path)
    for mode, usage in (("inbound", "client"), ("outbound", "server")):
        proc = verify_cli(mtlsd_bin, cfg, f"{mode}12", spki.path(f"brainpool-{usage}.crt"))
        assert proc.returncode == 0 and proc.stdout.startswith("accepted: "), \
            (mode, proc.stdout, proc.stderr)
        proc = verify_cli(mtlsd_bin, cfg, f"{mode}13", spki.path(f"brainpool-{usage}.crt"))
        assert proc.returncode == 1, (mode, proc.stdout, proc.stderr)
        assert proc.stdout.startswith(
            "rejected: bad_certificate: key unusable in TLS: an EC key on brainpoolP256r1, which "
            "this listener's TLS versions and curves cannot sign with (TLS 1.3: P-256, P-384, "
            "P-521) (depth 0: "), proc.stdout


def test_a_tls12_listener_listing_brainpool_admits_a_brainpool_client(serve, pki, spki):
    """The handshake `verify` stands for, brainpool end to end: a TLS 1.2 client on
    brainpoolP256r1 (its only group) is admitted by a listener whose tls.curves lists it and
    whose own certificate is on brainpoolP256r1 too (a client takes a server's ECDSA key only
    on a curve it lists)."""
    own = {**TLS12_BRAINPOOL, "cert": spki.path("brainpool-server.crt"),
           "key": spki.path("brainpool-server.key")}
    daemon, up = serve(client_auth={"ca": anchors(spki)}, tls=own)
    ctx = weak_client_ctx(pki, spki, "brainpool-client")
    ctx.load_verify_locations(spki.path("sroot.crt"))
    ctx.set_ecdh_curve("brainpoolP256r1")
    ex = tls_exchange(daemon.addr(), ctx, expect=5)
    assert_admitted(daemon, ex, b"ping\n")
    assert ex.version == "TLSv1.2", ex.version


def test_a_dsa_client_over_tls12_is_admitted(serve, mtlsd_bin, pki, spki, verify_cfg, tmp_path):
    """TLS 1.2 clients sign CertificateVerify with DSA keys (OpenSSL 3.0 admits them at
    security level 2 from 2048 bits): 68cf61a refused them (bad_certificate) on every listener.
    A default listener admits one, in a handshake and in `verify`; one allowing TLS 1.3 alone
    refuses it in `verify`'s words."""
    daemon, up = serve(client_auth={"ca": anchors(spki)})
    ex = tls_exchange(daemon.addr(), weak_client_ctx(pki, spki, "dsa-client"), expect=5)
    assert_admitted(daemon, ex, b"ping\n")
    proc = verify_cli(mtlsd_bin, verify_cfg, "inbound", spki.path("dsa-client.crt"))
    assert proc.returncode == 0 and proc.stdout.startswith("accepted: "), proc.stdout
    cfg = brainpool_cfg(pki, spki, tmp_path)
    for mode, usage in (("inbound", "client"), ("outbound", "server")):
        proc = verify_cli(mtlsd_bin, cfg, f"{mode}13", spki.path(f"dsa-{usage}.crt"))
        assert proc.returncode == 1, (mode, proc.stdout, proc.stderr)
        assert proc.stdout.startswith("rejected: bad_certificate: key unusable in TLS: a DSA "
                                      "key, which TLS 1.3 cannot sign with (depth 0: "), \
            proc.stdout


def test_check_takes_an_own_brainpool_key_on_a_tls12_listener_listing_it(
        mtlsd_bin, pki, spki, tmp_path):
    """`mtlsd check` judges our own key as a peer's, by the listener's TLS versions and curves:
    a brainpoolP256r1 certificate of ours passes on a TLS 1.2 listener listing the curve, in
    both modes, and is refused on a TLS 1.3-only one."""
    for v, tls, ok in (("12", TLS12_BRAINPOOL, True), ("13", TLS13_BRAINPOOL, False)):
        for listener, usage in (("inbound", "server"), ("outbound", "client")):
            own = {**tls, "cert": spki.path(f"brainpool-{usage}.crt"),
                   "key": spki.path(f"brainpool-{usage}.key")}
            if listener == "inbound":
                cfg_l = server_listener(pki, "127.0.0.1:9", tls=own)
            else:
                cfg_l = {**outbound(listener, "127.0.0.1:9", anchors(spki)), "tls": own}
            cfg = write_config(tmp_path / f"own{v}{listener}.yaml", daemon_config([cfg_l]))
            proc = run_cli(mtlsd_bin, "check", "--config", str(cfg))
            if ok:
                assert proc.returncode == 0, (v, listener, proc.stdout, proc.stderr)
            else:
                assert proc.returncode == 1, (v, listener, proc.stdout, proc.stderr)
                assert "is unusable in TLS: an EC key on brainpoolP256r1, which this listener's " \
                    "TLS versions and curves cannot sign with (TLS 1.3: P-256, P-384, P-521)" \
                    in proc.stderr, proc.stderr


def test_check_refuses_an_own_key_no_tls_signature_scheme_takes(mtlsd_bin, pki, spki, tmp_path):
    """`mtlsd check` took our own certificate on such a curve (TLS 1.3 handshakes then failed,
    and mtlsd refuses such a peer now): on a default listener, whose groups hold none of these
    curves, it names the key, in both modes."""
    for key, curve in CURVES.items():
        own = {"cert": spki.path(f"{key}-server.crt"), "key": spki.path(f"{key}-server.key")}
        for listener in (server_listener(pki, "127.0.0.1:9", tls=own),
                         {**outbound("outbound", "127.0.0.1:9", anchors(spki)),
                          "tls": {**own, "cert": spki.path(f"{key}-client.crt"),
                                  "key": spki.path(f"{key}-client.key")}}):
            cfg = write_config(tmp_path / f"{key}.yaml", daemon_config([listener]))
            proc = run_cli(mtlsd_bin, "check", "--config", str(cfg))
            assert proc.returncode == 1, (key, proc.stdout, proc.stderr)
            assert f"is unusable in TLS: an EC key on {curve}, {DEFAULT_SIGNERS}" in proc.stderr, \
                proc.stderr


# --- trust anchors, names, depth, e-mail -------------------------------------------------------

def test_an_issuing_ca_alone_is_a_trust_anchor_in_both_modes(serve, start_mtlsd, pki, spki):
    issuing = [spki.path("issuing.crt")]
    daemon, up = serve(client_auth={"ca": issuing})
    # A certificate of the root that issued it is not admitted: only the listed CA is trusted.
    ex = tls_exchange(daemon.addr(), weak_client_ctx(pki, spki, "good-client"), expect=5)
    assert_refused(daemon, up, ex, "unknown_ca")
    ex = tls_exchange(daemon.addr(), weak_client_ctx(pki, spki, "issued-client"), expect=5)
    assert_admitted(daemon, ex, b"ping\n")

    remote = Remote(spki.path("issued-server.crt"), spki.path("issued-server.key"))
    try:
        client = start_mtlsd(daemon_config([outbound("outbound", remote.address, issuing)]))
        data, local = plain_exchange(client.addr("outbound"))
        assert data == b"ping\n", client.wait_for_access(client=local)
    finally:
        remote.close()


def test_client_mode_never_falls_back_to_the_cn(start_mtlsd, spki, mtlsd_bin, verify_cfg):
    remote = Remote(spki.path("cn_only-server.crt"), spki.path("cn_only-server.key"))
    try:
        client = start_mtlsd(daemon_config([outbound("outbound", remote.address,
                                                     [spki.path("sroot.crt")])]))
        data, local = plain_exchange(client.addr("outbound"))
        line = client.wait_for_access(client=local)
        assert data == b"" and line["reason"] == "hostname_mismatch", line
    finally:
        remote.close()
    proc = verify_cli(mtlsd_bin, verify_cfg, "outbound", spki.path("cn_only-server.crt"))
    assert proc.returncode == 1 and proc.stdout.startswith("rejected: hostname_mismatch"), \
        proc.stdout


def test_server_auth_verify_depth(start_mtlsd, spki):
    remote = Remote(spki.path("issued-server.chain.crt"), spki.path("issued-server.key"))
    try:
        client = start_mtlsd(daemon_config([
            outbound("shallow", remote.address, [spki.path("sroot.crt")], verify_depth=0),
            outbound("deep", remote.address, [spki.path("sroot.crt")], verify_depth=1),
        ]))
        data, local = plain_exchange(client.addr("shallow"))
        line = client.wait_for_access(client=local)
        assert data == b"" and line["reason"] == "chain_too_long", line
        data, local = plain_exchange(client.addr("deep"))
        assert data == b"ping\n", client.wait_for_access(client=local)
    finally:
        remote.close()


def test_email_sans_in_both_modes(serve, start_mtlsd, pki, spki):
    daemon, up = serve(client_auth={"ca": [spki.path("sroot.crt")],
                                    "allow": {"email_sans": ["ops@EXAMPLE.org"]}})
    ex = tls_exchange(daemon.addr(), weak_client_ctx(pki, spki, "good-client"), expect=5)
    line = assert_refused(daemon, up, ex, "not_authorized")
    assert "matches no allow rule" in line["detail"], line
    ex = tls_exchange(daemon.addr(), weak_client_ctx(pki, spki, "email-client"), expect=5)
    assert_admitted(daemon, ex, b"ping\n")

    remote_ok = Remote(spki.path("email-server.crt"), spki.path("email-server.key"))
    remote_no = Remote(spki.path("good-server.crt"), spki.path("good-server.key"))
    try:
        allow = {"allow": {"email_sans": ["ops@example.org"]}}
        client = start_mtlsd(daemon_config([
            outbound("ok", remote_ok.address, [spki.path("sroot.crt")], **allow),
            outbound("no", remote_no.address, [spki.path("sroot.crt")], **allow),
        ]))
        data, local = plain_exchange(client.addr("ok"))
        assert data == b"ping\n", client.wait_for_access(client=local)
        data, local = plain_exchange(client.addr("no"))
        line = client.wait_for_access(client=local)
        assert data == b"" and line["reason"] == "not_authorized", line
    finally:
        remote_ok.close()
        remote_no.close()


# --- verify: an unparseable certificate is a rejection ------------------------------------------

def test_verify_rejects_an_unparseable_certificate(mtlsd_bin, verify_cfg, tmp_path):
    bad = tmp_path / "garbage.crt"
    bad.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n"
                   "-----END CERTIFICATE-----\n")
    proc = verify_cli(mtlsd_bin, verify_cfg, "inbound", str(bad))
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stdout.startswith("rejected: bad_certificate: "), proc.stdout
    # What cannot be read is a usage error (2), which a script can tell from a rejection (1):
    # a missing file, and a directory (review: rejected: bad_certificate, exit 1).
    missing = verify_cli(mtlsd_bin, verify_cfg, "inbound", str(tmp_path / "nope.crt"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr, missing.stderr
    assert "No such file or directory" in missing.stderr, missing.stderr
    folder = verify_cli(mtlsd_bin, verify_cfg, "inbound", str(tmp_path))
    assert folder.returncode == 2, (folder.stdout, folder.stderr)
    assert f"cannot read {tmp_path}: a directory" in folder.stderr, folder.stderr
    assert folder.stdout == "", folder.stdout


# --- a forged CertificateVerify ---------------------------------------------------------------

def forged_key(cert: str, out: Path) -> str:
    """An EC key file whose public half is `cert`'s and whose private half is a fresh key's:
    TLS libraries accept it as the certificate's key (they compare public halves), so the
    handshake signature they make with it does not verify."""
    other = out.with_suffix(".other.key")
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", str(other)], check=True,
                   capture_output=True)
    sec1 = subprocess.run(["openssl", "ec", "-in", str(other), "-outform", "DER"], check=True,
                          capture_output=True).stdout
    pub = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-pubkey"], check=True,
                         capture_output=True).stdout
    spki_der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                              check=True, capture_output=True).stdout
    point = spki_der[-65:]
    assert point[0] == 4 and sec1[-65] == 4  # both uncompressed P-256 points, at the very end
    forged = sec1[:-65] + point
    out.write_text("-----BEGIN EC PRIVATE KEY-----\n" +
                   base64.encodebytes(forged).decode() + "-----END EC PRIVATE KEY-----\n")
    return str(out)


def test_forged_certificate_verify_from_a_client_is_bad_signature(serve, pki, tmp_path):
    daemon, up = serve()
    key = forged_key(pki.path("client.crt"), tmp_path / "forged.key")
    ctx = client_context(pki)
    ctx.load_cert_chain(pki.path("client.crt"), key)  # Python's ssl is fooled: halves match
    ex = tls_exchange(daemon.addr(), ctx, expect=5)
    line = assert_refused(daemon, up, ex, "bad_signature")
    assert "bad signature" in line["detail"], line
    # openssl s_client, the same way.
    mark = daemon.log_mark()
    host, port = daemon.addr()
    proc = subprocess.run(["openssl", "s_client", "-connect", f"{host}:{port}", "-cert",
                           pki.path("client.crt"), "-key", key, "-CAfile", pki.path("ca.crt"),
                           "-tls1_2"], input=b"ping\n", capture_output=True, timeout=TIMEOUT)
    assert b"ping" not in proc.stdout.split(b"---")[-1]
    daemon.wait_for_log(lambda l: l.get("msg") == "access" and l.get("reason") == "bad_signature",
                        since=mark)


def test_forged_certificate_verify_from_a_remote_is_bad_signature(start_mtlsd, pki, tmp_path):
    key = forged_key(pki.path("server.crt"), tmp_path / "forged.key")
    remote = Remote(pki.path("server.crt"), key)
    try:
        client = start_mtlsd(daemon_config([outbound("outbound", remote.address,
                                                     [pki.path("ca.crt")])]))
        data, local = plain_exchange(client.addr("outbound"))
        line = client.wait_for_access(client=local)
        assert data == b"" and line["reason"] == "bad_signature", line
    finally:
        remote.close()
