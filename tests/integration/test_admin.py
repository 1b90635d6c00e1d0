"""The admin listener: /healthz, /readyz (ready, draining, expired serving
certificate), /metrics headers, 404 and 405, and `admin.address: ""`."""

from __future__ import annotations

import datetime
import os
import select
import signal
import socket
import subprocess
import time

import pytest

from mtlsd_harness import (client_context, daemon_config, open_tls, parse_address,
                           proc_fd_count, server_listener)

READY_POLL_TIMEOUT = 5.0

SANITIZED = os.environ.get("MTLSD_SANITIZED") == "1"


def poll_status(daemon, path: str, status: int, timeout: float = READY_POLL_TIMEOUT):
    """GET `path` until it answers `status` (bounded); returns that response."""
    deadline = time.monotonic() + timeout
    while True:
        res = daemon.admin_request(path)
        if res.status == status:
            return res
        if time.monotonic() >= deadline:
            raise AssertionError(f"{path} still {res} after {timeout}s, expected {status}")
        time.sleep(0.02)


def readyz_across(daemon, not_after: float, changed, timeout: float = READY_POLL_TIMEOUT):
    """GET /readyz from before `not_after` (a Unix time) until `changed(response)`; returns that
    response. Every answer before it must be 200, and the change must come after `not_after`
    (it is checked against the clock the daemon reads) and within 1 s + `timeout` of it."""
    while True:
        res = daemon.admin_request("/readyz")
        answered = time.time()
        if changed(res):
            assert answered >= not_after, f"{res} {not_after - answered:.2f}s before notAfter"
            return res
        assert res.status == 200, res
        assert answered < not_after + 1 + timeout, f"/readyz still {res} after notAfter"
        time.sleep(0.05)


def test_healthz_and_readyz_when_ready(serve):
    daemon, _ = serve()
    health = daemon.admin_request("/healthz")
    assert health.status == 200 and health.text == "ok\n"
    assert health.headers["content-type"].startswith("text/plain")
    ready = daemon.admin_request("/readyz")
    assert ready.status == 200 and ready.text == "ready\n", ready


def test_metrics_is_prometheus_text_format(serve):
    daemon, _ = serve()
    res = daemon.admin_request("/metrics")
    assert res.status == 200
    assert res.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert b"# TYPE mtlsd_connections_total counter\n" in res.body
    # A query string (what some scrapers add) does not change the answer.
    assert daemon.admin_request("/metrics?format=text").status == 200


@pytest.mark.parametrize("path", ["/", "/metric", "/metrics/", "/healthz/x", "/../metrics",
                                  "/READYZ"])
def test_unknown_path_is_404(serve, path):
    daemon, _ = serve()
    res = daemon.admin_request(path)
    assert res.status == 404, res
    assert b"mtlsd_" not in res.body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz"])
def test_other_methods_are_405(serve, method, path):
    daemon, _ = serve()
    res = daemon.admin_request(path, method=method, body=b"x=1")
    assert res.status == 405, res
    assert "GET" in res.headers.get("allow", ""), res.headers


def test_head_has_no_body(serve):
    """And the Content-Length GET would have (review: it said 0)."""
    daemon, _ = serve()
    res = daemon.admin_request("/healthz", method="HEAD")
    assert res.status == 200 and res.body == b""
    assert res.headers["content-length"] == "3", res.headers
    got = daemon.admin_request("/metrics")
    head = daemon.admin_request("/metrics", method="HEAD")
    assert head.body == b"" and int(head.headers["content-length"]) > 1000, head.headers
    assert abs(int(head.headers["content-length"]) - len(got.body)) < 2000


def test_admin_disabled_with_empty_address(serve):
    daemon, _ = serve(top={"admin": {"address": ""}})
    assert daemon.admin_address is None
    assert not any(l.get("msg") == "admin listening" for l in daemon.logs())


def test_readyz_503_while_draining(serve, pki):
    daemon, _ = serve(top={"shutdown": {"drain_timeout": "30s"}})
    sock = open_tls(daemon.addr(), client_context(pki, "client"))
    try:
        sock.sendall(b"hold\n")
        assert sock.recv(5) == b"hold\n"
        assert daemon.admin_request("/readyz").status == 200

        daemon.send_signal(signal.SIGTERM)
        res = poll_status(daemon, "/readyz", 503)
        assert daemon.running(), "mtlsd exited with a connection still open"
        assert "draining" in res.text, res
        # Alive while draining (a liveness probe must not kill a draining pod),
        # and still scrapable: the open connection is visible.
        assert daemon.admin_request("/healthz").status == 200
        m = daemon.scrape()
        assert m.get("mtlsd_connections_active", listener="inbound") == 1
        # The connection still works during the drain.
        sock.sendall(b"more\n")
        assert sock.recv(5) == b"more\n"
    finally:
        sock.close()
    assert daemon.wait_exit(5) == 0


def short_lived_server_cert(pki, tmp_path, seconds: int):
    """A copy of the PKI with server-short.{crt,key} (root-issued, CN=short-lived)
    that expires `seconds` from now. Returns (pki copy, notAfter as Unix time)."""
    mine = pki.copy_to(tmp_path / "pki")
    key, csr, crt = (mine.path(n) for n in ("server-short.key", "server-short.csr",
                                            "server-short.crt"))
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", key], check=True, capture_output=True)
    mine.openssl("req", "-new", "-key", key, "-subj", "/O=mtlsd Test/CN=short-lived",
                 "-out", csr)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    end = now + datetime.timedelta(seconds=seconds)
    start = now - datetime.timedelta(days=1)
    mine.openssl("ca", "-batch", "-notext", "-name", "root_ca", "-extensions", "ext_server",
                 "-startdate", start.strftime("%Y%m%d%H%M%SZ"),
                 "-enddate", end.strftime("%Y%m%d%H%M%SZ"), "-in", csr, "-out", crt)
    return mine, end.timestamp()


def test_readyz_503_with_expired_serving_cert(start_mtlsd, make_upstream, pki, tmp_path):
    mine, not_after = short_lived_server_cert(pki, tmp_path, seconds=12)
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([server_listener(
        mine, up.address, tls={"cert": mine.path("server-short.crt"),
                               "key": mine.path("server-short.key")})]))
    assert time.time() < not_after - 1, "the test machine is too slow for a 12 s certificate"
    ready = daemon.admin_request("/readyz")
    assert ready.status == 200, ready
    (labels, value), = daemon.scrape().series("mtlsd_certificate_expiry_timestamp_seconds",
                                              role="server")
    assert labels["subject"] == "CN=short-lived,O=mtlsd Test" and value == not_after

    # Still valid (and ready) right up to notAfter; 503 after it.
    res = readyz_across(daemon, not_after, lambda r: r.status == 503, timeout=10)
    assert "inbound" in res.text and "expired" in res.text and "short-lived" in res.text, res
    assert daemon.admin_request("/healthz").status == 200, "liveness must not follow readiness"


def test_readyz_names_an_expired_certificate_while_another_still_serves(start_mtlsd,
                                                                         make_upstream, pki,
                                                                         tmp_path):
    """Review: /readyz looked only at the first tls.certificates entry: one expired behind it
    left readiness silent while its clients got an expired certificate (and an expired first
    entry made the listener not ready while the others served). Ready while any certificate
    serves, the expired one named in the body; not ready once none does."""
    mine, not_after = short_lived_server_cert(pki, tmp_path, seconds=12)
    up = make_upstream()
    certificates = [{"cert": mine.path("server.crt"), "key": mine.path("server.key")},
                    {"cert": mine.path("server-short.crt"), "key": mine.path("server-short.key"),
                     "server_names": ["short.example.org"]}]
    daemon = start_mtlsd(daemon_config([server_listener(
        mine, up.address, tls={"cert": None, "key": None, "certificates": certificates})]))
    assert time.time() < not_after - 1, "the test machine is too slow for a 12 s certificate"
    assert daemon.admin_request("/readyz").status == 200
    res = readyz_across(daemon, not_after, lambda r: "expired" in r.text, timeout=10)
    assert res.status == 200, res
    assert "short-lived" in res.text, res.text


def short_lived_intermediate_chain(pki, tmp_path, seconds: int):
    """Under the test root: an intermediate (CN=short-lived intermediate) that expires `seconds`
    from now and a server leaf under it valid for a year. Returns (chain file leaf first, key
    file, the intermediate's notAfter as Unix time)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    root = x509.load_pem_x509_certificate(pki.read("ca.crt"))
    root_key = serialization.load_pem_private_key(pki.read("ca.key"), None)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    end = now + datetime.timedelta(seconds=seconds)

    def issue(subject, key, issuer, issuer_key, not_after, ca):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(not_after)
             .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), True)
             .add_extension(x509.KeyUsage(not ca, False, False, False, False, ca, ca, False,
                                          False), True)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                 issuer_key.public_key()), False))
        if not ca:
            b = (b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
                 .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False))
        return b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               False).sign(issuer_key, hashes.SHA256())

    inter_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    inter_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "short-lived intermediate")])
    inter = issue(inter_name, inter_key, root.subject, root_key, end, True)
    leaf = issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "long-lived leaf")]),
                 leaf_key, inter_name, inter_key, now + datetime.timedelta(days=365), False)
    chain, key = tmp_path / "chain.crt", tmp_path / "leaf.key"
    chain.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, inter)))
    key.write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(chain), str(key), end.timestamp()


def test_readyz_503_once_an_intermediate_of_the_served_chain_expires(start_mtlsd,
                                                                       make_upstream, pki,
                                                                       tmp_path):
    """Review: /readyz looked at the leaf alone and stayed 200 once the intermediate in our
    chain had expired, while every client refused the chain (`mtlsd check` refuses it too).
    Every certificate of a served chain counts; the one at fault is named."""
    chain, key, not_after = short_lived_intermediate_chain(pki, tmp_path, seconds=8)
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([server_listener(pki, up.address,
                                                        tls={"cert": chain, "key": key})]))
    assert time.time() < not_after - 1, "the test machine is too slow for an 8 s certificate"
    assert daemon.admin_request("/readyz").status == 200
    res = readyz_across(daemon, not_after, lambda r: r.status == 503, timeout=10)
    assert res.text == ("not ready: listener inbound: intermediate CN=short-lived intermediate "
                        "has expired (in the chain of certificate CN=long-lived leaf)\n"), res


def test_warns_about_a_certificate_expiring_soon(start_mtlsd, make_upstream, pki, tmp_path):
    mine, _ = short_lived_server_cert(pki, tmp_path, seconds=3 * 86400)
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([server_listener(
        mine, up.address, tls={"cert": mine.path("server-short.crt"),
                               "key": mine.path("server-short.key")})]))
    line = daemon.wait_for_log(lambda l: l.get("level") == "warn"
                               and "short-lived" in str(l.get("subject", "")), timeout=3)
    assert line.get("role") == "server" and line.get("listener") == "inbound", line
    # Only the short-lived certificate: the CA has ten years left.
    warned = [l for l in daemon.logs() if l.get("level") == "warn" and "subject" in l]
    assert len(warned) == 1, warned


def test_slow_admin_clients_do_not_block_probes(serve):
    """The admin server runs on the control loop without a thread per request:
    clients stuck half-way through a request must not delay a probe."""
    daemon, _ = serve()
    stuck = []
    try:
        for _ in range(10):
            s = socket.create_connection(parse_address(daemon.admin_address), timeout=5)
            s.sendall(b"GET /metr")
            stuck.append(s)
        start = time.monotonic()
        assert daemon.admin_request("/readyz").status == 200
        assert [v for _, v in daemon.scrape().series("mtlsd_build_info")] == [1]
        # A probe queued behind a stuck client waits for its 10 s request deadline.
        assert time.monotonic() - start < 3.0
    finally:
        for s in stuck:
            s.close()


def test_clients_that_do_not_read_their_answers_lose_their_slots(serve):
    """Review: 64 connections pipelining scrapes into a socket they never read held every admin
    slot for as long as they stayed open (no deadline on writing an answer), so /healthz and
    /readyz failed and a liveness probe would restart the pod. Reading a request and writing
    its answer now share one 10 s deadline. Watched through mtlsd's descriptors, not with probes:
    a probe would take the place of one that waits for its next request."""
    daemon, _ = serve()
    pipelined = b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n" * 1000
    baseline = proc_fd_count(daemon.pid)
    stalled = []
    try:
        for _ in range(64):  # the admin server's cap
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(5)
            s.connect(parse_address(daemon.admin_address))
            s.sendall(pipelined)
            stalled.append(s)
        # Each client is accepted once it has an answer waiting. Not counted through mtlsd's
        # descriptors: the admin thread renders answers for the first clients until their
        # buffers fill, and on a slow (sanitized) run the first can reach their 10 s deadline
        # and close before the last are accepted, so all 64 need never be open at once.
        waiting = select.poll()
        unanswered = {s.fileno(): s for s in stalled}
        for fd in unanswered:
            waiting.register(fd, select.POLLIN)
        deadline = time.monotonic() + (120 if SANITIZED else 40)
        while unanswered:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{len(unanswered)} stalled clients were never answered"
            for fd, _ in waiting.poll(remaining * 1000):
                waiting.unregister(fd)
                del unanswered[fd]
        start = time.monotonic()
        # 10 s after the last answer that went out, on a busy machine; a sanitized daemon
        # writes the answers several times slower (one CI run took over 40 s).
        deadline = start + (120 if SANITIZED else 40)
        while proc_fd_count(daemon.pid) > baseline + 2:
            assert time.monotonic() < deadline, "the stalled clients still hold their places"
            time.sleep(0.1)
        print(f"closed {time.monotonic() - start:.1f} s after the stall")
        assert daemon.admin_request("/healthz").status == 200
    finally:
        for s in stalled:
            s.close()


def test_keep_alive_connections_give_their_places_to_a_probe(serve):
    """Review of the deadline fix: 64 keep-alive connections that read their answers and ask
    again within 10 s held every admin slot for good. With all places taken, the connection
    idle the longest is closed for the new one, so a probe always gets in."""
    daemon, _ = serve()
    request = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
    held = []
    try:
        for _ in range(70):  # 6 past the admin server's cap, each answered and kept alive
            s = socket.create_connection(parse_address(daemon.admin_address), timeout=5)
            s.sendall(request)
            assert s.recv(4096).startswith(b"HTTP/1.1 200"), "a keep-alive connection not served"
            held.append(s)
        assert daemon.admin_request("/healthz").status == 200  # the probe takes a 7th place
        readable, _, _ = select.select(held, [], [], 2)
        closed = sorted(held.index(s) for s in readable if s.recv(1) == b"")
        assert closed == list(range(7)), f"closed: {closed}; the 7 idle the longest should be"
        held[-1].sendall(request)  # the newest still has its place
        assert held[-1].recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        for s in held:
            s.close()
