"""A resumed session does not outlive the CRL that vouched for it (README "Revocation":
"Resumed sessions and stale CRL files").

With `crl_files` as the only revocation source and `on_unavailable: fail` (the default), a full
handshake is refused once the CRL for the peer's chain is past nextUpdate + `crl_grace`: mtlsd no
longer knows whether the certificate was revoked since. A resumption skips verification (the
CRL files are part of the session id context, the clock is not), so a ticket or session issued
while the CRL was current let its peer in after the CRL went stale, where the same peer's full
handshake was refused. Shown here:

- after the CRL's nextUpdate (crl_grace 0s), a full handshake is refused (the existing check)
  and so is a resumption with a session saved while the CRL was current: `rejected`,
  `revocation_unavailable`, `resumed: true`, detail ending in `(resumed session)`, nothing
  relayed. In both TLS versions, and for an intermediate under `crl_scope: chain` whose root
  CRL went stale while the issuing CA's CRL is current;
- `on_unavailable: allow` is the operator's choice to soft-fail: the resumption is admitted;
- within `crl_grace` the CRL is still enforced, so the resumption is admitted.

The short-lived CRL is made just before the daemon starts (a CRL file rewritten later would
reload the listener, which changes the session id context, so the saved session would not
resume at all), with its nextUpdate far enough ahead that the first full handshake happens
before it; a start-up too slow for that fails the test saying so. Then the test waits for the
wall clock to pass nextUpdate. Clients are Python's ssl with SSLContext sessions, as in
test_resumption_judging.py, whose helpers these tests use.
"""

from __future__ import annotations

import ssl
import time

import pytest

from mtlsd_harness import Mtlsd, client_context, daemon_config, server_listener
from refusal import assert_admitted
from test_resumption_judging import (ALICE, RESUMED, VERSIONS, Attempt, admitted_with_session,
                                     assert_not_admitted, attempt, brief, context, upstream_seen,
                                     wait_until_expired)
from test_revocation_crl import root_crl, stamp

# How long the short CRL is current once made: the daemon's start-up (sanitized, on a busy
# two-core machine) and one full handshake must fit, and every test waits it out once.
LIFE = 12


# --- helpers ----------------------------------------------------------------------------------

def short_root_crl(pki, tmp_path) -> tuple[str, float]:
    """A CRL of the root CA (client-revoked listed) current from an hour ago until LIFE seconds
    from now. Returns (its path, its nextUpdate as a Unix time: whole seconds)."""
    mine = pki.copy_to(tmp_path / "pki")
    now = time.time()
    next_update = float(int(now) + LIFE)
    path = root_crl(mine, "short-crl.pem", "-crl_lastupdate", stamp(now - 3600),
                    "-crl_nextupdate", stamp(next_update))
    return path, next_update


def start_with(start_mtlsd, pki, up, crl_files: list[str], **revocation) -> Mtlsd:
    """One server listener whose only revocation source is `crl_files`."""
    listener = server_listener(pki, up.address,
                               revocation={"crl_files": crl_files, **revocation})
    return start_mtlsd(daemon_config([listener]))


def session_before(daemon, ctx: ssl.SSLContext, next_update: float,
                   identity: str | None = ALICE) -> ssl.SSLSession:
    """A full handshake, admitted while the CRL is current; its session. Fails saying so when
    the start-up left no time for it."""
    if time.time() >= next_update:
        pytest.fail(f"start-up took too long: the CRL (nextUpdate in {LIFE} s) had expired "
                    f"before the first handshake; raise LIFE")
    session = admitted_with_session(daemon, ctx, identity=identity)
    assert time.time() < next_update, (
        "the first handshake ended after the CRL's nextUpdate: start-up too slow; raise LIFE")
    return session


def assert_admitted_resumption(daemon, at: Attempt) -> dict:
    """The session resumed and relayed."""
    line = daemon.wait_for_access(client=at.ex.local)
    assert at.reused, f"the offered session did not resume: {brief(line)}"
    assert line["result"] == "accepted", brief(line)
    assert line["resumed"] in (True, "true"), brief(line)
    assert at.ex.error is None and at.ex.data == b"ping\n", (at.ex, brief(line))
    return line


def assert_stale_resumption_refused(daemon, up, at: Attempt, seen: tuple[int, int]) -> dict:
    """The session resumed, and then the peer was refused for want of a current CRL:
    revocation_unavailable, `(resumed session)`, nothing relayed."""
    line = assert_not_admitted(daemon, up, at.ex, "revocation_unavailable", seen)
    assert at.reused, f"the offered session did not resume: {brief(line)}"
    assert line["resumed"] in (True, "true"), brief(line)
    assert line["detail"].endswith(RESUMED), brief(line)
    assert "CRL has expired" in line["detail"], brief(line)
    return line


# --- 1. past nextUpdate, on_unavailable: fail -----------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_a_resumption_is_refused_once_the_crl_is_stale(start_mtlsd, make_upstream, pki,
                                                       tmp_path, version):
    """crl_grace 0s: after nextUpdate, a full handshake and a resumption of a session saved
    while the CRL was current are both refused as revocation_unavailable; the resumption after
    its handshake (`(resumed session)`), and the upstream hears nothing of either."""
    up = make_upstream()
    crl, next_update = short_root_crl(pki, tmp_path)
    daemon = start_with(start_mtlsd, pki, up, [crl], crl_grace="0s")
    ctx = context(pki, "client", version)
    session = session_before(daemon, ctx, next_update)

    wait_until_expired(next_update)
    seen = upstream_seen(up)
    # Control: a full handshake is refused in the handshake (the existing check).
    line = assert_not_admitted(daemon, up, attempt(daemon, ctx).ex, "revocation_unavailable",
                               seen)
    assert "CRL has expired" in line["detail"], brief(line)
    assert not line["detail"].endswith(RESUMED), brief(line)

    # The bug: the saved session carried the peer past the stale CRL.
    resumed = attempt(daemon, ctx, session=session)
    line = assert_stale_resumption_refused(daemon, up, resumed, seen)
    assert line["identity"] == "", brief(line)
    assert line["peer_subject"].startswith("CN=client"), brief(line)


def test_an_intermediate_in_the_ticket_needs_a_current_crl_too(start_mtlsd, make_upstream, pki,
                                                               tmp_path):
    """crl_scope chain (the default): client-int's issuing CA has a current CRL (int-crl.pem),
    the root's CRL, which covers the intermediate, goes stale. The intermediate the ticket
    carries is checked as the full handshake checks it: the resumption is refused."""
    up = make_upstream()
    crl, next_update = short_root_crl(pki, tmp_path)
    daemon = start_with(start_mtlsd, pki, up, [crl, pki.path("int-crl.pem")],
                        crl_grace="0s", crl_scope="chain")
    ctx = client_context(pki, "client-int", certfile="client-int-chain.crt",
                         min_version="1.3", max_version="1.3")
    ctx.check_hostname = False
    session = session_before(daemon, ctx, next_update, identity=None)

    wait_until_expired(next_update)
    seen = upstream_seen(up)
    line = assert_not_admitted(daemon, up, attempt(daemon, ctx).ex, "revocation_unavailable",
                               seen)
    assert "CRL has expired (depth 1: CN=mtlsd Test Intermediate CA" in line["detail"], \
        brief(line)

    resumed = attempt(daemon, ctx, session=session)
    line = assert_stale_resumption_refused(daemon, up, resumed, seen)
    # The stale CRL is the one covering the intermediate, not the leaf's (int-crl.pem is current).
    assert "(depth 1: CN=mtlsd Test Intermediate CA" in line["detail"], brief(line)


# --- 2. the operator's soft-fail ----------------------------------------------------------------

def test_on_unavailable_allow_admits_the_resumption(start_mtlsd, make_upstream, pki, tmp_path):
    """on_unavailable: allow admits a peer no current CRL answers for, in a full handshake as in
    a resumption: the fix must not turn soft-fail into fail for resumed sessions."""
    up = make_upstream()
    crl, next_update = short_root_crl(pki, tmp_path)
    daemon = start_with(start_mtlsd, pki, up, [crl], crl_grace="0s", on_unavailable="allow")
    ctx = context(pki, "client", "1.3")
    session = session_before(daemon, ctx, next_update)

    wait_until_expired(next_update)
    assert_admitted(daemon, attempt(daemon, ctx).ex, b"ping\n", identity=ALICE)
    line = assert_admitted_resumption(daemon, attempt(daemon, ctx, session=session))
    assert line["identity"] == ALICE, brief(line)


# --- 3. within crl_grace ----------------------------------------------------------------------

def test_within_crl_grace_the_resumption_is_admitted(start_mtlsd, make_upstream, pki, tmp_path):
    """crl_grace 1h: a CRL a few seconds past its nextUpdate is still enforced, so a full
    handshake and a resumption are both admitted."""
    up = make_upstream()
    crl, next_update = short_root_crl(pki, tmp_path)
    daemon = start_with(start_mtlsd, pki, up, [crl], crl_grace="1h")
    ctx = context(pki, "client", "1.3")
    session = session_before(daemon, ctx, next_update)

    wait_until_expired(next_update)
    assert_admitted(daemon, attempt(daemon, ctx).ex, b"ping\n", identity=ALICE)
    line = assert_admitted_resumption(daemon, attempt(daemon, ctx, session=session))
    assert line["identity"] == ALICE, brief(line)
