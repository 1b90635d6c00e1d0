"""`mtlsd check` under crl_scope: chain: a CA the trust bundle holds with its issuer is no anchor,
so every client through it needs a CRL of that issuer too. Review: the shipped examples
(deploy/systemd/mtlsd.yaml, deploy/kubernetes/legacy-front.yaml) named one CRL, the issuing
CA's, beside a root -> issuing CA bundle; `check` said valid and `verify` (like every handshake)
refused each client: revocation_unavailable, unable to get certificate CRL (depth 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import verify_cli
from mtlsd_harness import daemon_config, run_cli, server_listener, write_config

INTERMEDIATE = "CN=mtlsd Test Intermediate CA,O=mtlsd Test"
ROOT = "CN=mtlsd Test Root CA,O=mtlsd Test"


@pytest.fixture
def bundle(pki, tmp_path) -> str:
    """The root and the issuing CA under it, in one file: the issuing CA is no anchor."""
    out = tmp_path / "bundle.crt"
    out.write_bytes(Path(pki.path("ca.crt")).read_bytes() + Path(pki.path("int.crt")).read_bytes())
    return str(out)


def config(pki, tmp_path, ca: list[str], revocation: dict, name: str = "c.yaml") -> Path:
    listener = server_listener(pki, "127.0.0.1:9", client_auth={"ca": ca, "verify_depth": 2},
                               revocation=revocation)
    return write_config(tmp_path / name, daemon_config([listener]))


def check_warnings(mtlsd_bin, cfg: Path) -> list[str]:
    proc = run_cli(mtlsd_bin, "check", "--config", str(cfg))
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "is valid" in text, text
    return [l for l in text.splitlines() if "warning: " in l and "crl_scope" in l]


def test_check_warns_of_an_issuing_ca_whose_issuers_crl_is_missing(mtlsd_bin, pki, tmp_path,
                                                                   bundle):
    cfg = config(pki, tmp_path, [bundle], {"crl_files": [pki.path("int-crl.pem")],
                                           "crl_scope": "chain"})
    warned = check_warnings(mtlsd_bin, cfg)
    assert len(warned) == 1, warned
    w = warned[0]
    assert w.startswith(f"{cfg}:") and INTERMEDIATE in w and f"no CRL of {ROOT}" in w, w
    assert "every client through it will be refused as revocation_unavailable" in w, w
    # What it warns of is so: the handshake's own verification refuses the client.
    proc = verify_cli(mtlsd_bin, cfg, "inbound", pki.path("client-int.crt"))
    assert proc.returncode == 1 and "revocation_unavailable" in proc.stdout, proc.stdout

    # With the root's CRL too, every level has one: no warning, and the client is admitted.
    both = config(pki, tmp_path, [bundle], {
        "crl_files": [pki.path("crl.pem"), pki.path("int-crl.pem")], "crl_scope": "chain"},
        "both.yaml")
    assert check_warnings(mtlsd_bin, both) == []
    proc = verify_cli(mtlsd_bin, both, "inbound", pki.path("client-int.crt"))
    assert proc.returncode == 0 and proc.stdout.startswith("accepted"), proc.stdout


def test_no_warning_where_nothing_needs_the_issuers_crl(mtlsd_bin, pki, tmp_path, bundle):
    int_crl = [pki.path("int-crl.pem")]
    # crl_scope: leaf checks the client's certificate only.
    leaf = config(pki, tmp_path, [bundle], {"crl_files": int_crl, "crl_scope": "leaf"}, "l.yaml")
    assert check_warnings(mtlsd_bin, leaf) == []
    # The issuing CA listed alone is an anchor, never checked.
    alone = config(pki, tmp_path, [pki.path("int.crt")],
                   {"crl_files": int_crl, "crl_scope": "chain"}, "a.yaml")
    assert check_warnings(mtlsd_bin, alone) == []
    # OCSP for every level may answer for it.
    ocsp = config(pki, tmp_path, [bundle], {"crl_files": int_crl, "crl_scope": "chain",
                                            "ocsp": "chain",
                                            "ocsp_responder": "http://127.0.0.1:9/"}, "o.yaml")
    assert check_warnings(mtlsd_bin, ocsp) == []


def test_under_allow_the_warning_says_the_clients_are_admitted(mtlsd_bin, pki, tmp_path, bundle):
    cfg = config(pki, tmp_path, [bundle], {"crl_files": [pki.path("int-crl.pem")],
                                           "crl_scope": "chain", "on_unavailable": "allow"})
    warned = check_warnings(mtlsd_bin, cfg)
    assert len(warned) == 1 and INTERMEDIATE in warned[0], warned
    assert "admitted unchecked at that level" in warned[0], warned


def issuing_warnings(mtlsd_bin, cfg: Path) -> list[str]:
    proc = run_cli(mtlsd_bin, "check", "--config", str(cfg))
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "is valid" in text, text
    return [l for l in text.splitlines() if "warning: " in l and "no CRL of the trusted CA" in l]


def test_check_warns_of_an_issuing_ca_without_a_crl_of_its_own(mtlsd_bin, pki, tmp_path, bundle):
    """Review: crl_files holding the root's CRL alone, beside a root -> issuing CA bundle, left
    every client of the issuing CA refused (no CRL of its issuer), and `check` said nothing: the
    chain warning covers the CAs above another, not the one at the bottom of the bundle."""
    for scope, says in (("leaf", "every client certificate it issues directly"),
                        ("chain", "every client through it (crl_scope: chain checks every level)")):
        cfg = config(pki, tmp_path, [bundle], {"crl_files": [pki.path("crl.pem")],
                                               "crl_scope": scope}, f"{scope}.yaml")
        warned = issuing_warnings(mtlsd_bin, cfg)
        assert len(warned) == 1 and warned[0].startswith(f"{cfg}:"), warned
        assert f"no CRL of the trusted CA {INTERMEDIATE} is in crl_files" in warned[0], warned
        assert f"{says} will be refused as revocation_unavailable" in warned[0], warned
        proc = verify_cli(mtlsd_bin, cfg, "inbound", pki.path("client-int.crt"))
        assert proc.returncode == 1 and "revocation_unavailable" in proc.stdout, proc.stdout

    # Its CRL given, or OCSP to answer, or on_unavailable: allow (said so): as it should be.
    fine = config(pki, tmp_path, [bundle], {"crl_files": [pki.path("int-crl.pem")],
                                            "crl_scope": "leaf"}, "f.yaml")
    assert issuing_warnings(mtlsd_bin, fine) == []
    ocsp = config(pki, tmp_path, [bundle], {"crl_files": [pki.path("crl.pem")], "ocsp": "leaf",
                                            "ocsp_responder": "http://127.0.0.1:9/"}, "o.yaml")
    assert issuing_warnings(mtlsd_bin, ocsp) == []
    allow = config(pki, tmp_path, [bundle], {"crl_files": [pki.path("crl.pem")],
                                             "on_unavailable": "allow"}, "a.yaml")
    warned = issuing_warnings(mtlsd_bin, allow)
    assert len(warned) == 1 and "admitted unchecked" in warned[0], warned


def test_the_peers_issuing_ca_outside_the_bundle(mtlsd_bin, pki, tmp_path):
    """Review of the warning above: the usual layout, the root alone in the bundle and the
    intermediate (which clients send) with its CRL in crl_files, was warned of under crl_scope:
    leaf, though every client is admitted: a CRL of an issuer the bundle does not hold says the
    peers send it. Under chain (the default) the intermediate needs the root's CRL: warned of,
    and so it is."""
    ints = {"crl_files": [pki.path("int-crl.pem")]}
    leaf = config(pki, tmp_path, [pki.path("ca.crt")], {**ints, "crl_scope": "leaf"}, "l.yaml")
    assert issuing_warnings(mtlsd_bin, leaf) == []
    proc = verify_cli(mtlsd_bin, leaf, "inbound", pki.path("client-int-chain.crt"))
    assert proc.returncode == 0 and proc.stdout.startswith("accepted"), proc.stdout
    chain = config(pki, tmp_path, [pki.path("ca.crt")], ints, "c.yaml")
    warned = issuing_warnings(mtlsd_bin, chain)
    assert len(warned) == 1 and f"no CRL of the trusted CA {ROOT}" in warned[0], warned
    proc = verify_cli(mtlsd_bin, chain, "inbound", pki.path("client-int-chain.crt"))
    assert proc.returncode == 1 and "revocation_unavailable" in proc.stdout, proc.stdout
