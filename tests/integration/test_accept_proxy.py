"""Inbound PROXY protocol (accept_proxy_protocol): a real HAProxy (`send-proxy`,
`send-proxy-v2` on a `mode tcp` backend) in front of mtlsd, and raw sockets for every
refusal. The address in the header is the client's from then on: access log, allowed_sources,
per-source limits and the PROXY v2 header mtlsd itself sends upstream."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from mtlsd_harness import client_context, connect, fmt_addr, tls_exchange
from proxy_v2 import header_then_echo
from helpers import wait_until
from upstream import free_port

CLIENT_ID = "spiffe://example.org/ns/default/sa/client"
HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy"
                                      if Path("/usr/sbin/haproxy").exists() else None)
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(src: str, sport: int, dst: str = "127.0.0.1", dport: int = 443,
              local: bool = False) -> bytes:
    if local:
        return V2_SIG + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    tlv = bytes([0x04]) + struct.pack("!H", 3) + b"abc"  # PP2_TYPE_NOOP: skipped
    return V2_SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(body) + len(tlv)) + body + tlv


def tls_after(daemon, header: bytes, ctx, payload: bytes = b"ping\n", timeout: float = 5.0):
    """Send `header` on a raw connection, then TLS on the same connection.
    Returns (our local address, data received or the exception)."""
    sock = connect(daemon.addr(), timeout)
    local = fmt_addr(sock.getsockname())
    try:
        sock.sendall(header)
        tls = ctx.wrap_socket(sock, server_hostname="localhost")
        tls.sendall(payload)
        data = b""
        while len(data) < len(payload):
            chunk = tls.recv(4096)
            if not chunk:
                break
            data += chunk
        tls.close()
        return local, data
    except (OSError, ssl.SSLError) as e:
        return local, e
    finally:
        sock.close()


def refused(daemon, up, header: bytes, reason: str, *, then_tls: bool = False,
            timeout: float = 5.0, client: str = "") -> dict:
    """Send `header` (then, optionally, a TLS ClientHello); mtlsd closes without TLS. The
    access line names `client` (the header's address) or else our own."""
    sock = connect(daemon.addr(), timeout)
    local = fmt_addr(sock.getsockname())
    try:
        if header:
            sock.sendall(header)
        if then_tls:
            ctx = client_context_none()
            try:
                ctx.wrap_socket(sock, server_hostname="localhost", do_handshake_on_connect=True)
                pytest.fail("handshake succeeded on a refused connection")
            except (OSError, ssl.SSLError):
                pass
        else:
            try:
                assert sock.recv(1) == b""
            except ConnectionResetError:
                pass
    finally:
        sock.close()
    line = daemon.wait_for_access(client=client or local)
    assert line["result"] == "rejected" and line["reason"] == reason, line
    up.assert_untouched()
    return line


def client_context_none() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


ACCEPT_BOTH = {"versions": ["v1", "v2"], "trusted_sources": ["127.0.0.0/8"]}


def test_v1_header_names_the_client(serve, pki):
    daemon, _ = serve(accept_proxy_protocol=ACCEPT_BOTH)
    local, data = tls_after(daemon, b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 443\r\n",
                            client_context(pki, "client"))
    assert data == b"ping\n", data
    line = daemon.wait_for_access(client="203.0.113.9:5555")
    assert line["result"] == "accepted" and line["identity"] == CLIENT_ID, line


def test_v2_header_names_the_client_and_goes_on_upstream(serve, pki):
    headers = []
    daemon, _ = serve(header_then_echo(headers), accept_proxy_protocol=ACCEPT_BOTH,
                      proxy_protocol="v2")
    _, data = tls_after(daemon, v2_header("198.51.100.20", 40001, "192.0.2.1", 8443),
                        client_context(pki, "client"))
    assert data == b"ping\n", data
    daemon.wait_for_access(client="198.51.100.20:40001", result="accepted")
    (hdr,) = headers
    assert hdr.source == ("198.51.100.20", 40001), "outgoing PROXY v2 carries the header's client"
    assert hdr.destination == ("192.0.2.1", 8443)


def test_v2_local_keeps_the_connections_address(serve, pki):
    daemon, _ = serve(accept_proxy_protocol=ACCEPT_BOTH)
    local, data = tls_after(daemon, v2_header("", 0, local=True), client_context(pki, "client"))
    assert data == b"ping\n", data
    daemon.wait_for_access(client=local, result="accepted")


def test_allowed_sources_and_per_source_limits_judge_the_header_address(serve, pki):
    daemon, up = serve(accept_proxy_protocol=ACCEPT_BOTH, allowed_sources=["203.0.113.0/24"])
    line = refused(daemon, up, b"PROXY TCP4 198.51.100.7 127.0.0.1 1234 443\r\n",
                   "source_not_allowed", client="198.51.100.7:1234")
    assert "198.51.100.7 is not in allowed_sources" in line["detail"]
    _, data = tls_after(daemon, b"PROXY TCP4 203.0.113.7 127.0.0.1 1234 443\r\n",
                        client_context(pki, "client"))
    assert data == b"ping\n", data


def test_allow_rules_see_the_header_address(serve, pki):
    """source_cidrs in an allow rule matches the PROXY header's client, not the balancer's."""
    daemon, _ = serve(accept_proxy_protocol=ACCEPT_BOTH,
                      client_auth={"allow": {"rules": [{"spiffe_ids": [CLIENT_ID],
                                                        "source_cidrs": ["203.0.113.0/24"]}]}})
    _, data = tls_after(daemon, b"PROXY TCP4 203.0.113.7 127.0.0.1 1234 443\r\n",
                        client_context(pki, "client"))
    assert data == b"ping\n", data
    daemon.wait_for_access(client="203.0.113.7:1234", result="accepted")
    _, data = tls_after(daemon, b"PROXY TCP4 198.51.100.7 127.0.0.1 1234 443\r\n",
                        client_context(pki, "client"))
    assert not isinstance(data, bytes) or data == b"", data
    line = daemon.wait_for_access(client="198.51.100.7:1234")
    assert line["result"] == "rejected" and line["reason"] == "not_authorized", line
    assert "source=198.51.100.7" in line["detail"], line


def test_missing_header_is_a_protocol_error(serve, pki):
    daemon, up = serve(accept_proxy_protocol=ACCEPT_BOTH)
    line = refused(daemon, up, b"", "protocol_error", then_tls=True)
    assert "does not begin with a PROXY header" in line["detail"], line


def test_malformed_headers_are_protocol_errors(serve, pki):
    daemon, up = serve(accept_proxy_protocol=ACCEPT_BOTH)
    for bad in (b"PROXY TCP4 203.0.113.9 127.0.0.1 99999 443\r\n",
                b"PROXY TCP4 not-an-ip 127.0.0.1 1 443\r\n",
                b"PROXY " + b"x" * 120,
                V2_SIG + bytes([0x31, 0x11, 0, 12]) + b"\0" * 12):   # version 3
        refused(daemon, up, bad, "protocol_error")


def test_version_not_listed_is_refused(serve, pki):
    daemon, up = serve(accept_proxy_protocol={"versions": ["v2"]})
    line = refused(daemon, up, b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 443\r\n",
                   "protocol_error")
    assert "versions does not list v1" in line["detail"], line


def test_untrusted_sender_is_refused_at_accept(serve, pki):
    daemon, up = serve(accept_proxy_protocol={"trusted_sources": ["10.0.0.0/8"]})
    line = refused(daemon, up, b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 443\r\n",
                   "protocol_error")
    assert "trusted_sources" in line["detail"], line


def test_sockets_silent_before_their_header_count_against_the_pending_cap(serve, pki):
    # Review: the pending cap was taken only after the header, so silent sockets took every
    # place of max_connections and the next real client was refused.
    daemon, up = serve(accept_proxy_protocol=ACCEPT_BOTH, max_connections=8,
                       limits={"max_pending_handshakes": 4}, timeouts={"handshake": "20s"})
    silent = [connect(daemon.addr()) for _ in range(4)]
    try:
        wait_until(lambda: daemon.scrape().get("mtlsd_connections_active",
                                               listener="inbound") == 4,
                   10, "the silent sockets accepted")
        sock = connect(daemon.addr())
        local = fmt_addr(sock.getsockname())
        assert sock.recv(1) == b"", "the fifth silent socket was kept"
        sock.close()
        line = daemon.wait_for_access(client=local)
        assert line["reason"] == "over_capacity", line
        assert "max_pending_handshakes (4)" in line["detail"], line
        up.assert_untouched()
    finally:
        for s in silent:
            s.close()


def test_the_header_and_the_handshake_share_one_timeout(serve, pki):
    # Review: the handshake's deadline started again after the header, so a sender holding back
    # both kept its socket for twice timeouts.handshake.
    # One deadline closes 4 s after mtlsd's accept (about when the connect returns, later on a
    # slow daemon); one that started again at the header, read 2 s after start at the
    # earliest, would close 6 s after start or later. 5.5 s leaves a slow daemon 1.5 s of lag
    # (accept and close), and the header 2 s to be read before the deadline.
    daemon, up = serve(accept_proxy_protocol=ACCEPT_BOTH, timeouts={"handshake": "4s"})
    sock = connect(daemon.addr(), 10)
    start = time.monotonic()
    try:
        time.sleep(2.0)  # the slow sender this test is about: half the 4 s on the header
        sock.sendall(b"PROXY TCP4 203.0.113.9 127.0.0.1 5000 443\r\n")
        try:
            assert sock.recv(1) == b""
        except ConnectionResetError:
            pass
        elapsed = time.monotonic() - start
    finally:
        sock.close()
    line = daemon.wait_for_access(client="203.0.113.9:5000")
    assert line["reason"] == "handshake_timeout", line
    assert elapsed < 5.5, f"closed {elapsed:.2f} s after the connect; timeouts.handshake is 4 s"
    up.assert_untouched()


def test_silent_connection_times_out_as_protocol_error(serve, pki):
    daemon, up = serve(accept_proxy_protocol=ACCEPT_BOTH, timeouts={"handshake": "500ms"})
    start = time.monotonic()
    line = refused(daemon, up, b"PROXY TCP4 203.0.113.9", "protocol_error")
    assert time.monotonic() - start < 3
    assert "no complete PROXY header within 500ms" in line["detail"], line


# --- a real HAProxy in front ----------------------------------------------------------------

HAPROXY_CFG = """
global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend v1
    bind 127.0.0.1:{p1}
    default_backend to_mtlsd_v1
frontend v2
    bind 127.0.0.1:{p2}
    default_backend to_mtlsd_v2
backend to_mtlsd_v1
    server mtlsd {mtlsd} send-proxy
backend to_mtlsd_v2
    server mtlsd {mtlsd} send-proxy-v2
"""


@pytest.fixture
def haproxy(tmp_path):
    procs = []

    def start(mtlsd_addr) -> tuple[int, int]:
        if not HAPROXY:
            pytest.fail("haproxy is not installed (scripts/dev.sh deps installs it)")
        # HAProxy has no "bind port 0 and tell me": take free ports and retry on a clash.
        for _ in range(5):
            p1, p2 = free_port(), free_port()
            cfg = tmp_path / "haproxy.cfg"
            cfg.write_text(HAPROXY_CFG.format(p1=p1, p2=p2,
                                              mtlsd=f"{mtlsd_addr[0]}:{mtlsd_addr[1]}"))
            proc = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
            procs.append(proc)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", p2), timeout=1).close()
                    socket.create_connection(("127.0.0.1", p1), timeout=1).close()
                    return p1, p2
                except OSError:
                    time.sleep(0.05)
            proc.kill()
        pytest.fail("haproxy did not start")
    yield start
    for p in procs:
        p.kill()
        p.wait()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_real_haproxy_send_proxy(serve, pki, haproxy, version):
    headers = []
    daemon, _ = serve(header_then_echo(headers), proxy_protocol="v2",
                      accept_proxy_protocol={"versions": [version],
                                             "trusted_sources": ["127.0.0.1/32"]})
    p1, p2 = haproxy(daemon.addr())
    # HAProxy's own connect probes above arrive with a header too, and then close: refused or
    # not, they must not confuse what follows.
    port = p1 if version == "v1" else p2
    ex = tls_exchange(("127.0.0.1", port), client_context(pki, "client"), expect=5)
    assert ex.data == b"ping\n", ex.error
    # mtlsd logs the client's own address (from the header), not HAProxy's.
    line = daemon.wait_for_access(client=ex.local)
    assert line["result"] == "accepted" and line["identity"] == CLIENT_ID, line
    host, cport = ex.local.rsplit(":", 1)
    assert headers[-1].source == (host, int(cport))


def test_real_haproxy_with_the_wrong_version_is_refused(serve, pki, haproxy):
    daemon, up = serve(accept_proxy_protocol={"versions": ["v2"]})
    p1, _ = haproxy(daemon.addr())
    mark = daemon.log_mark()
    ex = tls_exchange(("127.0.0.1", p1), client_context(pki, "client"), expect=5)
    assert ex.data == b"" and not ex.handshake_ok, ex
    # The refused connection is HAProxy's (the header was not accepted, so it names nobody).
    # (HAProxy's own connect probes end in lines of their own: wait for the one that says why.)
    daemon.wait_for_log(lambda l: l.get("msg") == "access" and l.get("reason") == "protocol_error"
                        and "versions does not list v1" in l.get("detail", ""), since=mark)
    up.assert_untouched()


# --- the measurement: a flood from one source while others keep their rate ----------

def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_flood_from_one_source_while_others_keep_their_rate(serve, pki):
    """One source (named by the PROXY header, so loopback can play several) floods with
    connections and holds as many as it can; three others make TLS requests at a steady rate.
    max_connections_per_source caps the flooder; the others are all served, promptly, and each
    refusal costs mtlsd little CPU. The numbers are printed (pytest -s) for the report."""
    daemon, _ = serve(accept_proxy_protocol=ACCEPT_BOTH, max_connections=400,
                      limits={"max_connections_per_source": 5},
                      timeouts={"handshake": "30s"})
    flood_header = b"PROXY TCP4 198.51.100.66 127.0.0.1 1000 443\r\n"
    stop = threading.Event()
    flood = {"attempts": 0, "held": []}

    # The flooder first fills its 5 places with silent connections, then floods: every
    # further connection must be refused at once.
    for _ in range(5):
        s = connect(daemon.addr(), 5)
        s.sendall(flood_header)
        flood["held"].append(s)
    deadline = time.monotonic() + 10
    while daemon.scrape().get("mtlsd_connections_active", listener="inbound") < 5:
        assert time.monotonic() < deadline, "the flooder's first connections were not accepted"
        time.sleep(0.05)

    def flooder():
        while not stop.is_set() and flood["attempts"] < 20000:
            try:
                s = connect(daemon.addr(), 2)
                s.sendall(flood_header)
                flood["attempts"] += 1
                try:
                    s.recv(1)  # refused: closed at once
                except OSError:
                    pass
                s.close()
            except OSError:
                pass

    latencies: list[float] = []
    failures_seen: list = []

    def steady_client(i: int):
        ctx = client_context(pki, "client")
        for n in range(15):
            header = f"PROXY TCP4 203.0.113.{i} 127.0.0.1 {2000 + n} 443\r\n".encode()
            start = time.monotonic()
            try:
                _, data = tls_after(daemon, header, ctx)
            except Exception as e:  # the connect (tls_after returns later errors); else lost
                data = e
            if data == b"ping\n":
                latencies.append(time.monotonic() - start)
            else:
                failures_seen.append(data)
            time.sleep(0.1)  # ~10 requests a second each

    pid = daemon.pid
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    before = daemon.scrape()
    flood_thread = threading.Thread(target=flooder)
    flood_thread.start()
    others = [threading.Thread(target=steady_client, args=(i,)) for i in (1, 2, 3)]
    for t in others:
        t.start()
    for t in others:
        t.join()
    stop.set()
    flood_thread.join()
    elapsed, cpu = time.monotonic() - t0, cpu_seconds(pid) - cpu0
    for s in flood["held"]:
        s.close()
    after = daemon.scrape()
    limited = (after.get("mtlsd_handshake_failures_total", listener="inbound",
                         reason="rate_limited")
               - before.get("mtlsd_handshake_failures_total", listener="inbound",
                            reason="rate_limited"))
    assert len(latencies) + len(failures_seen) == 3 * 15, "a steady client stopped early"
    assert not failures_seen, failures_seen[:3]
    latencies.sort()
    p50, p95 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.95)]
    print(f"\nflood: {flood['attempts']} connections from one source in {elapsed:.1f}s "
          f"({flood['attempts'] / elapsed:.0f}/s), {limited:.0f} refused as rate_limited; "
          f"others: {len(latencies)} requests, {len(failures_seen)} failed, "
          f"p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms; mtlsd CPU {cpu:.2f}s "
          f"(~{cpu / max(flood['attempts'], 1) * 1e6:.0f} µs per flood connection, "
          f"handshakes included)")
    assert limited >= flood["attempts"] - 50, (limited, flood["attempts"])
    assert limited > 100, "the flood was too small to measure anything"
    assert p95 < 2.0, f"steady clients slowed down: p95 {p95:.2f}s"
