"""Edges of a reload's re-judging of open connections (README "Reload"), each from a review:

- a CRL file past its nextUpdate (`on_unavailable: fail`) has the old runtime refuse every peer
  as revocation_unavailable; a reload that brings a fresh CRL and drops a peer from `allow`, or
  removes its CA, must close that peer's connections all the same (it closed none: "refused by
  the old runtime too" excused them). Only the same reason under both is not the reload's doing;
- a listener the reload removes keeps its connections running under their own runtime even when
  another listener, already there, moves onto its address (they were judged by that one); a
  renamed listener's connections are judged by the new name, at that reload and later ones;
- a client-mode connection is judged against the name its handshake checked: a reload that
  points the listener at another remote (upstream and server_name) leaves it open (it was closed
  as hostname_mismatch), while a change of trust still closes it;
- a reload asked for while draining (SIGHUP, a file change) logs `reload ignored` (it logged
  nothing) and is no failure.

One worker each, so that the access line of a connection the reload closes says that the
re-judging went past every other connection too (then the kept ones are shown still relaying).
"""

from __future__ import annotations

import signal
import socket
import ssl
import time

import pytest

from helpers import reload_with, stamp
from mtlsd_harness import client_context, daemon_config, fmt_addr, server_listener, write_config
from test_client_mode import client_listener
from test_reload_rejudge import assert_rejudged, echo, hold
from test_revocation_crl import root_crl
from upstream import free_port


def config(listeners: list[dict], **overrides) -> dict:
    return daemon_config(listeners, workers=1, reload={"watch": False}, **overrides)


def still_relaying(daemon, conn: socket.socket, local: str) -> None:
    echo(conn, b"after\n")
    assert not daemon.access_logs(client=local), "closed by the reload"


# --- a stale CRL file ------------------------------------------------------------------------

def short_crls(pki, life: int) -> tuple[list[str], float]:
    """CRLs of the root CA and of other-ca current from an hour ago until `life` seconds from
    now (new files each call): (their paths, their nextUpdate as a Unix time)."""
    now = time.time()
    next_update = float(int(now) + life)
    dates = ("-crl_lastupdate", stamp(now - 3600), "-crl_nextupdate", stamp(next_update))
    root = root_crl(pki, f"root-{life}.pem", *dates)
    pki.openssl("ca", "-batch", "-name", "other_ca", "-gencrl", *dates,
                "-out", pki.path(f"other-{life}.pem"))
    return [root, pki.path(f"other-{life}.pem")], next_update


def test_a_stale_crl_does_not_keep_open_the_peers_a_reload_now_refuses(start_mtlsd,
                                                                       make_upstream, pki,
                                                                       tmp_path):
    mine = pki.copy_to(tmp_path / "pki")
    up = make_upstream()

    def listener(cas: list[str], crls: list[str], names: list[str]) -> dict:
        return server_listener(mine, up.address, revocation={"crl_files": crls},
                               client_auth={"ca": [mine.path(c) for c in cas],
                                            "allow": {"common_names": names}})
    both = ["ca.crt", "other-ca.crt"]
    everyone = ["client", "client2", "client-other"]
    daemon = start_mtlsd(config([listener(both, [root_crl(mine, "root.pem")], everyone)]))
    # The connections must be admitted under CRLs that go stale soon after: reloaded in, and
    # the connections made, with a longer life if that took too long on a busy machine.
    for life in (4, 8, 16, 32):
        crls, next_update = short_crls(mine, life)
        reload_with(daemon, config([listener(both, crls, everyone)]))
        try:
            held = {name: hold(daemon.addr(), client_context(mine, name)) for name in everyone}
        except (OSError, ssl.SSLError, AssertionError):
            continue
        if time.time() < next_update - 0.5:
            break
        for tls, _ in held.values():
            tls.close()
    else:
        pytest.fail("the connections were never made before the CRLs went stale")
    # Past nextUpdate the listener refuses every full handshake: the CRLs answer for nobody.
    time.sleep(max(0.0, next_update + 1.05 - time.time()))
    late = socket.create_connection(daemon.addr(), timeout=10)
    late_addr = fmt_addr(late.getsockname())
    try:
        client_context(mine, "client").wrap_socket(late, server_hostname="localhost").close()
    except (OSError, ssl.SSLError):
        pass
    late.close()
    assert daemon.wait_for_access(client=late_addr)["reason"] == "revocation_unavailable"

    # One reload publishes a fresh root CRL, drops client2 from `allow` and removes other-ca.
    reload_with(daemon, config([listener(["ca.crt"], [root_crl(mine, "fresh.pem")],
                                         ["client", "client-other"])]))
    assert_rejudged(daemon, *held["client2"], "not_authorized")
    assert_rejudged(daemon, *held["client-other"], "unknown_ca")
    # Refused by the old runtime too (its CRL is stale), admitted by the new: kept.
    still_relaying(daemon, *held["client"])
    held["client"][0].close()


# --- listeners removed, moved and renamed ----------------------------------------------------

def test_a_removed_listeners_connections_run_on_when_another_moves_onto_its_address(
        start_mtlsd, make_upstream, pki):
    up = make_upstream()
    at_a = f"127.0.0.1:{free_port()}"
    a = server_listener(pki, up.address, name="a", listen=at_a)
    b = server_listener(pki, up.address, name="b", listen=f"127.0.0.1:{free_port()}",
                        client_auth={"ca": [pki.path("other-ca.crt")]})
    witness = server_listener(pki, up.address, name="w")
    daemon = start_mtlsd(config([a, b, witness]))
    kept, kept_addr = hold(daemon.addr("a"), client_context(pki))
    closed, closed_addr = hold(daemon.addr("w"), client_context(pki))

    # a is removed; b (trusting other-ca only) moves onto a's address: no rename.
    tight = {"allow": {"common_names": ["client2"]}}
    line = reload_with(daemon, config([dict(b, listen=at_a),
                                       server_listener(pki, up.address, name="w",
                                                       client_auth=tight)]))
    assert (line["listeners_stopped"], line["listeners_started"]) == ("a,b", "b"), line
    assert_rejudged(daemon, closed, closed_addr, "not_authorized")
    still_relaying(daemon, kept, kept_addr)
    kept.close()


def test_a_renamed_listeners_connections_are_judged_by_it_then_and_at_later_reloads(
        start_mtlsd, make_upstream, pki):
    up = make_upstream()
    at = f"127.0.0.1:{free_port()}"

    def listener(name: str, names: list[str], **more) -> dict:
        return server_listener(pki, up.address, name=name, listen=at,
                               client_auth={"allow": {"common_names": names}}, **more)
    daemon = start_mtlsd(config([listener("old", ["client", "client2"])]))
    addr = daemon.addr("old")
    dropped, dropped_addr = hold(addr, client_context(pki, "client2"))
    far, far_addr = hold(addr, client_context(pki), source="127.0.0.2")
    near, near_addr = hold(addr, client_context(pki))

    # Renamed (same address), its rule tightened: judged by the new name.
    reload_with(daemon, config([listener("new", ["client"])]))
    assert_rejudged(daemon, dropped, dropped_addr, "not_authorized")
    # A later reload judges them by it again.
    reload_with(daemon, config([listener("new", ["client"], allowed_sources=["127.0.0.1/32"])]))
    assert_rejudged(daemon, far, far_addr, "source_not_allowed")
    still_relaying(daemon, near, near_addr)
    near.close()


# --- client mode: another remote -------------------------------------------------------------

def test_a_client_mode_connection_is_judged_by_the_name_its_handshake_checked(
        start_mtlsd, make_upstream, pki):
    up = make_upstream()
    remote = f"127.0.0.1:{free_port()}"

    def srv(names: list[str]) -> dict:
        return server_listener(pki, up.address, name="srv", listen=remote,
                               client_auth={"allow": {"common_names": names}})
    cli = client_listener(pki, remote, name="cli")
    daemon = start_mtlsd(config([srv(["client", "client2"]), cli]))
    plain = socket.create_connection(daemon.addr("cli"), timeout=10)
    echo(plain, b"before\n")
    witness, witness_addr = hold(daemon.addr("srv"), client_context(pki, "client2"))

    # The operator points the listener at another remote, whose certificate names another host.
    moved = dict(cli, upstream="127.0.0.1:1",
                 server_auth=dict(cli["server_auth"], server_name="new-remote.example.org"))
    reload_with(daemon, config([srv(["client"]), moved]))
    assert_rejudged(daemon, witness, witness_addr, "not_authorized")
    echo(plain, b"after\n")
    assert not daemon.access_logs(listener="cli"), "the open connection was closed"

    # A change of trust still closes it.
    distrusted = dict(moved, server_auth=dict(moved["server_auth"],
                                              ca=[pki.path("other-ca.crt")]))
    reload_with(daemon, config([srv(["client"]), distrusted]))
    line = daemon.wait_for_access(listener="cli")
    assert (line["reason"], line["termination"]) == ("unknown_ca", "reload_rejudged"), line
    plain.settimeout(10)
    with pytest.raises(ConnectionResetError):  # its stream was cut: a reset, not a FIN
        plain.recv(100)
    plain.close()


# --- while draining --------------------------------------------------------------------------

def test_a_reload_asked_for_while_draining_is_logged_as_ignored(start_mtlsd, make_upstream, pki):
    up = make_upstream()

    def watched(idle: str) -> dict:
        return daemon_config([server_listener(pki, up.address, timeouts={"idle": idle})],
                             workers=1, reload={"watch": True}, shutdown={"drain_timeout": "60s"})
    daemon = start_mtlsd(watched("5m"))
    open_one, _ = hold(daemon.addr(), client_context(pki))  # keeps the drain going
    mark = daemon.log_mark()
    daemon.send_signal(signal.SIGTERM)
    daemon.wait_for_log(lambda l: l.get("msg") == "draining", since=mark)

    daemon.send_signal(signal.SIGHUP)
    daemon.wait_for_log(lambda l: l.get("msg") == "reload ignored"
                        and l.get("trigger") == "SIGHUP", since=mark)
    write_config(daemon.config_path, watched("7m"))
    line = daemon.wait_for_log(lambda l: l.get("msg") == "reload ignored"
                               and l.get("trigger") == "file_change", since=mark)
    assert (line["level"], line["why"]) == ("info", "draining"), line
    assert not [l for l in daemon.logs()[mark:] if "reload" in l.get("msg", "")
                and l.get("msg") != "reload ignored"]
    assert daemon.scrape().total("mtlsd_config_reloads_total", result="failure") == 0

    # The drain goes on: it ends with the last connection.
    echo(open_one, b"still\n")
    open_one.close()
    assert daemon.wait_exit() == 0
