"""client_auth.allow.rules: AND of matchers, `not:`, source_cidrs, sni; `mtlsd verify` explains
the verdict; a reload re-judges open connections.

Sources: the listener binds 127.0.0.1 and clients bind 127.0.0.1 or 127.0.0.2 (both loopback on
Linux) before connecting, so one host has two source addresses a rule can tell apart.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path
from typing import Optional

from clients import echo_once
from mtlsd_harness import (Exchange, client_context, daemon_config, fmt_addr, run_cli,
                           server_listener, write_config)
from refusal import assert_admitted, assert_refused

CLIENT_ID = "spiffe://example.org/ns/default/sa/client"
CLIENT2_ID = "spiffe://example.org/ns/other/sa/client2"


def exchange(addr, ctx: ssl.SSLContext, *, source: str = "127.0.0.1",
             sni: Optional[str] = "localhost", payload: bytes = b"ping\n") -> Exchange:
    """One echo round trip from `source`, asking for `sni`; never raises for TLS failures."""
    return echo_once(addr, ctx, source=source, sni=sni, payload=payload)[0]


def any_name(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """The server certificate is still verified, but the SNI sent may be any name."""
    ctx.check_hostname = False
    return ctx


def serve(start_mtlsd, make_upstream, pki, allow: dict):
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([server_listener(pki, up.address,
                                                        client_auth={"allow": allow})]))
    return daemon, up


RULES = {"rules": [
    # rules[0]: workloads of ns/default, from 127.0.0.1 only, asking for localhost
    {"spiffe_ids": ["spiffe://example.org/ns/default/*"], "source_cidrs": ["127.0.0.1/32"],
     "sni": ["localhost"]},
    # rules[1]: anyone with a DNS SAN under other.org or example.org, but not client2 and not
    # from 127.0.0.2
    {"dns_sans": ["*.other.org", "*.example.org"],
     "not": {"common_names": ["client2"], "source_cidrs": ["127.0.0.2"]}},
]}


def test_rule_matchers_are_anded(start_mtlsd, make_upstream, pki):
    daemon, up = serve(start_mtlsd, make_upstream, pki, {"rules": RULES["rules"][:1]})
    ctx = client_context(pki, "client")
    # Refusals first: each checks that the upstream was never reached.
    # The certificate and SNI are right, the source is not.
    line = assert_refused(daemon, up, exchange(daemon.addr(), ctx, source="127.0.0.2"),
                          "not_authorized")
    assert ("closest: rules[0] (spiffe_ids + source_cidrs + sni) matched 2 of 3: source_cidrs "
            "[127.0.0.1/32] does not match source=127.0.0.2") in line["detail"], line
    # Another identity from the right source.
    line = assert_refused(daemon, up, exchange(daemon.addr(), client_context(pki, "client2")),
                          "not_authorized")
    assert "spiffe_ids [spiffe://example.org/ns/default/*] does not match spiffe_id=" + \
        CLIENT2_ID in line["detail"], line
    metrics = daemon.scrape()
    assert metrics.get("mtlsd_handshake_failures_total", listener="inbound",
                       reason="not_authorized") == 2
    # Every matcher of rules[0] holds.
    assert_admitted(daemon, exchange(daemon.addr(), ctx), b"ping\n", identity=CLIENT_ID)


def test_sni_matcher(start_mtlsd, make_upstream, pki):
    daemon, up = serve(start_mtlsd, make_upstream, pki, {"rules": RULES["rules"][:1]})
    ctx = any_name(client_context(pki, "client"))
    line = assert_refused(daemon, up, exchange(daemon.addr(), ctx, sni="api.example.org"),
                          "not_authorized")
    assert "sni [localhost] does not match sni=api.example.org" in line["detail"], line
    line = assert_refused(daemon, up, exchange(daemon.addr(), ctx, sni=None), "not_authorized")
    assert "does not match sni=(none)" in line["detail"], line
    # curl sends SNI localhost from 127.0.0.1: admitted.
    host, port = daemon.addr()
    proc = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", pki.path("ca.crt"),
         "--cert", pki.path("client.crt"), "--key", pki.path("client.key"),
         "--resolve", f"localhost:{port}:{host}", "-o", "/dev/null", "-w", "%{http_code}",
         f"https://localhost:{port}/"], capture_output=True, text=True, timeout=20)
    # The echo upstream is no HTTP server; what counts is that mtlsd admitted the peer.
    line = daemon.wait_for_access(identity=CLIENT_ID)
    assert line["result"] == "accepted", (line, proc.stderr)


def test_not_excludes_and_flat_lists_are_ored_with_rules(start_mtlsd, make_upstream, pki):
    allow = {"common_names": ["client-int"], "rules": RULES["rules"][1:]}
    daemon, up = serve(start_mtlsd, make_upstream, pki, allow)
    # client2's DNS SAN matches, but its CN is excluded.
    line = assert_refused(daemon, up, exchange(daemon.addr(), client_context(pki, "client2")),
                          "not_authorized")
    assert "not.common_names [client2] matches cn=client2" in line["detail"], line
    # client is excluded from 127.0.0.2.
    line = assert_refused(daemon, up, exchange(daemon.addr(), client_context(pki, "client"),
                                               source="127.0.0.2"), "not_authorized")
    assert "not.source_cidrs [127.0.0.2/32] matches source=127.0.0.2" in line["detail"], line
    # The flat list admits client-int (no DNS SAN) on its own.
    ctx = client_context(pki, "client-int", certfile="client-int-chain.crt")
    assert_admitted(daemon, exchange(daemon.addr(), ctx, source="127.0.0.2"), b"ping\n")
    assert_admitted(daemon, exchange(daemon.addr(), client_context(pki, "client")), b"ping\n",
                    identity=CLIENT_ID)


def test_a_resumed_session_is_judged_again(start_mtlsd, make_upstream, pki):
    # A ticket from 127.0.0.1 must not carry the peer past a source rule from 127.0.0.2.
    daemon, up = serve(start_mtlsd, make_upstream, pki, {"rules": RULES["rules"][:1]})
    ctx = client_context(pki, "client")
    sock = socket.create_connection(daemon.addr(), timeout=10, source_address=("127.0.0.1", 0))
    tls = ctx.wrap_socket(sock, server_hostname="localhost")
    tls.sendall(b"ping\n")
    assert tls.recv(100) == b"ping\n"  # the TLS 1.3 ticket arrives with the first read
    session = tls.session
    tls.close()
    assert session is not None
    sock = socket.create_connection(daemon.addr(), timeout=10, source_address=("127.0.0.2", 0))
    local = fmt_addr(sock.getsockname())
    tls = ctx.wrap_socket(sock, server_hostname="localhost", session=session)
    assert tls.session_reused
    try:
        tls.sendall(b"ping\n")
        assert tls.recv(100) == b""
    except (OSError, ssl.SSLError):
        pass
    finally:
        tls.close()
    line = daemon.wait_for_access(client=local)
    assert line["reason"] == "not_authorized" and "(resumed session)" in line["detail"], line
    # Refused: named as the refused peer, never as a verified identity.
    assert line["identity"] == "" and line["peer_subject"].startswith("CN=client"), line


# --- mtlsd verify --------------------------------------------------------------------------

def verify(mtlsd_bin, config: Path, pki, cert: str, *extra: str):
    return run_cli(mtlsd_bin, "verify", "--config", str(config), "--listener", "inbound",
                   "--cert", pki.path(f"{cert}.crt"), *extra)


def test_verify_names_the_matching_rule(mtlsd_bin, pki, tmp_path):
    config = write_config(tmp_path / "mtlsd.yaml", daemon_config(
        [server_listener(pki, "127.0.0.1:9", client_auth={"allow": RULES})]))
    proc = verify(mtlsd_bin, config, pki, "client", "--source", "127.0.0.1", "--sni", "localhost")
    assert proc.returncode == 0, proc
    assert proc.stdout.splitlines() == [
        f"accepted: {CLIENT_ID}",
        "matched: rules[0] (spiffe_ids + source_cidrs + sni)"], proc.stdout
    # Without the SNI rules[0] fails, and rules[1] (its DNS SAN, not excluded) admits.
    proc = verify(mtlsd_bin, config, pki, "client", "--source", "127.0.0.1")
    assert proc.returncode == 0, proc
    assert "matched: rules[1] (dns_sans, not common_names + source_cidrs)" in proc.stdout
    # The name as a handshake judges it: case and a final dot aside (review: verify took the
    # raw text, so it could say 'admitted' where a handshake refused, or the reverse).
    proc = verify(mtlsd_bin, config, pki, "client", "--source", "127.0.0.1", "--sni",
                  "LocalHost.")
    assert proc.returncode == 0, proc
    assert "matched: rules[0] (spiffe_ids + source_cidrs + sni)" in proc.stdout, proc.stdout


def test_verify_explains_a_refusal(mtlsd_bin, pki, tmp_path):
    config = write_config(tmp_path / "mtlsd.yaml", daemon_config(
        [server_listener(pki, "127.0.0.1:9", client_auth={"allow": RULES})]))
    proc = verify(mtlsd_bin, config, pki, "client", "--source", "127.0.0.2", "--sni", "localhost")
    assert proc.returncode == 1, proc
    out = proc.stdout.strip()
    assert out.startswith("rejected: not_authorized: peer matches no allow rule: "
                          f"spiffe_id={CLIENT_ID}"), out
    assert "source=127.0.0.2 sni=localhost" in out, out
    # rules[0]: 2 of 3 (source fails); rules[1]: 2 of 3 too, but it admitted the peer save for
    # its not: — it names exactly what refused the peer, so it is the closest.
    assert out.endswith("closest: rules[1] (dns_sans, not common_names + source_cidrs) matched "
                        "2 of 3: not.source_cidrs [127.0.0.2/32] matches source=127.0.0.2"), out
    proc = verify(mtlsd_bin, config, pki, "client", "--source", "nonsense")
    assert proc.returncode == 2 and "--source 'nonsense'" in proc.stderr, proc


def test_verify_refuses_a_source_allowed_sources_does_not_hold(mtlsd_bin, pki, tmp_path):
    """Review: verify accepted a --source that allowed_sources refuses before any handshake."""
    config = write_config(tmp_path / "mtlsd.yaml", daemon_config(
        [server_listener(pki, "127.0.0.1:9", allowed_sources=["10.0.0.0/8"])]))
    proc = verify(mtlsd_bin, config, pki, "client", "--source", "127.0.0.1")
    assert proc.returncode == 1, proc
    assert proc.stdout.strip() == \
        "rejected: source_not_allowed: 127.0.0.1 is not in allowed_sources", proc.stdout
    proc = verify(mtlsd_bin, config, pki, "client", "--source", "10.1.2.3")
    assert proc.returncode == 0 and proc.stdout.startswith("accepted: "), proc


# --- server_auth.allow.rules (mode: client) ------------------------------------------------

def client_listener(pki, upstream: str, rules: list) -> dict:
    return {"name": "outbound", "mode": "client", "listen": "127.0.0.1:0", "upstream": upstream,
            "tls": {"cert": pki.path("client.crt"), "key": pki.path("client.key")},
            "server_auth": {"ca": [pki.path("ca.crt")], "server_name": "localhost",
                            "allow": {"rules": rules}}}


def plain(addr, payload: bytes = b"hello\n"):
    """The local app's side: send, read the echo (or EOF); (data, local address)."""
    sock = socket.create_connection(addr, timeout=10)
    local = fmt_addr(sock.getsockname())
    data = b""
    try:
        sock.sendall(payload)
        while len(data) < len(payload):
            chunk = sock.recv(100)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    finally:
        sock.close()
    return data, local


def test_server_auth_rules_match_the_name_mtlsd_sends(start_mtlsd, make_upstream, pki):
    up = make_upstream()
    inbound = start_mtlsd(daemon_config([server_listener(pki, up.address)]))
    remote = "%s:%d" % inbound.addr()
    # The SNI mtlsd sends is server_name (localhost): a rule wanting another name refuses.
    wrong = start_mtlsd(daemon_config([client_listener(
        pki, remote, [{"sni": ["api.example.org"], "common_names": ["localhost"]}])]))
    data, local = plain(wrong.addr("outbound"))
    assert data == b""
    line = wrong.wait_for_access(client=local)
    assert line["reason"] == "not_authorized", line
    assert "closest: rules[0] (common_names + sni) matched 1 of 2: sni [api.example.org] does " \
        "not match sni=localhost" in line["detail"], line
    up.assert_untouched()
    right = start_mtlsd(daemon_config([client_listener(
        pki, remote, [{"sni": ["localhost"], "common_names": ["localhost"],
                       "not": {"dns_sans": ["*.example.org"]}}])]))
    data, local = plain(right.addr("outbound"))
    assert data == b"hello\n"
    assert right.wait_for_access(client=local)["result"] == "accepted"
    # verify on a client-mode listener judges a server certificate with that same SNI.
    proc = run_cli(right.binary, "verify", "--config", str(right.config_path), "--listener",
                   "outbound", "--cert", pki.path("server.crt"))
    assert proc.returncode == 0, proc
    assert "matched: rules[0] (common_names + sni, not dns_sans)" in proc.stdout, proc.stdout
    proc = run_cli(right.binary, "verify", "--config", str(right.config_path), "--listener",
                   "outbound", "--cert", pki.path("server.crt"), "--sni", "other.example.org")
    assert proc.returncode == 1 and "sni=other.example.org" in proc.stdout, proc
