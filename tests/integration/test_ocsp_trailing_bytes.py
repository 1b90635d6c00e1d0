"""An OCSP answer with bytes after its DER (a responder or caching proxy appending text) is a bad
answer (review): OpenSSL's d2i stops at the end of the DER, and the stapler served the HTTP body
as received, which strict clients (Go's ocsp.ParseResponse, Python's cryptography) refuse. It is
not stapled, and no peer is judged by it.
"""

from __future__ import annotations

import datetime

from cryptography.x509 import ocsp

from mtlsd_harness import client_context, daemon_config, echo_roundtrip
from refusal import assert_refused
from revocation_env import *  # noqa: F401,F403  (fixtures)
from test_ocsp_revocation_stands import signed_answer
from test_revocation_ocsp import ocsp as ocsp_options
from test_revocation_stapling import s_client_status, stapling_listener

TRAILER = b"\r\n<!-- cached by proxy -->\r\n"


def good_with_trailer(rpki, cert: str) -> bytes:
    """A signed "good" for `cert`, valid an hour, followed by TRAILER; the DER alone parses."""
    now = datetime.datetime.now(datetime.timezone.utc)
    der = signed_answer(rpki, cert, now - datetime.timedelta(seconds=1),
                        now + datetime.timedelta(hours=1))
    ocsp.load_der_ocsp_response(der)
    return der + TRAILER


def test_a_response_with_bytes_after_it_is_not_stapled(start_mtlsd, make_upstream, rpki, rv):
    rv.ocsp_body = good_with_trailer(rpki, "server-ocsp.crt")
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([stapling_listener(rpki, up.address)]))
    line = daemon.wait_for_log(lambda l: l.get("msg") in (
        "stapling OCSP response", "cannot refresh the stapled OCSP response"))
    assert line["msg"] == "cannot refresh the stapled OCSP response", line
    assert line["error"] == "not an OCSP response: 28 bytes follow its DER", line
    out = s_client_status(daemon.addr(), rpki)
    assert "OCSP response: no response sent" in out, out


def test_a_peers_answer_with_bytes_after_it_answers_nothing(serve_rv, rpki, rv):
    rv.ocsp_body = good_with_trailer(rpki, "client-ocsp.crt")
    daemon, up = serve_rv(ocsp_options())
    ex = echo_roundtrip(daemon.addr(), client_context(rpki, "client-ocsp"))
    line = assert_refused(daemon, up, ex, "revocation_unavailable", alert=False)
    assert "28 bytes follow its DER" in line["detail"], line
