"""An OCSP revocation stands, whatever its times (review of the revocation service).

A correctly signed "revoked" whose nextUpdate had passed was judged stale before its status was
read: "unavailable", so under on_unavailable: allow a known-revoked certificate was admitted.
The second read of that fix found it then fetched such an answer again on every handshake of the
revoked peer, and the stapler asked its responder once a second for its own. The responder here
serves one fixed response (python3-cryptography, signed by the delegated OCSP signer), like a
responder that pre-generates its answers.
"""

from __future__ import annotations

import datetime
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from mtlsd_harness import client_context, daemon_config, echo_roundtrip, server_listener
from refusal import assert_refused
from revocation_env import *  # noqa: F401,F403  (fixtures)
from helpers import wait_until
from revocation_servers import RevocationServer
from test_revocation_ocsp import ocsp as ocsp_options


def signed_answer(rpki, cert_name: str, this_update: datetime.datetime,
                  next_update: datetime.datetime,
                  revoked_at: datetime.datetime | None = None) -> bytes:
    """A response for `cert_name` signed by the delegated OCSP signer: "good", or "revoked"
    (keyCompromise) at `revoked_at`."""
    def load(name):
        with open(rpki.path(name), "rb") as f:
            return x509.load_pem_x509_certificate(f.read())
    with open(rpki.path("ocsp-signer.key"), "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    signer = load("ocsp-signer.crt")
    revoked = revoked_at is not None
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=load(cert_name), issuer=load("ca.crt"), algorithm=hashes.SHA1(),
        cert_status=ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD,
        this_update=this_update, next_update=next_update, revocation_time=revoked_at,
        revocation_reason=x509.ReasonFlags.key_compromise if revoked else None,
    ).responder_id(ocsp.OCSPResponderEncoding.HASH, signer).certificates([signer])
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def stale_revocation(rpki, cert_name: str) -> bytes:
    """A signed 'revoked' (keyCompromise) for `cert_name`, thisUpdate 2 h ago, nextUpdate 1 h
    ago: a revocation the responder announced, in a response that has expired."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return signed_answer(rpki, cert_name, now - datetime.timedelta(hours=2),
                         now - datetime.timedelta(hours=1), now - datetime.timedelta(hours=3))


def test_an_expired_revocation_refuses_under_soft_fail_and_is_asked_for_once(serve_rv, rpki, rv):
    rv.ocsp_body = stale_revocation(rpki, "client-ocsp-revoked.crt")
    daemon, up = serve_rv(ocsp_options(on_unavailable="allow"))
    for _ in range(3):
        ex = echo_roundtrip(daemon.addr(), client_context(rpki, "client-ocsp-revoked"))
        line = assert_refused(daemon, up, ex, "revoked", alert=False)
        assert "keyCompromise" in line["detail"], line
    # A revocation does not expire: the cached answer serves the next handshakes.
    assert rv.ocsp_requests() == 1


def test_the_stapler_does_not_spin_on_a_revocation_of_its_own(start_mtlsd, make_upstream, rpki,
                                                              rv):
    rv.ocsp_body = stale_revocation(rpki, "server-ocsp.crt")
    listener = server_listener(rpki, make_upstream().address,
                               tls={"cert": rpki.path("server-ocsp.crt"),
                                    "key": rpki.path("server-ocsp.key")},
                               revocation={"stapling": True})
    daemon = start_mtlsd(daemon_config([listener]))
    wait_until(lambda: rv.ocsp_requests() >= 1, 10, what="the stapler's first request")
    # Asked again once a second before (the refresh time came out in the past, clamped to 1 s):
    # a third request within 3 s more. Now the next is ocsp_default_lifetime (5 minutes) away.
    with pytest.raises(AssertionError, match="timed out"):
        wait_until(lambda: rv.ocsp_requests() >= 3, 3, what="a third request")
    assert daemon.running()


def test_a_check_does_not_wait_on_another_listeners_request(start_mtlsd, make_upstream, rpki,
                                                            rv):
    """Review: requests in flight were shared by certificate alone, so a listener joined the
    request another listener had made with its own responder and ocsp_timeout: a soft-fail
    listener with a 1 s timeout and a working responder waited on the other's responder, which
    never answered, and its client was refused (revocation_unavailable). A check now joins only
    a request for the same certificate, responder and timeout."""
    slow, fast = RevocationServer(), RevocationServer()
    slow.ocsp = fast.ocsp = rv.ocsp
    slow.delay = 30.0  # never answers in time
    try:
        up = make_upstream()
        listeners = [
            server_listener(rpki, up.address, name="slow", revocation=ocsp_options(
                ocsp_responder=slow.ocsp_url, ocsp_timeout="20s")),
            server_listener(rpki, up.address, name="fast", revocation=ocsp_options(
                ocsp_responder=fast.ocsp_url, ocsp_timeout="1s", on_unavailable="allow"))]
        daemon = start_mtlsd(daemon_config(listeners))
        waiting = threading.Thread(target=echo_roundtrip, daemon=True, args=(
            daemon.addr("slow"), client_context(rpki, "client-ocsp")))
        waiting.start()
        wait_until(lambda: slow.ocsp_requests() >= 1, 10, what="the slow listener's request")
        ex = echo_roundtrip(daemon.addr("fast"), client_context(rpki, "client-ocsp"))
        assert ex.data == b"ping\n", (ex.error, daemon.wait_for_access(client=ex.local))
        assert fast.ocsp_requests() == 1
    finally:
        slow.stop()
        fast.stop()


def test_an_answer_taken_just_past_its_next_update_is_not_asked_for_at_every_handshake(
        serve_rv, rpki, rv):
    """Review: a "good" answer whose nextUpdate passed a minute ago is still taken (5 minutes of
    clock skew) but was never cached, so every handshake sent its own request (a responder late
    with pre-signed answers got one per handshake, and each handshake paid for it)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    rv.ocsp_body = signed_answer(rpki, "client-ocsp.crt", now - datetime.timedelta(hours=1),
                                 now - datetime.timedelta(minutes=1))
    daemon, up = serve_rv({"ocsp": "leaf", "ocsp_timeout": "1s"})
    for _ in range(5):
        ex = echo_roundtrip(daemon.addr(), client_context(rpki, "client-ocsp"))
        assert ex.error is None and ex.data == b"ping\n", ex
        assert daemon.wait_for_access(client=ex.local)["result"] == "accepted"
    assert rv.ocsp_requests() == 1
