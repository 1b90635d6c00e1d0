"""OCSP for client certificates, against a real `openssl ocsp` responder.

The answer is awaited after the handshake and before anything goes upstream,
so a refused client completes its TLS handshake and then gets close_notify
(no alert can be sent after the handshake): refusals are checked with
alert=False, and always with "nothing reached the upstream".
"""

from __future__ import annotations

import threading
import time

from mtlsd_harness import (client_context, connect, daemon_config, echo_roundtrip, fmt_addr,
                           open_tls, run_cli, server_listener, write_config)
from refusal import assert_admitted, assert_refused
from revocation_env import *  # noqa: F401,F403  (fixtures)
from revocation_env import assert_metric_delta, metric, metrics_text

OCSP = "mtlsd_revocation_checks_total"


def ocsp(**extra) -> dict:
    return {"ocsp": "leaf", "ocsp_timeout": "1s", **extra}


def test_good_certificate_is_admitted_after_an_ocsp_check(serve_rv, rpki, rv):
    daemon, up = serve_rv(ocsp())
    before = metrics_text(daemon)
    ex = echo_roundtrip(daemon.addr(), client_context(rpki, "client-ocsp"))
    assert_admitted(daemon, ex, b"ping\n")
    assert rv.ocsp_requests() == 1
    assert_metric_delta(daemon, before, OCSP, 1, listener="inbound", method="ocsp", result="good")


def test_revoked_certificate_is_refused_and_nothing_reaches_the_upstream(serve_rv, rpki, rv):
    daemon, up = serve_rv(ocsp())
    before = metrics_text(daemon)
    ex = echo_roundtrip(daemon.addr(), client_context(rpki, "client-ocsp-revoked"))
    line = assert_refused(daemon, up, ex, "revoked", alert=False)
    assert "keyCompromise" in line["detail"], line
    assert f"(ocsp {rv.ocsp_url})" in line["detail"], line
    assert_metric_delta(daemon, before, OCSP, 1, listener="inbound", method="ocsp",
                        result="revoked")
    assert_metric_delta(daemon, before, "mtlsd_handshake_failures_total", 1, listener="inbound",
                        reason="revoked")


def test_ocsp_responder_setting_overrides_the_certificate(serve_rv, rpki, rv):
    # client.crt names no responder (no AIA): ocsp_responder supplies one.
    daemon, up = serve_rv(ocsp(ocsp_responder=rv.ocsp_url))
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client_context(rpki, "client")),
                    b"ping\n")
    assert rv.ocsp_requests() == 1


def test_certificate_without_responder_is_unavailable(serve_rv, rpki, rv):
    daemon, up = serve_rv(ocsp())
    ex = echo_roundtrip(daemon.addr(), client_context(rpki, "client"))
    line = assert_refused(daemon, up, ex, "revocation_unavailable", alert=False)
    assert "names no OCSP responder" in line["detail"], line


def test_responder_down_under_fail_refuses(serve_rv, rpki, rv):
    daemon, up = serve_rv(ocsp())
    rv.stop()
    before = metrics_text(daemon)
    ex = echo_roundtrip(daemon.addr(), client_context(rpki, "client-ocsp"))
    line = assert_refused(daemon, up, ex, "revocation_unavailable", alert=False)
    assert "refused" in line["detail"].lower(), line
    assert_metric_delta(daemon, before, OCSP, 1, listener="inbound", method="ocsp",
                        result="unavailable")


def test_responder_down_under_allow_admits_and_counts(serve_rv, rpki, rv):
    daemon, up = serve_rv(ocsp(on_unavailable="allow"))
    rv.stop()
    before = metrics_text(daemon)
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client_context(rpki, "client-ocsp")),
                    b"ping\n")
    assert_metric_delta(daemon, before, OCSP, 1, listener="inbound", method="ocsp",
                        result="unavailable")
    daemon.wait_for_log(lambda l: l.get("msg", "").startswith("admitted without a revocation"))


def test_slow_responder_is_bounded_by_ocsp_timeout(serve_rv, rpki, rv):
    daemon, up = serve_rv(ocsp(ocsp_timeout="300ms"))
    rv.delay = 5.0
    start = time.monotonic()
    ex = echo_roundtrip(daemon.addr(), client_context(rpki, "client-ocsp"))
    elapsed = time.monotonic() - start
    line = assert_refused(daemon, up, ex, "revocation_unavailable", alert=False)
    # The detail says which bound ended it (not the session's backstop); the elapsed time
    # includes a whole handshake, and waiting for the responder would take 5 s.
    assert "no answer within 300ms" in line["detail"], line
    assert elapsed < 4.0, f"the check took {elapsed:.2f}s despite ocsp_timeout: 300ms"


def test_slow_responder_under_allow_admits(serve_rv, rpki, rv):
    daemon, up = serve_rv(ocsp(ocsp_timeout="300ms", on_unavailable="allow"))
    rv.delay = 2.0
    before = metrics_text(daemon)
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client_context(rpki, "client-ocsp")),
                    b"ping\n")
    assert_metric_delta(daemon, before, OCSP, 1, listener="inbound", method="ocsp",
                        result="unavailable")


def test_answer_is_cached_until_next_update(serve_rv, rpki, rv):
    daemon, up = serve_rv(ocsp())
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client_context(rpki, "client-ocsp")),
                    b"ping\n")
    assert rv.ocsp_requests() == 1
    rv.stop()  # the cached answer (nextUpdate in 5 minutes) must carry the second check
    before = metrics_text(daemon)
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client_context(rpki, "client-ocsp")),
                    b"ping\n")
    assert_metric_delta(daemon, before, OCSP, 1, listener="inbound", method="ocsp", result="good")


def test_revoked_answer_is_cached_too(serve_rv, rpki, rv):
    daemon, up = serve_rv(ocsp())
    ctx = client_context(rpki, "client-ocsp-revoked")
    assert_refused(daemon, up, echo_roundtrip(daemon.addr(), ctx), "revoked", alert=False)
    rv.stop()
    assert_refused(daemon, up, echo_roundtrip(daemon.addr(), ctx), "revoked", alert=False)


def test_concurrent_checks_of_one_certificate_share_one_request(serve_rv, rpki, rv):
    daemon, up = serve_rv(ocsp(ocsp_timeout="3s"))
    rv.delay = 0.5  # every handshake completes while the first request is still out
    ctx = client_context(rpki, "client-ocsp")
    results = [None] * 6

    def one(i):
        results[i] = echo_roundtrip(daemon.addr(), ctx)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    for ex in results:
        assert_admitted(daemon, ex, b"ping\n")
    assert rv.ocsp_requests() == 1


def test_responder_error_status_is_unavailable(serve_rv, rpki, rv):
    daemon, up = serve_rv(ocsp())
    rv.fail_status = 503
    line = assert_refused(daemon, up, echo_roundtrip(daemon.addr(),
                                                     client_context(rpki, "client-ocsp")),
                          "revocation_unavailable", alert=False)
    assert "HTTP 503" in line["detail"], line


# OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED tryLater (3) } (RFC 6960 4.2.1)
TRY_LATER = bytes([0x30, 0x03, 0x0A, 0x01, 0x03])


def test_a_responder_that_answers_try_later_is_held_off_like_one_that_does_not_answer(
        serve_rv, rpki, rv):
    # Review: only unanswered requests were held off; a responder answering tryLater (an
    # overloaded one) got one more request for every connection.
    daemon, up = serve_rv(ocsp())
    rv.ocsp_body = TRY_LATER
    ctx = client_context(rpki, "client-ocsp")
    start = time.monotonic()
    for _ in range(6):
        line = assert_refused(daemon, up, echo_roundtrip(daemon.addr(), ctx),
                              "revocation_unavailable", alert=False)
        assert "trylater" in line["detail"].lower(), line
    elapsed = time.monotonic() - start
    assert rv.ocsp_requests() <= 1 + int(elapsed), (rv.ocsp_requests(), elapsed)


def test_an_unauthorized_answer_holds_off_that_certificate_only(serve_rv, rpki, rv):
    # Review of the hold-off: 'unauthorized' is about one request (RFC 6960 2.3), so it must not
    # make the responder unavailable for every other certificate for a second.
    daemon, up = serve_rv(ocsp())
    rv.ocsp_body = bytes([0x30, 0x03, 0x0A, 0x01, 0x06])  # responseStatus unauthorized (6)
    for cert in ("client-ocsp", "client-ocsp-revoked"):
        line = assert_refused(daemon, up, echo_roundtrip(daemon.addr(),
                                                         client_context(rpki, cert)),
                              "revocation_unavailable", alert=False)
        assert "unauthorized" in line["detail"], line
    assert rv.ocsp_requests() == 2  # the second certificate was asked too


def test_an_unusable_answer_holds_off_that_certificate_only(serve_rv, rpki, rv):
    rv.ocsp.signer, rv.ocsp.key = rpki.path("server.crt"), rpki.path("server.key")  # no EKU
    daemon, up = serve_rv(ocsp())
    start = time.monotonic()
    for _ in range(3):
        assert_refused(daemon, up, echo_roundtrip(daemon.addr(), client_context(rpki, "client-ocsp")),
                       "revocation_unavailable", alert=False)
    elapsed = time.monotonic() - start
    assert rv.ocsp_requests() <= 1 + int(elapsed), (rv.ocsp_requests(), elapsed)
    # Another certificate of the same responder is asked about at once.
    before = rv.ocsp_requests()
    assert_refused(daemon, up, echo_roundtrip(daemon.addr(),
                                              client_context(rpki, "client-ocsp-revoked")),
                   "revocation_unavailable", alert=False)
    assert rv.ocsp_requests() == before + 1


def test_response_signed_by_the_issuer_itself_is_accepted(serve_rv, rpki, rv):
    rv.ocsp.signer, rv.ocsp.key = rpki.path("ca.crt"), rpki.path("ca.key")
    daemon, up = serve_rv(ocsp())
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client_context(rpki, "client-ocsp")),
                    b"ping\n")


def test_responder_without_ocsp_signing_eku_is_not_trusted(serve_rv, rpki, rv):
    # server.crt is issued by the same root but may not sign OCSP responses for it.
    rv.ocsp.signer, rv.ocsp.key = rpki.path("server.crt"), rpki.path("server.key")
    daemon, up = serve_rv(ocsp())
    line = assert_refused(daemon, up, echo_roundtrip(daemon.addr(),
                                                     client_context(rpki, "client-ocsp")),
                          "revocation_unavailable", alert=False)
    assert "signature does not verify" in line["detail"], line


def test_response_from_an_unrelated_ca_is_not_trusted(serve_rv, rpki, rv):
    # A responder of another CA answering "good" for our client must not count.
    rv.ocsp.signer, rv.ocsp.key = rpki.path("other-ca.crt"), rpki.path("other-ca.key")
    daemon, up = serve_rv(ocsp())
    assert_refused(daemon, up, echo_roundtrip(daemon.addr(), client_context(rpki, "client-ocsp")),
                   "revocation_unavailable", alert=False)


def test_verify_command_names_the_ocsp_source(mtlsd_bin, rpki, rv, tmp_path):
    listener = server_listener(rpki, "127.0.0.1:9", revocation=ocsp())
    cfg = write_config(tmp_path / "mtlsd.yaml", daemon_config([listener]))
    proc = run_cli(mtlsd_bin, "verify", "--config", str(cfg), "--listener", "inbound",
                   "--cert", rpki.path("client-ocsp-revoked.crt"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.startswith("rejected: revoked: "), proc.stdout
    assert f"(ocsp {rv.ocsp_url})" in proc.stdout, proc.stdout

    proc = run_cli(mtlsd_bin, "verify", "--config", str(cfg), "--listener", "inbound",
                   "--cert", rpki.path("client-ocsp.crt"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("accepted: "), proc.stdout
    assert f"revocation: good (ocsp {rv.ocsp_url})" in lines, proc.stdout

    rv.stop()
    proc = run_cli(mtlsd_bin, "verify", "--config", str(cfg), "--listener", "inbound",
                   "--cert", rpki.path("client-ocsp.crt"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.startswith("rejected: revocation_unavailable: "), proc.stdout


def test_ocsp_chain_mode_checks_the_leaf_of_a_root_issued_client(serve_rv, rpki, rv):
    # With `chain`, every certificate below the trust anchor is checked; for a client issued
    # directly by the root that is the leaf alone.
    daemon, up = serve_rv({"ocsp": "chain", "ocsp_timeout": "1s"})
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client_context(rpki, "client-ocsp")),
                    b"ping\n")
    assert rv.ocsp_requests() == 1
    assert metric(daemon, OCSP, listener="inbound", method="ocsp", result="good") == 1


def test_resumed_session_is_checked_too(serve_rv, rpki, rv):
    daemon, up = serve_rv(ocsp())
    ctx = client_context(rpki, "client-ocsp")
    first = open_tls(daemon.addr(), ctx)
    first.sendall(b"ping\n")
    assert first.recv(100) == b"ping\n"  # reading also takes the TLS 1.3 session ticket
    session = first.session
    first.close()
    before = metrics_text(daemon)
    raw = connect(daemon.addr())
    local = fmt_addr(raw.getsockname())
    second = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    assert second.session_reused
    second.sendall(b"ping\n")
    assert second.recv(100) == b"ping\n"
    second.close()
    line = daemon.wait_for_access(client=local)
    assert line["resumed"] is True and line["result"] == "accepted", line
    # Checked again (from the cache: the issuer was learnt from the full handshake).
    assert_metric_delta(daemon, before, OCSP, 1, listener="inbound", method="ocsp", result="good")
    assert rv.ocsp_requests() == 1


def test_resumption_does_not_bypass_a_later_revocation(serve_rv, rpki, rv, tmp_path):
    mine = rpki.copy_to(tmp_path / "pki")
    rv.ocsp.index = mine.path("db/root/index.txt")
    # Admitted without an answer (responder down, soft-fail): nothing cached for it.
    daemon, up = serve_rv(ocsp(on_unavailable="allow"))
    rv.stop()
    ctx = client_context(mine, "client-ocsp")
    first = open_tls(daemon.addr(), ctx)
    first.sendall(b"ping\n")
    assert first.recv(100) == b"ping\n"
    session = first.session
    first.close()

    mine.openssl("ca", "-batch", "-name", "root_ca", "-revoke", mine.path("client-ocsp.crt"))
    rv.start()
    time.sleep(1.1)  # past the hold-off that follows a failed request
    raw = connect(daemon.addr())
    local = fmt_addr(raw.getsockname())
    second = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    assert second.session_reused
    second.sendall(b"ping\n")
    second.settimeout(5)
    try:
        assert second.recv(100) == b""
    except OSError:
        pass
    second.close()
    line = daemon.wait_for_access(client=local)
    assert line["resumed"] is True and line["reason"] == "revoked", line


def test_daemon_with_every_revocation_source_stops_cleanly(serve_rv, rpki, rv):
    # The revocation thread (with a CRL refresh and a staple loop pending) must not hold up
    # or crash the shutdown.
    daemon, up = serve_rv({**ocsp(), "crl_distribution_points": True, "stapling": True,
                           "on_unavailable": "allow"},
                          tls={"cert": rpki.path("server-ocsp.crt"),
                               "key": rpki.path("server-ocsp.key")})
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client_context(rpki, "client-cdp")),
                    b"ping\n")
    daemon.wait_for_log(lambda l: l.get("msg") == "stapling OCSP response")
    assert daemon.stop() == 0
    assert "Sanitizer" not in daemon.stderr_text()
