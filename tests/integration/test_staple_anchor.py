"""Client mode checks the remote's stapled OCSP response whenever mtlsd admitted its chain.

Review: the check was skipped when OpenSSL's own verify result was not X509_V_OK although
mtlsd's verify callback had accepted the chain, as it does for the documented "issuing CA alone
is an anchor" setup with a CRL file (OpenSSL wants a CRL for the anchor too, mtlsd does not): a
remote that stapled nothing passed `require_staple: true`, and one stapled as `revoked` was
admitted.

Real peers on the other side: `openssl s_server` remotes (stapling with -status_file), the
responses made by `openssl ocsp`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from mtlsd_harness import daemon_config
from revocation_env import metric
from test_trust_binding import local_admitted, local_refused
from tls_remote import s_server

def ocsp_response(pki, tmp_path: Path, db: str, issuer: str, cert: str) -> str:
    """A fresh OCSP response for `cert`, signed by its issuing CA `issuer` from the `openssl ca`
    database `db` (db/int/index.txt: whatever that says, good or revoked). Returns its path."""
    req, resp = tmp_path / f"{Path(cert).stem}.req", tmp_path / f"{Path(cert).stem}.resp.der"
    subprocess.run(["openssl", "ocsp", "-issuer", pki.path(f"{issuer}.crt"),
                    "-cert", pki.path(cert), "-no_nonce", "-reqout", str(req)],
                   check=True, capture_output=True, timeout=30)
    subprocess.run(["openssl", "ocsp", "-index", pki.path(db), "-CA", pki.path(f"{issuer}.crt"),
                    "-rsigner", pki.path(f"{issuer}.crt"), "-rkey", pki.path(f"{issuer}.key"),
                    "-reqin", str(req), "-respout", str(resp), "-ndays", "1"],
                   check=True, capture_output=True, timeout=30)
    return str(resp)


def via_intermediate(pki, remote: str, name: str, anchors: list[str], crls: list[str],
                     **revocation) -> dict:
    """A client-mode listener to a remote presenting server-int.crt (root -> int -> leaf)."""
    return {"name": name, "mode": "client", "listen": "127.0.0.1:0", "upstream": remote,
            "tls": {"cert": pki.path("client.crt"), "key": pki.path("client.key")},
            "server_auth": {"ca": [pki.path(a) for a in anchors], "server_name": "localhost"},
            "revocation": {"crl_files": [pki.path(c) for c in crls], **revocation}}


INT_ONLY = (["int.crt"], ["int-crl.pem"])              # the issuing CA alone is the anchor
ROOT_AND_INT = (["ca.crt", "int.crt"], ["crl.pem", "int-crl.pem"])


def test_require_staple_holds_when_the_issuing_ca_alone_is_the_anchor(start_mtlsd, pki):
    """server_auth.ca: [the intermediate] with its CRL file, require_staple: true, and a remote
    (openssl s_server) that staples nothing: refused, revocation_unavailable, detail saying no
    OCSP response was stapled. Control: root + intermediate with both CRLs, refused alike."""
    with s_server(pki.path("server-int.crt"), pki.path("server-int.key")) as remote:
        daemon = start_mtlsd(daemon_config([
            via_intermediate(pki, remote, "int_only", *INT_ONLY, require_staple=True),
            via_intermediate(pki, remote, "root_and_int", *ROOT_AND_INT, require_staple=True),
            via_intermediate(pki, remote, "no_staple_needed", *INT_ONLY),
        ]))
        # The chain itself is sound in that setup: without require_staple it is admitted.
        local_admitted(daemon, "no_staple_needed")
        for name in ("root_and_int", "int_only"):
            line = local_refused(daemon, name)
            assert line["reason"] == "revocation_unavailable", line
            assert "no OCSP response" in line["detail"], line
            assert "require_staple" in line["detail"], line


def test_a_staple_saying_revoked_refuses_when_the_issuing_ca_alone_is_the_anchor(
        start_mtlsd, pki, tmp_path):
    """The remote's certificate is revoked by its CA's OCSP responder (not yet on the CRL file
    mtlsd has), and the remote staples that answer: refused, reason revoked, from the stapled
    response, with or without require_staple. Control: root + intermediate, refused alike."""
    mine = pki.copy_to(tmp_path / "pki")
    # int-crl.pem was made before this revocation: the CRL file still says good.
    mine.openssl("ca", "-batch", "-name", "int_ca", "-revoke", mine.path("server-int.crt"),
                 "-crl_reason", "keyCompromise")
    der = ocsp_response(mine, tmp_path, "db/int/index.txt", "int", "server-int.crt")
    status = subprocess.run(["openssl", "ocsp", "-respin", der, "-resp_text", "-noverify"],
                            capture_output=True, text=True, timeout=30).stdout
    assert "Cert Status: revoked" in status, status
    with s_server(mine.path("server-int.crt"), mine.path("server-int.key"),
                  "-status_file", der) as remote:
        names = ["root_and_int", "int_only", "int_only_required"]
        daemon = start_mtlsd(daemon_config([
            via_intermediate(mine, remote, "root_and_int", *ROOT_AND_INT),
            via_intermediate(mine, remote, "int_only", *INT_ONLY),
            via_intermediate(mine, remote, "int_only_required", *INT_ONLY, require_staple=True),
        ]))
        for name in names:
            line = local_refused(daemon, name)
            assert line["reason"] == "revoked", line
            assert "stapled OCSP response" in line["detail"], line
            assert metric(daemon, "mtlsd_revocation_checks_total", listener=name,
                          method="ocsp", result="revoked") == 1, name


def test_a_good_staple_is_checked_when_the_issuing_ca_alone_is_the_anchor(start_mtlsd, pki,
                                                                          tmp_path):
    """The other side of the same fix: in the intermediate-only setup a remote stapling a good
    answer from its CA is admitted under require_staple — and the staple was checked (counted
    as an OCSP check saying good), as it is with root + intermediate."""
    der = ocsp_response(pki, tmp_path, "db/int/index.txt", "int", "server-int.crt")
    with s_server(pki.path("server-int.crt"), pki.path("server-int.key"),
                  "-status_file", der) as remote:
        names = ["root_and_int", "int_only"]
        daemon = start_mtlsd(daemon_config([
            via_intermediate(pki, remote, "root_and_int", *ROOT_AND_INT, require_staple=True),
            via_intermediate(pki, remote, "int_only", *INT_ONLY, require_staple=True),
        ]))
        for name in names:
            local_admitted(daemon, name)
            assert metric(daemon, "mtlsd_revocation_checks_total", listener=name,
                          method="ocsp", result="good") == 1, f"{name}: the staple was not checked"
