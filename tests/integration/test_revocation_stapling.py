"""OCSP stapling: a server-mode listener staples a fresh OCSP response for its
own certificate (seen with `openssl s_client -status`); a client-mode listener
checks the remote's stapled response and refuses a remote stapled as revoked."""

from __future__ import annotations

import socket
import subprocess

from mtlsd_harness import daemon_config, fmt_addr, server_listener
from revocation_env import *  # noqa: F401,F403  (fixtures)
from revocation_env import metric
from revocation_servers import wait_until


def stapling_listener(pki, upstream: str, **revocation) -> dict:
    return server_listener(pki, upstream, tls={"cert": pki.path("server-ocsp.crt"),
                                               "key": pki.path("server-ocsp.key")},
                           revocation={"stapling": True, **revocation})


def s_client_status(addr, pki) -> str:
    proc = subprocess.run(
        ["openssl", "s_client", "-connect", fmt_addr(addr), "-servername", "localhost",
         "-CAfile", pki.path("ca.crt"), "-cert", pki.path("client.crt"),
         "-key", pki.path("client.key"), "-status"],
        input=b"", capture_output=True, timeout=10)
    return proc.stdout.decode(errors="replace")


def test_stapled_response_is_visible_with_s_client_status(start_mtlsd, make_upstream, rpki, rv):
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([stapling_listener(rpki, up.address)]))
    def stapled():
        out = s_client_status(daemon.addr(), rpki)
        return out if "OCSP Response Status: successful" in out else None
    out = wait_until(stapled, timeout=10, interval=0.1, what="a stapled OCSP response")
    assert "Cert Status: good" in out, out
    assert "Responder Id: O = mtlsd Test, CN = mtlsd Test OCSP Responder" in out, out
    daemon.wait_for_log(lambda l: l.get("msg") == "stapling OCSP response")
    # Fetched once in the background, not per handshake.
    assert rv.ocsp_requests() == 1


def test_no_staple_without_a_responder_answer(start_mtlsd, make_upstream, rpki, rv):
    rv.stop()
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([stapling_listener(rpki, up.address)]))
    daemon.wait_for_log(lambda l: l.get("msg") == "cannot refresh the stapled OCSP response")
    out = s_client_status(daemon.addr(), rpki)
    assert "OCSP response: no response sent" in out, out


def plain_exchange(addr, payload: bytes = b"ping\n", timeout: float = 10.0):
    """The local app's side of a client-mode listener: (data received, local address)."""
    with socket.create_connection(addr, timeout=timeout) as sock:
        local = fmt_addr(sock.getsockname())
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    return data, local


def outbound(pki, remote: str) -> dict:
    return {"name": "outbound", "mode": "client", "listen": "127.0.0.1:0", "upstream": remote,
            "tls": {"cert": pki.path("client.crt"), "key": pki.path("client.key")},
            "server_auth": {"ca": [pki.path("ca.crt")]}}


def remote_and_client(start_mtlsd, make_upstream, pki, remote_pki):
    """A stapling server-mode mtlsd (certificate status from `remote_pki`'s database) and a
    client-mode mtlsd in front of it."""
    up = make_upstream()
    remote = start_mtlsd(daemon_config([stapling_listener(remote_pki, up.address)]))
    remote.wait_for_log(lambda l: l.get("msg") in ("stapling OCSP response",
                                                  "our own certificate is revoked (stapling the "
                                                  "OCSP response that says so)"))
    host, port = remote.addr()
    client = start_mtlsd(daemon_config([outbound(pki, f"{host}:{port}")]))
    return remote, client, up


def test_client_mode_checks_a_good_staple(start_mtlsd, make_upstream, rpki, rv):
    remote, client, up = remote_and_client(start_mtlsd, make_upstream, rpki, rpki)
    data, local = plain_exchange(client.addr("outbound"))
    assert data == b"ping\n"
    line = client.wait_for_access(client=local)
    assert line["result"] == "accepted", line
    assert metric(client, "mtlsd_revocation_checks_total", listener="outbound", method="ocsp",
                  result="good") == 1


def test_client_mode_refuses_a_remote_stapled_as_revoked(start_mtlsd, make_upstream, rpki, rv,
                                                         tmp_path):
    mine = rpki.copy_to(tmp_path / "pki")
    mine.openssl("ca", "-batch", "-name", "root_ca", "-revoke", mine.path("server-ocsp.crt"))
    rv.ocsp.index = mine.path("db/root/index.txt")
    remote, client, up = remote_and_client(start_mtlsd, make_upstream, rpki, mine)
    data, local = plain_exchange(client.addr("outbound"))
    assert data == b""
    line = client.wait_for_access(client=local)
    assert line["result"] == "rejected" and line["reason"] == "revoked", line
    assert "stapled OCSP response" in line["detail"], line
    assert metric(client, "mtlsd_revocation_checks_total", listener="outbound", method="ocsp",
                  result="revoked") == 1
    up.assert_untouched()
