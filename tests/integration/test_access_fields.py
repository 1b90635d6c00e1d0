"""The access line answers incident questions (interface.md, "Access-log fields"): when the
connection started, its id, SNI and ALPN, the upstream address actually used and how long the
connect took, the peer certificate (serial, issuer, SHA-256, notAfter — also for a refused
peer), and why it ended (`termination`), in JSON and in text; and `log.level: debug` says what
happened in each phase, every line carrying the connection's id."""

from __future__ import annotations

import http.client
import re
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from clients import open_tls, tls_exchange
from http_upstream import HttpRecorder
from mtlsd_harness import (banner_then_read, client_context, daemon_config, echo_roundtrip,
                           fmt_addr, free_port, http_ok, server_listener)
from revocation_env import *  # noqa: F401,F403  (fixtures)
from test_client_mode import chain, client_listener, plain_exchange  # noqa: F401  (chain: fixture)
from test_revocation_recheck import assert_closed_as_revoked, hold, revoke

FIELDS = ("start", "conn_id", "sni", "alpn", "upstream", "upstream_connect_ms", "peer_serial",
          "peer_issuer", "peer_sha256", "peer_not_after", "termination")
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
RFC3339_S = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def cert_facts(pki, cert: str) -> dict:
    """What the openssl CLI says of a certificate, in the access line's spelling."""
    out = subprocess.run(["openssl", "x509", "-in", pki.path(f"{cert}.crt"), "-noout", "-subject",
                          "-issuer", "-serial", "-enddate", "-fingerprint", "-sha256",
                          "-nameopt", "RFC2253"],
                         capture_output=True, text=True, check=True).stdout
    facts = dict(line.split("=", 1) for line in out.strip().splitlines())
    not_after = datetime.fromtimestamp(ssl.cert_time_to_seconds(facts["notAfter"]), timezone.utc)
    return {
        "peer_subject": facts["subject"],
        "peer_issuer": facts["issuer"],
        "peer_serial": facts["serial"].upper().lstrip("0"),
        "peer_sha256": facts["sha256 Fingerprint"].replace(":", "").lower(),
        "peer_not_after": not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def assert_peer(line: dict, pki, cert: str) -> None:
    facts = cert_facts(pki, cert)
    got = {k: line[k] for k in facts}
    got["peer_serial"] = got["peer_serial"].lstrip("0")
    assert got == facts, line


def assert_no_peer(line: dict) -> None:
    for key in ("peer_subject", "peer_serial", "peer_issuer", "peer_sha256", "peer_not_after"):
        assert line[key] == "", (key, line)


def parse_start(line: dict) -> datetime:
    assert RFC3339_MS.match(line["start"]), line
    return datetime.strptime(line["start"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def alpn_context(pki, cert="client", protocols=("h2", "http/1.1")) -> ssl.SSLContext:
    ctx = client_context(pki, cert)
    ctx.set_alpn_protocols(list(protocols))
    return ctx


# --- the fields, JSON ----------------------------------------------------------------------------

def test_accepted_line_has_every_field(serve, pki):
    daemon, up = serve(tls={"alpn": ["http/1.1"]})
    before = datetime.now(timezone.utc)
    ex = echo_roundtrip(daemon.addr(), alpn_context(pki))
    assert ex.error is None
    line = daemon.wait_for_access(client=ex.local)
    after = datetime.now(timezone.utc)

    for key in FIELDS:
        assert key in line, (key, line)
    assert before - timedelta(seconds=1) <= parse_start(line) <= after, line
    assert isinstance(line["conn_id"], int) and line["conn_id"] > 0
    assert line["sni"] == "localhost"
    assert line["alpn"] == "http/1.1"
    assert line["upstream"] == up.address
    assert isinstance(line["upstream_connect_ms"], int) and 0 <= line["upstream_connect_ms"] < 5000
    assert_peer(line, pki, "client")
    assert line["termination"] == "client_close", line
    assert line["result"] == "accepted" and line["reason"] == ""


def test_conn_ids_are_unique(serve, pki):
    daemon, _ = serve()
    ids = set()
    for _ in range(6):
        ex = echo_roundtrip(daemon.addr(), client_context(pki, "client"))
        assert ex.error is None
        ids.add(daemon.wait_for_access(client=ex.local)["conn_id"])
    assert len(ids) == 6, ids


def test_no_alpn_and_no_sni_are_empty(serve, pki):
    daemon, _ = serve()
    ctx = client_context(pki, "client")
    ctx.check_hostname = False
    raw = socket.create_connection(daemon.addr(), timeout=10)
    local = fmt_addr(raw.getsockname())
    sock = ctx.wrap_socket(raw)  # no server_hostname: no SNI
    sock.sendall(b"x")
    assert sock.recv(1) == b"x"
    sock.close()
    line = daemon.wait_for_access(client=local)
    assert line["sni"] == "" and line["alpn"] == "", line


def test_upstream_close(serve, pki):
    daemon, _ = serve(banner_then_read(b"hello from upstream\n"))
    ex = tls_exchange(daemon.addr(), client_context(pki, "client"), b"")
    assert ex.data == b"hello from upstream\n", ex
    line = daemon.wait_for_access(client=ex.local)
    assert line["termination"] == "upstream_close", line


def test_idle_timeout(serve, pki):
    # Long enough for the echo below to come back first through a slow daemon and an upstream
    # that looks for new connections every 50 ms; the connection then stays idle until it ends.
    daemon, _ = serve(timeouts={"idle": "1s"})
    sock = open_tls(daemon.addr(), client_context(pki, "client"))
    local = fmt_addr(sock.getsockname())
    sock.sendall(b"ping\n")
    assert sock.recv(5) == b"ping\n"
    line = daemon.wait_for_access(client=local, timeout=10)
    sock.close()
    assert line["termination"] == "idle_timeout", line


def test_half_close_timeout(serve, pki):
    release = threading.Event()

    def swallow(conn):  # reads to EOF and never answers nor closes
        conn.recv_until_eof()
        release.wait(20)

    daemon, _ = serve(swallow, timeouts={"half_close": "300ms", "idle": "30s"})
    try:
        sock = open_tls(daemon.addr(), client_context(pki, "client"))
        local = fmt_addr(sock.getsockname())
        sock.sendall(b"request\n")
        socket.socket.shutdown(sock, socket.SHUT_WR)  # a TCP FIN under the TLS session
        line = daemon.wait_for_access(client=local, timeout=10)
        sock.close()
    finally:
        release.set()
    assert line["termination"] == "half_close_timeout", line
    assert line["result"] == "accepted"


def test_drain(serve, pki):
    daemon, _ = serve(top={"shutdown": {"drain_timeout": "500ms"}})
    sock = open_tls(daemon.addr(), client_context(pki, "client"))
    local = fmt_addr(sock.getsockname())
    sock.sendall(b"stuck\n")
    assert sock.recv(6) == b"stuck\n"
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit(8) == 0
    sock.close()
    line = daemon.wait_for_access(client=local)
    assert line["termination"] == "drain", line


def test_revoked_while_connected(serve_rv, rpki, tmp_path):
    mine = rpki.copy_to(tmp_path / "pki")
    daemon, _ = serve_rv({"crl_files": [mine.path("crl.pem")], "crl_scope": "leaf"})
    victim, victim_addr = hold(daemon, client_context(mine, "client2"))
    revoke(mine, "client2")
    mine.openssl("ca", "-batch", "-name", "root_ca", "-gencrl", "-out", mine.path("crl.pem"))
    daemon.send_signal(signal.SIGHUP)
    line = assert_closed_as_revoked(daemon, victim, victim_addr)
    assert line["termination"] == "revoked", line
    assert_peer(line, mine, "client2")


def test_refused_unknown_ca_names_the_presented_certificate(serve, pki):
    daemon, up = serve()
    ex = tls_exchange(daemon.addr(), client_context(pki, "client-other"))
    line = daemon.wait_for_access(client=ex.local)
    assert line["result"] == "rejected" and line["reason"] == "unknown_ca", line
    assert line["termination"] == "refused"
    assert line["identity"] == "", line  # identity stays what was verified
    assert_peer(line, pki, "client-other")
    assert line["tls_version"] == ex.version and line["cipher"] == ex.cipher, (line, ex)
    assert line["sni"] == "localhost"
    assert line["upstream"] == "" and line["upstream_connect_ms"] is None, line
    up.assert_untouched()


@pytest.mark.parametrize("cert", ["client-other", None])
def test_a_refused_tls12_handshake_says_what_it_negotiated(serve, pki, cert):
    """Review: a TLS 1.2 handshake refused after its ServerHello (the cipher chosen, not yet
    switched to) was logged with no version and no cipher; TLS 1.3 ones had both."""
    daemon, up = serve()
    ctx = client_context(pki, cert)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ex = tls_exchange(daemon.addr(), ctx)
    line = daemon.wait_for_access(client=ex.local)
    assert line["result"] == "rejected", line
    assert line["tls_version"] == "TLSv1.2" and line["cipher"].startswith("ECDHE-"), line
    up.assert_untouched()


def test_refused_not_authorized_names_the_presented_certificate(serve, pki):
    daemon, _ = serve(client_auth={"allow": {"spiffe_ids": ["spiffe://example.org/nobody"]}})
    ex = tls_exchange(daemon.addr(), client_context(pki, "client"))
    line = daemon.wait_for_access(client=ex.local)
    assert line["reason"] == "not_authorized" and line["termination"] == "refused", line
    assert_peer(line, pki, "client")
    assert line["tls_version"] == "TLSv1.3" and line["cipher"], line


def test_refused_without_a_certificate(serve, pki):
    daemon, _ = serve()
    ex = tls_exchange(daemon.addr(), client_context(pki, None))
    line = daemon.wait_for_access(client=ex.local)
    assert line["reason"] == "no_client_cert" and line["termination"] == "refused", line
    assert_no_peer(line)
    assert line["tls_version"] == "TLSv1.3", line


def test_refused_when_the_upstream_is_down(serve, pki):
    down = f"127.0.0.1:{free_port()}"
    daemon, _ = serve(upstream=down)
    ex = tls_exchange(daemon.addr(), client_context(pki, "client"))
    line = daemon.wait_for_access(client=ex.local)
    assert line["reason"] == "upstream_unavailable" and line["termination"] == "refused", line
    # The connect was tried: how long it took is known, and the address tried is named (the
    # contract's "address used"; it was empty, the address only in the detail).
    assert isinstance(line["upstream_connect_ms"], int) and line["upstream"] == down, line
    assert_peer(line, pki, "client")


def test_not_tls_at_all_is_refused_with_nothing_known(serve, pki):
    daemon, _ = serve()
    sock = socket.create_connection(daemon.addr(), timeout=10)
    local = fmt_addr(sock.getsockname())
    sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
    sock.settimeout(10)
    try:
        while sock.recv(100):
            pass
    except OSError:
        pass
    sock.close()
    line = daemon.wait_for_access(client=local)
    assert line["termination"] == "refused" and line["reason"] == "protocol_error", line
    assert line["tls_version"] == "" and line["sni"] == "", line
    assert_no_peer(line)


# --- HTTP mode and client mode -------------------------------------------------------------------

def test_http_mode_one_line_per_connection(serve, pki):
    daemon, up = serve(HttpRecorder().handler(), http={}, tls={"alpn": ["http/1.1"]})
    host, port = daemon.addr()
    ctx = alpn_context(pki, protocols=("http/1.1",))
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
    conn.sock = ctx.wrap_socket(socket.create_connection((host, port), 10),
                                server_hostname="localhost")
    local = fmt_addr(conn.sock.getsockname())
    for path in ("/a", "/b"):
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
    conn.close()
    line = daemon.wait_for_access(client=local)
    assert line["alpn"] == "http/1.1" and line["sni"] == "localhost", line
    assert line["upstream"] == up.address and line["termination"] == "client_close", line
    assert_peer(line, pki, "client")
    assert daemon.stop() == 0  # every line is out
    assert len(daemon.access_logs(client=local)) == 1  # two requests, one connection, one line


def test_http_mode_upstream_saying_close_is_upstream_close(serve, pki):
    daemon, _ = serve(http_ok(b"bye"), http={})
    ex = tls_exchange(daemon.addr(), client_context(pki, "client"),
                      b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert ex.data.startswith(b"HTTP/1.1 200") and ex.data.endswith(b"bye"), ex
    line = daemon.wait_for_access(client=ex.local)
    assert line["termination"] == "upstream_close", line


def test_http_mode_malformed_request_is_an_error(serve, pki):
    daemon, _ = serve(HttpRecorder().handler(), http={})
    ex = tls_exchange(daemon.addr(), client_context(pki, "client"), b"NOT HTTP\r\n\r\n")
    assert b"400" in ex.data, ex
    line = daemon.wait_for_access(client=ex.local)
    assert line["termination"] == "error", line


def test_client_mode_names_the_remote(chain, pki):
    outbound, inbound, up = chain(client={"tls": {"alpn": ["h2"]}},
                                  server={"tls": {"alpn": ["h2"]}})
    data, local, error = plain_exchange(outbound.addr("outbound"), b"hello\n")
    assert data == b"hello\n" and error is None
    line = outbound.wait_for_access(client=local)
    host, port = inbound.addr("inbound")
    assert line["upstream"] == f"{host}:{port}", line
    assert line["sni"] == "localhost" and line["alpn"] == "h2", line
    assert isinstance(line["upstream_connect_ms"], int)
    assert_peer(line, pki, "server")
    # The app half-closed first: the client of this listener ended it.
    assert line["termination"] == "client_close", line
    remote = inbound.access_logs()[-1]
    assert remote["termination"] == "client_close" and remote["sni"] == "localhost", remote
    assert_peer(remote, pki, "client")


def test_client_mode_remote_closing_first_is_upstream_close(chain, pki):
    outbound, _, _ = chain(banner_then_read(b"banner\n"))
    sock = socket.create_connection(outbound.addr("outbound"), timeout=10)
    local = "%s:%d" % sock.getsockname()[:2]
    data = b""
    while chunk := sock.recv(100):
        data += chunk
    sock.close()
    assert data == b"banner\n"
    line = outbound.wait_for_access(client=local)
    assert line["termination"] == "upstream_close", line


def test_client_mode_refused_remote_names_its_certificate(chain, pki):
    outbound, _, up = chain(client={"server_auth": {"allow": {
        "spiffe_ids": ["spiffe://example.org/ns/payments/sa/api"]}}})
    data, local, _ = plain_exchange(outbound.addr("outbound"), b"secret\n")
    assert data == b""
    line = outbound.wait_for_access(client=local)
    assert line["termination"] == "refused" and line["reason"] == "not_authorized", line
    assert_peer(line, pki, "server")
    up.assert_untouched()


def test_client_mode_tls12_remote_refusing_us_is_named(chain, pki):
    """Review: a TLS 1.2 remote refuses mtlsd's certificate inside the handshake, after mtlsd
    verified the remote's: the line named no remote certificate, although one was sent."""
    outbound, _, up = chain(server={"tls": {"max_version": "1.2"},
                                    "client_auth": {"ca": [pki.path("other-ca.crt")]}})
    data, local, _ = plain_exchange(outbound.addr("outbound"), b"secret\n")
    assert data == b""
    line = outbound.wait_for_access(client=local)
    assert line["result"] == "rejected" and line["tls_version"] == "TLSv1.2", line
    assert line["identity"] == "", line
    assert_peer(line, pki, "server")
    up.assert_untouched()


# --- text format ---------------------------------------------------------------------------------

TEXT_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def text_access_lines(daemon) -> list[dict]:
    out = []
    for raw in daemon.stderr_text().splitlines():
        parts = raw.split(" ", 3)
        if len(parts) < 4 or parts[2] != "access":
            continue
        fields = {}
        for key, value in TEXT_PAIR.findall(parts[3]):
            fields[key] = value[1:-1].replace('\\"', '"').replace("\\\\", "\\") \
                if value.startswith('"') else value
        out.append(fields)
    return out


def wait_text_access(daemon, client: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        for line in text_access_lines(daemon):
            if line.get("client") == client:
                return line
        assert time.monotonic() < deadline, daemon.output_tail()
        time.sleep(0.02)


def test_text_format_has_every_field(start_mtlsd, make_upstream, pki):
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([server_listener(pki, up.address,
                                                        tls={"alpn": ["http/1.1"]})],
                                       log={"format": "text"}))
    # Ready (READY=1 on the harness's NOTIFY_SOCKET, whatever the log format): the listening
    # lines were written before it.
    m = re.search(r" info listening listener=inbound address=(\S+)", daemon.stderr_text())
    assert m, daemon.output_tail()
    host, port = m.group(1).rsplit(":", 1)
    addr = (host, int(port))
    ok = echo_roundtrip(addr, alpn_context(pki))
    assert ok.error is None
    line = wait_text_access(daemon, ok.local)
    for key in FIELDS:
        assert key in line, (key, line)
    assert RFC3339_MS.match(line["start"]) and int(line["conn_id"]) > 0, line
    assert line["sni"] == "localhost" and line["alpn"] == "http/1.1", line
    assert line["upstream"] == up.address and int(line["upstream_connect_ms"]) >= 0, line
    assert RFC3339_S.match(line["peer_not_after"]), line
    assert_peer(line, pki, "client")
    assert line["termination"] == "client_close"

    bad = tls_exchange(addr, client_context(pki, "client-other"))
    line = wait_text_access(daemon, bad.local)
    assert line["termination"] == "refused" and line["reason"] == "unknown_ca", line
    assert line["upstream_connect_ms"] == "" and line["upstream"] == "", line
    assert_peer(line, pki, "client-other")


# --- debug lines ---------------------------------------------------------------------------------

def connection_story(daemon, cid: int) -> list[dict]:
    """The debug lines of connection `cid`, once its `closed` line is out."""
    deadline = time.monotonic() + 5
    while True:
        mine = [l for l in daemon.logs() if l.get("conn_id") == cid and l.get("msg") != "access"]
        if any(l["msg"] == "closed" for l in mine) or time.monotonic() > deadline:
            return mine
        time.sleep(0.02)


def test_debug_says_what_each_phase_did(serve, pki):
    daemon, up = serve(top={"log": {"level": "debug"}}, tls={"alpn": ["http/1.1"]})
    ex = echo_roundtrip(daemon.addr(), alpn_context(pki))
    assert ex.error is None
    access = daemon.wait_for_access(client=ex.local)
    mine = connection_story(daemon, access["conn_id"])
    by_msg = {l["msg"]: l for l in mine}
    assert all(l["level"] == "debug" for l in mine), mine
    order = ["accepted", "ClientHello received", "TLS handshake done", "peer judged",
             "upstream connected", "relay started", "closed"]
    assert [l["msg"] for l in mine] == order, [l["msg"] for l in mine]
    assert by_msg["accepted"]["client"] == ex.local
    assert by_msg["ClientHello received"]["sni"] == "localhost"
    assert by_msg["ClientHello received"]["alpn_offered"] == "h2,http/1.1"
    done = by_msg["TLS handshake done"]
    assert done["tls_version"] == "TLSv1.3" and done["cipher"] and done["resumed"] is False, done
    assert done["peer_subject"] == cert_facts(pki, "client")["peer_subject"]
    judged = by_msg["peer judged"]
    assert judged["verdict"] == "allow" and judged["identity"] == access["identity"], judged
    assert by_msg["upstream connected"]["upstream"] == up.address
    assert isinstance(by_msg["upstream connected"]["connect_ms"], int)
    closed = by_msg["closed"]
    assert closed["termination"] == "client_close" and closed["rx_bytes"] == 5, closed


def test_debug_on_a_refusal(serve, pki):
    daemon, _ = serve(top={"log": {"level": "debug"}},
                      client_auth={"allow": {"spiffe_ids": ["spiffe://example.org/nobody"]}})
    ex = tls_exchange(daemon.addr(), client_context(pki, "client"))
    mine = connection_story(daemon, daemon.wait_for_access(client=ex.local)["conn_id"])
    msgs = [l["msg"] for l in mine]
    assert msgs == ["accepted", "ClientHello received", "TLS handshake failed", "peer judged",
                    "closed"], msgs
    judged = mine[3]
    assert judged["verdict"] == "deny" and judged["reason"] == "not_authorized", judged
    assert mine[-1]["termination"] == "refused"


def test_debug_in_client_mode_with_a_host_name(start_mtlsd, make_upstream, pki):
    up = make_upstream()
    inbound = start_mtlsd(daemon_config([server_listener(pki, up.address)]))
    _, port = inbound.addr("inbound")
    outbound = start_mtlsd(daemon_config([client_listener(pki, f"localhost:{port}",
                                                          tls={"alpn": ["h2", "http/1.1"]})],
                                         log={"level": "debug"}))
    data, local, _ = plain_exchange(outbound.addr("outbound"), b"by name\n")
    assert data == b"by name\n"
    access = outbound.wait_for_access(client=local)
    assert access["upstream"] == f"127.0.0.1:{port}", access  # the resolved address
    mine = connection_story(outbound, access["conn_id"])
    assert [l["msg"] for l in mine] == [
        "accepted", "upstream resolved", "upstream connected", "ClientHello sent",
        "TLS handshake done", "peer judged", "relay started", "closed"], mine
    by_msg = {l["msg"]: l for l in mine}
    assert by_msg["upstream resolved"]["host"] == "localhost"
    assert isinstance(by_msg["upstream resolved"]["resolve_ms"], int)
    assert by_msg["ClientHello sent"]["sni"] == "localhost"
    assert by_msg["ClientHello sent"]["alpn_offered"] == "h2,http/1.1"
    assert by_msg["closed"]["termination"] == "client_close"


def test_no_debug_lines_at_info(serve, pki):
    daemon, _ = serve()
    ex = echo_roundtrip(daemon.addr(), client_context(pki, "client"))
    assert ex.error is None
    daemon.wait_for_access(client=ex.local)
    assert not [l for l in daemon.logs() if l.get("level") == "debug"]


def test_client_reset_is_client_close(serve, pki):
    daemon, _ = serve()
    sock = open_tls(daemon.addr(), client_context(pki, "client"))
    local = fmt_addr(sock.getsockname())
    sock.sendall(b"ping\n")
    assert sock.recv(5) == b"ping\n"
    # SO_LINGER 0: close() sends RST, not FIN.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    line = daemon.wait_for_access(client=local)
    assert line["termination"] == "client_close" and line["result"] == "accepted", line
