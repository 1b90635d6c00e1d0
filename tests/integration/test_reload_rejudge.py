"""A reload re-judges open connections: those whose peers the new configuration refuses are
closed (a layer-4 stream is cut: no close_notify, see test_relay_cut_by_mtlsd.py; access line
with the new policy's reason and `reload_rejudged`, counted in mtlsd_connections_closed_total);
the others keep streaming, untouched.

Each test holds connections with live echo traffic, changes what the listener admits, sends
SIGHUP and waits for the victims' access lines (the daemon's own signal), then proves the
bystanders still echo.
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl

import pytest

from faults import wait_active
from helpers import reload_with
from test_client_mode import client_listener
from tls_remote import Remote, plain_exchange
from mtlsd_harness import (client_context, daemon_config, fmt_addr, read_to_end, server_listener,
                           strict_eof)

CLIENT_ID = "spiffe://example.org/ns/default/sa/client"
NO_ISSUER = "unable to get local issuer certificate"


def hold(addr, ctx: ssl.SSLContext, source: str = "127.0.0.1"):
    """An admitted connection with traffic flowing: (socket, its address in the access log).
    Makes `ctx` strict_eof, so that assert_rejudged can tell close_notify from a bare close."""
    sock = socket.create_connection(addr, timeout=10, source_address=(source, 0))
    local = fmt_addr(sock.getsockname())
    tls = strict_eof(ctx).wrap_socket(sock, server_hostname="localhost")
    echo(tls, b"before\n")
    return tls, local


def echo(tls: ssl.SSLSocket, data: bytes) -> None:
    tls.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = tls.recv(100)
        assert chunk, f"closed while echoing {data!r}"
        got += chunk
    assert got == data


def assert_rejudged(daemon, tls: ssl.SSLSocket, local: str, reason: str) -> dict:
    """mtlsd closed the connection, a layer-4 stream with no end of its own, without
    close_notify (it was cut), and logged the new policy's reason."""
    tls.settimeout(10)
    assert read_to_end(tls) == (b"", "eof without close_notify")
    line = daemon.wait_for_access(client=local)
    assert line["reason"] == reason, line
    assert line["detail"].startswith("reload_rejudged: "), line
    assert line["termination"] == "reload_rejudged", line
    assert line["result"] == "accepted", line  # it was admitted, and relayed until now
    tls.close()
    return line


def still_streaming(daemon, tls: ssl.SSLSocket, local: str) -> None:
    echo(tls, b"after\n")
    assert not daemon.access_logs(client=local), "a bystander was closed"


def closed_count(daemon, reason: str) -> float:
    return daemon.scrape().get("mtlsd_connections_closed_total", listener="inbound",
                               reason=reason)


def trusting_two_cas(start_mtlsd, make_upstream, pki, tmp_path):
    """A daemon whose client_auth.ca is one file holding ca.crt and other-ca.crt, reloaded by
    SIGHUP only: (daemon, that file)."""
    bundle = tmp_path / "bundle.crt"
    bundle.write_bytes(pki.read("ca.crt") + pki.read("other-ca.crt"))
    config = daemon_config([server_listener(pki, make_upstream().address,
                                            client_auth={"ca": [str(bundle)]})],
                           reload={"watch": False})
    return start_mtlsd(config), bundle


def test_removing_a_ca_closes_exactly_its_peers(start_mtlsd, make_upstream, pki, tmp_path):
    daemon, bundle = trusting_two_cas(start_mtlsd, make_upstream, pki, tmp_path)
    other, other_addr = hold(daemon.addr(), client_context(pki, "client-other"))
    mine, mine_addr = hold(daemon.addr(), client_context(pki, "client"))
    assert closed_count(daemon, "unknown_ca") == 0

    shutil.copyfile(pki.path("ca.crt"), bundle)
    daemon.send_signal(signal.SIGHUP)
    line = assert_rejudged(daemon, other, other_addr, "unknown_ca")
    assert "client-other" in line["identity"] or "client-other" in line["detail"], line
    # As a fresh handshake names it: its CA, which the client did not send, is not in the trust
    # store (review: "self-signed certificate in certificate chain", naming that CA).
    assert line["detail"].startswith(f"reload_rejudged: {NO_ISSUER} (depth 0: "), line
    still_streaming(daemon, mine, mine_addr)
    assert closed_count(daemon, "unknown_ca") == 1
    # Nothing else counted as a refusal: the closed peer was admitted once.
    assert daemon.scrape().get("mtlsd_handshake_failures_total", listener="inbound",
                               reason="unknown_ca") == 0
    mine.close()


def test_a_resumed_client_of_an_intermediate_ca_is_rejudged_too(start_mtlsd, make_upstream, pki,
                                                                 tmp_path):
    # Review: a resumed session has only its leaf (a ticket carries no chain), so a client of an
    # intermediate CA looked refused by the old trust too and was kept open after its CA was
    # removed. Tickets now carry the intermediates.
    daemon, bundle = trusting_two_cas(start_mtlsd, make_upstream, pki, tmp_path)
    ctx = client_context(pki, "client-int")
    ctx.load_cert_chain(pki.path("client-int-chain.crt"), pki.path("client-int.key"))
    full, full_addr = hold(daemon.addr(), ctx)  # its echo brought the ticket
    sock = socket.create_connection(daemon.addr(), timeout=10)
    resumed_addr = fmt_addr(sock.getsockname())
    resumed = ctx.wrap_socket(sock, server_hostname="localhost", session=full.session)
    echo(resumed, b"before\n")
    assert resumed.session_reused
    # The resumption renewed the ticket; resuming from the renewed one, the intermediates must
    # have been carried across the renewal.
    assert resumed.session.id != full.session.id
    sock = socket.create_connection(daemon.addr(), timeout=10)
    renewed_addr = fmt_addr(sock.getsockname())
    renewed = ctx.wrap_socket(sock, server_hostname="localhost", session=resumed.session)
    echo(renewed, b"before\n")
    assert renewed.session_reused
    bystander, bystander_addr = hold(daemon.addr(), client_context(pki, "client-other"))

    shutil.copyfile(pki.path("other-ca.crt"), bundle)
    daemon.send_signal(signal.SIGHUP)
    assert_rejudged(daemon, full, full_addr, "unknown_ca")
    assert_rejudged(daemon, resumed, resumed_addr, "unknown_ca")
    assert_rejudged(daemon, renewed, renewed_addr, "unknown_ca")
    still_streaming(daemon, bystander, bystander_addr)
    bystander.close()


def test_a_remote_whose_ca_is_removed_is_told_as_a_fresh_handshake_would_be(start_mtlsd, pki):
    """Client mode: the remote sends its leaf only. A reload that drops its CA closes the open
    connection with the detail a new connection's handshake gets (review: "self-signed
    certificate in certificate chain (depth 1: ...)", naming the CA the remote never sent, which
    had been offered as an untrusted intermediate)."""
    remote = Remote(pki.path("server.crt"), pki.path("server.key"))
    try:
        listener = client_listener(pki, remote.address)
        daemon = start_mtlsd(daemon_config([listener], reload={"watch": False}))
        plain = socket.create_connection(daemon.addr("outbound"), timeout=10)
        local = fmt_addr(plain.getsockname())
        plain.sendall(b"before\n")
        assert plain.recv(100) == b"before\n"
        listener["server_auth"]["ca"] = [pki.path("other-ca.crt")]
        reload_with(daemon, daemon_config([listener], reload={"watch": False}))
        line = daemon.wait_for_access(client=local)
        assert (line["reason"], line["termination"]) == ("unknown_ca", "reload_rejudged"), line
        assert line["detail"].startswith(f"reload_rejudged: {NO_ISSUER} (depth 0: "), line
        plain.close()
        data, fresh_local = plain_exchange(daemon.addr("outbound"))
        fresh = daemon.wait_for_access(client=fresh_local)
        assert data == b"" and fresh["reason"] == "unknown_ca", fresh
        assert line["detail"] == "reload_rejudged: " + fresh["detail"], (line, fresh)
    finally:
        remote.close()


def test_tightening_a_rule_closes_the_peers_it_now_refuses(start_mtlsd, make_upstream, pki):
    up = make_upstream()
    loose = {"allow": {"rules": [{"spiffe_ids": ["spiffe://example.org/*"]}]}}
    daemon = start_mtlsd(daemon_config([server_listener(pki, up.address, client_auth=loose)]))
    victim, victim_addr = hold(daemon.addr(), client_context(pki, "client2"))
    kept, kept_addr = hold(daemon.addr(), client_context(pki, "client"))
    kept_far, kept_far_addr = hold(daemon.addr(), client_context(pki, "client"), source="127.0.0.2")

    tight = {"allow": {"rules": [{"spiffe_ids": ["spiffe://example.org/ns/default/*"]}]}}
    reload_with(daemon, daemon_config([server_listener(pki, up.address, client_auth=tight)]))
    line = assert_rejudged(daemon, victim, victim_addr, "not_authorized")
    assert "closest: rules[0] (spiffe_ids) matched 0 of 1" in line["detail"], line
    still_streaming(daemon, kept, kept_addr)
    still_streaming(daemon, kept_far, kept_far_addr)
    assert closed_count(daemon, "not_authorized") == 1

    # A reload that changes nothing for anyone closes nothing.
    reload_with(daemon, daemon_config([server_listener(pki, up.address, client_auth=tight)]))
    still_streaming(daemon, kept, kept_addr)
    assert closed_count(daemon, "not_authorized") == 1
    kept.close()
    kept_far.close()


def test_removing_a_source_range_closes_connections_from_it(start_mtlsd, make_upstream, pki):
    up = make_upstream()

    def allow(cidrs):
        return {"allow": {"rules": [{"spiffe_ids": [CLIENT_ID], "source_cidrs": cidrs}]}}
    daemon = start_mtlsd(daemon_config([server_listener(
        pki, up.address, client_auth=allow(["127.0.0.1/32", "127.0.0.2/32"]))]))
    near, near_addr = hold(daemon.addr(), client_context(pki, "client"))
    far, far_addr = hold(daemon.addr(), client_context(pki, "client"), source="127.0.0.2")

    reload_with(daemon, daemon_config([server_listener(pki, up.address,
                                                       client_auth=allow(["127.0.0.1/32"]))]))
    line = assert_rejudged(daemon, far, far_addr, "not_authorized")
    assert "does not match source=127.0.0.2" in line["detail"], line
    still_streaming(daemon, near, near_addr)
    near.close()


def test_dropping_a_range_from_allowed_sources_closes_connections_from_it(start_mtlsd,
                                                                         make_upstream, pki):
    """allowed_sources is judged at accept; a reload that drops a range closes the connections
    that came from it, as the README says (review: they went on relaying)."""
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([server_listener(
        pki, up.address, allowed_sources=["127.0.0.1/32", "127.0.0.2/32"])]))
    near, near_addr = hold(daemon.addr(), client_context(pki, "client"))
    far, far_addr = hold(daemon.addr(), client_context(pki, "client"), source="127.0.0.2")

    reload_with(daemon, daemon_config([server_listener(pki, up.address,
                                                       allowed_sources=["127.0.0.1/32"])]))
    line = assert_rejudged(daemon, far, far_addr, "source_not_allowed")
    assert line["detail"] == "reload_rejudged: 127.0.0.2 is not in allowed_sources", line
    still_streaming(daemon, near, near_addr)
    near.close()


def test_a_client_mode_listener_judges_its_local_clients_sources_again_too(start_mtlsd,
                                                                           make_upstream, pki):
    """A client-mode listener's allowed_sources (the local apps that may use it) is judged again
    by a reload as at accept: the connection from the dropped address closes, the other goes on
    (review: no address was passed in client mode, so a reload adding a list closed every
    connection, and one narrowing it closed none)."""
    up = make_upstream()
    inbound = start_mtlsd(daemon_config([server_listener(pki, up.address)]))
    remote = "%s:%d" % inbound.addr()

    def outbound_listener(cidrs):
        return client_listener(pki, remote, allowed_sources=cidrs)
    daemon = start_mtlsd(daemon_config([outbound_listener(["127.0.0.1/32", "127.0.0.2/32"])]))
    kept = socket.create_connection(daemon.addr("outbound"), timeout=10)
    dropped = socket.create_connection(daemon.addr("outbound"), timeout=10,
                                       source_address=("127.0.0.2", 0))
    dropped_addr = fmt_addr(dropped.getsockname())
    for plain in (kept, dropped):
        plain.sendall(b"before\n")
        assert plain.recv(100) == b"before\n"
    reload_with(daemon, daemon_config([outbound_listener(["127.0.0.1/32"])]))
    line = daemon.wait_for_access(client=dropped_addr)
    assert (line["reason"], line["termination"]) == ("source_not_allowed", "reload_rejudged"), line
    assert line["detail"] == "reload_rejudged: 127.0.0.2 is not in allowed_sources", line
    dropped.settimeout(10)
    with pytest.raises(ConnectionResetError):  # its stream was cut: a reset, not a FIN
        dropped.recv(100)
    kept.sendall(b"after\n")
    assert kept.recv(100) == b"after\n"
    kept.close()
    dropped.close()


def test_a_handshake_that_spans_a_reload_is_judged_by_the_new_policy(start_mtlsd, make_upstream,
                                                                     pki):
    """Review: a connection accepted before a reload runs its handshake with the runtime of its
    accept. One still in its handshake when the reload re-judged the open connections was not
    among them (nothing to judge yet), and was admitted by the old allow list for good: a peer
    removed from the list kept access by holding TCP connections open across the reload. It is
    judged again as its handshake ends, and refused before the upstream hears of it — with
    close_notify, as any refusal after the handshake, where nothing was relayed to cut (it was
    closed without: the client could not tell the refusal from a cut connection)."""
    up = make_upstream()
    loose = {"allow": {"rules": [{"spiffe_ids": ["spiffe://example.org/*"]}]}}
    daemon = start_mtlsd(daemon_config([server_listener(pki, up.address, client_auth=loose)]))
    early = socket.create_connection(daemon.addr(), timeout=10)  # no ClientHello yet
    local = fmt_addr(early.getsockname())
    # The kernel completes the TCP handshake before mtlsd accepts: a reload landing in between
    # would have the connection accepted under the new policy (refused by an alert, in the
    # handshake). The gauge counts it once accepted, with the old runtime taken.
    wait_active(daemon, lambda n: n == 1, 10, "mtlsd accepting the early connection")
    tight = {"allow": {"rules": [{"spiffe_ids": ["spiffe://example.org/ns/other/*"]}]}}
    reload_with(daemon, daemon_config([server_listener(pki, up.address, client_auth=tight)]))
    tls = strict_eof(client_context(pki, "client")).wrap_socket(early,
                                                                 server_hostname="localhost")
    tls.sendall(b"after the reload\n")
    tls.settimeout(10)
    # A refusal after the handshake ends with close_notify.
    assert read_to_end(tls) == (b"", "close_notify")
    tls.close()
    line = daemon.wait_for_access(client=local)
    assert line["result"] == "rejected" and line["reason"] == "not_authorized", line
    assert line["detail"].startswith("reload_rejudged: "), line
    assert line["termination"] == "reload_rejudged", line
    up.assert_untouched()
