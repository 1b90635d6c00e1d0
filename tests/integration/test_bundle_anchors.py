"""A trust bundle holding a root AND an intermediate it issued: the intermediate is not an anchor
(it only helps build chains), so the root's restrictions still apply to it, through `mtlsd
verify` and real handshakes in both modes: the root's name constraints, and the root's CRL
revoking the intermediate (crl_scope: chain). An intermediate listed without its root is still
an anchor (test_strict_validation covers that)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from clients import tls_exchange
from helpers import verify_cli
from mtlsd_harness import daemon_config, server_listener, write_config
from refusal import assert_admitted, assert_refused
from strict_pki import GOOD_CA, GOOD_LEAF, StrictPki
from test_strict_validation import outbound, weak_client_ctx
from tls_remote import Remote, plain_exchange

BOTH_EKU = "extendedKeyUsage = clientAuth, serverAuth\n"


def crl(pki: StrictPki, issuer: str, revoked: list[str]) -> str:
    """A CRL of `issuer` (valid now) revoking the certificates named `revoked`."""
    ca = x509.load_pem_x509_certificate(Path(pki.path(f"{issuer}.crt")).read_bytes())
    key = serialization.load_pem_private_key(Path(pki.path(f"{issuer}.key")).read_bytes(), None)
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
         .last_update(now - datetime.timedelta(minutes=5))
         .next_update(now + datetime.timedelta(days=1))
         .add_extension(x509.CRLNumber(1), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()),
                        critical=False))
    for name in revoked:
        c = x509.load_pem_x509_certificate(Path(pki.path(f"{name}.crt")).read_bytes())
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(c.serial_number)
            .revocation_date(now - datetime.timedelta(minutes=1)).build())
    out = pki.path(f"{issuer}.crl.pem")
    Path(out).write_bytes(b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return out


@pytest.fixture(scope="module")
def bpki(tmp_path_factory) -> StrictPki:
    p = StrictPki(tmp_path_factory.mktemp("bundle"))
    # Name constraints on the root only; the intermediate under it has none of its own.
    p.ca("ncroot", GOOD_CA + "nameConstraints = critical, permitted;DNS:example.com\n")
    p.ca("ncint", issuer="ncroot")
    p.leaf("evil", "ncint", "client", intermediate="ncint",
           ext=GOOD_LEAF + BOTH_EKU + "subjectAltName = DNS:evil.test\n")
    p.leaf("fine", "ncint", "client", intermediate="ncint",
           ext=GOOD_LEAF + BOTH_EKU + "subjectAltName = DNS:localhost.example.com\n")
    # The root's CRL revokes the intermediate; the intermediate's own CRL revokes nothing.
    p.ca("rroot")
    p.ca("rint", issuer="rroot")
    p.leaf("rleaf", "rint", "client", intermediate="rint",
           ext=GOOD_LEAF + BOTH_EKU + "subjectAltName = DNS:localhost\n")
    crl(p, "rroot", ["rint"])
    crl(p, "rint", [])
    return p


def nc_bundle(bpki) -> list[str]:
    return [bpki.path("ncroot.crt"), bpki.path("ncint.crt")]


def r_bundle(bpki) -> list[str]:
    return [bpki.path("rroot.crt"), bpki.path("rint.crt")]


def r_revocation(bpki) -> dict:
    return {"crl_files": [bpki.path("rroot.crl.pem"), bpki.path("rint.crl.pem")],
            "crl_scope": "chain"}


@pytest.fixture(scope="module")
def cfg(bpki, pki, tmp_path_factory):
    c = daemon_config([
        server_listener(pki, "127.0.0.1:9", name="nc", client_auth={"ca": nc_bundle(bpki)}),
        server_listener(pki, "127.0.0.1:9", name="rv", client_auth={"ca": r_bundle(bpki)},
                        revocation=r_revocation(bpki)),
    ])
    return write_config(tmp_path_factory.mktemp("bcfg") / "verify.yaml", c)


@pytest.mark.parametrize("with_chain", [False, True])
def test_verify_applies_the_roots_name_constraints(mtlsd_bin, bpki, cfg, with_chain):
    inter = bpki.path("ncint.crt") if with_chain else None
    proc = verify_cli(mtlsd_bin, cfg, "nc", bpki.path("evil.crt"), inter)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stdout.startswith("rejected: name_constraints: "), proc.stdout
    proc = verify_cli(mtlsd_bin, cfg, "nc", bpki.path("fine.crt"), inter)
    assert proc.returncode == 0 and proc.stdout.startswith("accepted: "), proc.stdout


@pytest.mark.parametrize("with_chain", [False, True])
def test_verify_applies_the_roots_crl_to_the_intermediate(mtlsd_bin, bpki, cfg, with_chain):
    inter = bpki.path("rint.crt") if with_chain else None
    proc = verify_cli(mtlsd_bin, cfg, "rv", bpki.path("rleaf.crt"), inter)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stdout.startswith("rejected: revoked: "), proc.stdout


def test_server_mode_handshakes(serve, pki, bpki):
    daemon, up = serve(client_auth={"ca": nc_bundle(bpki)})
    ex = tls_exchange(daemon.addr(), weak_client_ctx(pki, bpki, "evil"), expect=5)
    assert_refused(daemon, up, ex, "name_constraints")
    ex = tls_exchange(daemon.addr(), weak_client_ctx(pki, bpki, "fine"), expect=5)
    assert_admitted(daemon, ex, b"ping\n")


def test_server_mode_refuses_a_revoked_intermediate(serve, pki, bpki):
    daemon, up = serve(client_auth={"ca": r_bundle(bpki)}, revocation=r_revocation(bpki))
    ex = tls_exchange(daemon.addr(), weak_client_ctx(pki, bpki, "rleaf"), expect=5)
    assert_refused(daemon, up, ex, "revoked")


def test_client_mode_handshakes(start_mtlsd, bpki):
    remotes = {n: Remote(bpki.path(f"{n}.chain.crt"), bpki.path(f"{n}.key"))
               for n in ("evil", "fine", "rleaf")}
    try:
        nc = nc_bundle(bpki)
        daemon = start_mtlsd(daemon_config([
            outbound("evil", remotes["evil"].address, nc, server_name="evil.test"),
            outbound("fine", remotes["fine"].address, nc, server_name="localhost.example.com"),
            {**outbound("rleaf", remotes["rleaf"].address, r_bundle(bpki)),
             "revocation": r_revocation(bpki)},
        ]))
        for name, reason in (("evil", "name_constraints"), ("rleaf", "revoked"),
                             ("fine", None)):
            data, local = plain_exchange(daemon.addr(name))
            line = daemon.wait_for_access(client=local)
            assert line["listener"] == name, line
            if reason is None:
                assert data == b"ping\n" and line["result"] == "accepted", line
            else:
                # Nothing reaches the remote from us once the remote is refused.
                assert data == b"", line
                assert line["result"] == "rejected" and line["reason"] == reason, line
    finally:
        for r in remotes.values():
            r.close()
