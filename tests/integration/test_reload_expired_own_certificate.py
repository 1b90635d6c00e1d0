"""A reload while our own certificate has expired (README "Reload": "One exception: a
certificate of ours that expired (or is not yet valid) while it served").

A server certificate that expires while mtlsd serves it keeps serving: nothing replaces it
until someone renews it. Before, every reload in that time was refused with "expired at", so a
new CRL (or a removed CA, a tightened rule) stayed out too, and a client revoked meanwhile was
still admitted. Now a reload that serves that same certificate on that listener goes ahead and
logs a warning naming it; a *different* expired certificate is still refused.

The certificate is issued just before the daemon starts and lives LIFETIME seconds: long
enough for the daemon's start-up to find it valid, since start-up refuses an expired one — 30
for a sanitized daemon's slow start-up (up to ~15 s, and then some), 10 for a plain one (under
a second). Its end is a known wall-clock instant with no signal of its own (the daemon's
expiry monitor looks once an hour), so the tests wait for that instant; everything after it
waits for the daemon's log lines and counters. Clients here do not verify the server's
certificate (it has expired): what is under test is mtlsd's decision about them.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path

from faults import SANITIZED
from helpers import stamp
from mtlsd_harness import Mtlsd, Pki, client_context, echo_roundtrip, open_tls
from refusal import assert_admitted
from test_admin import short_lived_server_cert
from test_reload import (changed_files, config_for, expect_failed, expect_reloaded, install,
                         outcomes, reload_counts, roundtrip, write_and_rename)
from test_resumption_judging import wait_until_expired

LIFETIME = 30 if SANITIZED else 10  # seconds from issue to notAfter: see the docstring
SERVED_STILL = "; served still, as before this reload"
SHORT = "CN=short-lived,O=mtlsd Test"         # short_lived_server_cert's subject
REPLACEMENT = "CN=expired-replacement,O=mtlsd Test"


def rfc3339(t: float) -> str:
    """A Unix time as mtlsd writes a certificate's notAfter in its messages."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def blind_context(p: Pki, cert: str) -> ssl.SSLContext:
    """A client presenting `cert` that does not verify the server's certificate (an expired
    one serves here)."""
    ctx = client_context(p, cert)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def der_of(path: str | Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(Path(path).read_text())


def served_certificate(daemon: Mtlsd, ctx: ssl.SSLContext) -> bytes:
    """A new connection, through to the upstream and back; the DER of the server's leaf."""
    with open_tls(daemon.addr(), ctx) as s:
        der = s.getpeercert(binary_form=True)
        roundtrip(s, b"which certificate?\n")
    return der


def start_with_short_lived_certificate(start_mtlsd, make_upstream, pki, tmp_path,
                                       crl: bool = False):
    """A private PKI copy with a server certificate that expires LIFETIME seconds from now,
    installed (with the CA, and the root's crl.pem in revocation.crl_files when `crl`) in a
    directory of its own, and a daemon serving it. Returns (PKI, installed files, daemon,
    notAfter)."""
    mine, not_after = short_lived_server_cert(pki, tmp_path, seconds=LIFETIME)
    files = {"server_crt": "server-short.crt", "server_key": "server-short.key",
             "ca_crt": "ca.crt"}
    if crl:
        files["crl_pem"] = "crl.pem"  # revokes client-revoked only
    certs = install(tmp_path / "certs", mine, **files)
    config = config_for(mine, make_upstream().address, certs)
    if crl:
        config["listeners"][0]["revocation"] = {"crl_files": [str(certs["crl_pem"])]}
    # Start-up refuses an expired certificate of ours: this start is what the lifetime is for.
    try:
        daemon = start_mtlsd(config)
    except Exception:
        assert time.time() < not_after, \
            f"the test machine is too slow: start-up took more than {LIFETIME} s"
        raise
    return mine, certs, daemon, not_after


def test_a_new_crl_takes_effect_while_our_expired_certificate_serves(start_mtlsd,
                                                                      make_upstream, pki,
                                                                      tmp_path):
    """The server certificate expires while it serves; then a new CRL revokes client2, which
    was admitted until then. The reload the CRL prompts serves the same (expired) certificate,
    so it goes ahead: it succeeds, counts as a success, warns once naming the certificate and
    when it expired, and client2 is refused as revoked from then on. Before, that reload
    failed with "expired at" and client2 kept being admitted until the certificate was
    renewed. The certificate served does not change, other clients are still admitted, and
    /readyz still says 503 for it: the reload hides nothing."""
    mine, certs, daemon, not_after = start_with_short_lived_certificate(
        start_mtlsd, make_upstream, pki, tmp_path, crl=True)
    # The new CRL is made now and installed once the certificate has expired.
    mine.openssl("ca", "-batch", "-name", "root_ca", "-revoke", mine.path("client2.crt"))
    mine.openssl("ca", "-batch", "-name", "root_ca", "-gencrl", "-out", mine.path("crl2.pem"))

    wait_until_expired(not_after)
    client2, client = blind_context(mine, "client2"), blind_context(mine, "client")
    short = der_of(certs["server_crt"])
    assert served_certificate(daemon, client) == short
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client2), b"ping\n")
    assert reload_counts(daemon) == (0, 0)

    mark = daemon.log_mark()
    write_and_rename(certs["crl_pem"], mine.read("crl2.pem"))
    line = expect_reloaded(daemon, 0, trigger="file_change")
    assert changed_files(line) == {str(certs["crl_pem"])}
    # publish() logs the new runtime's warnings before the "reloaded" line.
    warned = [l for l in daemon.logs()[mark:] if SERVED_STILL in l.get("msg", "")]
    assert len(warned) == 1, warned
    assert warned[0].get("level") == "warn", warned[0]
    assert (f"{certs['server_crt']}: {SHORT} expired at {rfc3339(not_after)}{SERVED_STILL}"
            in warned[0]["msg"]), warned[0]
    assert reload_counts(daemon) == (1, 0)

    ex = echo_roundtrip(daemon.addr(), client2)
    assert ex.local and ex.data == b"" and ex.error is not None, f"client2 was admitted: {ex!r}"
    refused = daemon.wait_for_access(client=ex.local)
    assert (refused.get("result"), refused.get("reason")) == ("rejected", "revoked"), refused
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client), b"ping\n")
    assert served_certificate(daemon, client) == short
    ready = daemon.admin_request("/readyz")
    assert ready.status == 503 and "short-lived" in ready.text, ready
    assert len(outcomes(daemon)) == 1


def test_a_different_expired_certificate_is_still_refused(start_mtlsd, make_upstream, pki,
                                                          tmp_path):
    """The exception covers only the certificate that expired while it served. With that one
    expired and serving, its file is replaced by another certificate, for the same key, that
    has expired too: the reload fails with "expired at" naming the new one, no "served still"
    warning is logged, and the old certificate serves on to clients that are still admitted."""
    mine, certs, daemon, not_after = start_with_short_lived_certificate(
        start_mtlsd, make_upstream, pki, tmp_path)
    # Same key (only the certificate file changes: one reload), expired an hour ago.
    now = time.time()
    mine.openssl("ca", "-batch", "-notext", "-name", "root_ca", "-extensions", "ext_server",
                 "-subj", "/O=mtlsd Test/CN=expired-replacement",
                 "-startdate", stamp(now - 86400), "-enddate", stamp(now - 3600),
                 "-in", mine.path("server-short.csr"), "-out", mine.path("replacement.crt"))
    assert der_of(mine.path("replacement.crt")) != der_of(certs["server_crt"])

    wait_until_expired(not_after)
    client = blind_context(mine, "client")
    short = der_of(certs["server_crt"])
    assert served_certificate(daemon, client) == short

    mark = daemon.log_mark()
    write_and_rename(certs["server_crt"], mine.read("replacement.crt"))
    line = expect_failed(daemon, 0, f"{certs['server_crt']}: certificate {REPLACEMENT} "
                                    "expired at ")
    assert changed_files(line) == {str(certs["server_crt"])}
    assert SERVED_STILL not in line["error"], line
    assert not [l for l in daemon.logs()[mark:] if SERVED_STILL in l.get("msg", "")]
    assert reload_counts(daemon) == (0, 1)

    assert served_certificate(daemon, client) == short
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client), b"ping\n")
    assert len(outcomes(daemon)) == 1
