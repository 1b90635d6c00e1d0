"""A revocation learnt while a connection's own revocation check runs refuses that connection
(README "Revocation": "Live connections").

With `recheck_established`, every session registers the certificates of its peer's chain, and a
revocation learnt later (a CRL downloaded or refreshed, a fresh OCSP answer) closes the sessions
it matches. The registration came only once the session's own check (OCSP, distribution points)
had admitted the peer (review, medium): a revocation learnt while that check ran matched no
session, and the check, which had read its sources before, admitted the peer for good. The
README's redundancy advice (OCSP and distribution points together) makes that window as long
as the slower source.

Made deterministic here: client A's OCSP responder holds its answer (`good`: it lags the CA's
CRL) until the test lets it go. While A's check waits on it (its distribution point's CRL said
`good` already), client B connects to a listener that checks distribution points only, and its
check downloads the CA's other CRL, which revokes A: an event, delivered to A's worker before
B's own verdict (both come from the revocation service's thread, in order), so before B is
echoed. Then A's answer comes. A must be refused (`revoked`, the detail naming the CRL), and
nothing of A's reach the upstream; before, A was admitted and relayed.
"""

from __future__ import annotations

import socket
import ssl
import threading

from clients import fmt_addr
from helpers import wait_until
from mtlsd_harness import daemon_config, echo_roundtrip
from revocation_servers import RevocationServer
from test_revocation_resumed_chain import (client_ctx, make_cert, make_crl, ocsp_good,
                                           rs)  # noqa: F401  (rs: fixture)
from revocation_env import revocation_server  # noqa: F401  (fixture)

TIMEOUT = 10.0


class HeldResponder(RevocationServer):
    """An OCSP responder whose answers wait until release() (at most a minute)."""

    def __init__(self) -> None:
        self.released = threading.Event()
        super().__init__()

    def _maybe_wait(self) -> None:
        self.released.wait(60)

    def release(self) -> None:
        self.released.set()


def test_a_revocation_learnt_during_the_check_refuses_the_connection(
        rs, tmp_path, start_mtlsd, make_upstream):
    held = HeldResponder()
    try:
        root = make_cert(tmp_path, "root", "Race Root", None, ca=True)
        a = make_cert(tmp_path, "a", "race-client-a", root, cdp=rs.url("/race-a.crl"),
                      ocsp_url=held.ocsp_url)
        b = make_cert(tmp_path, "b", "race-client-b", root, cdp=rs.url("/race-b.crl"))
        server = make_cert(tmp_path, "server", "server", root, server=True)
        # The CA's two CRLs: A's says nothing yet; B's, published later, revokes A.
        rs.crls["/race-a.crl"] = make_crl(root)
        rs.crls["/race-b.crl"] = make_crl(root, (a.serial,))
        held.ocsp_body = ocsp_good(a, root)
        up = make_upstream()

        def listener(name: str, revocation: dict) -> dict:
            return {"name": name, "mode": "server", "listen": "127.0.0.1:0",
                    "upstream": up.address,
                    "tls": {"cert": server.crt, "key": server.keyfile, "min_version": "1.3"},
                    "client_auth": {"mode": "require", "ca": [root.crt]},
                    "revocation": revocation}
        daemon = start_mtlsd(daemon_config([
            listener("both", {"ocsp": "leaf", "crl_distribution_points": True,
                              "crl_scope": "leaf", "ocsp_timeout": "20s"}),
            listener("crl", {"crl_distribution_points": True, "crl_scope": "leaf"})]))

        raw = socket.create_connection(daemon.addr("both"), timeout=TIMEOUT)
        a_local = fmt_addr(raw.getsockname())
        a_conn = client_ctx(a.crt, a.keyfile).wrap_socket(raw, server_hostname="localhost")
        try:
            a_conn.sendall(b"from-a\n")
            # A's check runs: its OCSP request has come (its CRL is read alongside).
            wait_until(lambda: held.ocsp_requests() >= 1, TIMEOUT, what="A's OCSP request")
            ex = echo_roundtrip(daemon.addr("crl"), client_ctx(b.crt, b.keyfile))
            assert ex.error is None and ex.data == b"ping\n", (
                ex, daemon.wait_for_access(client=ex.local))
            assert rs.crl_requests("/race-b.crl") == 1
            held.release()
            data = b""
            try:
                while len(data) < len(b"from-a\n") and (chunk := a_conn.recv(100)):
                    data += chunk
            except (OSError, ssl.SSLError):
                pass
        finally:
            a_conn.close()
        line = daemon.wait_for_access(client=a_local)
        # Before: accepted, and A's bytes echoed by the upstream.
        assert line.get("result") == "rejected" and line.get("reason") == "revoked", line
        assert line.get("detail") == (
            "certificate at depth 0 revoked while its revocation check ran "
            f"(crl {rs.url('/race-b.crl')})"), line
        assert data == b"", data
        # B's connection only: nothing of A's reached the upstream.
        assert up.connection_count() == 1
    finally:
        held.release()
        held.close()
