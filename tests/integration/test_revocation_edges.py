"""Revocation edge cases found by review (README "Revocation").

1. A resumed session and a stale CRL file, beside a network source. With `crl_files` and an OCSP
   responder that does not answer, `on_unavailable: fail`, `crl_grace: 0s`: once the CRL is past
   its nextUpdate no source answers, so a full handshake is refused (`revocation_unavailable`).
   A resumption of a session saved while the CRL was current must be refused as well. Before,
   the stale-file check of resumed sessions ran only with `crl_files` as the *only* source, and
   the revocation service counted the CRL file as answering `good` for a resumed session ("checked
   by the full handshake"), so the resumption was admitted (review: `resumed: true`, `accepted`).
2. One CRL download, two listeners, two timeouts. Listener "slow" (`ocsp_timeout: 10s`, fail) and
   listener "fast" (`ocsp_timeout: 1s`, `on_unavailable: allow`) both fetch the distribution point
   that client-cdp names; it accepts and does not answer. A check on "fast" begun while "slow"'s
   download is in flight must end at fast's own 1 s timeout (unavailable, so admitted under
   allow). Before, it waited on slow's download, and the session's backstop (2 x 1 s + 1 s)
   refused it after 3 s: `revocation_unavailable`, "no revocation answer within 3s".
3. A CRL with an unrecognised critical extension (RFC 5280 5.2: such a CRL MUST NOT be used to
   decide a certificate's status). From a distribution point it was used (the client admitted,
   counted `good`); as a `crl_files` entry OpenSSL's verification failed with "unhandled critical
   CRL extension", which was reported as `unknown_ca` under both `fail` and `allow`. It must be
   unusable instead: no answer from that CRL, so `on_unavailable` decides (`fail`:
   `revocation_unavailable`; `allow`: admitted), counted as a CRL check `unavailable`.

Every assertion message carries the access line's result, reason and detail, so a failure says
what mtlsd decided instead.
"""

from __future__ import annotations

import os
import ssl
import time
from typing import Optional

import pytest

from clients import Exchange, echo_once, echo_roundtrip, open_tls
from mtlsd_harness import Mtlsd, client_context, daemon_config, free_port, server_listener
from revocation_env import ROOT_CRL, revocation_server, rpki, rv
from helpers import stamp, upstream_seen, wait_until
from test_revocation_crl import root_crl

# The fixtures (rv needs rpki and revocation_server) are found by these names in this module.
_FIXTURES = (revocation_server, rpki, rv)

CHECKS = "mtlsd_revocation_checks_total"
SANITIZED = os.environ.get("MTLSD_SANITIZED") == "1"


# --- helpers ----------------------------------------------------------------------------------

def brief(line: dict) -> str:
    """The fields of an access line a failure message needs (pytest truncates whole dicts)."""
    return (f"listener={line.get('listener')} result={line.get('result')} "
            f"reason={line.get('reason')!r} resumed={line.get('resumed')} "
            f"duration_ms={line.get('duration_ms')} detail={line.get('detail')!r}")


def crl_checks(daemon: Mtlsd, listener: str, result: str) -> float:
    return daemon.scrape().total(CHECKS, listener=listener, method="crl", result=result)


def assert_not_admitted(line: dict, ex: Exchange, reason: str) -> None:
    """Refused with `reason`: the access line says rejected/`reason`, and no byte came back. The
    first assertion states what mtlsd decided when it did otherwise."""
    assert line.get("result") == "rejected" and line.get("reason") == reason, (
        f"expected rejected/{reason}, got {brief(line)}")
    assert ex.data == b"", f"refused client received {ex.data[:80]!r}: {brief(line)}"
    assert not isinstance(ex.error, TimeoutError), f"refusal was not prompt: {brief(line)}"


def assert_relayed(line: dict, ex: Exchange) -> None:
    assert line.get("result") == "accepted", f"expected accepted, got {brief(line)}"
    assert ex.error is None and ex.data == b"ping\n", (ex, brief(line))


# --- 1. resumed session, stale CRL file, OCSP configured but not answering --------------------

# How long the short CRL is current once made: the daemon's start-up and the first handshake
# must fit in it (a start-up too slow for that fails the test saying so); the test then waits
# it out, which is most of its run time.
LIFE = 12 if SANITIZED else 4
STALE = "CRL has expired (depth 0: CN=client"


def short_root_crl(pki, tmp_path, life: int) -> tuple[str, float]:
    """A root CRL (client-revoked listed) current from an hour ago until `life` seconds from now
    (whole seconds). Returns (its path, its nextUpdate as a Unix time)."""
    mine = pki.copy_to(tmp_path / "pki")
    next_update = float(int(time.time()) + life)
    path = root_crl(mine, "short-crl.pem", "-crl_lastupdate", stamp(time.time() - 3600),
                    "-crl_nextupdate", stamp(next_update))
    return path, next_update


def attempt(daemon: Mtlsd, ctx: ssl.SSLContext, session: Optional[ssl.SSLSession] = None
            ) -> tuple[Exchange, bool, Optional[ssl.SSLSession], dict]:
    """One echo round trip (offering `session`): the exchange, whether the session resumed, the
    session to offer next, and the connection's access line."""
    mark = daemon.log_mark()
    ex, reused, kept = echo_once(daemon.addr(), ctx, session=session)
    assert ex.local, f"client never connected: {ex.error!r}"
    return ex, reused, kept, daemon.wait_for_access(since=mark, client=ex.local)


@pytest.mark.parametrize("version", ["1.3", "1.2"])
def test_resumption_is_refused_once_the_crl_file_is_stale_beside_ocsp(
        start_mtlsd, make_upstream, rpki, tmp_path, version):
    """crl_files (a short-lived root CRL, crl_scope leaf, crl_grace 0s) and OCSP at a responder
    where nothing listens (ocsp_timeout 1s), on_unavailable fail. While the CRL is current a full
    handshake is admitted (the file answers `good`; any source may answer) and its session is
    kept. Full handshakes are then repeated until one is refused as revocation_unavailable (the
    CRL went stale and OCSP does not answer): the signal that the CRL has expired in mtlsd's
    eyes (then the rest of nextUpdate's second is waited out, see below). The saved session must
    now not be admitted either: it resumes and is refused, revocation_unavailable, naming the
    expired CRL, and nothing reaches the upstream. Today it is admitted: the network path counts
    the CRL file as `good` for a resumed session."""
    up = make_upstream()
    dead_responder = f"http://127.0.0.1:{free_port()}/ocsp"
    ctx = client_context(rpki, "client", min_version=version, max_version=version)
    crl, next_update = short_root_crl(rpki, tmp_path, LIFE)
    daemon = start_mtlsd(daemon_config([server_listener(rpki, up.address, revocation={
        "crl_files": [crl], "crl_scope": "leaf", "crl_grace": "0s", "ocsp": "leaf",
        "ocsp_responder": dead_responder, "ocsp_timeout": "1s", "on_unavailable": "fail"})]))

    # While the CRL is current: admitted, session kept.
    ex, reused, session, line = attempt(daemon, ctx)
    if time.time() >= next_update:
        pytest.fail(f"start-up and the first handshake outlasted the CRL ({LIFE} s): raise LIFE "
                    f"({brief(line)})")
    assert not reused
    assert_relayed(line, ex)
    assert session is not None, "no session to resume"

    # Until a full handshake is refused: the CRL is stale to mtlsd now (bounded: its nextUpdate,
    # a second of whole-second clock, and room for a slow machine).
    deadline = next_update + 6
    while True:
        ex, reused, _, line = attempt(daemon, ctx)
        if line.get("result") != "accepted":
            break
        assert time.time() < deadline, (
            f"full handshakes still admitted {time.time() - next_update:.1f} s past the CRL's "
            f"nextUpdate: {brief(line)}")
        time.sleep(0.2)
    assert_not_admitted(line, ex, "revocation_unavailable")
    assert STALE in line.get("detail", ""), brief(line)
    seen = upstream_seen(up)
    # A full handshake is refused from the second of nextUpdate on (OpenSSL, crl_grace 0s), the
    # resumption check of crl_files-only listeners only from the second after it (`now - next >
    # grace`): wait out that second, so that this test shows the network-source bug alone and
    # not that boundary (reported separately).
    while time.time() < next_update + 1.05:
        time.sleep(max(0.01, next_update + 1.05 - time.time()))

    # The bug: the session saved while the CRL was current carried the peer past it.
    ex, reused, _, line = attempt(daemon, ctx, session=session)
    assert_not_admitted(line, ex, "revocation_unavailable")
    assert reused, f"the offered session did not resume: {brief(line)}"
    assert line.get("resumed") in (True, "true"), brief(line)
    assert STALE in line.get("detail", ""), brief(line)
    assert upstream_seen(up) == seen, (
        f"upstream was reached by a refused peer: {seen} -> {upstream_seen(up)}")


# --- 2. one CRL download awaited by listeners with different timeouts -------------------------

def test_a_shared_crl_download_does_not_hold_a_check_past_its_own_timeout(
        start_mtlsd, make_upstream, rpki, rv):
    """The distribution point client-cdp names accepts and does not answer (for 30 s). A client
    of "slow" (ocsp_timeout 10s, fail) starts the download; once the point has the request, a
    client of "fast" (ocsp_timeout 1s, allow) connects. Its check must give up at its own 1 s:
    unavailable, admitted under allow, relayed, counted as a CRL `unavailable` for "fast", all
    well under 5 s (a handshake and 1 s; slow's download would take 10 s). Today it waits on
    slow's download and the session's 3 s backstop refuses it: revocation_unavailable, "no
    revocation answer within 3s". slow's client is not waited for (it would take 10 s)."""
    rv.crls[ROOT_CRL] = rpki.read("crl-all.pem")
    rv.slow_paths = {ROOT_CRL: 30.0}
    up = make_upstream()
    cdp = {"crl_distribution_points": True}
    daemon = start_mtlsd(daemon_config([
        server_listener(rpki, up.address, name="slow",
                        revocation={**cdp, "ocsp_timeout": "10s", "on_unavailable": "fail"}),
        server_listener(rpki, up.address, name="fast",
                        revocation={**cdp, "ocsp_timeout": "1s", "on_unavailable": "allow"}),
    ]))
    ctx = client_context(rpki, "client-cdp")
    before = crl_checks(daemon, "fast", "unavailable")

    # slow's client: its handshake done (TLS 1.3: the server's check starts once it has the
    # client's Finished), it sends and waits; the download it started is the signal to go on.
    held = open_tls(daemon.addr("slow"), ctx)
    try:
        held.sendall(b"ping\n")
        wait_until(lambda: rv.crl_requests(ROOT_CRL) >= 1, timeout=10,
                   what="slow's CRL download to reach the distribution point")

        started = time.monotonic()
        mark = daemon.log_mark()
        ex = echo_roundtrip(daemon.addr("fast"), ctx)
        elapsed = time.monotonic() - started
        assert ex.local, f"client never connected: {ex.error!r}"
        line = daemon.wait_for_access(since=mark, client=ex.local, listener="fast")
        assert_relayed(line, ex)
        assert elapsed < 5.0, (f"fast's client took {elapsed:.2f} s, past its 1 s ocsp_timeout: "
                               f"{brief(line)}")
        assert crl_checks(daemon, "fast", "unavailable") - before == 1, brief(line)
    finally:
        held.close()


# --- 3. a CRL with an unrecognised critical extension -----------------------------------------

CRIT_EXT = "1.3.6.1.4.1.55555.1"


def crl_with_unknown_critical_extension(pki, tmp_path) -> tuple[str, bytes]:
    """A CRL of the root (every revocation; client and client-cdp not listed, current for 30
    days) carrying the critical private extension CRIT_EXT (ASN.1 NULL). (path, its bytes)."""
    mine = pki.copy_to(tmp_path / "pki-crit")
    with open(mine.path("openssl.cnf"), "a") as cnf:
        cnf.write(f"\n[ crl_crit ]\nauthorityKeyIdentifier = keyid:always\n"
                  f"{CRIT_EXT} = critical, ASN1:NULL\n")
    path = root_crl(mine, "crit-crl.pem", "-crlexts", "crl_crit")
    return path, mine.read("crit-crl.pem")


# on_unavailable: fail refuses, allow admits; each counts the CRL check `unavailable`.
POLICIES = ["fail", "allow"]


def check_unusable_crl(daemon: Mtlsd, up, ctx: ssl.SSLContext, policy: str) -> None:
    before = crl_checks(daemon, "inbound", "unavailable")
    mark = daemon.log_mark()
    ex = echo_roundtrip(daemon.addr(), ctx)
    assert ex.local, f"client never connected: {ex.error!r}"
    line = daemon.wait_for_access(since=mark, client=ex.local)
    if policy == "fail":
        assert_not_admitted(line, ex, "revocation_unavailable")
        up.assert_untouched()
    else:
        assert_relayed(line, ex)
    counted = crl_checks(daemon, "inbound", "unavailable") - before
    good = daemon.scrape().total(CHECKS, listener="inbound", method="crl", result="good")
    assert counted == 1, (f"CRL checks counted unavailable: +{counted} (good: {good}); "
                          f"{brief(line)}")


@pytest.mark.parametrize("policy", POLICIES)
def test_distribution_point_crl_with_unknown_critical_extension_is_not_used(
        start_mtlsd, make_upstream, rpki, rv, tmp_path, policy):
    """The distribution point serves the root's CRL with an unrecognised critical extension. It
    must not answer for client-cdp: unavailable, so fail refuses (revocation_unavailable, after
    the handshake) and allow admits; counted as a CRL `unavailable`. Today the CRL is used:
    admitted and counted `good` under both."""
    _, crit = crl_with_unknown_critical_extension(rpki, tmp_path)
    rv.crls[ROOT_CRL] = crit
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([server_listener(rpki, up.address, revocation={
        "crl_distribution_points": True, "crl_scope": "leaf", "ocsp_timeout": "2s",
        "on_unavailable": policy})]))
    check_unusable_crl(daemon, up, client_context(rpki, "client-cdp"), policy)
    assert rv.crl_requests(ROOT_CRL) >= 1, "the distribution point was never asked"


@pytest.mark.parametrize("policy", POLICIES)
def test_crl_file_with_unknown_critical_extension_is_unusable(
        start_mtlsd, make_upstream, rpki, tmp_path, policy):
    """The same CRL as the only `crl_files` entry (crl_scope leaf). It answers for nobody: client's
    CRL check is unavailable, so fail refuses with revocation_unavailable and allow admits;
    counted as a CRL `unavailable`. Today OpenSSL's "unhandled critical CRL extension" fails the
    chain itself: unknown_ca under both, the allow case refused too."""
    path, _ = crl_with_unknown_critical_extension(rpki, tmp_path)
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([server_listener(rpki, up.address, revocation={
        "crl_files": [path], "crl_scope": "leaf", "on_unavailable": policy})]))
    check_unusable_crl(daemon, up, client_context(rpki, "client"), policy)



# --- a CRL file whose thisUpdate is a little ahead of our clock --------------------------------

def root_crl_from(pki, tmp_path, ahead: int) -> str:
    """A root CRL (client-revoked listed) whose thisUpdate is `ahead` seconds from now."""
    mine = pki.copy_to(tmp_path / f"pki-ahead-{ahead}")
    now = time.time()
    return root_crl(mine, "ahead-crl.pem", "-crl_lastupdate", stamp(now + ahead),
                    "-crl_nextupdate", stamp(now + 3600))


def test_a_crl_file_from_a_ca_clock_a_minute_ahead_is_used(start_mtlsd, make_upstream, rpki,
                                                           tmp_path):
    """Review: OpenSSL calls a CRL whose thisUpdate is ahead of our clock not yet valid, so a CRL
    file from a CA whose clock runs a minute ahead answered for nobody (refused under fail)
    until then. Within 5 minutes it is used, as distribution points' CRLs and OCSP answers are:
    client admitted, client-revoked refused as revoked."""
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([server_listener(rpki, up.address, revocation={
        "crl_files": [root_crl_from(rpki, tmp_path, 60)], "crl_scope": "leaf"})]))
    ex, _, _, line = attempt(daemon, client_context(rpki, "client"))
    assert_relayed(line, ex)
    ex, _, _, line = attempt(daemon, client_context(rpki, "client-revoked"))
    assert line.get("reason") == "revoked", brief(line)


def test_a_crl_file_from_further_ahead_is_not_yet_valid(start_mtlsd, make_upstream, rpki,
                                                        tmp_path):
    """Beyond the allowance it still answers for nobody: revocation_unavailable under fail."""
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([server_listener(rpki, up.address, revocation={
        "crl_files": [root_crl_from(rpki, tmp_path, 900)], "crl_scope": "leaf"})]))
    ex, _, _, line = attempt(daemon, client_context(rpki, "client"))
    assert_not_admitted(line, ex, "revocation_unavailable")
    assert "not yet valid" in line.get("detail", ""), brief(line)
