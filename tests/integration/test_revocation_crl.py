"""CRLs: files (with delta CRLs, staleness and crl_grace) decided inside the
handshake, and CRLs fetched from the distribution points the certificates
name, decided after it."""

from __future__ import annotations

import datetime
import subprocess
import time
from pathlib import Path

import grpc
import h2.errors
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from grpc_probe import probe_stub, stubs, tls_channel
from h2_client import H2Client
from helpers import stamp, wait_until
from mtlsd_harness import (client_context, daemon_config, echo_roundtrip, fmt_addr, run_cli,
                           server_listener, write_config)
from refusal import assert_admitted, assert_refused
from revocation_env import *  # noqa: F401,F403  (fixtures)
from revocation_env import ROOT_CRL, assert_metric_delta, metric, metrics_text

pb2, _ = stubs()

CHECKS = "mtlsd_revocation_checks_total"
NEXT_UPDATE = "mtlsd_crl_next_update_timestamp_seconds"
ROOT_ISSUER = "CN=mtlsd Test Root CA,O=mtlsd Test"


def root_crl(pki, out: str, *extra: str) -> str:
    pki.openssl("ca", "-batch", "-name", "root_ca", "-gencrl", *extra, "-out", pki.path(out))
    return pki.path(out)


# --- CRL files ------------------------------------------------------------------

def test_crl_file_revokes_in_the_handshake_and_exports_next_update(serve_rv, rpki):
    daemon, up = serve_rv({"crl_files": [rpki.path("crl.pem"), rpki.path("int-crl.pem")]})
    before = metrics_text(daemon)
    ex = echo_roundtrip(daemon.addr(), client_context(rpki, "client-revoked"))
    assert_refused(daemon, up, ex, "revoked")
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client_context(rpki, "client")),
                    b"ping\n")
    assert_metric_delta(daemon, before, CHECKS, 1, listener="inbound", method="crl",
                        result="revoked")
    assert_metric_delta(daemon, before, CHECKS, 1, listener="inbound", method="crl",
                        result="good")
    assert metric(daemon, NEXT_UPDATE, issuer=ROOT_ISSUER) > time.time()
    assert metric(daemon, NEXT_UPDATE, issuer="CN=mtlsd Test Intermediate CA,O=mtlsd Test") > 0


def test_delta_crl_is_honoured(serve_rv, rpki):
    # client-delta was revoked after crl-base.pem: only crl-delta.pem knows.
    ctx = client_context(rpki, "client-delta")
    daemon, up = serve_rv({"crl_files": [rpki.path("crl-base.pem")], "crl_scope": "leaf"})
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), ctx), b"ping\n")
    daemon, up = serve_rv({"crl_files": [rpki.path("crl-base.pem"), rpki.path("crl-delta.pem")],
                           "crl_scope": "leaf"})
    assert_refused(daemon, up, echo_roundtrip(daemon.addr(), ctx), "revoked")
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client_context(rpki, "client")),
                    b"ping\n")


def stale_crl(rpki, tmp_path) -> str:
    """The root's CRL (client-revoked listed) whose nextUpdate passed an hour ago."""
    mine = rpki.copy_to(tmp_path / "pki")
    now = time.time()
    return root_crl(mine, "stale-crl.pem", "-crl_lastupdate", stamp(now - 7200),
                    "-crl_nextupdate", stamp(now - 3600))


def test_stale_crl_within_grace_is_still_enforced(serve_rv, rpki, tmp_path):
    daemon, up = serve_rv({"crl_files": [stale_crl(rpki, tmp_path)], "crl_grace": "2h"})
    assert_refused(daemon, up, echo_roundtrip(daemon.addr(), client_context(rpki,
                                                                            "client-revoked")),
                   "revoked")
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client_context(rpki, "client")),
                    b"ping\n")


def test_stale_crl_past_grace_is_unavailable(serve_rv, rpki, tmp_path):
    daemon, up = serve_rv({"crl_files": [stale_crl(rpki, tmp_path)], "crl_grace": "30m"})
    before = metrics_text(daemon)
    line = assert_refused(daemon, up, echo_roundtrip(daemon.addr(), client_context(rpki,
                                                                                   "client")),
                          "revocation_unavailable")
    assert "CRL has expired" in line["detail"], line
    assert_metric_delta(daemon, before, CHECKS, 1, listener="inbound", method="crl",
                        result="unavailable")
    # The gauge says when it expired: what the MtlsdCRLExpired alert looks at.
    assert metric(daemon, NEXT_UPDATE, issuer=ROOT_ISSUER) < time.time()


def test_check_and_start_up_warn_of_a_crl_file_that_answers_for_nobody(serve_rv, rpki, tmp_path,
                                                                      mtlsd_bin):
    """Review: a CRL file past nextUpdate + crl_grace passed `check` silently and start-up said
    ready, while every client was refused as revocation_unavailable. Within crl_grace it is
    enforced, and nothing is said."""
    stale = stale_crl(rpki, tmp_path)
    listener = server_listener(rpki, "127.0.0.1:9", revocation={"crl_files": [stale],
                                                                "crl_grace": "30m"})
    cfg = write_config(tmp_path / "stale.yaml", daemon_config([listener]))
    proc = run_cli(mtlsd_bin, "check", "--config", str(cfg))
    warned = [l for l in (proc.stdout + proc.stderr).splitlines() if stale in l]
    assert proc.returncode == 0 and len(warned) == 1, proc.stdout + proc.stderr
    assert warned[0].startswith(f"{cfg}:") and "warning: " in warned[0], warned
    assert ("is past its nextUpdate" in warned[0] and "and crl_grace" in warned[0]
            and "no current CRL of that issuer" in warned[0]
            and "refused as revocation_unavailable" in warned[0]), warned
    daemon, _ = serve_rv({"crl_files": [stale], "crl_grace": "30m"})
    assert [l for l in daemon.logs() if l.get("level") == "warn" and stale in l.get("msg", "")]
    within = write_config(tmp_path / "within.yaml", daemon_config([server_listener(
        rpki, "127.0.0.1:9", revocation={"crl_files": [stale], "crl_grace": "2h"})]))
    proc = run_cli(mtlsd_bin, "check", "--config", str(within))
    assert proc.returncode == 0 and stale not in proc.stdout + proc.stderr, \
        proc.stdout + proc.stderr
    # Judged per issuer, as OpenSSL picks among its CRLs (second review): a stale CRL beside a
    # current one of the same issuer warns of nothing.
    both = tmp_path / "both.pem"
    both.write_bytes(Path(stale).read_bytes() + rpki.read("crl-all.pem"))
    beside = write_config(tmp_path / "beside.yaml", daemon_config([server_listener(
        rpki, "127.0.0.1:9", revocation={"crl_files": [str(both)]})]))
    proc = run_cli(mtlsd_bin, "check", "--config", str(beside))
    assert proc.returncode == 0 and str(both) not in proc.stdout + proc.stderr, \
        proc.stdout + proc.stderr


def test_stale_crl_under_allow_admits_but_still_revokes(serve_rv, rpki, tmp_path):
    daemon, up = serve_rv({"crl_files": [stale_crl(rpki, tmp_path)],
                           "on_unavailable": "allow"})
    # Soft-fail still enforces the last CRL it had.
    assert_refused(daemon, up, echo_roundtrip(daemon.addr(), client_context(rpki,
                                                                            "client-revoked")),
                   "revoked")
    before = metrics_text(daemon)
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client_context(rpki, "client")),
                    b"ping\n")
    assert_metric_delta(daemon, before, CHECKS, 1, listener="inbound", method="crl",
                        result="unavailable")


# --- CRL distribution points ----------------------------------------------------

CDP = {"crl_distribution_points": True, "ocsp_timeout": "1s"}


def test_distribution_point_crl_admits_and_revokes(serve_rv, rpki, rv):
    daemon, up = serve_rv(CDP)
    before = metrics_text(daemon)
    ex = echo_roundtrip(daemon.addr(), client_context(rpki, "client-cdp-revoked"))
    line = assert_refused(daemon, up, ex, "revoked", alert=False)
    assert f"(crl {rv.url(ROOT_CRL)})" in line["detail"], line
    assert "keyCompromise" in line["detail"], line
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client_context(rpki, "client-cdp")),
                    b"ping\n")
    # One download served both checks.
    assert rv.crl_requests(ROOT_CRL) == 1
    assert_metric_delta(daemon, before, CHECKS, 1, listener="inbound", method="crl",
                        result="good")
    assert_metric_delta(daemon, before, CHECKS, 1, listener="inbound", method="crl",
                        result="revoked")
    assert metric(daemon, NEXT_UPDATE, issuer=ROOT_ISSUER) > time.time()


def test_an_http2_client_refused_after_its_handshake_hears_why(serve_rv, rpki, rv):
    """A revocation learnt after the handshake (here from a distribution point) can send no
    alert. An HTTP/2 client of an http: listener gets its request answered 403 "revoked", then
    GOAWAY(INADEQUATE_SECURITY, "revoked") naming that request, before the close. Its request
    never reaches the upstream."""
    daemon, up = serve_rv(CDP, http={})
    client = H2Client(daemon, rpki, cert="client-cdp-revoked")
    try:
        local = fmt_addr(client.sock.getsockname())
        sid = client.request("/refused")
        client.answered_then_goaway(sid, 403, h2.errors.ErrorCodes.INADEQUATE_SECURITY, b"revoked")
    finally:
        client.close()
    line = daemon.wait_for_access(client=local)
    assert line["reason"] == "revoked" and line["result"] == "rejected", line
    up.assert_untouched()


def test_a_grpc_call_refused_after_its_handshake_fails_permission_denied_at_once(serve_rv, rpki,
                                                                               rv):
    """The same refusal to a real gRPC client: its call ends PERMISSION_DENIED (the 403), after
    one connection. Before, SETTINGS and a GOAWAY naming no stream made grpcio send the call
    again on a new connection at once, until its deadline: hundreds of handshakes a second."""
    daemon, up = serve_rv(CDP, http={"protocols": ["h2"]})
    with tls_channel(rpki, daemon.addr()[1], cert="client-cdp-revoked") as channel:
        with pytest.raises(grpc.RpcError) as caught:
            probe_stub(channel).Unary(pb2.Msg(text="x"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, caught.value
    assert caught.value.details() == "revoked", caught.value.details()  # grpc-message
    assert daemon.scrape().total("mtlsd_tls_handshakes_total") <= 2
    up.assert_untouched()


def empty_root_crl(rpki, number: int) -> bytes:
    """A current CRL of the root, signed by it, revoking nothing, with CRL number `number`: what
    a stale mirror would serve (an older issue)."""
    with open(rpki.path("ca.crt"), "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    with open(rpki.path("ca.key"), "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    now = datetime.datetime.now(datetime.timezone.utc)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
           .last_update(now - datetime.timedelta(minutes=1))
           .next_update(now + datetime.timedelta(hours=1))
           .add_extension(x509.CRLNumber(number), critical=False)
           .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()),
                          critical=False)
           .sign(key, hashes.SHA256()))
    return crl.public_bytes(serialization.Encoding.DER)


def test_a_distribution_point_crl_dated_ahead_is_not_kept_and_its_correction_is_taken(
        serve_rv, rpki, rv, tmp_path):
    """Review: a CRL whose thisUpdate is 15 minutes ahead (the CA's clock fast) was kept as any
    other: every peer was refused until this clock caught up, it was not downloaded again
    meanwhile, and once it was, the CA's corrected CRL was refused as older than it (a
    rollback). Now its revocations stand (a second review: dropping it admitted what it revoked
    under on_unavailable: allow), it says nothing current about anyone else, it is asked for again
    with backoff, a stale copy with a lower CRL number does not replace it (a third review: that
    took its revocations away), and the CA's corrected CRL, numbered after it, does."""
    mine = rpki.copy_to(tmp_path / "pki")
    now = time.time()
    rv.crls[ROOT_CRL] = Path(root_crl(mine, "ahead.pem", "-crl_lastupdate", stamp(now + 900),
                                      "-crl_nextupdate", stamp(now + 4 * 3600))).read_bytes()
    daemon, up = serve_rv(CDP)
    line = assert_refused(daemon, up, echo_roundtrip(daemon.addr(),
                                                     client_context(rpki, "client-cdp")),
                          "revocation_unavailable", alert=False)
    assert "not valid before" in line["detail"], line
    assert_refused(daemon, up, echo_roundtrip(daemon.addr(),
                                              client_context(rpki, "client-cdp-revoked")),
                   "revoked", alert=False)
    # A stale mirror: a current CRL revoking nothing, numbered before it. Asked for again (the
    # failed download's backoff, then the next handshake), it is refused as a rollback.
    rv.crls[ROOT_CRL] = empty_root_crl(rpki, 0)
    asked = rv.crl_requests(ROOT_CRL)

    def refetched():
        ex = echo_roundtrip(daemon.addr(), client_context(rpki, "client-cdp-revoked"))
        line = daemon.wait_for_access(client=ex.local)
        assert line["reason"] == "revoked", line  # what the CRL dated ahead revokes still is
        return rv.crl_requests(ROOT_CRL) > asked

    wait_until(refetched, timeout=10, interval=0.3)
    assert_refused(daemon, up, echo_roundtrip(daemon.addr(),
                                              client_context(rpki, "client-cdp-revoked")),
                   "revoked", alert=False)
    # The CA fixed its clock and issued its next CRL.
    rv.crls[ROOT_CRL] = Path(root_crl(mine, "fixed.pem")).read_bytes()

    def admitted():
        ex = echo_roundtrip(daemon.addr(), client_context(rpki, "client-cdp"))
        return ex.data == b"ping\n" and daemon.wait_for_access(client=ex.local)

    assert wait_until(admitted, timeout=15, interval=0.3)["result"] == "accepted"


def test_distribution_point_down_under_fail_refuses(serve_rv, rpki, rv):
    daemon, up = serve_rv(CDP)
    rv.stop()
    line = assert_refused(daemon, up, echo_roundtrip(daemon.addr(),
                                                     client_context(rpki, "client-cdp")),
                          "revocation_unavailable", alert=False)
    assert f"crl {rv.url(ROOT_CRL)}" in line["detail"], line


def test_distribution_point_down_under_allow_admits_and_counts(serve_rv, rpki, rv):
    daemon, up = serve_rv({**CDP, "on_unavailable": "allow"})
    rv.stop()
    before = metrics_text(daemon)
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client_context(rpki, "client-cdp")),
                    b"ping\n")
    assert_metric_delta(daemon, before, CHECKS, 1, listener="inbound", method="crl",
                        result="unavailable")


def test_distribution_points_that_do_not_answer_share_one_timeout(serve_rv, rpki, rv):
    """client-cdp-many names three points that answer too late, then the root's. One timeout
    bounds the whole lookup: the first slow point uses it up, the rest are not tried, and the
    check is unavailable, which on_unavailable: allow admits. Before, each point had a timeout
    of its own: 3 s, past the session's backstop (2 x 1 s + 1 s), which refused the client
    even under allow (review: refused after 5 s with three points down)."""
    daemon, up = serve_rv({**CDP, "on_unavailable": "allow"})
    rv.slow_paths = {f"/slow{i}.crl": 5.0 for i in (1, 2, 3)}
    started = time.monotonic()
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client_context(rpki, "client-cdp-many")),
                    b"ping\n")
    # A handshake and the one 1 s timeout, with room for a slow machine; waiting for the first
    # slow point's answer would take 5 s.
    assert time.monotonic() - started < 4.5
    assert rv.crl_requests("/slow1.crl") == 1 and rv.crl_requests("/slow2.crl") == 0


def test_distribution_point_crl_from_another_issuer_is_rejected(serve_rv, rpki, rv, tmp_path):
    mine = rpki.copy_to(tmp_path / "pki")
    mine.openssl("ca", "-batch", "-name", "other_ca", "-gencrl", "-out", mine.path("other.pem"))
    rv.crls[ROOT_CRL] = mine.read("other.pem")
    daemon, up = serve_rv(CDP)
    line = assert_refused(daemon, up, echo_roundtrip(daemon.addr(),
                                                     client_context(rpki, "client-cdp")),
                          "revocation_unavailable", alert=False)
    assert "CRL issuer does not match" in line["detail"], line


def test_distribution_point_serving_garbage_is_unavailable(serve_rv, rpki, rv):
    rv.crls[ROOT_CRL] = b"<html>not a CRL</html>"
    daemon, up = serve_rv(CDP)
    line = assert_refused(daemon, up, echo_roundtrip(daemon.addr(),
                                                     client_context(rpki, "client-cdp")),
                          "revocation_unavailable", alert=False)
    assert "not a CRL" in line["detail"], line


def test_distribution_point_crl_in_der_is_accepted(serve_rv, rpki, rv, tmp_path):
    mine = rpki.copy_to(tmp_path / "pki")
    subprocess.run(["openssl", "crl", "-in", mine.path("crl-all.pem"), "-outform", "DER",
                    "-out", mine.path("crl-all.der")], check=True, capture_output=True)
    rv.crls[ROOT_CRL] = mine.read("crl-all.der")
    daemon, up = serve_rv(CDP)
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client_context(rpki, "client-cdp")),
                    b"ping\n")


def test_certificate_without_distribution_point_is_unavailable(serve_rv, rpki, rv):
    daemon, up = serve_rv(CDP)
    line = assert_refused(daemon, up, echo_roundtrip(daemon.addr(),
                                                     client_context(rpki, "client")),
                          "revocation_unavailable", alert=False)
    assert "names no http:// CRL distribution point" in line["detail"], line


def test_crl_file_answers_where_the_certificate_has_no_distribution_point(serve_rv, rpki, rv):
    # An answer from any source is enough: the file covers client.crt, which names no CDP.
    daemon, up = serve_rv({**CDP, "crl_files": [rpki.path("crl.pem")], "crl_scope": "leaf"})
    assert_refused(daemon, up, echo_roundtrip(daemon.addr(), client_context(rpki,
                                                                            "client-revoked")),
                   "revoked")
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client_context(rpki, "client")),
                    b"ping\n")


def test_expired_distribution_point_crl_still_revokes(serve_rv, rpki, rv, tmp_path):
    mine = rpki.copy_to(tmp_path / "pki")
    daemon, up = serve_rv(CDP)
    # Made once the daemon is up, so that it is still current when the first handshake
    # fetches it (a slow start-up must not eat into its 5 s).
    root_crl(mine, "short.pem", "-crlsec", "5")
    made = time.time()  # lastUpdate (whole seconds, rounded down) is not later than this
    rv.crls[ROOT_CRL] = mine.read("short.pem")
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client_context(rpki, "client-cdp")),
                    b"ping\n")
    rv.stop()  # the refresh ahead of nextUpdate fails; the CRL expires
    # nextUpdate <= made + 5; mtlsd counts it expired once its whole-second clock is past it,
    # so a second more, and a little for the clock.
    time.sleep(max(0.0, made + 5 + 1.2 - time.time()))
    # The last CRL mtlsd had still revokes...
    ex = echo_roundtrip(daemon.addr(), client_context(rpki, "client-cdp-revoked"))
    assert ex.data == b"" and ex.local, ex
    assert daemon.wait_for_access(client=ex.local)["reason"] == "revoked"
    # ...but says nothing current about the others.
    ex = echo_roundtrip(daemon.addr(), client_context(rpki, "client-cdp"))
    assert ex.data == b"" and ex.local, ex
    line = daemon.wait_for_access(client=ex.local)
    assert line["reason"] == "revocation_unavailable", line
    assert "CRL expired at" in line["detail"] and "refreshing it failed" in line["detail"], line
    daemon.wait_for_log(lambda l: l.get("msg") == "CRL download failed")


def test_verify_command_uses_distribution_points(mtlsd_bin, rpki, rv, tmp_path):
    listener = server_listener(rpki, "127.0.0.1:9", revocation=CDP)
    cfg = write_config(tmp_path / "mtlsd.yaml", daemon_config([listener]))
    proc = run_cli(mtlsd_bin, "verify", "--config", str(cfg), "--listener", "inbound",
                   "--cert", rpki.path("client-cdp-revoked.crt"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.startswith("rejected: revoked: "), proc.stdout
    assert f"(crl {rv.url(ROOT_CRL)})" in proc.stdout, proc.stdout
    proc = run_cli(mtlsd_bin, "verify", "--config", str(cfg), "--listener", "inbound",
                   "--cert", rpki.path("client-cdp.crt"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"revocation: good (crl {rv.url(ROOT_CRL)})" in proc.stdout.splitlines(), proc.stdout


def test_distribution_point_crl_for_ca_certificates_only_does_not_answer_for_a_leaf(
        serve_rv, rpki, rv, tmp_path):
    mine = rpki.copy_to(tmp_path / "pki")
    with open(mine.path("openssl.cnf"), "a") as cnf:
        cnf.write("\n[ crl_ext_ca_only ]\nauthorityKeyIdentifier = keyid:always\n"
                  "issuingDistributionPoint = critical, @idp_ca_only\n"
                  "[ idp_ca_only ]\nonlyCA = TRUE\n")
    root_crl(mine, "ca-only.pem", "-crlexts", "crl_ext_ca_only")
    rv.crls[ROOT_CRL] = mine.read("ca-only.pem")
    daemon, up = serve_rv(CDP)
    line = assert_refused(daemon, up, echo_roundtrip(daemon.addr(),
                                                     client_context(rpki, "client-cdp")),
                          "revocation_unavailable", alert=False)
    assert "covers CA certificates only" in line["detail"], line
