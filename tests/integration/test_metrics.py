"""/metrics against real traffic: exact counter deltas for every refusal reason
reachable in server mode, bytes, the active gauge, the handshake histogram,
certificate-expiry gauges, build info, reload metrics and label cardinality.

One daemon with one listener per configuration a refusal needs is shared by the
delta tests (module scope, tests run in order): each case scrapes before and
after and asserts that exactly the expected series moved, by exactly the
expected amount; every other counter series must stay put.
"""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from mtlsd_harness import (Exchange, Metrics, Mtlsd, Upstream, bulk_exchange, check_sanitizer_reports,
                           client_context,
                           daemon_config, echo, fmt_addr, free_port, open_tls, reply_after,
                           server_listener, tls_exchange, write_config)

REPLY = b"r" * 776 + b"\n"           # what the `reply_after` upstreams answer
CLIENT2_ID = "spiffe://example.org/ns/other/sa/client2"

# Counter-like series whose every change the delta tests account for.
COUNTERS = {
    "mtlsd_connections_total",
    "mtlsd_handshake_failures_total",
    "mtlsd_upstream_connect_failures_total",
    "mtlsd_revocation_checks_total",
    "mtlsd_bytes_total",
    "mtlsd_tls_session_resumptions_total",
    "mtlsd_connections_over_limit_total",
    "mtlsd_handshake_duration_seconds_count",
    "mtlsd_connection_duration_seconds_count",
    "mtlsd_config_reloads_total",
}

ALL_REASONS = {
    "no_client_cert", "unknown_ca", "expired", "not_yet_valid", "bad_signature",
    "bad_key_usage", "chain_too_long", "revoked", "revocation_unavailable", "not_authorized",
    "hostname_mismatch", "handshake_timeout", "protocol_error", "upstream_unavailable",
    "name_constraints", "bad_certificate", "over_capacity", "source_not_allowed", "rate_limited",
    "shutting_down",
}


# --- helpers ------------------------------------------------------------------

def k(name: str, **labels: str):
    return Metrics.key(name, labels)


def handshakes_by_listener(m: Metrics) -> dict[str, float]:
    """mtlsd_tls_handshakes_total summed over version and cipher."""
    out: dict[str, float] = {}
    for labels, value in m.series("mtlsd_tls_handshakes_total"):
        out[labels["listener"]] = out.get(labels["listener"], 0) + value
    return out


def wait_metric(daemon: Mtlsd, name: str, expected: float, timeout: float = 5.0,
                **labels: str) -> Metrics:
    """Poll /metrics (bounded) until a sample has the expected value."""
    deadline = time.monotonic() + timeout
    while True:
        m = daemon.scrape()
        if m.get(name, **labels) == expected or time.monotonic() >= deadline:
            assert m.get(name, **labels) == expected, \
                f"{name}{labels} = {m.get(name, **labels)}, expected {expected}"
            return m
        time.sleep(0.02)


def raw_exchange(addr, send: bytes, timeout: float = 10.0, source: str = "") -> Exchange:
    """Plain TCP: send `send` (maybe nothing), read until the server closes."""
    ex = Exchange()
    start = time.monotonic()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        if source:
            sock.bind((source, 0))
        sock.connect(addr)
        ex.local = fmt_addr(sock.getsockname())
        if send:
            sock.sendall(send)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            ex.data += chunk
    except OSError as exc:
        ex.error = exc
    finally:
        sock.close()
        ex.elapsed = time.monotonic() - start
    return ex


def tls_from(addr, ctx: ssl.SSLContext, payload: bytes, source: str) -> Exchange:
    """tls_exchange from a chosen loopback source address (127.0.0.0/8 all works)."""
    ex = Exchange()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect(addr)
        ex.local = fmt_addr(sock.getsockname())
        tls = ctx.wrap_socket(sock, server_hostname="localhost")
        sock = tls
        ex.handshake_ok = True
        tls.sendall(payload)
        while True:
            chunk = tls.recv(65536)
            if not chunk:
                break
            ex.data += chunk
    except (OSError, ssl.SSLError) as exc:
        ex.error = exc
    finally:
        sock.close()
    return ex


def tampered_cert(pki, name: str, dest: Path) -> str:
    """`name`.crt with one bit of its signature flipped: parses, chains by name,
    but its signature does not verify (bad_signature). The key still matches."""
    der = bytearray(ssl.PEM_cert_to_DER_cert(Path(pki.path(f"{name}.crt")).read_text()))
    der[-1] ^= 0x01      # last byte of the ECDSA signature's `s`: still valid DER
    dest.write_text(ssl.DER_cert_to_PEM_cert(bytes(der)))
    return str(dest)


def cert_facts(path: str) -> dict:
    """subject (RFC 2253), serial (hex) and notAfter (Unix time) via the openssl CLI."""
    out = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-subject", "-serial",
                          "-enddate", "-nameopt", "RFC2253"],
                         capture_output=True, text=True, check=True).stdout
    facts = dict(line.split("=", 1) for line in out.strip().splitlines())
    return {"subject": facts["subject"], "serial": facts["serial"],
            "not_after": ssl.cert_time_to_seconds(facts["notAfter"])}


def pem_certs(path: str, out_dir: Path) -> list[str]:
    """Split a PEM bundle into single-certificate files in `out_dir` (not next to the bundle:
    the shared test PKI is read-only)."""
    text = Path(path).read_text()
    blocks = [b + "-----END CERTIFICATE-----\n"
              for b in text.split("-----END CERTIFICATE-----") if "BEGIN CERTIFICATE" in b]
    out = []
    for i, block in enumerate(blocks):
        p = out_dir / f"{Path(path).name}.{i}.pem"
        p.write_text(block[block.index("-----BEGIN"):])
        out.append(str(p))
    return out


# --- the shared daemon --------------------------------------------------------

@dataclass
class Multi:
    daemon: Mtlsd
    upstreams: dict[str, Upstream]
    workdir: Path
    down_port: int = 0
    seen: set = field(default_factory=set)


LISTENERS = {
    "inbound": {},
    "hold": {},
    "timeout": {"timeouts": {"handshake": "300ms"}},
    "depth0": {"client_auth": {"verify_depth": 0}},
    "restricted": {"client_auth": {"allow": {"spiffe_ids": [CLIENT2_ID]}}},
    "revoking": {"revocation": {"crl_files": ["{crl.pem}"], "crl_scope": "leaf"}},
    # Only the root's CRL: a leaf issued by the intermediate has none.
    "crlchain": {"revocation": {"crl_files": ["{crl.pem}"], "crl_scope": "chain"}},
    "down": {"timeouts": {"connect": "2s"}},
    "limited": {"max_connections": 1},
}


@pytest.fixture(scope="module")
def multi(mtlsd_bin, pki, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("metrics")
    upstreams: dict[str, Upstream] = {}
    listeners = []
    down_port = free_port()
    for name, overrides in LISTENERS.items():
        overrides = _fill_paths(overrides, pki)
        if name == "down":
            address = f"127.0.0.1:{down_port}"
        else:
            upstreams[name] = Upstream(echo if name in ("hold", "limited")
                                       else reply_after(b"\n", REPLY))
            address = upstreams[name].address
        listeners.append(server_listener(pki, address, name=name, **overrides))
    daemon = Mtlsd(mtlsd_bin, daemon_config(listeners), workdir / "mtlsd")
    try:
        daemon.start()
        yield Multi(daemon, upstreams, workdir, down_port)
    finally:
        print(f"--- mtlsd (shared, exit {daemon.proc and daemon.proc.poll()})")
        print(daemon.output_tail(80))
        daemon.kill()
        for up in upstreams.values():
            up.close()
    check_sanitizer_reports([daemon])


def _fill_paths(value, pki):
    if isinstance(value, dict):
        return {k2: _fill_paths(v, pki) for k2, v in value.items()}
    if isinstance(value, list):
        return [_fill_paths(v, pki) for v in value]
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return pki.path(value[1:-1])
    return value


# --- the cases ----------------------------------------------------------------

@dataclass
class Case:
    id: str
    listener: str
    drive: Callable            # (multi, pki) -> list[Exchange]
    expect: Callable           # (exchanges) -> {series key: delta}
    upstream_touched: bool = False


def refused(listener: str, reason: str, *, handshake: bool = False, crl: str = "",
            upstream_failure: bool = False):
    """Expected deltas for one refused connection."""
    def expect(_exchanges):
        out = {
            k("mtlsd_connections_total", listener=listener, result="rejected"): 1,
            k("mtlsd_handshake_failures_total", listener=listener, reason=reason): 1,
        }
        if handshake:
            out[k("mtlsd_handshake_duration_seconds_count", listener=listener)] = 1
        if crl:
            out[k("mtlsd_revocation_checks_total", listener=listener, method="crl",
                  result=crl)] = 1
        if upstream_failure:
            out[k("mtlsd_upstream_connect_failures_total", listener=listener)] = 1
        return out
    return expect


def admitted(listener: str, n: int = 1, *, crl: str = "", resumed: int = 0):
    """Expected deltas for n admitted connections; bytes come from what the clients saw."""
    def expect(exchanges):
        sent = sum(ex.sent for ex in exchanges)
        got = sum(len(ex.data) for ex in exchanges)
        out = {
            k("mtlsd_connections_total", listener=listener, result="accepted"): n,
            k("mtlsd_handshake_duration_seconds_count", listener=listener): n,
            k("mtlsd_connection_duration_seconds_count", listener=listener): n,
            k("mtlsd_bytes_total", listener=listener, direction="rx"): sent,
            k("mtlsd_bytes_total", listener=listener, direction="tx"): got,
        }
        if crl:
            out[k("mtlsd_revocation_checks_total", listener=listener, method="crl",
                  result=crl)] = n
        if resumed:
            out[k("mtlsd_tls_session_resumptions_total", listener=listener)] = resumed
        return out
    return expect


def _tls(listener: str, cert, *, certfile=None, payload=b"must not arrive\n", **ctx_kw):
    def drive(multi, pki):
        ctx = client_context(pki, cert, certfile=certfile, **ctx_kw)
        ex = tls_exchange(multi.daemon.addr(listener), ctx, payload)
        ex.sent = len(payload) if ex.handshake_ok and ex.error is None else 0
        return [ex]
    return drive


def _admit(listener: str, payloads: list[bytes], cert="client", **ctx_kw):
    def drive(multi, pki):
        out = []
        ctx = client_context(pki, cert, **ctx_kw)
        for payload in payloads:
            ex = tls_exchange(multi.daemon.addr(listener), ctx, payload)
            assert ex.error is None and ex.data == REPLY, ex.error
            ex.sent = len(payload)
            out.append(ex)
        return out
    return drive


def _resumed(multi, pki):
    """Two connections, the second resuming the first's TLS 1.3 session."""
    ctx = client_context(pki, "client")
    out = []
    session = None
    for payload in (b"first\n", b"second, resumed\n"):
        raw = socket.create_connection(multi.daemon.addr("inbound"), timeout=10)
        ex = Exchange(local=fmt_addr(raw.getsockname()))
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
            tls.sendall(payload)
            while chunk := tls.recv(65536):
                ex.data += chunk
            if session is not None:
                assert tls.session_reused, "the second connection did not resume"
            session = tls.session
        ex.sent = len(payload)
        assert ex.data == REPLY
        out.append(ex)
    return out


def _bad_signature(multi, pki):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.path("ca.crt"))
    ctx.load_cert_chain(tampered_cert(pki, "client", multi.workdir / "tampered.crt"),
                        pki.path("client.key"))
    ex = tls_exchange(multi.daemon.addr("inbound"), ctx, b"must not arrive\n")
    return [ex]


def _plain_http(multi, _pki):
    ex = raw_exchange(multi.daemon.addr("inbound"),
                      b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert not isinstance(ex.error, TimeoutError), "plain HTTP was not refused promptly"
    return [ex]


def _silent(multi, _pki):
    ex = raw_exchange(multi.daemon.addr("timeout"), b"")
    assert 0.2 <= ex.elapsed < 3.0, f"closed after {ex.elapsed:.2f}s; handshake timeout 300ms"
    return [ex]


CASES = [
    Case("admitted-tls13", "inbound", _admit("inbound", [b"a\n", b"bb" * 500 + b"\n"]),
         admitted("inbound", 2), upstream_touched=True),
    Case("admitted-tls12", "inbound", _admit("inbound", [b"tls12\n"], max_version="1.2"),
         admitted("inbound", 1), upstream_touched=True),
    Case("admitted-resumed", "inbound", _resumed, admitted("inbound", 2, resumed=1),
         upstream_touched=True),
    Case("admitted-crl-good", "revoking", _admit("revoking", [b"crl ok\n"]),
         admitted("revoking", 1, crl="good"), upstream_touched=True),
    Case("no_client_cert", "inbound", _tls("inbound", None), refused("inbound", "no_client_cert")),
    Case("unknown_ca", "inbound", _tls("inbound", "client-other"),
         refused("inbound", "unknown_ca")),
    Case("expired", "inbound", _tls("inbound", "client-expired"), refused("inbound", "expired")),
    Case("not_yet_valid", "inbound", _tls("inbound", "client-notyet"),
         refused("inbound", "not_yet_valid")),
    Case("bad_signature", "inbound", _bad_signature, refused("inbound", "bad_signature")),
    Case("bad_key_usage", "inbound", _tls("inbound", "client-serverauth"),
         refused("inbound", "bad_key_usage")),
    Case("chain_too_long", "depth0", _tls("depth0", "client-int", certfile="client-int-chain.crt"),
         refused("depth0", "chain_too_long")),
    Case("not_authorized", "restricted", _tls("restricted", "client"),
         refused("restricted", "not_authorized")),
    Case("revoked", "revoking", _tls("revoking", "client-revoked"),
         refused("revoking", "revoked", crl="revoked")),
    Case("revocation_unavailable", "crlchain",
         _tls("crlchain", "client-int", certfile="client-int-chain.crt"),
         refused("crlchain", "revocation_unavailable", crl="unavailable")),
    Case("handshake_timeout", "timeout", _silent, refused("timeout", "handshake_timeout")),
    Case("protocol_error", "inbound", _plain_http, refused("inbound", "protocol_error")),
    Case("upstream_unavailable", "down", _tls("down", "client", payload=b"nobody home\n"),
         refused("down", "upstream_unavailable", handshake=True, upstream_failure=True)),
]


def _describe(delta: dict) -> list[str]:
    return sorted(f"{name}{dict(labels)} {value:+g}" for (name, labels), value in delta.items())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_exact_counter_deltas(multi, pki, case):
    daemon = multi.daemon
    touched_before = {n: up.connection_count() for n, up in multi.upstreams.items()}
    before = daemon.scrape()

    exchanges = case.drive(multi, pki)
    for ex in exchanges:
        assert ex.local, f"client never connected: {ex.error!r}"
        line = daemon.wait_for_access(client=ex.local)
        assert line["listener"] == case.listener, line
    # The access line is written after the counters move, but the active gauge
    # drops only when the session frame is gone: wait for it so that the next
    # case starts from a quiet daemon.
    after = wait_metric(daemon, "mtlsd_connections_active", 0, listener=case.listener)

    expected = {key: float(v) for key, v in case.expect(exchanges).items() if v}
    got = after.delta(before, COUNTERS)
    unexpected = sorted(set(_describe(got)) - set(_describe(expected)))
    missing = sorted(set(_describe(expected)) - set(_describe(got)))
    assert _describe(got) == _describe(expected), \
        f"moved but not expected: {unexpected}; expected but not seen: {missing}"

    # TLS handshakes by version/cipher move with the handshake histogram.
    hs = after.get("mtlsd_handshake_duration_seconds_count", listener=case.listener) - \
        before.get("mtlsd_handshake_duration_seconds_count", listener=case.listener)
    hs_by_version = handshakes_by_listener(after).get(case.listener, 0) - \
        handshakes_by_listener(before).get(case.listener, 0)
    assert hs_by_version == hs

    # A refused client never reaches the upstream.
    for name, up in multi.upstreams.items():
        grew = up.connection_count() - touched_before[name]
        assert grew == (len(exchanges) if case.upstream_touched and name == case.listener else 0), \
            f"upstream of {name} got {grew} new connections"


def test_every_rejection_has_exactly_one_reason(multi):
    """Cumulative invariants over everything the shared daemon has seen so far:
    every rejected connection has exactly one reason (over max_connections:
    over_capacity), every reason of the contract exists
    as a series from the start (so alerts and rate() work)."""
    m = multi.daemon.scrape()
    assert m.get("mtlsd_connections_total", listener="inbound", result="rejected") > 0
    for listener in LISTENERS:
        reasons = {labels["reason"]: v for labels, v in
                   m.series("mtlsd_handshake_failures_total", listener=listener)}
        assert set(reasons) == ALL_REASONS, listener
        over = m.get("mtlsd_connections_over_limit_total", listener=listener)
        assert over <= reasons["over_capacity"], listener
        assert sum(reasons.values()) == m.get("mtlsd_connections_total",
                                              listener=listener, result="rejected"), listener
        results = {labels["result"] for labels, _ in
                   m.series("mtlsd_connections_total", listener=listener)}
        assert results == {"accepted", "rejected", "error"}


def test_handshake_histogram_counts_completed_handshakes(multi, pki):
    daemon = multi.daemon
    before = daemon.scrape()
    for version in ("1.3", "1.3", "1.2"):
        ctx = client_context(pki, "client", max_version=version)
        ex = tls_exchange(daemon.addr("inbound"), ctx, b"x\n")
        assert ex.data == REPLY, ex.error
    for cert in (None, "client-expired"):                # refused: no completed handshake
        ex = tls_exchange(daemon.addr("inbound"), client_context(pki, cert))
        assert ex.data == b""
        daemon.wait_for_access(client=ex.local)
    after = wait_metric(daemon, "mtlsd_connections_active", 0, listener="inbound")

    count = after.get("mtlsd_handshake_duration_seconds_count", listener="inbound")
    assert count - before.get("mtlsd_handshake_duration_seconds_count", listener="inbound") == 3
    # Cumulative: completed handshakes = admitted + refused after the handshake.
    for listener in LISTENERS:
        completed = after.get("mtlsd_connections_total", listener=listener, result="accepted") + \
            after.get("mtlsd_handshake_failures_total", listener=listener,
                      reason="upstream_unavailable")
        hist = after.get("mtlsd_handshake_duration_seconds_count", listener=listener)
        assert hist == completed, listener
        assert handshakes_by_listener(after).get(listener, 0) == completed, listener
    # A well-formed histogram: cumulative buckets ending in +Inf == count, sum > 0.
    buckets = sorted(((float(labels["le"]), v) for labels, v in
                      after.series("mtlsd_handshake_duration_seconds_bucket",
                                   listener="inbound")))
    assert buckets[-1] == (float("inf"), count)
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))
    hs_sum = after.get("mtlsd_handshake_duration_seconds_sum", listener="inbound")
    assert 0 < hs_sum < count * 5
    assert after.types["mtlsd_handshake_duration_seconds"] == "histogram"
    # TLS version labels say what the clients negotiated.
    versions = {labels["version"] for labels, _ in
                after.series("mtlsd_tls_handshakes_total", listener="inbound")}
    assert versions == {"TLSv1.3", "TLSv1.2"}


def test_bytes_total_equals_what_the_client_moved(multi, pki):
    daemon = multi.daemon
    before = daemon.scrape()
    up_data = b"u" * 150_001
    sock = open_tls(daemon.addr("hold"), client_context(pki, "client"))
    local = fmt_addr(sock.getsockname())
    try:
        echoed = bulk_exchange(sock, up_data, expect=len(up_data), timeout=20)
        assert echoed == up_data
        sock.sendall(b"tail\n")
        got = b""
        while len(got) < 5:
            got += sock.recv(5 - len(got))
    finally:
        sock.close()
    line = daemon.wait_for_access(client=local)
    after = daemon.scrape()
    sent = len(up_data) + 5
    assert line["rx_bytes"] == sent and line["tx_bytes"] == sent, line
    assert after.get("mtlsd_bytes_total", listener="hold", direction="rx") - \
        before.get("mtlsd_bytes_total", listener="hold", direction="rx") == sent
    assert after.get("mtlsd_bytes_total", listener="hold", direction="tx") - \
        before.get("mtlsd_bytes_total", listener="hold", direction="tx") == sent


def test_active_gauge_follows_open_connections(multi, pki):
    daemon = multi.daemon
    ctx = client_context(pki, "client")
    wait_metric(daemon, "mtlsd_connections_active", 0, listener="hold")
    socks = []
    try:
        for n in (1, 2):
            s = open_tls(daemon.addr("hold"), ctx)
            socks.append(s)
            s.sendall(b"hi\n")
            assert s.recv(3) == b"hi\n"       # the session is past the handshake
            m = daemon.scrape()
            assert m.get("mtlsd_connections_active", listener="hold") == n
            assert m.get("mtlsd_connections_active", listener="inbound") == 0
        socks.pop().close()
        wait_metric(daemon, "mtlsd_connections_active", 1, listener="hold")
        socks.pop().close()
        wait_metric(daemon, "mtlsd_connections_active", 0, listener="hold")
    finally:
        for s in socks:
            s.close()
    assert multi.daemon.scrape().types["mtlsd_connections_active"] == "gauge"


def test_over_max_connections_counts_rejected_as_over_capacity(multi, pki):
    """README: over-limit connections are closed at once and counted as
    result=rejected and in mtlsd_connections_over_limit_total, reason over_capacity."""
    daemon = multi.daemon
    held = open_tls(daemon.addr("limited"), client_context(pki, "client"))
    try:
        held.sendall(b"hold\n")
        assert held.recv(5) == b"hold\n"
        before = daemon.scrape()
        assert before.get("mtlsd_connections_active", listener="limited") == 1
        mark = daemon.log_mark()
        ex = raw_exchange(daemon.addr("limited"), b"")
        assert ex.data == b"" and ex.elapsed < 2, ex
        line = daemon.wait_for_access(client=ex.local, since=mark)
        assert line["result"] == "rejected" and line["reason"] == "over_capacity", line
        after = daemon.scrape()
        assert after.get("mtlsd_connections_active", listener="limited") == 1
    finally:
        held.close()
    expected = {k("mtlsd_connections_total", listener="limited", result="rejected"): 1.0,
                k("mtlsd_handshake_failures_total", listener="limited",
                  reason="over_capacity"): 1.0,
                k("mtlsd_connections_over_limit_total", listener="limited"): 1.0}
    assert _describe(after.delta(before, COUNTERS)) == _describe(expected)
    wait_metric(daemon, "mtlsd_connections_active", 0, listener="limited")


def test_labels_hold_no_client_address_or_identity(multi, pki):
    """Several clients from distinct loopback addresses with distinct
    certificates: no series appears for them, and no label (nor any line) names
    a client address, port, certificate subject, SAN, serial or fingerprint."""
    daemon = multi.daemon
    # Warm-up from the usual address creates the version/cipher series once.
    warm = tls_exchange(daemon.addr("inbound"), client_context(pki, "client"), b"w\n")
    assert warm.data == REPLY, warm.error
    daemon.wait_for_access(client=warm.local)
    before = daemon.scrape()

    clients = [("127.0.0.2", "client", None), ("127.0.0.3", "client2", None),
               ("127.0.0.4", "client-int", "client-int-chain.crt"),
               ("127.0.0.5", "client-noeku", None),
               ("127.0.0.6", "client-other", None),            # refused: unknown_ca
               ("127.0.0.7", "client-revoked", None)]          # admitted: no CRL on inbound
    locals_, identities = [], []
    for source, cert, certfile in clients:
        ctx = client_context(pki, cert, certfile=certfile)
        ex = tls_from(daemon.addr("inbound"), ctx, b"who am i\n", source)
        assert ex.local.startswith(source + ":"), ex.error
        line = daemon.wait_for_access(client=ex.local)
        locals_.append(ex.local)
        if line.get("identity"):
            identities.append(line["identity"])
    assert len(identities) >= 4
    after = wait_metric(daemon, "mtlsd_connections_active", 0, listener="inbound")

    # No new series: six clients changed values only.
    assert set(after.samples) == set(before.samples), \
        sorted(set(after.samples) ^ set(before.samples))
    forbidden = set(locals_) | {src for src, _, _ in clients} | set(identities)
    for _, cert, certfile in clients:
        facts = cert_facts(pki.path(certfile or f"{cert}.crt"))
        forbidden |= {facts["subject"], pki.sha256_fingerprint(f"{cert}.crt"),
                      pki.sha256_fingerprint(f"{cert}.crt", colons=False)}
        forbidden.add(f"serial={facts['serial']}")
        forbidden.add(f'serial="{facts["serial"]}"')
    forbidden |= {"spiffe://", "client.example.org", "payments", "CN=client"}
    for line in after.lines:
        for bad in forbidden:
            assert bad.lower() not in line.lower(), f"{bad!r} in metric line {line!r}"
    # Label names per family are the contract's (plus the documented extras).
    allowed = {
        "mtlsd_connections_total": {"listener", "result"},
        "mtlsd_connections_active": {"listener"},
        "mtlsd_handshake_failures_total": {"listener", "reason"},
        "mtlsd_handshake_duration_seconds_bucket": {"listener", "le"},
        "mtlsd_handshake_duration_seconds_sum": {"listener"},
        "mtlsd_handshake_duration_seconds_count": {"listener"},
        "mtlsd_connection_duration_seconds_bucket": {"listener", "le"},
        "mtlsd_connection_duration_seconds_sum": {"listener"},
        "mtlsd_connection_duration_seconds_count": {"listener"},
        "mtlsd_bytes_total": {"listener", "direction"},
        "mtlsd_upstream_connect_failures_total": {"listener"},
        "mtlsd_tls_session_resumptions_total": {"listener"},
        "mtlsd_connections_over_limit_total": {"listener"},
        "mtlsd_connections_closed_total": {"listener", "reason"},
        "mtlsd_accept_errors_total": {"listener"},
        "mtlsd_internal_errors_total": {"component"},
        "mtlsd_tls_handshakes_total": {"listener", "version", "cipher"},
        "mtlsd_certificate_expiry_timestamp_seconds": {"listener", "role", "subject", "serial"},
        "mtlsd_config_reloads_total": {"result"},
        "mtlsd_config_last_reload_success_timestamp_seconds": set(),
        "mtlsd_config_file_checks_total": {"result"},
        "mtlsd_revocation_checks_total": {"listener", "method", "result"},
        "mtlsd_crl_next_update_timestamp_seconds": {"issuer"},
        "mtlsd_build_info": {"version", "openssl"},
        "mtlsd_access_log_dropped_total": set(),
        "mtlsd_config_last_reload_successful": set(),
        "process_start_time_seconds": set(),
        "process_cpu_seconds_total": set(),
        "process_resident_memory_bytes": set(),
        "process_virtual_memory_bytes": set(),
        "process_open_fds": set(),
        "process_max_fds": set(),
        "process_threads": set(),
    }
    for (name, labels) in after.samples:
        assert name in allowed, f"undocumented metric {name}"
        assert {lk for lk, _ in labels} == allowed[name], (name, labels)
    assert {labels["listener"] for labels, _ in after.series("mtlsd_connections_active")} \
        == set(LISTENERS)


# --- separate daemons ---------------------------------------------------------

def test_certificate_expiry_gauges_equal_not_after(start_mtlsd, make_upstream, pki, tmp_path):
    """Server chain (leaf + intermediate, role server), every trusted CA (role
    ca), and a client-mode listener's own certificate (role client) and its CA."""
    up = make_upstream()
    inbound = server_listener(pki, up.address,
                              tls={"cert": pki.path("server-int-fullchain.crt"),
                                   "key": pki.path("server-int.key")},
                              client_auth={"ca": [pki.path("ca.crt"), pki.path("other-ca.crt")]})
    outbound = {
        "name": "outbound", "mode": "client", "listen": "127.0.0.1:0",
        "upstream": f"127.0.0.1:{free_port()}",
        "tls": {"cert": pki.path("client.crt"), "key": pki.path("client.key")},
        "server_auth": {"ca": [pki.path("ca.crt")], "server_name": "localhost"},
    }
    daemon = start_mtlsd(daemon_config([inbound, outbound]))
    m = daemon.scrape()
    assert m.types["mtlsd_certificate_expiry_timestamp_seconds"] == "gauge"

    expected = []
    for listener, role, files in [
            ("inbound", "server", pem_certs(pki.path("server-int-fullchain.crt"), tmp_path)),
            ("inbound", "ca", [pki.path("ca.crt"), pki.path("other-ca.crt")]),
            ("outbound", "client", [pki.path("client.crt")]),
            ("outbound", "ca", [pki.path("ca.crt")])]:
        for f in files:
            facts = cert_facts(f)
            expected.append((listener, role, facts["subject"], facts["serial"],
                             float(facts["not_after"])))
    got = [(labels["listener"], labels["role"], labels["subject"], labels["serial"], v)
           for labels, v in m.series("mtlsd_certificate_expiry_timestamp_seconds")]
    assert sorted(got) == sorted(expected)
    # Sanity of the reference values themselves: two years and ten years out.
    now = time.time()
    assert any(e[1] == "server" and 1.5 * 365 * 86400 < e[4] - now < 2.5 * 365 * 86400
               for e in expected)


def test_build_info_is_one(start_mtlsd, make_upstream, pki, mtlsd_bin):
    daemon = start_mtlsd(daemon_config([server_listener(pki, make_upstream().address)]))
    m = daemon.scrape()
    series = m.series("mtlsd_build_info")
    assert len(series) == 1
    labels, value = series[0]
    assert value == 1 and m.types["mtlsd_build_info"] == "gauge"
    version = subprocess.run([mtlsd_bin, "version"], capture_output=True, text=True).stdout
    assert labels["version"] and labels["version"] in version, (labels, version)
    openssl_version = ssl.OPENSSL_VERSION.split()[1]     # the same libssl3 on this machine
    assert labels["openssl"] == openssl_version, (labels, ssl.OPENSSL_VERSION)


def test_reload_updates_expiry_gauges_and_reload_metrics(start_mtlsd, make_upstream, pki):
    up = make_upstream()
    # SIGHUP only: with the file watcher on, a slow signal could let it reload first.
    config = daemon_config([server_listener(pki, up.address)], reload={"watch": False})
    daemon = start_mtlsd(config)
    before = daemon.scrape()
    other = cert_facts(pki.path("other-ca.crt"))
    assert not before.series("mtlsd_certificate_expiry_timestamp_seconds",
                             subject=other["subject"])
    t0 = before.get("mtlsd_config_last_reload_success_timestamp_seconds")
    assert abs(t0 - time.time()) < 60

    # A good reload: trust one more CA.
    config["listeners"][0]["client_auth"]["ca"].append(pki.path("other-ca.crt"))
    write_config(daemon.config_path, config)
    daemon.send_signal(signal.SIGHUP)
    m = wait_metric(daemon, "mtlsd_config_reloads_total", 1, result="success")
    assert m.get("mtlsd_config_reloads_total", result="failure") == 0
    assert m.get("mtlsd_certificate_expiry_timestamp_seconds", listener="inbound", role="ca",
                 subject=other["subject"], serial=other["serial"]) == other["not_after"]
    assert m.get("mtlsd_config_last_reload_success_timestamp_seconds") > t0

    # A bad reload counts as a failure and changes neither gauges nor the timestamp.
    daemon.config_path.write_text("listeners: [\n")
    daemon.send_signal(signal.SIGHUP)
    m2 = wait_metric(daemon, "mtlsd_config_reloads_total", 1, result="failure")
    assert m2.get("mtlsd_config_reloads_total", result="success") == 1
    assert m2.series("mtlsd_certificate_expiry_timestamp_seconds") == \
        m.series("mtlsd_certificate_expiry_timestamp_seconds")
    assert m2.get("mtlsd_config_last_reload_success_timestamp_seconds") == \
        m.get("mtlsd_config_last_reload_success_timestamp_seconds")


def crl_facts(path: str) -> tuple[dict, float]:
    out = subprocess.run(["openssl", "crl", "-in", path, "-noout", "-nextupdate", "-issuer",
                          "-nameopt", "RFC2253"],
                         capture_output=True, text=True, check=True).stdout
    facts = dict(line.split("=", 1) for line in out.strip().splitlines())
    return {"issuer": facts["issuer"]}, float(ssl.cert_time_to_seconds(facts["nextUpdate"]))


def test_crl_next_update_gauge(start_mtlsd, make_upstream, pki):
    """The contract's mtlsd_crl_next_update_timestamp_seconds{issuer} for each
    loaded CRL, at start and after a reload that adds one."""
    up = make_upstream()
    config = daemon_config([server_listener(
        pki, up.address, revocation={"crl_files": [pki.path("crl.pem")]})],
        reload={"watch": False})  # SIGHUP only, as above
    daemon = start_mtlsd(config)
    root = crl_facts(pki.path("crl.pem"))
    assert daemon.scrape().series("mtlsd_crl_next_update_timestamp_seconds") == [root]

    config["listeners"][0]["revocation"]["crl_files"].append(pki.path("int-crl.pem"))
    write_config(daemon.config_path, config)
    daemon.send_signal(signal.SIGHUP)
    m = wait_metric(daemon, "mtlsd_config_reloads_total", 1, result="success")
    got = m.series("mtlsd_crl_next_update_timestamp_seconds")
    assert sorted(got, key=str) == sorted([root, crl_facts(pki.path("int-crl.pem"))], key=str)
