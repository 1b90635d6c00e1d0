"""recheck_established with OCSP as the only source: a connected peer's answer is asked for
again once it passes its nextUpdate, so a revocation reaches a connection that stays open.

Review: nothing asked the responder again after the handshake. A long-lived connection (gRPC,
keep-alive) whose certificate was revoked stayed open for as long as it lived, unless another
handshake of the same certificate happened to ask. The responder here serves one fixed response
at a time (python3-cryptography, signed by the delegated OCSP signer): first a "good" valid for
a few seconds, then a "revoked".
"""

from __future__ import annotations

import datetime

from mtlsd_harness import client_context
from revocation_env import *  # noqa: F401,F403  (fixtures)
from helpers import wait_until
from test_ocsp_revocation_stands import signed_answer
from test_revocation_ocsp import ocsp as ocsp_options
from test_revocation_recheck import assert_closed_as_revoked, hold, still_open

GOOD_FOR = 3  # seconds: the first answer's nextUpdate


def response(rpki, cert_name: str, revoked: bool, valid_for: datetime.timedelta) -> bytes:
    """A signed answer for `cert_name`: thisUpdate a second ago, nextUpdate `valid_for` ahead."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    earlier = now - datetime.timedelta(seconds=1)
    return signed_answer(rpki, cert_name, earlier, now + valid_for, earlier if revoked else None)


def test_a_revocation_after_the_handshake_closes_the_open_connection(serve_rv, rpki, rv):
    rv.ocsp_body = response(rpki, "client-ocsp.crt", False, datetime.timedelta(seconds=GOOD_FOR))
    daemon, _ = serve_rv(ocsp_options())
    sock, local = hold(daemon, client_context(rpki, "client-ocsp"))
    assert rv.ocsp_requests() == 1
    # The CA revokes it; the responder says so from now on. No other handshake happens.
    rv.ocsp_body = response(rpki, "client-ocsp.crt", True, datetime.timedelta(hours=1))
    line = assert_closed_as_revoked(daemon, sock, local, timeout=GOOD_FOR + 10)
    assert "keyCompromise" in line["detail"] or "ocsp" in line["detail"], line
    assert rv.ocsp_requests() >= 2


def test_a_good_answer_asked_again_keeps_the_connection(serve_rv, rpki, rv):
    """The refresh of a peer still in good standing changes nothing for it."""
    rv.ocsp_body = response(rpki, "client-ocsp.crt", False, datetime.timedelta(seconds=GOOD_FOR))
    daemon, _ = serve_rv(ocsp_options())
    sock, _ = hold(daemon, client_context(rpki, "client-ocsp"))
    rv.ocsp_body = response(rpki, "client-ocsp.crt", False, datetime.timedelta(hours=1))
    wait_until(lambda: rv.ocsp_requests() >= 2, timeout=GOOD_FOR + 10,
               what="the answer asked for again past its nextUpdate")
    assert still_open(sock)
