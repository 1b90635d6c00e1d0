"""Client mode, revocation.require_staple: every connection carries and checks a staple — also
the second and third to the same remote (no session resumption, which would skip the check) —
and a remote whose verified chain is one certificate long is refused without a staple too."""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path

import pytest

from mtlsd_harness import daemon_config
from revocation_env import *  # noqa: F401,F403  (fixtures)
from revocation_env import metric
from test_client_revocation import outbound, refused
from test_ocsp_revocation_stands import signed_answer
from tls_remote import Remote, plain_exchange, s_server

TIMEOUT = 10.0


def good_response(rpki, cert: str, out: Path) -> str:
    """A signed OCSP response saying `good` for `cert`, from the root's database."""
    req = out.with_suffix(".req")
    subprocess.run(["openssl", "ocsp", "-issuer", rpki.path("ca.crt"), "-cert", rpki.path(cert),
                    "-no_nonce", "-reqout", str(req)], check=True, capture_output=True,
                   timeout=30)
    subprocess.run(["openssl", "ocsp", "-index", rpki.path("db/root/index.txt"), "-CA",
                    rpki.path("ca.crt"), "-rsigner", rpki.path("ocsp-signer.crt"), "-rkey",
                    rpki.path("ocsp-signer.key"), "-reqin", str(req), "-respout", str(out),
                    "-ndays", "1"], check=True, capture_output=True, timeout=30)
    return str(out)


@pytest.fixture
def stapling_s_server(rpki, tmp_path):
    """`openssl s_server -status_file good.der` for server-ocsp.crt; yields its address."""
    der = good_response(rpki, "server-ocsp.crt", tmp_path / "good.der")
    with s_server(rpki.path("server-ocsp.crt"), rpki.path("server-ocsp.key"),
                  "-status_file", der) as address:
        yield address


def test_every_connection_carries_a_staple(start_mtlsd, rpki, stapling_s_server):
    client = start_mtlsd(daemon_config([outbound(rpki, stapling_s_server, require_staple=True)]))
    for n in range(1, 4):
        data, local = plain_exchange(client.addr("outbound"))
        line = client.wait_for_access(client=local)
        assert line["result"] == "accepted", line
        # A full handshake each time, each with its staple checked: a resumed session would
        # carry none and skip the check.
        assert metric(client, "mtlsd_revocation_checks_total", listener="outbound",
                      method="ocsp", result="good") == n
    assert metric(client, "mtlsd_tls_session_resumptions_total", listener="outbound") == 0


def test_a_one_certificate_chain_needs_a_staple_too(start_mtlsd, rpki, tmp_path):
    # The remote's own (self-signed) certificate is the whole trust bundle: a chain of one.
    key, crt = tmp_path / "self.key", tmp_path / "self.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(crt),
                    "-subj", "/CN=localhost", "-days", "2",
                    "-addext", "subjectAltName=DNS:localhost",
                    "-addext", "basicConstraints=critical,CA:true",
                    "-addext", "keyUsage=critical,digitalSignature,keyCertSign",
                    "-addext", "extendedKeyUsage=serverAuth"],
                   check=True, capture_output=True, timeout=30)
    remote = Remote(str(crt), str(key))
    try:
        pinned = outbound(rpki, remote.address, require_staple=True)
        pinned["server_auth"]["ca"] = [str(crt)]
        plain = outbound(rpki, remote.address, "plain")
        plain["server_auth"]["ca"] = [str(crt)]
        client = start_mtlsd(daemon_config([pinned, plain]))
        # Without require_staple the pinned remote is admitted (the certificate is sound)...
        data, local = plain_exchange(client.addr("plain"))
        line = client.wait_for_access(client=local)
        assert data == b"ping\n" and line["result"] == "accepted", line
        # ...with it, no staple means no admission, whatever the chain's length.
        line = refused(client, "outbound", "revocation_unavailable")
        assert "require_staple" in line["detail"], line
    finally:
        remote.close()


def test_an_unusable_staple_ignored_without_require_staple_is_not_counted(start_mtlsd, rpki,
                                                                          tmp_path):
    """Review: without require_staple an unusable staple is ignored, as none is, but it was
    counted as mtlsd_revocation_checks_total{method="ocsp",result="unavailable"}, which fires
    MtlsdRevocationDataUnavailable ("peers are refused") while none was. Under require_staple
    the same staple refuses the remote, and is counted."""
    now = datetime.datetime.now(datetime.timezone.utc)
    stale = tmp_path / "stale.der"
    stale.write_bytes(signed_answer(rpki, "server-ocsp.crt", now - datetime.timedelta(hours=2),
                                    now - datetime.timedelta(hours=1)))
    with s_server(rpki.path("server-ocsp.crt"), rpki.path("server-ocsp.key"),
                  "-status_file", str(stale)) as address:
        client = start_mtlsd(daemon_config([outbound(rpki, address),
                                            outbound(rpki, address, "strict",
                                                     require_staple=True)]))
        data, local = plain_exchange(client.addr("outbound"))
        assert client.wait_for_access(client=local)["result"] == "accepted"
        refused(client, "strict", "revocation_unavailable")
    for result in ("good", "revoked", "unknown", "unavailable"):
        assert not metric(client, "mtlsd_revocation_checks_total", listener="outbound",
                          method="ocsp", result=result), result
    assert metric(client, "mtlsd_revocation_checks_total", listener="strict", method="ocsp",
                  result="unavailable") == 1


def test_a_missing_staple_under_require_staple_is_counted_unavailable(start_mtlsd, rpki):
    """Review: every require_staple refusal counted
    mtlsd_revocation_checks_total{method="ocsp",result="unavailable"} but that of a remote that
    stapled nothing, so the alert on unavailable revocation data missed it."""
    with s_server(rpki.path("server-ocsp.crt"), rpki.path("server-ocsp.key")) as address:
        client = start_mtlsd(daemon_config([outbound(rpki, address, require_staple=True)]))
        line = refused(client, "outbound", "revocation_unavailable")
        assert "remote stapled no OCSP response" in line["detail"], line
    assert metric(client, "mtlsd_revocation_checks_total", listener="outbound", method="ocsp",
                  result="unavailable") == 1
