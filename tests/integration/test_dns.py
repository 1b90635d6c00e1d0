"""Upstream and OCSP host names go through mtlsd's own resolver (c-ares on each
worker's event loop), pointed by `dns.servers` at small DNS servers here: one
that never answers (a DNS outage) and one that does. A lookup must be bounded
by `timeouts.connect` and `ocsp_timeout`, cut short by a drain, never hold up
other listeners, and its answers must be cached for their TTL."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from clients import tls_exchange
from dns_server import DnsServer
from helpers import wait_until
from mtlsd_harness import (client_context, daemon_config, echo_roundtrip, free_port, open_tls,
                           server_listener)
from refusal import assert_admitted, assert_refused
from revocation_env import *  # noqa: F401,F403  (fixtures)

NAME = "up.dns-test"


@pytest.fixture
def dns():
    """dns(answers={...}, silent=False, ttl=30) -> DnsServer, closed at teardown."""
    made: list[DnsServer] = []

    def make(answers=None, **kwargs) -> DnsServer:
        server = DnsServer(answers, **kwargs)
        made.append(server)
        return server
    yield make
    for server in made:
        server.close()


def test_connect_deadline_ends_silent_dns_lookups_while_other_listeners_serve(
        start_mtlsd, make_upstream, pki, dns):
    silent = dns(silent=True)
    up = make_upstream()
    # Deadlines are per phase: the handshake's (ample, for a slow machine) ends with the
    # handshake, and the lookup is bounded by the connect phase's 3 s alone.
    daemon = start_mtlsd(daemon_config(
        [server_listener(pki, f"{NAME}:{free_port()}",
                         timeouts={"handshake": "10s", "connect": "3s"}),
         server_listener(pki, up.address, name="direct")],
        dns={"servers": [silent.address]}))
    ctx = client_context(pki, "client")

    # Three at once: each ends at its own deadline, not one after the other.
    results = [None] * 3

    def one(i: int) -> None:
        results[i] = tls_exchange(daemon.addr("inbound"), ctx)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    start = time.monotonic()
    for t in threads:
        t.start()
    wait_until(lambda: silent.count(NAME) >= 1, what="a query at the silent DNS server")

    # Meanwhile a listener with an IP upstream is served at once, well before the lookups'
    # 3 s deadline ends them.
    t0 = time.monotonic()
    assert_admitted(daemon, echo_roundtrip(daemon.addr("direct"), ctx), b"ping\n",
                    listener="direct")
    assert time.monotonic() - t0 < 2.0, "the IP-upstream listener waited for DNS"

    for t in threads:
        t.join()
    # At once: 3 s and the handshakes. One after another: at least 9 s (6 s were they only
    # serialized per worker, of which there are two).
    assert time.monotonic() - start < 6.0, "lookups were served one after another"
    for ex in results:
        assert not isinstance(ex.error, TimeoutError), ex.error
        assert ex.data == b""
        line = daemon.wait_for_access(client=ex.local)
        assert line["reason"] == "upstream_unavailable", line
        assert f"DNS lookup of {NAME} timed out after 3s" in line["detail"], line
        # From accept: the handshake, then the 3 s connect deadline (not the 10 s handshake's).
        assert 2900 <= line["duration_ms"] < 6000, line
    assert daemon.scrape().total("mtlsd_upstream_connect_failures_total",
                                 listener="inbound") == 3


def test_drain_is_not_held_up_by_a_pending_lookup(start_mtlsd, make_upstream, pki, dns):
    silent = dns(silent=True)
    daemon = start_mtlsd(daemon_config(
        [server_listener(pki, f"{NAME}:{free_port()}", timeouts={"connect": "30s"})],
        dns={"servers": [silent.address]}, shutdown={"drain_timeout": "1s"}))
    sock = open_tls(daemon.addr(), client_context(pki, "client"))
    try:
        sock.sendall(b"waiting for a name\n")
        wait_until(lambda: silent.count(NAME) >= 1, what="a query at the silent DNS server")
        start = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait_exit(40)
        elapsed = time.monotonic() - start
    finally:
        sock.close()
    assert code == 0
    # drain_timeout 1s, with room for a sanitized exit (leak check) on a loaded machine; held by
    # the lookup, the exit would wait for the 30 s connect deadline.
    assert elapsed < 10.0, f"exit took {elapsed:.2f}s with drain_timeout 1s: the lookup held it"


def test_hostname_upstream_resolved_by_dns_servers_and_cached_for_its_ttl(
        start_mtlsd, make_upstream, pki, dns):
    server = dns({NAME: "127.0.0.1"}, ttl=30)
    up = make_upstream()
    port = int(up.address.rsplit(":", 1)[1])
    # One worker: one resolver, so the second connection must find the answer cached.
    daemon = start_mtlsd(daemon_config([server_listener(pki, f"{NAME}:{port}")],
                                       dns={"servers": [server.address]}, workers=1))
    ctx = client_context(pki, "client")
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), ctx), b"ping\n")
    asked = server.count(NAME)
    assert asked >= 1, "the upstream name did not go to dns.servers"
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), ctx), b"ping\n")
    assert server.count(NAME) == asked, "a cached answer (TTL 30s) was asked for again"


def test_unknown_upstream_name_is_refused_promptly(start_mtlsd, make_upstream, pki, dns):
    server = dns({})  # NXDOMAIN for everything
    up = make_upstream()
    daemon = start_mtlsd(daemon_config(
        [server_listener(pki, f"nx.dns-test:{free_port()}", timeouts={"connect": "10s"})],
        dns={"servers": [server.address]}))
    ex = tls_exchange(daemon.addr(), client_context(pki, "client"))
    line = assert_refused(daemon, up, ex, "upstream_unavailable", alert=False)
    assert "resolve nx.dns-test: Domain name not found" in line["detail"], line
    assert line["duration_ms"] < 2000, line


def test_ocsp_fetch_by_hostname_is_bounded_by_ocsp_timeout_under_silent_dns(
        serve_rv, rpki, rv, dns):
    silent = dns(silent=True)
    daemon, up = serve_rv({"ocsp": "leaf", "ocsp_timeout": "300ms",
                           "ocsp_responder": f"http://ocsp.dns-test:{rv.port}/ocsp"},
                          top={"dns": {"servers": [silent.address]}})
    start = time.monotonic()
    ex = echo_roundtrip(daemon.addr(), client_context(rpki, "client"))
    elapsed = time.monotonic() - start
    line = assert_refused(daemon, up, ex, "revocation_unavailable", alert=False)
    assert "no answer within 300ms (DNS lookup of ocsp.dns-test unfinished)" in line["detail"], \
        line
    # The detail above says ocsp_timeout ended it (not the session's 1.6 s backstop); the
    # elapsed time includes a whole handshake.
    assert elapsed < 4.0, f"the check took {elapsed:.2f}s despite ocsp_timeout: 300ms"
    assert silent.count("ocsp.dns-test") >= 1
    assert rv.ocsp_requests() == 0


def test_ocsp_responder_by_hostname_resolved_by_dns_servers(serve_rv, rpki, rv, dns):
    server = dns({"ocsp.dns-test": "127.0.0.1"})
    daemon, up = serve_rv({"ocsp": "leaf", "ocsp_timeout": "2s",
                           "ocsp_responder": f"http://ocsp.dns-test:{rv.port}/ocsp"},
                          top={"dns": {"servers": [server.address]}})
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client_context(rpki, "client")),
                    b"ping\n")
    assert rv.ocsp_requests() == 1
    assert server.count("ocsp.dns-test") >= 1
