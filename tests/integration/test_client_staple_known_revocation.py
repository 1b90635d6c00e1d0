"""Client mode: a remote's stapled OCSP answer goes through what the OCSP client knows (review).

- A good staple for a certificate the OCSP client knows revoked refuses the remote (`revoked`):
  a remote may staple an old "good" it kept (nginx, HAProxy and Apache staple cached answers)
  long after its certificate was revoked. Before, a good staple was taken as the leaf's answer
  without a look at the revocation already answered, and the app's bytes went to the remote.
- A stapled "revoked" is kept as a responder's would be, and published: with
  recheck_established, the connections to another remote with that certificate (admitted on a
  good staple) close, and later good staples of it are refused. Before, it refused its own
  handshake only.

The remotes are `openssl s_server -status_file` with answers signed here (python3-cryptography,
by the delegated OCSP signer); the responder serves one fixed answer (rv.ocsp_body).
"""

from __future__ import annotations

import datetime
import socket

from clients import fmt_addr
from mtlsd_harness import daemon_config
from revocation_env import *  # noqa: F401,F403  (fixtures)
from test_client_revocation import outbound, refused
from test_ocsp_revocation_stands import signed_answer
from tls_remote import s_server

REMOTE = "server-ocsp.crt"  # its AIA names the loopback responder (rv)


def answers(rpki, tmp_path) -> dict:
    """Signed answers about REMOTE, as files for -status_file and bytes for the responder: a
    "good" signed yesterday and valid six more days, a "good" and a "revoked" valid an hour."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    earlier = now - datetime.timedelta(seconds=1)
    hour = now + datetime.timedelta(hours=1)
    out = {
        "old_good": signed_answer(rpki, REMOTE, now - datetime.timedelta(days=1),
                                  now + datetime.timedelta(days=6)),
        "good": signed_answer(rpki, REMOTE, earlier, hour),
        "revoked": signed_answer(rpki, REMOTE, earlier, hour, earlier),
    }
    for name, der in out.items():
        (tmp_path / f"{name}.der").write_bytes(der)
    return out


def remote(rpki, tmp_path, staple: str | None = None):
    """`openssl s_server` presenting REMOTE, stapling `staple` (a name from answers()) if any."""
    extra = ["-status_file", str(tmp_path / f"{staple}.der")] if staple else []
    return s_server(rpki.path(REMOTE), rpki.path("server-ocsp.key"), *extra)


def test_a_good_staple_does_not_lift_a_known_revocation(start_mtlsd, rpki, rv, tmp_path):
    rv.ocsp_body = answers(rpki, tmp_path)["revoked"]
    with remote(rpki, tmp_path) as bare, remote(rpki, tmp_path, "old_good") as stapling:
        client = start_mtlsd(daemon_config([outbound(rpki, bare, "bare", ocsp="leaf"),
                                            outbound(rpki, stapling, "stapling", ocsp="leaf")]))
        # The responder says "revoked": a lasting revocation.
        line = refused(client, "bare", "revoked")
        assert f"(ocsp {rv.ocsp_url})" in line["detail"], line
        # The other remote staples an old "good" for the same certificate: refused all the same,
        # on what the responder said, without asking it again.
        line = refused(client, "stapling", "revoked")
        assert "keyCompromise" in line["detail"] and f"(ocsp {rv.ocsp_url})" in line["detail"], \
            line
    assert rv.ocsp_requests() == 1


def test_a_stapled_revocation_closes_connections_to_that_certificate(start_mtlsd, rpki, rv,
                                                                    tmp_path):
    answers(rpki, tmp_path)
    with remote(rpki, tmp_path, "good") as to_a, remote(rpki, tmp_path, "revoked") as to_b:
        # The listener that sees the revoked staple checks nothing itself: a staple is checked
        # in every client-mode handshake, whatever sources are configured.
        client = start_mtlsd(daemon_config([
            outbound(rpki, to_a, "to_a", ocsp="leaf", recheck_established=True),
            outbound(rpki, to_b, "to_b")]))
        sock = socket.create_connection(client.addr("to_a"), timeout=10)
        local = fmt_addr(sock.getsockname())
        sock.sendall(b"ping\n")
        assert sock.recv(100), "the remote stapling 'good' was not admitted"
        line = refused(client, "to_b", "revoked")
        assert "(stapled OCSP response)" in line["detail"], line
        # A's staple holds for an hour, and the responder is not asked before it lapses: only
        # B's stapled revocation can end this connection.
        try:
            assert sock.recv(100) == b""
        except ConnectionResetError:
            pass
        except TimeoutError:
            raise AssertionError("the connection to A stayed open after B stapled 'revoked'")
        sock.close()
        closed = client.wait_for_access(client=local)
        assert closed["reason"] == "revoked", closed
        assert "revoked while connected (stapled ocsp)" in closed["detail"], closed
        # A still staples its "good": it no longer admits the certificate.
        line = refused(client, "to_a", "revoked")
        assert "(stapled ocsp)" in line["detail"], line
    assert rv.ocsp_requests() == 0
