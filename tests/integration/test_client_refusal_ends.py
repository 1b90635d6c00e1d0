"""How a refusal ends (review, findings 2 and 4).

- Client mode: every refusal of the remote, in its handshake or after it, and a remote never
  reached, reset the local app's connection: the app got nothing from the remote, and a FIN would
  read as a clean (empty) answer. Before, a refusal after the handshake always gave a FIN (after
  a lingering close that read and threw away the app's request), and one in the handshake a FIN
  or a reset depending on whether the app had written yet.
- In both modes a peer refused after its handshake (here revocation_unavailable: the OCSP
  responder fails) is no verified identity: `identity` is "" on its access line, and its
  certificate is only in peer_subject, as for a refusal in the handshake. Before, the line of such
  a refusal carried the identity.
"""

from __future__ import annotations

import socket

import pytest

from clients import client_context, echo_roundtrip, fmt_addr
from mtlsd_harness import daemon_config
from revocation_env import *  # noqa: F401,F403  (fixtures)
from test_client_revocation import outbound
from test_revocation_ocsp import ocsp
from tls_remote import Remote

REQUEST = b"GET / HTTP/1.0\r\n\r\n"


def app_is_reset(client, listener: str, request: bytes) -> dict:
    """An app connection that sends `request` (if any) and reads: mtlsd resets it, sending it
    nothing. Its access line."""
    host, port = client.addr(listener)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.settimeout(10)
        sock.bind((host, 0))  # the address is known also when connect() meets the reset
        local = fmt_addr(sock.getsockname())
        try:
            # A remote never reached is refused at once: the reset can land before connect()
            # returned (tls_remote.plain_exchange says the same).
            sock.connect((host, port))
            if request:
                sock.sendall(request)
            got = sock.recv(100)
        except ConnectionResetError:
            got = None
    line = client.wait_for_access(client=local)
    assert got is None, f"the app read {got!r}, not a reset: {line}"
    assert line["result"] == "rejected", line
    return line


@pytest.fixture
def remote(rpki):
    """A remote presenting server-ocsp.crt, whose AIA names the test's OCSP responder."""
    server = Remote(rpki.path("server-ocsp.crt"), rpki.path("server-ocsp.key"))
    yield server.address
    server.close()


@pytest.mark.parametrize("request_first", [True, False], ids=["request_sent", "silent_app"])
def test_a_remote_refused_after_its_handshake_is_no_identity_and_resets_the_app(
        start_mtlsd, rpki, rv, remote, request_first):
    rv.fail_status = 503
    client = start_mtlsd(daemon_config([outbound(rpki, remote, **ocsp())]))
    line = app_is_reset(client, "outbound", REQUEST if request_first else b"")
    assert line["reason"] == "revocation_unavailable" and "HTTP 503" in line["detail"], line
    assert line["identity"] == "", line
    assert line["peer_subject"].startswith("CN=localhost"), line


def test_a_remote_refused_in_its_handshake_resets_the_app_whether_it_wrote_or_not(
        start_mtlsd, rpki, remote):
    wrong_name = outbound(rpki, remote)
    wrong_name["server_auth"]["server_name"] = "elsewhere.example.org"
    client = start_mtlsd(daemon_config([wrong_name]))
    for request in (b"", REQUEST):  # the first got a FIN
        line = app_is_reset(client, "outbound", request)
        assert line["reason"] == "hostname_mismatch" and line["identity"] == "", line


def test_a_remote_never_reached_resets_the_app(start_mtlsd, rpki, refused_address):
    client = start_mtlsd(daemon_config([outbound(rpki, refused_address)]))
    line = app_is_reset(client, "outbound", b"")
    assert line["reason"] == "upstream_unavailable", line


def test_a_client_refused_after_its_handshake_is_no_identity(serve_rv, rpki, rv):
    daemon, up = serve_rv(ocsp())
    rv.fail_status = 503
    ex = echo_roundtrip(daemon.addr(), client_context(rpki, "client-ocsp"))
    line = daemon.wait_for_access(client=ex.local)
    assert (line["result"], line["reason"]) == ("rejected", "revocation_unavailable"), line
    assert line["identity"] == "", line
    assert line["peer_subject"].startswith("CN=client-ocsp"), line
    up.assert_untouched()
