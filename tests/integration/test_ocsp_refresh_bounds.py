"""The bounds of the background OCSP refresh (ocsp_client::refresh_loop).

test_ocsp_refresh.py shows that a peer's answer is asked for again once it passes its
nextUpdate. The refresh is bounded, and each bound is pinned here from the responder's side
(requests counted per serial number):
  * only answers a listener with recheck_established looked up ("watched") are refreshed;
  * at most ocsp_refreshes_per_pass (8) requests per pass, the rest in a later pass;
  * a certificate that has expired is not asked about again;
  * a refresh that fails backs off (1 s, 2 s, 4 s ...), the responder is not hammered, and a
    lone failed refresh is tried again within seconds, not after the 30 s period.
Not pinned: "seen within the last 24 h" (ocsp_refresh_idle_lifetime) needs a daemon clock a day
ahead, and the 30 s period is only ever the longest wait (a pass is due earlier whenever an
answer lapses or a retry is due), which a test would wait out for nothing.

The responder is the suite's loopback server; its answers are made here (python3-cryptography,
signed by the delegated OCSP signer, as test_ocsp_revocation_stands.signed_answer) rather than
by `openssl ocsp`, whose nextUpdate is in whole minutes: answers given during the handshakes
carry one nextUpdate a few seconds ahead, so that they lapse together; later ones an hour ahead.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

import revocation_env
from mtlsd_harness import client_context, daemon_config, echo_roundtrip, server_listener
from pki import write_cert_and_key
from helpers import wait_until
from test_ocsp_revocation_stands import signed_answer
from test_revocation_ocsp import ocsp as ocsp_options

# The revocation fixtures, bound here by name (a star import is not pyflakes-clean).
revocation_server = revocation_env.revocation_server
rpki = revocation_env.rpki
rv = revocation_env.rv

UTC = datetime.timezone.utc
LEAD = 5         # seconds from the handshakes to the nextUpdate they all share
PER_PASS = 8     # ocsp_refreshes_per_pass (src/tls/revocation/service_state.hpp)
MANY = 10        # certificates whose answers lapse together: more than one pass's worth
SLOW = 2.5       # seconds the responder takes to answer refreshes (test 2)
WINDOW = 10.0    # seconds over which a failing responder's requests are counted (test 4)


@dataclass
class Leaf:
    stem: str    # path without extension: stem.crt, stem.key
    serial: int

    @property
    def serial_der(self) -> bytes:
        """The serial's DER INTEGER content, as in a request's CertID."""
        return self.serial.to_bytes(self.serial.bit_length() // 8 + 1, "big")

    def context(self, rpki):
        return client_context(rpki, self.stem)  # rpki.path() keeps an absolute path as it is


def issue(rpki, directory: Path, name: str, ocsp_url: str, not_after: datetime.datetime) -> Leaf:
    """A client certificate of the suite's root naming `ocsp_url` in its AIA."""
    ca_cert = x509.load_pem_x509_certificate(rpki.read("ca.crt"))
    ca_key = serialization.load_pem_private_key(rpki.read("ca.key"), None)
    key = ec.generate_private_key(ec.SECP256R1())
    serial = x509.random_serial_number()
    now = datetime.datetime.now(UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP,
                x509.UniformResourceIdentifier(ocsp_url))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    write_cert_and_key(cert, key, directory / f"{name}.crt", directory / f"{name}.key")
    return Leaf(str(directory / name), serial)


@pytest.fixture(scope="module")
def leaves(rpki, revocation_server, tmp_path_factory) -> list[Leaf]:
    """MANY leaves valid for a day (issuing is cheap; every test uses a fresh daemon)."""
    directory = tmp_path_factory.mktemp("refresh-bounds")
    until = datetime.datetime.now(UTC) + datetime.timedelta(days=1)
    return [issue(rpki, directory, f"leaf{i}", revocation_server.ocsp_url, until)
            for i in range(MANY)]


class Answers:
    """rv's OCSP answers: "good" for the leaf asked about, thisUpdate a second ago, nextUpdate
    `until` while set, else an hour ahead."""

    def __init__(self, rpki):
        self.rpki = rpki
        self.paths: dict[int, str] = {}
        self.until: datetime.datetime | None = None

    def __call__(self, request: bytes) -> bytes:
        serial = ocsp.load_der_ocsp_request(request).serial_number
        now = datetime.datetime.now(UTC).replace(microsecond=0)
        until = self.until or now + datetime.timedelta(hours=1)
        return signed_answer(self.rpki, self.paths[serial], now - datetime.timedelta(seconds=1),
                             until)


@pytest.fixture
def answers(rpki, rv, leaves, monkeypatch) -> Answers:
    a = Answers(rpki)
    a.paths = {leaf.serial: leaf.stem + ".crt" for leaf in leaves}
    monkeypatch.setattr(rv, "_answer_ocsp", a)  # in place of `openssl ocsp`, this test only
    return a


def start(start_mtlsd, make_upstream, rpki, **recheck: bool):
    """A daemon with one listener per keyword, named after it, recheck_established = value."""
    up = make_upstream()
    return start_mtlsd(daemon_config([
        server_listener(rpki, up.address, name=name,
                        revocation=ocsp_options(ocsp_timeout="5s", recheck_established=flag))
        for name, flag in recheck.items()]))


def connect_then_lapse(daemon, rpki, rv, answers: Answers, plan: list[tuple[Leaf, str]]) -> None:
    """Handshakes each leaf on its listener while answers carry one nextUpdate LEAD seconds
    ahead; from then on the responder answers for an hour."""
    until = datetime.datetime.now(UTC).replace(microsecond=0) + datetime.timedelta(seconds=LEAD)
    answers.until = until
    for leaf, listener in plan:
        ex = echo_roundtrip(daemon.addr(listener), leaf.context(rpki))
        assert ex.data == b"ping\n", ex
    answers.until = None
    assert time.time() < until.timestamp() - 1, "handshakes too slow for the nextUpdate chosen"
    assert [asked(rv, leaf) for leaf, _ in plan] == [1] * len(plan)


def asked(rv, leaf: Leaf) -> int:
    return rv.ocsp_requests_for(leaf.serial_der)


def refreshes(rv, leaves: list[Leaf]) -> list[int]:
    """Requests per leaf after its handshake's."""
    return [asked(rv, leaf) - 1 for leaf in leaves]


def nothing_within(predicate, seconds: float, what: str) -> None:
    """`predicate` stays false for `seconds` (polled)."""
    with pytest.raises(AssertionError, match="timed out"):
        wait_until(predicate, seconds, what=what)


# --- 1. watched only -------------------------------------------------------------------------

def test_an_answer_no_recheck_listener_looked_up_is_not_asked_again(start_mtlsd, make_upstream,
                                                                    rpki, rv, answers, leaves):
    """Both answers lapse in the same second, in one daemon: the watched one is asked again,
    the other never is (it would be in the same pass)."""
    watched, unwatched = leaves[0], leaves[1]
    daemon = start(start_mtlsd, make_upstream, rpki, watching=True, plain=False)
    connect_then_lapse(daemon, rpki, rv, answers, [(watched, "watching"), (unwatched, "plain")])
    wait_until(lambda: asked(rv, watched) >= 2, LEAD + 10, what="the watched answer's refresh")
    nothing_within(lambda: asked(rv, unwatched) >= 2, 2.5, "a refresh of the unwatched answer")
    assert asked(rv, watched) == 2  # refreshed answers are good for an hour


# --- 2. a few per pass --------------------------------------------------------------------------

def test_at_most_eight_answers_are_asked_for_per_pass(start_mtlsd, make_upstream, rpki, rv,
                                                      answers, leaves):
    """MANY answers lapse together. The responder holds each refresh SLOW seconds, so that the
    first pass's requests are all in flight when the next passes run (a second apart): they
    join those requests, and the rest wait for a pass after the answers came back. Without the
    cap all MANY would arrive at once."""
    daemon = start(start_mtlsd, make_upstream, rpki, inbound=True)
    connect_then_lapse(daemon, rpki, rv, answers, [(leaf, "inbound") for leaf in leaves])
    rv.delay = SLOW
    wait_until(lambda: sum(refreshes(rv, leaves)) >= PER_PASS, LEAD + 10,
               what="the first pass's refreshes")
    nothing_within(lambda: sum(refreshes(rv, leaves)) > PER_PASS, SLOW - 1,
                   "more refreshes while the first pass's are in flight")
    # The rest follow in a later pass; a request in flight is not repeated by the passes that
    # run meanwhile, and a refreshed answer (good for an hour) is not asked for again.
    wait_until(lambda: min(refreshes(rv, leaves)) >= 1, 3 * SLOW + 5,
               what="every answer refreshed")
    nothing_within(lambda: max(refreshes(rv, leaves)) > 1, 1.5, "a second refresh of an answer")


# --- 3. expired certificates ------------------------------------------------------------------

def test_an_expired_certificate_is_not_asked_about_again(start_mtlsd, make_upstream, rpki, rv,
                                                         answers, leaves, tmp_path):
    """A leaf valid for 3 s more handshakes (its connection may stay open: expiry is checked
    at the handshake) next to one valid for a day; both answers lapse LEAD (5) s after the
    handshakes, when the first has expired. Only the second is asked for again."""
    daemon = start(start_mtlsd, make_upstream, rpki, inbound=True)
    not_after = datetime.datetime.now(UTC).replace(microsecond=0) + datetime.timedelta(seconds=3)
    expiring = issue(rpki, tmp_path / "expiring", "expiring", rv.ocsp_url, not_after)
    answers.paths[expiring.serial] = expiring.stem + ".crt"
    control = leaves[0]
    connect_then_lapse(daemon, rpki, rv, answers, [(expiring, "inbound"), (control, "inbound")])
    assert time.time() < not_after.timestamp(), "the handshake came after the leaf expired"
    wait_until(lambda: asked(rv, control) >= 2, LEAD + 10, what="the valid leaf's refresh")
    assert time.time() > not_after.timestamp()
    nothing_within(lambda: asked(rv, expiring) >= 2, 2.5, "a refresh for the expired leaf")


# --- 4. backoff -----------------------------------------------------------------------------

def try_later() -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(
        ocsp.OCSPResponseStatus.TRY_LATER).public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("failure", ["http 500", "tryLater"])
def test_a_failing_responder_is_asked_with_backoff(start_mtlsd, make_upstream, rpki, rv, answers,
                                                   leaves, failure):
    """MANY answers lapse together and every refresh fails. Over WINDOW seconds from the first,
    with backoff 1, 2, 4, 8 s, each certificate is asked at most 4 times (passes run a second
    apart at most, a retry is due at the failure's second + backoff); without it the first
    pass's 8 would be asked once a second, 10 times each, and the other 2 never (they are
    past the cap). Each is asked at least once: a failing batch does not starve the rest."""
    daemon = start(start_mtlsd, make_upstream, rpki, inbound=True)
    connect_then_lapse(daemon, rpki, rv, answers, [(leaf, "inbound") for leaf in leaves])
    if failure == "http 500":
        rv.fail_status = 500
    else:
        rv.ocsp_body = try_later()
    wait_until(lambda: sum(refreshes(rv, leaves)) >= 1, LEAD + 10, what="the first refresh")
    end = time.monotonic() + WINDOW
    wait_until(lambda: max(refreshes(rv, leaves)) > 5 or time.monotonic() >= end, WINDOW + 1,
               interval=0.05, what="the window")
    counts = refreshes(rv, leaves)
    assert max(counts) <= 5, f"refreshes per certificate in {WINDOW}s: {counts}"
    assert min(counts) >= 1, f"a certificate was never asked again: {counts}"
    assert daemon.running()


def test_one_failing_refresh_is_tried_again_without_waiting_out_the_period(
        start_mtlsd, make_upstream, rpki, rv, answers, leaves):
    """One watched answer, and its refresh fails. The pass that asked looks again once the
    request has surely ended (its 5 s timeout, plus a second), so the retry due 1 s after the
    failure goes out within seconds; it waited for the 30 s period (nothing else woke the loop:
    with MANY answers, the cap's one-second passes hid it)."""
    leaf = leaves[0]
    daemon = start(start_mtlsd, make_upstream, rpki, inbound=True)
    connect_then_lapse(daemon, rpki, rv, answers, [(leaf, "inbound")])
    rv.fail_status = 500
    wait_until(lambda: asked(rv, leaf) >= 2, LEAD + 10, what="the first refresh")
    wait_until(lambda: asked(rv, leaf) >= 3, 12, what="the failed refresh tried again")
    assert daemon.running()
