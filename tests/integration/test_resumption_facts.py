"""What a resumed TLS session must still honour of the handshake that made it (README "Rules"
on resumed sessions, "Revocation": "Resumed sessions and stale CRL files", "Client mode").

A resumption skips certificate verification, so whatever that verification found, or would find
now, has to travel with the session. Server mode: a ticket carries the earliest notAfter of the
verified client chain (leaf, intermediates, anchor) and the depths whose CRL file was missing or
stale at the full handshake. Client mode: the session cache keeps the earliest notAfter of the
remote's verified chain. Checked here:

1. An intermediate of the client's chain expires (its leaf is valid for long): the ticket saved
   while it was valid, and the one renewed by a resumption, resume nothing; the full handshake
   that follows refuses the chain as `expired` at depth 1. Before, only the leaf's validity was
   looked at and the session resumed, `accepted`. TLS 1.2 and 1.3.
2. Client mode, the remote's intermediate expires: mtlsd drops its cached session, makes a full
   handshake (the remote sees no resumed one) and refuses the remote (`expired`). Before, it
   resumed the session and relayed. TLS 1.2 and 1.3.
3. A session admitted under `on_unavailable: allow` without a usable CRL (the leaf's issuer has
   no CRL among `crl_files`): under `allow` its resumption is warned about again, naming the
   depth and `(resumed session)`; after a reload to `on_unavailable: fail` (the session id
   context does not digest on_unavailable, so the ticket still decrypts) the resumption is
   refused, `revocation_unavailable`, as the full handshake is. Before, it was admitted silently.
4. A client whose full handshake was refused after the handshake (its leaf without a CRL file,
   OCSP as the only other source, its responder down, `fail`) still holds a ticket; resuming
   with it is refused the same way. Before, the CRL file counted as answering `good` for the
   resumed session. TLS 1.2 and 1.3.
5. The second of a CRL's nextUpdate with `crl_grace: 0s`: a full handshake is refused from that
   second on, and so is a resumption. Before, a resumption was admitted for that one second.
6. TLS 1.2: the server keeps no session cache, only tickets resume. A client that asks for a
   ticket resumes (a pin, both binaries); one that does not (`OP_NO_TICKET`) makes a full
   handshake each time. Before, it resumed from the session cache.

Clients are Python's ssl with SSLContext sessions (`session=`, `session_reused`), as in
test_resumption_judging.py. The short-lived intermediate is made with `cryptography`, signed by
the suite's root (ca.crt), after the daemon is up, so that its few seconds of life are the
test's; its expiry is waited out (the thing under test) and then confirmed by polling full
handshakes until one is refused.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from helpers import soft_fail_warnings, upstream_seen
from resumption_attempt import Attempt, attempt
from tls_remote import ThreadedServer, plain_exchange
from mtlsd_harness import (Mtlsd, client_context, daemon_config, deep_merge, free_port,
                           server_listener, write_config)
import test_revocation_edges as E

SANITIZED = os.environ.get("MTLSD_SANITIZED") == "1"
VERSIONS = ["1.2", "1.3"]
TIMEOUT = 10.0

# How long the short-lived intermediate is valid once made: a full handshake and a resumption
# (server mode), or two connections through mtlsd (client mode), must fit in it.
LIFE = 5 if SANITIZED else 3

SHORT_INT = "CN=mtlsd Test Short-lived Intermediate"
SHORT_CLIENT_ID = "spiffe://example.org/ns/default/sa/short-int-client"
RESUMED = " (resumed session)"
ESTABLISHED = "when the session was established"
CHECKS = "mtlsd_revocation_checks_total"


# --- connections --------------------------------------------------------------------------------

def brief(line: dict) -> str:
    """The fields of an access line a failure message needs (pytest truncates whole dicts)."""
    return (f"listener={line.get('listener')} result={line.get('result')} "
            f"reason={line.get('reason')!r} resumed={line.get('resumed')} "
            f"identity={line.get('identity')!r} detail={line.get('detail')!r}")


def assert_relayed(at: Attempt, resumed: bool) -> None:
    """Accepted and relayed; the offered session resumed, or a full handshake was made, as
    `resumed` says (both on the client's side and in the access line)."""
    assert at.line.get("result") == "accepted", f"expected accepted, got {brief(at.line)}"
    assert at.ex.error is None and at.ex.data == b"ping\n", (at.ex, brief(at.line))
    assert at.reused == resumed, f"session_reused={at.reused}: {brief(at.line)}"
    assert at.line.get("resumed") is resumed, brief(at.line)


def assert_not_admitted(at: Attempt, reason: str, up, seen: tuple[int, int]) -> None:
    """Refused with `reason`: the access line says rejected/`reason`, no byte came back, the
    refusal was prompt and the upstream heard nothing more than `seen`. The first assertion
    states what mtlsd decided when it did otherwise."""
    line = at.line
    assert line.get("result") == "rejected" and line.get("reason") == reason, (
        f"expected rejected/{reason}, got {brief(line)} (session_reused={at.reused})")
    assert at.ex.data == b"", f"refused client received {at.ex.data[:80]!r}: {brief(line)}"
    assert not isinstance(at.ex.error, TimeoutError), f"refusal was not prompt: {brief(line)}"
    assert upstream_seen(up) == seen, (
        f"upstream was reached by a refused peer: {seen} -> {upstream_seen(up)}")


def reload_with(daemon: Mtlsd, config: dict) -> None:
    """Rewrite the configuration, SIGHUP, wait for its `reloaded` line."""
    mark = daemon.log_mark()
    write_config(daemon.config_path, config)
    daemon.send_signal(signal.SIGHUP)
    line = daemon.wait_for_log(lambda l: l.get("msg") in (
        "reloaded", "reload failed; still serving the previous configuration"), since=mark)
    assert line.get("msg") == "reloaded" and line.get("result") == "success", line


# --- a short-lived intermediate -----------------------------------------------------------------

@dataclass
class ShortChain:
    """root (the suite's ca.crt) -> short-int.crt (valid until `not_after`) -> a client leaf and
    a server leaf (valid for a day): client.crt / server.crt, their keys, and client.chain.pem /
    server.chain.pem (leaf + short-int)."""
    root: Path
    not_after: float

    def path(self, name: str) -> str:
        return str(self.root / name)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mtlsd Test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def short_chain(pki, tmp_path: Path, life: int) -> ShortChain:
    """An intermediate of the suite's root that expires `life` seconds from now (whole
    seconds), and two leaves under it that outlive it by a day."""
    root_cert = x509.load_pem_x509_certificate(pki.read("ca.crt"))
    root_key = serialization.load_pem_private_key(pki.read("ca.key"), password=None)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    not_after = now + timedelta(seconds=life)
    out = ShortChain(tmp_path / "short-chain", not_after.timestamp())
    out.root.mkdir()

    def issue(subject: x509.Name, key, issuer: x509.Certificate, issuer_key, until: datetime,
              extensions: list[tuple[x509.ExtensionType, bool]]) -> x509.Certificate:
        issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (x509.CertificateBuilder().subject_name(subject)
                   .issuer_name(issuer.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(hours=1)).not_valid_after(until)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                                  critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier
                                  .from_issuer_subject_key_identifier(issuer_ski),
                                  critical=False))
        for ext, critical in extensions:
            builder = builder.add_extension(ext, critical=critical)
        return builder.sign(issuer_key, hashes.SHA256())

    def leaf_usage(eku, san: list[x509.GeneralName]) -> list[tuple[x509.ExtensionType, bool]]:
        return [(x509.BasicConstraints(ca=False, path_length=None), True),
                (x509.KeyUsage(digital_signature=True, content_commitment=False,
                               key_encipherment=False, data_encipherment=False,
                               key_agreement=False, key_cert_sign=False, crl_sign=False,
                               encipher_only=False, decipher_only=False), True),
                (x509.ExtendedKeyUsage([eku]), False),
                (x509.SubjectAlternativeName(san), False)]

    int_key = ec.generate_private_key(ec.SECP256R1())
    intermediate = issue(
        _name("mtlsd Test Short-lived Intermediate"), int_key, root_cert, root_key, not_after,
        [(x509.BasicConstraints(ca=True, path_length=0), True),
         (x509.KeyUsage(digital_signature=False, content_commitment=False,
                        key_encipherment=False, data_encipherment=False, key_agreement=False,
                        key_cert_sign=True, crl_sign=True, encipher_only=False,
                        decipher_only=False), True)])
    int_pem = intermediate.public_bytes(serialization.Encoding.PEM)
    (out.root / "short-int.crt").write_bytes(int_pem)
    leaves = {
        "client": leaf_usage(ExtendedKeyUsageOID.CLIENT_AUTH,
                             [x509.UniformResourceIdentifier(SHORT_CLIENT_ID)]),
        "server": leaf_usage(ExtendedKeyUsageOID.SERVER_AUTH,
                             [x509.DNSName("localhost")]),
    }
    for name, extensions in leaves.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = issue(_name(f"short-int-{name}" if name == "client" else "localhost"), key,
                     intermediate, int_key, now + timedelta(days=1), extensions)
        (out.root / f"{name}.key").write_bytes(_key_pem(key))
        (out.root / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (out.root / f"{name}.chain.pem").write_bytes(
            cert.public_bytes(serialization.Encoding.PEM) + int_pem)
    return out


def wait_out(not_after: float) -> None:
    """Until the wall clock reaches notAfter (the certificate's validity is the thing under
    test); whether mtlsd sees it expired is then polled for."""
    while time.time() < not_after:
        time.sleep(max(0.01, not_after - time.time()))


def poll_until_refused(connect, what: str, not_after: float) -> dict:
    """Repeats `connect()` (a full handshake; returns its access line) until one is not
    accepted, bounded by a few seconds past `not_after`; returns that line."""
    while True:
        line = connect()
        if line.get("result") != "accepted":
            return line
        assert time.time() < not_after + 5, (
            f"{what}: still accepted {time.time() - not_after:.1f} s past notAfter: "
            f"{brief(line)}")
        time.sleep(0.05)


# --- 1. server mode: an intermediate of the client's chain expires ------------------------------

# How short-int reaches mtlsd: sent by the client after its leaf, or (the client sending its leaf
# alone) from the trust bundle, beside the root: the verified chain holds it either way.
SOURCES = ["sent", "bundle"]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("source", SOURCES)
def test_a_ticket_does_not_outlive_the_clients_intermediate(start_mtlsd, make_upstream, pki,
                                                            tmp_path, source, version):
    """Trust store: the root (and short-int, for "bundle"); the client's leaf is valid for a
    day, short-int for LIFE seconds; the client sends short-int after its leaf ("sent") or its
    leaf alone ("bundle"). While short-int is valid: a full handshake, then a resumption of its
    session (which renews the ticket); both sessions are kept. Once a full handshake is refused
    as `expired` (depth 1, short-int), neither ticket may resume: the server declines it, the
    full handshake that follows refuses the chain (`expired`, not a resumed connection) and
    nothing reaches the upstream. Before, the ticket was judged by its leaf alone, resumed and
    was accepted."""
    up = make_upstream()
    ctx = client_context(pki, None, min_version=version, max_version=version)
    if source == "sent":
        daemon = start_mtlsd(daemon_config([server_listener(pki, up.address)]))
        # Issued once the daemon is up, so that its few seconds of life are the test's.
        chain = short_chain(pki, tmp_path, LIFE)
        ctx.load_cert_chain(chain.path("client.chain.pem"), chain.path("client.key"))
    else:
        # The bundle must exist at start-up: the start-up's time is added to short-int's life.
        chain = short_chain(pki, tmp_path, LIFE + (3 if SANITIZED else 1))
        daemon = start_mtlsd(daemon_config([server_listener(pki, up.address, client_auth={
            "ca": [pki.path("ca.crt"), chain.path("short-int.crt")]})]))
        ctx.load_cert_chain(chain.path("client.crt"), chain.path("client.key"))

    first = attempt(daemon, ctx)
    assert_relayed(first, resumed=False)
    assert first.line.get("identity") == SHORT_CLIENT_ID, brief(first.line)
    renewed = attempt(daemon, ctx, session=first.session)
    assert_relayed(renewed, resumed=True)
    if time.time() >= chain.not_after:
        pytest.fail(f"two handshakes outlasted short-int's {LIFE} s: raise LIFE")
    sessions = {"the first ticket": first.session, "the renewed ticket": renewed.session}

    wait_out(chain.not_after)
    # Control: a full handshake is refused, the intermediate named.
    line = poll_until_refused(lambda: attempt(daemon, ctx).line, "full handshakes",
                              chain.not_after)
    assert line.get("reason") == "expired" and line.get("result") == "rejected", brief(line)
    assert f"depth 1: {SHORT_INT}" in line.get("detail", ""), brief(line)
    seen = upstream_seen(up)

    for label, session in sessions.items():
        at = attempt(daemon, ctx, session=session)
        assert not at.reused, f"{label} resumed after short-int expired: {brief(at.line)}"
        assert_not_admitted(at, "expired", up, seen)
        assert at.line.get("resumed") is False, f"{label}: {brief(at.line)}"
        detail = at.line.get("detail", "")
        assert f"depth 1: {SHORT_INT}" in detail and RESUMED not in detail, \
            f"{label}: {brief(at.line)}"
        assert at.ex.alert, f"{label}: expected the full handshake's alert, saw {at.ex.error!r}"


# --- 2. client mode: the remote's intermediate expires ------------------------------------------

class ResumingRemote(ThreadedServer):
    """A TLS server (Python ssl, TLS up to `version`) that echoes, issues session tickets (and
    keeps TLS 1.2 session IDs) and records, per completed handshake, whether it resumed. Bound
    at once; serves from serve(), once its certificate exists."""

    def __init__(self):
        super().__init__()
        self.handshakes: list[bool] = []    # session_reused of each completed handshake
        self.failed = 0                     # handshakes that did not complete
        self._lock = threading.Lock()

    def serve(self, certfile: str, keyfile: str, version: str) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.maximum_version = {"1.2": ssl.TLSVersion.TLSv1_2,
                                    "1.3": ssl.TLSVersion.TLSv1_3}[version]
        self.ctx.load_cert_chain(certfile, keyfile)
        self.start()

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(TIMEOUT)
        try:
            try:
                tls = self.ctx.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                with self._lock:
                    self.failed += 1
                return
            with tls:
                with self._lock:
                    self.handshakes.append(tls.session_reused)
                while data := tls.recv(65536):
                    tls.sendall(data)
                # close_notify: a TLS close without it would make mtlsd's OpenSSL mark the
                # session not resumable (an unexpected EOF is a fatal error).
                tls.unwrap()
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def seen(self) -> tuple[list[bool], int]:
        with self._lock:
            return list(self.handshakes), self.failed


def wait_for_failed(remote: ResumingRemote, n: int, timeout: float = 5.0) -> None:
    """Until the remote counts `n` handshakes that did not complete (its thread notes one when
    mtlsd's alert arrives, which may be just after mtlsd's access line)."""
    deadline = time.monotonic() + timeout
    while remote.seen()[1] < n:
        assert time.monotonic() < deadline, (
            f"the remote counts {remote.seen()[1]} refused handshakes, expected {n}")
        time.sleep(0.01)


def client_listener(pki, upstream: str, name: str, version: str, **overrides) -> dict:
    """A client-mode listener trusting the suite's root alone, for the remote "localhost"."""
    base = {
        "name": name,
        "mode": "client",
        "listen": "127.0.0.1:0",
        "upstream": upstream,
        "tls": {"cert": pki.path("client.crt"), "key": pki.path("client.key"),
                "max_version": version},
        "server_auth": {"ca": [pki.path("ca.crt")], "server_name": "localhost"},
    }
    return deep_merge(base, overrides)


def through(daemon: Mtlsd, listener: str, payload: bytes = b"ping\n") -> tuple[bytes, dict]:
    """The local app's side: send `payload` in plaintext, half-close, read until EOF. Returns
    what came back and the connection's access line."""
    mark = daemon.log_mark()
    # A refused remote resets the app's socket, which can land before connect() returned (a
    # loaded machine saw it): plain_exchange takes that as an exchange with nothing back.
    data, local = plain_exchange(daemon.addr(listener), payload)
    return data, daemon.wait_for_access(since=mark, client=local, listener=listener)


@pytest.mark.parametrize("version", VERSIONS)
def test_client_mode_drops_a_session_once_the_remotes_intermediate_expired(start_mtlsd, pki,
                                                                          tmp_path, version):
    """The remote presents a leaf (valid for a day) and short-int (valid LIFE seconds); mtlsd
    trusts the root alone. Listener "outbound" resumes; "control" (session_resumption off, same
    remote) always makes a full handshake. Through outbound: a full handshake, then a resumed
    one (the cache works here; its session, renewed by the resumption, is the one cached). Once
    control's full handshake is refused as `expired`, outbound must not offer its cached
    session: the remote completes no resumed handshake, and mtlsd refuses it (`expired`,
    resumed false, nothing relayed). Before, the session was judged by the remote's leaf alone:
    mtlsd resumed it and relayed."""
    remote = ResumingRemote()
    try:
        daemon = start_mtlsd(daemon_config([
            client_listener(pki, remote.address, "outbound", version),
            client_listener(pki, remote.address, "control", version,
                            tls={"session_resumption": False}),
        ]))
        chain = short_chain(pki, tmp_path, LIFE)
        remote.serve(chain.path("server.chain.pem"), chain.path("server.key"), version)

        data, first = through(daemon, "outbound")
        assert data == b"ping\n" and first.get("result") == "accepted", brief(first)
        assert first.get("resumed") is False, brief(first)
        data, second = through(daemon, "outbound")
        assert data == b"ping\n" and second.get("result") == "accepted", brief(second)
        assert second.get("resumed") is True, f"the cached session did not resume: {brief(second)}"
        assert second.get("tls_version") == f"TLSv{version}", brief(second)
        if time.time() >= chain.not_after:
            pytest.fail(f"two connections outlasted short-int's {LIFE} s: raise LIFE")
        handshakes, _ = remote.seen()
        assert handshakes == [False, True], handshakes

        wait_out(chain.not_after)
        line = poll_until_refused(lambda: through(daemon, "control")[1], "control's full "
                                  "handshakes", chain.not_after)
        assert line.get("reason") == "expired" and line.get("result") == "rejected", brief(line)
        assert f"depth 1: {SHORT_INT}" in line.get("detail", ""), brief(line)
        wait_for_failed(remote, 1)  # control's refused handshake, as the remote saw it
        resumed_before, failed_before = remote.seen()[0].count(True), remote.seen()[1]

        data, line = through(daemon, "outbound", b"secret\n")
        handshakes, _ = remote.seen()
        assert handshakes.count(True) == resumed_before, (
            f"mtlsd resumed its cached session with the remote after short-int expired "
            f"(remote handshakes {handshakes}): {brief(line)}, relayed {data!r}")
        assert data == b"", f"relayed {data!r} to a refused remote: {brief(line)}"
        assert line.get("result") == "rejected" and line.get("reason") == "expired", brief(line)
        assert line.get("resumed") is False, brief(line)
        assert f"depth 1: {SHORT_INT}" in line.get("detail", ""), brief(line)
        # The remote saw a full handshake that mtlsd broke off (its alert at the certificate).
        wait_for_failed(remote, failed_before + 1)
    finally:
        remote.close()


# --- 3. a session admitted without a usable CRL -------------------------------------------------

def missing_crl_config(pki, upstream: str, policy: str, **revocation) -> dict:
    """crl_files: the root's CRL only, crl_scope leaf: client-int's issuer (the intermediate)
    has no CRL, so its leaf has no usable CRL (depth 0); `policy` decides."""
    return daemon_config([server_listener(pki, upstream, revocation={
        "crl_files": [pki.path("crl.pem")], "crl_scope": "leaf", "on_unavailable": policy,
        **revocation})], reload={"watch": False})


def client_int(pki, version: str) -> ssl.SSLContext:
    """client-int (issued by the intermediate), sending its leaf and the intermediate."""
    return client_context(pki, "client-int", certfile="client-int-chain.crt",
                          min_version=version, max_version=version)


def unavailable_crl_checks(daemon: Mtlsd) -> float:
    return daemon.scrape().total(CHECKS, listener="inbound", method="crl", result="unavailable")


@pytest.mark.parametrize("version", VERSIONS)
def test_a_resumption_without_a_crl_is_warned_about_under_allow(start_mtlsd, make_upstream, pki,
                                                                version):
    """on_unavailable allow: client-int's full handshake is admitted with the soft-fail warning
    (its leaf has no CRL) and counted as a CRL check `unavailable`. Its resumption is admitted
    as well, and said and counted the same way: a warning naming depth 0, "when the session was
    established" and "(resumed session)", one more `unavailable`. Before, the resumption went
    unsaid (it took the missing CRL as checked)."""
    up = make_upstream()
    daemon = start_mtlsd(missing_crl_config(pki, up.address, "allow"))
    ctx = client_int(pki, version)
    before = unavailable_crl_checks(daemon)
    first = attempt(daemon, ctx)
    assert_relayed(first, resumed=False)
    assert len(soft_fail_warnings(daemon, first.line)) == 1, brief(first.line)
    assert unavailable_crl_checks(daemon) - before == 1

    before = unavailable_crl_checks(daemon)
    resumed = attempt(daemon, ctx, session=first.session)
    assert_relayed(resumed, resumed=True)
    warnings = soft_fail_warnings(daemon, resumed.line)
    assert len(warnings) == 1, f"{len(warnings)} warnings for the resumption: {brief(resumed.line)}"
    detail = warnings[0].get("detail", "")
    assert "depth 0" in detail and ESTABLISHED in detail and detail.endswith(RESUMED), detail
    assert unavailable_crl_checks(daemon) - before == 1, "the resumption's CRL check not counted"


@pytest.mark.parametrize("version", VERSIONS)
def test_a_resumption_with_usable_crl_files_is_counted_good(start_mtlsd, make_upstream, pki,
                                                            version):
    """Review: with crl_files alone, a full handshake counted a CRL check `good` and its
    resumption none ("one per connection and method", the README says)."""
    up = make_upstream()
    daemon = start_mtlsd(missing_crl_config(pki, up.address, "fail"))
    ctx = client_context(pki, "client", min_version=version, max_version=version)

    def good() -> float:
        return daemon.scrape().total(CHECKS, listener="inbound", method="crl", result="good")
    first = attempt(daemon, ctx)
    assert_relayed(first, resumed=False)
    assert good() == 1
    resumed = attempt(daemon, ctx, session=first.session)
    assert_relayed(resumed, resumed=True)
    assert good() == 2, "the resumption's CRL check not counted"


@pytest.mark.parametrize("version", VERSIONS)
def test_a_ticket_admitted_without_a_crl_is_refused_after_a_reload_to_fail(
        start_mtlsd, make_upstream, pki, version):
    """Admitted under on_unavailable allow without a usable CRL (the soft-fail warning), session
    kept. Reload to on_unavailable fail (the CRL files and trust are unchanged, so the ticket
    still decrypts): a full handshake is refused (revocation_unavailable, the control); the
    resumption of the saved session must be too: it resumes and is refused after the handshake,
    revocation_unavailable, detail naming depth 0 "when the session was established" and ending
    "(resumed session)", nothing relayed. Before: resumed=true, accepted."""
    up = make_upstream()
    daemon = start_mtlsd(missing_crl_config(pki, up.address, "allow"))
    ctx = client_int(pki, version)
    first = attempt(daemon, ctx)
    assert_relayed(first, resumed=False)
    assert soft_fail_warnings(daemon, first.line), f"no soft-fail warning: {brief(first.line)}"
    assert first.session is not None

    reload_with(daemon, missing_crl_config(pki, up.address, "fail"))
    seen = upstream_seen(up)
    full = attempt(daemon, ctx)
    assert_not_admitted(full, "revocation_unavailable", up, seen)

    resumed = attempt(daemon, ctx, session=first.session)
    assert_not_admitted(resumed, "revocation_unavailable", up, seen)
    assert resumed.reused, f"the saved session did not resume: {brief(resumed.line)}"
    assert resumed.line.get("resumed") is True, brief(resumed.line)
    detail = resumed.line.get("detail", "")
    assert "depth 0" in detail and ESTABLISHED in detail and detail.endswith(RESUMED), \
        brief(resumed.line)
    assert resumed.line.get("identity") == "", brief(resumed.line)


# --- 4. a ticket from a handshake refused after the handshake ----------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_a_ticket_from_a_refused_handshake_admits_nothing(start_mtlsd, make_upstream, pki,
                                                          version):
    """crl_files (the root's CRL only: client-int's leaf has none) beside OCSP for the leaf at a
    responder where nothing listens, on_unavailable fail. client-int's full handshake completes
    (the missing CRL is left to OCSP), then no source answers: refused after the handshake,
    revocation_unavailable. The ticket was issued in that handshake (TLS 1.2: before the
    server's Finished; TLS 1.3: at its end), so the client holds one. Offering it must not
    admit the client: it resumes and is refused, revocation_unavailable, the detail saying the
    leaf had no usable CRL file "when the session was established", nothing relayed. Before,
    the CRL file counted as answering for the resumed session (`good`) and it was accepted."""
    up = make_upstream()
    dead_responder = f"http://127.0.0.1:{free_port()}/ocsp"
    daemon = start_mtlsd(missing_crl_config(pki, up.address, "fail", ocsp="leaf",
                                            ocsp_responder=dead_responder, ocsp_timeout="1s"))
    ctx = client_int(pki, version)
    seen = upstream_seen(up)
    refused = attempt(daemon, ctx)
    assert_not_admitted(refused, "revocation_unavailable", up, seen)
    assert refused.ex.handshake_ok and not refused.reused, brief(refused.line)
    assert refused.session is not None and refused.session.has_ticket, (
        "the refused client received no ticket: nothing to show")

    # The ticket decrypts and resumes (its facts are judged after the handshake): the revocation
    # service is told the leaf's CRL file was unusable, asks the responder, gets no answer.
    resumed = attempt(daemon, ctx, session=refused.session)
    assert_not_admitted(resumed, "revocation_unavailable", up, seen)
    assert resumed.reused and resumed.line.get("resumed") is True, brief(resumed.line)
    assert ESTABLISHED in resumed.line.get("detail", ""), brief(resumed.line)


# --- 5. the second of a CRL's nextUpdate --------------------------------------------------------

def test_a_resumption_is_refused_in_the_second_a_full_handshake_first_is(
        start_mtlsd, make_upstream, pki, tmp_path):
    """crl_files alone (a root CRL current for E.LIFE seconds), crl_scope leaf, crl_grace 0s,
    on_unavailable fail. A full handshake is refused from the second of the CRL's nextUpdate on
    (OpenSSL: nextUpdate <= now is expired); full handshakes are repeated until one is, and the
    session saved while the CRL was current is then offered within that same second: it
    resumes and is refused, revocation_unavailable, naming the expired CRL. Before, the
    resumption check called the CRL stale only from the next second (now - nextUpdate > 0), so
    for that second it was admitted."""
    up = make_upstream()
    ctx = client_context(pki, "client", min_version="1.3", max_version="1.3")
    crl, next_update = E.short_root_crl(pki, tmp_path, E.LIFE)
    daemon = start_mtlsd(daemon_config([server_listener(pki, up.address, revocation={
        "crl_files": [crl], "crl_scope": "leaf", "crl_grace": "0s"})]))
    first = attempt(daemon, ctx)
    if time.time() >= next_update:
        pytest.fail(f"start-up and the first handshake outlasted the CRL ({E.LIFE} s)")
    assert_relayed(first, resumed=False)

    wait_out(next_update - 0.3)
    line = poll_until_refused(lambda: attempt(daemon, ctx).line, "full handshakes",
                              next_update)
    assert line.get("reason") == "revocation_unavailable", brief(line)
    assert E.STALE in line.get("detail", ""), brief(line)
    seen = upstream_seen(up)
    resumed = attempt(daemon, ctx, session=first.session)
    late = time.time() - next_update
    assert resumed.line.get("result") != "accepted" or late >= 1.0, (
        f"resumption admitted {late:+.2f} s from nextUpdate, where a full handshake is "
        f"refused: {brief(resumed.line)}")
    assert_not_admitted(resumed, "revocation_unavailable", up, seen)
    assert resumed.reused, f"the saved session did not resume: {brief(resumed.line)}"
    assert E.STALE in resumed.line.get("detail", ""), brief(resumed.line)
    assert late < 1.0, (f"the resumption came {late:.2f} s after nextUpdate, not in its second: "
                        f"the boundary was not exercised (machine too slow?)")


# --- 6. TLS 1.2: tickets only --------------------------------------------------------------------

def test_tls12_resumes_with_a_ticket(start_mtlsd, make_upstream, pki):
    """A TLS 1.2 client that asks for a ticket (Python's default) resumes with it: reused, the
    access line says resumed, accepted and relayed. (Holds before and after the server stopped
    keeping a session cache.)"""
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([server_listener(pki, up.address)]))
    ctx = client_context(pki, "client", min_version="1.2", max_version="1.2")
    first = attempt(daemon, ctx)
    assert_relayed(first, resumed=False)
    assert first.session is not None and first.session.has_ticket, "no TLS 1.2 ticket issued"
    for _ in range(2):
        again = attempt(daemon, ctx, session=first.session)
        assert_relayed(again, resumed=True)


def test_tls12_without_tickets_does_not_resume(start_mtlsd, make_upstream, pki):
    """A TLS 1.2 client that does not ask for tickets (OP_NO_TICKET) can only offer a session
    ID; the server keeps no session cache (a ticket carries what resuming must honour, a cached
    session would not), so each connection is a full handshake: not reused, resumed false,
    accepted. Before, the session cache resumed it."""
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([server_listener(pki, up.address)]))
    ctx = client_context(pki, "client", min_version="1.2", max_version="1.2")
    ctx.options |= ssl.OP_NO_TICKET
    first = attempt(daemon, ctx)
    assert_relayed(first, resumed=False)
    assert first.session is not None and not first.session.has_ticket
    again = attempt(daemon, ctx, session=first.session)
    assert_relayed(again, resumed=False)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_client_mode_resumes_no_session_of_a_remote_it_refused(start_mtlsd, pki, version):
    """Review of this file's fix: in client mode a TLS 1.2 remote refused after the handshake
    (its leaf's CRL missing, the OCSP responder down, on_unavailable: fail) had its session
    cached, and the next connections resumed it and were relayed (the cached session carried
    no CRL facts). A refused connection's session is dropped, and a handshake that found a CRL
    file unusable leaves none: every attempt is a full handshake, refused."""
    remote = ResumingRemote()
    remote.serve(pki.path("server-int-fullchain.crt"), pki.path("server-int.key"), version)
    try:
        dead = f"http://127.0.0.1:{free_port()}/ocsp"
        daemon = start_mtlsd(daemon_config([client_listener(
            pki, remote.address, "outbound", version,
            revocation={"crl_files": [pki.path("crl.pem")], "crl_scope": "leaf",
                        "ocsp": "leaf", "ocsp_responder": dead, "ocsp_timeout": "1s",
                        "on_unavailable": "fail"})]))
        for attempt in range(3):
            data, line = through(daemon, "outbound")
            assert data == b"", f"attempt {attempt} relayed {data!r}: {brief(line)}"
            assert line.get("reason") == "revocation_unavailable", brief(line)
            assert line.get("resumed") is False, f"attempt {attempt} resumed: {brief(line)}"
        handshakes, _ = remote.seen()
        assert True not in handshakes, f"the remote saw resumptions: {handshakes}"
    finally:
        remote.close()
