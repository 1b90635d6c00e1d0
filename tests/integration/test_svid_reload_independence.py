"""tls.spiffe: file reloads and X.509-SVID updates are independent.

- An SVID update is applied on top of what the last successful file reload built: it reads no
  file. A CRL file that a file reload refused (damaged, gone) holds up no rotation, and keeps
  what it enforced; a changed CRL that a failed file reload kept out does not go live with an
  SVID update either. Fixing the file later keeps the latest SVID.
- A reload that moves a serving listener to another Workload API socket (or from files to
  tls.spiffe) does not leave it without a certificate: it serves as before the reload until the
  new socket sends its first SVID (`listeners_waiting` in the reload's line, a line when it is
  applied); the latest reload wins.

The agents are workload_api.py's Workload API servers; the clients Python ssl.
"""

from __future__ import annotations

import copy
import ssl

import pytest

from clients import echo_roundtrip
from helpers import reload_with, wait_until
from refusal import assert_admitted
from test_spiffe import SERVER_ID, Traffic, readyz, spiffe_server_config, svid_client, wait_reloaded
from test_spiffe_updates import FILE_RELOAD_FAILED, RELOADED, agent_with, file_reload
from test_trust_binding import svid_client_context
from workload_api import WorkloadApi, der_of, issue_svid

REVOKED_ID = "spiffe://example.org/ns/default/sa/revoked"
WAITS = ("listener waits for the first X.509-SVID from its new SPIFFE Workload API socket; "
         "until then it serves as before this reload")
APPLIED = "listener waited for its new SPIFFE Workload API socket: it now serves as reloaded"


def client_of(pki, svid) -> ssl.SSLContext:
    return svid_client_context(pki, svid.cert_pem, svid.key_pem)


def pki_client(pki, name: str) -> ssl.SSLContext:
    return svid_client_context(pki, pki.path(f"{name}.crt"), pki.path(f"{name}.key"))


def assert_revoked(daemon, ex) -> None:
    """Refused in the handshake as revoked (the upstream is reached by the other clients)."""
    assert ex.local and ex.data == b"" and ex.alert, ex
    line = daemon.wait_for_access(client=ex.local)
    assert line["result"] == "rejected" and line["reason"] == "revoked", line


def crl_listener_config(pki, upstream, socket_path, crl, trust: str) -> dict:
    """A tls.spiffe listener with a CRL file; its trust the bundles or the CA file."""
    config = spiffe_server_config(pki, upstream, socket_path)
    listener = config["listeners"][0]
    listener["revocation"] = {"crl_files": [str(crl)], "crl_scope": "leaf"}
    if trust == "files":
        listener["client_auth"] = {"mode": "require", "ca": [pki.path("ca.crt")]}
    config["reload"] = {"watch": False}  # SIGHUP only: each file reload is the test's
    return config


def expect_reloaded(daemon, mark):
    line = file_reload(daemon, mark)
    assert line["msg"] == RELOADED, line
    return line


def expect_reload_failed(daemon, mark, what: str):
    line = file_reload(daemon, mark)
    assert line["msg"] == FILE_RELOAD_FAILED and what in line["error"], line
    return line


# --- 1. SVID updates read no file ------------------------------------------------------------

@pytest.mark.parametrize("trust", ["bundle", "files"])
def test_a_crl_file_a_reload_refused_holds_up_no_rotation(start_mtlsd, make_upstream, pki,
                                                          short_tmp, tmp_path, trust):
    """Review: the rotation rebuilt the listener from its files, so a CRL file the file reload
    had refused refused the SVID too ("X.509-SVID update refused", the CRL's error), and once
    the file was fixed the reload built with the SVID served before: the new one never came
    (at the old one's expiry, with the file still broken, the listener died)."""
    mine = pki.copy_to(tmp_path / "pki")
    revoked = issue_svid(mine, tmp_path, REVOKED_ID)
    mine.openssl("ca", "-batch", "-name", "root_ca", "-revoke", revoked.cert_pem)
    crl = tmp_path / "ours.crl"
    mine.openssl("ca", "-batch", "-name", "root_ca", "-gencrl", "-out", str(crl))
    good_crl = crl.read_bytes()
    socket_path, api, first = agent_with(pki, short_tmp, tmp_path)
    try:
        up = make_upstream()
        daemon = start_mtlsd(crl_listener_config(pki, up.address, socket_path, crl, trust))
        wait_reloaded(daemon, first.serial)
        assert svid_client(pki, daemon.addr())() == first.serial
        assert_revoked(daemon, echo_roundtrip(daemon.addr(), client_of(pki, revoked)))

        # Caught half-written (or between two steps of a pipeline): the file reload fails.
        mark = daemon.log_mark()
        crl.write_text("-----BEGIN X509 CRL-----\nAAAA\n")
        expect_reload_failed(daemon, mark, "damaged PEM block")
        mark = daemon.log_mark()
        crl.unlink()
        expect_reload_failed(daemon, mark, "cannot read CRL")

        # The agent rotates: applied, with the CRL as the last good file reload loaded it.
        second = issue_svid(pki, tmp_path, SERVER_ID)
        mark = daemon.log_mark()
        api.publish(second)
        line = wait_reloaded(daemon, second.serial, since=mark)
        assert line["certificates_rotated"] == f"inbound:{first.serial}->{second.serial}", line
        assert [l for l in daemon.logs()[mark:] if "refused" in l.get("msg", "")] == []
        assert svid_client(pki, daemon.addr())() == second.serial
        assert_revoked(daemon, echo_roundtrip(daemon.addr(), client_of(pki, revoked)))

        # The file is back: the reload builds with the latest SVID, not the one before.
        mark = daemon.log_mark()
        crl.write_bytes(good_crl)
        expect_reloaded(daemon, mark)
        assert svid_client(pki, daemon.addr())() == second.serial
        assert readyz(daemon).status == 200
        assert daemon.scrape().get("mtlsd_config_last_reload_successful") == 1
    finally:
        api.stop()


def test_an_svid_update_does_not_make_a_refused_crl_change_live(start_mtlsd, make_upstream, pki,
                                                                short_tmp, tmp_path):
    """Review (from code): the rotation re-read the CRL file, so a new CRL that a failed file
    reload had kept out went live with it, with no `reloaded` line for the file. It waits for
    the file reload that succeeds."""
    crl = tmp_path / "ours.crl"
    crl.write_bytes(open(pki.path("crl.pem"), "rb").read())  # revokes client-revoked only
    socket_path, api, first = agent_with(pki, short_tmp, tmp_path)
    try:
        up = make_upstream()
        daemon = start_mtlsd(crl_listener_config(pki, up.address, socket_path, crl, "files"))
        wait_reloaded(daemon, first.serial)
        victim = pki_client(pki, "client-ocsp-revoked")  # revoked by crl-base.pem
        assert_admitted(daemon, echo_roundtrip(daemon.addr(), victim), b"ping\n")

        # A new CRL, and a configuration that does not load: the file reload fails.
        good = daemon.config_path.read_text()
        mark = daemon.log_mark()
        crl.write_bytes(open(pki.path("crl-base.pem"), "rb").read())
        daemon.config_path.write_text(good + "no_such_key: 1\n")
        expect_reload_failed(daemon, mark, "no_such_key")

        second = issue_svid(pki, tmp_path, SERVER_ID)
        mark = daemon.log_mark()
        api.publish(second)
        wait_reloaded(daemon, second.serial, since=mark)
        assert svid_client(pki, daemon.addr())() == second.serial
        assert_admitted(daemon, echo_roundtrip(daemon.addr(), victim), b"ping\n")

        # The file reload that succeeds brings it.
        mark = daemon.log_mark()
        daemon.config_path.write_text(good)
        expect_reloaded(daemon, mark)
        assert_revoked(daemon, echo_roundtrip(daemon.addr(), victim))
        assert svid_client(pki, daemon.addr())() == second.serial
    finally:
        api.stop()


# --- 2. A listener moved to another socket waits for it, serving as before -------------------

def waiting_reload(daemon, config, socket_path: str, still_serves=None) -> dict:
    """Reloads `config`, which moves `inbound` to `socket_path`: `still_serves()` passes (the
    listener serves as before), and the reload says it waits."""
    mark = daemon.log_mark()
    line = reload_with(daemon, config)
    if still_serves:
        still_serves()
    assert line["result"] == "success" and line.get("listeners_waiting") == "inbound", line
    assert "inbound" not in line["listeners_updated"].split(","), line
    wait = daemon.wait_for_log(lambda l: l.get("msg") == WAITS, since=mark)
    assert wait["listener"] == "inbound" and wait["socket"] == f"unix:{socket_path}", wait
    return line


def wait_applied(daemon, socket_path: str, serial: str, since: int) -> dict:
    line = daemon.wait_for_log(lambda l: l.get("msg") == APPLIED, timeout=10, since=since)
    assert line["listener"] == "inbound" and line["socket"] == f"unix:{socket_path}", line
    assert line["serial"] == serial, line
    wait_reloaded(daemon, serial, since=since)
    return line


def client_stopped(daemon, socket_path: str, since: int) -> dict:
    return daemon.wait_for_log(lambda l: l.get("msg") == "SPIFFE Workload API client stopped"
                               and l.get("socket") == socket_path, since=since)


def test_a_reload_to_a_silent_socket_keeps_the_listener_serving(start_mtlsd, make_upstream, pki,
                                                                short_tmp, tmp_path):
    """Review: the reload dropped the old client and SVID at once and published the listener
    with no certificate: `reloaded` said success, every handshake failed (protocol_error) and
    /readyz said 503 — with a wrong path, for good."""
    a, api_a, first = agent_with(pki, short_tmp, tmp_path, "a.sock")
    b = str(short_tmp / "b.sock")
    api_b = None
    try:
        up = make_upstream()
        daemon = start_mtlsd(spiffe_server_config(pki, up.address, a))
        wait_reloaded(daemon, first.serial)
        def serves_first():
            assert svid_client(pki, daemon.addr())() == first.serial
            assert readyz(daemon).status == 200
        waiting_reload(daemon, spiffe_server_config(pki, up.address, b), b, serves_first)

        # The old socket still rotates the listener meanwhile.
        second = issue_svid(pki, tmp_path, SERVER_ID)
        mark = daemon.log_mark()
        api_a.publish(second)
        wait_reloaded(daemon, second.serial, since=mark)
        assert svid_client(pki, daemon.addr())() == second.serial

        # The new agent answers: swapped in, and the old socket let go.
        mark = daemon.log_mark()
        api_b = WorkloadApi(b)
        third = issue_svid(pki, tmp_path, SERVER_ID)
        api_b.publish(third, bundle=der_of(pki, "ca"))
        wait_applied(daemon, b, third.serial, mark)
        client_stopped(daemon, a, mark)
        assert svid_client(pki, daemon.addr())() == third.serial
        assert readyz(daemon).status == 200
    finally:
        api_a.stop()
        if api_b:
            api_b.stop()


def test_a_reload_to_a_live_socket_loses_no_handshake(start_mtlsd, make_upstream, pki, short_tmp,
                                                      tmp_path):
    """Review: even a move to a live agent published the listener without a certificate until
    the new stream's first message; the handshakes of that gap failed."""
    a, api_a, first = agent_with(pki, short_tmp, tmp_path, "a.sock")
    b, api_b, second = agent_with(pki, short_tmp, tmp_path, "b.sock")
    try:
        up = make_upstream()
        daemon = start_mtlsd(spiffe_server_config(pki, up.address, a))
        wait_reloaded(daemon, first.serial)
        traffic = Traffic(svid_client(pki, daemon.addr()))
        traffic.wait_for(first.serial)
        mark = daemon.log_mark()
        reload_with(daemon, spiffe_server_config(pki, up.address, b))
        traffic.wait_for(second.serial)
        traffic.stop()
        assert traffic.failures == [], traffic.failures[:3]
        line = daemon.wait_for_log(lambda l: l.get("msg") == RELOADED and
                                   l.get("trigger") == "SIGHUP", since=mark)
        assert line.get("listeners_waiting") == "inbound", line
        wait_applied(daemon, b, second.serial, mark)
        assert traffic.seen == [first.serial, second.serial]
    finally:
        api_a.stop()
        api_b.stop()


def test_a_reload_from_files_to_a_silent_socket_keeps_the_files_certificate(
        start_mtlsd, make_upstream, pki, short_tmp, tmp_path):
    """Switching a listener from its certificate files to tls.spiffe: the files' certificate
    serves until the agent's first SVID."""
    b = str(short_tmp / "b.sock")
    up = make_upstream()
    spiffe = spiffe_server_config(pki, up.address, b)
    spiffe["listeners"][0]["client_auth"] = {"mode": "require", "ca": [pki.path("ca.crt")]}
    files = copy.deepcopy(spiffe)
    files["listeners"][0]["tls"] = {"cert": pki.path("server.crt"), "key": pki.path("server.key")}
    daemon = start_mtlsd(files)
    client = pki_client(pki, "client")
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client), b"ping\n")
    def serves_files():
        assert_admitted(daemon, echo_roundtrip(daemon.addr(), client), b"ping\n")
        assert readyz(daemon).status == 200
    waiting_reload(daemon, spiffe, b, serves_files)
    api = WorkloadApi(b)
    try:
        mark = daemon.log_mark()
        svid = issue_svid(pki, tmp_path, SERVER_ID)
        api.publish(svid, bundle=der_of(pki, "ca"))
        wait_applied(daemon, b, svid.serial, mark)
        assert svid_client(pki, daemon.addr())() == svid.serial
    finally:
        api.stop()


def test_the_latest_reload_wins_while_a_listener_waits(start_mtlsd, make_upstream, pki,
                                                       short_tmp, tmp_path):
    a, api_a, first = agent_with(pki, short_tmp, tmp_path, "a.sock")
    b, c = str(short_tmp / "b.sock"), str(short_tmp / "c.sock")
    api_c = None
    try:
        up = make_upstream()
        daemon = start_mtlsd(spiffe_server_config(pki, up.address, a))
        wait_reloaded(daemon, first.serial)
        waiting_reload(daemon, spiffe_server_config(pki, up.address, b), b)

        # Back to the socket it serves from: nothing waits, b is let go.
        mark = daemon.log_mark()
        line = reload_with(daemon, spiffe_server_config(pki, up.address, a))
        assert line["listeners_waiting"] == "" and line["listeners_updated"] == "inbound", line
        client_stopped(daemon, b, mark)
        assert svid_client(pki, daemon.addr())() == first.serial

        # To b, then to c: only c is waited for, and what applies is the last configuration.
        waiting_reload(daemon, spiffe_server_config(pki, up.address, b), b)
        mark = daemon.log_mark()
        last = spiffe_server_config(pki, up.address, c)
        last["listeners"][0]["client_auth"]["allow"] = {"spiffe_ids": [SERVER_ID]}
        waiting_reload(daemon, last, c)
        client_stopped(daemon, b, mark)
        assert svid_client(pki, daemon.addr())() == first.serial  # the client still admitted
        api_c = WorkloadApi(c)
        second = issue_svid(pki, tmp_path, SERVER_ID)
        mark = daemon.log_mark()
        api_c.publish(second, bundle=der_of(pki, "ca"))
        wait_applied(daemon, c, second.serial, mark)
        with pytest.raises((ssl.SSLError, OSError, AssertionError)):
            svid_client(pki, daemon.addr())()  # not allowed by the last configuration
        assert svid_client(pki, daemon.addr(), cert=issue_svid(pki, tmp_path, SERVER_ID))() == \
            second.serial
    finally:
        api_a.stop()
        if api_c:
            api_c.stop()


def test_a_listener_a_reload_adds_waits_for_its_svid_as_at_start(start_mtlsd, make_upstream, pki,
                                                                 short_tmp, tmp_path):
    a, api_a, first = agent_with(pki, short_tmp, tmp_path, "a.sock")
    b = str(short_tmp / "b.sock")
    try:
        up = make_upstream()
        config = spiffe_server_config(pki, up.address, a)
        daemon = start_mtlsd(config)
        wait_reloaded(daemon, first.serial)
        added = spiffe_server_config(pki, up.address, b)["listeners"][0]
        added["name"] = "added"
        config["listeners"].append(added)
        line = reload_with(daemon, config)
        assert line["listeners_started"] == "added" and not line.get("listeners_waiting"), line
        res = readyz(daemon)
        assert res.status == 503 and "listener added: waiting for the first X.509-SVID" in res.text
        assert svid_client(pki, daemon.addr())() == first.serial
    finally:
        api_a.stop()
