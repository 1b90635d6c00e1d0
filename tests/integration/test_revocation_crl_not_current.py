"""A distribution point's CRL that is not current when it comes: dated ahead of this clock (the
CA's runs fast) or already past its nextUpdate. Either is kept for its revocations and asked for
again with backoff, and peers it does not revoke are refused revocation_unavailable. Its download
is a warning naming its dates, not a plain `CRL downloaded` at info; one dated ahead answers for
no other certificate, so it is no current CRL of its issuer and stays out of
mtlsd_crl_next_update_timestamp_seconds until a CRL in force replaces it (review: the gauge said
+25 h, the log `info CRL downloaded`, while every client was refused)."""

from __future__ import annotations

import calendar
import time
from pathlib import Path

from cryptography import x509

from helpers import stamp, wait_until
from mtlsd_harness import client_context, echo_roundtrip
from refusal import assert_refused
from revocation_env import *  # noqa: F401,F403  (fixtures)
from revocation_env import ROOT_CRL, metric
from test_revocation_crl import CDP, NEXT_UPDATE, ROOT_ISSUER, root_crl


def crl_dates(path: str) -> tuple[str, str]:
    """thisUpdate and nextUpdate of the CRL at `path`, as mtlsd logs times (RFC 3339, UTC)."""
    crl = x509.load_pem_x509_crl(Path(path).read_bytes())
    # This cryptography's last_update and next_update are naive datetimes in UTC.
    return (crl.last_update.strftime("%Y-%m-%dT%H:%M:%SZ"),
            crl.next_update.strftime("%Y-%m-%dT%H:%M:%SZ"))


def next_update_of(path: str) -> float:
    """The CRL's nextUpdate as Unix time, as the gauge holds it."""
    crl = x509.load_pem_x509_crl(Path(path).read_bytes())
    return float(calendar.timegm(crl.next_update.utctimetuple()))


def download_line(daemon, url: str) -> dict:
    """The log line of the first download of `url`'s CRL, whatever its level and wording."""
    return daemon.wait_for_log(lambda l: l.get("url") == url and "CRL" in l.get("msg", ""))


def refused_by_the_crl(daemon, up, rpki, rv, why: str) -> None:
    """A client the CRL does not revoke is refused, the CRL saying nothing current about it."""
    line = assert_refused(daemon, up, echo_roundtrip(daemon.addr(),
                                                     client_context(rpki, "client-cdp")),
                          "revocation_unavailable", alert=False)
    assert why in line["detail"] and f"(crl {rv.url(ROOT_CRL)})" in line["detail"], line


def test_a_crl_dated_ahead_is_a_warning_and_no_current_crl_for_the_gauge(serve_rv, rpki, rv,
                                                                        tmp_path):
    mine = rpki.copy_to(tmp_path / "pki")
    now = time.time()
    ahead = root_crl(mine, "ahead.pem", "-crl_lastupdate", stamp(now + 3600),
                     "-crl_nextupdate", stamp(now + 25 * 3600))
    rv.crls[ROOT_CRL] = Path(ahead).read_bytes()
    daemon, up = serve_rv(CDP)
    refused_by_the_crl(daemon, up, rpki, rv, "CRL is not valid before")
    # The access line follows the download's report, which set (or left out) the gauge.
    assert metric(daemon, NEXT_UPDATE, issuer=ROOT_ISSUER) == 0, \
        "a CRL dated ahead counts as the issuer's current CRL"
    line = download_line(daemon, rv.url(ROOT_CRL))
    this_update, next_update = crl_dates(ahead)
    assert line["level"] == "warn" and line["msg"] == "downloaded CRL is not current", line
    assert (line["this_update"], line["next_update"]) == (this_update, next_update), line
    assert f"not valid before {this_update}" in line["error"], line
    # The CA fixed its clock: its next CRL (numbered after the one dated ahead) replaces it at
    # the next download, after the first backoff, and the gauge says its nextUpdate again.
    fixed = root_crl(mine, "fixed.pem")
    rv.crls[ROOT_CRL] = Path(fixed).read_bytes()

    def admitted():
        ex = echo_roundtrip(daemon.addr(), client_context(rpki, "client-cdp"))
        return ex.data == b"ping\n" and daemon.wait_for_access(client=ex.local)

    wait_until(admitted, timeout=15, interval=0.3, what="the corrected CRL admitting a client")
    assert metric(daemon, NEXT_UPDATE, issuer=ROOT_ISSUER) == next_update_of(fixed)


def test_a_crl_already_past_its_next_update_is_a_warning(serve_rv, rpki, rv, tmp_path):
    mine = rpki.copy_to(tmp_path / "pki")
    now = time.time()
    stale = root_crl(mine, "stale.pem", "-crl_lastupdate", stamp(now - 2 * 86400),
                     "-crl_nextupdate", stamp(now - 86400))
    rv.crls[ROOT_CRL] = Path(stale).read_bytes()
    daemon, up = serve_rv(CDP)
    refused_by_the_crl(daemon, up, rpki, rv, "CRL expired at")
    line = download_line(daemon, rv.url(ROOT_CRL))
    this_update, next_update = crl_dates(stale)
    assert line["level"] == "warn" and line["msg"] == "downloaded CRL is not current", line
    assert (line["this_update"], line["next_update"]) == (this_update, next_update), line
    assert f"past its nextUpdate ({next_update})" in line["error"], line
    # Still the issuer's freshest CRL held, its nextUpdate in the past: what MtlsdCRLExpired
    # looks for.
    assert metric(daemon, NEXT_UPDATE, issuer=ROOT_ISSUER) == next_update_of(stale)
