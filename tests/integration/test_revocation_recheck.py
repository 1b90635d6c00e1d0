"""recheck_established: a revocation learnt while a peer is connected closes
its open connections — from CRL files (reload), a CRL refreshed from a
distribution point, and an OCSP answer."""

from __future__ import annotations

import signal
import time

from mtlsd_harness import (client_context, echo_roundtrip, fmt_addr, open_tls, read_to_end,
                           strict_eof)
from revocation_env import *  # noqa: F401,F403  (fixtures)
from revocation_env import ROOT_CRL


def hold(daemon, ctx):
    """A relayed connection that stays open: (socket, its address in the access log). Makes
    `ctx` strict_eof, so that assert_closed_as_revoked can tell close_notify from a bare close."""
    sock = open_tls(daemon.addr(), strict_eof(ctx))
    local = fmt_addr(sock.getsockname())
    sock.sendall(b"ping\n")
    assert sock.recv(100) == b"ping\n"
    return sock, local


def assert_closed_as_revoked(daemon, sock, local, timeout: float = 10.0) -> dict:
    """mtlsd closed the connection, a layer-4 stream with no end of its own, without
    close_notify (it was cut: test_relay_cut_by_mtlsd.py), and logged reason `revoked`."""
    sock.settimeout(timeout)
    assert read_to_end(sock) == (b"", "eof without close_notify")
    line = daemon.wait_for_access(client=local, timeout=timeout)
    assert line.get("reason") == "revoked", line
    assert "revoked while connected" in line.get("detail", ""), line
    return line


def still_open(sock) -> bool:
    sock.sendall(b"again\n")
    sock.settimeout(5)
    return sock.recv(100) == b"again\n"


def revoke(pki, cert: str) -> None:
    pki.openssl("ca", "-batch", "-name", "root_ca", "-revoke", pki.path(f"{cert}.crt"))


def test_reloaded_crl_file_closes_the_revoked_peers_connection(serve_rv, rpki, tmp_path):
    mine = rpki.copy_to(tmp_path / "pki")
    daemon, up = serve_rv({"crl_files": [mine.path("crl.pem")], "crl_scope": "leaf"})
    victim, victim_addr = hold(daemon, client_context(mine, "client2"))
    bystander, _ = hold(daemon, client_context(mine, "client"))

    revoke(mine, "client2")
    mine.openssl("ca", "-batch", "-name", "root_ca", "-gencrl", "-out", mine.path("crl.pem"))
    daemon.send_signal(signal.SIGHUP)

    line = assert_closed_as_revoked(daemon, victim, victim_addr)
    assert line["result"] == "accepted" and "crl file" in line["detail"], line
    assert still_open(bystander)
    # ...and it cannot come back.
    ex = echo_roundtrip(daemon.addr(), client_context(mine, "client2"))
    assert ex.data == b"" and ex.alert, ex
    assert daemon.wait_for_access(client=ex.local)["reason"] == "revoked"
    bystander.close()


def test_recheck_can_be_turned_off(serve_rv, rpki, tmp_path):
    mine = rpki.copy_to(tmp_path / "pki")
    daemon, up = serve_rv({"crl_files": [mine.path("crl.pem")], "crl_scope": "leaf",
                           "recheck_established": False})
    sock, _ = hold(daemon, client_context(mine, "client2"))
    revoke(mine, "client2")
    mine.openssl("ca", "-batch", "-name", "root_ca", "-gencrl", "-out", mine.path("crl.pem"))
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_for_log(lambda l: l.get("msg") == "reloaded")
    assert still_open(sock)
    sock.close()


def test_refreshed_distribution_point_crl_closes_the_revoked_peers_connection(
        serve_rv, rpki, rv, tmp_path):
    mine = rpki.copy_to(tmp_path / "pki")
    daemon, up = serve_rv({"crl_distribution_points": True})
    # A CRL that expires in 6 seconds: mtlsd refreshes it about a second before that. Made
    # once the daemon is up, so that the first handshake fetches it while it is current and
    # the connection below, the revocation and the new CRL are in place before the refresh.
    mine.openssl("ca", "-batch", "-name", "root_ca", "-gencrl", "-crlsec", "6",
                 "-out", mine.path("short.pem"))
    rv.crls[ROOT_CRL] = mine.read("short.pem")
    sock, local = hold(daemon, client_context(mine, "client-cdp"))

    revoke(mine, "client-cdp")
    mine.openssl("ca", "-batch", "-name", "root_ca", "-gencrl", "-out", mine.path("new.pem"))
    rv.crls[ROOT_CRL] = mine.read("new.pem")

    # The refresh comes at most ~5 s after the CRL was made: 20 s is ample.
    line = assert_closed_as_revoked(daemon, sock, local, timeout=20.0)
    assert f"crl {rv.url(ROOT_CRL)}" in line["detail"], line
    assert rv.crl_requests(ROOT_CRL) >= 2


def test_ocsp_answer_closes_the_revoked_peers_connection(serve_rv, rpki, rv, tmp_path):
    mine = rpki.copy_to(tmp_path / "pki")
    rv.ocsp.index = mine.path("db/root/index.txt")
    # Admitted without an answer (soft-fail): nothing is cached for it.
    daemon, up = serve_rv({"ocsp": "leaf", "ocsp_timeout": "1s", "on_unavailable": "allow"})
    rv.stop()
    ctx = client_context(mine, "client-ocsp")
    sock, local = hold(daemon, ctx)

    revoke(mine, "client-ocsp")
    rv.start()
    time.sleep(1.1)  # past the hold-off that follows a failed request
    # The next check of the same certificate learns the revocation: it is refused, and the
    # connection admitted earlier is closed.
    ex = echo_roundtrip(daemon.addr(), ctx)
    assert ex.data == b"" and ex.local, ex
    assert daemon.wait_for_access(client=ex.local)["reason"] == "revoked"
    line = assert_closed_as_revoked(daemon, sock, local)
    assert f"ocsp {rv.ocsp_url}" in line["detail"], line
