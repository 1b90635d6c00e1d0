"""Client mode, `server_auth.insecure_skip_verify: true`: the remote's certificate is not judged
at all, revocation included (review, finding 1).

Before, OpenSSL ignored the verdict but mtlsd's verify callback still ran: a remote a CRL file
revoked was admitted while mtlsd_revocation_checks_total counted it `revoked` and the access line
named its never-verified subject as the `identity`; a remote stapling "revoked" was refused all
the same; and `mtlsd check` said nothing of the revocation settings it had no use for.
"""

from __future__ import annotations

import datetime
import socket

from clients import fmt_addr
from mtlsd_harness import daemon_config, run_cli, write_config
from revocation_env import *  # noqa: F401,F403  (fixtures)
from test_client_revocation import gencrl, outbound, revoke
from test_ocsp_revocation_stands import signed_answer
from tls_remote import Remote, s_server

UNUSED = ".revocation is not used with server_auth.insecure_skip_verify: true"


def insecure(pki, remote: str, **revocation) -> dict:
    listener = outbound(pki, remote, **revocation)
    listener["server_auth"]["insecure_skip_verify"] = True
    return listener


def reply(client, payload: bytes, expect: bytes) -> dict:
    """The app's exchange through the outbound listener (`expect` back, then it closes): its
    access line."""
    with socket.create_connection(client.addr("outbound"), timeout=10) as sock:
        local = fmt_addr(sock.getsockname())
        sock.sendall(payload)
        got = b""
        while len(got) < len(expect) and (chunk := sock.recv(100)):
            got += chunk
    assert got == expect, (got, client.access_logs(client=local))
    return client.wait_for_access(client=local)


def assert_unjudged(client, line: dict, subject: str) -> None:
    """Admitted, with no identity (nothing verified; the certificate only in peer_subject), and
    no revocation check counted."""
    assert line["result"] == "accepted", line
    assert line["identity"] == "", line
    assert line["peer_subject"].startswith(subject), line
    checks = client.scrape().series("mtlsd_revocation_checks_total", listener="outbound")
    assert all(value == 0 for _, value in checks), checks


def test_a_crl_file_judges_nothing_under_insecure_skip_verify(start_mtlsd, mtlsd_bin, rpki,
                                                              tmp_path):
    mine = rpki.copy_to(tmp_path / "pki")
    revoke(mine, "server.crt")
    crl = gencrl(mine)
    remote = Remote(mine.path("server.crt"), mine.path("server.key"))
    try:
        config = daemon_config([insecure(mine, remote.address, crl_files=[crl])])
        client = start_mtlsd(config)
        line = reply(client, b"ping\n", b"ping\n")
        assert_unjudged(client, line, "CN=localhost")
        # The start and `check` say that the revocation settings are not used.
        assert UNUSED in client.stderr_text(), client.output_tail()
        proc = run_cli(mtlsd_bin, "check", "--config",
                       str(write_config(tmp_path / "check.yaml", config)))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert UNUSED in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    finally:
        remote.close()


def test_a_stapled_revocation_judges_nothing_under_insecure_skip_verify(start_mtlsd, rpki,
                                                                        tmp_path):
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    earlier = now - datetime.timedelta(seconds=1)
    staple = tmp_path / "revoked.der"
    staple.write_bytes(signed_answer(rpki, "server-ocsp.crt", earlier,
                                     now + datetime.timedelta(hours=1), earlier))
    with s_server(rpki.path("server-ocsp.crt"), rpki.path("server-ocsp.key"),
                  "-status_file", str(staple)) as address:
        client = start_mtlsd(daemon_config([insecure(rpki, address)]))
        line = reply(client, b"ping\n", b"gnip\n")  # s_server -rev: each line reversed
        assert_unjudged(client, line, "CN=localhost")
