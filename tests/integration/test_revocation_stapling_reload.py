"""OCSP stapling across reloads. A reload that rotates the listener's certificate fetches the new
leaf's staple before it publishes the new runtime, so the first handshakes after its `reloaded`
line are stapled already (review: none was until the responder answered the fetch started after
the reload, indefinitely while it was down). A reload that keeps the certificate asks the
responder nothing: the staple it inherits does until halfway through its validity (review: each
reload, a SIGHUP that changed nothing too, asked again and logged "stapling OCSP response" again).
"""

from __future__ import annotations

import shutil
import signal

from helpers import wait_until
from mtlsd_harness import daemon_config, server_listener
from revocation_env import *  # noqa: F401,F403  (fixtures)
from test_revocation_stapling import reload_and_wait, s_client_status, serial_of

STAPLED = "stapling OCSP response"


def renewed_pki(rpki, tmp_path):
    """A copy of the PKI with server-ocsp-2.crt: server-ocsp.crt's key and name under a new
    serial, what a renewal gives."""
    mine = rpki.copy_to(tmp_path / "pki")
    mine.openssl("req", "-new", "-key", mine.path("server-ocsp.key"),
                 "-subj", "/O=mtlsd Test/CN=localhost", "-out", mine.path("renewal.csr"))
    mine.openssl("ca", "-batch", "-notext", "-name", "root_ca", "-extensions", "ext_server_ocsp",
                 "-days", "30", "-in", mine.path("renewal.csr"),
                 "-out", mine.path("server-ocsp-2.crt"))
    return mine


def stapling_daemon(start_mtlsd, make_upstream, pki, rv, cert):
    """A stapling listener serving `cert` (a file the test may replace), its first staple
    fetched, answered from `pki`'s database."""
    rv.ocsp.index = pki.path("db/root/index.txt")
    up = make_upstream()
    listener = server_listener(pki, up.address,
                               tls={"cert": str(cert), "key": pki.path("server-ocsp.key")},
                               revocation={"stapling": True})
    daemon = start_mtlsd(daemon_config([listener], reload={"watch": False}))
    daemon.wait_for_log(lambda l: l.get("msg") == STAPLED)
    return daemon


def serial_hex(pki, cert: str) -> str:
    """The serial as `openssl s_client -status` prints it in the OCSP response."""
    return serial_of(pki, cert).hex().upper()


def test_a_rotated_certificate_is_stapled_from_the_first_handshake_after_the_reload(
        start_mtlsd, make_upstream, rpki, rv, tmp_path):
    mine = renewed_pki(rpki, tmp_path)
    live = tmp_path / "live.crt"
    shutil.copy(mine.path("server-ocsp.crt"), live)
    daemon = stapling_daemon(start_mtlsd, make_upstream, mine, rv, live)
    # A responder a second away (ocsp_timeout is 2 s): a fetch started when the new runtime is
    # published has not come back when the first handshake after the reload is made.
    rv.delay = 1.0
    shutil.copy(mine.path("server-ocsp-2.crt"), live)
    since = len(daemon.logs())
    daemon.send_signal(signal.SIGHUP)
    reloaded = daemon.wait_for_log(lambda l: l.get("msg") == "reloaded", since=since)
    assert reloaded["certificates_rotated"], reloaded
    out = s_client_status(daemon.addr(), mine)
    assert "OCSP Response Status: successful" in out, out
    assert "Cert Status: good" in out, out
    assert f"Serial Number: {serial_hex(mine, 'server-ocsp-2.crt')}" in out, out


def test_a_reload_that_keeps_the_certificate_asks_the_responder_nothing(
        start_mtlsd, make_upstream, rpki, rv, tmp_path):
    mine = renewed_pki(rpki, tmp_path)
    live = tmp_path / "live.crt"
    shutil.copy(mine.path("server-ocsp.crt"), live)
    daemon = stapling_daemon(start_mtlsd, make_upstream, mine, rv, live)
    old_serial = serial_of(mine, "server-ocsp.crt")
    asked = rv.ocsp_requests_for(old_serial)
    assert asked == 1
    for n in range(1, 6):
        reload_and_wait(daemon, n)
    # Served the inherited staple meanwhile.
    out = s_client_status(daemon.addr(), mine)
    assert f"Serial Number: {serial_hex(mine, 'server-ocsp.crt')}" in out, out
    # A rotation's fetch, which the revocation thread (one thread, in order) starts after any
    # fetch those reloads started: once the responder has it, it has theirs too.
    shutil.copy(mine.path("server-ocsp-2.crt"), live)
    reload_and_wait(daemon, 6)
    wait_until(lambda: rv.ocsp_requests_for(serial_of(mine, "server-ocsp-2.crt")) >= 1,
               timeout=10, what="the rotated certificate's staple fetch")
    assert rv.ocsp_requests_for(old_serial) == asked, \
        "reloads that kept the certificate asked the responder again"
    stapled = [l for l in daemon.logs() if l.get("msg") == STAPLED]
    assert len(stapled) == 2, stapled  # the first certificate's, then the rotated one's
