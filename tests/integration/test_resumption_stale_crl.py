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
- `on_unavailable: allow` is the operator's choice to soft-fail: the resumption is admitted,
  and, as for a full handshake, logged with the "admitted without a usable CRL" warning (naming
  the leaf and `(resumed session)`) and counted as a CRL check `unavailable` (it went unsaid);
- within `crl_grace` the CRL is still enforced, so the resumption is admitted, unwarned.

Waiting for a CRL to go stale is the slow part, so one daemon serves every case, one listener
(each with its own upstream) per configuration, all reading the same short-lived root CRL:
"fail" (TLS 1.2 and 1.3), "chain" (client-int, whose issuing CA's CRL, int-crl.pem, stays
current), "allow" and "grace". The CRL is made just before the daemon starts (a CRL file
rewritten later would reload the listeners, which changes the session id context, so the saved
sessions would not resume at all), with its nextUpdate far enough ahead that one full handshake
per case, each saving its session, happens before it; a start-up too slow for that fails the
test saying so. Then the test waits once for the wall clock to pass nextUpdate and checks every
case, reporting all that fail. Clients are Python's ssl with SSLContext sessions, as in
test_resumption_judging.py, whose helpers this test uses.
"""

from __future__ import annotations

import ssl
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Optional

import pytest

from clients import echo_once
from helpers import soft_fail_warnings, stamp, upstream_seen
from mtlsd_harness import Mtlsd, client_context, daemon_config, server_listener
from test_resumption_judging import ALICE, RESUMED, Attempt, brief, context, wait_until_expired
from test_revocation_crl import root_crl

# How long the short CRL is current once made: the daemon's start-up (sanitized, on a busy
# two-core machine) and one full handshake per case must fit; the test then waits it out.
LIFE = 25

# The details of the refusals: the leaf's CRL (the root's) went stale; for client-int the root's
# CRL, which covers the intermediate, did (int-crl.pem, covering the leaf, is current).
STALE_LEAF = "CRL has expired (depth 0: CN=client"
STALE_INTERMEDIATE = "CRL has expired (depth 1: CN=mtlsd Test Intermediate CA"

# What mtlsd logs for a peer admitted under on_unavailable: allow without a current CRL, and the
# count it adds to (method crl, result unavailable).
CHECKS = "mtlsd_revocation_checks_total"


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


def listeners(pki, upstreams: dict, crl: str) -> list[dict]:
    """One server listener per configuration, each with its own upstream; the short root CRL is
    the only revocation source of every one (beside the current int-crl.pem for "chain")."""
    def listener(name: str, crl_files: list[str], **revocation) -> dict:
        return server_listener(pki, upstreams[name].address, name=name,
                               revocation={"crl_files": crl_files, **revocation})
    return [
        listener("fail", [crl], crl_grace="0s"),
        listener("chain", [crl, pki.path("int-crl.pem")], crl_grace="0s", crl_scope="chain"),
        listener("allow", [crl], crl_grace="0s", on_unavailable="allow"),
        listener("grace", [crl], crl_grace="1h"),
    ]


@dataclass
class Case:
    """A client of one listener, speaking one TLS version, and the session it saved while the
    CRL was current."""
    listener: str
    version: str
    ctx: ssl.SSLContext
    identity: Optional[str]     # asserted when admitted (None: not checked)
    check: Callable[..., None]  # what must happen past nextUpdate: check(daemon, case, up)
    session: Optional[ssl.SSLSession] = None

    @property
    def label(self) -> str:
        return f"{self.listener} (TLS {self.version})"


def exchange(daemon: Mtlsd, case: Case,
             session: Optional[ssl.SSLSession] = None) -> tuple[Attempt, dict]:
    """Connect to the case's listener (offering `session`), send ping, read its echo or EOF;
    the attempt and its access line (of this listener, logged after the connection began)."""
    mark = daemon.log_mark()
    ex, reused, kept = echo_once(daemon.addr(case.listener), case.ctx, session=session)
    assert ex.local, f"client never connected: {ex.error!r}"
    line = daemon.wait_for_access(since=mark, client=ex.local, listener=case.listener)
    return Attempt(ex=ex, reused=reused, session=kept), line


def save_session(daemon: Mtlsd, case: Case, next_update: float) -> None:
    """A full handshake, admitted while the CRL is current; keeps its session. Fails saying so
    when the start-up (or the handshakes before) left no time for it."""
    if time.time() >= next_update:
        pytest.fail(f"start-up took too long: the CRL (nextUpdate {LIFE} s after it was made) "
                    f"had expired before the first handshake of {case.label}; raise LIFE")
    at, line = exchange(daemon, case)
    if time.time() >= next_update:
        pytest.fail(f"the first handshake of {case.label} ended after the CRL's nextUpdate: "
                    f"start-up too slow; raise LIFE ({brief(line)})")
    assert not at.reused, brief(line)
    assert line["result"] == "accepted", f"{case.label}: {brief(line)}"
    assert at.ex.error is None and at.ex.data == b"ping\n", (at.ex, brief(line))
    if case.identity is not None:
        assert line["identity"] == case.identity, brief(line)
    assert at.session is not None, f"{case.label}: no session to save"
    case.session = at.session


def assert_refused_stale(at: Attempt, line: dict, up, seen: tuple[int, int],
                         expired: str) -> None:
    """Not admitted for want of a current CRL: no byte came back, the access line is rejected /
    revocation_unavailable with `expired` in its detail, and the upstream heard nothing more
    than `seen`."""
    assert line.get("result") != "accepted", f"admitted: {brief(line)}"
    assert at.ex.data == b"", f"refused client received data {at.ex.data[:80]!r}: {brief(line)}"
    assert not isinstance(at.ex.error, TimeoutError), "refusal was not prompt: client timed out"
    assert line.get("reason") == "revocation_unavailable" and line.get("result") == "rejected", \
        brief(line)
    assert expired in line["detail"], brief(line)
    assert upstream_seen(up) == seen, (
        f"upstream was reached by a refused peer: {seen} -> {upstream_seen(up)}")


def assert_relayed(at: Attempt, line: dict, identity: Optional[str], resumed: bool) -> None:
    """Accepted and relayed; resumed (the offered session) or not, as `resumed` says."""
    if resumed:
        assert at.reused, f"the offered session did not resume: {brief(line)}"
        assert line["resumed"] in (True, "true"), brief(line)
    assert line["result"] == "accepted", brief(line)
    assert at.ex.error is None and at.ex.data == b"ping\n", (at.ex, brief(line))
    if identity is not None:
        assert line["identity"] == identity, brief(line)


# --- what must happen past nextUpdate, per listener -------------------------------------------

def stale_crl_refuses(expired: str, subject: Optional[str] = None) -> Callable[..., None]:
    """on_unavailable fail, crl_grace 0s: a full handshake is refused in the handshake (the
    existing check), and so is the resumption of the saved session, after its handshake:
    `(resumed session)`, no identity, the upstream hears nothing of either."""
    def check(daemon: Mtlsd, case: Case, up) -> None:
        seen = upstream_seen(up)
        # Control: a full handshake is refused.
        at, line = exchange(daemon, case)
        assert_refused_stale(at, line, up, seen, expired)
        assert not line["detail"].endswith(RESUMED), brief(line)

        # The bug: the saved session carried the peer past the stale CRL.
        at, line = exchange(daemon, case, session=case.session)
        assert_refused_stale(at, line, up, seen, expired)
        assert at.reused, f"the offered session did not resume: {brief(line)}"
        assert line["resumed"] in (True, "true"), brief(line)
        assert line["detail"].endswith(RESUMED), brief(line)
        assert line["identity"] == "", brief(line)
        if subject is not None:
            assert line["peer_subject"].startswith(subject), brief(line)
    return check


def unavailable_crl_checks(daemon: Mtlsd, case: Case) -> float:
    return daemon.scrape().total(CHECKS, listener=case.listener, method="crl",
                                 result="unavailable")


def resumption_admitted(warned: bool) -> Callable[..., None]:
    """on_unavailable allow (the operator's soft-fail, which the fix must not turn into fail for
    resumed sessions; `warned`), or within crl_grace (the CRL is still enforced): a full
    handshake and the resumption are both admitted; under allow each is warned about, naming
    the leaf, and counted as an unavailable CRL check."""
    def check(daemon: Mtlsd, case: Case, up) -> None:
        for resumed in (False, True):
            before = unavailable_crl_checks(daemon, case)
            at, line = exchange(daemon, case, session=case.session if resumed else None)
            assert_relayed(at, line, case.identity, resumed=resumed)
            warnings = soft_fail_warnings(daemon, line)
            counted = unavailable_crl_checks(daemon, case) - before
            if not warned:
                assert not warnings and counted == 0, (warnings, counted, brief(line))
                continue
            what = "resumption" if resumed else "full handshake"
            assert len(warnings) == 1, f"{what}: {len(warnings)} warnings: {brief(line)}"
            detail = warnings[0].get("detail", "")
            assert STALE_LEAF in detail, f"{what}: {detail!r}"
            assert detail.endswith(RESUMED) == resumed, f"{what}: {detail!r}"
            assert counted == 1, f"{what}: counted {counted} unavailable CRL checks"
    return check


# --- the test ---------------------------------------------------------------------------------

def test_resumptions_once_the_crl_is_stale(start_mtlsd, make_upstream, pki, tmp_path):
    """fail (TLS 1.2, 1.3) and chain: the resumption is refused as the full handshake is;
    chain's stale CRL is the root's, which covers the intermediate its ticket carries (the
    leaf's, int-crl.pem, is current). allow and grace: the resumption is admitted."""
    upstreams = {name: make_upstream() for name in ("fail", "chain", "allow", "grace")}
    client_int = client_context(pki, "client-int", certfile="client-int-chain.crt",
                                min_version="1.3", max_version="1.3")
    client_int.check_hostname = False
    cases = [
        Case("fail", "1.2", context(pki, "client", "1.2"), ALICE,
             stale_crl_refuses(STALE_LEAF, subject="CN=client")),
        Case("fail", "1.3", context(pki, "client", "1.3"), ALICE,
             stale_crl_refuses(STALE_LEAF, subject="CN=client")),
        Case("chain", "1.3", client_int, None, stale_crl_refuses(STALE_INTERMEDIATE)),
        Case("allow", "1.3", context(pki, "client", "1.3"), ALICE,
             resumption_admitted(warned=True)),
        Case("grace", "1.3", context(pki, "client", "1.3"), ALICE,
             resumption_admitted(warned=False)),
    ]
    crl, next_update = short_root_crl(pki, tmp_path)
    daemon = start_mtlsd(daemon_config(listeners(pki, upstreams, crl)))
    for case in cases:
        save_session(daemon, case, next_update)

    wait_until_expired(next_update)
    # Every case is checked (each against its own listener and upstream) and every failure
    # reported: one stale CRL answers for all of them.
    failures = []
    for case in cases:
        try:
            case.check(daemon, case, upstreams[case.listener])
        except AssertionError as exc:
            lines = [str(f.lineno) for f in traceback.extract_tb(exc.__traceback__)[1:]
                     if f.filename == __file__]
            failures.append(f"{case.label} (line {' > '.join(lines)}): {exc}")
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)
